// Datapath event records (mirror of bpf/lib/events.h and trace.h): layout, decoder, and the clock of their timestamps.
import { be16, structCodec, u16, u64, u8, type StructCodec } from '../kernel/bpf/index.js';
import { OBS_POINTS, type DatapathEvent, type ObsPoint, type TraceReason } from './event-types.js';
import { ipv4Codec } from './maps.js';

/** Map names as pinned by the objects (LIBBPF_PIN_BY_NAME). */
export const EVENTS_MAP = 'tendril_events';
export const EVENTS_LOST_MAP = 'tendril_events_lost';
export const TRACE_AGG_MAP = 'tendril_trace_agg';
export const DROP_RATE_MAP = 'tendril_drop_rate';

/** Name of the load-time constant that turns events on (1) or off (0). */
export const CONFIG_EVENTS = 'CONFIG_EVENTS';

/** Indexes of tendril_events_lost: ring full, drop events over the per-CPU rate. */
export const EVENTS_LOST_RING_FULL = 0;
export const EVENTS_LOST_DROP_RATE = 1;

/** event_hdr.type, Cilium's message types. */
export const EVENT_TYPE_DROP = 1;
export const EVENT_TYPE_TRACE = 4;
export const EVENT_TYPE_POLICY_VERDICT = 5;
/** event_hdr.version this decoder reads. */
export const EVENT_VERSION = 1;
export const EVENT_HDR_SIZE = 48;
/** Packet bytes a record carries at most, and the fixed record size. */
export const EVENT_CAP_MAX = 128;
export const EVENT_RECORD_SIZE = EVENT_HDR_SIZE + EVENT_CAP_MAX;

/** Drop-rate limit of the datapath: events per second and CPU (DROP_NOTIFY_RATE / _BURST). */
export const DROP_NOTIFY_RATE = 1000;
/** An established flow is reported again at most this often at one point (Cilium's CT_REPORT_INTERVAL). */
export const TRACE_REPORT_INTERVAL_NS = 5_000_000_000n;

/**
 * struct event_hdr: [offset, size] of every member, by its C name. The decoder reads these offsets and the layout
 * test compares them with the objects' BTF, so this table is the TS side's one statement of the layout.
 */
export const EVENT_HDR_LAYOUT = {
  type: [0, 1],
  subtype: [1, 1],
  source: [2, 2],
  hash: [4, 4],
  len_orig: [8, 4],
  len_cap: [12, 2],
  version: [14, 1],
  reason: [15, 1],
  src_label: [16, 4],
  dst_label: [20, 4],
  dst_id: [24, 2],
  cpu: [26, 2],
  ifindex: [28, 4],
  ktime: [32, 8],
  line: [40, 2],
  file: [42, 1],
  dir: [43, 1],
  dport: [44, 2],
  proto: [46, 1],
  match: [47, 1],
} as const satisfies Record<string, readonly [number, number]>;

const L = EVENT_HDR_LAYOUT;

/** event_hdr.reason of a trace, by value (Cilium's TraceReason numbering; 4 was "reopened"). */
const TRACE_REASONS: readonly TraceReason[] = ['new', 'established', 'reply', 'related', 'unknown', 'unknown'];
/** event_hdr.file of a drop. */
export const EVENT_FILES: ReadonlyMap<number, string> = new Map([
  [1, 'lxc'],
  [2, 'host'],
  [3, 'overlay'],
]);
/** Policy verdicts: event_hdr.reason, .dir, .match. */
const VERDICT_ACTIONS = new Map<number, 'allow' | 'deny' | 'audit'>([
  [1, 'allow'],
  [2, 'deny'],
  [3, 'audit'],
]);
const VERDICT_DIRS = new Map<number, 'ingress' | 'egress'>([
  [1, 'ingress'],
  [2, 'egress'],
]);
/** Match types as Cilium prints them (PolicyMatchType). */
export const POLICY_MATCH_TYPES: readonly string[] = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only'];

/**
 * Decodes one ring buffer record. Returns undefined for a record this version cannot read (unknown type or
 * version, too short): a newer datapath under an older agent must not crash the reader.
 */
export function decodeEvent(rec: Buffer): DatapathEvent | undefined {
  if (rec.length < EVENT_HDR_SIZE || rec[L.version[0]] !== EVENT_VERSION) return undefined;
  const capLen = Math.min(rec.readUInt16LE(L.len_cap[0]), EVENT_CAP_MAX, rec.length - EVENT_HDR_SIZE);
  const subtype = rec[L.subtype[0]]!;
  const reason = rec[L.reason[0]]!;
  // Object literals with every field, no spread: this runs for every event and spreading costs as much as the rest.
  switch (rec[L.type[0]]) {
    case EVENT_TYPE_TRACE: {
      const obsPoint: ObsPoint | undefined = OBS_POINTS[subtype];
      if (obsPoint === undefined) return undefined;
      return {
        type: 'trace',
        cpu: rec.readUInt16LE(L.cpu[0]),
        ktimeNs: rec.readBigUInt64LE(L.ktime[0]),
        source: rec.readUInt16LE(L.source[0]),
        hash: rec.readUInt32LE(L.hash[0]),
        origLen: rec.readUInt32LE(L.len_orig[0]),
        capLen,
        ifindex: rec.readUInt32LE(L.ifindex[0]),
        srcIdentity: rec.readUInt32LE(L.src_label[0]),
        dstIdentity: rec.readUInt32LE(L.dst_label[0]),
        dstId: rec.readUInt16LE(L.dst_id[0]),
        // The record is already a copy made for us: a view, not another copy.
        data: rec.subarray(EVENT_HDR_SIZE, EVENT_HDR_SIZE + capLen),
        obsPoint,
        reason: TRACE_REASONS[reason] ?? 'unknown',
      };
    }
    case EVENT_TYPE_DROP:
      return {
        type: 'drop',
        cpu: rec.readUInt16LE(L.cpu[0]),
        ktimeNs: rec.readBigUInt64LE(L.ktime[0]),
        source: rec.readUInt16LE(L.source[0]),
        hash: rec.readUInt32LE(L.hash[0]),
        origLen: rec.readUInt32LE(L.len_orig[0]),
        capLen,
        ifindex: rec.readUInt32LE(L.ifindex[0]),
        srcIdentity: rec.readUInt32LE(L.src_label[0]),
        dstIdentity: rec.readUInt32LE(L.dst_label[0]),
        dstId: rec.readUInt16LE(L.dst_id[0]),
        data: rec.subarray(EVENT_HDR_SIZE, EVENT_HDR_SIZE + capLen),
        reason: subtype,
        line: rec.readUInt16LE(L.line[0]),
        file: EVENT_FILES.get(rec[L.file[0]]!) ?? 'unknown',
      };
    case EVENT_TYPE_POLICY_VERDICT: {
      const direction = VERDICT_DIRS.get(rec[L.dir[0]]!);
      const action = VERDICT_ACTIONS.get(reason);
      if (direction === undefined || action === undefined) return undefined;
      return {
        type: 'policy-verdict',
        cpu: rec.readUInt16LE(L.cpu[0]),
        ktimeNs: rec.readBigUInt64LE(L.ktime[0]),
        source: rec.readUInt16LE(L.source[0]),
        hash: rec.readUInt32LE(L.hash[0]),
        origLen: rec.readUInt32LE(L.len_orig[0]),
        capLen,
        ifindex: rec.readUInt32LE(L.ifindex[0]),
        srcIdentity: rec.readUInt32LE(L.src_label[0]),
        dstIdentity: rec.readUInt32LE(L.dst_label[0]),
        dstId: rec.readUInt16LE(L.dst_id[0]),
        data: rec.subarray(EVENT_HDR_SIZE, EVENT_HDR_SIZE + capLen),
        direction,
        action,
        match: POLICY_MATCH_TYPES[rec[L.match[0]]!] ?? 'unknown',
        proto: rec[L.proto[0]]!,
        dport: rec.readUInt16LE(L.dport[0]),
      };
    }
    default:
      return undefined;
  }
}

/**
 * Wall-clock time of a bpf_ktime_get_ns() value. Both bpf_ktime_get_ns() and process.hrtime.bigint() read
 * CLOCK_MONOTONIC, so the offset to Date.now() converts; it is taken at each call, following wall-clock steps.
 */
export function ktimeToDate(ktimeNs: bigint): Date {
  const offsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  return new Date(Number((ktimeNs + offsetNs) / 1_000_000n));
}

// ---- tendril_trace_agg (for tests and dumps) ----

/** trace_key.hook: the program a flow was traced in (one aggregation entry per flow and program). */
export const TRACE_HOOK_FROM_CONTAINER = 1;
export const TRACE_HOOK_FROM_HOST = 2;
export const TRACE_HOOK_FROM_OVERLAY = 3;
export const TRACE_HOOK_FROM_NETDEV = 4;

/** Key of tendril_trace_agg (struct trace_key); ports in host order, ICMP echo id as port as the datapath does. */
export interface TraceKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  /** The program that traced it (TRACE_HOOK_*). */
  hook: number;
  pad: number;
}

/** Value of tendril_trace_agg (struct trace_state). */
export interface TraceState {
  /** bpf_ktime_get_ns() of the last report. */
  lastReport: bigint;
  tcpFlags: number;
  /** 1 when the flow is the reply of one seen before. */
  reply: number;
}

export const traceKeyCodec: StructCodec<TraceKey> = structCodec<TraceKey>(16, {
  saddr: [0, ipv4Codec],
  daddr: [4, ipv4Codec],
  sport: [8, be16],
  dport: [10, be16],
  proto: [12, u8],
  hook: [13, u8],
  pad: [14, u16],
});

export const traceStateCodec: StructCodec<TraceState> = structCodec<TraceState>(16, {
  lastReport: [0, u64],
  tcpFlags: [8, u8],
  reply: [9, u8],
});

/** C member names of the trace structs (the layout test matches them against BTF). */
export const TRACE_KEY_C_NAMES: Readonly<Record<keyof TraceKey, string>> = {
  saddr: 'saddr',
  daddr: 'daddr',
  sport: 'sport',
  dport: 'dport',
  proto: 'proto',
  hook: 'hook',
  pad: 'pad',
};
export const TRACE_STATE_C_NAMES: Readonly<Record<keyof TraceState, string>> = {
  lastReport: 'last_report',
  tcpFlags: 'tcp_flags',
  reply: 'reply',
};
