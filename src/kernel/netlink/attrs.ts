// Netlink attributes (struct nlattr / rtattr): encoding to padded byte chunks and parsing into a lookup set.
// Netlink is host byte order; we run on little-endian hosts only (x86_64, arm64), so LE is used throughout.
import os from 'node:os';
import { parseIPv4, parseMac, formatIPv4, formatMac } from '../../util/ip.js';
import { NLA_TYPE_MASK } from './constants.js';

if (os.endianness() !== 'LE') throw new Error('Tendril netlink codec supports little-endian hosts only');

export const ATTR_HDRLEN = 4;

/** Netlink alignment: everything is padded to 4 bytes. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** One encoded attribute: header, payload and padding (rta_len excludes the padding, as iproute2 does). */
export function attr(type: number, payload: Uint8Array): Buffer {
  const len = ATTR_HDRLEN + payload.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  buf.set(payload, ATTR_HDRLEN);
  return buf;
}

export function attrU8(type: number, v: number): Buffer {
  return attr(type, Uint8Array.of(v));
}

export function attrU16(type: number, v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return attr(type, b);
}

/** A 16-bit value in network byte order (e.g. a UDP port). */
export function attrBe16(type: number, v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return attr(type, b);
}

export function attrU32(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return attr(type, b);
}

export function attrS32(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return attr(type, b);
}

/** NUL-terminated string, as the kernel expects for names and kinds. */
export function attrStr(type: number, v: string): Buffer {
  return attr(type, Buffer.from(`${v}\0`, 'utf8'));
}

/** String without the NUL, as iproute2 sends IFLA_INFO_KIND (the kernel accepts both forms). */
export function attrStrNoNul(type: number, v: string): Buffer {
  return attr(type, Buffer.from(v, 'utf8'));
}

export function attrIPv4(type: number, ip: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return attr(type, b);
}

export function attrMac(type: number, mac: string): Buffer {
  return attr(type, parseMac(mac));
}

/** Nested attribute. No NLA_F_NESTED flag, like iproute2: some legacy policies (VETH_INFO_PEER) reject it. */
export function attrNested(type: number, ...children: Buffer[]): Buffer {
  return attr(type, Buffer.concat(children));
}

/** Attributes of one message or nest, looked up by type (flags masked off). */
export class Attrs {
  readonly list: ReadonlyArray<{ readonly type: number; readonly data: Buffer }>;

  constructor(list: Array<{ type: number; data: Buffer }>) {
    this.list = list;
  }

  /** Parses the attributes in buf[offset, end); a truncated trailing attribute is an error. */
  static parse(buf: Buffer, offset = 0, end = buf.length): Attrs {
    const list: Array<{ type: number; data: Buffer }> = [];
    let off = offset;
    while (off + ATTR_HDRLEN <= end) {
      const len = buf.readUInt16LE(off);
      const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
      if (len < ATTR_HDRLEN || off + len > end) {
        throw new RangeError(`Malformed netlink attribute at offset ${off}: length ${len} exceeds ${end - off} bytes`);
      }
      list.push({ type, data: buf.subarray(off + ATTR_HDRLEN, off + len) });
      off += align4(len);
    }
    return new Attrs(list);
  }

  get(type: number): Buffer | undefined {
    return this.list.find((a) => a.type === type)?.data;
  }

  has(type: number): boolean {
    return this.get(type) !== undefined;
  }

  u8(type: number): number | undefined {
    const d = this.get(type);
    return d && d.length >= 1 ? d.readUInt8(0) : undefined;
  }

  u16(type: number): number | undefined {
    const d = this.get(type);
    return d && d.length >= 2 ? d.readUInt16LE(0) : undefined;
  }

  be16(type: number): number | undefined {
    const d = this.get(type);
    return d && d.length >= 2 ? d.readUInt16BE(0) : undefined;
  }

  u32(type: number): number | undefined {
    const d = this.get(type);
    return d && d.length >= 4 ? d.readUInt32LE(0) : undefined;
  }

  s32(type: number): number | undefined {
    const d = this.get(type);
    return d && d.length >= 4 ? d.readInt32LE(0) : undefined;
  }

  /** String attribute without its trailing NUL. */
  str(type: number): string | undefined {
    const d = this.get(type);
    if (!d) return undefined;
    const nul = d.indexOf(0);
    return d.toString('utf8', 0, nul === -1 ? d.length : nul);
  }

  ipv4(type: number): string | undefined {
    const d = this.get(type);
    return d && d.length === 4 ? formatIPv4(d.readUInt32BE(0)) : undefined;
  }

  /** Hardware address as colon hex ("aa:bb:..."), whatever its length. */
  mac(type: number): string | undefined {
    const d = this.get(type);
    if (!d) return undefined;
    return d.length === 6 ? formatMac(d) : Array.from(d, (b) => b.toString(16).padStart(2, '0')).join(':');
  }

  nested(type: number): Attrs | undefined {
    const d = this.get(type);
    return d ? Attrs.parse(d) : undefined;
  }
}
