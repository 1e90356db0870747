// Crafted IPv4 frames for BPF_PROG_TEST_RUN tests, with correct checksums, and readers that verify them.
import { parseIPv4, parseMac } from '../util/ip.js';

export const ETH_P_IP = 0x0800;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** One's-complement checksum of `buf` (added to `initial`, a partial sum). */
export function csum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoSum(src: string, dst: string, proto: number, len: number): number {
  const p = Buffer.alloc(12);
  p.writeUInt32BE(parseIPv4(src), 0);
  p.writeUInt32BE(parseIPv4(dst), 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  return 0xffff & ~csum(p);
}

export function ipv4(src: string, dst: string, proto: number, payload: Buffer, id = 0x1234): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = proto;
  h.writeUInt32BE(parseIPv4(src), 12);
  h.writeUInt32BE(parseIPv4(dst), 16);
  h.writeUInt16BE(csum(h), 10);
  return Buffer.concat([h, payload]);
}

/** TCP (flags) or UDP segment from src:sport to dst:dport with its checksum over the pseudo header. */
export function l4(proto: 6 | 17, src: string, dst: string, sport: number, dport: number, data: Buffer, flags = 0x02): Buffer {
  const hl = proto === IPPROTO_TCP ? 20 : 8;
  const h = Buffer.alloc(hl);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  if (proto === IPPROTO_TCP) {
    h[12] = 5 << 4;
    h[13] = flags;
    h.writeUInt16BE(65535, 14);
  } else {
    h.writeUInt16BE(8 + data.length, 4);
  }
  const seg = Buffer.concat([h, data]);
  const off = proto === IPPROTO_TCP ? 16 : 6;
  seg.writeUInt16BE(csum(seg, pseudoSum(src, dst, proto, seg.length)), off);
  return seg;
}

export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b[0] = type;
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  const msg = Buffer.concat([b, data]);
  msg.writeUInt16BE(csum(msg), 2);
  return msg;
}

/** ICMP error (type/code) quoting `quoted` (an IPv4 packet: its header and first bytes). */
export function icmpError(type: number, code: number, quoted: Buffer, mtu = 0): Buffer {
  const h = Buffer.alloc(8);
  h[0] = type;
  h[1] = code;
  if (mtu) h.writeUInt16BE(mtu, 6);
  const msg = Buffer.concat([h, quoted]);
  msg.writeUInt16BE(csum(msg), 2);
  return msg;
}

export function ethernet(dst: string, src: string, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  parseMac(dst).copy(h, 0);
  parseMac(src).copy(h, 6);
  h.writeUInt16BE(ETH_P_IP, 12);
  return Buffer.concat([h, payload]);
}

const ip = (b: Buffer, off: number): string => [...b.subarray(off, off + 4)].join('.');

/** The IPv4 packet of an Ethernet frame, parsed; checks say whether each checksum verifies. */
export interface Parsed {
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  /** ICMP: type, and the echo identifier. */
  icmpType: number;
  icmpId: number;
  ipCsumOk: boolean;
  l4CsumOk: boolean;
  /** ICMP error: the quoted packet (its IPv4 header checksum checked; ports/identifier of the 8 bytes). */
  inner?: { src: string; dst: string; proto: number; sport: number; dport: number; icmpId: number; ipCsumOk: boolean; l4Csum: number };
}

export function parse(frame: Buffer): Parsed {
  const p = frame.subarray(14);
  const ihl = (p[0]! & 15) * 4;
  const tot = p.readUInt16BE(2);
  const seg = p.subarray(ihl, tot);
  const proto = p[9]!;
  const src = ip(p, 12);
  const dst = ip(p, 16);
  const out: Parsed = {
    src,
    dst,
    proto,
    sport: 0,
    dport: 0,
    icmpType: -1,
    icmpId: 0,
    ipCsumOk: csum(p.subarray(0, ihl)) === 0,
    l4CsumOk: false,
  };
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    out.sport = seg.readUInt16BE(0);
    out.dport = seg.readUInt16BE(2);
    out.l4CsumOk = csum(seg, pseudoSum(src, dst, proto, seg.length)) === 0;
  } else if (proto === IPPROTO_ICMP) {
    out.icmpType = seg[0]!;
    out.icmpId = seg.readUInt16BE(4);
    out.l4CsumOk = csum(seg) === 0;
    if (seg[0] === 3 || seg[0] === 11) {
      const q = seg.subarray(8);
      const qihl = (q[0]! & 15) * 4;
      const ql4 = q.subarray(qihl);
      const qproto = q[9]!;
      out.inner = {
        src: ip(q, 12),
        dst: ip(q, 16),
        proto: qproto,
        sport: ql4.readUInt16BE(0),
        dport: ql4.readUInt16BE(2),
        icmpId: ql4.readUInt16BE(4),
        ipCsumOk: csum(q.subarray(0, qihl)) === 0,
        l4Csum: qproto === IPPROTO_UDP ? ql4.readUInt16BE(6) : qproto === IPPROTO_ICMP ? ql4.readUInt16BE(2) : 0,
      };
    }
  }
  return out;
}
