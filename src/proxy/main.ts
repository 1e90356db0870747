// The node proxy process: forked by the agent's ProxySupervisor in the node's namespace, fed its rules over IPC.
import net from 'node:net';
import { markedSocket, transparentListener } from '../kernel/socket/index.js';
import { FLOW_BATCH_MAX, FLOW_FLUSH_MS, FlowBatcher, type FlowBatch, type RawFlow } from './flow-wire.js';
import { HttpFastEngine } from './fast-engine.js';
import { traceFromEnv } from './trace.js';
import { MARK_MAGIC_FROM_PROXY } from './marks.js';
import { ProxyRules, type ProxyTable } from './rules.js';
import type { HttpProxyStats } from './types.js';

export type ToProxy = { type: 'rules'; table: ProxyTable };
export type FromProxy = { type: 'ready'; port: number } | { type: 'flows'; batch: FlowBatch } | { type: 'stats'; stats: HttpProxyStats } | { type: 'error'; message: string };

function send(m: FromProxy): void {
  process.send?.(m);
}

const port = Number(process.argv[2]);

// Flow records go to the agent in compact batches (flow-wire.ts): one IPC message per FLOW_FLUSH_MS or per
// FLOW_BATCH_MAX records, whichever comes first (not one per turn of the event loop: each message costs a write
// here and a read and a decode in the agent).
const batcher = new FlowBatcher();
let flushTimer: NodeJS.Timeout | undefined;
const trace = traceFromEnv();
function flushFlows(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  if (batcher.size === 0) return;
  const t0 = trace ? Number(process.hrtime.bigint()) : 0;
  const n = batcher.size;
  send({ type: 'flows', batch: batcher.take() });
  trace?.flush(t0, n);
}
function queueFlow(flow: RawFlow): void {
  batcher.add(flow);
  if (batcher.size >= FLOW_BATCH_MAX) flushFlows();
  else flushTimer ??= setTimeout(flushFlows, FLOW_FLUSH_MS);
}
let rules = new ProxyRules({ endpoints: [], identities: [] });

const engine = new HttpFastEngine({
  policyFor(info) {
    const p = rules.forConnection(info.srcIp, info.dstIp, info.dstPort);
    if (p === undefined) return undefined;
    return {
      ...p,
      connect(i) {
        // The client's address and, in the mark, its identity: the destination's policy judges the client.
        const fd = markedSocket({ localAddress: i.srcIp, mark: MARK_MAGIC_FROM_PROXY | ((p.srcIdentity & 0xffff) << 16) });
        return new net.Socket({ fd }).connect({ port: i.dstPort, host: i.dstIp });
      },
    };
  },
  onRawFlow: queueFlow,
  trace,
});

process.on('message', (m: ToProxy) => {
  if (m.type === 'rules') rules = new ProxyRules(m.table);
});
process.on('disconnect', () => {
  trace?.stop();
  process.exit(0);
});
// With a trace, its last events are written before the supervisor's SIGTERM ends the process.
if (trace)
  process.on('SIGTERM', () => {
    trace.stop();
    process.exit(0);
  });

try {
  const fd = transparentListener(port);
  const server = net.createServer((s) => engine.handle(s));
  server.listen({ fd }, () => {
    send({ type: 'ready', port });
    // Counters from the start, so status never shows a running proxy without them.
    send({ type: 'stats', stats: engine.stats });
  });
  setInterval(() => send({ type: 'stats', stats: engine.stats }), 1000).unref();
} catch (err) {
  send({ type: 'error', message: (err as Error).message });
  process.exit(1);
}
