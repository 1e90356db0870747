// Where the L7 bench's tail at 1,000 req/s comes from: the open-loop run of bench/l7.ts (client -> server on
// another node, tunnel) with an L4-only allow and with the L7 rule, interleaved, the load client and the node proxy
// both tracing (bench/l7-load.ts --trace, src/proxy/trace.ts). Per request through the proxy: client -> proxy
// (send to head judged), proxy -> server -> proxy (to the response head), proxy -> client (to the client's done);
// for the slowest 1 % the share that overlapped a proxy GC pause, an event-loop stall, a flow flush.
// Three ways interleaved: the L4-only allow, the L7 rule with the proxy at nice 0, and at --nice (its default).
//   node dist/bench/l7-tail.js [--secs 10] [--rounds 2] [--rate 1000] [--nice -10] [--keep DIR]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { labDown, labUp, loadLab, podAdd } from '../src/lab/lab.js';
import { labPolicyDelete } from '../src/lab/security.js';
import type { TraceEvent } from '../src/proxy/trace.js';
import { applyPolicy, type L7Policy } from './l7.js';
import type { LoadResult } from './l7-load.js';
import { proxyPidOf } from './l7-cpu.js';
import { setProcessNice } from '../src/proxy/priority.js';
import { inNs, runAsync, sleep } from './proc.js';
import { median, percentile } from './stats.js';

const LOAD_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'l7-load.js');
const { values } = parseArgs({ options: { secs: { type: 'string', default: '10' }, rounds: { type: 'string', default: '2' }, rate: { type: 'string', default: '1000' }, conc: { type: 'string', default: '8' }, nice: { type: 'string', default: '-10' }, keep: { type: 'string' } } });
const secs = Number(values.secs);
const rounds = Number(values.rounds);

type ClientLine = [number, number, number, boolean];

interface Analysis {
  p50: number;
  p99: number;
  legs?: { name: string; p50: number; p99: number; slowMean: number }[];
  slow?: { n: number; gc: number; lag: number; flush: number };
  pauses?: { gcMs: number; gcMax: number; lags: number; lagMax: number; flushes: number; flushMeanUs: number };
}

const ms = (ns: number): number => ns / 1e6;

function analyse(client: ClientLine[], proxy: TraceEvent[] | undefined): Analysis {
  const ok = client.filter((c) => c[3]);
  const total = ok.map((c) => ms(c[2] - c[1]));
  const out: Analysis = { p50: percentile(total, 0.5), p99: percentile(total, 0.99) };
  if (proxy === undefined) return out;
  const req = new Map<string, number>();
  const resp = new Map<string, number>();
  const gcs: [number, number][] = [];
  const lags: [number, number][] = [];
  const flushes: [number, number][] = [];
  for (const e of proxy) {
    if (e[0] === 'req') req.set(e[1], e[2]);
    else if (e[0] === 'resp') resp.set(e[1], e[2]);
    else if (e[0] === 'gc') gcs.push([e[1], e[1] + e[2]]);
    else if (e[0] === 'lag') lags.push([e[1] - e[2], e[1]]);
    else flushes.push([e[1], e[1] + e[3]]);
  }
  const rows = ok
    .filter((c) => req.has(String(c[0])) && resp.has(String(c[0])))
    .map((c) => {
      const a = req.get(String(c[0]))!;
      const b = resp.get(String(c[0]))!;
      return { sent: c[1], done: c[2], total: c[2] - c[1], legs: [a - c[1], b - a, c[2] - b] };
    });
  const names = ['client -> proxy', 'proxy -> server -> proxy', 'proxy -> client'];
  const cut = percentile(
    rows.map((r) => r.total),
    0.99,
  );
  const slow = rows.filter((r) => r.total >= cut);
  const overlaps = (spans: [number, number][], r: { sent: number; done: number }): boolean => spans.some(([s, e]) => s < r.done && e > r.sent);
  out.legs = names.map((name, i) => ({
    name,
    p50: ms(percentile(
      rows.map((r) => r.legs[i]!),
      0.5,
    )),
    p99: ms(percentile(
      rows.map((r) => r.legs[i]!),
      0.99,
    )),
    slowMean: ms(slow.reduce((n, r) => n + r.legs[i]!, 0) / Math.max(1, slow.length)),
  }));
  out.slow = { n: slow.length, gc: slow.filter((r) => overlaps(gcs, r)).length, lag: slow.filter((r) => overlaps(lags, r)).length, flush: slow.filter((r) => overlaps(flushes, r)).length };
  out.pauses = {
    gcMs: ms(gcs.reduce((n, [s, e]) => n + e - s, 0)),
    gcMax: ms(Math.max(0, ...gcs.map(([s, e]) => e - s))),
    lags: lags.length,
    lagMax: ms(Math.max(0, ...lags.map(([s, e]) => e - s))),
    flushes: flushes.length,
    flushMeanUs: flushes.length ? flushes.reduce((n, [s, e]) => n + e - s, 0) / flushes.length / 1e3 : 0,
  };
  return out;
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-tail-'));
  const proxyTrace = path.join(tmp, 'proxy.trace');
  process.env['TENDRIL_PROXY_TRACE'] = proxyTrace;
  const lab = `l7t${process.pid % 100000}`;
  await labDown(lab);
  await labUp({ name: lab, nodes: 2, routing: 'tunnel' });
  type Way = 'l4' | 'l7 nice 0' | 'l7 nice N';
  const results: { way: Way; a: Analysis; load: LoadResult }[] = [];
  const nice = Number(values.nice);
  try {
    const nodes = loadLab(lab).nodes.map((n) => n.name);
    const web = await podAdd(lab, 'web', { node: nodes[1]!, labels: { app: 'web' }, serve: [80] });
    const client = await podAdd(lab, 'client', { node: nodes[0]!, labels: { role: 'client' } });
    let applied: string[] = [];
    for (let round = 1; round <= rounds; round++) {
      const ways: Way[] = ['l4', 'l7 nice 0', 'l7 nice N'];
      for (let k = 0; k < ways.length; k++) {
        const way = ways[(k + round - 1) % ways.length]!;
        const policy: L7Policy = way === 'l4' ? 'l4' : 'l7';
        applied = await applyPolicy(lab, tmp, policy, client.netns, web.ip, 'l7-tail');
        if (policy === 'l7') {
          const agent = loadLab(lab).nodes.find((n) => n.name === nodes[1])!.pid;
          const pid = proxyPidOf(agent);
          if (pid === undefined) throw new Error('l7-tail: no proxy process under the server agent');
          setProcessNice(pid, way === 'l7 nice 0' ? 0 : nice);
        }
        await sleep(1500); // the proxy's trace writer runs each second: what came before this run is out
        fs.rmSync(proxyTrace, { force: true });
        const clientTrace = path.join(tmp, `client-${round}-${policy}.trace`);
        const args = ['--url', `http://${web.ip}/public`, '--mode', 'rate', '--secs', String(secs), '--conc', values.conc!, '--rate', values.rate!, '--trace', clientTrace];
        const done = await runAsync(inNs(client.netns, [process.execPath, LOAD_JS, ...args]), { timeoutMs: (secs + 60) * 1000 });
        const load = JSON.parse(done.stdout.trim().split('\n').pop()!) as LoadResult;
        await sleep(1500);
        const lines = (f: string): unknown[] => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown) : []);
        if (values.keep) {
          fs.mkdirSync(values.keep, { recursive: true });
          const tag = `${round}-${way.replace(/ /g, '-')}`;
          if (fs.existsSync(proxyTrace)) fs.copyFileSync(proxyTrace, path.join(values.keep, `proxy-${tag}.trace`));
          fs.copyFileSync(clientTrace, path.join(values.keep, `client-${tag}.trace`));
        }
        const a = analyse(lines(clientTrace) as ClientLine[], policy === 'l7' ? (lines(proxyTrace) as TraceEvent[]) : undefined);
        results.push({ way, a, load });
        console.log(`round ${round} ${way.replace('N', String(nice))}: ${load.rps.toFixed(0)} req/s, p50 ${a.p50.toFixed(2)} ms, p99 ${a.p99.toFixed(2)} ms`);
        if (a.legs) for (const l of a.legs) console.log(`  ${l.name}: p50 ${l.p50.toFixed(3)} ms, p99 ${l.p99.toFixed(3)} ms, mean over the slowest 1 % ${l.slowMean.toFixed(3)} ms`);
        if (a.slow) console.log(`  slowest 1 % (${a.slow.n}): overlapping a proxy GC ${a.slow.gc}, an event-loop stall > 1 ms ${a.slow.lag}, a flow flush ${a.slow.flush}`);
        if (a.pauses) console.log(`  proxy over the run: GC ${a.pauses.gcMs.toFixed(1)} ms (max ${a.pauses.gcMax.toFixed(2)}), ${a.pauses.lags} stall(s) > 1 ms (max ${a.pauses.lagMax.toFixed(2)}), ${a.pauses.flushes} flush(es) of ${a.pauses.flushMeanUs.toFixed(0)} µs`);
      }
    }
    for (const r of applied) await labPolicyDelete(lab, r);
  } finally {
    await labDown(lab);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const med = (w: Way, k: 'p50' | 'p99'): number => median(results.filter((r) => r.way === w).map((r) => r.a[k]));
  console.log(`medians of ${rounds} round(s) of ${secs} s at ${values.rate} req/s offered (load average ${os.loadavg()[0]!.toFixed(2)} at the end):`);
  console.log('| way | p50 ms | p99 ms | p99 added ms |');
  console.log('|---|---:|---:|---:|');
  for (const w of ['l4', 'l7 nice 0', 'l7 nice N'] as Way[]) console.log(`| ${w.replace('N', String(nice))} | ${med(w, 'p50').toFixed(2)} | ${med(w, 'p99').toFixed(2)} | ${w === 'l4' ? '' : (med(w, 'p99') - med('l4', 'p99')).toFixed(2)} |`);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
