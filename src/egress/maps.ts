// Layouts of bpf/lib/egress.h's maps, and their replacement with a wanted set.
import { u32, u8, type Codec, type BpfMap, type TypedMap } from '../kernel/bpf/index.js';
import { formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../util/ip.js';

export const EGRESS_POLICY_MAP = 'tendril_egress_gw_policy_v4';
/** bpf/lib/egress.h: index 0 is EGRESS_STATE_EMPTY while the policy map is known empty (the datapath skips its lookup). */
export const EGRESS_STATE_MAP = 'tendril_egress_gw_state';
export const EGRESS_STATE_EMPTY = 1;
// The egress IP set is the datapath's map (cil_from_netdev reads it too): its name is defined there once.
import { EGRESS_IP_MAP_NAME as EGRESS_IP_MAP } from '../datapath/nat.js';
export { EGRESS_IP_MAP };
/** prefixlen counts the source /32 before the destination's bits (EGRESS_STATIC_PREFIX_BITS). */
const STATIC_BITS = 32;

export interface EgressKey {
  source: string;
  destination: string;
}

export interface EgressValue {
  egressIP: string;
  gatewayIP: string;
}

export const egressKeyCodec: Codec<EgressKey> = {
  size: 12,
  encode(k: EgressKey): Buffer {
    const c = parseCidr(k.destination);
    const b = Buffer.alloc(12);
    b.writeUInt32LE(STATIC_BITS + c.bits, 0);
    b.writeUInt32BE(parseIPv4(k.source) >>> 0, 4);
    b.writeUInt32BE(c.base >>> 0, 8);
    return b;
  },
  decode(b: Buffer): EgressKey {
    const bits = b.readUInt32LE(0) - STATIC_BITS;
    return { source: formatIPv4(b.readUInt32BE(4)), destination: formatCidr(parseCidr(`${formatIPv4(b.readUInt32BE(8))}/${bits}`)) };
  },
};

export const egressValueCodec: Codec<EgressValue> = {
  size: 8,
  encode(v: EgressValue): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(parseIPv4(v.egressIP) >>> 0, 0);
    b.writeUInt32BE(parseIPv4(v.gatewayIP) >>> 0, 4);
    return b;
  },
  decode(b: Buffer): EgressValue {
    return { egressIP: formatIPv4(b.readUInt32BE(0)), gatewayIP: formatIPv4(b.readUInt32BE(4)) };
  },
};

export const egressIpCodec: Codec<string> = {
  size: 4,
  encode(ip: string): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(ip) >>> 0, 0);
    return b;
  },
  decode(b: Buffer): string {
    return formatIPv4(b.readUInt32BE(0));
  },
};

export class EgressMaps {
  readonly policy: TypedMap<EgressKey, EgressValue>;
  readonly ips: TypedMap<string, number>;
  readonly state: TypedMap<number, number>;

  constructor(map: (name: string) => BpfMap) {
    this.policy = map(EGRESS_POLICY_MAP).typed(egressKeyCodec, egressValueCodec);
    this.ips = map(EGRESS_IP_MAP).typed(egressIpCodec, u8);
    this.state = map(EGRESS_STATE_MAP).typed(u32, u32);
  }

  /** Whether the datapath skips the policy lookup (the map known empty). */
  skipsLookup(): boolean {
    return this.state.lookup(0) === EGRESS_STATE_EMPTY;
  }

  /** Makes the policy map hold exactly @want (new and changed entries first, then the stale ones go). */
  replacePolicy(want: ReadonlyArray<EgressKey & EgressValue>): { written: number; removed: number } {
    const id = (k: EgressKey): string => `${k.source} ${k.destination}`;
    const have = new Map<string, [EgressKey, EgressValue]>();
    for (const [k, v] of this.policy.entries()) have.set(id(k), [k, v]);
    let written = 0;
    let removed = 0;
    const keep = new Set<string>();
    // Consulted again before the first entry goes in; skipped again only once the map is empty.
    if (want.length) this.state.update(0, 0);
    for (const e of want) {
      keep.add(id(e));
      const cur = have.get(id(e))?.[1];
      if (cur && cur.egressIP === e.egressIP && cur.gatewayIP === e.gatewayIP) continue;
      this.policy.update({ source: e.source, destination: e.destination }, { egressIP: e.egressIP, gatewayIP: e.gatewayIP });
      written++;
    }
    for (const [k, [key]] of have) if (!keep.has(k) && this.policy.delete(key)) removed++;
    if (!want.length && this.policy.keys().next().done) this.state.update(0, EGRESS_STATE_EMPTY);
    return { written, removed };
  }

  /** Makes the local egress IP set hold exactly @want. */
  replaceIps(want: readonly string[]): void {
    const have = new Set(this.ips.keys());
    for (const ip of want) if (!have.has(ip)) this.ips.update(ip, 1);
    for (const ip of have) if (!want.includes(ip)) this.ips.delete(ip);
  }

  listPolicy(): Array<EgressKey & EgressValue> {
    return [...this.policy.entries()].map(([k, v]) => ({ ...k, ...v })).sort((a, b) => (a.source === b.source ? a.destination.localeCompare(b.destination) : a.source.localeCompare(b.source)));
  }
}
