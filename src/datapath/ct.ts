// Conntrack entries as the agent reads them: decoding tendril_ct4 / tendril_ct_any4 and the clock their lifetimes use.
import { CT_EGRESS, CT_F_RX_CLOSING, CT_F_SEEN_NON_SYN, CT_F_TX_CLOSING, type CtKey, type CtValue } from './maps.js';

/** One conntrack entry. */
export interface CtEntry {
  /** 'TCP', 'UDP', 'ICMP' or the protocol number. */
  proto: string;
  protocol: number;
  /** 'out': the packet left an endpoint (egress entry); 'in': it entered one (ingress entry). */
  direction: 'in' | 'out';
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** Seconds until the entry expires (negative: expired, waiting for GC). */
  expires: number;
  /** Seconds since the entry was created. */
  age: number;
  /** 'seen_non_syn', 'tx_closing', 'rx_closing'. */
  flags: string[];
  /** OR of the TCP flags seen in the entry's direction and in the reply direction. */
  txFlagsSeen: number;
  rxFlagsSeen: number;
  /** Both directions. */
  packets: number;
  bytes: number;
  /** Source identity of the packet that created the entry. */
  srcIdentity: number;
}

const PROTO_NAMES = new Map([
  [1, 'ICMP'],
  [6, 'TCP'],
  [17, 'UDP'],
]);

/** Seconds of CLOCK_MONOTONIC, the clock of ct_entry.lifetime (bpf_ktime_get_ns() / 1e9). Node's hrtime is it. */
export function monotonicSeconds(): number {
  return Number(process.hrtime.bigint() / 1_000_000_000n);
}

export function toCtEntry(k: CtKey, v: CtValue, now: number): CtEntry {
  const flags: string[] = [];
  if (v.flags & CT_F_SEEN_NON_SYN) flags.push('seen_non_syn');
  if (v.flags & CT_F_TX_CLOSING) flags.push('tx_closing');
  if (v.flags & CT_F_RX_CLOSING) flags.push('rx_closing');
  return {
    proto: PROTO_NAMES.get(k.nexthdr) ?? String(k.nexthdr),
    protocol: k.nexthdr,
    direction: k.dir === CT_EGRESS ? 'out' : 'in',
    src: k.saddr,
    sport: k.sport,
    dst: k.daddr,
    dport: k.dport,
    expires: v.lifetime - now,
    age: now - v.created,
    flags,
    txFlagsSeen: v.txFlagsSeen,
    rxFlagsSeen: v.rxFlagsSeen,
    packets: Number(v.packets),
    bytes: Number(v.bytes),
    srcIdentity: v.srcSecId,
  };
}

/** The shortest conntrack GC interval the adaptive cadence goes down to. */
export const CT_GC_MIN_INTERVAL_MS = 1000;

/**
 * The conntrack GC's next interval, adapted to how full the tables were at the last run (`fill`: the fullest of the
 * conntrack and NAT maps, entries / max entries, 0..1), as Cilium's GC does: the configured interval while that is
 * at most a quarter, shorter in proportion above it (half full: 2/3 of it), and never below
 * CT_GC_MIN_INTERVAL_MS (nor above the configured interval). Under connection churn the closed flows' entries then
 * go before their tables fill.
 */
export function ctGcIntervalMs(baseMs: number, fill: number): number {
  if (!(fill > 0.25)) return baseMs;
  const scaled = Math.round((baseMs * (1 - Math.min(fill, 1))) / 0.75);
  return Math.max(Math.min(baseMs, CT_GC_MIN_INTERVAL_MS), scaled);
}
