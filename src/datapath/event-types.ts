// Datapath events as decoded from the BPF ring buffer (events.ts): what the datapath reports, and what observe/ turns
// into flows. No imports, so that observe's users (CLI, relay) can take these without the kernel bindings.

/** Observation points, Cilium's names and numbering (monitor trace subtype). */
export const OBS_POINTS = [
  'to-endpoint', // 0
  'to-proxy', // 1
  'to-host', // 2
  'to-stack', // 3
  'to-overlay', // 4
  'from-endpoint', // 5
  'from-proxy', // 6
  'from-host', // 7
  'from-stack', // 8
  'from-overlay', // 9
  'from-network', // 10
  'to-network', // 11
] as const;
export type ObsPoint = (typeof OBS_POINTS)[number];

/** Trace reasons (Cilium's TraceReason): whether the packet opened a flow, continued it, or answered one. */
export type TraceReason = 'new' | 'established' | 'reply' | 'related' | 'unknown';

export interface EventBase {
  /** CPU the event was written on. */
  cpu: number;
  /** bpf_ktime_get_ns() at the event: CLOCK_MONOTONIC, the clock of process.hrtime.bigint(). */
  ktimeNs: bigint;
  /** Endpoint ID the event belongs to (source endpoint for from-*, destination for to-endpoint), 0 if none. */
  source: number;
  /** Flow hash (stable per 5-tuple and direction), for `flow 0x…` in monitor output. */
  hash: number;
  /** Length of the packet on the wire and how many bytes of it `data` holds (at most 128). */
  origLen: number;
  capLen: number;
  /** Interface the program ran on. */
  ifindex: number;
  srcIdentity: number;
  dstIdentity: number;
  /** Destination endpoint ID when the destination is a local endpoint, else 0. */
  dstId: number;
  /** The first capLen bytes of the packet, starting at the Ethernet header. */
  data: Buffer;
}

export interface TraceEvent extends EventBase {
  type: 'trace';
  obsPoint: ObsPoint;
  reason: TraceReason;
}

export interface DropEvent extends EventBase {
  type: 'drop';
  /** Cilium drop reason code, positive (e.g. 132 "Invalid source ip", 133 "Policy denied"). */
  reason: number;
  /** Source line in the BPF program that dropped (for `file bpf_lxc.c:LINE`-style output), 0 if unknown. */
  line: number;
  /** Which object dropped: 'lxc' | 'host' | 'overlay'. */
  file: string;
}

export interface PolicyVerdictEvent extends EventBase {
  type: 'policy-verdict';
  direction: 'ingress' | 'egress';
  action: 'allow' | 'deny' | 'audit';
  /** L3-L4, L3-Only, L4-Only, all… as Cilium reports the match type. */
  match: string;
  proto: number;
  dport: number;
}

export type DatapathEvent = TraceEvent | DropEvent | PolicyVerdictEvent;
