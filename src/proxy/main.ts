// The node proxy process: forked by the agent's ProxySupervisor in the node's namespace, fed its rules over IPC.
// The main thread owns the transparent listener and the IPC; the forwarding runs on `proxyWorkers()` loops
// (engine-host.ts): worker threads accepting on the same listener, or the main thread itself when one is enough.
// Each request's kernel work (the writes that carry it to the server and back to the client) runs on the loop
// that handles it, so on a node with more than one CPU several loops forward at once, as Envoy's worker threads do.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { transparentListener } from '../kernel/socket/index.js';
import { hostEngine } from './engine-host.js';
import { FLOW_BATCH_MAX, FLOW_FLUSH_MS, FlowBatcher, type FlowBatch, type RawFlow } from './flow-wire.js';
import { traceFromEnv, type ProxyTrace } from './trace.js';
import { proxyWorkers } from './workers.js';
import type { ProxyTable } from './rules.js';
import type { HttpProxyStats } from './types.js';

export type ToProxy = { type: 'rules'; table: ProxyTable };
export type FromProxy = { type: 'ready'; port: number } | { type: 'flows'; batch: FlowBatch } | { type: 'stats'; stats: HttpProxyStats } | { type: 'error'; message: string };

/** Between the main thread and a worker. */
type ToWorker = ToProxy | { type: 'stop' };
type FromWorker = { type: 'listening' } | { type: 'flows'; batch: FlowBatch } | { type: 'stats'; stats: HttpProxyStats };


/**
 * Flow records go to the agent in compact batches (flow-wire.ts): one message per FLOW_FLUSH_MS or per
 * FLOW_BATCH_MAX records, whichever comes first (not one per turn of the event loop: each message costs a write
 * here and a read and a decode in the agent).
 */
function flowQueue(send: (b: FlowBatch) => void, trace: ProxyTrace | undefined): { add: (f: RawFlow) => void; flush: () => void } {
  const batcher = new FlowBatcher();
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    clearTimeout(timer);
    timer = undefined;
    if (batcher.size === 0) return;
    const t0 = trace ? Number(process.hrtime.bigint()) : 0;
    const n = batcher.size;
    send(batcher.take());
    trace?.flush(t0, n);
  };
  return {
    add(f) {
      batcher.add(f);
      if (batcher.size >= FLOW_BATCH_MAX) flush();
      else timer ??= setTimeout(flush, FLOW_FLUSH_MS);
    },
    flush,
  };
}

function send(m: FromProxy): void {
  process.send?.(m);
}

/** A worker thread: one engine on the listener the main thread passed, flows and counters to the main thread. */
function runWorker(): void {
  const port = parentPort!;
  const post = (m: FromWorker): void => port.postMessage(m);
  const trace = traceFromEnv();
  const flows = flowQueue((batch) => post({ type: 'flows', batch }), trace);
  const host = hostEngine((workerData as { fd: number }).fd, { onFlow: flows.add, trace, onListening: () => post({ type: 'listening' }) });
  const stats = setInterval(() => post({ type: 'stats', stats: host.stats }), 1000);
  port.on('message', (m: ToWorker) => {
    if (m.type === 'rules') host.setRules(m.table);
    else if (m.type === 'stop') {
      clearInterval(stats);
      flows.flush();
      trace?.stop();
      host.close();
      process.exit(0); // this thread only
    }
  });
}

function runMain(): void {
  const port = Number(process.argv[2]);
  const trace = traceFromEnv();
  const n = proxyWorkers();
  let fd: number;
  try {
    fd = transparentListener(port);
  } catch (err) {
    send({ type: 'error', message: (err as Error).message });
    process.exit(1);
  }
  const sum = (list: HttpProxyStats[]): HttpProxyStats => {
    const s: HttpProxyStats = { connections: 0, requests: 0, forwarded: 0, denied: 0, errors: 0 };
    for (const x of list) for (const k of Object.keys(s) as (keyof HttpProxyStats)[]) s[k] += x[k];
    return s;
  };
  let stats: () => HttpProxyStats;
  let setRules: (table: ProxyTable) => void;
  let stop: () => Promise<void>;
  const ready = (): void => {
    send({ type: 'ready', port });
    // Counters from the start, so status never shows a running proxy without them.
    send({ type: 'stats', stats: stats() });
    setInterval(() => send({ type: 'stats', stats: stats() }), 1000).unref();
  };
  if (n === 1) {
    const flows = flowQueue((batch) => send({ type: 'flows', batch }), trace);
    const host = hostEngine(fd, { onFlow: flows.add, trace, onListening: ready });
    stats = () => host.stats;
    setRules = (t) => host.setRules(t);
    stop = async () => flows.flush();
  } else {
    const counters: HttpProxyStats[] = [];
    let listening = 0;
    const workers = Array.from({ length: n }, (_, i) => {
      const w = new Worker(new URL(import.meta.url), { workerData: { fd } });
      counters[i] = { connections: 0, requests: 0, forwarded: 0, denied: 0, errors: 0 };
      w.on('message', (m: FromWorker) => {
        if (m.type === 'flows') send(m);
        else if (m.type === 'stats') counters[i] = m.stats;
        else if (++listening === n) ready();
      });
      // A lost loop would leave part of the connections unserved: end the process, the supervisor starts a new one.
      w.on('error', (err) => {
        send({ type: 'error', message: `proxy worker ${i}: ${err.message}` });
        process.exit(1);
      });
      w.on('exit', () => {
        if (!stopping) process.exit(1);
      });
      return w;
    });
    let stopping = false;
    stats = () => sum(counters);
    setRules = (table) => {
      for (const w of workers) w.postMessage({ type: 'rules', table } satisfies ToWorker);
    };
    stop = async () => {
      stopping = true;
      await Promise.race([
        Promise.all(workers.map((w) => new Promise((r) => (w.postMessage({ type: 'stop' } satisfies ToWorker), w.once('exit', r))))),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    };
  }
  process.on('message', (m: ToProxy) => {
    if (m.type === 'rules') setRules(m.table);
  });
  // The supervisor's SIGTERM (or its going away) ends the process through exit, so a trace writes its last events
  // and a --cpu-prof (TENDRIL_PROXY_NODE_FLAGS) its profiles.
  const end = (): void => {
    void stop().finally(() => {
      trace?.stop();
      process.exit(0);
    });
  };
  process.on('disconnect', end);
  process.on('SIGTERM', end);
}

if (isMainThread) runMain();
else runWorker();
