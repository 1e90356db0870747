// The one module that declares libbpf (Debian 12's libbpf 1.1) functions via koffi; handles are opaque.
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';
import { KernelError } from '../errors.js';

/** Opaque libbpf handles: only this module dereferences them. */
export type BpfObjectHandle = { readonly __brand: 'bpf_object' };
export type BpfMapHandle = { readonly __brand: 'bpf_map' };
export type BpfProgramHandle = { readonly __brand: 'bpf_program' };
export type RingBufferHandle = { readonly __brand: 'ring_buffer' };

if (process.platform !== 'linux') {
  throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot load libbpf: platform "${process.platform}" is not Linux`);
}

let lib: koffi.IKoffiLib;
try {
  lib = koffi.load('libbpf.so.1');
} catch (err) {
  throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot load libbpf.so.1 (apt-get install libbpf1): ${String(err)}`, {
    cause: err,
  });
}
// vsnprintf is libc's, but only libbpf's print callback needs it (its arguments arrive as a va_list).
const libc = koffi.load('libc.so.6');

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('ring_buffer');
const RingSampleFn = koffi.proto('int tendril_ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
const PrintFn = koffi.proto('int tendril_libbpf_print_fn(int level, const char *fmt, void *args)');

const c = {
  majorVersion: lib.func('uint32_t libbpf_major_version()'),
  minorVersion: lib.func('uint32_t libbpf_minor_version()'),
  setPrint: lib.func('void *libbpf_set_print(tendril_libbpf_print_fn *fn)'),
  openFile: lib.func('bpf_object *bpf_object__open_file(const char *path, const void *opts)'),
  load: lib.func('int bpf_object__load(bpf_object *obj)'),
  close: lib.func('void bpf_object__close(bpf_object *obj)'),
  nextMap: lib.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *prev)'),
  nextProgram: lib.func('bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prev)'),
  findMapByName: lib.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  mapName: lib.func('const char *bpf_map__name(const bpf_map *map)'),
  mapFd: lib.func('int bpf_map__fd(const bpf_map *map)'),
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  mapIsInternal: lib.func('bool bpf_map__is_internal(const bpf_map *map)'),
  mapInitialValue: lib.func('const void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
  mapSetInitialValue: lib.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)'),
  programName: lib.func('const char *bpf_program__name(const bpf_program *prog)'),
  programSectionName: lib.func('const char *bpf_program__section_name(const bpf_program *prog)'),
  programFd: lib.func('int bpf_program__fd(const bpf_program *prog)'),
  programSetAutoload: lib.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
  // libbpf >= 1.0 returns -errno itself, which koffi's async calls need (errno is not carried back from a worker).
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  ringBufferNew: lib.func(
    'ring_buffer *ring_buffer__new(int map_fd, tendril_ring_buffer_sample_fn *sample_cb, void *ctx, const void *opts)',
  ),
  ringBufferConsume: lib.func('int ring_buffer__consume(ring_buffer *rb)'),
  ringBufferFree: lib.func('void ring_buffer__free(ring_buffer *rb)'),
  vsnprintf: libc.func('int vsnprintf(void *buf, size_t size, const char *fmt, void *args)'),
};

// libbpf prints warnings to stderr by default; kernel/ must not log, so messages are captured while a
// load runs (to go into the thrown error) and dropped otherwise. The callback stays registered for the
// life of the process because libbpf keeps the pointer. libbpf has one callback per process: only the main
// thread registers it (a worker thread's, e.g. the conntrack GC's, would be called from the main thread's loads
// with the worker's isolate, or after that isolate is gone: a fatal V8 error).
const LIBBPF_DEBUG = 2;
let capture: string[] | undefined;
const printBuf = Buffer.alloc(8192);
const printCallback = koffi.register(
  (level: number, fmt: string, args: unknown): number => {
    if (capture === undefined || level >= LIBBPF_DEBUG) return 0;
    const n = Number(c.vsnprintf(printBuf, printBuf.length, fmt, args));
    if (n > 0) capture.push(printBuf.toString('utf8', 0, Math.min(n, printBuf.length - 1)));
    return 0;
  },
  koffi.pointer(PrintFn),
);
if (isMainThread) c.setPrint(printCallback);

/** Runs fn while collecting libbpf's warning/info messages; returns them with fn's result or error. */
export function captureLibbpfMessages<T>(fn: () => T): { result?: T; error?: unknown; messages: string[] } {
  const outer = capture;
  const messages: string[] = [];
  capture = messages;
  try {
    return { result: fn(), messages };
  } catch (error) {
    return { error, messages };
  } finally {
    capture = outer;
    // Nested captures (none today) still see everything.
    outer?.push(...messages);
  }
}

export function libbpfVersion(): string {
  return `${Number(c.majorVersion())}.${Number(c.minorVersion())}`;
}

/** bpf_object__open_file(); returns the handle or -errno. `opts` is a struct bpf_object_open_opts. */
export function objectOpenFile(path: string, opts: Buffer): BpfObjectHandle | number {
  const obj: unknown = c.openFile(path, opts);
  if (obj === null) return -koffi.errno();
  return obj as BpfObjectHandle;
}

/** bpf_object__load(); 0 or -errno. */
export function objectLoad(obj: BpfObjectHandle): number {
  return Number(c.load(obj));
}

export function objectClose(obj: BpfObjectHandle): void {
  c.close(obj);
}

export function objectMaps(obj: BpfObjectHandle): BpfMapHandle[] {
  const out: BpfMapHandle[] = [];
  for (let m: unknown = c.nextMap(obj, null); m !== null; m = c.nextMap(obj, m)) out.push(m as BpfMapHandle);
  return out;
}

export function objectPrograms(obj: BpfObjectHandle): BpfProgramHandle[] {
  const out: BpfProgramHandle[] = [];
  for (let p: unknown = c.nextProgram(obj, null); p !== null; p = c.nextProgram(obj, p)) out.push(p as BpfProgramHandle);
  return out;
}

/** Map by name; internal maps are also found by section name (".rodata"). */
export function objectFindMap(obj: BpfObjectHandle, name: string): BpfMapHandle | undefined {
  const m: unknown = c.findMapByName(obj, name);
  return m === null ? undefined : (m as BpfMapHandle);
}

export function mapName(map: BpfMapHandle): string {
  return String(c.mapName(map));
}

export function mapFd(map: BpfMapHandle): number {
  return Number(c.mapFd(map));
}

/** Disables pinning of a map declared with LIBBPF_PIN_BY_NAME (before load). */
export function mapClearPinPath(map: BpfMapHandle): void {
  c.mapSetPinPath(map, null);
}

/** True for maps libbpf makes for global data (.rodata, .data, .bss, .kconfig). */
export function mapIsInternal(map: BpfMapHandle): boolean {
  return Boolean(c.mapIsInternal(map));
}

/** Copy of the initial contents of a global-data map, before load. */
export function mapInitialValue(map: BpfMapHandle): Buffer | undefined {
  const size = [0];
  const ptr: unknown = c.mapInitialValue(map, size);
  const n = Number(size[0] ?? 0);
  if (ptr === null || n === 0) return undefined;
  return Buffer.from(new Uint8Array(koffi.view(ptr, n)));
}

/** 0 or -errno. */
export function mapSetInitialValue(map: BpfMapHandle, data: Buffer): number {
  return Number(c.mapSetInitialValue(map, data, data.length));
}

export function programName(prog: BpfProgramHandle): string {
  return String(c.programName(prog));
}

export function programSectionName(prog: BpfProgramHandle): string {
  return String(c.programSectionName(prog));
}

/** fd after load, negative when not loaded. */
export function programFd(prog: BpfProgramHandle): number {
  return Number(c.programFd(prog));
}

export function programSetAutoload(prog: BpfProgramHandle, autoload: boolean): number {
  return Number(c.programSetAutoload(prog, autoload));
}

/**
 * struct bpf_object_open_opts of libbpf 1.1 (x86_64/arm64 LP64 layout, checked with offsetof against
 * /usr/include/bpf/libbpf.h): sz@0 object_name@8 relaxed_maps@16 pin_root_path@24 kconfig@40
 * btf_custom_path@48 kernel_log_buf@56 kernel_log_size@64 kernel_log_level@72, sizeof 80.
 * Pointers are addresses of Buffers the caller keeps alive until bpf_object__load() returns.
 */
export const OPEN_OPTS_SIZE = 80;
export function encodeOpenOpts(o: {
  pinRootPath?: bigint;
  kernelLogBuf?: bigint;
  kernelLogSize?: number;
  kernelLogLevel?: number;
}): Buffer {
  const b = Buffer.alloc(OPEN_OPTS_SIZE);
  b.writeBigUInt64LE(BigInt(OPEN_OPTS_SIZE), 0);
  b.writeBigUInt64LE(o.pinRootPath ?? 0n, 24);
  b.writeBigUInt64LE(o.kernelLogBuf ?? 0n, 56);
  b.writeBigUInt64LE(BigInt(o.kernelLogSize ?? 0), 64);
  b.writeUInt32LE(o.kernelLogLevel ?? 0, 72);
  return b;
}

/**
 * BPF_LINK_CREATE on a libuv worker thread: resolves the link fd, or rejects with the errno. Attaching with tcx
 * waits out an RCU grace period in the kernel (10-30 ms here); off the event loop, concurrent attaches share it.
 * opts stays NULL, so libbpf 1.1 passes the (newer) tcx attach types straight through.
 */
export function linkCreateAsync(progFd: number, targetIfindex: number, attachType: number): Promise<{ fd: number } | { errno: number }> {
  return new Promise((resolve, reject) => {
    c.linkCreate.async(progFd, targetIfindex, attachType, null, (err: unknown, ret: number) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(ret >= 0 ? { fd: ret } : { errno: -ret });
    });
  });
}

// Ring buffers: one sample callback for the whole process (koffi callbacks are costly to register and libbpf keeps
// the pointer), dispatching to whoever is consuming right now. ring_buffer__consume() calls it synchronously on
// this thread, so a module variable set around the call is enough.
let ringSink: ((record: Buffer) => number) | undefined;
const ringCallback = koffi.register(
  (_ctx: unknown, data: unknown, size: number | bigint): number => {
    if (ringSink === undefined) return 0;
    // The record lives in the ring and is reused once consumed: copy it out. decode() copies into a fresh
    // Uint8Array in one step, about twice as fast as a view plus a copy.
    const bytes = koffi.decode(data, 'uint8_t', Number(size)) as Uint8Array;
    return ringSink(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  },
  koffi.pointer(RingSampleFn),
);

/** ring_buffer__new() on a BPF_MAP_TYPE_RINGBUF fd (mmaps it); the handle or -errno. The fd must outlive it. */
export function ringBufferNew(mapFd: number): RingBufferHandle | number {
  const rb: unknown = c.ringBufferNew(mapFd, ringCallback, null, null);
  if (rb === null) return -koffi.errno();
  return rb as RingBufferHandle;
}

/**
 * ring_buffer__consume(): hands every available record to `sink` (a copy), synchronously. A negative return from
 * `sink` stops after that record (it stays consumed) and becomes the result; otherwise the number of records.
 */
export function ringBufferConsume(rb: RingBufferHandle, sink: (record: Buffer) => number): number {
  const outer = ringSink;
  ringSink = sink;
  try {
    return Number(c.ringBufferConsume(rb));
  } finally {
    ringSink = outer;
  }
}

export function ringBufferFree(rb: RingBufferHandle): void {
  c.ringBufferFree(rb);
}
