// Phase "observe": same-node pod<->pod forwarding with `tendril observe -f` following vs idle, and the event rate
// the agent decodes and serves to a follower as short connections get more frequent.
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { loadLab } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { Follower, type TallySnapshot } from './follower.js';
import { boxBusySeconds, crr, iperf, processCpuSeconds, rr, rrSummary } from './load.js';
import { measure, type NoisePolicy } from './measure.js';
import { BenchError, sleep } from './proc.js';
import { OBSERVE_IDLE, OBSERVE_WATCHED, agentUsPerEvent, generatorSaturated, type DpSample, type FollowCount, type Measured, type RateLevel } from './report.js';
import type { Pair } from './scenarios.js';

export interface ObserveOptions {
  secs: number;
  rounds: number;
  /** Offered connection rates of the event-rate ladder, ascending; 0 = as fast as the generator can. */
  rates: readonly number[];
  noise: NoisePolicy;
  say: (line: string) => void;
}

export interface ObserveResult {
  samples: DpSample[];
  follows: FollowCount[];
  levels: RateLevel[];
  /** The same short connections with nobody following flows (the generator's maximum). */
  unfollowed: RateLevel[];
}

/**
 * The ladder (conn/s; a connection is ~10 events: 5 packets whose flags are new, each seen leaving one pod and
 * entering the other) up to the agent's loss or the generator's maximum.
 */
export const DEFAULT_RATES = [100, 200, 500, 1000, 2000, 4000, 0] as const;
/**
 * Server port of the first level; each level (and each repeat of one) has its own. The client's ports are reused (TIME_WAIT reuse) and the
 * datapath aggregates traces per 4-tuple, not per connection: a new connection on a tuple seen < 5 s ago is
 * reported with 4 events instead of 10, so a level on a port of its own starts with fresh tuples.
 */
const CRR_PORT_BASE = 5560;
/** Offered rates of the levels with nobody following (0 = as fast as the generator can). */
const UNFOLLOWED_RATES = [500, 0] as const;
/** rr clients opening connections in parallel (one per CPU the generator may use). */
const CRR_CLIENTS = 2;
/** A follower has caught up when no flow has come for this long (the relay holds flows 100 ms to sort them). */
const SETTLE_QUIET_MS = 500;

/** Parses --observe-rates: "2000,5000,max". */
export function parseRates(s: string): number[] {
  const out = s.split(',').map((x) => {
    const t = x.trim();
    if (t === 'max') return 0;
    const n = Number(t);
    if (!Number.isInteger(n) || n < 1) throw new BenchError(`Invalid --observe-rates entry "${t}": expected a positive integer (connections/s) or "max"`);
    return n;
  });
  const fixed = out.filter((n) => n > 0);
  if (fixed.some((n, i) => i > 0 && n <= fixed[i - 1]!)) throw new BenchError(`Invalid --observe-rates "${s}": rates must increase`);
  if (out.indexOf(0) !== -1 && out.indexOf(0) !== out.length - 1) throw new BenchError(`Invalid --observe-rates "${s}": "max" can only come last`);
  return out;
}

interface Watched<T> {
  value: T;
  follow?: { flows: number; lost: number };
}

/** Runs `fn` with no follower, or with `observe -f` started before it and stopped after it. */
async function maybeWatched<T>(lab: string, p: Pair, watched: boolean, fn: () => Promise<T>): Promise<Watched<T>> {
  if (!watched) return { value: await fn() };
  const f = await Follower.start(lab, { client: p.client, serverIp: p.serverIp });
  try {
    const s0 = f.tally.snapshot();
    const value = await fn();
    f.assertRunning(); // it watched the whole test
    const s1 = await f.settle(SETTLE_QUIET_MS, 5_000);
    return { value, follow: { flows: s1.flows - s0.flows, lost: s1.lost - s0.lost } };
  } finally {
    await f.stop();
  }
}

/** Idle and observed in interleaved rounds (every other round observed first), medians taken by the report. */
async function throughput(lab: string, p: Pair, rrBin: string, o: ObserveOptions): Promise<{ samples: DpSample[]; follows: FollowCount[] }> {
  const samples: DpSample[] = [];
  const follows: FollowCount[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 ? [false, true] : [true, false];
    for (const watched of order) {
      const m = async <T>(test: FollowCount['test'], fn: () => Promise<T>): Promise<Measured<T>> => {
        const r = await measure(o.noise, () => maybeWatched(lab, p, watched, fn));
        if (r.value.follow) follows.push({ round, test, ...r.value.follow });
        return { ...r, value: r.value.value };
      };
      const gbps = await m('stream', () => iperf(p.server, p.client, p.serverIp, o.secs));
      const rrX = await m('rr', async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs)));
      const rr1 = await m('rr1', async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs, true)));
      const scenario = watched ? OBSERVE_WATCHED : OBSERVE_IDLE;
      samples.push({ round, scenario, gbps, rr: rrX, rr1 });
      const f = (x: Measured<unknown>) => `${x.foreignPct.toFixed(0)}%${x.attempts > 1 ? ` x${x.attempts}` : ''}`;
      const got = watched ? `  follower got ${follows.slice(-3).map((x) => x.flows).join('/')} flows` : '';
      o.say(
        `observe round ${round} ${scenario.padEnd(16)} ${gbps.value.toFixed(2)} Gbit/s (${f(gbps)})  rr ${rrX.value.tps.toFixed(0)}/s (${f(rrX)})  ` +
          `rr 1-CPU ${rr1.value.tps.toFixed(0)}/s (${f(rr1)})${got}  [foreign load %, attempts]`,
      );
    }
  }
  return { samples, follows };
}

interface AgentCounters {
  read: number;
  lost: number;
  rateLimited: number;
  skipped: number;
  seen: number;
}

async function agentCounters(socket: string): Promise<AgentCounters> {
  const s = await new ApiClient(socket).get<{
    monitor: { read: number; lost: number; rateLimited: number; skipped: number } | null;
    hubble: { 'seen-flows': number } | null;
  }>('/v1/healthz');
  if (!s.monitor || !s.hubble) throw new BenchError(`The agent at ${socket} reports no ${s.monitor ? 'flow server (hubble)' : 'event reader (monitor)'}`);
  return { read: s.monitor.read, lost: s.monitor.lost, rateLimited: s.monitor.rateLimited, skipped: s.monitor.skipped, seen: s.hubble['seen-flows'] };
}

function cpuOf(pids: ReadonlyArray<number | undefined>): number {
  return pids.reduce<number>((a, pid) => a + (pid === undefined ? 0 : (processCpuSeconds(pid) ?? 0)), 0);
}

/**
 * One level: short connections at `offered`/s for `secs` while a follower runs; the agent's counters and the
 * follower's tally before and after (after: once the follower has caught up, or 30 s).
 */
async function rateLevel(lab: string, p: Pair, rrBin: string, offered: number, nextPort: () => number, o: ObserveOptions, followed = true): Promise<RateLevel> {
  const socket = labPaths(lab).node('ctr').socket;
  const st = loadLab(lab);
  const agentPid = st.nodes.find((n) => n.name === 'ctr')?.pid;
  const none: TallySnapshot = { flows: 0, lost: 0, other: 0, lastFlowAt: 0 };
  const m = await measure(o.noise, async () => {
    const f = followed ? await Follower.start(lab, { client: p.client, serverIp: p.serverIp }) : undefined;
    try {
      // Let the probe's flows through first, so that they belong to neither snapshot's difference.
      await f?.settle(SETTLE_QUIET_MS, 5_000);
      const cpu = () => ({ agent: cpuOf([agentPid]), relay: cpuOf([st.relayPid]), observe: cpuOf([f?.pid]), box: boxBusySeconds() });
      const cpu0 = cpu();
      const t0: TallySnapshot = f?.tally.snapshot() ?? none;
      const a0 = await agentCounters(socket);
      const g0 = performance.now();
      const gen = await crr(rrBin, p.server, p.client, p.serverIp, nextPort(), o.secs, offered, CRR_CLIENTS);
      const genEnd = performance.now();
      const genS = (genEnd - g0) / 1000;
      const cpu1 = cpu();
      // The agent reads the ring every 20 ms; then the follower gets what the relay holds.
      await sleep(200);
      f?.assertRunning();
      const t1 = f ? await f.settle(SETTLE_QUIET_MS, 30_000) : none;
      const a1 = await agentCounters(socket);
      return { gen, genS, cpu0, cpu1, t0, t1, a0, a1, genEnd };
    } finally {
      await f?.stop();
    }
  });
  const { gen, genS, cpu0, cpu1, t0, t1, a0, a1, genEnd } = m.value;
  return {
    offered,
    clients: CRR_CLIENTS,
    secs: o.secs,
    conns: gen.transactions,
    connRate: gen.tps,
    read: a1.read - a0.read,
    lost: a1.lost - a0.lost,
    rateLimited: a1.rateLimited - a0.rateLimited,
    skipped: a1.skipped - a0.skipped,
    seen: a1.seen - a0.seen,
    flows: t1.flows - t0.flows,
    dropped: t1.lost - t0.lost,
    lagS: t1.lastFlowAt > genEnd ? (t1.lastFlowAt - genEnd) / 1000 : 0,
    agentCpuPct: (100 * (cpu1.agent - cpu0.agent)) / genS,
    relayCpuPct: (100 * (cpu1.relay - cpu0.relay)) / genS,
    observeCpuPct: (100 * (cpu1.observe - cpu0.observe)) / genS,
    boxBusyPct: (100 * (cpu1.box - cpu0.box)) / genS / os.cpus().length,
    foreignPct: m.foreignPct,
    followed,
    agentCpuS: cpu1.agent - cpu0.agent,
  };
}

/**
 * The ladder: each offered rate once, ascending; stops after the first level where the agent lost events (ring
 * full) or the generator fell short. A follower that drops flows does not stop it: the agent's own limit is
 * the other half of the question.
 */
async function eventRate(lab: string, p: Pair, rrBin: string, o: ObserveOptions): Promise<RateLevel[]> {
  const levels: RateLevel[] = [];
  let port = CRR_PORT_BASE;
  for (const offered of o.rates) {
    const l = await rateLevel(lab, p, rrBin, offered, () => port++, o);
    levels.push(l);
    o.say(
      `observe rate ${offered === 0 ? 'max' : offered} conn/s: ${l.connRate.toFixed(0)} conn/s, agent ${(l.read / l.secs).toFixed(0)} events/s (lost ${l.lost}), ` +
        `follower ${(l.flows / l.secs).toFixed(0)} flows/s (dropped ${l.dropped}, lag ${l.lagS.toFixed(2)} s), ` +
        `CPU % agent ${l.agentCpuPct.toFixed(0)} relay ${l.relayCpuPct.toFixed(0)} observe ${l.observeCpuPct.toFixed(0)} box ${l.boxBusyPct.toFixed(0)}`,
    );
    if (l.lost > 0 || generatorSaturated(l)) break;
  }
  return levels;
}

export async function observePhase(lab: string, p: Pair, toolsDir: string, o: ObserveOptions): Promise<ObserveResult> {
  const rrBin = path.join(toolsDir, 'rr');
  const { samples, follows } = await throughput(lab, p, rrBin, o);
  let port = CRR_PORT_BASE + 1000;
  const levels = await eventRate(lab, p, rrBin, o);
  // The agent's cost per event when nobody reads flows (what every other phase's CRR pays): a rate every level of
  // the ladder managed, and as fast as the generator can, no follower.
  const unfollowed: RateLevel[] = [];
  for (const offered of UNFOLLOWED_RATES) {
    const l = await rateLevel(lab, p, rrBin, offered, () => port++, o, false);
    unfollowed.push(l);
    o.say(
      `observe rate ${offered === 0 ? 'max' : offered} conn/s, nobody following: ${l.connRate.toFixed(0)} conn/s, agent ${(l.read / l.secs).toFixed(0)} events/s (lost ${l.lost}), ` +
        `CPU % agent ${l.agentCpuPct.toFixed(0)} (${agentUsPerEvent(l).toFixed(1)} µs/event) box ${l.boxBusyPct.toFixed(0)}`,
    );
  }
  return { samples, follows, levels, unfollowed };
}
