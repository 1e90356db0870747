// Our .proto files loaded for @grpc/grpc-js, and the conversions between Flow/FlowFilter objects (Hubble's JSON
// shape) and the objects protobufjs encodes (Timestamps as {seconds, nanos}, BoolValue as {value}).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { normalizeFlow } from './flow.js';
import type { FlowFilter } from './filter.js';
import { nsToTime, timeToNs, type Flow } from './model.js';

/** proto/ at the repository root (this file runs from dist/src/observe/). */
export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../proto');

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let cached: protoLoader.PackageDefinition | undefined;

/** Observer (Hubble's) and Monitor (ours) service definitions, loaded once per process. */
export function packageDefinition(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(['observer/observer.proto', 'tendril/monitor.proto'], LOADER_OPTIONS);
  return cached;
}

export function observerService(): grpc.ServiceDefinition {
  return packageDefinition()['observer.Observer'] as grpc.ServiceDefinition;
}

export function monitorService(): grpc.ServiceDefinition {
  return packageDefinition()['tendril.monitor.Monitor'] as grpc.ServiceDefinition;
}

export interface Timestamp {
  seconds: string | number;
  nanos?: number;
}

export function nsToTimestamp(ns: bigint): Timestamp {
  let sec = ns / 1_000_000_000n;
  let nanos = ns % 1_000_000_000n;
  if (nanos < 0n) {
    sec -= 1n;
    nanos += 1_000_000_000n;
  }
  return { seconds: sec.toString(), nanos: Number(nanos) };
}

export function timestampToNs(t: { seconds?: string | number | { toString(): string }; nanos?: number } | null | undefined): bigint | undefined {
  if (!t) return undefined;
  return BigInt(String(t.seconds ?? 0)) * 1_000_000_000n + BigInt(t.nanos ?? 0);
}

/** Flow → the object protobufjs encodes as flow.Flow. */
export function flowToProto(f: Flow): Record<string, unknown> {
  const out: Record<string, unknown> = { ...f };
  const ns = timeToNs(f.time);
  out['time'] = ns === undefined ? undefined : nsToTimestamp(ns);
  if (f.is_reply !== undefined) out['is_reply'] = { value: f.is_reply };
  return out;
}

/** A decoded flow.Flow → Flow (normalized, so it compares equal to what the server had). */
export function flowFromProto(p: Record<string, unknown>): Flow {
  const o: Record<string, unknown> = { ...p };
  const ns = timestampToNs(p['time'] as Timestamp | undefined);
  o['time'] = ns === undefined ? '' : nsToTime(ns);
  const reply = p['is_reply'] as { value?: boolean } | undefined;
  if (reply) o['is_reply'] = reply.value === true;
  else delete o['is_reply'];
  const l4 = p['l4'] as Record<string, unknown> | undefined;
  if (l4) {
    const { protocol: _oneof, ...rest } = l4;
    o['l4'] = rest;
  }
  const l7 = p['l7'] as Record<string, unknown> | undefined;
  if (l7) {
    const { record: _oneof, ...rest } = l7;
    if (rest['latency_ns'] !== undefined) rest['latency_ns'] = Number(rest['latency_ns']);
    o['l7'] = rest;
  }
  o['verdict'] ??= 'VERDICT_UNKNOWN';
  o['Type'] ??= 'UNKNOWN_TYPE';
  o['event_type'] ??= { type: 0 };
  return normalizeFlow(o as unknown as Flow);
}

/** A GetFlows request in Tendril's terms; times are nanoseconds since the epoch. */
export interface FlowsQuery {
  number?: number;
  first?: boolean;
  follow?: boolean;
  whitelist?: FlowFilter[];
  blacklist?: FlowFilter[];
  since?: bigint;
  until?: bigint;
}

export function queryToProto(q: FlowsQuery): Record<string, unknown> {
  const out: Record<string, unknown> = {
    number: String(q.number ?? 0),
    first: q.first ?? false,
    follow: q.follow ?? false,
    whitelist: q.whitelist ?? [],
    blacklist: q.blacklist ?? [],
  };
  if (q.since !== undefined) out['since'] = nsToTimestamp(q.since);
  if (q.until !== undefined) out['until'] = nsToTimestamp(q.until);
  return out;
}

export function queryFromProto(p: Record<string, unknown>): FlowsQuery {
  const q: FlowsQuery = {
    number: Number(p['number'] ?? 0),
    first: p['first'] === true,
    follow: p['follow'] === true,
    whitelist: ((p['whitelist'] as FlowFilter[] | undefined) ?? []).map(stripFilter),
    blacklist: ((p['blacklist'] as FlowFilter[] | undefined) ?? []).map(stripFilter),
  };
  const since = timestampToNs(p['since'] as Timestamp | undefined);
  if (since !== undefined) q.since = since;
  const until = timestampToNs(p['until'] as Timestamp | undefined);
  if (until !== undefined) q.until = until;
  return q;
}

/** protobufjs hands back plain arrays already; this only drops empty ones so filters compare cleanly. */
function stripFilter(f: FlowFilter): FlowFilter {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(f)) if (Array.isArray(v) && v.length > 0) out[k] = v;
  return out as FlowFilter;
}

export type NodeState = 'UNKNOWN_NODE_STATE' | 'NODE_CONNECTED' | 'NODE_UNAVAILABLE' | 'NODE_GONE' | 'NODE_ERROR';

export interface NodeStatusEvent {
  state_change: NodeState;
  node_names: string[];
  message?: string;
}

export interface LostEvent {
  source: string;
  num_events_lost: number;
}

/** One GetFlows answer: a flow, a node status change (relay) or a count of lost flows. */
export type FlowsResponse =
  | { kind: 'flow'; flow: Flow; node_name?: string; time?: string }
  | { kind: 'node_status'; node_status: NodeStatusEvent; node_name?: string; time?: string }
  | { kind: 'lost_events'; lost_events: LostEvent; node_name?: string; time?: string };

export function responseToProto(r: FlowsResponse): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (r.node_name) out['node_name'] = r.node_name;
  const ns = r.time ? timeToNs(r.time) : undefined;
  if (ns !== undefined) out['time'] = nsToTimestamp(ns);
  switch (r.kind) {
    case 'flow':
      out['flow'] = flowToProto(r.flow);
      break;
    case 'node_status':
      out['node_status'] = r.node_status;
      break;
    case 'lost_events':
      out['lost_events'] = { source: r.lost_events.source, num_events_lost: String(r.lost_events.num_events_lost) };
      break;
  }
  return out;
}

export function responseFromProto(p: Record<string, unknown>): FlowsResponse | undefined {
  const base: { node_name?: string; time?: string } = {};
  if (typeof p['node_name'] === 'string' && p['node_name'] !== '') base.node_name = p['node_name'];
  const ns = timestampToNs(p['time'] as Timestamp | undefined);
  if (ns !== undefined) base.time = nsToTime(ns);
  if (p['flow']) return { kind: 'flow', flow: flowFromProto(p['flow'] as Record<string, unknown>), ...base };
  if (p['node_status']) {
    const s = p['node_status'] as Record<string, unknown>;
    const ev: NodeStatusEvent = { state_change: (s['state_change'] as NodeState | undefined) ?? 'UNKNOWN_NODE_STATE', node_names: (s['node_names'] as string[] | undefined) ?? [] };
    if (typeof s['message'] === 'string' && s['message'] !== '') ev.message = s['message'];
    return { kind: 'node_status', node_status: ev, ...base };
  }
  if (p['lost_events']) {
    const l = p['lost_events'] as Record<string, unknown>;
    return { kind: 'lost_events', lost_events: { source: String(l['source'] ?? 'UNKNOWN_LOST_EVENT_SOURCE'), num_events_lost: Number(l['num_events_lost'] ?? 0) }, ...base };
  }
  return undefined;
}

export interface ServerStatus {
  num_flows: number;
  max_flows: number;
  seen_flows: number;
  uptime_ns: bigint;
  version: string;
  flows_rate: number;
  /** Relay only. */
  num_connected_nodes?: number;
  num_unavailable_nodes?: number;
  unavailable_nodes?: string[];
}

export function statusToProto(s: ServerStatus): Record<string, unknown> {
  const out: Record<string, unknown> = {
    num_flows: String(s.num_flows),
    max_flows: String(s.max_flows),
    seen_flows: String(s.seen_flows),
    uptime_ns: s.uptime_ns.toString(),
    version: s.version,
    flows_rate: s.flows_rate,
  };
  if (s.num_connected_nodes !== undefined) out['num_connected_nodes'] = { value: s.num_connected_nodes };
  if (s.num_unavailable_nodes !== undefined) out['num_unavailable_nodes'] = { value: s.num_unavailable_nodes };
  if (s.unavailable_nodes) out['unavailable_nodes'] = s.unavailable_nodes;
  return out;
}

export function statusFromProto(p: Record<string, unknown>): ServerStatus {
  const s: ServerStatus = {
    num_flows: Number(p['num_flows'] ?? 0),
    max_flows: Number(p['max_flows'] ?? 0),
    seen_flows: Number(p['seen_flows'] ?? 0),
    uptime_ns: BigInt(String(p['uptime_ns'] ?? 0)),
    version: String(p['version'] ?? ''),
    flows_rate: Number(p['flows_rate'] ?? 0),
  };
  const wrap = (k: string): number | undefined => {
    const w = p[k] as { value?: number } | undefined;
    return w ? (w.value ?? 0) : undefined;
  };
  const c = wrap('num_connected_nodes');
  if (c !== undefined) s.num_connected_nodes = c;
  const u = wrap('num_unavailable_nodes');
  if (u !== undefined) s.num_unavailable_nodes = u;
  if (Array.isArray(p['unavailable_nodes'])) s.unavailable_nodes = p['unavailable_nodes'] as string[];
  return s;
}

export interface NodeInfo {
  name: string;
  version: string;
  address: string;
  state: NodeState;
  uptime_ns: bigint;
  num_flows: number;
  max_flows: number;
  seen_flows: number;
}

export function nodeToProto(n: NodeInfo): Record<string, unknown> {
  return {
    name: n.name,
    version: n.version,
    address: n.address,
    state: n.state,
    tls: { enabled: false },
    uptime_ns: n.uptime_ns.toString(),
    num_flows: String(n.num_flows),
    max_flows: String(n.max_flows),
    seen_flows: String(n.seen_flows),
  };
}

export function nodeFromProto(p: Record<string, unknown>): NodeInfo {
  return {
    name: String(p['name'] ?? ''),
    version: String(p['version'] ?? ''),
    address: String(p['address'] ?? ''),
    state: (p['state'] as NodeState | undefined) ?? 'UNKNOWN_NODE_STATE',
    uptime_ns: BigInt(String(p['uptime_ns'] ?? 0)),
    num_flows: Number(p['num_flows'] ?? 0),
    max_flows: Number(p['max_flows'] ?? 0),
    seen_flows: Number(p['seen_flows'] ?? 0),
  };
}

/** "unix:///path", "unix:/path", "/path" (a socket) or "host:port" → a grpc-js target. */
export function grpcTarget(address: string): string {
  if (address.startsWith('unix:')) return address;
  if (address.startsWith('/')) return `unix://${address}`;
  return address;
}
