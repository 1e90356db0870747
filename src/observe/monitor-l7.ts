// `tendril monitor`'s access-log lines: one per L7 request and response the node proxy reports, in the shape of
// cilium-dbg monitor's LogRecordNotify ("<- Request http from 12 ([k8s:app=client]) to 34 ([k8s:app=web]),
// identity 300->301, verdict Forwarded GET http://web/public => 0"). They travel as a MonitorEvent of type "l7".
import type { Flow, FlowEndpoint } from './model.js';
import type { MonitorEvent, MonitorFilter } from './monitor-format.js';

/** What an "l7" MonitorEvent carries besides the common (zeroed) event fields. */
export interface L7MonitorRecord {
  type: 'REQUEST' | 'RESPONSE';
  /** The policy the proxy applied: the client's egress ("<-") or the server's ingress ("->"). */
  direction: 'INGRESS' | 'EGRESS' | 'UNKNOWN';
  verdict: string;
  /** The flow's source and destination (for a response: server → client). */
  src: { id: number; identity: number; labels: string[] };
  dst: { id: number; identity: number; labels: string[] };
  method: string;
  url: string;
  code: number;
}

const side = (e: FlowEndpoint | undefined): L7MonitorRecord['src'] => ({ id: e?.ID ?? 0, identity: e?.identity ?? 0, labels: e?.labels ?? [] });

/** The monitor event of an L7 flow (as ObserveServer.ingestL7 built it). */
export function l7MonitorEvent(flow: Flow, node?: string): MonitorEvent & { l7: L7MonitorRecord } {
  const src = side(flow.source);
  const dst = side(flow.destination);
  const http = flow.l7?.http;
  return {
    type: 'l7',
    cpu: 0,
    ktimeNs: '0',
    source: src.id,
    hash: 0,
    origLen: 0,
    capLen: 0,
    ifindex: 0,
    srcIdentity: src.identity,
    dstIdentity: dst.identity,
    dstId: dst.id,
    data: '',
    ...(node ? { node } : {}),
    l7: {
      type: flow.l7?.type === 'RESPONSE' ? 'RESPONSE' : 'REQUEST',
      direction: flow.traffic_direction === 'INGRESS' || flow.traffic_direction === 'EGRESS' ? flow.traffic_direction : 'UNKNOWN',
      verdict: String(flow.verdict ?? 'VERDICT_UNKNOWN'),
      src,
      dst,
      method: http?.method ?? '',
      url: http?.url ?? '',
      code: http?.code ?? 0,
    },
  };
}

/** --type l7 (or no type), --related-to / --from / --to on the endpoint IDs (a response's source is the server). */
export function l7MonitorMatches(m: MonitorEvent, f: MonitorFilter): boolean {
  if (f.types && f.types.length > 0 && !f.types.includes('l7')) return false;
  if (f.relatedTo && f.relatedTo.length > 0 && !f.relatedTo.includes(m.source) && !f.relatedTo.includes(m.dstId)) return false;
  if (f.from && f.from.length > 0 && !f.from.includes(m.source)) return false;
  if (f.to && f.to.length > 0 && !f.to.includes(m.dstId)) return false;
  return true;
}

const VERDICT: Record<string, string> = { FORWARDED: 'Forwarded', DROPPED: 'Denied', ERROR: 'Error' };

/** The one-line rendering (newline-terminated); undefined for an event that is not an access-log record. */
export function formatL7Monitor(m: MonitorEvent): string | undefined {
  const r = (m as { l7?: L7MonitorRecord }).l7;
  if (m.type !== 'l7' || r === undefined) return undefined;
  const arrow = r.direction === 'EGRESS' ? '<-' : '->';
  const labels = (s: L7MonitorRecord['src']): string => `[${s.labels.join(' ')}]`;
  const verdict = VERDICT[r.verdict] ?? r.verdict;
  // Cilium names the client first on both: "Request … from client to server", "Response … to client from server".
  const [client, server] = r.type === 'REQUEST' ? [r.src, r.dst] : [r.dst, r.src];
  const ends = r.type === 'REQUEST' ? `from ${client.id} (${labels(client)}) to ${server.id} (${labels(server)})` : `to ${client.id} (${labels(client)}) from ${server.id} (${labels(server)})`;
  return `${arrow} ${r.type === 'REQUEST' ? 'Request' : 'Response'} http ${ends}, identity ${client.identity}->${server.identity}, verdict ${verdict} ${r.method} ${r.url} => ${r.code}\n`;
}
