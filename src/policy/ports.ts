// Port helpers: protocol numbers, port ranges as aligned LPM blocks, and the human form of a map entry.
import { reservedIdentityName } from './identity.js';
import type { L4Protocol, PolicyEntry, PortProtocol } from './types.js';

export const PROTO_ANY = 0;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_SCTP = 132;

const PROTO_NUMBER: Record<L4Protocol, number> = { TCP: PROTO_TCP, UDP: PROTO_UDP, SCTP: PROTO_SCTP };
const PROTO_NAME = new Map<number, string>([
  [PROTO_ICMP, 'ICMP'],
  [PROTO_TCP, 'TCP'],
  [PROTO_UDP, 'UDP'],
  [PROTO_SCTP, 'SCTP'],
]);

export function protocolNumber(p: L4Protocol): number {
  return PROTO_NUMBER[p];
}

export function protocolName(n: number): string {
  if (n === PROTO_ANY) return 'ANY';
  return PROTO_NAME.get(n) ?? String(n);
}

/** The L4 protocols a port clause stands for: ANY with ports means each of TCP, UDP and SCTP (the map
 *  cannot match a port without a protocol). */
export function protocolsOf(p: PortProtocol): number[] {
  return p === 'ANY' ? [PROTO_TCP, PROTO_UDP, PROTO_SCTP] : [PROTO_NUMBER[p]];
}

/** ICMPv4 type names a TendrilNetworkPolicy `icmps` field may use instead of the number (Cilium's list). */
export const ICMP_TYPE_NAMES: Readonly<Record<string, number>> = {
  EchoReply: 0,
  DestinationUnreachable: 3,
  Redirect: 5,
  Echo: 8,
  EchoRequest: 8,
  RouterAdvertisement: 9,
  RouterSelection: 10,
  TimeExceeded: 11,
  ParameterProblem: 12,
  Timestamp: 13,
  TimestampReply: 14,
  Photuris: 40,
  ExtendedEchoRequest: 42,
  ExtendedEchoReply: 43,
};

/** An ICMP match as a port block: type and code are the 16 bits the datapath looks up in the port's place. */
export function icmpBlock(type: number, code: number | null): PortBlock {
  return code === null ? { port: type << 8, prefixLen: 8 } : { port: (type << 8) | code, prefixLen: 16 };
}

/** A port block: the ports whose first `prefixLen` bits equal those of `port`. */
export interface PortBlock {
  port: number;
  prefixLen: number;
}

/** Covers from..to (inclusive, 0..65535) with the fewest aligned power-of-two blocks, in ascending order:
 *  79-1026 -> 79/16, 80/12, 96/11, 128/9, 256/8, 512/7, 1024/15, 1026/16. */
export function portRangeBlocks(from: number, to: number): PortBlock[] {
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > 65535 || from > to) {
    throw new RangeError(`Invalid port range ${from}-${to}`);
  }
  const blocks: PortBlock[] = [];
  let lo = from;
  while (lo <= to) {
    // Largest block that starts at lo (alignment) and ends within the range.
    let size = lo === 0 ? 65536 : lo & -lo;
    while (lo + size - 1 > to) size /= 2;
    blocks.push({ port: size === 65536 ? 0 : lo, prefixLen: 16 - Math.log2(size) });
    lo += size;
  }
  return blocks;
}

/** First and last port of a block. */
export function blockRange(port: number, prefixLen: number): [number, number] {
  const size = 2 ** (16 - prefixLen);
  return [port, port + size - 1];
}

/** Whether block a (port/prefixLen) contains block b. */
export function blockContains(aPort: number, aLen: number, bPort: number, bLen: number): boolean {
  if (aLen > bLen) return false;
  const shift = 16 - aLen;
  return aLen === 0 || bPort >>> shift === aPort >>> shift;
}

export interface EntryDescription {
  /** "Ingress" | "Egress" */
  direction: string;
  /** "Allow" | "Deny" */
  verdict: string;
  /** "ANY" for identity 0, the reserved name ("host") or the number. */
  identity: string;
  /** "80/TCP", "8000-8191/TCP", "ANY/TCP" (every port of TCP) or "ANY"; ICMP "8/ICMP" (a type), "3:4/ICMP" (type 3
   *  code 4). */
  port: string;
}

/** Human form of a map entry, as `tendril bpf policy get` prints it (Cilium's notation). */
export function describeEntry(e: PolicyEntry): EntryDescription {
  let port: string;
  if (e.protocol === PROTO_ANY) port = 'ANY';
  else if (e.portPrefixLen === 0) port = `ANY/${protocolName(e.protocol)}`;
  else if (e.protocol === PROTO_ICMP) port = `${e.port >>> 8}${e.portPrefixLen >= 16 ? `:${e.port & 0xff}` : ''}/ICMP`;
  else {
    const [lo, hi] = blockRange(e.port, e.portPrefixLen);
    port = `${lo === hi ? lo : `${lo}-${hi}`}/${protocolName(e.protocol)}`;
  }
  return {
    direction: e.direction === 'ingress' ? 'Ingress' : 'Egress',
    verdict: e.deny ? 'Deny' : 'Allow',
    identity: e.identity === 0 ? 'ANY' : (reservedIdentityName(e.identity) ?? String(e.identity)),
    port,
  };
}
