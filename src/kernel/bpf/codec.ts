// Fixed-size binary codecs for BPF map keys and values (host order = little endian on our targets).

/** Turns a T into exactly `size` bytes and back. */
export interface Codec<T> {
  readonly size: number;
  encode(value: T): Buffer;
  decode(buf: Buffer): T;
  /**
   * Writes/reads in place at `offset` (the fast path struct codecs use: no buffer per field; a policy change on
   * 1,000 endpoints encodes thousands of keys).
   */
  encodeInto?(value: T, buf: Buffer, offset: number): void;
  decodeAt?(buf: Buffer, offset: number): T;
}

/** A field of a struct codec: where it sits and how it is encoded. */
export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
}

/** A codec for a C struct; `layout` lets a test compare it with the struct's BTF. */
export interface StructCodec<T> extends Codec<T> {
  readonly layout: readonly FieldLayout[];
}

function checkLength(buf: Buffer, size: number, what: string): void {
  if (buf.length < size) {
    throw new RangeError(`Cannot decode ${what}: need ${size} bytes, got ${buf.length}`);
  }
}

function checkInt(value: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`Cannot encode ${what}: ${String(value)} is not an integer in [${min}, ${max}]`);
  }
}

function intCodec(
  what: string,
  size: number,
  min: number,
  max: number,
  write: (b: Buffer, v: number, offset: number) => void,
  read: (b: Buffer, offset: number) => number,
): Codec<number> {
  return {
    size,
    encode(value: number): Buffer {
      checkInt(value, min, max, what);
      const b = Buffer.alloc(size);
      write(b, value, 0);
      return b;
    },
    decode(buf: Buffer): number {
      checkLength(buf, size, what);
      return read(buf, 0);
    },
    encodeInto(value: number, buf: Buffer, offset: number): void {
      checkInt(value, min, max, what);
      write(buf, value, offset);
    },
    decodeAt(buf: Buffer, offset: number): number {
      return read(buf, offset);
    },
  };
}

export const u8: Codec<number> = intCodec('u8', 1, 0, 0xff, (b, v, o) => b.writeUInt8(v, o), (b, o) => b.readUInt8(o));
export const u16: Codec<number> = intCodec('u16', 2, 0, 0xffff, (b, v, o) => b.writeUInt16LE(v, o), (b, o) => b.readUInt16LE(o));
export const u32: Codec<number> = intCodec(
  'u32',
  4,
  0,
  0xffffffff,
  (b, v, o) => b.writeUInt32LE(v, o),
  (b, o) => b.readUInt32LE(o),
);
export const i32: Codec<number> = intCodec(
  'i32',
  4,
  -0x80000000,
  0x7fffffff,
  (b, v, o) => b.writeInt32LE(v, o),
  (b, o) => b.readInt32LE(o),
);
/** A 16-bit number stored in network byte order (ports, ethertypes). */
export const be16: Codec<number> = intCodec(
  'be16',
  2,
  0,
  0xffff,
  (b, v, o) => b.writeUInt16BE(v, o),
  (b, o) => b.readUInt16BE(o),
);
/** A 32-bit number stored in network byte order (IPv4 addresses as parseIPv4() returns them). */
export const be32: Codec<number> = intCodec(
  'be32',
  4,
  0,
  0xffffffff,
  (b, v, o) => b.writeUInt32BE(v, o),
  (b, o) => b.readUInt32BE(o),
);

function checkU64(value: bigint): void {
  if (value < 0n || value > 0xffffffffffffffffn) {
    throw new RangeError(`Cannot encode u64: ${value} is out of range`);
  }
}

export const u64: Codec<bigint> = {
  size: 8,
  encode(value: bigint): Buffer {
    checkU64(value);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    return b;
  },
  decode(buf: Buffer): bigint {
    checkLength(buf, 8, 'u64');
    return buf.readBigUInt64LE(0);
  },
  encodeInto(value: bigint, buf: Buffer, offset: number): void {
    checkU64(value);
    buf.writeBigUInt64LE(value, offset);
  },
  decodeAt(buf: Buffer, offset: number): bigint {
    return buf.readBigUInt64LE(offset);
  },
};

/** Raw bytes of a fixed length (MAC addresses, opaque blobs); decode copies. */
export function bytes(size: number): Codec<Buffer> {
  return {
    size,
    encode(value: Buffer): Buffer {
      if (value.length !== size) {
        throw new RangeError(`Cannot encode bytes(${size}): got ${value.length} bytes`);
      }
      return Buffer.from(value);
    },
    decode(buf: Buffer): Buffer {
      checkLength(buf, size, `bytes(${size})`);
      return Buffer.from(buf.subarray(0, size));
    },
  };
}

/** Fixed-length array of `count` elements of `elem`, packed back to back (as a C array). */
export function array<T>(elem: Codec<T>, count: number): Codec<T[]> {
  const size = elem.size * count;
  return {
    size,
    encode(value: T[]): Buffer {
      if (value.length !== count) {
        throw new RangeError(`Cannot encode array of ${count}: got ${value.length} elements`);
      }
      return Buffer.concat(value.map((v) => elem.encode(v)), size);
    },
    decode(buf: Buffer): T[] {
      checkLength(buf, size, `array of ${count}`);
      const out: T[] = [];
      for (let i = 0; i < count; i++) out.push(elem.decode(buf.subarray(i * elem.size, (i + 1) * elem.size)));
      return out;
    },
  };
}

/** Field list of a struct codec: each property of T at an explicit byte offset (the C layout, padding included). */
export type StructFields<T> = { [K in keyof T]-?: readonly [offset: number, codec: Codec<T[K]>] };

/**
 * A codec for a C struct of `size` bytes. Offsets are explicit rather than computed so the TS side states the
 * C layout it expects; a BTF test then proves both agree. Padding is encoded as zeros (the kernel hashes keys
 * byte-wise, so garbage in padding would make equal keys differ).
 */
export function structCodec<T extends object>(size: number, fields: StructFields<T>): StructCodec<T> {
  const entries = (Object.keys(fields) as (keyof T & string)[]).map((name) => {
    const [offset, codec] = fields[name];
    return { name, offset, codec };
  });
  const taken = new Uint8Array(size);
  for (const { name, offset, codec } of entries) {
    if (!Number.isInteger(offset) || offset < 0 || offset + codec.size > size) {
      throw new RangeError(`Invalid struct field "${name}": [${offset}, ${offset + codec.size}) is outside ${size} bytes`);
    }
    for (let i = offset; i < offset + codec.size; i++) {
      if (taken[i]) throw new RangeError(`Invalid struct field "${name}": overlaps another field at byte ${i}`);
      taken[i] = 1;
    }
  }
  const layout = entries.map(({ name, offset, codec }) => ({ name, offset, size: codec.size }));
  return {
    size,
    layout,
    encode(value: T): Buffer {
      const b = Buffer.alloc(size);
      for (const { name, offset, codec } of entries) {
        if (codec.encodeInto) codec.encodeInto(value[name], b, offset);
        else codec.encode(value[name]).copy(b, offset);
      }
      return b;
    },
    decode(buf: Buffer): T {
      checkLength(buf, size, `struct of ${size} bytes`);
      const out: Partial<T> = {};
      for (const { name, offset, codec } of entries) {
        out[name] = codec.decodeAt ? codec.decodeAt(buf, offset) : codec.decode(buf.subarray(offset, offset + codec.size));
      }
      return out as T;
    },
  };
}
