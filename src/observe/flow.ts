// Turns a datapath event into a Hubble-shaped Flow (what Hubble's "threefour" parser does for Cilium's events).
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { dissect, flowSummary, type Dissection } from './dissect.js';
import {
  DROP_REASON_ENUM,
  MSG_DROP,
  MSG_POLICY_VERDICT,
  MSG_TRACE,
  OBS_POINT_ENUM,
  TRACE_REASON_ENUM,
  nsToTime,
  policyMatchNumber,
  reservedIdentityName,
  type Flow,
  type FlowEndpoint,
  type Layer4,
  type TrafficDirection,
  type Verdict,
} from './model.js';
import { OBS_POINTS, type DatapathEvent } from './types.js';

/** What the agent knows about a local endpoint. */
export interface EndpointInfo {
  id: number;
  identity: number;
  namespace: string;
  podName: string;
  /** "source:key=value" labels, e.g. "k8s:app=curl". */
  labels: string[];
}

/** Lookups the agent provides so a flow can name its endpoints; all of them must be cheap and synchronous. */
export interface FlowContext {
  nodeName: string;
  /** Wall-clock time of a bpf_ktime_get_ns() value. */
  ktimeToDate(ktimeNs: bigint): Date;
  /** Nanosecond-precise variant of ktimeToDate (nanoseconds since the epoch); used when present. */
  ktimeToWallNs?(ktimeNs: bigint): bigint;
  endpointById(id: number): EndpointInfo | undefined;
  endpointByIp(ip: string): EndpointInfo | undefined;
  /** Labels of a security identity (reserved ones like ["reserved:world"] included), undefined if unknown. */
  identityLabels(id: number): string[] | undefined;
  /** Name of the interface with this ifindex in the node's namespace. */
  interfaceName?(ifindex: number): string | undefined;
  /** Flow UUID source (tests make it deterministic). */
  uuid?(): string;
  /**
   * The service whose frontend is ip:port (protocol 6 TCP, 17 UDP), for Hubble's source_service/destination_service;
   * undefined if none.
   */
  serviceByAddr?(ip: string, port: number, protocol: number): { name: string; namespace: string } | undefined;
  /** The translated source of a masqueraded flow (its NAT entry), as "ip"; undefined if it is not translated. */
  sourceXlated?(t: { protocol: number; src: string; sport: number; dst: string; dport: number }): string | undefined;
}

/** ktime → wall clock converters for this process: bpf_ktime_get_ns() and process.hrtime share CLOCK_MONOTONIC. */
export function monotonicClock(): Pick<FlowContext, 'ktimeToDate' | 'ktimeToWallNs'> {
  const mono = process.hrtime.bigint();
  const wallNs = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  const offset = wallNs - mono;
  return {
    ktimeToWallNs: (k) => k + offset,
    ktimeToDate: (k) => new Date(Number((k + offset) / 1_000_000n)),
  };
}

const FILE_NAMES: Record<string, string> = { lxc: 'bpf_lxc.c', host: 'bpf_host.c', overlay: 'bpf_overlay.c' };

/** The C file name cilium prints for a dropping object ('lxc' → "bpf_lxc.c"). */
export function bpfFileName(file: string): string {
  return FILE_NAMES[file] ?? (file.endsWith('.c') ? file : `bpf_${file}.c`);
}

export function toFlow(ev: DatapathEvent, ctx: FlowContext): Flow {
  const d = dissect(ev.data);
  const wallNs = ctx.ktimeToWallNs ? ctx.ktimeToWallNs(ev.ktimeNs) : BigInt(ctx.ktimeToDate(ev.ktimeNs).getTime()) * 1_000_000n;
  const srcIp = d.ipv4?.src;
  const dstIp = d.ipv4?.dst;

  const srcEp = (srcIp !== undefined ? ctx.endpointByIp(srcIp) : undefined) ??
    (ev.type === 'trace' && ev.obsPoint === 'from-endpoint' && ev.source !== 0 ? ctx.endpointById(ev.source) : undefined);
  const dstEp = (dstIp !== undefined ? ctx.endpointByIp(dstIp) : undefined) ?? (ev.dstId !== 0 ? ctx.endpointById(ev.dstId) : undefined);

  const flow: Flow = {
    time: nsToTime(wallNs),
    uuid: ctx.uuid ? ctx.uuid() : randomUUID(),
    verdict: verdictOf(ev),
    Type: 'L3_L4',
    node_name: ctx.nodeName,
    event_type: eventTypeOf(ev),
    Summary: flowSummary(d),
  };
  if (d.ethernet) flow.ethernet = { source: d.ethernet.src, destination: d.ethernet.dst };
  if (d.ipv4) flow.IP = { source: d.ipv4.src, destination: d.ipv4.dst, ipVersion: 'IPv4' };
  if (d.ipv4 && ev.type === 'trace' && ev.obsPoint === 'to-network' && ctx.sourceXlated) {
    const sport = d.tcp?.srcPort ?? d.udp?.srcPort ?? (d.icmpv4?.type === 8 ? d.icmpv4.id : 0);
    const dport = d.tcp?.dstPort ?? d.udp?.dstPort ?? 0;
    const x = ctx.sourceXlated({ protocol: d.ipv4.proto, src: d.ipv4.src, sport, dst: d.ipv4.dst, dport });
    if (x !== undefined) flow.IP!.source_xlated = x;
  }
  else if (d.ipv6) flow.IP = { ipVersion: 'IPv6' };
  const l4 = layer4Of(d);
  if (l4) flow.l4 = l4;

  flow.source = endpointOf(srcEp, ev.srcIdentity, ctx);
  flow.destination = endpointOf(dstEp, ev.dstIdentity, ctx);
  // As Hubble: an address and port that are a service frontend name the service (a reply from a ClusterIP, a
  // packet dropped on its way to one).
  if (d.ipv4 && ctx.serviceByAddr && (d.tcp || d.udp)) {
    const proto = d.tcp ? 6 : 17;
    const s = ctx.serviceByAddr(d.ipv4.src, d.tcp?.srcPort ?? d.udp!.srcPort, proto);
    if (s) flow.source_service = { name: s.name, namespace: s.namespace };
    const t = ctx.serviceByAddr(d.ipv4.dst, d.tcp?.dstPort ?? d.udp!.dstPort, proto);
    if (t) flow.destination_service = { name: t.name, namespace: t.namespace };
  }

  const dir = directionOf(ev, srcEp?.id);
  if (dir) flow.traffic_direction = dir;
  const reply = isReplyOf(ev);
  if (reply !== undefined) flow.is_reply = reply;

  switch (ev.type) {
    case 'trace':
      flow.trace_observation_point = OBS_POINT_ENUM[ev.obsPoint];
      flow.trace_reason = TRACE_REASON_ENUM[ev.reason];
      break;
    case 'drop': {
      flow.drop_reason = ev.reason;
      const name = DROP_REASON_ENUM[ev.reason];
      if (name) flow.drop_reason_desc = name;
      flow.file = { name: bpfFileName(ev.file), line: ev.line };
      break;
    }
    case 'policy-verdict':
      flow.policy_match_type = policyMatchNumber(ev.match);
      if (ev.action === 'deny') {
        flow.drop_reason = 133;
        flow.drop_reason_desc = 'POLICY_DENIED';
      }
      break;
  }
  if (ev.ifindex !== 0) {
    const name = ctx.interfaceName?.(ev.ifindex);
    flow.interface = name ? { index: ev.ifindex, name } : { index: ev.ifindex };
  }
  return normalizeFlow(flow);
}

export function verdictOf(ev: DatapathEvent): Verdict {
  switch (ev.type) {
    case 'trace':
      return 'FORWARDED';
    case 'drop':
      return 'DROPPED';
    case 'policy-verdict':
      return ev.action === 'deny' ? 'DROPPED' : ev.action === 'audit' ? 'AUDIT' : 'FORWARDED';
  }
}

export function eventTypeOf(ev: DatapathEvent): Flow['event_type'] {
  switch (ev.type) {
    case 'trace':
      return { type: MSG_TRACE, sub_type: OBS_POINTS.indexOf(ev.obsPoint) };
    case 'drop':
      return { type: MSG_DROP, sub_type: ev.reason };
    case 'policy-verdict':
      return { type: MSG_POLICY_VERDICT, sub_type: 0 };
  }
}

function layer4Of(d: Dissection): Layer4 | undefined {
  if (d.tcp) return { TCP: { source_port: d.tcp.srcPort, destination_port: d.tcp.dstPort, flags: { ...d.tcp.flags } } };
  if (d.udp) return { UDP: { source_port: d.udp.srcPort, destination_port: d.udp.dstPort } };
  if (d.sctp) return { SCTP: { source_port: d.sctp.srcPort, destination_port: d.sctp.dstPort } };
  if (d.icmpv4) return { ICMPv4: { type: d.icmpv4.type, code: d.icmpv4.code } };
  return undefined;
}

/** The datapath's identity wins (it is what policy saw); the endpoint's identity fills in when the event has none. */
export function endpointOf(ep: EndpointInfo | undefined, eventIdentity: number, ctx: FlowContext): FlowEndpoint {
  const identity = eventIdentity !== 0 ? eventIdentity : (ep?.identity ?? 0);
  const out: FlowEndpoint = {};
  if (ep) {
    out.ID = ep.id;
    out.identity = identity;
    out.namespace = ep.namespace;
    out.labels = [...ep.labels];
    out.pod_name = ep.podName;
    return out;
  }
  out.identity = identity;
  const labels = identity !== 0 ? ctx.identityLabels(identity) : undefined;
  if (labels) out.labels = [...labels];
  else {
    const reserved = identity !== 0 ? reservedIdentityName(identity) : undefined;
    if (reserved) out.labels = [`reserved:${reserved}`];
  }
  return out;
}

/**
 * Hubble's rule: with known connection state, a packet sent by the local endpoint is egress unless it is a reply
 * (then it is the answer to an ingress connection); drops are egress when the dropping endpoint is the source.
 */
function directionOf(ev: DatapathEvent, srcEndpointId: number | undefined): TrafficDirection | undefined {
  const isSourceEp = ev.source !== 0 && srcEndpointId === ev.source;
  switch (ev.type) {
    case 'trace':
      if (ev.source === 0 || ev.reason === 'unknown') return undefined;
      return isSourceEp !== (ev.reason === 'reply') ? 'EGRESS' : 'INGRESS';
    case 'drop':
      if (ev.source === 0) return undefined;
      return isSourceEp ? 'EGRESS' : 'INGRESS';
    case 'policy-verdict':
      return ev.direction === 'ingress' ? 'INGRESS' : 'EGRESS';
  }
}

function isReplyOf(ev: DatapathEvent): boolean | undefined {
  if (ev.type === 'trace') return ev.reason === 'unknown' ? undefined : ev.reason === 'reply';
  // A policy verdict that lets a packet through is only ever emitted for a new connection.
  if (ev.type === 'policy-verdict' && ev.action !== 'deny') return false;
  return undefined;
}

/**
 * Drops fields at their zero value (protojson omits them, and so a flow decoded from the wire compares equal to the
 * one that was sent), keeping is_reply, whose `false` is meaningful.
 */
export function normalizeFlow(flow: Flow): Flow {
  return prune(flow, true) as Flow;
}

/** Enum names at value 0: protojson leaves them out like any other zero value. */
const ZERO_ENUMS = new Set(['TRACE_REASON_UNKNOWN', 'TRAFFIC_DIRECTION_UNKNOWN', 'UNKNOWN_POINT', 'IP_NOT_USED', 'DROP_REASON_UNKNOWN']);

function prune(v: unknown, top = false): unknown {
  if (Array.isArray(v)) return v.length === 0 ? undefined : v;
  if (v === null || typeof v !== 'object') {
    if (v === 0 || v === '' || v === false || (typeof v === 'string' && ZERO_ENUMS.has(v))) return undefined;
    return v;
  }
  const src = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  // for…in over plain objects: this runs for every flow, Object.entries() allocations showed in profiles.
  for (const k in src) {
    const val = src[k];
    if (top && k === 'is_reply') {
      if (typeof val === 'boolean') out[k] = val;
      continue;
    }
    const p = prune(val);
    if (p !== undefined) out[k] = p;
  }
  // An empty sub-message stays: on the wire it is present (e.g. event_type of a to-endpoint trace is {type: 4}).
  return out;
}
