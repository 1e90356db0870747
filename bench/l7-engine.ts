// Loopback microbench of the proxy's engine, no datapath: the load client (bench/l7-load.js, own process) ->
// [engine in its own process] -> Node HTTP server (this process). Direct (no proxy) is the baseline, interleaved
// with the engine in the same run, medians of the rounds. (The Node-http engine it was compared with is gone.)
//   node dist/bench/l7-engine.js [--secs 3] [--rounds 3] [--conc 8] [--flows ipc|objects|none] [--no-proxy-flags]
import { execFile, fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HttpMatcher } from '../src/policy/index.js';
import { HttpFastEngine } from '../src/proxy/fast-engine.js';
import { FLOW_BATCH_MAX, FLOW_FLUSH_MS, FlowBatcher, decodeFlows, type FlowBatch, type RawFlow } from '../src/proxy/flow-wire.js';
import type { HttpFlowRecord } from '../src/proxy/types.js';
import { PROXY_NODE_FLAGS } from '../src/proxy/supervisor.js';
import type { LoadResult } from './l7-load.js';
import { median } from './stats.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    upstream: { type: 'string', default: '0' },
    secs: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '3' },
    conc: { type: 'string', default: '8' },
    flows: { type: 'string', default: 'ipc' },
    'proxy-flags': { type: 'boolean', default: true },
  },
  allowNegative: true,
});

function proxyRole(): void {
  const upPort = Number(values.upstream);
  const rules = new HttpMatcher([{ method: 'GET', path: '/public(/.*)?', host: null, headers: [] }]);
  // Flow records take the node proxy's way: compact batches over the IPC, decoded in the parent (--flows none: dropped).
  const batcher = new FlowBatcher();
  let flushTimer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    clearTimeout(flushTimer);
    flushTimer = undefined;
    if (batcher.size > 0) process.send?.({ flows: batcher.take() });
  };
  const onRawFlow = (f: RawFlow): void => {
    batcher.add(f);
    if (batcher.size >= FLOW_BATCH_MAX) flush();
    else flushTimer ??= setTimeout(flush, FLOW_FLUSH_MS);
  };
  let objects: HttpFlowRecord[] = [];
  const flushObjects = (): void => {
    process.send?.({ records: objects });
    objects = [];
  };
  const opts = {
    policyFor: () => ({ matchers: [rules], srcIdentity: 1, dstIdentity: 2, connect: () => net.connect(upPort, '127.0.0.1') }),
    // --flows objects: the records' full shape built in the proxy and cloned as objects (the encoding before the batches).
    ...(values.flows === 'objects' ? { onFlow: (f: HttpFlowRecord) => (objects.push({ ...f, time: new Date(f.time) }) === 1 ? setImmediate(flushObjects) : undefined) } : {}),
    ...(values.flows === 'ipc' ? { onRawFlow, onFlow: (f: HttpFlowRecord) => onRawFlow({ ...f, time: Date.now(), rawHeaders: f.headers.flatMap((h) => [h.key, h.value]) }) } : {}),
  };
  const engine = new HttpFastEngine(opts);
  const server = net.createServer((s) => engine.handle(s));
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as net.AddressInfo).port));
  process.on('disconnect', () => process.exit(0));
}

function load(port: number, mode: string, secs: number, conc: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(HERE, 'l7-load.js'), '--url', `http://127.0.0.1:${port}/public/x`, '--mode', mode, '--secs', String(secs), '--conc', String(conc)], (err, out) => {
      if (err) reject(err);
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult);
    });
  });
}

async function main(): Promise<void> {
  const secs = Number(values.secs);
  const rounds = Number(values.rounds);
  const conc = Number(values.conc);
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => res.end('hello from upstream\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upPort = (server.address() as net.AddressInfo).port;
  const children: ChildProcess[] = [];
  const ports: Record<string, number> = { direct: upPort };
  let flows = 0;
  try {
    for (const engine of ['fast']) {
      // The node proxy's V8 flags (ProxySupervisor), unless --no-proxy-flags (to measure what they bring).
      const execArgv = values['proxy-flags'] ? [...PROXY_NODE_FLAGS] : [];
      const c = fork(fileURLToPath(import.meta.url), ['--role', 'proxy', '--upstream', String(upPort), '--flows', values.flows!], { serialization: 'advanced', execArgv });
      children.push(c);
      ports[engine] = await new Promise<number>((r) => c.once('message', (p) => r(p as number)));
      c.on('message', (m: { flows?: FlowBatch; records?: HttpFlowRecord[] }) => {
        if (m.flows) flows += decodeFlows(m.flows).length;
        if (m.records) flows += m.records.length;
      });
    }
    const res: Record<string, LoadResult[]> = {};
    for (let round = 1; round <= rounds; round++) {
      for (const mode of ['keepalive', 'close', 'rate']) {
        for (const name of ['direct', 'fast']) {
          const r = await load(ports[name]!, mode, secs, conc);
          (res[`${mode}/${name}`] ??= []).push(r);
          process.stderr.write(`round ${round} ${mode} ${name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50ms.toFixed(2)} ms, p99 ${r.p99ms.toFixed(2)} ms (${r.errors} errors)\n`);
        }
      }
    }
    const med = (key: string, k: 'rps' | 'p50ms' | 'p99ms'): number => median(res[key]!.map((r) => r[k]));
    console.log(`## The proxy's engine on loopback (no datapath; medians of ${rounds} round(s), ${secs} s each, ${conc} connections; flow records: ${values.flows === 'none' ? 'none' : `${values.flows === 'ipc' ? 'compact batches' : 'record objects'} over the IPC, ${flows} received`})`);
    console.log('| test | direct | through the proxy | proxy / direct |');
    console.log('|---|---:|---:|---:|');
    for (const mode of ['keepalive', 'close']) {
      const [d, f] = ['direct', 'fast'].map((k) => med(`${mode}/${k}`, 'rps'));
      console.log(`| ${mode} req/s | ${d!.toFixed(0)} | ${f!.toFixed(0)} | ${(f! / d!).toFixed(2)}× |`);
    }
    // The open-loop test (1,000 req/s over keep-alive connections): the latency the proxy adds, not a ratio.
    for (const k of ['p50ms', 'p99ms'] as const) {
      const [d, f] = ['direct', 'fast'].map((e) => med(`rate/${e}`, k));
      console.log(`| 1000 req/s ${k.slice(0, 3)}, ms | ${d!.toFixed(2)} | ${f!.toFixed(2)} | ${f! - d! < 0 ? '-' : '+'}${Math.abs(f! - d!).toFixed(2)} ms |`);
    }
  } finally {
    for (const c of children) c.kill();
    server.closeAllConnections();
    server.close();
  }
}

if (values.role === 'proxy') proxyRole();
else await main();
