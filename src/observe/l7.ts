// L7 flows: the node proxy's HTTP access records as Hubble-shaped flows (what Hubble's "seven" parser makes of
// Cilium's Envoy access log), and their summaries.
import { randomUUID } from 'node:crypto';
import { endpointOf, normalizeFlow, type EndpointInfo, type FlowContext } from './flow.js';
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
  /** The headers (names in any case); or, instead, rawHeaders. */
  headers?: readonly HTTPHeader[];
  /** Name, value, name, value… as sent (the node proxy's records: the pairs are made only when the flow is built). */
  rawHeaders?: readonly string[];
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

/** The headers of a record (headers, else its raw name/value list) as a flow carries them (selectHeaders()). */
export function recordHeaders(r: Pick<HttpAccessRecord, 'headers' | 'rawHeaders'>): HTTPHeader[] {
  if (r.headers) return selectHeaders(r.headers);
  const raw = r.rawHeaders ?? [];
  const out: HTTPHeader[] = [];
  for (let i = 0; i + 1 < raw.length && out.length < MAX_FLOW_HEADERS; i += 2) {
    const key = raw[i]!.toLowerCase();
    out.push({ key, value: REDACTED.has(key) ? REDACTED_VALUE : raw[i + 1]! });
  }
  return out;
}

/** The endpoints of a record's connection: its client (conn.src) and its server (conn.dst) side. */
export interface L7Endpoints {
  client: EndpointInfo | undefined;
  server: EndpointInfo | undefined;
}

/** Looks up the endpoints of a record's connection now. */
export function l7Endpoints(r: Pick<HttpAccessRecord, 'conn'>, ctx: Pick<FlowContext, 'endpointByIp'>): L7Endpoints {
  return { client: ctx.endpointByIp(r.conn.srcIp), server: ctx.endpointByIp(r.conn.dstIp) };
}

/** The ms-since-epoch time of a record in ns (the key the flow ring orders and filters by). */
export function recordNs(r: Pick<HttpAccessRecord, 'time'>): bigint {
  const ms = typeof r.time === 'number' ? r.time : r.time.getTime();
  return BigInt(Math.trunc(ms)) * 1_000_000n + BigInt(Math.round((ms % 1) * 1e6));
}

/** Cilium's L7 summaries: "HTTP/1.1 GET http://host/path" and "HTTP/1.1 200 5ms (GET http://host/path)". */
export function httpSummary(r: Pick<HttpAccessRecord, 'type' | 'protocol' | 'method' | 'url' | 'code' | 'latencyNs'>): string {
  if (r.type === 'REQUEST') return `${r.protocol} ${r.method} ${r.url}`;
  return `${r.protocol} ${r.code} ${Math.floor(r.latencyNs / 1e6)}ms (${r.method} ${r.url})`;
}

/**
 * The flow of one access record. A response goes server → client (is_reply), as Hubble shows Envoy's. The
 * endpoints are looked up now unless given (the observer looks them up at ingest and builds the flow on read).
 */
export function l7Flow(r: HttpAccessRecord, ctx: FlowContext, eps: L7Endpoints = l7Endpoints(r, ctx)): Flow {
  const response = r.type === 'RESPONSE';
  const c = r.conn;
  const [srcIp, srcPort, srcId, srcEp, dstIp, dstPort, dstId, dstEp] = response
    ? [c.dstIp, c.dstPort, r.dstIdentity, eps.server, c.srcIp, c.srcPort, r.srcIdentity, eps.client]
    : [c.srcIp, c.srcPort, r.srcIdentity, eps.client, c.dstIp, c.dstPort, r.dstIdentity, eps.server];
  const verdict: Verdict = r.verdict;
  const flow: Flow = {
    time: nsToTime(recordNs(r)),
    uuid: ctx.uuid ? ctx.uuid() : randomUUID(),
    verdict,
    IP: { source: srcIp, destination: dstIp, ipVersion: 'IPv4' },
    l4: { TCP: { source_port: srcPort, destination_port: dstPort } },
    source: endpointOf(srcEp, srcId, ctx),
    destination: endpointOf(dstEp, dstId, ctx),
    Type: 'L7',
    node_name: ctx.nodeName,
    l7: {
      type: r.type,
      latency_ns: response ? r.latencyNs : 0,
      http: { code: r.code, method: r.method, url: r.url, protocol: r.protocol, headers: recordHeaders(r) },
    },
    event_type: { type: MSG_ACCESS_LOG },
    is_reply: response,
    Summary: httpSummary(r),
  };
  if (r.direction) flow.traffic_direction = r.direction as TrafficDirection;
  return normalizeFlow(flow);
}
