// bpf(2) commands libbpf 1.1 lacks or that we issue directly: map elements, pins, info, test runs, tcx links.
import { KernelError, errnoText } from '../errors.js';
import { addressOf, bpfSyscallRaw, close as closeFd } from '../native/libc.js';

// enum bpf_cmd
export const BPF_MAP_LOOKUP_ELEM = 1;
export const BPF_MAP_UPDATE_ELEM = 2;
export const BPF_MAP_DELETE_ELEM = 3;
export const BPF_MAP_GET_NEXT_KEY = 4;
export const BPF_PROG_LOAD = 5;
export const BPF_OBJ_PIN = 6;
export const BPF_OBJ_GET = 7;
export const BPF_PROG_TEST_RUN = 10;
export const BPF_PROG_GET_FD_BY_ID = 13;
export const BPF_MAP_GET_FD_BY_ID = 14;
export const BPF_MAP_LOOKUP_BATCH = 24;
export const BPF_MAP_DELETE_BATCH = 27;
export const BPF_OBJ_GET_INFO_BY_FD = 15;
export const BPF_LINK_CREATE = 28;
export const BPF_LINK_UPDATE = 29;
export const BPF_LINK_GET_FD_BY_ID = 30;
export const BPF_LINK_DETACH = 34;
export const BPF_PROG_QUERY = 16;

// enum bpf_attach_type (tcx values are newer than Debian's uapi headers)
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
// enum bpf_link_type
export const BPF_LINK_TYPE_TCX = 11;
// enum bpf_prog_type
export const BPF_PROG_TYPE_SCHED_CLS = 3;

// enum bpf_map_type members that matter to userspace value sizes (and the hash family, which has batch verbs)
export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_LRU_HASH = 9;
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
export const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21;

/** Result of a bpf(2) call that did not throw: the return value (>= 0) or the errno (> 0). */
export type SysResult = { ok: true; value: number } | { ok: false; errno: number };

/** bpf(2) returning the errno instead of throwing, for callers to whom some errnos are answers (ENOENT). */
export function sysBpf(cmd: number, attr: Buffer): SysResult {
  const r = bpfSyscallRaw(cmd, attr);
  return r >= 0 ? { ok: true, value: r } : { ok: false, errno: -r };
}

/** bpf(2) that throws TENDRIL_ERR_BPF with `what` ("Cannot pin map "x" at "/p"") and the errno text. */
export function bpfOrThrow(cmd: number, attr: Buffer, what: () => string): number {
  const r = sysBpf(cmd, attr);
  if (r.ok) return r.value;
  throw bpfError(what(), r.errno);
}

export function bpfError(what: string, errno: number): KernelError {
  return new KernelError('TENDRIL_ERR_BPF', `${what}: ${errnoText(errno)}`, { errno });
}

/** Address for a pointer field of bpf_attr; 0 for "none". The Buffer must stay referenced until the call returns. */
export function ptr(buf: Buffer | undefined | null): bigint {
  return buf === undefined || buf === null || buf.length === 0 ? 0n : addressOf(buf);
}

/** NUL-terminated copy of a path for bpf_attr.pathname. */
export function cPath(path: string): Buffer {
  return Buffer.from(`${path}\0`, 'utf8');
}

export function closeQuietly(fd: number): void {
  if (fd < 0) return;
  try {
    closeFd(fd);
  } catch {
    // Closing is cleanup: a bad fd here means it was already closed, nothing to recover.
  }
}

/** BPF_OBJ_GET_INFO_BY_FD into a zeroed buffer of `size` bytes (the kernel fills what it knows). */
export function objInfo(fd: number, size: number, what: () => string): Buffer {
  const info = Buffer.alloc(size);
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(fd, 0);
  attr.writeUInt32LE(size, 4);
  attr.writeBigUInt64LE(ptr(info), 8);
  bpfOrThrow(BPF_OBJ_GET_INFO_BY_FD, attr, what);
  return info;
}

/** BPF_OBJ_PIN: pins `fd` at `path` on a bpffs. */
export function objPin(fd: number, path: string, what: () => string): void {
  const p = cPath(path);
  const attr = Buffer.alloc(16);
  attr.writeBigUInt64LE(ptr(p), 0);
  attr.writeUInt32LE(fd, 8);
  bpfOrThrow(BPF_OBJ_PIN, attr, what);
}

/** BPF_OBJ_GET: opens the object pinned at `path`; returns a new fd. */
export function objGet(path: string, what: () => string): number {
  const p = cPath(path);
  const attr = Buffer.alloc(16);
  attr.writeBigUInt64LE(ptr(p), 0);
  return bpfOrThrow(BPF_OBJ_GET, attr, what);
}

/** BPF_{MAP,PROG,LINK}_GET_FD_BY_ID: a new fd of a kernel object. */
export function fdById(cmd: number, id: number, what: () => string): number {
  const attr = Buffer.alloc(12);
  attr.writeUInt32LE(id, 0);
  return bpfOrThrow(cmd, attr, what);
}

/** Fields of struct bpf_map_info we use (offsets from linux/bpf.h). */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export function mapInfo(fd: number, what: () => string): MapInfo {
  const b = objInfo(fd, 88, what);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    name: cName(b.subarray(24, 40)),
  };
}

/** Fields of struct bpf_prog_info we use. */
export interface ProgInfo {
  type: number;
  id: number;
  name: string;
  tag: string;
}

export function progInfo(fd: number, what: () => string): ProgInfo {
  const b = objInfo(fd, 232, what);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    tag: b.subarray(8, 16).toString('hex'),
    name: cName(b.subarray(64, 80)),
  };
}

function cName(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end < 0 ? b.length : end);
}
