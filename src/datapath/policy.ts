// Per-endpoint policy entries <-> tendril_policy keys and values, and the diff that setEndpointPolicy() applies.
import { DatapathError } from './errors.js';
import {
  POLICY_PROTO_BITS,
  POLICY_STATIC_PREFIX_BITS,
  type PolicyKeyRaw,
  type PolicyValueRaw,
} from './maps.js';

/** One entry of an endpoint's policy, as the policy compiler emits it. */
export interface PolicyMapEntry {
  direction: 'ingress' | 'egress';
  /** Remote security identity, 0 = any. */
  identity: number;
  /** IP protocol, 0 = any. */
  protocol: number;
  /**
   * Destination port (the first of a range written as a prefix). For ICMP the datapath looks up the ICMP type
   * in the port's place.
   */
  port: number;
  /** Leading bits of `port` that must match: 0..16, 0 when protocol is 0 (16 = exactly `port`, 0 = any port). */
  portPrefixLen: number;
  deny: boolean;
  /** Redirect the entry's traffic to the node proxy listening on this port (an L7 allow); absent or 0 = none. */
  proxyPort?: number;
}

export interface EndpointPolicyState {
  ingressEnforced: boolean;
  egressEnforced: boolean;
  entries: PolicyMapEntry[];
}

/** An entry with the counters the datapath keeps on it. */
export type PolicyMapEntryStats = PolicyMapEntry & { packets: bigint | number; bytes: bigint | number };

function bad(epId: number, what: string): never {
  throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Invalid policy entry of endpoint ${epId}: ${what}`);
}

const isInt = (v: unknown, min: number, max: number): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;

/**
 * The entry in canonical form (port bits outside the prefix cleared, port 0 for "any protocol"), so that entries
 * that are the same trie key compare equal. Throws TENDRIL_ERR_DATAPATH_CONFIG for values the key cannot hold.
 */
export function normalizeEntry(epId: number, e: PolicyMapEntry): PolicyMapEntry {
  if (e.direction !== 'ingress' && e.direction !== 'egress') bad(epId, `direction "${String(e.direction)}"`);
  if (!isInt(e.identity, 0, 0xffffffff)) bad(epId, `identity ${String(e.identity)} is no u32`);
  if (!isInt(e.protocol, 0, 255)) bad(epId, `protocol ${String(e.protocol)} is not in [0, 255]`);
  if (!isInt(e.portPrefixLen, 0, 16)) bad(epId, `portPrefixLen ${String(e.portPrefixLen)} is not in [0, 16]`);
  if (!isInt(e.port, 0, 0xffff)) bad(epId, `port ${String(e.port)} is not in [0, 65535]`);
  if (e.protocol === 0 && e.portPrefixLen !== 0) bad(epId, `portPrefixLen ${e.portPrefixLen} without a protocol`);
  const proxyPort = e.proxyPort ?? 0;
  if (!isInt(proxyPort, 0, 0xffff)) bad(epId, `proxyPort ${String(e.proxyPort)} is not in [0, 65535]`);
  if (proxyPort !== 0 && (e.deny || e.protocol !== 6)) bad(epId, 'a proxy port on a deny or non-TCP entry');
  const mask = e.portPrefixLen === 0 ? 0 : (0xffff << (16 - e.portPrefixLen)) & 0xffff;
  const out: PolicyMapEntry = { direction: e.direction, identity: e.identity, protocol: e.protocol, port: e.port & mask, portPrefixLen: e.portPrefixLen, deny: e.deny === true };
  if (proxyPort !== 0) out.proxyPort = proxyPort;
  return out;
}

/** Identity of an entry's trie key (everything but deny). */
export function entryKeyId(e: PolicyMapEntry): string {
  return `${e.direction}/${e.identity}/${e.protocol}/${e.port}/${e.portPrefixLen}`;
}

export function policyKey(epId: number, e: PolicyMapEntry): PolicyKeyRaw {
  const l4 = e.protocol === 0 ? 0 : POLICY_PROTO_BITS + e.portPrefixLen;
  return {
    prefixlen: POLICY_STATIC_PREFIX_BITS + l4,
    secLabel: e.identity,
    epId,
    egress: e.direction === 'egress' ? 1 : 0,
    protocol: e.protocol,
    dport: e.port,
    pad: 0,
  };
}

/** A fresh value (counters 0) for an entry. */
export function policyValue(e: PolicyMapEntry): PolicyValueRaw {
  return { deny: e.deny ? 1 : 0, l4PrefixLen: e.protocol === 0 ? 0 : POLICY_PROTO_BITS + e.portPrefixLen, proxyPort: e.proxyPort ?? 0, pad2: 0, packets: 0n, bytes: 0n };
}

/** The entry a trie key/value pair stands for. */
export function entryFromMap(k: PolicyKeyRaw, v: PolicyValueRaw): PolicyMapEntry {
  const l4 = Math.max(0, k.prefixlen - POLICY_STATIC_PREFIX_BITS);
  const protocol = l4 >= POLICY_PROTO_BITS ? k.protocol : 0;
  const portPrefixLen = protocol === 0 ? 0 : Math.min(16, l4 - POLICY_PROTO_BITS);
  const mask = portPrefixLen === 0 ? 0 : (0xffff << (16 - portPrefixLen)) & 0xffff;
  const e: PolicyMapEntry = {
    direction: k.egress ? 'egress' : 'ingress',
    identity: k.secLabel,
    protocol,
    port: k.dport & mask,
    portPrefixLen,
    deny: v.deny !== 0,
  };
  if (v.proxyPort !== 0) e.proxyPort = v.proxyPort;
  return e;
}

export interface PolicyDiff {
  /** Entries whose key is not installed yet. */
  add: PolicyMapEntry[];
  /** Installed keys whose deny flag or proxy port changes. */
  change: PolicyMapEntry[];
  /** Installed entries no longer wanted. */
  remove: PolicyMapEntry[];
  /** The endpoint's entries after the change, by entryKeyId(). */
  next: Map<string, PolicyMapEntry>;
}

/**
 * What turns `current` into `wanted`. Two wanted entries with the same key merge, deny winning (a trie key holds
 * one verdict, and deny beats allow).
 */
export function diffPolicy(epId: number, current: ReadonlyMap<string, PolicyMapEntry>, wanted: readonly PolicyMapEntry[]): PolicyDiff {
  const next = new Map<string, PolicyMapEntry>();
  for (const raw of wanted) {
    const e = normalizeEntry(epId, raw);
    const id = entryKeyId(e);
    const prev = next.get(id);
    if (!prev || (e.deny && !prev.deny)) next.set(id, e);
  }
  const add: PolicyMapEntry[] = [];
  const change: PolicyMapEntry[] = [];
  const remove: PolicyMapEntry[] = [];
  for (const [id, e] of next) {
    const cur = current.get(id);
    if (!cur) add.push(e);
    else if (cur.deny !== e.deny || (cur.proxyPort ?? 0) !== (e.proxyPort ?? 0)) change.push(e);
  }
  for (const [id, e] of current) if (!next.has(id)) remove.push(e);
  return { add, change, remove, next };
}
