// Byte layouts of the service load-balancing maps (mirror of bpf/lib/lb.h) and their names.
import { be16, structCodec, u16, u32, u8, type Codec, type StructCodec } from '../kernel/bpf/index.js';
import { ipv4Codec } from '../datapath/maps.js';
import { formatCidr, formatIPv4, parseCidr } from '../util/ip.js';

export const LB4_SERVICES_MAP = 'tendril_lb4_services';
export const LB4_BACKENDS_MAP = 'tendril_lb4_backends';
export const LB4_REVERSE_NAT_MAP = 'tendril_lb4_reverse_nat';
export const LB4_MAGLEV_MAP = 'tendril_lb4_maglev';
export const LB4_CT_MAP = 'tendril_lb4_ct';
export const LB4_AFFINITY_MAP = 'tendril_lb4_affinity';
export const LB4_SOURCE_RANGE_MAP = 'tendril_lb4_source_range';

/** max_entries of the maps (bpf/lib/lb.h). */
export const LB_SERVICE_MAP_SIZE = 65536;
export const LB_BACKEND_MAP_SIZE = 65536;
export const LB_MAGLEV_MAP_SIZE = 262144;

/** lb4_service.flags. */
export const LB_F_MAGLEV = 1;
export const LB_F_AFFINITY = 2;
/** externalTrafficPolicy Local: traffic from outside uses the frontend's LB_SCOPE_EXTERNAL entry. */
export const LB_F_EXT_LOCAL = 4;
/** Served to traffic from outside at its own address (a LoadBalancer IP), on the native device. */
export const LB_F_EXTERNAL = 8;
/** loadBalancerSourceRanges: clients from outside only from the frontend's tendril_lb4_source_range prefixes. */
export const LB_F_SRC_RANGE = 16;

/** lb4_key.scope: the entry pods use, and a NodePort's entry for traffic from outside with externalTrafficPolicy Local. */
export const LB_SCOPE_ALL = 0;
export const LB_SCOPE_EXTERNAL = 1;

/** Cilium's DROP_NO_SERVICE, as the datapath returns it. */
export const DROP_NO_SERVICE = -158;
/** Cilium's DROP_NOT_IN_SRC_RANGE: a LoadBalancer IP's client outside loadBalancerSourceRanges. */
export const DROP_NOT_IN_SRC_RANGE = -177;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Key of tendril_lb4_services (struct lb4_key). */
export interface Lb4Key {
  address: string;
  port: number;
  /** 0: the service entry; 1..count: its backends. */
  slot: number;
  proto: number;
  /** LB_SCOPE_*. */
  scope: number;
}

/** Value of tendril_lb4_services (struct lb4_service). */
export interface Lb4Service {
  backendId: number;
  count: number;
  revNatIndex: number;
  flags: number;
  maglevSize: number;
  affinityTimeout: number;
}

/** Value of tendril_lb4_backends (struct lb4_backend). */
export interface Lb4Backend {
  address: string;
  port: number;
  proto: number;
  flags: number;
}

/** Value of tendril_lb4_reverse_nat (struct lb4_reverse_nat). */
export interface Lb4ReverseNat {
  address: string;
  port: number;
}

export interface Lb4MaglevKey {
  revNatIndex: number;
  index: number;
}

export const lb4KeyCodec: StructCodec<Lb4Key> = structCodec<Lb4Key>(12, {
  address: [0, ipv4Codec],
  port: [4, be16],
  slot: [6, u16],
  proto: [8, u8],
  scope: [9, u8],
});

export const lb4ServiceCodec: StructCodec<Lb4Service> = structCodec<Lb4Service>(16, {
  backendId: [0, u32],
  count: [4, u16],
  revNatIndex: [6, u16],
  flags: [8, u8],
  maglevSize: [10, u16],
  affinityTimeout: [12, u32],
});

export const lb4BackendCodec: StructCodec<Lb4Backend> = structCodec<Lb4Backend>(8, {
  address: [0, ipv4Codec],
  port: [4, be16],
  proto: [6, u8],
  flags: [7, u8],
});

export const lb4ReverseNatCodec: StructCodec<Lb4ReverseNat> = structCodec<Lb4ReverseNat>(8, {
  address: [0, ipv4Codec],
  port: [4, be16],
});

export const lb4MaglevKeyCodec: StructCodec<Lb4MaglevKey> = structCodec<Lb4MaglevKey>(8, {
  revNatIndex: [0, u16],
  index: [4, u32],
});

export const backendIdCodec: Codec<number> = u32;
export const revNatIndexCodec: Codec<number> = u16;

/** Key of tendril_lb4_source_range (struct lb4_src_range_key): a service ID and a client prefix ("a.b.c.d/n"). */
export interface Lb4SourceRangeKey {
  revNatIndex: number;
  cidr: string;
}

interface Lb4SourceRangeKeyRaw {
  prefixlen: number;
  revNatIndex: number;
  addr: string;
}

/** Bits of the key before the address (rev_nat_index + pad): LB_SRC_RANGE_STATIC_PREFIX. */
export const LB_SRC_RANGE_STATIC_PREFIX = 32;

const lb4SourceRangeKeyRawCodec: StructCodec<Lb4SourceRangeKeyRaw> = structCodec<Lb4SourceRangeKeyRaw>(12, {
  prefixlen: [0, u32],
  revNatIndex: [4, u16],
  addr: [8, ipv4Codec],
});

/** The trie key: prefixlen = the static bits + the CIDR's; host bits cleared (equal prefixes, equal keys). */
export const lb4SourceRangeKeyCodec: StructCodec<Lb4SourceRangeKey> = {
  size: lb4SourceRangeKeyRawCodec.size,
  layout: lb4SourceRangeKeyRawCodec.layout,
  encode(v) {
    const c = parseCidr(v.cidr);
    return lb4SourceRangeKeyRawCodec.encode({ prefixlen: LB_SRC_RANGE_STATIC_PREFIX + c.bits, revNatIndex: v.revNatIndex, addr: formatIPv4(c.base) });
  },
  decode(buf) {
    const raw = lb4SourceRangeKeyRawCodec.decode(buf);
    const bits = raw.prefixlen - LB_SRC_RANGE_STATIC_PREFIX;
    if (bits < 0 || bits > 32) throw new RangeError(`Cannot decode a source range key: prefixlen ${raw.prefixlen} is no IPv4 prefix`);
    return { revNatIndex: raw.revNatIndex, cidr: formatCidr(parseCidr(`${raw.addr}/${bits}`)) };
  },
};
