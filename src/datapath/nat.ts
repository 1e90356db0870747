// BPF masquerading state (mirror of bpf/lib/nat.h): tendril_snat_v4 entries as the agent reads, lists, flushes and
// collects them with their conntrack entries, and the ip-masq-agent's non-masquerade trie tendril_ipmasq.
import { be16, structCodec, u16, u32, u8, type Codec, type StructCodec, type TypedMap } from '../kernel/bpf/index.js';
import { formatCidr, formatIPv4, maskOf, parseCidr } from '../util/ip.js';
import { monotonicSeconds } from './ct.js';
import { CT_EGRESS, ipv4Codec, type CtKey, type CtValue } from './maps.js';

export const SNAT_MAP = 'tendril_snat_v4';
/** max_entries of tendril_snat_v4: two entries per flow. */
export const SNAT_MAP_SIZE = 131072;
export const IPMASQ_MAP = 'tendril_ipmasq';
/** bpf/lib/egress.h's egress IPs of this node (src/egress writes it; the NAT GC reads it). */
export const EGRESS_IP_MAP_NAME = 'tendril_egress_ip_v4';
export const IPMASQ_MAP_SIZE = 16384;
/** ct_tuple4.dir of a NAT entry: OUT (the pod's tuple) and IN (the reply's tuple as it arrives). */
export const NAT_DIR_OUT = 0;
export const NAT_DIR_IN = 1;
/** nat_entry4.flags (lib/nat.h): a masquerade mapping. */
export const NAT_F_MASQ = 1;
/**
 * nat_entry4.flags (lib/nat.h): an IN entry that is its flow's only entry, a masquerade flow to the node IP that
 * kept the pod's own port; the pod's tuple (its OUT side) is the key's reverse (natOwnerOf()).
 */
export const NAT_F_SAME_PORT = 0x8;
/**
 * nat_entry4.flags (lib/nat.h): the NAT_F_* bits; the high byte of a masquerade IN entry to the node IP holds the TCP
 * flags of its replies reported so far (the trace aggregation of cil_from_netdev, in place of tendril_trace_agg).
 */
export const NAT_F_MASK = 0xff;
export const NAT_F_TRACE_SHIFT = 8;

/** Load-time constants of lib/config.h for masquerading. */
export const CONFIG_MASQ = 'CONFIG_MASQ';
export const CONFIG_NAT_PORT_MIN = 'CONFIG_NAT_PORT_MIN';
export const CONFIG_NAT_PORT_MAX = 'CONFIG_NAT_PORT_MAX';
export const CONFIG_NATIVE_ROUTING_NET4 = 'CONFIG_NATIVE_ROUTING_NET4';
export const CONFIG_NATIVE_ROUTING_MASK4 = 'CONFIG_NATIVE_ROUTING_MASK4';
export const CONFIG_IPMASQ = 'CONFIG_IPMASQ';

/** struct nat_entry4. */
export interface NatValue {
  /** OUT: the node IP the flow leaves with; IN: the pod's address it goes back to. */
  toAddr: string;
  /** OUT: the translated port (ICMP: identifier); IN: the pod's own. */
  toPort: number;
  /** NAT_F_*: NAT_F_MASQ on a masquerade mapping, 0 on NodePort's. */
  flags: number;
  /** CLOCK_MONOTONIC seconds. */
  created: number;
  /** CLOCK_MONOTONIC seconds of the last packet; kept for egress IP flows only (0 else). */
  lastUsed: number;
}

export const natValueCodec: StructCodec<NatValue> = structCodec<NatValue>(16, {
  toAddr: [0, ipv4Codec],
  toPort: [4, be16],
  flags: [6, u16],
  created: [8, u32],
  lastUsed: [12, u32],
});

export const NAT_VALUE_C_NAMES: Readonly<Record<keyof NatValue, string>> = {
  toAddr: 'to_addr',
  toPort: 'to_port',
  flags: 'flags',
  created: 'created',
  lastUsed: 'last_used',
};

/** Key of tendril_ipmasq (struct ipmasq_key): a prefix. */
export interface IpmasqKey {
  prefix: string;
}

export const ipmasqKeyCodec: Codec<IpmasqKey> = {
  size: 8,
  encode(k: IpmasqKey): Buffer {
    const c = parseCidr(k.prefix);
    const b = Buffer.alloc(8);
    b.writeUInt32LE(c.bits, 0);
    b.writeUInt32BE(c.base >>> 0, 4);
    return b;
  },
  decode(b: Buffer): IpmasqKey {
    return { prefix: formatCidr(parseCidr(`${formatIPv4(b.readUInt32BE(4))}/${b.readUInt32LE(0)}`)) };
  },
};
export const ipmasqValueCodec: Codec<number> = u8;

/** One NAT entry as `tendril bpf nat list` shows it. */
export interface NatEntry {
  /** 'TCP', 'UDP', 'ICMP' or the protocol number. */
  proto: string;
  protocol: number;
  direction: 'OUT' | 'IN';
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** OUT: XLATE_SRC to:toPort; IN: XLATE_DST. */
  xlate: 'XLATE_SRC' | 'XLATE_DST';
  toAddr: string;
  toPort: number;
  /** Seconds since the entry was created. */
  age: number;
}

const PROTO_NAMES = new Map([
  [1, 'ICMP'],
  [6, 'TCP'],
  [17, 'UDP'],
]);

export function toNatEntry(k: CtKey, v: NatValue, now: number): NatEntry {
  const out = k.dir === NAT_DIR_OUT;
  return {
    proto: PROTO_NAMES.get(k.nexthdr) ?? String(k.nexthdr),
    protocol: k.nexthdr,
    direction: out ? 'OUT' : 'IN',
    src: k.saddr,
    sport: k.sport,
    dst: k.daddr,
    dport: k.dport,
    xlate: out ? 'XLATE_SRC' : 'XLATE_DST',
    toAddr: v.toAddr,
    toPort: v.toPort,
    age: now - v.created,
  };
}

/**
 * The pod's tuple (an OUT key) of an IN entry that is its flow's only entry (NAT_F_SAME_PORT): the key's reverse,
 * with the pod's address and port the entry holds.
 */
export function natOwnerOf(k: CtKey, v: NatValue): CtKey {
  return { saddr: v.toAddr, daddr: k.saddr, sport: v.toPort, dport: k.sport, nexthdr: k.nexthdr, dir: NAT_DIR_OUT, pad: 0 };
}

/**
 * Every mapping as `bpf nat list` shows it, both ways as Cilium lists them: a flow that kept the pod's own port has
 * only its IN entry in the map (NAT_F_SAME_PORT), and its OUT row is the one that entry stands for.
 */
export function natList(snat: TypedMap<CtKey, NatValue>): NatEntry[] {
  const now = monotonicSeconds();
  const out: NatEntry[] = [];
  for (const [k, v] of snat.entries()) {
    out.push(toNatEntry(k, v, now));
    if (k.dir === NAT_DIR_IN && v.flags & NAT_F_SAME_PORT) out.push(toNatEntry(natOwnerOf(k, v), { ...v, toAddr: k.daddr, toPort: k.dport }, now));
  }
  return out;
}

/**
 * The mapping of the pod's tuple @k (an OUT key): its OUT entry, or the IN entry it has alone (NAT_F_SAME_PORT) towards
 * one of @nodeIps (the node's masquerade addresses) read as one (that address and the pod's own port). What the datapath translates @k's packets with.
 */
export function natLookupOut(snat: TypedMap<CtKey, NatValue>, k: CtKey, nodeIps: readonly string[]): NatValue | undefined {
  for (const nodeIp of nodeIps) {
    const inn = snat.lookup({ saddr: k.daddr, daddr: nodeIp, sport: k.dport, dport: k.sport, nexthdr: k.nexthdr, dir: NAT_DIR_IN, pad: 0 });
    if (inn && inn.flags & NAT_F_SAME_PORT && inn.toAddr === k.saddr && inn.toPort === k.sport) return { ...inn, toAddr: nodeIp, toPort: k.sport };
  }
  return snat.lookup({ ...k, dir: NAT_DIR_OUT, pad: 0 });
}

/**
 * Upgrade of mappings a datapath made before NAT_F_MASQ existed: the datapath now takes an IN entry without the flag
 * for NodePort's and leaves its replies to NodePort, so such a flow would lose its way back. A masquerade mapping is
 * told by its pod: the IN entry's address (where replies go) or the OUT entry's source is one of this node's pods
 * (@isLocalPod), which a NodePort mapping's never is (its client is outside, its reply goes back out). Those entries
 * get the flag; run once at start, before traffic needs it. Returns how many entries were flagged.
 */
export function natAdoptUnflagged(snat: TypedMap<CtKey, NatValue>, isLocalPod: (ip: string) => boolean): number {
  let n = 0;
  for (const [k, v] of [...snat.entries()]) {
    if (v.flags & NAT_F_MASQ) continue;
    if (!isLocalPod(k.dir === NAT_DIR_IN ? v.toAddr : k.saddr)) continue;
    // Only if unchanged meanwhile: the datapath may have replaced it.
    const cur = snat.lookup(k);
    if (!cur || cur.toAddr !== v.toAddr || cur.toPort !== v.toPort || cur.flags !== v.flags) continue;
    snat.update(k, { ...cur, flags: cur.flags | NAT_F_MASQ }, 'exist');
    n++;
  }
  return n;
}

/** Deletes every NAT entry. Returns how many. */
export function natFlush(snat: TypedMap<CtKey, NatValue>): number {
  let n = 0;
  for (const k of [...snat.keys()]) if (snat.delete(k)) n++;
  return n;
}

const tupleId = (k: Pick<CtKey, 'saddr' | 'daddr' | 'sport' | 'dport' | 'nexthdr'>): string =>
  `${k.nexthdr} ${k.saddr}:${k.sport} ${k.daddr}:${k.dport}`;

/**
 * The live flows natGc() keeps the NAT entries of, collected by a walk of the conntrack tables that is already
 * made (the CT GC's): add() each entry that stays; natGc() then does not walk them again.
 */
export class NatLiveFlows {
  readonly ids = new Set<string>();

  /** A conntrack entry alive at `now` (seconds, monotonic): its pod tuple keeps its NAT entries. */
  add(k: CtKey, v: CtValue, now: number): void {
    if (k.dir === CT_EGRESS && v.lifetime >= now) this.ids.add(tupleId(k));
  }
}

/** nat_entry4.flags (lib/nat.h): a FIN / an RST went through this way (egress IP flows). */
export const NAT_F_FIN = 0x2;
export const NAT_F_RST = 0x4;

/** Idle seconds after which an egress IP's flow goes (the conntrack timeouts the pod's own node keeps it by). */
export interface EgressIdle {
  /** TCP, open: the established timeout. */
  tcp: number;
  /** Anything but TCP. */
  any: number;
  /** TCP closed (FIN both ways, or an RST): the closing timeout; default 10 s, as the conntrack's. */
  tcpClosed?: number;
}

/** What natGc() needs to know of egress gateway flows (whose conntrack entry is on the pod's node, not here). */
export interface NatGcOptions {
  /** The live conntrack flows, collected by the caller's own walk of `ct` (one pass per GC round); default: walk `ct` here. */
  live?: NatLiveFlows;
  /** The egress IPs this node is the gateway of (tendril_egress_ip_v4). */
  egressIps?: ReadonlySet<string>;
  idle?: EgressIdle;
}

/** A TCP flow the gateway saw close: an RST either way, or a FIN each way (OUT entry: the pod's, IN entry: the far end's). */
export function egressFlowClosed(out: NatValue, inn: NatValue | undefined): boolean {
  const both = out.flags | (inn?.flags ?? 0);
  return (both & NAT_F_RST) !== 0 || ((out.flags & NAT_F_FIN) !== 0 && ((inn?.flags ?? 0) & NAT_F_FIN) !== 0);
}

/**
 * Is an egress IP's flow still in use at `now`? Its last packet (either way: the datapath stamps last_used of the
 * OUT entry on the way out and of the IN entry on the way back; created before the first) is no older than the
 * idle timeout of its protocol, the conntrack timeouts the pod's own node keeps the flow by; a TCP flow seen closed
 * (egressFlowClosed()) by the closing timeout, not the established one.
 */
export function egressFlowInUse(out: NatValue, inn: NatValue | undefined, protocol: number, now: number, idle: EgressIdle): boolean {
  const last = Math.max(out.created, out.lastUsed, inn?.created ?? 0, inn?.lastUsed ?? 0);
  const timeout = protocol !== 6 ? idle.any : egressFlowClosed(out, inn) ? (idle.tcpClosed ?? 10) : idle.tcp;
  return now - last <= timeout;
}

/**
 * The NAT half of the conntrack GC: a flow's two NAT entries go once the pod's egress conntrack entry (same tuple)
 * is gone or expired, and an IN entry without its OUT partner (an LRU eviction) frees its port. Run after the CT GC.
 * A flow that leaves with one of this node's egress IPs (opts.egressIps) may be another node's pod's, whose
 * conntrack entry is on that node: it goes only once idle (egressFlowInUse()), not at the first GC pass.
 */
export function natGc(snat: TypedMap<CtKey, NatValue>, ct: ReadonlyArray<TypedMap<CtKey, CtValue>>, opts: NatGcOptions = {}): { deleted: number; alive: number } {
  const now = monotonicSeconds();
  const egressIps = opts.egressIps ?? new Set<string>();
  const idle = opts.idle ?? { tcp: 8000, any: 60 };
  let live = opts.live?.ids;
  if (!live) {
    const walk = new NatLiveFlows();
    for (const m of ct) for (const [k, v] of m.entries()) walk.add(k, v, now);
    live = walk.ids;
  }
  const entries = [...snat.entries()];
  const inOf = (k: CtKey, v: NatValue): CtKey => ({ saddr: k.daddr, daddr: v.toAddr, sport: k.dport, dport: v.toPort, nexthdr: k.nexthdr, dir: NAT_DIR_IN, pad: 0 });
  const ins = new Map<string, NatValue>();
  if (egressIps.size) for (const [k, v] of entries) if (k.dir === NAT_DIR_IN && egressIps.has(k.daddr)) ins.set(tupleId(k), v);
  const egressInUse = (k: CtKey, v: NatValue, inn: NatValue | undefined, t: number): boolean => egressIps.has(v.toAddr) && egressFlowInUse(v, inn, k.nexthdr, t, idle);
  const outs = new Set<string>();
  const doomed: CtKey[] = [];
  for (const [k, v] of entries) {
    if (k.dir !== NAT_DIR_OUT) continue;
    if (live.has(tupleId(k)) || egressInUse(k, v, ins.get(tupleId(inOf(k, v))), now)) {
      // The IN entry's key this OUT entry owns.
      outs.add(tupleId(inOf(k, v)));
      continue;
    }
    doomed.push(k);
  }
  const taken = new Map<CtKey, NatValue>();
  for (const [k, v] of entries) {
    if (k.dir !== NAT_DIR_IN || outs.has(tupleId(k))) continue;
    // A flow's only entry (NAT_F_SAME_PORT) lives as long as the pod tuple it stands for.
    if (v.flags & NAT_F_SAME_PORT && live.has(tupleId(natOwnerOf(k, v)))) continue;
    doomed.push(k);
    taken.set(k, v);
  }
  // The snapshot is as old as the pass is long (thousands of syscalls): the datapath may have reopened a doomed
  // flow's tuple (reusing its OUT entry), or given a dead flow's port to a new flow (lib/nat.h's take-over), since.
  // Each entry is checked again right before it goes, so that no live flow loses its mapping.
  const aliveNow = (k: CtKey): boolean => {
    const t = monotonicSeconds();
    const inCt = ct.some((m) => {
      const v = m.lookup({ ...k, dir: CT_EGRESS, pad: 0 });
      return v !== undefined && v.lifetime >= t;
    });
    if (inCt || !egressIps.size) return inCt;
    const out = snat.lookup({ ...k, dir: NAT_DIR_OUT, pad: 0 });
    return out !== undefined && egressInUse(k, out, snat.lookup(inOf(k, out)), t);
  };
  let deleted = 0;
  for (const k of doomed) {
    const was = taken.get(k);
    if (!was) {
      if (aliveNow(k)) continue;
    } else {
      const cur = snat.lookup(k);
      if (!cur || cur.toAddr !== was.toAddr || cur.toPort !== was.toPort) continue;
      if (cur.flags & NAT_F_SAME_PORT && aliveNow(natOwnerOf(k, cur))) continue;
      const owner = snat.lookup({ saddr: cur.toAddr, daddr: k.saddr, sport: cur.toPort, dport: k.sport, nexthdr: k.nexthdr, dir: NAT_DIR_OUT, pad: 0 });
      if (owner && owner.toPort === k.dport && aliveNow({ saddr: cur.toAddr, daddr: k.saddr, sport: cur.toPort, dport: k.sport, nexthdr: k.nexthdr, dir: NAT_DIR_OUT, pad: 0 })) continue;
    }
    if (snat.delete(k)) deleted++;
  }
  return { deleted, alive: entries.length - deleted };
}

/** Replaces the non-masquerade set with `cidrs` (normalized prefixes); returns what changed. */
export function ipmasqReplace(map: TypedMap<IpmasqKey, number>, cidrs: readonly string[]): { added: number; removed: number } {
  const want = new Set(cidrs.map((c) => formatCidr(parseCidr(c))));
  const have = new Set([...map.keys()].map((k) => k.prefix));
  let added = 0;
  let removed = 0;
  for (const p of want) {
    if (have.has(p)) continue;
    map.put({ prefix: p }, 1);
    added++;
  }
  for (const p of have) if (!want.has(p) && map.delete({ prefix: p })) removed++;
  return { added, removed };
}

export function ipmasqList(map: TypedMap<IpmasqKey, number>): string[] {
  return [...map.keys()].map((k) => k.prefix).sort((a, b) => {
    const [x, y] = [parseCidr(a), parseCidr(b)];
    return x.base - y.base || x.bits - y.bits;
  });
}

/** A 32-bit value as its network-order bytes read little-endian: what a __be32 constant holds. */
const be32 = (n: number): number => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b.readUInt32LE();
};

/** Masquerading settings of a node. */
export interface MasqDatapathConfig {
  /** BPF masquerade on the native device (false: off, or left to iptables). */
  enabled: boolean;
  /** Port range of translated flows (inclusive). */
  portMin: number;
  portMax: number;
  /** Never masqueraded: destinations inside it. */
  nativeRoutingCidr?: string;
  /** The ip-masq-agent's non-masquerade set (tendril_ipmasq) is consulted. */
  ipMasqAgent: boolean;
  /**
   * The devices masqueraded on (--masquerade-interfaces); empty or absent: the native device. Each other device
   * gets the native-device programs of its own, its first IPv4 address as the SNAT address.
   */
  interfaces?: string[];
}

/** The load-time constants of lib/config.h for `c` (off when undefined). */
export function natConstants(c: MasqDatapathConfig | undefined): Record<string, number> {
  let net = 0;
  let mask = 0;
  if (c?.nativeRoutingCidr !== undefined) {
    const r = parseCidr(c.nativeRoutingCidr);
    net = be32(r.base);
    mask = be32(maskOf(r.bits));
  }
  return {
    [CONFIG_MASQ]: c?.enabled ? 1 : 0,
    [CONFIG_NAT_PORT_MIN]: c?.portMin ?? 32768,
    [CONFIG_NAT_PORT_MAX]: c?.portMax ?? 60999,
    [CONFIG_NATIVE_ROUTING_NET4]: net,
    [CONFIG_NATIVE_ROUTING_MASK4]: mask,
    [CONFIG_IPMASQ]: c?.ipMasqAgent ? 1 : 0,
  };
}
