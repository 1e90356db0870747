// Pure-TS reader of ELF64 little-endian objects (what clang -target bpf emits): sections and symbols.
import fs from 'node:fs';
import { KernelError } from '../errors.js';

export const SHT_PROGBITS = 1;
export const SHT_SYMTAB = 2;
export const SHT_NOBITS = 8;
export const SHF_WRITE = 0x1;
export const SHF_ALLOC = 0x2;
export const SHF_EXECINSTR = 0x4;
export const STT_OBJECT = 1;
export const STT_FUNC = 2;
export const STB_LOCAL = 0;
export const STB_GLOBAL = 1;
export const STB_WEAK = 2;

const EM_BPF = 247;
const SHDR_SIZE = 64;
const SYM_SIZE = 24;

export interface ElfSection {
  index: number;
  name: string;
  type: number;
  flags: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
}

export interface ElfSymbol {
  name: string;
  value: number;
  size: number;
  /** STT_* */
  type: number;
  /** STB_* */
  bind: number;
  /** Index of the section the symbol is defined in (0 = undefined, >= 0xff00 = special). */
  sectionIndex: number;
}

export class ElfFile {
  readonly path: string;
  readonly sections: readonly ElfSection[];
  readonly machine: number;
  private readonly buf: Buffer;
  private symbolCache: ElfSymbol[] | undefined;

  private constructor(buf: Buffer, path: string) {
    this.buf = buf;
    this.path = path;
    if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) this.fail('not an ELF file');
    if (buf[4] !== 2) this.fail('not a 64-bit ELF file');
    // BPF objects can be big-endian (-target bpfeb); we only load objects for the host, which is little endian.
    if (buf[5] !== 1) this.fail('not a little-endian ELF file');
    this.machine = buf.readUInt16LE(18);
    const shoff = this.num(buf.readBigUInt64LE(0x28));
    const shentsize = buf.readUInt16LE(0x3a);
    let shnum = buf.readUInt16LE(0x3c);
    let shstrndx = buf.readUInt16LE(0x3e);
    if (shentsize !== SHDR_SIZE) this.fail(`unexpected section header size ${shentsize}`);
    if (shoff + SHDR_SIZE > buf.length) this.fail('section headers are outside the file');
    // Extended numbering: real counts live in section header 0.
    if (shnum === 0) shnum = buf.readUInt32LE(shoff + 32);
    if (shstrndx === 0xffff) shstrndx = buf.readUInt32LE(shoff + 40);
    if (shoff + shnum * SHDR_SIZE > buf.length) this.fail('section headers are outside the file');

    const raw: ElfSection[] = [];
    const nameOffsets: number[] = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * SHDR_SIZE;
      raw.push({
        index: i,
        name: '',
        type: buf.readUInt32LE(o + 4),
        flags: this.num(buf.readBigUInt64LE(o + 8)),
        offset: this.num(buf.readBigUInt64LE(o + 24)),
        size: this.num(buf.readBigUInt64LE(o + 32)),
        link: buf.readUInt32LE(o + 40),
        info: buf.readUInt32LE(o + 44),
        entsize: this.num(buf.readBigUInt64LE(o + 56)),
      });
      nameOffsets.push(buf.readUInt32LE(o));
    }
    const strtab = raw[shstrndx];
    if (strtab === undefined) this.fail(`section name table index ${shstrndx} is out of range`);
    const strData = this.contents(strtab);
    for (const s of raw) s.name = cstring(strData, nameOffsets[s.index] ?? 0, () => this.fail('bad section name offset'));
    this.sections = raw;
  }

  /** Reads and parses an object file. */
  static open(path: string): ElfFile {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(path);
    } catch (err) {
      throw new KernelError('TENDRIL_ERR_ELF', `Cannot read ELF file "${path}": ${(err as Error).message}`, {
        cause: err,
      });
    }
    return new ElfFile(buf, path);
  }

  static parse(buf: Buffer, path = '<buffer>'): ElfFile {
    return new ElfFile(buf, path);
  }

  /** True when the object was compiled for BPF (e_machine EM_BPF). */
  get isBpf(): boolean {
    return this.machine === EM_BPF;
  }

  section(name: string): ElfSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** The section's bytes (a view into the file; empty for SHT_NOBITS). */
  contents(section: ElfSection): Buffer {
    if (section.type === SHT_NOBITS) return Buffer.alloc(0);
    if (section.offset + section.size > this.buf.length) {
      this.fail(`section "${section.name}" extends beyond the end of the file`);
    }
    return this.buf.subarray(section.offset, section.offset + section.size);
  }

  /** Bytes of the section called `name`, or undefined when there is none. */
  sectionData(name: string): Buffer | undefined {
    const s = this.section(name);
    return s === undefined ? undefined : this.contents(s);
  }

  /** All entries of the symbol table (index 0, the null symbol, excluded). */
  symbols(): readonly ElfSymbol[] {
    if (this.symbolCache !== undefined) return this.symbolCache;
    const symtab = this.sections.find((s) => s.type === SHT_SYMTAB);
    const out: ElfSymbol[] = [];
    if (symtab !== undefined) {
      const data = this.contents(symtab);
      const strsec = this.sections[symtab.link];
      if (strsec === undefined) this.fail('symbol string table index is out of range');
      const strs = this.contents(strsec);
      for (let o = SYM_SIZE; o + SYM_SIZE <= data.length; o += SYM_SIZE) {
        const info = data.readUInt8(o + 4);
        out.push({
          name: cstring(strs, data.readUInt32LE(o), () => this.fail('bad symbol name offset')),
          type: info & 0xf,
          bind: info >> 4,
          sectionIndex: data.readUInt16LE(o + 6),
          value: this.num(data.readBigUInt64LE(o + 8)),
          size: this.num(data.readBigUInt64LE(o + 16)),
        });
      }
    }
    this.symbolCache = out;
    return out;
  }

  private num(v: bigint): number {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`value ${v} is too large`);
    return Number(v);
  }

  private fail(why: string): never {
    throw new KernelError('TENDRIL_ERR_ELF', `Cannot parse ELF file "${this.path}": ${why}`);
  }
}

/** NUL-terminated string at `off` of a string table. */
export function cstring(table: Buffer, off: number, onError: () => never): string {
  if (off < 0 || off > table.length) onError();
  let end = table.indexOf(0, off);
  if (end < 0) end = table.length;
  return table.toString('utf8', off, end);
}
