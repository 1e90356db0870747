// The bench's tables and target verdicts (pure: samples in, markdown out).
import { median, summarize } from './stats.js';

/** One measurement of one scenario in one round: the quietest of its attempts. */
export interface Measured<T> {
  value: T;
  /** % of all CPUs used by other processes on the box during the test (see load.ts foreignMeter). */
  foreignPct: number;
  attempts: number;
}

export interface DpSample {
  round: number;
  scenario: string;
  /** iperf3, client CPU0 / server CPU1. */
  gbps: Measured<number>;
  /** rr, client CPU0 / server CPU1 (the reference method). */
  rr: Measured<RR>;
  /** rr, client and server on CPU0. */
  rr1: Measured<RR>;
}

export interface RR {
  tps: number;
  p50us: number;
  p99us: number;
}

export interface DpRow {
  scenario: string;
  n: number;
  gbps: number;
  rr: RR;
  rr1: RR;
}

/** Medians over rounds per scenario, in the given scenario order. */
export function dpRows(samples: readonly DpSample[], order: readonly string[]): DpRow[] {
  const rrMedian = (xs: RR[]): RR => ({ tps: median(xs.map((x) => x.tps)), p50us: median(xs.map((x) => x.p50us)), p99us: median(xs.map((x) => x.p99us)) });
  return order
    .map((scenario) => {
      const s = samples.filter((x) => x.scenario === scenario);
      return { scenario, n: s.length, gbps: median(s.map((x) => x.gbps.value)), rr: rrMedian(s.map((x) => x.rr.value)), rr1: rrMedian(s.map((x) => x.rr1.value)) };
    })
    .filter((r) => r.n > 0);
}

function fix(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}

function ratio(a: number, b: number | undefined): string {
  return b === undefined ? 'n/a' : fix(a / b, 2);
}

/** The table: stream and request/response with the reference pinning, ratios to raw veth and ptp. */
export function dpTable(rows: readonly DpRow[]): string {
  const veth = rows.find((r) => r.scenario === 'veth');
  const ptp = rows.find((r) => r.scenario === 'ptp');
  const lines = [
    '| scenario | Gbit/s | RR trans/s | RR p50/p99 µs | ratio vs veth (stream / RR) | ratio vs ptp (stream / RR) |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.scenario} | ${fix(r.gbps, 2)} | ${fix(r.rr.tps, 0)} | ${fix(r.rr.p50us, 1)} / ${fix(r.rr.p99us, 1)} | ` +
        `${ratio(r.gbps, veth?.gbps)} / ${ratio(r.rr.tps, veth?.rr.tps)} | ${ratio(r.gbps, ptp?.gbps)} / ${ratio(r.rr.tps, ptp?.rr.tps)} |`,
    );
  }
  return lines.join('\n');
}

/** Request/response with client and server on one CPU: no cross-CPU wake-up, so the datapath's cost shows. */
export function dpOneCpuTable(rows: readonly DpRow[]): string {
  const veth = rows.find((r) => r.scenario === 'veth');
  const ptp = rows.find((r) => r.scenario === 'ptp');
  const lines = ['| scenario | RR trans/s (1 CPU) | RR p50/p99 µs | ratio vs veth | ratio vs ptp |', '|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(`| ${r.scenario} | ${fix(r.rr1.tps, 0)} | ${fix(r.rr1.p50us, 1)} / ${fix(r.rr1.p99us, 1)} | ${ratio(r.rr1.tps, veth?.rr1.tps)} | ${ratio(r.rr1.tps, ptp?.rr1.tps)} |`);
  }
  return lines.join('\n');
}

/** Spread behind the medians: min..max per scenario, and how many tests ran next to foreign load. */
export function dpSpreadTable(rows: readonly DpRow[], samples: readonly DpSample[], noisyPct: number): string {
  const lines = [
    `| scenario | rounds | Gbit/s min..max | RR trans/s min..max | RR 1-CPU trans/s min..max | tests with foreign load > ${noisyPct} % | retries |`,
    '|---|---|---|---|---|---|---|',
  ];
  const range = (xs: number[], d: number) => `${fix(Math.min(...xs), d)}..${fix(Math.max(...xs), d)}`;
  for (const r of rows) {
    const s = samples.filter((x) => x.scenario === r.scenario);
    const all = s.flatMap((x) => [x.gbps, x.rr, x.rr1]);
    const noisy = all.filter((m) => m.foreignPct > noisyPct).length;
    const retries = all.reduce((a, m) => a + m.attempts - 1, 0);
    lines.push(
      `| ${r.scenario} | ${r.n} | ${range(s.map((x) => x.gbps.value), 2)} | ${range(s.map((x) => x.rr.value.tps), 0)} | ${range(s.map((x) => x.rr1.value.tps), 0)} | ${noisy} of ${all.length} | ${retries} |`,
    );
  }
  return lines.join('\n');
}

/** The plain-kernel baseline each Tendril routing mode is held against (the ratio isolates the eBPF datapath). */
export const XNODE_BASELINE: Readonly<Record<string, string>> = { 'tendril-tunnel': 'xvxlan', 'tendril-native': 'xroute' };

/** Cross-node table and measuring order: each baseline next to the Tendril mode it is the yardstick for. */
export const XNODE_ORDER = ['xvxlan', 'tendril-tunnel', 'xroute', 'tendril-native'] as const;

/** Cross-node pod-to-pod: stream, RR with the reference pinning, RR on one CPU, ratios to the matching baseline. */
export function xnodeTable(rows: readonly DpRow[]): string {
  const lines = [
    '| scenario | Gbit/s | RR trans/s | RR p50/p99 µs | RR 1-CPU trans/s | RR 1-CPU p50/p99 µs | ratio vs matching baseline (stream / RR / RR 1-CPU) |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const baseName = XNODE_BASELINE[r.scenario];
    const base = baseName === undefined ? undefined : rows.find((x) => x.scenario === baseName);
    const ratios =
      baseName === undefined
        ? 'baseline'
        : `${ratio(r.gbps, base?.gbps)} / ${ratio(r.rr.tps, base?.rr.tps)} / ${ratio(r.rr1.tps, base?.rr1.tps)} vs ${baseName}`;
    lines.push(
      `| ${r.scenario} | ${fix(r.gbps, 2)} | ${fix(r.rr.tps, 0)} | ${fix(r.rr.p50us, 1)} / ${fix(r.rr.p99us, 1)} | ` +
        `${fix(r.rr1.tps, 0)} | ${fix(r.rr1.p50us, 1)} / ${fix(r.rr1.p99us, 1)} | ${ratios} |`,
    );
  }
  return lines.join('\n');
}

export function dpSamplesTable(samples: readonly DpSample[]): string {
  const lines = [
    '| round | scenario | Gbit/s | RR trans/s | RR p50 / p99 µs | RR 1-CPU trans/s | RR 1-CPU p50 / p99 µs | foreign % stream / RR / RR 1-CPU | attempts |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of samples) {
    lines.push(
      `| ${s.round} | ${s.scenario} | ${fix(s.gbps.value, 2)} | ${fix(s.rr.value.tps, 0)} | ${fix(s.rr.value.p50us, 1)} / ${fix(s.rr.value.p99us, 1)} | ` +
        `${fix(s.rr1.value.tps, 0)} | ${fix(s.rr1.value.p50us, 1)} / ${fix(s.rr1.value.p99us, 1)} | ` +
        `${fix(s.gbps.foreignPct, 0)} / ${fix(s.rr.foreignPct, 0)} / ${fix(s.rr1.foreignPct, 0)} | ${s.gbps.attempts} / ${s.rr.attempts} / ${s.rr1.attempts} |`,
    );
  }
  return lines.join('\n');
}

export interface CniRow {
  plugin: string;
  pods: number;
  conc: number;
  op: string;
  ms: readonly number[];
  failures: number;
  wallMs: number;
}

export function cniTable(rows: readonly CniRow[]): string {
  const lines = ['| plugin | pods | conc | op | p50 | p95 | p99 | mean (ms) | max | failed | ops/s |', '|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const s = summarize(r.ms);
    lines.push(
      `| ${r.plugin} | ${r.pods} | ${r.conc} | ${r.op} | ${fix(s.p50, 2)} | ${fix(s.p95, 2)} | ${fix(s.p99, 2)} | ${fix(s.mean, 2)} | ${fix(s.max, 2)} | ${r.failures} | ${fix((1000 * r.pods) / r.wallMs, 1)} |`,
    );
  }
  return lines.join('\n');
}

/** ADD p50 and p99 at concurrency `conc` of every plugin of the run, each with its ratio to ptp's (same run). */
export function cniConcTable(rows: readonly CniRow[], pods: number, conc: number): string {
  const adds = rows.filter((r) => r.op === 'ADD' && r.pods === pods && r.conc === conc);
  const ptp = adds.find((r) => r.plugin === 'ptp');
  const base = ptp ? summarize(ptp.ms) : undefined;
  const lines = [`| plugin (ADD, ${pods} pods, concurrency ${conc}) | p50 ms | p50 vs ptp | p99 ms | p99 vs ptp |`, '|---|---|---|---|---|'];
  for (const r of adds) {
    const s = summarize(r.ms);
    lines.push(`| ${r.plugin} | ${fix(s.p50, 2)} | ${ratio(s.p50, base?.p50)} | ${fix(s.p99, 2)} | ${ratio(s.p99, base?.p99)} |`);
  }
  return lines.join('\n');
}

export interface Verdict {
  what: string;
  ratio: number;
  target: number;
  dir: '>=' | '<=';
  met: boolean;
  text: string;
}

/** Compares ours/base against a target ratio; a miss says by how much, in ratio, % of target and units. */
export function verdict(what: string, ours: number, base: number, unit: string, dir: '>=' | '<=', target: number): Verdict {
  const ratio = ours / base;
  const numbers = `${fmtUnit(ours, unit)} vs ${fmtUnit(base, unit)} = ${fix(ratio, 2)}x (target ${dir} ${target.toFixed(2)}x)`;
  if (!Number.isFinite(ratio)) return { what, ratio, target, dir, met: false, text: `- NOT EVALUATED: ${what}: ${numbers}` };
  const met = dir === '>=' ? ratio >= target : ratio <= target;
  if (met) return { what, ratio, target, dir, met, text: `- MET: ${what}: ${numbers}` };
  const need = target * base;
  const gap = Math.abs(ratio - target);
  const pct = (100 * gap) / target;
  const how =
    dir === '>='
      ? `short by ${fix(gap, 2)}x (${fix(pct, 1)} % below target; needs ${fmtUnit(need - ours, unit)} more)`
      : `over by ${fix(gap, 2)}x (${fix(pct, 1)} % above target; ${fmtUnit(ours - need, unit)} too slow)`;
  return { what, ratio, target, dir, met, text: `- NOT MET: ${what}: ${numbers}: ${how}` };
}

function fmtUnit(x: number, unit: string): string {
  const digits = unit === 'trans/s' ? 0 : 2;
  return `${fix(x, digits)} ${unit}`;
}

/** The targets: datapath vs raw veth and ptp, CNI ADD vs ptp. Missing inputs give NOT EVALUATED. */
export function targetVerdicts(rows: readonly DpRow[], cni: readonly CniRow[], seqPods: number, concPods: number, conc: number): Verdict[] {
  const out: Verdict[] = [];
  const row = (s: string) => rows.find((r) => r.scenario === s);
  const t = row('tendril');
  const veth = row('veth');
  const ptp = row('ptp');
  if (t || veth || ptp) {
    const g = (r: DpRow | undefined) => r?.gbps ?? NaN;
    const x = (r: DpRow | undefined) => r?.rr.tps ?? NaN;
    const x1 = (r: DpRow | undefined) => r?.rr1.tps ?? NaN;
    out.push(verdict('TCP throughput vs raw veth', g(t), g(veth), 'Gbit/s', '>=', 0.95));
    out.push(verdict('TCP throughput vs ptp', g(t), g(ptp), 'Gbit/s', '>=', 1.0));
    out.push(verdict('request/response rate vs raw veth', x(t), x(veth), 'trans/s', '>=', 0.95));
    out.push(verdict('request/response rate vs ptp', x(t), x(ptp), 'trans/s', '>=', 1.0));
    out.push(verdict('request/response rate on one CPU vs raw veth', x1(t), x1(veth), 'trans/s', '>=', 0.95));
    out.push(verdict('request/response rate on one CPU vs ptp', x1(t), x1(ptp), 'trans/s', '>=', 1.0));
  }
  if (cni.length) {
    const find = (plugin: string, pods: number, c: number) => cni.find((r) => r.plugin === plugin && r.op === 'ADD' && r.pods === pods && r.conc === c);
    const p50 = (r: CniRow | undefined) => (r ? summarize(r.ms).p50 : NaN);
    const p99 = (r: CniRow | undefined) => (r ? summarize(r.ms).p99 : NaN);
    // tendril = the default tcx attach; tendril-tc = the same agent with --attach-mode tc.
    for (const t of ['tendril', 'tendril-tc'].filter((x) => find(x, seqPods, 1))) {
      out.push(verdict(`${t} CNI ADD p50 vs ptp (${seqPods} pods, sequential)`, p50(find(t, seqPods, 1)), p50(find('ptp', seqPods, 1)), 'ms', '<=', 0.5));
      out.push(verdict(`${t} CNI ADD p50 vs ptp (${concPods} pods, concurrency ${conc})`, p50(find(t, concPods, conc)), p50(find('ptp', concPods, conc)), 'ms', '<=', 1.0));
      out.push(verdict(`${t} CNI ADD p99 vs ptp (${concPods} pods, concurrency ${conc})`, p99(find(t, concPods, conc)), p99(find('ptp', concPods, conc)), 'ms', '<=', 1.0));
    }
  }
  return out;
}

/** The cross-node target: each Tendril mode >= 0.95x its plain-kernel baseline, stream and both RRs. */
export function xnodeVerdicts(rows: readonly DpRow[]): Verdict[] {
  const out: Verdict[] = [];
  const row = (s: string) => rows.find((r) => r.scenario === s);
  for (const [mode, baseName] of Object.entries(XNODE_BASELINE)) {
    const t = row(mode);
    const base = row(baseName);
    if (!t && !base) continue;
    const what = (m: string) => `cross-node ${mode} ${m} vs ${baseName}`;
    out.push(verdict(what('TCP throughput'), t?.gbps ?? NaN, base?.gbps ?? NaN, 'Gbit/s', '>=', 0.95));
    out.push(verdict(what('request/response rate'), t?.rr.tps ?? NaN, base?.rr.tps ?? NaN, 'trans/s', '>=', 0.95));
    out.push(verdict(what('request/response rate on one CPU'), t?.rr1.tps ?? NaN, base?.rr1.tps ?? NaN, 'trans/s', '>=', 0.95));
  }
  return out;
}

// ---------------------------------------------------------------- observe: watched vs idle, event rate

/** Scenario names of the observe phase's samples (one lab, the same two pods). */
export const OBSERVE_IDLE = 'tendril-idle';
export const OBSERVE_WATCHED = 'tendril-observed';
export const OBSERVE_ORDER = [OBSERVE_IDLE, OBSERVE_WATCHED] as const;

/** What the follower got during one observed test (flows it printed, flows the server dropped for it). */
export interface FollowCount {
  round: number;
  test: 'stream' | 'rr' | 'rr1';
  flows: number;
  lost: number;
}

/** Throughput with `observe -f` running vs idle: medians, ratio observed/idle, flows the follower got per test. */
export function observeTable(rows: readonly DpRow[], follows: readonly FollowCount[]): string {
  const idle = rows.find((r) => r.scenario === OBSERVE_IDLE);
  const lines = [
    '| scenario | Gbit/s | RR trans/s | RR p50/p99 µs | RR 1-CPU trans/s | RR 1-CPU p50/p99 µs | ratio vs idle (stream / RR / RR 1-CPU) | flows to follower per test, median (stream / RR / RR 1-CPU) | dropped for follower |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const watched = r.scenario === OBSERVE_WATCHED;
    const ratios = watched ? `${ratio(r.gbps, idle?.gbps)} / ${ratio(r.rr.tps, idle?.rr.tps)} / ${ratio(r.rr1.tps, idle?.rr1.tps)}` : 'baseline';
    const med = (t: FollowCount['test']) => fix(median(follows.filter((f) => f.test === t).map((f) => f.flows)), 0);
    const flows = watched ? `${med('stream')} / ${med('rr')} / ${med('rr1')}` : '-';
    const lost = watched ? String(follows.reduce((a, f) => a + f.lost, 0)) : '-';
    lines.push(
      `| ${r.scenario} | ${fix(r.gbps, 2)} | ${fix(r.rr.tps, 0)} | ${fix(r.rr.p50us, 1)} / ${fix(r.rr.p99us, 1)} | ` +
        `${fix(r.rr1.tps, 0)} | ${fix(r.rr1.p50us, 1)} / ${fix(r.rr1.p99us, 1)} | ${ratios} | ${flows} | ${lost} |`,
    );
  }
  return lines.join('\n');
}

/** The target: forwarding with a follower attached >= 0.95x idle (stream, and both RRs alike). */
export function observeVerdicts(rows: readonly DpRow[]): Verdict[] {
  const idle = rows.find((r) => r.scenario === OBSERVE_IDLE);
  const obs = rows.find((r) => r.scenario === OBSERVE_WATCHED);
  if (!idle && !obs) return [];
  const what = (m: string) => `same-node ${m} with \`tendril observe -f\` running vs idle`;
  return [
    verdict(what('TCP throughput'), obs?.gbps ?? NaN, idle?.gbps ?? NaN, 'Gbit/s', '>=', 0.95),
    verdict(what('request/response rate'), obs?.rr.tps ?? NaN, idle?.rr.tps ?? NaN, 'trans/s', '>=', 0.95),
    verdict(what('request/response rate on one CPU'), obs?.rr1.tps ?? NaN, idle?.rr1.tps ?? NaN, 'trans/s', '>=', 0.95),
  ];
}

/** One offered rate of short connections while `observe -f` follows: what the agent decoded and served. */
export interface RateLevel {
  /** Connections per second asked of the generator; 0 = as fast as it can. */
  offered: number;
  clients: number;
  secs: number;
  /** Connections completed, and per second. */
  conns: number;
  connRate: number;
  /** Deltas of the agent's monitor counters: events decoded, lost because the ring was full, rate-limited drops, undecodable. */
  read: number;
  lost: number;
  rateLimited: number;
  skipped: number;
  /** Delta of the agent's hubble seen-flows (flows made from events). */
  seen: number;
  /** Flows the follower printed; flows the server dropped for it (lost_events). */
  flows: number;
  dropped: number;
  /** Seconds from the generator's end to the follower's last flow (how far behind it was). */
  lagS: number;
  /** CPU used while the generator ran, % of one CPU: the agent, the lab's relay, the `observe -f` process. */
  agentCpuPct: number;
  relayCpuPct: number;
  observeCpuPct: number;
  /** All CPUs of the box busy while the generator ran, % (100 = every CPU). */
  boxBusyPct: number;
  /** Whether `observe -f` followed (false: nobody read flows); the agent's CPU seconds while the generator ran. */
  followed?: boolean;
  agentCpuS?: number;
  foreignPct: number;
}

/** Flows the agent made that the follower neither got nor was told it lost. */
export function undelivered(l: RateLevel): number {
  return Math.max(0, l.seen - l.flows - l.dropped);
}

/** Events the datapath produced: the agent decoded them or the ring was full. */
export function made(l: RateLevel): number {
  return l.read + l.lost;
}

/** The generator fell short of the offered rate: the box, not the observer, was the limit. */
export function generatorSaturated(l: RateLevel): boolean {
  return l.offered === 0 || l.connRate < 0.9 * l.offered;
}

function levelState(l: RateLevel): string {
  const loss: string[] = [];
  if (l.lost) loss.push('ring full');
  if (l.rateLimited) loss.push('rate-limited');
  if (l.dropped) loss.push('dropped for follower');
  if (undelivered(l)) loss.push('not delivered');
  const sat = generatorSaturated(l) ? (l.offered === 0 ? 'generator at its maximum' : 'generator saturated') : '';
  return [loss.length ? `LOSS (${loss.join(', ')})` : 'no loss', sat].filter(Boolean).join('; ');
}

export function rateTable(levels: readonly RateLevel[]): string {
  const lines = [
    '| offered conn/s | achieved conn/s | events/s made (decoded + lost) | events/conn | agent events decoded/s | lost: ring full / rate-limited | flows to follower/s | dropped for follower | not delivered | follower lag s | CPU % agent / relay / observe | box busy % | foreign % | result |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const l of levels) {
    lines.push(
      `| ${l.offered === 0 ? 'max' : String(l.offered)} | ${fix(l.connRate, 0)} | ${fix(made(l) / l.secs, 0)} | ${fix(l.conns ? made(l) / l.conns : NaN, 1)} | ${fix(l.read / l.secs, 0)} | ` +
        `${l.lost} / ${l.rateLimited} | ${fix(l.flows / l.secs, 0)} | ${l.dropped} | ${undelivered(l)} | ${fix(l.lagS, 2)} | ` +
        `${fix(l.agentCpuPct, 0)} / ${fix(l.relayCpuPct, 0)} / ${fix(l.observeCpuPct, 0)} | ${fix(l.boxBusyPct, 0)} | ${fix(l.foreignPct, 0)} | ${levelState(l)} |`,
    );
  }
  return lines.join('\n');
}

/** The agent's CPU per event decoded at a level (CPU seconds while the generator ran / events read in the level). */
export function agentUsPerEvent(l: RateLevel): number {
  return l.agentCpuS === undefined || l.read === 0 ? NaN : (1e6 * l.agentCpuS) / l.read;
}

/** Levels with nobody following: the agent's cost per event when no flow is read. */
export function unfollowedTable(levels: readonly RateLevel[]): string {
  const lines = [
    '| offered conn/s | achieved conn/s | agent events decoded/s | lost: ring full / rate-limited | CPU % agent | agent CPU µs/event | box busy % | foreign % |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const l of levels) {
    lines.push(
      `| ${l.offered === 0 ? 'max' : String(l.offered)} | ${fix(l.connRate, 0)} | ${fix(l.read / l.secs, 0)} | ${l.lost} / ${l.rateLimited} | ${fix(l.agentCpuPct, 0)} | ` +
        `${fix(agentUsPerEvent(l), 1)} | ${fix(l.boxBusyPct, 0)} | ${fix(l.foreignPct, 0)} |`,
    );
  }
  return lines.join('\n');
}

/**
 * What the event-rate ladder shows, as two limits: events the agent decodes without losing any (ring full), and
 * flows it serves through the relay to `observe -f` without dropping any; each with where loss began, if it did.
 */
export function rateSummary(levels: readonly RateLevel[]): string[] {
  if (levels.length === 0) return [];
  const evS = (l: RateLevel) => l.read / l.secs;
  const best = (ok: (l: RateLevel) => boolean) => levels.filter(ok).reduce<RateLevel | undefined>((b, l) => (!b || evS(l) > evS(b) ? l : b), undefined);
  const conn = (l: RateLevel) => `${fix(l.connRate, 0)} conn/s`;
  const top = levels[levels.length - 1]!;
  const out: string[] = [];

  const agentOk = (l: RateLevel) => l.lost === 0 && l.rateLimited === 0;
  const a = best(agentOk);
  const aLoss = levels.find((l) => !agentOk(l));
  let line = a ? `- MEASURED: agent decodes without loss at least ${fix(evS(a), 0)} events/s (${conn(a)})` : '- MEASURED: agent: no rate was free of ring-full loss';
  if (aLoss) line += `; ring full at ${fix(made(aLoss) / aLoss.secs, 0)} events/s made: ${fix(evS(aLoss), 0)}/s decoded, ${aLoss.lost} lost in ${aLoss.secs} s (${conn(aLoss)})`;
  else if (generatorSaturated(top)) line += `; no loss up to the generator's maximum on this box (${conn(top)})`;
  out.push(line);

  const followOk = (l: RateLevel) => l.dropped === 0 && undelivered(l) === 0;
  const f = best((l) => agentOk(l) && followOk(l));
  const fLoss = levels.find((l) => !followOk(l));
  line = f ? `- MEASURED: served to \`observe -f\` through the relay without drops at least ${fix(f.flows / f.secs, 0)} flows/s (${conn(f)})` : '- MEASURED: `observe -f` through the relay: no rate was free of drops';
  if (fLoss) line += `; drops from ${fix(evS(fLoss), 0)} events/s: ${fix(fLoss.flows / fLoss.secs, 0)} flows/s delivered, ${fLoss.dropped} dropped, ${undelivered(fLoss)} not delivered (${conn(fLoss)})`;
  out.push(line);
  return out;
}

/** What the follower got in every observed test (results file). */
export function followSamplesTable(follows: readonly FollowCount[]): string {
  const lines = ['| round | test | flows to follower | dropped for follower |', '|---|---|---|---|'];
  for (const f of follows) lines.push(`| ${f.round} | ${f.test} | ${f.flows} | ${f.lost} |`);
  return lines.join('\n');
}

// ---------------------------------------------------------------- policy: 0 vs 10,000 entries, change-to-enforcement latency

/** Scenario names of the policy phase's samples (the same lab pair, with and without the big policy). */
export const POLICY_NONE = 'tendril';
export const POLICY_10K = 'tendril-policy-10k';
export const POLICY_ORDER = [POLICY_NONE, POLICY_10K] as const;
/** Issue #4: forwarding with 10,000 policy entries on the server endpoint >= 0.98x without. */
export const POLICY_THROUGHPUT_TARGET = 0.98;
/** Issue #4: a policy change is enforced within this p99 on a node with 1,000 endpoints (ms). */
export const POLICY_LATENCY_P99_MS = 50;

/** Forwarding with 0 vs 10,000 entries: medians, ratio with/without; `entries` = what the server endpoint's map held. */
export function policyTable(rows: readonly DpRow[], entries: number): string {
  const none = rows.find((r) => r.scenario === POLICY_NONE);
  const lines = [
    '| scenario | policy entries on the server endpoint | Gbit/s | RR trans/s | RR p50/p99 µs | RR 1-CPU trans/s | RR 1-CPU p50/p99 µs | ratio vs no policy (stream / RR / RR 1-CPU) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const big = r.scenario === POLICY_10K;
    const ratios = big ? `${ratio(r.gbps, none?.gbps)} / ${ratio(r.rr.tps, none?.rr.tps)} / ${ratio(r.rr1.tps, none?.rr1.tps)}` : 'baseline';
    lines.push(
      `| ${r.scenario} | ${big ? String(entries) : '0'} | ${fix(r.gbps, 2)} | ${fix(r.rr.tps, 0)} | ${fix(r.rr.p50us, 1)} / ${fix(r.rr.p99us, 1)} | ` +
        `${fix(r.rr1.tps, 0)} | ${fix(r.rr1.p50us, 1)} / ${fix(r.rr1.p99us, 1)} | ${ratios} |`,
    );
  }
  return lines.join('\n');
}

/** One kind of policy change, repeated: how long until the agent answered (= enforced), and its own regeneration time. */
export interface ChangeLatency {
  /** What changed, e.g. "allowed port of a policy selecting every endpoint". */
  change: string;
  /** Endpoints on the node (pods). */
  endpoints: number;
  /** Endpoints the change recompiles (the agent's count; the same for every change of this kind). */
  affected: number;
  /** Round trip of each PUT /v1/policy (the agent answers once the maps are updated), ms. */
  ms: readonly number[];
  /** The agent's regeneration time of each change (compile + map updates), ms. */
  regenMs: readonly number[];
}

export function policyLatencyTable(rows: readonly ChangeLatency[]): string {
  const lines = [
    '| change | endpoints on node | endpoints recompiled | changes | change to enforcement p50 / p99 / max ms | agent regeneration p50 / p99 / max ms |',
    '|---|---|---|---|---|---|',
  ];
  const three = (xs: readonly number[]) => {
    const s = summarize(xs);
    return `${fix(s.p50, 2)} / ${fix(s.p99, 2)} / ${fix(s.max, 2)}`;
  };
  for (const r of rows) lines.push(`| ${r.change} | ${r.endpoints} | ${r.affected} | ${r.ms.length} | ${three(r.ms)} | ${three(r.regenMs)} |`);
  return lines.join('\n');
}

/** Issue #4's targets: stream and both RRs with 10,000 entries >= 0.98x none; every kind of change p99 <= 50 ms. */
export function policyVerdicts(rows: readonly DpRow[], latency: readonly ChangeLatency[]): Verdict[] {
  const out: Verdict[] = [];
  const none = rows.find((r) => r.scenario === POLICY_NONE);
  const big = rows.find((r) => r.scenario === POLICY_10K);
  if (none || big) {
    const what = (m: string) => `same-node ${m} with 10,000 policy entries on the server endpoint vs none`;
    const t = POLICY_THROUGHPUT_TARGET;
    out.push(verdict(what('TCP throughput'), big?.gbps ?? NaN, none?.gbps ?? NaN, 'Gbit/s', '>=', t));
    out.push(verdict(what('request/response rate'), big?.rr.tps ?? NaN, none?.rr.tps ?? NaN, 'trans/s', '>=', t));
    out.push(verdict(what('request/response rate on one CPU'), big?.rr1.tps ?? NaN, none?.rr1.tps ?? NaN, 'trans/s', '>=', t));
  }
  for (const l of latency) out.push(latencyVerdict(`policy change to enforcement, ${l.change} (${l.affected} of ${l.endpoints} endpoints), p99`, summarize(l.ms).p99, POLICY_LATENCY_P99_MS));
  return out;
}

/** An absolute "<= limit ms" target, worded as verdict()'s. ratio = value / limit, target 1. */
export function latencyVerdict(what: string, ms: number, limitMs: number): Verdict {
  const ratio = ms / limitMs;
  const numbers = `${fix(ms, 2)} ms (target <= ${fix(limitMs, 0)} ms)`;
  const base = { what, ratio, target: 1, dir: '<=' as const };
  if (!Number.isFinite(ms)) return { ...base, met: false, text: `- NOT EVALUATED: ${what}: ${numbers}` };
  if (ms <= limitMs) return { ...base, met: true, text: `- MET: ${what}: ${numbers}` };
  return { ...base, met: false, text: `- NOT MET: ${what}: ${numbers}: over by ${fix(ms - limitMs, 2)} ms (${fix(100 * (ratio - 1), 1)} % above target)` };
}
