// Byte layouts of the endpoint, ipcache, policy, conntrack and metrics maps (mirror of bpf/lib/*.h), datapath names
// and drop reasons.
import { be16, structCodec, u16, u32, u64, u8, type Codec, type StructCodec } from '../kernel/bpf/index.js';
import { formatCidr, formatIPv4, formatMac, parseCidr, parseIPv4, parseMac } from '../util/ip.js';

/** Map names as pinned by the objects (LIBBPF_PIN_BY_NAME). */
export const LXC_MAP = 'tendril_lxc';
export const LXC_IF_MAP = 'tendril_lxc_if';
/** max_entries of both endpoint maps. */
export const ENDPOINTS_MAP_SIZE = 65535;
export const IPCACHE_MAP = 'tendril_ipcache';
/** max_entries of tendril_ipcache. */
export const IPCACHE_MAP_SIZE = 512000;

/** Program (function) names in the objects. */
export const PROG_FROM_CONTAINER = 'cil_from_container';
export const PROG_FROM_HOST = 'cil_from_host';
export const PROG_FROM_NETDEV = 'cil_from_netdev';
export const PROG_TO_NETDEV = 'cil_to_netdev';
export const PROG_FROM_OVERLAY = 'cil_from_overlay';
export const PROG_TO_OVERLAY = 'cil_to_overlay';

/** Names of the `volatile const` load-time constants (.rodata) of lxc.o and host.o. */
export const CONFIG_ROUTER_IP4 = 'CONFIG_ROUTER_IP4';
export const CONFIG_HOST_IFINDEX = 'CONFIG_HOST_IFINDEX';
export const CONFIG_NODE_IP4 = 'CONFIG_NODE_IP4';
export const CONFIG_HOST_MAC = 'CONFIG_HOST_MAC';
export const CONFIG_ROUTING_MODE = 'CONFIG_ROUTING_MODE';
export const CONFIG_TUNNEL_IFINDEX = 'CONFIG_TUNNEL_IFINDEX';
export const CONFIG_NATIVE_IFINDEX = 'CONFIG_NATIVE_IFINDEX';

/** Values of CONFIG_ROUTING_MODE. */
export const ROUTING_MODE_TUNNEL = 0;
export const ROUTING_MODE_NATIVE = 1;

/** Reserved security identities (Cilium's numbering, bpf/lib/identity.h). */
export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
export const IDENTITY_HEALTH = 4;
export const IDENTITY_REMOTE_NODE = 6;

/** endpoint_info.flags: a local host address; the datapath leaves it to the stack. */
export const ENDPOINT_F_HOST = 1;
/** endpoint_info.flags: the endpoint's ingress policy is enforced (no allow entry = drop). */
export const ENDPOINT_F_INGRESS_ENFORCED = 2;
/** endpoint_info.flags: the endpoint's egress policy is enforced. */
export const ENDPOINT_F_EGRESS_ENFORCED = 4;

/** Key of tendril_lxc (struct endpoint_key). */
export interface EndpointKey {
  ip4: string;
}

/** Value of tendril_lxc and tendril_lxc_if (struct endpoint_info). */
export interface EndpointInfo {
  /** Host-side veth (lxc...) ifindex. */
  ifindex: number;
  /** Endpoint ID (u16). */
  lxcId: number;
  /** ENDPOINT_F_* bits (u16). */
  flags: number;
  /** Pod-side MAC (eth0 inside the pod). */
  mac: string;
  /** Host-side veth MAC: what the pod sees as its gateway's MAC. */
  nodeMac: string;
  /** Security identity. */
  secId: number;
  /** The endpoint's IPv4 address. */
  ip4: string;
}

/** An IPv4 address as __be32 (network byte order, whatever the host's order). */
export const ipv4Codec: Codec<string> = {
  size: 4,
  encode(value) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(value));
    return b;
  },
  decode(buf) {
    if (buf.length < 4) throw new RangeError(`Cannot decode IPv4 address: need 4 bytes, got ${buf.length}`);
    return formatIPv4(buf.readUInt32BE(0));
  },
};

/** A MAC address as __u8[6]. */
export const macCodec: Codec<string> = {
  size: 6,
  encode: (value) => parseMac(value),
  decode(buf) {
    if (buf.length < 6) throw new RangeError(`Cannot decode MAC address: need 6 bytes, got ${buf.length}`);
    return formatMac(buf);
  },
};

export const endpointKeyCodec: StructCodec<EndpointKey> = structCodec<EndpointKey>(4, {
  ip4: [0, ipv4Codec],
});

export const endpointInfoCodec: StructCodec<EndpointInfo> = structCodec<EndpointInfo>(28, {
  ifindex: [0, u32],
  lxcId: [4, u16],
  flags: [6, u16],
  mac: [8, macCodec],
  nodeMac: [14, macCodec],
  secId: [20, u32],
  ip4: [24, ipv4Codec],
});

/** Key of tendril_lxc_if: the host-side veth ifindex (__u32). */
export const ifindexKeyCodec: Codec<number> = u32;

/** C member name of each codec field (the layout test matches them against BTF). */
export const ENDPOINT_INFO_C_NAMES: Readonly<Record<keyof EndpointInfo, string>> = {
  ifindex: 'ifindex',
  lxcId: 'lxc_id',
  flags: 'flags',
  mac: 'mac',
  nodeMac: 'node_mac',
  secId: 'sec_id',
  ip4: 'ip4',
};

/** ipcache_key.family of an IPv4 prefix (Cilium's ENDPOINT_KEY_IPV4). */
export const IPCACHE_FAMILY_IPV4 = 1;
/** Bits of ipcache_key before the address (cluster_id, pad, family): always part of the match. */
export const IPCACHE_STATIC_PREFIX_BITS = 32;
/** remote_endpoint_info.flags: tunnelEndpoint is set, encapsulate to it. */
export const IPCACHE_F_HAS_TUNNEL_EP = 1;
/** remote_endpoint_info.flags: never encapsulate, even in tunnel mode. */
export const IPCACHE_F_SKIP_TUNNEL = 2;

/** Key of tendril_ipcache (struct ipcache_key) as a CIDR; an address without /bits is a /32. */
export interface IpcacheKey {
  prefix: string;
  clusterId?: number;
}

/** Value of tendril_ipcache (struct remote_endpoint_info). */
export interface IpcacheValue {
  /** Security identity of every address of the prefix. */
  identity: number;
  /** Underlay IPv4 of the node hosting the prefix; '0.0.0.0' when none. */
  tunnelEndpoint: string;
  nodeId: number;
  /** IPCACHE_F_* bits. */
  flags: number;
  /** Encryption key index (unused). */
  key: number;
}

/** The raw C struct ipcache_key, field by field. */
interface IpcacheKeyRaw {
  prefixlen: number;
  clusterId: number;
  pad: number;
  family: number;
  ip4: string;
}

const ipcacheKeyRawCodec: StructCodec<IpcacheKeyRaw> = structCodec<IpcacheKeyRaw>(12, {
  prefixlen: [0, u32],
  clusterId: [4, u16],
  pad: [6, u8],
  family: [7, u8],
  ip4: [8, ipv4Codec],
});

/**
 * tendril_ipcache key: CIDR text <-> { prefixlen = 32 + mask bits, family IPv4, network address }. Host bits of
 * the CIDR are cleared on encode (the trie ignores them, and equal prefixes must be equal keys).
 */
export const ipcacheKeyCodec: StructCodec<IpcacheKey> = {
  size: ipcacheKeyRawCodec.size,
  layout: ipcacheKeyRawCodec.layout,
  encode(value) {
    const c = parseCidr(value.prefix.includes('/') ? value.prefix : `${value.prefix}/32`);
    return ipcacheKeyRawCodec.encode({
      prefixlen: IPCACHE_STATIC_PREFIX_BITS + c.bits,
      clusterId: value.clusterId ?? 0,
      pad: 0,
      family: IPCACHE_FAMILY_IPV4,
      ip4: formatIPv4(c.base),
    });
  },
  decode(buf) {
    const raw = ipcacheKeyRawCodec.decode(buf);
    const bits = raw.prefixlen - IPCACHE_STATIC_PREFIX_BITS;
    if (raw.family !== IPCACHE_FAMILY_IPV4 || bits < 0 || bits > 32) {
      throw new RangeError(`Cannot decode ipcache key: family ${raw.family}, prefixlen ${raw.prefixlen} is no IPv4 prefix`);
    }
    const prefix = formatCidr(parseCidr(`${raw.ip4}/${bits}`));
    return raw.clusterId === 0 ? { prefix } : { prefix, clusterId: raw.clusterId };
  },
};

export const ipcacheValueCodec: StructCodec<IpcacheValue> = structCodec<IpcacheValue>(12, {
  identity: [0, u32],
  tunnelEndpoint: [4, ipv4Codec],
  nodeId: [8, u16],
  flags: [10, u8],
  key: [11, u8],
});

/** C member names of the ipcache structs (the layout test matches them against BTF). */
export const IPCACHE_KEY_C_NAMES: Readonly<Record<keyof IpcacheKeyRaw, string>> = {
  prefixlen: 'prefixlen',
  clusterId: 'cluster_id',
  pad: 'pad',
  family: 'family',
  ip4: 'ip4',
};
export const IPCACHE_VALUE_C_NAMES: Readonly<Record<keyof IpcacheValue, string>> = {
  identity: 'sec_identity',
  tunnelEndpoint: 'tunnel_endpoint',
  nodeId: 'node_id',
  flags: 'flags',
  key: 'key',
};

// ---- policy (bpf/lib/policy.h) ----

export const POLICY_MAP = 'tendril_policy';
/** max_entries of tendril_policy (one trie for every endpoint of the node; no prealloc, memory per entry in use). */
export const POLICY_MAP_SIZE = 131072;
/** Bits of policy_key always matched: sec_label (32), ep_id (16), egress (8). */
export const POLICY_STATIC_PREFIX_BITS = 56;
/** Bits of the protocol, matched after the static ones when the entry names a protocol. */
export const POLICY_PROTO_BITS = 8;

/** Kubernetes ipBlock trie (policy.h): key an ipcache_key (ipcacheKeyCodec), value the block's identity (u32). */
export const IPBLOCK_MAP = 'tendril_ipblock';
export const IPBLOCK_MAP_SIZE = 16384;
export const ipblockValueCodec: Codec<number> = u32;

/** struct policy_key, field by field. */
export interface PolicyKeyRaw {
  prefixlen: number;
  /** Remote security identity, 0 = any. */
  secLabel: number;
  epId: number;
  /** 1 = egress, 0 = ingress. */
  egress: number;
  /** IP protocol, 0 = any. */
  protocol: number;
  /** Destination port (host order here, network order in the map). */
  dport: number;
  pad: number;
}

export const policyKeyCodec: StructCodec<PolicyKeyRaw> = structCodec<PolicyKeyRaw>(16, {
  prefixlen: [0, u32],
  secLabel: [4, u32],
  epId: [8, u16],
  egress: [10, u8],
  protocol: [11, u8],
  dport: [12, be16],
  pad: [14, u16],
});

/** struct policy_entry. */
export interface PolicyValueRaw {
  deny: number;
  /** 0 (any protocol), 8 (protocol, any port) or 8 + port bits: reported as the verdict's match type. */
  l4PrefixLen: number;
  /** The node proxy's port when the entry's traffic is redirected to it (L7), else 0. Host order. */
  proxyPort: number;
  pad2: number;
  /** Packets and bytes the entry decided (atomic adds in the datapath). */
  packets: bigint;
  bytes: bigint;
}

export const policyValueCodec: StructCodec<PolicyValueRaw> = structCodec<PolicyValueRaw>(24, {
  deny: [0, u8],
  l4PrefixLen: [1, u8],
  proxyPort: [2, u16],
  pad2: [4, u32],
  packets: [8, u64],
  bytes: [16, u64],
});

export const POLICY_KEY_C_NAMES: Readonly<Record<keyof PolicyKeyRaw, string>> = {
  prefixlen: 'prefixlen',
  secLabel: 'sec_label',
  epId: 'ep_id',
  egress: 'egress',
  protocol: 'protocol',
  dport: 'dport',
  pad: 'pad',
};
export const POLICY_VALUE_C_NAMES: Readonly<Record<keyof PolicyValueRaw, string>> = {
  deny: 'deny',
  l4PrefixLen: 'l4_prefix_len',
  proxyPort: 'proxy_port',
  pad2: 'pad2',
  packets: 'packets',
  bytes: 'bytes',
};

// ---- conntrack (bpf/lib/conntrack.h) ----

export const CT_MAP_TCP = 'tendril_ct4';
export const CT_MAP_ANY = 'tendril_ct_any4';
export const CT_MAP_SIZE_TCP = 131072;
export const CT_MAP_SIZE_ANY = 65536;
/** ct_tuple4.dir: the packet left an endpoint / enters an endpoint. */
export const CT_EGRESS = 0;
export const CT_INGRESS = 1;
/** ct_entry.flags bits. */
export const CT_F_RX_CLOSING = 1;
export const CT_F_TX_CLOSING = 2;
export const CT_F_SEEN_NON_SYN = 4;
/** Names of the load-time constants with the conntrack timeouts (seconds). */
export const CONFIG_CT_TIMEOUT_TCP = 'CONFIG_CT_TIMEOUT_TCP';
export const CONFIG_CT_TIMEOUT_TCP_SYN = 'CONFIG_CT_TIMEOUT_TCP_SYN';
export const CONFIG_CT_TIMEOUT_TCP_FIN = 'CONFIG_CT_TIMEOUT_TCP_FIN';
export const CONFIG_CT_TIMEOUT_ANY = 'CONFIG_CT_TIMEOUT_ANY';
/** Cilium's defaults (seconds). */
export const CT_TIMEOUTS_DEFAULT = { tcp: 8000, tcpSyn: 60, tcpFin: 10, any: 60 } as const;

/** struct ct_tuple4: the 5-tuple as seen at the policy point, plus the direction. */
export interface CtKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  nexthdr: number;
  dir: number;
  pad: number;
}

export const ctKeyCodec: StructCodec<CtKey> = structCodec<CtKey>(16, {
  saddr: [0, ipv4Codec],
  daddr: [4, ipv4Codec],
  sport: [8, be16],
  dport: [10, be16],
  nexthdr: [12, u8],
  dir: [13, u8],
  pad: [14, u16],
});

/** struct ct_entry. */
export interface CtValue {
  /** Both directions. */
  packets: bigint;
  bytes: bigint;
  /** Seconds of CLOCK_MONOTONIC after which the entry is expired. */
  lifetime: number;
  /** Source identity of the packet that created the entry. */
  srcSecId: number;
  /** CT_F_* bits. */
  flags: number;
  txFlagsSeen: number;
  rxFlagsSeen: number;
  /** Seconds of CLOCK_MONOTONIC when the entry was created. */
  created: number;
}

export const ctValueCodec: StructCodec<CtValue> = structCodec<CtValue>(32, {
  packets: [0, u64],
  bytes: [8, u64],
  lifetime: [16, u32],
  srcSecId: [20, u32],
  flags: [24, u16],
  txFlagsSeen: [26, u8],
  rxFlagsSeen: [27, u8],
  created: [28, u32],
});

export const CT_KEY_C_NAMES: Readonly<Record<keyof CtKey, string>> = {
  saddr: 'saddr',
  daddr: 'daddr',
  sport: 'sport',
  dport: 'dport',
  nexthdr: 'nexthdr',
  dir: 'dir',
  pad: 'pad',
};
export const CT_VALUE_C_NAMES: Readonly<Record<keyof CtValue, string>> = {
  packets: 'packets',
  bytes: 'bytes',
  lifetime: 'lifetime',
  srcSecId: 'src_sec_id',
  flags: 'flags',
  txFlagsSeen: 'tx_flags_seen',
  rxFlagsSeen: 'rx_flags_seen',
  created: 'created',
};

// ---- drop metrics (bpf/lib/drop.h) ----

export const METRICS_MAP = 'tendril_metrics';
/** metrics_key.dir. */
export const METRIC_DIR_UNKNOWN = 0;
export const METRIC_DIR_INGRESS = 1;
export const METRIC_DIR_EGRESS = 2;

export interface MetricsKey {
  /** Positive drop code. */
  reason: number;
  dir: number;
  pad: number;
}

export const metricsKeyCodec: StructCodec<MetricsKey> = structCodec<MetricsKey>(4, {
  reason: [0, u8],
  dir: [1, u8],
  pad: [2, u16],
});

export interface MetricsValue {
  packets: bigint;
  bytes: bigint;
}

/** One CPU's slot of a tendril_metrics value. */
export const metricsValueCodec: StructCodec<MetricsValue> = structCodec<MetricsValue>(16, {
  packets: [0, u64],
  bytes: [8, u64],
});

export const METRICS_KEY_C_NAMES: Readonly<Record<keyof MetricsKey, string>> = { reason: 'reason', dir: 'dir', pad: 'pad' };
export const METRICS_VALUE_C_NAMES: Readonly<Record<keyof MetricsValue, string>> = { packets: 'packets', bytes: 'bytes' };

/** Drop codes the datapath returns today (negative, as in bpf/lib/drop.h). */
export const DROP_INVALID_SIP = -132;
export const DROP_POLICY = -133;
export const DROP_INVALID = -134;
export const DROP_CT_INVALID_HDR = -135;
export const DROP_UNKNOWN_L3 = -139;
export const DROP_WRITE_ERROR = -141;
export const DROP_UNKNOWN_L4 = -142;
export const DROP_NO_TUNNEL_KEY = -147;
export const DROP_UNKNOWN_TARGET = -150;
export const DROP_CSUM_L3 = -153;
export const DROP_CSUM_L4 = -154;
export const DROP_UNSUPPORTED_L2 = -166;
export const DROP_NAT_NO_MAPPING = -167;
export const DROP_NAT_UNSUPP_PROTO = -168;
export const DROP_INVALID_IDENTITY = -171;
export const DROP_POLICY_DENY = -181;
export const DROP_TTL_EXCEEDED = -196;
export const DROP_EP_NOT_READY = -203;
export const DROP_NO_EGRESS_IP = -204;

/** Drop reason texts by positive code, as Cilium prints them (pkg/monitor/api/drop.go). */
export const DROP_REASONS: ReadonlyMap<number, string> = new Map([
  [130, 'Invalid source mac'],
  [131, 'Invalid destination mac'],
  [132, 'Invalid source ip'],
  [133, 'Policy denied'],
  [134, 'Invalid packet'],
  [135, 'CT: Truncated or invalid header'],
  [136, 'Fragmentation needed'],
  [137, 'CT: Unknown L4 protocol'],
  [139, 'Unsupported L3 protocol'],
  [140, 'Missed tail call'],
  [141, 'Error writing to packet'],
  [142, 'Unknown L4 protocol'],
  [143, 'Unknown ICMPv4 code'],
  [144, 'Unknown ICMPv4 type'],
  [145, 'Unknown ICMPv6 code'],
  [146, 'Unknown ICMPv6 type'],
  [147, 'Error retrieving tunnel key'],
  [150, 'Unknown L3 target address'],
  [151, 'Stale or unroutable IP'],
  [153, 'Error while correcting L3 checksum'],
  [154, 'Error while correcting L4 checksum'],
  [155, 'CT: Map insertion failed'],
  [156, 'Invalid IPv6 extension header'],
  [157, 'IP fragmentation not supported'],
  [158, 'Service backend not found'],
  [160, 'No tunnel/encapsulation endpoint (datapath BUG!)'],
  [161, 'NAT 46/64 not enabled'],
  [162, 'Reached EDT rate-limiting drop horizon'],
  [163, 'Unknown connection tracking state'],
  [164, 'Local host is unreachable'],
  [166, 'Unsupported L2 protocol'],
  [167, 'No mapping for NAT masquerade'],
  [168, 'Unsupported protocol for NAT masquerade'],
  [169, 'FIB lookup failed'],
  [170, 'Encapsulation traffic is prohibited'],
  [171, 'Invalid identity'],
  [172, 'Unknown sender'],
  [173, 'NAT not needed'],
  [174, 'Is a ClusterIP'],
  [175, 'First logical datagram fragment not found'],
  [176, 'Forbidden ICMPv6 message'],
  [177, 'Denied by LB src range check'],
  [178, 'Socket lookup failed'],
  [179, 'Socket assign failed'],
  [180, 'Proxy redirection not supported for protocol'],
  [181, 'Policy denied by denylist'],
  [182, 'VLAN traffic disallowed by VLAN filter'],
  [183, 'Incorrect VNI from VTEP'],
  [184, 'Failed to update or lookup TC buffer'],
  [185, 'No SID was found for the IP address'],
  [187, 'NAT46 translation failed'],
  [188, 'NAT64 translation failed'],
  [189, 'Authentication required'],
  [190, 'No conntrack map found'],
  [191, 'No nat map found'],
  [192, 'Invalid ClusterID'],
  [194, 'No egress gateway found'],
  [195, 'Traffic is unencrypted'],
  [196, 'TTL exceeded'],
  [197, 'No node ID found'],
  [198, 'Rate limited'],
  [202, 'Host datapath not ready'],
  [203, 'Endpoint policy program not available'],
  [204, 'No Egress IP configured'],
  [205, 'Punt to proxy'],
]);

/** Text of a drop code; accepts the datapath's negative form (-132) or the event's positive one (132). */
export function dropReasonText(code: number): string {
  return DROP_REASONS.get(Math.abs(code)) ?? `Unknown drop reason ${Math.abs(code)}`;
}
