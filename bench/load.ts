// Load generators between two namespaces (iperf3 stream, rr request/response) and the CPU-noise probes around them.
import fs from 'node:fs';
import os from 'node:os';
import { BenchError, inNs, kill, run, runAsync, sleep, start, type Started } from './proc.js';
import type { RR } from './report.js';

/** Client on CPU0, server on CPU1 (as the reference harness): the two ends never fight for one core. */
const CLIENT_CPU = '0';
const SERVER_CPU = os.cpus().length > 1 ? '1' : '0';

/** Pinned and at nice -19, so unrelated CFS load on the box does not preempt the load generators. */
function pinned(cpu: string, argv: string[]): string[] {
  return ['taskset', '-c', cpu, 'nice', '-n', '-19', ...argv];
}

// ---------------------------------------------------------------- noise probes

function cpuTimes(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Share of all CPUs busy over `ms` (before a test: anything but us is foreign load). */
export async function cpuBusyPct(ms: number): Promise<number> {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  return b.total > a.total ? (100 * (b.busy - a.busy)) / (b.total - a.total) : 0;
}

/** Waits until the machine is quiet (busy <= maxPct), at most maxWaitMs; returns the last busy %. */
export async function waitQuiet(maxPct: number, maxWaitMs: number): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  for (;;) {
    const busy = await cpuBusyPct(500);
    if (busy <= maxPct || Date.now() >= deadline) return busy;
  }
}

const PF_KTHREAD = 0x00200000;
const TICKS_PER_S = 100; // USER_HZ: /proc times are in 1/100 s on Linux

interface CpuSnapshot {
  /** user + nice + system + steal of all CPUs (irq/softirq left out: that is mostly our own packets). */
  busy: number;
  /** The bench process: own time + reaped children (every short command and finished load generator). */
  self: number;
  /** Live children (load generators, the lab agents) and kernel threads (softirq work of our packets). */
  ours: Map<number, number>;
  children: Set<number>;
}

function statFields(pid: string): string[] | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    return stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  } catch {
    return undefined; // exited meanwhile
  }
}

function cpuSnapshot(): CpuSnapshot {
  const v = (fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[7] ?? 0);
  const me = statFields('self') ?? [];
  const self = Number(me[11]) + Number(me[12]) + Number(me[13]) + Number(me[14]);
  const ours = new Map<number, number>();
  const children = new Set<number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    const f = statFields(e);
    if (!f) continue;
    const ppid = Number(f[1]);
    if (ppid === process.pid) children.add(Number(e));
    if (ppid === process.pid || Number(f[6]) & PF_KTHREAD) ours.set(Number(e), Number(f[11]) + Number(f[12]));
  }
  return { busy, self, ours, children };
}

/** CPU time all CPUs have been busy since boot (seconds, summed over CPUs; as cpuTimes()). */
export function boxBusySeconds(): number {
  return cpuTimes().busy / TICKS_PER_S;
}

/** CPU time (user + system, seconds) a live process has used; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  const f = statFields(String(pid));
  return f ? (Number(f[11]) + Number(f[12])) / TICKS_PER_S : undefined;
}

/**
 * Starts a meter of foreign CPU load; the returned function gives the % of all CPUs used since the start by
 * anything that is not the bench, its children or the kernel: other work on the box, and steal by the host.
 */
export function foreignMeter(): () => number {
  const t0 = performance.now();
  const a = cpuSnapshot();
  return () => {
    const b = cpuSnapshot();
    const wallS = (performance.now() - t0) / 1000;
    let ours = b.self - a.self;
    for (const [pid, t] of b.ours) ours += t - (a.ours.get(pid) ?? 0); // born meanwhile: all of it is in the window
    // A child that ended meanwhile moved its whole time into our cutime: take out what it had before the start.
    for (const pid of a.children) if (!b.ours.has(pid)) ours -= a.ours.get(pid) ?? 0;
    const foreign = Math.max(0, b.busy - a.busy - ours);
    return wallS > 0 ? Math.min(100, (100 * foreign) / TICKS_PER_S / wallS / os.cpus().length) : 0;
  };
}

// ---------------------------------------------------------------- servers

async function waitListening(ns: string, port: number, server: Started, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void server.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) {
      const d = await server.exited;
      throw new BenchError(`Server in netns "${ns}" exited before listening on port ${port}: ${d.stderr.trim()}`);
    }
    const r = run(inNs(ns, ['ss', '-Hltn', `sport = :${port}`]), { allowFail: true });
    if (r.stdout.trim() !== '') return;
    await sleep(20);
  }
  kill(server.pid);
  throw new BenchError(`Server in netns "${ns}" is not listening on port ${port} after ${timeoutMs} ms`);
}

/** Waits for a one-shot server to exit by itself after its client finished; kills it if it lingers. */
async function reap(server: Started, graceMs = 3000): Promise<void> {
  const timer = setTimeout(() => kill(server.pid), graceMs);
  await server.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------- iperf3

const IPERF_PORT = 5201;

/** One TCP stream for `secs` seconds, client in `cli` to `ip` in `srv`; returns the receiver's Gbit/s. */
export async function iperf(srv: string, cli: string, ip: string, secs: number): Promise<number> {
  const server = start(inNs(srv, pinned(SERVER_CPU, ['iperf3', '-s', '-1', '-p', String(IPERF_PORT)])));
  try {
    await waitListening(srv, IPERF_PORT, server);
    const r = await runAsync(inNs(cli, pinned(CLIENT_CPU, ['iperf3', '-c', ip, '-p', String(IPERF_PORT), '-t', String(secs), '-J'])), {
      timeoutMs: (secs + 30) * 1000,
    });
    const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
    const bps = j.end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number' || !(bps > 0)) throw new BenchError(`iperf3 ${cli} -> ${ip} reported no throughput${j.error ? `: ${j.error}` : ''}`);
    return bps / 1e9;
  } finally {
    await reap(server);
  }
}

// ---------------------------------------------------------------- rr

const RR_PORT = 5555;

export interface RRResult {
  transactions: number;
  seconds: number;
  tps: number;
  mean_us: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  max_us: number;
}

/**
 * TCP request/response with 1-byte messages over one connection for `secs` seconds. `oneCpu`: client and
 * server share CPU0 instead of CPU0/CPU1; then no cross-CPU wake-up (an IPI, costly in a VM) hides the path.
 */
export async function rr(rrBin: string, srv: string, cli: string, ip: string, secs: number, oneCpu = false): Promise<RRResult> {
  const server = start(inNs(srv, pinned(oneCpu ? CLIENT_CPU : SERVER_CPU, [rrBin, '-s', '-1', '-p', String(RR_PORT), '-T', String(secs + 30)])));
  try {
    // No readiness poll needed: the rr client retries connect() while the server is not yet listening.
    const r = await runAsync(inNs(cli, pinned(CLIENT_CPU, [rrBin, '-c', ip, '-p', String(RR_PORT), '-t', String(secs), '-b', '1'])), {
      timeoutMs: (secs + 30) * 1000,
    });
    return JSON.parse(r.stdout) as RRResult;
  } finally {
    await reap(server);
  }
}

/** The figures of an rr run that the tables show. */
export function rrSummary(r: RRResult): RR {
  return { tps: r.tps, p50us: r.p50_us, p99us: r.p99_us };
}

/** Fails unless `cli` reaches `ip` (ping); the bench never measures a broken pair. */
export function checkConnectivity(cli: string, ip: string, what: string): void {
  const r = run(inNs(cli, ['ping', '-c', '2', '-i', '0.2', '-W', '1', ip]), { allowFail: true });
  if (r.status !== 0) throw new BenchError(`No connectivity in scenario ${what}: ${cli} cannot ping ${ip}: ${(r.stdout + r.stderr).trim().split('\n').slice(-2).join(' ')}`);
}

// ---------------------------------------------------------------- many short connections (event rate)

export interface CrrResult {
  /** Connections completed (connect, 1 byte there and back, close), summed over the clients. */
  transactions: number;
  /** Connections per second, summed over the clients. */
  tps: number;
  /** Slowest client's p99 of one connection's life (µs). */
  p99us: number;
}

/**
 * Opens connections from `cli` to `ip`:`port` for `secs` seconds with `clients` rr clients in parallel (-C: one
 * connection per transaction), together at most `rate` per second (0 = as fast as they can). Neither end is
 * pinned nor reniced: the agent reading the events competes for the CPUs as it would on a busy node.
 */
export async function crr(rrBin: string, srv: string, cli: string, ip: string, port: number, secs: number, rate: number, clients: number): Promise<CrrResult> {
  // The client closes first, so its ports sit in TIME_WAIT for 60 s: thousands of connections per second need
  // the whole port range and reuse of TIME_WAIT ports (both per namespace: the bench's own pod only).
  run(inNs(cli, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1']));
  const server = start(inNs(srv, [rrBin, '-s', '-w', String(clients), '-p', String(port), '-T', String(secs + 30)]));
  try {
    const perClient = rate > 0 ? ['-r', String(rate / clients)] : [];
    const runs = await Promise.all(
      Array.from({ length: clients }, () =>
        runAsync(inNs(cli, [rrBin, '-c', ip, '-p', String(port), '-t', String(secs), '-C', ...perClient]), { timeoutMs: (secs + 30) * 1000 }),
      ),
    );
    const rs = runs.map((r) => JSON.parse(r.stdout) as RRResult);
    return {
      transactions: rs.reduce((a, r) => a + r.transactions, 0),
      tps: rs.reduce((a, r) => a + r.tps, 0),
      p99us: Math.max(...rs.map((r) => r.p99_us)),
    };
  } finally {
    // Its workers die with it (PR_SET_PDEATHSIG).
    kill(server.pid);
    await server.exited;
  }
}
