// Objects: an inert CollectionSpec read from the ELF, and a Collection of live maps/programs made by libbpf's load.
import fs from 'node:fs';
import { KernelError, VerifierError, errnoText } from '../errors.js';
import * as libbpf from '../native/libbpf.js';
import { Btf, type DatasecVar } from './btf.js';
import { ElfFile, SHF_EXECINSTR, STT_FUNC } from './elf.js';
import { BpfMap } from './map.js';
import { BpfProgram } from './program.js';
import { BPF_MAP_GET_FD_BY_ID, BPF_PROG_GET_FD_BY_ID, closeQuietly, fdById, mapInfo, progInfo } from './syscall.js';
import { addressOf } from '../native/libc.js';

export type ConstantValue = number | bigint | Buffer;

export interface LoadOptions {
  /** `volatile const` globals in .rodata, set before load. Unknown names and wrong sizes are errors. */
  constants?: Record<string, ConstantValue>;
  /** Directory (on a bpffs) where maps declared with LIBBPF_PIN_BY_NAME are pinned, or re-used when present. */
  pinRoot?: string;
  /**
   * Verifier log level wanted when a program is rejected. Failed programs are always retried at level 1 to
   * get a log; 2 reloads once more at level 2 for the detailed (much longer) log.
   */
  logLevel?: number;
}

/** A map as declared in the object's .maps section (BTF-defined maps). */
export interface MapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  pinning: 'none' | 'by-name';
}

export interface ProgramSpec {
  /** Function name, e.g. "cil_from_container". */
  name: string;
  /** ELF section, e.g. "tc". */
  section: string;
}

const LOG_BUF_SIZE = 4 << 20;
const DETAILED_LOG_BUF_SIZE = 16 << 20;

/** What an object declares, read without touching the kernel (cilium/ebpf's CollectionSpec). */
export class CollectionSpec {
  readonly path: string;
  readonly elf: ElfFile;
  /** Undefined for objects compiled without -g (no .BTF). */
  readonly btf: Btf | undefined;
  readonly maps: ReadonlyMap<string, MapSpec>;
  readonly programs: ReadonlyMap<string, ProgramSpec>;

  private constructor(path: string, elf: ElfFile) {
    this.path = path;
    this.elf = elf;
    if (!elf.isBpf) throw new KernelError('TENDRIL_ERR_ELF', `Cannot use "${path}": not a BPF object (e_machine ${elf.machine})`);
    this.btf = elf.section('.BTF') === undefined ? undefined : Btf.fromElf(elf);
    this.maps = this.readMaps();
    this.programs = this.readPrograms();
  }

  static fromFile(path: string): CollectionSpec {
    return new CollectionSpec(path, ElfFile.open(path));
  }

  /** Variables of a global-data section, by default the load-time constants in .rodata. */
  variables(section = '.rodata'): DatasecVar[] {
    if (this.btf === undefined || !this.btf.hasDatasec(section)) return [];
    return this.btf.datasecVars(section);
  }

  /** Validates `constants` against .rodata and returns a patched copy of `rodata`. */
  applyConstants(rodata: Buffer, constants: Record<string, ConstantValue>): Buffer {
    const vars = new Map(this.variables('.rodata').map((v) => [v.name, v]));
    const out = Buffer.from(rodata);
    for (const [name, value] of Object.entries(constants)) {
      const v = vars.get(name);
      if (v === undefined) {
        const known = [...vars.keys()].join(', ') || 'none';
        throw new KernelError(
          'TENDRIL_ERR_BPF',
          `Cannot set constant "${name}" of "${this.path}": no such variable in .rodata (known: ${known})`,
        );
      }
      if (v.offset + v.size > out.length) {
        throw new KernelError('TENDRIL_ERR_BPF', `Cannot set constant "${name}" of "${this.path}": outside .rodata`);
      }
      encodeConstant(name, value, v.size, this.path).copy(out, v.offset);
    }
    return out;
  }

  load(opts: LoadOptions = {}): Collection {
    return Collection.fromSpec(this, opts);
  }

  private readMaps(): Map<string, MapSpec> {
    const out = new Map<string, MapSpec>();
    const btf = this.btf;
    if (btf === undefined || !btf.hasDatasec('.maps')) return out;
    const sec = btf.find('.maps', 'datasec');
    for (const vi of sec?.vars ?? []) {
      const v = btf.type(vi.type);
      const def = btf.resolve(v.type ?? 0);
      if (def.kind !== 'struct') continue;
      const spec: MapSpec = { name: v.name, type: 0, keySize: 0, valueSize: 0, maxEntries: 0, flags: 0, pinning: 'none' };
      for (const m of def.members ?? []) {
        // __uint(name, N) is `int (*name)[N]`; __type(name, T) is `T *name`.
        const p = btf.resolve(m.type);
        const target = p.kind === 'ptr' ? btf.resolve(p.type ?? 0) : undefined;
        const n = target?.kind === 'array' ? (target.nelems ?? 0) : 0;
        switch (m.name) {
          case 'type':
            spec.type = n;
            break;
          case 'max_entries':
            spec.maxEntries = n;
            break;
          case 'map_flags':
            spec.flags = n;
            break;
          case 'key_size':
            spec.keySize = n;
            break;
          case 'value_size':
            spec.valueSize = n;
            break;
          case 'pinning':
            spec.pinning = n === 1 ? 'by-name' : 'none';
            break;
          case 'key':
            if (p.kind === 'ptr') spec.keySize = btf.sizeof(p.type ?? 0);
            break;
          case 'value':
            if (p.kind === 'ptr') spec.valueSize = btf.sizeof(p.type ?? 0);
            break;
        }
      }
      out.set(spec.name, spec);
    }
    return out;
  }

  private readPrograms(): Map<string, ProgramSpec> {
    const out = new Map<string, ProgramSpec>();
    for (const sym of this.elf.symbols()) {
      if (sym.type !== STT_FUNC) continue;
      const sec = this.elf.sections[sym.sectionIndex];
      // Functions in .text are subprograms; every function in another executable section is a program.
      if (sec === undefined || (sec.flags & SHF_EXECINSTR) === 0 || sec.name === '.text') continue;
      out.set(sym.name, { name: sym.name, section: sec.name });
    }
    return out;
  }
}

/** Little-endian bytes of a constant of `size` bytes; numbers and bigints must fit, Buffers must match. */
function encodeConstant(name: string, value: ConstantValue, size: number, path: string): Buffer {
  const fail = (why: string): never => {
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot set constant "${name}" of "${path}": ${why}`);
  };
  if (Buffer.isBuffer(value)) {
    if (value.length !== size) fail(`it is ${size} bytes, the value is ${value.length}`);
    return value;
  }
  if (![1, 2, 4, 8].includes(size)) fail(`it is ${size} bytes, give a Buffer of that length`);
  if (typeof value === 'number' && !Number.isSafeInteger(value)) fail(`${value} is not an integer`);
  const big = BigInt(value);
  const bits = BigInt(size * 8);
  if (big < -(1n << (bits - 1n)) || big >= 1n << bits) fail(`${value} does not fit in ${size} bytes`);
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, big));
  return b.subarray(0, size);
}

/** Live maps and programs of one loaded object. Closing it closes them all. */
export class Collection {
  readonly spec: CollectionSpec;
  /** By map name; global-data maps by section (".rodata", ".data", ".bss"). */
  readonly maps: ReadonlyMap<string, BpfMap>;
  /** By function name. */
  readonly programs: ReadonlyMap<string, BpfProgram>;

  private constructor(spec: CollectionSpec, maps: Map<string, BpfMap>, programs: Map<string, BpfProgram>) {
    this.spec = spec;
    this.maps = maps;
    this.programs = programs;
  }

  /** Opens, configures and loads an object with libbpf (map creation/pinning, relocations, verifier). */
  static load(objectPath: string, opts: LoadOptions = {}): Collection {
    return Collection.fromSpec(CollectionSpec.fromFile(objectPath), opts);
  }

  /** @internal Use Collection.load() or CollectionSpec.load(). */
  static fromSpec(spec: CollectionSpec, opts: LoadOptions): Collection {
    // Validate constants before any kernel work, against a zeroed .rodata of the right size.
    const constants = opts.constants ?? {};
    if (Object.keys(constants).length > 0) {
      const size = spec.elf.section('.rodata')?.size ?? 0;
      spec.applyConstants(Buffer.alloc(size), constants);
    }
    if (opts.pinRoot !== undefined) fs.mkdirSync(opts.pinRoot, { recursive: true });

    const first = loadOnce(spec, opts, 0, LOG_BUF_SIZE);
    if (!(first instanceof VerifierError) || (opts.logLevel ?? 1) <= 1) {
      if (first instanceof Error) throw first;
      return new Collection(spec, first.maps, first.programs);
    }
    // Rejected: reload at the requested level so the error carries the detailed log.
    const second = loadOnce(spec, opts, opts.logLevel ?? 1, DETAILED_LOG_BUF_SIZE);
    if (second instanceof Error) throw second;
    return new Collection(spec, second.maps, second.programs);
  }

  /** The map called `name`; throws when the object has none. */
  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (m === undefined) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot find map "${name}" in "${this.spec.path}" (maps: ${[...this.maps.keys()].join(', ')})`,
      );
    }
    return m;
  }

  /** The program whose function name is `name`, or the only program of section `name`. */
  program(name: string): BpfProgram {
    const byName = this.programs.get(name);
    if (byName !== undefined) return byName;
    const inSection = [...this.programs.values()].filter((p) => p.section === name);
    if (inSection.length === 1 && inSection[0] !== undefined) return inSection[0];
    const names = [...this.programs.keys()].join(', ');
    if (inSection.length > 1) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot pick program "${name}" in "${this.spec.path}": section has ${inSection.length} programs (${inSection
          .map((p) => p.name)
          .join(', ')}), use a function name`,
      );
    }
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot find program "${name}" in "${this.spec.path}" (programs: ${names})`);
  }

  close(): void {
    for (const m of this.maps.values()) m.close();
    for (const p of this.programs.values()) p.close();
  }
}

interface Loaded {
  maps: Map<string, BpfMap>;
  programs: Map<string, BpfProgram>;
}

/** One libbpf open+load. Returns our own fds (libbpf's object is always closed) or the error to throw. */
function loadOnce(spec: CollectionSpec, opts: LoadOptions, logLevel: number, logSize: number): Loaded | KernelError {
  const path = spec.path;
  // Buffers whose addresses go into the open opts: referenced here until load returns.
  const logBuf = Buffer.alloc(logSize);
  const pinRoot = opts.pinRoot === undefined ? undefined : Buffer.from(`${opts.pinRoot}\0`);
  const openOpts = libbpf.encodeOpenOpts({
    ...(pinRoot === undefined ? {} : { pinRootPath: addressOf(pinRoot) }),
    kernelLogBuf: addressOf(logBuf),
    kernelLogSize: logSize,
    kernelLogLevel: logLevel,
  });

  let obj: libbpf.BpfObjectHandle | undefined;
  const run = libbpf.captureLibbpfMessages((): Loaded | KernelError | { loadErrno: number } => {
    const opened = libbpf.objectOpenFile(path, openOpts);
    if (typeof opened === 'number') {
      return new KernelError('TENDRIL_ERR_BPF', `Cannot open BPF object "${path}": ${errnoText(-opened)}`, { errno: -opened });
    }
    obj = opened;
    if (opts.pinRoot === undefined) {
      // Without a pin root libbpf would pin LIBBPF_PIN_BY_NAME maps straight into /sys/fs/bpf; keep them private.
      for (const m of libbpf.objectMaps(opened)) libbpf.mapClearPinPath(m);
    }
    const constants = opts.constants ?? {};
    if (Object.keys(constants).length > 0) setConstants(spec, opened, constants);
    const err = libbpf.objectLoad(opened);
    if (err < 0) return { loadErrno: -err };
    return adoptAll(opened);
  });
  if (obj !== undefined) libbpf.objectClose(obj);
  if (run.error !== undefined) throw run.error;
  const messages = run.messages.map((m) => m.trimEnd()).filter((m) => m !== '');
  const result = run.result as Loaded | KernelError | { loadErrno: number };

  if ('loadErrno' in result) {
    const errno = result.loadErrno;
    const end = logBuf.indexOf(0);
    const log = logBuf.toString('utf8', 0, end < 0 ? logBuf.length : end);
    const failed = /prog '([^']+)': failed to load/.exec(messages.join('\n'));
    if (failed !== null && log.trim() !== '') {
      return new VerifierError(
        `Cannot load BPF object "${path}": program "${failed[1]}" rejected by the verifier: ${errnoText(errno)}`,
        log,
        { errno },
      );
    }
    return new KernelError('TENDRIL_ERR_BPF', `Cannot load BPF object "${path}": ${errnoText(errno)}${detailOf(messages)}`, {
      errno,
    });
  }
  if (result instanceof KernelError) {
    return new KernelError(result.code, `${result.message}${detailOf(messages)}`, {
      ...(result.errno === undefined ? {} : { errno: result.errno }),
      cause: result,
    });
  }
  return result;
}

/** libbpf's own last messages say what went wrong (map creation, pinning, BTF), for the error text. */
function detailOf(messages: string[]): string {
  return messages.length > 0 ? `\n${messages.slice(-10).join('\n')}` : '';
}

/** Writes the constants into the .rodata libbpf will create the map with. */
function setConstants(spec: CollectionSpec, obj: libbpf.BpfObjectHandle, constants: Record<string, ConstantValue>): void {
  const rodata = libbpf.objectFindMap(obj, '.rodata');
  const initial = rodata === undefined ? undefined : libbpf.mapInitialValue(rodata);
  if (rodata === undefined || initial === undefined) {
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot set constants of "${spec.path}": the object has no .rodata`);
  }
  const err = libbpf.mapSetInitialValue(rodata, spec.applyConstants(initial, constants));
  if (err < 0) {
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot set constants of "${spec.path}": ${errnoText(-err)}`, { errno: -err });
  }
}

/**
 * Takes our own fds of every map and program (BPF_*_GET_FD_BY_ID), so libbpf's object can be closed at once
 * and each BpfMap/BpfProgram owns exactly one fd that its close() releases.
 */
function adoptAll(obj: libbpf.BpfObjectHandle): Loaded {
  const maps = new Map<string, BpfMap>();
  const programs = new Map<string, BpfProgram>();
  try {
    for (const m of libbpf.objectMaps(obj)) {
      let name = libbpf.mapName(m);
      if (libbpf.mapIsInternal(m) && name.includes('.')) name = name.slice(name.indexOf('.'));
      const info = mapInfo(libbpf.mapFd(m), () => `Cannot get info of map "${name}"`);
      const fd = fdById(BPF_MAP_GET_FD_BY_ID, info.id, () => `Cannot open map "${name}"`);
      maps.set(name, new BpfMap(fd, info, name));
    }
    for (const p of libbpf.objectPrograms(obj)) {
      const libFd = libbpf.programFd(p);
      if (libFd < 0) continue; // not loaded (autoload off)
      const name = libbpf.programName(p);
      const info = progInfo(libFd, () => `Cannot get info of program "${name}"`);
      const fd = fdById(BPF_PROG_GET_FD_BY_ID, info.id, () => `Cannot open program "${name}"`);
      try {
        programs.set(name, new BpfProgram(fd, { name, section: libbpf.programSectionName(p) }));
      } catch (err) {
        closeQuietly(fd);
        throw err;
      }
    }
  } catch (err) {
    for (const m of maps.values()) m.close();
    for (const p of programs.values()) p.close();
    throw err;
  }
  return { maps, programs };
}
