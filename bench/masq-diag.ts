// Where the CPU of a pod -> external host TCP_CRR round goes (issue #9's CRR gap), by measurement: per thread of the
// lab agent, the kernel threads, the rr ends (reaped children), each BPF program's run time per connection
// (kernel.bpf_stats_enabled, on only during the rounds), and the TCP/IP counters of every namespace of the path.
// Experiments on the Tendril scenario isolate a cause: the agent SIGSTOPped during the round (the datapath keeps
// forwarding; its ring events are dropped) and the baselines (ptp + iptables MASQUERADE, routed) in the same run.
// Root; every namespace is the run's own (bench prefix or the run's lab), removed afterwards also on failure.
//   node dist/bench/masq-diag.js [--secs 5] [--rounds 2] [--exp normal,agent-stopped,ptp,routed] [--profile] [--perf /tmp/prefix]
// --profile: the agent's CPU profile of the first normal round; --perf: `perf record -a` of each first round, report in PREFIX-<scenario>.txt
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { labDown, loadLab } from '../src/lab/lab.js';
import { ApiClient } from '../src/util/api-client.js';
import { profileHotspots } from '../src/util/cpu-profile.js';
import { crr } from './load.js';
import { setupRefMasq, setupTendrilMasq, type MasqPair } from './masq.js';
import { MASQ_PTP, MASQ_ROUTED, MASQ_TENDRIL } from './masq-report.js';
import { BenchNetns } from './netns.js';
import { inNs, run, runAsync } from './proc.js';
import { median } from './stats.js';

const TOOLS = fileURLToPath(new URL('../../build/bench', import.meta.url));
const TICKS = 100;
const CRR_PORT = 5566;

function stat(pidPath: string): { comm: string; ticks: number; flags: number } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pidPath}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(') ') + 2).split(' ');
    return { comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')), ticks: Number(f[11]) + Number(f[12]), flags: Number(f[6]) };
  } catch {
    return undefined;
  }
}

/** CPU ticks per "name": the agent's threads (by thread name), kernel threads, the bench's reaped children. */
function snapshot(agentPid: number | undefined): Map<string, number> {
  const m = new Map<string, number>();
  const add = (k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  if (agentPid) {
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${agentPid}/task`);
    } catch {
      /* gone */
    }
    for (const t of tasks) {
      const s = stat(`${agentPid}/task/${t}`);
      if (s) add(`agent:${s.comm}`, s.ticks);
    }
  }
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const s = stat(e);
    if (s && s.flags & 0x00200000 && s.ticks > 0) add(`kthread:${s.comm.replace(/\/\d+$/, '/N')}`, s.ticks);
  }
  const me = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = me.slice(me.lastIndexOf(') ') + 2).split(' ');
  add('rr ends (reaped children)', Number(f[13]) + Number(f[14]));
  const cpu = (fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  add('box: user+nice', (cpu[0] ?? 0) + (cpu[1] ?? 0));
  add('box: system', cpu[2] ?? 0);
  add('box: softirq', cpu[6] ?? 0);
  return m;
}

interface ProgStat {
  name: string;
  ns: number;
  cnt: number;
}

function progStats(): Map<number, ProgStat> {
  const out = new Map<number, ProgStat>();
  const js = JSON.parse(run(['bpftool', '-j', 'prog', 'show']).stdout) as Array<{ id: number; name?: string; run_time_ns?: number; run_cnt?: number }>;
  for (const p of js) out.set(p.id, { name: p.name ?? '?', ns: p.run_time_ns ?? 0, cnt: p.run_cnt ?? 0 });
  return out;
}

/** Program ids attached (tc/tcx) to the devices of the given namespaces. */
function attachedIds(namespaces: string[]): Set<number> {
  const ids = new Set<number>();
  for (const ns of namespaces) {
    const r = run(inNs(ns, ['bpftool', '-j', 'net', 'show']), { allowFail: true });
    for (const m of r.stdout.matchAll(/"id":\s*(\d+)/g)) ids.add(Number(m[1]));
  }
  return ids;
}

function netCounters(ns: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = run(inNs(ns, ['cat', file])).stdout.trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const k = lines[i]!.split(/\s+/);
      const v = lines[i + 1]!.split(/\s+/);
      const pre = k[0]!.replace(':', '');
      for (let j = 1; j < k.length; j++) m.set(`${pre}${k[j]}`, Number(v[j]));
    }
  }
  return m;
}

/** Counters that say a connection went wrong (retransmit, reset, drop), whatever their value. */
const WATCH = /SynRetrans|RetransSegs|OutRsts|AttemptFails|EstabResets|ListenDrops|ListenOverflows|TimeWaitRecycled|InDiscards|OutDiscards|InNoRoutes|InErrors|TCPAbort|TWRecycled|PAWS|TCPTimeouts|LostRetransmit|TCPBacklogDrop|TCPReqQFullDrop|TCPMinTTLDrop/;

interface Round {
  tps: number;
  transactions: number;
  cpu: Map<string, number>;
  progs: Array<{ name: string; id: number; nsPerConn: number; runsPerConn: number; nsPerRun: number }>;
  counters: Map<string, number>;
}

async function oneRound(p: MasqPair, secs: number, agentPid: number | undefined, pathNs: string[], ours: Set<number>, stopAgent: boolean, profileSocket?: string, agentSocket?: string, perfOut?: string): Promise<Round & { hot?: string[]; ev?: { read: number; lost: number } }> {
  const events = async (): Promise<{ read: number; lost: number } | undefined> => {
    if (!agentSocket) return undefined;
    const h = (await new ApiClient(agentSocket).get('/v1/healthz', 30_000).catch(() => undefined)) as { monitor?: { read: number; lost: number } | null } | undefined;
    return h?.monitor ?? undefined;
  };
  const e0 = await events();
  const c0 = new Map(pathNs.map((ns) => [ns, netCounters(ns)] as const));
  const p0 = progStats();
  const s0 = snapshot(agentPid);
  if (stopAgent && agentPid) process.kill(agentPid, 'SIGSTOP');
  let r;
  const perfFile = perfOut ? `${perfOut}.data` : undefined;
  const perf = perfFile ? runAsync(['perf', 'record', '-a', '-g', '-q', '-o', perfFile, '--', 'sleep', String(Math.max(1, secs - 1))], { timeoutMs: (secs + 60) * 1000 }).catch(() => undefined) : undefined;
  const prof = profileSocket
    ? new ApiClient(profileSocket).get(`/v1/debug/cpu-profile?ms=${Math.max(1000, secs * 1000 - 500)}&interval-us=500`, secs * 1000 + 60_000).catch(() => undefined)
    : undefined;
  try {
    r = await crr(path.join(TOOLS, 'rr'), p.server, p.client, p.serverIp, CRR_PORT, secs, 0, 1);
  } finally {
    if (stopAgent && agentPid) process.kill(agentPid, 'SIGCONT');
  }
  const s1 = snapshot(agentPid);
  if (perf && perfFile && perfOut) {
    await perf;
    const rep = run(['perf', 'report', '-i', perfFile, '--stdio', '--no-children', '--comms', 'rr', '--sort', 'sym', '--percent-limit', '0.5'], { allowFail: true, timeoutMs: 120_000 });
    fs.writeFileSync(`${perfOut}.txt`, rep.stdout);
    if (!process.env['MASQ_DIAG_KEEP_PERF']) fs.rmSync(perfFile, { force: true });
  }
  const e1 = await events();
  const p1 = progStats();
  const counters = new Map<string, number>();
  for (const ns of pathNs) {
    const a = c0.get(ns)!;
    for (const [k, v] of netCounters(ns)) {
      const d = v - (a.get(k) ?? 0);
      if (d !== 0 && WATCH.test(k)) counters.set(`${ns.replace(/^tdlb-\d+-|^tl-[^-]+-/, '')}:${k}`, d);
    }
  }
  const cpu = new Map<string, number>();
  for (const [k, v] of s1) {
    const d = v - (s0.get(k) ?? 0);
    if (d > 0) cpu.set(k, d / TICKS);
  }
  const n = Math.max(1, r.transactions);
  const progs = [...p1]
    .filter(([id]) => ours.has(id))
    .map(([id, b]) => {
      const a = p0.get(id) ?? { ns: 0, cnt: 0 };
      const cnt = b.cnt - a.cnt;
      return { name: b.name, id, nsPerConn: (b.ns - a.ns) / n, runsPerConn: cnt / n, nsPerRun: cnt ? (b.ns - a.ns) / cnt : 0 };
    })
    .filter((x) => x.runsPerConn >= 0.05);
  const profile = (await prof) as Parameters<typeof profileHotspots>[0] | undefined;
  const hot = profile ? profileHotspots(profile, 25).map((h) => `${h.fn}: ${h.ms} ms (self ${h.selfMs})`) : undefined;
  const ev = e0 && e1 ? { read: (e1.read - e0.read) / n, lost: (e1.lost - e0.lost) / n } : undefined;
  return { tps: r.tps, transactions: r.transactions, cpu, progs, counters, ...(hot ? { hot } : {}), ...(ev ? { ev } : {}) };
}

function report(label: string, rounds: Array<Round & { hot?: string[]; ev?: { read: number; lost: number } }>): string[] {
  const lines = [`### ${label}`, '', `TCP_CRR: ${rounds.map((r) => r.tps.toFixed(0)).join(' / ')} conn/s (median ${median(rounds.map((r) => r.tps)).toFixed(0)})`, ''];
  lines.push('| CPU of | µs per connection (median) | CPU s per round |', '|---|---:|---:|');
  const keys = new Set(rounds.flatMap((r) => [...r.cpu.keys()]));
  const rows = [...keys].map((k) => ({ k, us: median(rounds.map((r) => ((r.cpu.get(k) ?? 0) * 1e6) / Math.max(1, r.transactions))), s: median(rounds.map((r) => r.cpu.get(k) ?? 0)) }));
  rows.sort((a, b) => b.us - a.us);
  for (const x of rows) if (x.us >= 0.5) lines.push(`| ${x.k} | ${x.us.toFixed(1)} | ${x.s.toFixed(2)} |`);
  const progs = new Map<string, Round['progs']>();
  for (const r of rounds) for (const pr of r.progs) progs.set(`${pr.name}#${pr.id}`, [...(progs.get(`${pr.name}#${pr.id}`) ?? []), pr]);
  if (progs.size) {
    lines.push('', '| BPF program | runs per connection | ns per run | ns per connection |', '|---|---:|---:|---:|');
    for (const [k, v] of progs) lines.push(`| ${k} | ${median(v.map((x) => x.runsPerConn)).toFixed(2)} | ${median(v.map((x) => x.nsPerRun)).toFixed(0)} | ${median(v.map((x) => x.nsPerConn)).toFixed(0)} |`);
  }
  const ck = new Set(rounds.flatMap((r) => [...r.counters.keys()]));
  const evs = rounds.filter((r) => r.ev).map((r) => r.ev!);
  if (evs.length) lines.push('', `agent ring events per connection: read ${evs.map((e) => e.read.toFixed(2)).join(' / ')}, lost ${evs.map((e) => e.lost.toFixed(2)).join(' / ')}`);
  const hot = rounds.find((r) => r.hot)?.hot;
  if (hot) lines.push('', 'agent CPU profile of one round (inclusive ms):', '', ...hot.map((h) => `- ${h}`));
  lines.push('', `counters (per round): ${ck.size ? [...ck].map((k) => `${k} ${rounds.map((r) => r.counters.get(k) ?? 0).join('/')}`).join(', ') : 'none of the watched ones moved'}`, '');
  return lines;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { secs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '2' }, exp: { type: 'string', default: 'normal,agent-stopped' }, profile: { type: 'boolean', default: false }, perf: { type: 'string' } } });
  const secs = Number(values.secs);
  const rounds = Number(values.rounds);
  const exps = values.exp.split(',');
  const nets = new BenchNetns(`tdlb-${process.pid}-`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-masq-diag-'));
  const lab = `tdmd${process.pid % 100000}`;
  const statsBefore = run(['sysctl', '-n', 'kernel.bpf_stats_enabled']).stdout.trim();
  const out: string[] = [`# masq-diag ${new Date().toISOString()} (load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}: indicative)`, ''];
  try {
    const pairs = [...setupRefMasq(nets, tmp), await setupTendrilMasq(lab)];
    const st = loadLab(lab);
    const agentPid = st.nodes[0]!.pid;
    run(['sysctl', '-qw', 'kernel.bpf_stats_enabled=1']);
    const tendril = pairs.find((p) => p.name === MASQ_TENDRIL)!;
    const ours = attachedIds([tendril.node.ns, tendril.client, ...st.nodes.map((n) => n.netns)]);
    // cgroup programs of the lab (socket LB) are in no netns: take every cil_/sock program that ran as a candidate too.
    for (const [id, pstat] of progStats()) if (/^cil_|^sock|^tendril/.test(pstat.name)) ours.add(id);
    const results: Array<[string, Array<Round & { hot?: string[]; ev?: { read: number; lost: number } }>]> = [];
    const order: Array<[string, MasqPair, boolean]> = [];
    for (const e of exps) {
      if (e === 'normal') order.push([`${MASQ_TENDRIL}`, tendril, false]);
      else if (e === 'agent-stopped') order.push([`${MASQ_TENDRIL}, agent SIGSTOPped during the round`, tendril, true]);
      else if (e === 'ptp') order.push([MASQ_PTP, pairs.find((p) => p.name === MASQ_PTP)!, false]);
      else if (e === 'routed') order.push([MASQ_ROUTED, pairs.find((p) => p.name === MASQ_ROUTED)!, false]);
      else throw new Error(`Unknown experiment "${e}"`);
    }
    const acc = new Map<string, Array<Round & { hot?: string[]; ev?: { read: number; lost: number } }>>(order.map(([l]) => [l, []]));
    for (let i = 0; i < rounds; i++) {
      for (const [label, p, stop] of i % 2 ? [...order].reverse() : order) {
        const isT = p.name === MASQ_TENDRIL;
        const prof = values.profile && isT && !stop && i === 0 ? st.nodes[0]!.socket : undefined;
        const r = await oneRound(p, secs, isT ? agentPid : undefined, [p.client, p.node.ns, p.server], ours, stop, prof, isT ? st.nodes[0]!.socket : undefined, values.perf && i === 0 ? `${values.perf}-${label.replace(/[^a-z]+/g, '-')}` : undefined);
        console.error(`round ${i + 1} ${label}: ${r.tps.toFixed(0)} conn/s`);
        acc.get(label)!.push(r);
      }
    }
    for (const [l, r] of acc) results.push([l, r]);
    for (const [l, r] of results) out.push(...report(l, r));
  } finally {
    run(['sysctl', '-qw', `kernel.bpf_stats_enabled=${statsBefore || '0'}`], { allowFail: true });
    await labDown(lab).catch(() => undefined);
    nets.delMany(nets.list());
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(out.join('\n'));
}

await main();
