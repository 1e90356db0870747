// Flows in the shape of Hubble's flow.Flow as `hubble observe -o json` prints it, and the names behind its enums.
import type { ObsPoint, TraceReason as DpTraceReason } from './types.js';

export type Verdict = 'VERDICT_UNKNOWN' | 'FORWARDED' | 'DROPPED' | 'ERROR' | 'AUDIT' | 'REDIRECTED' | 'TRACED' | 'TRANSLATED';
export const VERDICTS: readonly Verdict[] = ['VERDICT_UNKNOWN', 'FORWARDED', 'DROPPED', 'ERROR', 'AUDIT', 'REDIRECTED', 'TRACED', 'TRANSLATED'];

export type TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN' | 'INGRESS' | 'EGRESS';
export type IPVersion = 'IP_NOT_USED' | 'IPv4' | 'IPv6';
export type FlowType = 'UNKNOWN_TYPE' | 'L3_L4' | 'L7' | 'SOCK';
export type TraceReasonName = 'TRACE_REASON_UNKNOWN' | 'NEW' | 'ESTABLISHED' | 'REPLY' | 'RELATED';

export interface FlowEndpoint {
  ID?: number;
  identity?: number;
  cluster_name?: string;
  namespace?: string;
  labels?: string[];
  pod_name?: string;
}

export interface TCPFlags {
  FIN?: boolean;
  SYN?: boolean;
  RST?: boolean;
  PSH?: boolean;
  ACK?: boolean;
  URG?: boolean;
  ECE?: boolean;
  CWR?: boolean;
  NS?: boolean;
}
export const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;

export interface Ports {
  source_port?: number;
  destination_port?: number;
}

export interface Layer4 {
  TCP?: Ports & { flags?: TCPFlags };
  UDP?: Ports;
  SCTP?: Ports;
  ICMPv4?: { type?: number; code?: number };
  ICMPv6?: { type?: number; code?: number };
}

export interface HTTPHeader {
  key: string;
  value: string;
}

/** flow.HTTP: a request (code 0) or a response. */
export interface HTTP {
  code?: number;
  method?: string;
  url?: string;
  protocol?: string;
  headers?: HTTPHeader[];
}

export type L7FlowType = 'UNKNOWN_L7_TYPE' | 'REQUEST' | 'RESPONSE' | 'SAMPLE';

/** flow.Layer7 (HTTP only): latency_ns on responses, from the request's head to the response's head. */
export interface Layer7 {
  type?: L7FlowType;
  latency_ns?: number;
  http?: HTTP;
}

/**
 * One flow. Field names are flow.proto's (what Hubble's JSON prints); fields at their zero value are absent,
 * as protojson omits them, except is_reply whose absence means "unknown".
 */
export interface Flow {
  /** RFC 3339 with nanoseconds, UTC. */
  time: string;
  uuid: string;
  verdict: Verdict;
  drop_reason?: number;
  drop_reason_desc?: string;
  ethernet?: { source?: string; destination?: string };
  IP?: { source?: string; source_xlated?: string; destination?: string; ipVersion?: IPVersion; encrypted?: boolean };
  l4?: Layer4;
  source?: FlowEndpoint;
  destination?: FlowEndpoint;
  Type: FlowType;
  node_name?: string;
  l7?: Layer7;
  event_type: { type: number; sub_type?: number };
  traffic_direction?: TrafficDirection;
  policy_match_type?: number;
  trace_observation_point?: string;
  trace_reason?: TraceReasonName;
  file?: { name?: string; line?: number };
  is_reply?: boolean;
  interface?: { index?: number; name?: string };
  /** flow.proto's Service: the service whose frontend the source (destination) address and port are. */
  source_service?: { name?: string; namespace?: string };
  destination_service?: { name?: string; namespace?: string };
  Summary?: string;
}

/** Monitor message types (pkg/monitor/api/types.go). */
export const MSG_DROP = 1;
export const MSG_TRACE = 4;
export const MSG_POLICY_VERDICT = 5;
/** The proxy's access log records (Cilium's MessageTypeAccessLog): L7 flows. */
export const MSG_ACCESS_LOG = 129;

/** flow.proto's TraceObservationPoint names by datapath observation point. */
export const OBS_POINT_ENUM: Record<ObsPoint, string> = {
  'to-endpoint': 'TO_ENDPOINT',
  'to-proxy': 'TO_PROXY',
  'to-host': 'TO_HOST',
  'to-stack': 'TO_STACK',
  'to-overlay': 'TO_OVERLAY',
  'from-endpoint': 'FROM_ENDPOINT',
  'from-proxy': 'FROM_PROXY',
  'from-host': 'FROM_HOST',
  'from-stack': 'FROM_STACK',
  'from-overlay': 'FROM_OVERLAY',
  'from-network': 'FROM_NETWORK',
  'to-network': 'TO_NETWORK',
};

export const TRACE_REASON_ENUM: Record<DpTraceReason, TraceReasonName> = {
  new: 'NEW',
  established: 'ESTABLISHED',
  reply: 'REPLY',
  related: 'RELATED',
  unknown: 'TRACE_REASON_UNKNOWN',
};

/** Drop reason texts as Cilium prints them (pkg/monitor/api/drop.go), by positive code. */
export const DROP_REASON_TEXT: Readonly<Record<number, string>> = {
  0: 'Success',
  130: 'Invalid source mac',
  131: 'Invalid destination mac',
  132: 'Invalid source ip',
  133: 'Policy denied',
  134: 'Invalid packet',
  135: 'CT: Truncated or invalid header',
  136: 'Fragmentation needed',
  137: 'CT: Unknown L4 protocol',
  138: 'CT: Can\'t create entry from packet',
  139: 'Unsupported L3 protocol',
  140: 'Missed tail call',
  141: 'Error writing to packet',
  142: 'Unknown L4 protocol',
  143: 'Unknown ICMPv4 code',
  144: 'Unknown ICMPv4 type',
  145: 'Unknown ICMPv6 code',
  146: 'Unknown ICMPv6 type',
  147: 'Error retrieving tunnel key',
  150: 'Unknown L3 target address',
  151: 'Stale or unroutable IP',
  153: 'Error while correcting L3 checksum',
  154: 'Error while correcting L4 checksum',
  155: 'CT: Map insertion failed',
  156: 'Invalid IPv6 extension header',
  157: 'IP fragmentation not supported',
  158: 'Service backend not found',
  160: 'No tunnel/encapsulation endpoint (datapath BUG!)',
  161: 'NAT 46/64 not enabled',
  162: 'Reached EDT rate-limiting drop horizon',
  163: 'Unknown connection tracking state',
  164: 'Local host is unreachable',
  166: 'Unsupported L2 protocol',
  167: 'No mapping for NAT masquerade',
  168: 'Unsupported protocol for NAT masquerade',
  169: 'FIB lookup failed',
  170: 'Encapsulation traffic is prohibited',
  171: 'Invalid identity',
  172: 'Unknown sender',
  173: 'NAT not needed',
  174: 'Is a ClusterIP',
  175: 'First logical datagram fragment not found',
  176: 'Forbidden ICMPv6 message',
  177: 'Denied by LB src range check',
  178: 'Socket lookup failed',
  179: 'Socket assign failed',
  180: 'Proxy redirection not supported for protocol',
  181: 'Policy denied by denylist',
  182: 'VLAN traffic disallowed by VLAN filter',
  183: 'Incorrect VNI from VTEP',
  184: 'Failed to update or lookup TC buffer',
  185: 'No SID was found for the IP address',
  187: 'NAT46 translation failed',
  188: 'NAT64 translation failed',
  189: 'Authentication required',
  190: 'No conntrack map found',
  191: 'No nat map found',
  192: 'Invalid ClusterID',
  194: 'No egress gateway found',
  195: 'Traffic is unencrypted',
  196: 'TTL exceeded',
  197: 'No node ID found',
  198: 'Rate limited',
  202: 'Host datapath not ready',
  203: 'Endpoint policy program not available',
  204: 'No Egress IP configured',
  205: 'Punt to proxy',
};

/** flow.proto DropReason enum names by code (codes absent here have no name in the API). */
export const DROP_REASON_ENUM: Readonly<Record<number, string>> = {
  130: 'INVALID_SOURCE_MAC',
  131: 'INVALID_DESTINATION_MAC',
  132: 'INVALID_SOURCE_IP',
  133: 'POLICY_DENIED',
  134: 'INVALID_PACKET_DROPPED',
  135: 'CT_TRUNCATED_OR_INVALID_HEADER',
  136: 'CT_MISSING_TCP_ACK_FLAG',
  137: 'CT_UNKNOWN_L4_PROTOCOL',
  138: 'CT_CANNOT_CREATE_ENTRY_FROM_PACKET',
  139: 'UNSUPPORTED_L3_PROTOCOL',
  140: 'MISSED_TAIL_CALL',
  141: 'ERROR_WRITING_TO_PACKET',
  142: 'UNKNOWN_L4_PROTOCOL',
  143: 'UNKNOWN_ICMPV4_CODE',
  144: 'UNKNOWN_ICMPV4_TYPE',
  145: 'UNKNOWN_ICMPV6_CODE',
  146: 'UNKNOWN_ICMPV6_TYPE',
  147: 'ERROR_RETRIEVING_TUNNEL_KEY',
  148: 'ERROR_RETRIEVING_TUNNEL_OPTIONS',
  149: 'INVALID_GENEVE_OPTION',
  150: 'UNKNOWN_L3_TARGET_ADDRESS',
  151: 'STALE_OR_UNROUTABLE_IP',
  152: 'NO_MATCHING_LOCAL_CONTAINER_FOUND',
  153: 'ERROR_WHILE_CORRECTING_L3_CHECKSUM',
  154: 'ERROR_WHILE_CORRECTING_L4_CHECKSUM',
  155: 'CT_MAP_INSERTION_FAILED',
  156: 'INVALID_IPV6_EXTENSION_HEADER',
  157: 'IP_FRAGMENTATION_NOT_SUPPORTED',
  158: 'SERVICE_BACKEND_NOT_FOUND',
  160: 'NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT',
  161: 'FAILED_TO_INSERT_INTO_PROXYMAP',
  162: 'REACHED_EDT_RATE_LIMITING_DROP_HORIZON',
  163: 'UNKNOWN_CONNECTION_TRACKING_STATE',
  164: 'LOCAL_HOST_IS_UNREACHABLE',
  165: 'NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION',
  166: 'UNSUPPORTED_L2_PROTOCOL',
  167: 'NO_MAPPING_FOR_NAT_MASQUERADE',
  168: 'UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE',
  169: 'FIB_LOOKUP_FAILED',
  170: 'ENCAPSULATION_TRAFFIC_IS_PROHIBITED',
  171: 'INVALID_IDENTITY',
  172: 'UNKNOWN_SENDER',
  173: 'NAT_NOT_NEEDED',
  174: 'IS_A_CLUSTERIP',
  175: 'FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND',
  176: 'FORBIDDEN_ICMPV6_MESSAGE',
  177: 'DENIED_BY_LB_SRC_RANGE_CHECK',
  178: 'SOCKET_LOOKUP_FAILED',
  179: 'SOCKET_ASSIGN_FAILED',
  180: 'PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL',
  181: 'POLICY_DENY',
  182: 'VLAN_FILTERED',
  183: 'INVALID_VNI',
  184: 'INVALID_TC_BUFFER',
  185: 'NO_SID',
  186: 'MISSING_SRV6_STATE',
  187: 'NAT46',
  188: 'NAT64',
  189: 'AUTH_REQUIRED',
  190: 'CT_NO_MAP_FOUND',
  191: 'SNAT_NO_MAP_FOUND',
  192: 'INVALID_CLUSTER_ID',
  193: 'UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP',
  194: 'NO_EGRESS_GATEWAY',
  196: 'TTL_EXCEEDED',
  197: 'NO_NODE_ID',
  198: 'DROP_RATE_LIMITED',
  202: 'DROP_HOST_NOT_READY',
  203: 'DROP_EP_NOT_READY',
  204: 'DROP_NO_EGRESS_IP',
  205: 'DROP_PUNT_PROXY',
};

export function dropReasonText(code: number): string {
  return DROP_REASON_TEXT[code] ?? `Unknown drop reason (${code})`;
}

/** Reserved identities (Cilium's numbering) and how Hubble and cilium monitor name them. */
export const RESERVED_IDENTITIES: Readonly<Record<number, string>> = {
  0: 'unknown',
  1: 'host',
  2: 'world',
  3: 'unmanaged',
  4: 'health',
  5: 'init',
  6: 'remote-node',
  7: 'kube-apiserver',
  8: 'ingress',
  9: 'world-ipv4',
  10: 'world-ipv6',
};

/** Reserved identity name, or undefined for a cluster identity. */
export function reservedIdentityName(id: number): string | undefined {
  return RESERVED_IDENTITIES[id];
}

/** Policy match types as Cilium's PolicyMatchType numbers them (flow.policy_match_type). */
export const POLICY_MATCH_TYPES = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only'] as const;

export function policyMatchNumber(match: string): number {
  const i = (POLICY_MATCH_TYPES as readonly string[]).indexOf(match);
  return i < 0 ? 0 : i;
}

export function policyMatchName(n: number): string {
  return POLICY_MATCH_TYPES[n] ?? 'unknown';
}

/** Nanoseconds since the epoch of a flow's RFC 3339 time (or undefined if it does not parse). */
export function timeToNs(time: string): bigint | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(time);
  if (!m) return undefined;
  const ms = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(ms)) return undefined;
  const frac = BigInt((m[2] ?? '').padEnd(9, '0') || '0');
  return BigInt(ms) * 1_000_000n + frac;
}

/** RFC 3339 time of nanoseconds since the epoch, with 0, 3, 6 or 9 fraction digits as protojson prints it. */
export function nsToTime(ns: bigint): string {
  const sec = ns / 1_000_000_000n - (ns < 0n && ns % 1_000_000_000n !== 0n ? 1n : 0n);
  const nanos = Number(ns - sec * 1_000_000_000n);
  const base = new Date(Number(sec) * 1000).toISOString().slice(0, 19);
  let frac = '';
  if (nanos !== 0) {
    if (nanos % 1_000_000 === 0) frac = '.' + String(nanos / 1_000_000).padStart(3, '0');
    else if (nanos % 1000 === 0) frac = '.' + String(nanos / 1000).padStart(6, '0');
    else frac = '.' + String(nanos).padStart(9, '0');
  }
  return `${base}${frac}Z`;
}
