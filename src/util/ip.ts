// IPv4 address and CIDR helpers shared by IPAM, CNI and the lab (pure, no I/O).

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  readonly base: number;
  readonly bits: number;
}

export function parseIPv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4) throw new TypeError(`Invalid IPv4 address "${text}": expected four dotted numbers`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) {
      throw new TypeError(`Invalid IPv4 address "${text}": "${p}" is not a number 0-255`);
    }
    n = n * 256 + Number(p);
  }
  return n >>> 0;
}

export function isIPv4(text: string): boolean {
  try {
    parseIPv4(text);
    return true;
  } catch {
    return false;
  }
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function parseCidr(text: string): Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!m) throw new TypeError(`Invalid CIDR "${text}": expected ADDRESS/BITS`);
  const bits = Number(m[2]);
  if (bits > 32) throw new TypeError(`Invalid CIDR "${text}": prefix length ${bits} is above 32`);
  const addr = parseIPv4(m[1]!);
  const base = (addr & maskOf(bits)) >>> 0;
  return { base, bits };
}

export function formatCidr(c: Cidr): string {
  return `${formatIPv4(c.base)}/${c.bits}`;
}

export function maskOf(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.bits);
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ((ip & maskOf(c.bits)) >>> 0) === c.base;
}

/** The index-th subnet of size `bits` inside `c` (e.g. the 3rd /24 of a /16). */
export function subnet(c: Cidr, bits: number, index: number): Cidr {
  if (bits < c.bits) throw new RangeError(`Cannot carve /${bits} out of ${formatCidr(c)}`);
  const count = 2 ** (bits - c.bits);
  if (index < 0 || index >= count) {
    throw new RangeError(`${formatCidr(c)} has ${count} /${bits} subnets; index ${index} is out of range`);
  }
  return { base: (c.base + index * 2 ** (32 - bits)) >>> 0, bits };
}

/** MAC text "aa:bb:cc:dd:ee:ff" <-> 6-byte buffer. */
export function parseMac(text: string): Buffer {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new TypeError(`Invalid MAC address "${text}"`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(buf: Uint8Array): string {
  return Array.from(buf.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return formatMac(b);
}
