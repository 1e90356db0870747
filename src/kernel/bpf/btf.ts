// Pure-TS parser of BTF (.BTF section): types, struct layouts, DATASEC variables, with libbpf's ELF fixups.
import { KernelError } from '../errors.js';
import { ElfFile, STT_OBJECT, cstring } from './elf.js';

const BTF_MAGIC = 0xeb9f;

export type BtfKind =
  | 'void'
  | 'int'
  | 'ptr'
  | 'array'
  | 'struct'
  | 'union'
  | 'enum'
  | 'fwd'
  | 'typedef'
  | 'volatile'
  | 'const'
  | 'restrict'
  | 'func'
  | 'func_proto'
  | 'var'
  | 'datasec'
  | 'float'
  | 'decl_tag'
  | 'type_tag'
  | 'enum64';

const KINDS: readonly BtfKind[] = [
  'void',
  'int',
  'ptr',
  'array',
  'struct',
  'union',
  'enum',
  'fwd',
  'typedef',
  'volatile',
  'const',
  'restrict',
  'func',
  'func_proto',
  'var',
  'datasec',
  'float',
  'decl_tag',
  'type_tag',
  'enum64',
];

export interface BtfMember {
  name: string;
  type: number;
  /** Offset in bits from the start of the struct. */
  bitOffset: number;
  /** Bitfield width in bits, 0 for ordinary members. */
  bitSize: number;
}

export interface BtfVarInfo {
  type: number;
  offset: number;
  size: number;
}

/** One BTF type. `size` is set for int/struct/union/enum/float/datasec, `type` for references. */
export interface BtfType {
  id: number;
  kind: BtfKind;
  name: string;
  kindFlag: boolean;
  vlen: number;
  size?: number;
  type?: number;
  /** int: width in bits; enc bit 0 = signed. */
  intBits?: number;
  intOffset?: number;
  intEncoding?: number;
  /** array */
  elemType?: number;
  nelems?: number;
  members?: BtfMember[];
  /** func_proto parameters */
  params?: { name: string; type: number }[];
  enumValues?: { name: string; value: bigint }[];
  /** var linkage, func linkage */
  linkage?: number;
  /** datasec entries */
  vars?: BtfVarInfo[];
  /** decl_tag component index */
  componentIdx?: number;
}

export interface StructLayout {
  name: string;
  size: number;
  members: { name: string; offset: number; size: number; bitOffset?: number; bitSize?: number }[];
}

export interface DatasecVar {
  name: string;
  offset: number;
  size: number;
}

/** What the ELF object knows that clang leaves out of .BTF (section sizes, variable offsets). */
export interface BtfFixupSource {
  sectionSize(name: string): number | undefined;
  symbolOffset(section: string, name: string): number | undefined;
}

export class Btf {
  /** Index = type id; id 0 is void. */
  readonly types: readonly BtfType[];
  private readonly byName = new Map<string, BtfType[]>();

  private constructor(types: BtfType[]) {
    this.types = types;
    for (const t of types) {
      if (t.name === '') continue;
      const list = this.byName.get(t.name);
      if (list) list.push(t);
      else this.byName.set(t.name, [t]);
    }
  }

  /** The .BTF of an object file, DATASEC sizes and variable offsets filled in from the ELF as libbpf does. */
  static fromElf(elf: ElfFile): Btf {
    const data = elf.sectionData('.BTF');
    if (data === undefined) {
      throw new KernelError('TENDRIL_ERR_ELF', `Cannot read BTF of "${elf.path}": no .BTF section (compile with -g)`);
    }
    const symbols = elf.symbols();
    return Btf.parse(data, {
      sectionSize: (name) => elf.section(name)?.size,
      symbolOffset: (section, name) => {
        const sec = elf.section(section);
        if (sec === undefined) return undefined;
        const sym = symbols.find((s) => s.name === name && s.sectionIndex === sec.index && s.type === STT_OBJECT);
        return sym?.value;
      },
    });
  }

  static fromFile(path: string): Btf {
    return Btf.fromElf(ElfFile.open(path));
  }

  /** Parses raw BTF bytes; `fixup` supplies what clang leaves as zero in DATASECs of object files. */
  static parse(buf: Buffer, fixup?: BtfFixupSource): Btf {
    const fail = (why: string): never => {
      throw new KernelError('TENDRIL_ERR_ELF', `Cannot parse BTF: ${why}`);
    };
    if (buf.length < 24 || buf.readUInt16LE(0) !== BTF_MAGIC) fail('bad magic (not little-endian BTF)');
    const hdrLen = buf.readUInt32LE(4);
    const typeOff = buf.readUInt32LE(8);
    const typeLen = buf.readUInt32LE(12);
    const strOff = buf.readUInt32LE(16);
    const strLen = buf.readUInt32LE(20);
    if (hdrLen + typeOff + typeLen > buf.length || hdrLen + strOff + strLen > buf.length) fail('sections out of range');
    const td = buf.subarray(hdrLen + typeOff, hdrLen + typeOff + typeLen);
    const sd = buf.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    const str = (off: number): string => cstring(sd, off, () => fail(`string offset ${off} out of range`));

    const types: BtfType[] = [{ id: 0, kind: 'void', name: '', kindFlag: false, vlen: 0, size: 0 }];
    let o = 0;
    const need = (n: number): void => {
      if (o + n > td.length) fail(`type ${types.length} is truncated`);
    };
    while (o < td.length) {
      need(12);
      const nameOff = td.readUInt32LE(o);
      const info = td.readUInt32LE(o + 4);
      const sizeOrType = td.readUInt32LE(o + 8);
      o += 12;
      const kindNo = (info >>> 24) & 0x1f;
      const kind = KINDS[kindNo];
      if (kind === undefined || kind === 'void') fail(`type ${types.length} has unknown kind ${kindNo}`);
      const t: BtfType = {
        id: types.length,
        kind: kind as BtfKind,
        name: str(nameOff),
        kindFlag: (info >>> 31) === 1,
        vlen: info & 0xffff,
      };
      switch (t.kind) {
        case 'int': {
          need(4);
          const v = td.readUInt32LE(o);
          o += 4;
          t.size = sizeOrType;
          t.intEncoding = (v >>> 24) & 0x0f;
          t.intOffset = (v >>> 16) & 0xff;
          t.intBits = v & 0xff;
          break;
        }
        case 'ptr':
        case 'fwd':
        case 'typedef':
        case 'volatile':
        case 'const':
        case 'restrict':
        case 'type_tag':
          t.type = sizeOrType;
          break;
        case 'func':
          t.type = sizeOrType;
          t.linkage = t.vlen;
          break;
        case 'float':
          t.size = sizeOrType;
          break;
        case 'array':
          need(12);
          t.elemType = td.readUInt32LE(o);
          t.nelems = td.readUInt32LE(o + 8);
          o += 12;
          break;
        case 'struct':
        case 'union': {
          t.size = sizeOrType;
          need(12 * t.vlen);
          t.members = [];
          for (let i = 0; i < t.vlen; i++, o += 12) {
            const off = td.readUInt32LE(o + 8);
            t.members.push({
              name: str(td.readUInt32LE(o)),
              type: td.readUInt32LE(o + 4),
              // With kind_flag the high 8 bits carry the bitfield size.
              bitOffset: t.kindFlag ? off & 0xffffff : off,
              bitSize: t.kindFlag ? off >>> 24 : 0,
            });
          }
          break;
        }
        case 'enum': {
          t.size = sizeOrType;
          need(8 * t.vlen);
          t.enumValues = [];
          for (let i = 0; i < t.vlen; i++, o += 8) {
            const value = t.kindFlag ? BigInt(td.readInt32LE(o + 4)) : BigInt(td.readUInt32LE(o + 4));
            t.enumValues.push({ name: str(td.readUInt32LE(o)), value });
          }
          break;
        }
        case 'enum64': {
          t.size = sizeOrType;
          need(12 * t.vlen);
          t.enumValues = [];
          for (let i = 0; i < t.vlen; i++, o += 12) {
            const raw = (BigInt(td.readUInt32LE(o + 8)) << 32n) | BigInt(td.readUInt32LE(o + 4));
            t.enumValues.push({ name: str(td.readUInt32LE(o)), value: t.kindFlag ? BigInt.asIntN(64, raw) : raw });
          }
          break;
        }
        case 'func_proto':
          t.type = sizeOrType;
          need(8 * t.vlen);
          t.params = [];
          for (let i = 0; i < t.vlen; i++, o += 8) {
            t.params.push({ name: str(td.readUInt32LE(o)), type: td.readUInt32LE(o + 4) });
          }
          break;
        case 'var':
          t.type = sizeOrType;
          need(4);
          t.linkage = td.readUInt32LE(o);
          o += 4;
          break;
        case 'datasec':
          t.size = sizeOrType;
          need(12 * t.vlen);
          t.vars = [];
          for (let i = 0; i < t.vlen; i++, o += 12) {
            t.vars.push({ type: td.readUInt32LE(o), offset: td.readUInt32LE(o + 4), size: td.readUInt32LE(o + 8) });
          }
          break;
        case 'decl_tag':
          t.type = sizeOrType;
          need(4);
          t.componentIdx = td.readInt32LE(o);
          o += 4;
          break;
      }
      types.push(t);
    }

    if (fixup) {
      // Clang leaves DATASEC sizes and VAR offsets zero in .o files; libbpf fills them from the ELF
      // (btf_fixup_datasec) and so do we, or every .rodata variable would sit at offset 0.
      for (const t of types) {
        if (t.kind !== 'datasec' || t.size !== 0) continue;
        const secSize = fixup.sectionSize(t.name);
        if (secSize === undefined) continue; // extern sections (.kconfig, .ksyms) have no ELF section
        t.size = secSize;
        for (const v of t.vars ?? []) {
          const varName = types[v.type]?.name ?? '';
          const off = fixup.symbolOffset(t.name, varName);
          if (off !== undefined) v.offset = off;
        }
      }
    }
    return new Btf(types);
  }

  type(id: number): BtfType {
    const t = this.types[id];
    if (t === undefined) throw new KernelError('TENDRIL_ERR_ELF', `Cannot find BTF type id ${id}`);
    return t;
  }

  /** First type called `name` (of `kind`, when given). */
  find(name: string, kind?: BtfKind): BtfType | undefined {
    return this.byName.get(name)?.find((t) => kind === undefined || t.kind === kind);
  }

  /** Follows typedefs and qualifiers to the underlying type. */
  resolve(id: number): BtfType {
    let t = this.type(id);
    for (let hops = 0; hops < 64; hops++) {
      if (!['typedef', 'volatile', 'const', 'restrict', 'type_tag'].includes(t.kind)) return t;
      t = this.type(t.type ?? 0);
    }
    throw new KernelError('TENDRIL_ERR_ELF', `Cannot resolve BTF type id ${id}: reference chain too long`);
  }

  /** Size in bytes of a type (as sizeof in C; pointers are 8 bytes). */
  sizeof(id: number): number {
    const t = this.resolve(id);
    switch (t.kind) {
      case 'int':
      case 'struct':
      case 'union':
      case 'enum':
      case 'enum64':
      case 'float':
      case 'datasec':
        return t.size ?? 0;
      case 'ptr':
        return 8;
      case 'array':
        return this.sizeof(t.elemType ?? 0) * (t.nelems ?? 0);
      case 'var':
        return this.sizeof(t.type ?? 0);
      default:
        throw new KernelError('TENDRIL_ERR_ELF', `Cannot size BTF type ${id} of kind ${t.kind}`);
    }
  }

  /**
   * Layout of `struct name` (or a union): byte offset and size of each member. Members of anonymous
   * nested structs/unions are flattened into the parent (as C lets you name them), at their absolute offset.
   */
  struct(name: string): StructLayout {
    const t = this.find(name, 'struct') ?? this.find(name, 'union');
    if (t === undefined) throw new KernelError('TENDRIL_ERR_ELF', `Cannot find struct "${name}" in BTF`);
    return { name, size: t.size ?? 0, members: this.flatten(t, 0) };
  }

  private flatten(t: BtfType, baseBits: number): StructLayout['members'] {
    const out: StructLayout['members'] = [];
    for (const m of t.members ?? []) {
      const bits = baseBits + m.bitOffset;
      const mt = this.resolve(m.type);
      if (m.name === '' && (mt.kind === 'struct' || mt.kind === 'union')) {
        out.push(...this.flatten(mt, bits));
        continue;
      }
      // Old-style bitfields are encoded in the int type instead of the member.
      const bitSize = m.bitSize || (mt.kind === 'int' && (mt.intBits ?? 0) !== (mt.size ?? 0) * 8 ? (mt.intBits ?? 0) : 0);
      const entry: StructLayout['members'][number] = { name: m.name, offset: Math.floor(bits / 8), size: this.sizeof(m.type) };
      if (bitSize !== 0 || bits % 8 !== 0) {
        entry.bitOffset = bits;
        entry.bitSize = bitSize;
      }
      out.push(entry);
    }
    return out;
  }

  /** Variables of a data section (".rodata", ".data", ".bss", ".maps", ...), in offset order. */
  datasecVars(section: string): DatasecVar[] {
    const sec = this.find(section, 'datasec');
    if (sec === undefined) throw new KernelError('TENDRIL_ERR_ELF', `Cannot find data section "${section}" in BTF`);
    return (sec.vars ?? [])
      .map((v) => ({ name: this.type(v.type).name, offset: v.offset, size: v.size }))
      .sort((a, b) => a.offset - b.offset);
  }

  /** True when a DATASEC called `section` exists. */
  hasDatasec(section: string): boolean {
    return this.find(section, 'datasec') !== undefined;
  }
}
