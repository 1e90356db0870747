// The node proxy's engine contract: what it is told per connection, the records it emits, its counters.
import type { ProxyTrace } from './trace.js';
import type net from 'node:net';
import type { HttpMatcher } from '../policy/index.js';
import type { RawFlow } from './flow-wire.js';

/** Where an intercepted connection was going, and who opened it. */
export interface ConnectionInfo {
  srcIp: string;
  srcPort: number;
  /** The original destination (the accepted socket's local address: the datapath assigned it, it did not NAT). */
  dstIp: string;
  dstPort: number;
}

/** What the proxy applies to one connection: every matcher must allow a request (egress of the client and
 *  ingress of the server when both are L7-policed on this node); the upstream socket factory. */
export interface ConnectionPolicy {
  matchers: HttpMatcher[];
  /** Identities for the flow records. */
  srcIdentity: number;
  dstIdentity: number;
  /** Whose policy this is (the flows' traffic_direction): the client's egress or the server's ingress. */
  direction?: 'INGRESS' | 'EGRESS';
  /** Opens the upstream connection (a socket that keeps the client's address and identity). */
  connect(info: ConnectionInfo): net.Socket;
}

/** One L7 flow record: a request (with its verdict) or the response to an allowed one. */
export interface HttpFlowRecord {
  /** A Date, or ms since the epoch (the engine's records). */
  time: Date | number;
  type: 'REQUEST' | 'RESPONSE';
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  conn: ConnectionInfo;
  direction?: 'INGRESS' | 'EGRESS';
  srcIdentity: number;
  dstIdentity: number;
  method: string;
  url: string;
  protocol: string;
  /** Response status (0 on a request record). */
  code: number;
  /** Request headers on a request, response headers on a response (lower-case names). */
  headers: { key: string; value: string }[];
  /** Response records: nanoseconds from the request's head to the response's head. */
  latencyNs: number;
}

export interface HttpProxyOptions {
  /** The policy for a new connection, or undefined: no L7 rule covers it any more (it is refused). */
  policyFor(info: ConnectionInfo): ConnectionPolicy | undefined;
  onFlow?(r: HttpFlowRecord): void;
  /** Records before their full shape is built (see flow-wire.ts); preferred over onFlow. */
  onRawFlow?(r: RawFlow): void;
  /** A diagnostic timeline (trace.ts): each request's judged and answered times, keyed by its x-seq header. */
  trace?: ProxyTrace | undefined;
}

export interface HttpProxyStats {
  connections: number;
  requests: number;
  forwarded: number;
  denied: number;
  errors: number;
}
