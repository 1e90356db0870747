// One forwarding loop of the node proxy: an engine accepting on the shared transparent listener, judging with the
// rules it was last given, handing its flow records to `onFlow`. The proxy process runs one per worker thread
// (workers.ts), or one on its main thread.
import net from 'node:net';
import { markedSocket } from '../kernel/socket/index.js';
import type { RawFlow } from './flow-wire.js';
import { HttpFastEngine } from './fast-engine.js';
import { MARK_MAGIC_FROM_PROXY } from './marks.js';
import { ProxyRules, type ProxyTable } from './rules.js';
import type { ProxyTrace } from './trace.js';
import type { HttpProxyStats } from './types.js';

export interface EngineHost {
  readonly stats: HttpProxyStats;
  setRules(table: ProxyTable): void;
  close(): void;
}

/** Starts accepting on the listening socket `fd`; `onListening` once it does. */
export function hostEngine(fd: number, o: { onFlow: (f: RawFlow) => void; trace: ProxyTrace | undefined; onListening: () => void }): EngineHost {
  let rules = new ProxyRules({ endpoints: [], identities: [] });
  const engine = new HttpFastEngine({
    policyFor(info) {
      const p = rules.forConnection(info.srcIp, info.dstIp, info.dstPort);
      if (p === undefined) return undefined;
      return {
        ...p,
        connect(i) {
          // The client's address and, in the mark, its identity: the destination's policy judges the client.
          const sfd = markedSocket({ localAddress: i.srcIp, mark: MARK_MAGIC_FROM_PROXY | ((p.srcIdentity & 0xffff) << 16) });
          return new net.Socket({ fd: sfd }).connect({ port: i.dstPort, host: i.dstIp });
        },
      };
    },
    onRawFlow: o.onFlow,
    trace: o.trace,
  });
  const server = net.createServer((s) => engine.handle(s));
  server.listen({ fd }, o.onListening);
  return {
    stats: engine.stats,
    setRules(table) {
      rules = new ProxyRules(table);
    },
    close() {
      engine.close();
      server.close();
    },
  };
}
