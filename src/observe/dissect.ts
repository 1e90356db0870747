// Parses the captured packet bytes of a datapath event (Ethernet, ARP, IPv4, TCP, UDP, ICMPv4) into flow fields,
// the one-line summaries Hubble and cilium monitor print, and the layer-by-layer text of `monitor -vv`.
import { formatIPv4 } from '../util/ip.js';
import type { TCPFlags } from './model.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;
export const IPPROTO_ICMPV6 = 58;

export interface EthernetLayer {
  src: string;
  dst: string;
  ethertype: number;
}

export interface ArpLayer {
  hwType: number;
  protoType: number;
  hwSize: number;
  protoSize: number;
  op: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

export interface IPv4Layer {
  version: number;
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  /** Bit 1 = DF, bit 0 = MF (as gopacket's IPv4Flag: 2 = DontFragment, 1 = MoreFragments). */
  flags: number;
  fragOffset: number;
  ttl: number;
  proto: number;
  checksum: number;
  src: string;
  dst: string;
  /** Bytes of the IPv4 payload present in the capture. */
  payloadCaptured: number;
}

export interface TcpLayer {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  dataOffset: number;
  flags: TCPFlags;
  window: number;
  checksum: number;
  urgent: number;
  /** Options in gopacket's TCPOption(...) notation. */
  options: string[];
  headerLen: number;
  payloadCaptured: number;
}

export interface UdpLayer {
  srcPort: number;
  dstPort: number;
  length: number;
  checksum: number;
  payloadCaptured: number;
}

export interface IcmpLayer {
  type: number;
  code: number;
  checksum: number;
  id: number;
  seq: number;
  payloadCaptured: number;
}

export interface Dissection {
  ethernet?: EthernetLayer;
  arp?: ArpLayer;
  ipv4?: IPv4Layer;
  /** Set for an IPv6 packet (only the version is recognised). */
  ipv6?: true;
  tcp?: TcpLayer;
  udp?: UdpLayer;
  icmpv4?: IcmpLayer;
  /** Only the ports of an SCTP packet. */
  sctp?: { srcPort: number; dstPort: number };
  /** True when the capture ended inside a header we wanted to read. */
  truncated: boolean;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** "aa:bb:cc:dd:ee:ff" of 6 bytes at `off` (a table lookup: this runs for every event). */
function mac(b: Buffer, off: number): string {
  return `${HEX[b[off]!]}:${HEX[b[off + 1]!]}:${HEX[b[off + 2]!]}:${HEX[b[off + 3]!]}:${HEX[b[off + 4]!]}:${HEX[b[off + 5]!]}`;
}

/** Parses as much of `data` (starting at the Ethernet header) as was captured; never throws. */
export function dissect(data: Uint8Array): Dissection {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const d: Dissection = { truncated: false };
  if (buf.length < 14) {
    d.truncated = buf.length > 0;
    return d;
  }
  const ethertype = buf.readUInt16BE(12);
  d.ethernet = { dst: mac(buf, 0), src: mac(buf, 6), ethertype };
  const l3 = buf.subarray(14);
  if (ethertype === ETH_P_ARP) {
    if (l3.length < 28) {
      d.truncated = true;
      return d;
    }
    d.arp = {
      hwType: l3.readUInt16BE(0),
      protoType: l3.readUInt16BE(2),
      hwSize: l3[4]!,
      protoSize: l3[5]!,
      op: l3.readUInt16BE(6),
      senderMac: mac(l3, 8),
      senderIp: formatIPv4(l3.readUInt32BE(14)),
      targetMac: mac(l3, 18),
      targetIp: formatIPv4(l3.readUInt32BE(24)),
    };
    return d;
  }
  if (ethertype === ETH_P_IPV6) {
    d.ipv6 = true;
    return d;
  }
  if (ethertype !== ETH_P_IP) return d;
  if (l3.length < 20) {
    d.truncated = true;
    return d;
  }
  const ihl = l3[0]! & 0x0f;
  const fragWord = l3.readUInt16BE(6);
  const hdrLen = Math.max(20, ihl * 4);
  const ip: IPv4Layer = {
    version: l3[0]! >> 4,
    ihl,
    tos: l3[1]!,
    totalLength: l3.readUInt16BE(2),
    id: l3.readUInt16BE(4),
    flags: fragWord >> 13,
    fragOffset: fragWord & 0x1fff,
    ttl: l3[8]!,
    proto: l3[9]!,
    checksum: l3.readUInt16BE(10),
    src: formatIPv4(l3.readUInt32BE(12)),
    dst: formatIPv4(l3.readUInt32BE(16)),
    payloadCaptured: Math.max(0, Math.min(l3.length, ip4PayloadEnd(l3)) - hdrLen),
  };
  d.ipv4 = ip;
  // Only the first fragment carries the L4 header.
  if (ip.fragOffset !== 0) return d;
  const l4 = l3.subarray(hdrLen, Math.max(hdrLen, Math.min(l3.length, ip4PayloadEnd(l3))));
  switch (ip.proto) {
    case IPPROTO_TCP: {
      if (l4.length < 20) {
        d.truncated = true;
        return d;
      }
      const off = l4[12]! >> 4;
      const fl = l4[13]!;
      const flags: TCPFlags = {};
      if (fl & 0x01) flags.FIN = true;
      if (fl & 0x02) flags.SYN = true;
      if (fl & 0x04) flags.RST = true;
      if (fl & 0x08) flags.PSH = true;
      if (fl & 0x10) flags.ACK = true;
      if (fl & 0x20) flags.URG = true;
      if (fl & 0x40) flags.ECE = true;
      if (fl & 0x80) flags.CWR = true;
      if (l4[12]! & 0x01) flags.NS = true;
      const headerLen = Math.max(20, off * 4);
      d.tcp = {
        srcPort: l4.readUInt16BE(0),
        dstPort: l4.readUInt16BE(2),
        seq: l4.readUInt32BE(4),
        ack: l4.readUInt32BE(8),
        dataOffset: off,
        flags,
        window: l4.readUInt16BE(14),
        checksum: l4.readUInt16BE(16),
        urgent: l4.readUInt16BE(18),
        options: tcpOptions(l4.subarray(20, Math.min(l4.length, headerLen))),
        headerLen,
        payloadCaptured: Math.max(0, l4.length - headerLen),
      };
      return d;
    }
    case IPPROTO_UDP:
      if (l4.length < 8) {
        d.truncated = true;
        return d;
      }
      d.udp = {
        srcPort: l4.readUInt16BE(0),
        dstPort: l4.readUInt16BE(2),
        length: l4.readUInt16BE(4),
        checksum: l4.readUInt16BE(6),
        payloadCaptured: l4.length - 8,
      };
      return d;
    case IPPROTO_ICMP:
      if (l4.length < 8) {
        d.truncated = true;
        return d;
      }
      d.icmpv4 = {
        type: l4[0]!,
        code: l4[1]!,
        checksum: l4.readUInt16BE(2),
        id: l4.readUInt16BE(4),
        seq: l4.readUInt16BE(6),
        payloadCaptured: l4.length - 8,
      };
      return d;
    case IPPROTO_SCTP:
      if (l4.length < 4) {
        d.truncated = true;
        return d;
      }
      d.sctp = { srcPort: l4.readUInt16BE(0), dstPort: l4.readUInt16BE(2) };
      return d;
    default:
      return d;
  }
}

/** End of the IPv4 packet inside the L3 buffer (total length, or all of it if the field is bogus). */
function ip4PayloadEnd(l3: Buffer): number {
  const total = l3.readUInt16BE(2);
  return total >= 20 ? total : l3.length;
}

const TCP_OPTION_NAMES: Record<number, string> = {
  0: 'EndList',
  1: 'NOP',
  2: 'MSS',
  3: 'WindowScale',
  4: 'SACKPermitted',
  5: 'SACK',
  8: 'Timestamps',
};

function tcpOptions(b: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < b.length) {
    const kind = b[i]!;
    const name = TCP_OPTION_NAMES[kind] ?? `Unknown(${kind})`;
    if (kind === 0 || kind === 1) {
      out.push(`TCPOption(${name}:)`);
      i += 1;
      if (kind === 0) break;
      continue;
    }
    const len = b[i + 1];
    if (len === undefined || len < 2 || i + len > b.length) break;
    const data = b.subarray(i + 2, i + len);
    if (kind === 2 && data.length >= 2) out.push(`TCPOption(MSS:${data.readUInt16BE(0)})`);
    else if (kind === 8 && data.length === 8) out.push(`TCPOption(Timestamps:${data.readUInt32BE(0)}/${data.readUInt32BE(4)})`);
    else out.push(`TCPOption(${name}:${data.toString('hex')})`);
    i += len;
  }
  return out;
}

const ICMPV4_TYPES: Record<number, { name: string; codes?: Record<number, string> }> = {
  0: { name: 'EchoReply' },
  3: {
    name: 'DestinationUnreachable',
    codes: {
      0: 'Net',
      1: 'Host',
      2: 'Protocol',
      3: 'Port',
      4: 'FragmentationNeeded',
      5: 'SourceRoutingFailed',
      6: 'NetUnknown',
      7: 'HostUnknown',
      8: 'SourceIsolated',
      9: 'NetAdminProhibited',
      10: 'HostAdminProhibited',
      11: 'NetTOS',
      12: 'HostTOS',
      13: 'CommAdminProhibited',
      14: 'HostPrecedence',
      15: 'PrecedenceCutoff',
    },
  },
  4: { name: 'SourceQuench' },
  5: { name: 'Redirect', codes: { 0: 'Network', 1: 'Host', 2: 'TOS+Network', 3: 'TOS+Host' } },
  8: { name: 'EchoRequest' },
  9: { name: 'RouterAdvertisement' },
  10: { name: 'RouterSolicitation' },
  11: { name: 'TimeExceeded', codes: { 0: 'TTLExceeded', 1: 'FragmentReassemblyTimeExceeded' } },
  12: { name: 'ParameterProblem', codes: { 0: 'PointerIndicatesError', 1: 'MissingOption', 2: 'BadLength' } },
  13: { name: 'TimestampRequest' },
  14: { name: 'TimestampReply' },
  15: { name: 'InfoRequest' },
  16: { name: 'InfoReply' },
  17: { name: 'AddressMaskRequest' },
  18: { name: 'AddressMaskReply' },
};

/** gopacket's ICMPv4TypeCode.String(): "EchoRequest", "DestinationUnreachable(Port)", "3(99)". */
export function icmpv4TypeCode(type: number, code: number): string {
  const t = ICMPV4_TYPES[type];
  if (!t) return `${type}(${code})`;
  if (!t.codes) return code === 0 ? t.name : `${t.name}(Code: ${code})`;
  const c = t.codes[code];
  return c === undefined ? `${t.name}(Code: ${code})` : `${t.name}(${c})`;
}

/** TCP flags in Hubble's order (SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS). */
export function tcpFlagList(f: TCPFlags): string[] {
  const order: Array<keyof TCPFlags> = ['SYN', 'ACK', 'RST', 'FIN', 'PSH', 'URG', 'ECE', 'CWR', 'NS'];
  return order.filter((k) => f[k] === true);
}

/** The Summary Hubble puts on an L3/L4 flow: "TCP Flags: SYN, ACK", "UDP", "ICMPv4 EchoRequest", "ARP …". */
export function flowSummary(d: Dissection): string {
  if (d.tcp) return `TCP Flags: ${tcpFlagList(d.tcp.flags).join(', ')}`;
  if (d.udp) return 'UDP';
  if (d.sctp) return 'SCTP';
  if (d.icmpv4) return `ICMPv4 ${icmpv4TypeCode(d.icmpv4.type, d.icmpv4.code)}`;
  if (d.arp) return arpSummary(d.arp);
  if (d.ipv4) return `IPv4 ${ipProtoName(d.ipv4.proto)}`;
  if (d.ipv6) return 'IPv6';
  if (d.ethernet) return `Ethernet ${etherTypeName(d.ethernet.ethertype)}`;
  return '';
}

function arpSummary(a: ArpLayer): string {
  if (a.op === 1) return `ARP Request who-has ${a.targetIp} tell ${a.senderIp}`;
  if (a.op === 2) return `ARP Reply ${a.senderIp} is-at ${a.senderMac}`;
  return `ARP op ${a.op}`;
}

/** What cilium monitor prints after the colon: "10.0.0.5:43210 -> 10.0.1.7:80 tcp SYN", "a -> b ICMPv4 EchoRequest". */
export function connectionSummary(d: Dissection): string {
  const ip = d.ipv4;
  if (ip) {
    if (d.icmpv4) return `${ip.src} -> ${ip.dst} ICMPv4 ${icmpv4TypeCode(d.icmpv4.type, d.icmpv4.code)}`;
    if (d.tcp) {
      const flags = monitorTcpFlags(d.tcp.flags);
      return `${ip.src}:${d.tcp.srcPort} -> ${ip.dst}:${d.tcp.dstPort} tcp${flags ? ' ' + flags : ''}`;
    }
    if (d.udp) return `${ip.src}:${d.udp.srcPort} -> ${ip.dst}:${d.udp.dstPort} udp`;
    if (d.sctp) return `${ip.src}:${d.sctp.srcPort} -> ${ip.dst}:${d.sctp.dstPort} sctp`;
    return `${ip.src} -> ${ip.dst} ${ipProtoName(ip.proto)}`;
  }
  if (d.arp) return `${d.arp.senderMac} -> ${d.ethernet?.dst ?? '?'} ARP`;
  if (d.ethernet) return `${d.ethernet.src} -> ${d.ethernet.dst} ${etherTypeName(d.ethernet.ethertype)}`;
  return '';
}

/** cilium monitor's getTCPInfo: only SYN, ACK, RST, FIN, comma separated. */
function monitorTcpFlags(f: TCPFlags): string {
  return (['SYN', 'ACK', 'RST', 'FIN'] as const).filter((k) => f[k] === true).join(', ');
}

const ETHER_TYPES: Record<number, string> = { [ETH_P_IP]: 'IPv4', [ETH_P_ARP]: 'ARP', [ETH_P_IPV6]: 'IPv6', 0x8100: 'Dot1Q' };
export function etherTypeName(t: number): string {
  return ETHER_TYPES[t] ?? `UnknownEthernetType(${t})`;
}

const IP_PROTOS: Record<number, string> = { 1: 'ICMPv4', 2: 'IGMP', 6: 'TCP', 17: 'UDP', 47: 'GRE', 58: 'ICMPv6', 132: 'SCTP' };
export function ipProtoName(p: number): string {
  return IP_PROTOS[p] ?? `IPProtocol(${p})`;
}

const PORT_NAMES: Record<number, string> = { 22: 'ssh', 53: 'domain', 80: 'http', 443: 'https', 4240: 'cilium-health', 8080: 'http-alt', 8472: 'otv' };
function port(p: number): string {
  const n = PORT_NAMES[p];
  return n ? `${p}(${n})` : String(p);
}

function bytes(n: number): string {
  return n === 0 ? '[]' : `[..${n}..]`;
}

function ipv4FlagsText(f: number): string {
  const parts: string[] = [];
  if (f & 0x4) parts.push('EvilBit');
  if (f & 0x2) parts.push('DF');
  if (f & 0x1) parts.push('MF');
  return parts.join('|');
}

/** The `monitor -vv` dissection: one line per layer in gopacket's LayerString notation. */
export function layerLines(data: Uint8Array): string[] {
  const d = dissect(data);
  const out: string[] = [];
  const total = data.byteLength;
  if (d.ethernet) {
    const e = d.ethernet;
    out.push(`Ethernet\t{Contents=${bytes(14)} Payload=${bytes(total - 14)} SrcMAC=${e.src} DstMAC=${e.dst} EthernetType=${etherTypeName(e.ethertype)} Length=0}`);
  }
  if (d.arp) {
    const a = d.arp;
    out.push(
      `ARP\t{Contents=${bytes(28)} Payload=[] AddrType=${a.hwType === 1 ? 'Ethernet' : a.hwType} Protocol=${etherTypeName(a.protoType)} HwAddressSize=${a.hwSize} ` +
        `ProtAddressSize=${a.protoSize} Operation=${a.op} SourceHwAddress=${a.senderMac} SourceProtAddress=${a.senderIp} DstHwAddress=${a.targetMac} DstProtAddress=${a.targetIp}}`,
    );
  }
  if (d.ipv4) {
    const ip = d.ipv4;
    const hdr = Math.max(20, ip.ihl * 4);
    out.push(
      `IPv4\t{Contents=${bytes(hdr)} Payload=${bytes(ip.payloadCaptured)} Version=${ip.version} IHL=${ip.ihl} TOS=${ip.tos} Length=${ip.totalLength} Id=${ip.id} ` +
        `Flags=${ipv4FlagsText(ip.flags)} FragOffset=${ip.fragOffset} TTL=${ip.ttl} Protocol=${ipProtoName(ip.proto)} Checksum=${ip.checksum} SrcIP=${ip.src} DstIP=${ip.dst} Options=[] Padding=[]}`,
    );
  }
  if (d.tcp) {
    const t = d.tcp;
    const f = (k: keyof TCPFlags): string => `${k}=${t.flags[k] === true}`;
    out.push(
      `TCP\t{Contents=${bytes(t.headerLen)} Payload=${bytes(t.payloadCaptured)} SrcPort=${port(t.srcPort)} DstPort=${port(t.dstPort)} Seq=${t.seq} Ack=${t.ack} ` +
        `DataOffset=${t.dataOffset} ${['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].map((k) => f(k as keyof TCPFlags)).join(' ')} ` +
        `Window=${t.window} Checksum=${t.checksum} Urgent=${t.urgent} Options=[${t.options.join(', ')}] Padding=[]}`,
    );
  }
  if (d.udp) {
    const u = d.udp;
    out.push(`UDP\t{Contents=${bytes(8)} Payload=${bytes(u.payloadCaptured)} SrcPort=${port(u.srcPort)} DstPort=${port(u.dstPort)} Length=${u.length} Checksum=${u.checksum}}`);
  }
  if (d.icmpv4) {
    const i = d.icmpv4;
    out.push(`ICMPv4\t{Contents=${bytes(8)} Payload=${bytes(i.payloadCaptured)} TypeCode=${icmpv4TypeCode(i.type, i.code)} Checksum=${i.checksum} Id=${i.id} Seq=${i.seq}}`);
  }
  if (d.truncated) out.push('(packet truncated in capture)');
  return out;
}
