// L7 flows: the node proxy's HTTP access records as Hubble-shaped flows (what Hubble's "seven" parser makes of
// Cilium's Envoy access log), and their summaries.
import { randomUUID } from 'node:crypto';
import { endpointOf, normalizeFlow, type FlowContext } from './flow.js';
import { MSG_ACCESS_LOG, nsToTime, type Flow, type HTTPHeader, type TrafficDirection, type Verdict } from './model.js';

/** One request or response the proxy handled (the agent hands these over from the proxy process). */
export interface HttpAccessRecord {
  /** Wall clock, ms since the epoch (or a Date). */
  time: Date | number;
  type: 'REQUEST' | 'RESPONSE';
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  /** Which policy the proxy applied: the client's egress or the server's ingress. */
  direction?: 'INGRESS' | 'EGRESS';
  /** The connection as the client opened it (client → server), for responses too. */
  conn: { srcIp: string; srcPort: number; dstIp: string; dstPort: number };
  srcIdentity: number;
  dstIdentity: number;
  method: string;
  url: string;
  protocol: string;
  /** Response status; 0 on requests. */
  code: number;
  headers: readonly HTTPHeader[];
  /** Responses: ns from the request's head to the response's head. */
  latencyNs: number;
}

/** Headers whose values never leave the proxy (Hubble's redaction placeholder instead). */
const REDACTED = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);
export const REDACTED_VALUE = 'HUBBLE_REDACTED';
/** At most this many headers per flow (the first ones, in wire order). */
export const MAX_FLOW_HEADERS = 32;

/** The headers a flow carries: wire order, lower-case names, credentials redacted, capped. */
export function selectHeaders(headers: readonly HTTPHeader[]): HTTPHeader[] {
  const out: HTTPHeader[] = [];
  for (const h of headers) {
    if (out.length >= MAX_FLOW_HEADERS) break;
    const key = h.key.toLowerCase();
    out.push({ key, value: REDACTED.has(key) ? REDACTED_VALUE : h.value });
  }
  return out;
}

/** Cilium's L7 summaries: "HTTP/1.1 GET http://host/path" and "HTTP/1.1 200 5ms (GET http://host/path)". */
export function httpSummary(r: Pick<HttpAccessRecord, 'type' | 'protocol' | 'method' | 'url' | 'code' | 'latencyNs'>): string {
  if (r.type === 'REQUEST') return `${r.protocol} ${r.method} ${r.url}`;
  return `${r.protocol} ${r.code} ${Math.floor(r.latencyNs / 1e6)}ms (${r.method} ${r.url})`;
}

/** The flow of one access record. A response goes server → client (is_reply), as Hubble shows Envoy's. */
export function l7Flow(r: HttpAccessRecord, ctx: FlowContext): Flow {
  const ms = typeof r.time === 'number' ? r.time : r.time.getTime();
  const response = r.type === 'RESPONSE';
  const c = r.conn;
  const [srcIp, srcPort, srcId, dstIp, dstPort, dstId] = response
    ? [c.dstIp, c.dstPort, r.dstIdentity, c.srcIp, c.srcPort, r.srcIdentity]
    : [c.srcIp, c.srcPort, r.srcIdentity, c.dstIp, c.dstPort, r.dstIdentity];
  const verdict: Verdict = r.verdict;
  const flow: Flow = {
    time: nsToTime(BigInt(Math.trunc(ms)) * 1_000_000n + BigInt(Math.round((ms % 1) * 1e6))),
    uuid: ctx.uuid ? ctx.uuid() : randomUUID(),
    verdict,
    IP: { source: srcIp, destination: dstIp, ipVersion: 'IPv4' },
    l4: { TCP: { source_port: srcPort, destination_port: dstPort } },
    source: endpointOf(ctx.endpointByIp(srcIp), srcId, ctx),
    destination: endpointOf(ctx.endpointByIp(dstIp), dstId, ctx),
    Type: 'L7',
    node_name: ctx.nodeName,
    l7: {
      type: r.type,
      latency_ns: response ? r.latencyNs : 0,
      http: { code: r.code, method: r.method, url: r.url, protocol: r.protocol, headers: selectHeaders(r.headers) },
    },
    event_type: { type: MSG_ACCESS_LOG },
    is_reply: response,
    Summary: httpSummary(r),
  };
  if (r.direction) flow.traffic_direction = r.direction as TrafficDirection;
  return normalizeFlow(flow);
}
