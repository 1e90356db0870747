// The one module that declares libc functions (via koffi): thin typed wrappers that throw KernelError on -1.
import koffi from 'koffi';
import { KernelError, errnoText } from '../errors.js';

// Values of the x86_64/arm64 Linux ABI (both little-endian, same numbers for everything below but syscalls).
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVTIMEO = 20;
export const SOL_NETLINK = 270;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;
export const MSG_PEEK = 0x2;
export const MSG_TRUNC = 0x20;

export const O_RDONLY = 0;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_CLOEXEC = 0o2000000;

export const CLONE_NEWNET = 0x40000000;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_SHARED = 1 << 20;
export const MNT_DETACH = 2;
/** ioctl on a namespace fd: returns its CLONE_NEW* type. */
export const NS_GET_NSTYPE = 0xb703;

const SYS_BPF: Partial<Record<string, number>> = { x64: 321, arm64: 280 };

if (process.platform !== 'linux') {
  throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot load libc: platform "${process.platform}" is not Linux`);
}

const lib = koffi.load('libc.so.6');

// Raw declarations. Pointers are passed as Buffers, which koffi hands to C by reference (no copy).
const c = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
  listen: lib.func('int listen(int fd, int backlog)'),
  getsockname: lib.func('int getsockname(int fd, void *addr, _Inout_ uint32_t *addrlen)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
  sendto: lib.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: lib.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  close: lib.func('int close(int fd)'),
  open: lib.func('int open(const char *path, int flags, ...)'),
  setns: lib.func('int setns(int fd, int nstype)'),
  unshare: lib.func('int unshare(int flags)'),
  mount: lib.func(
    'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)',
  ),
  umount2: lib.func('int umount2(const char *target, int flags)'),
  gettid: lib.func('int gettid()'),
  ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
  syscall: lib.func('long syscall(long number, ...)'),
  /*
   * The same libc symbol with bpf(2)'s fixed arguments: koffi parses a variadic call's types on every call, which
   * made each map operation cost ~10 µs; glibc's syscall() reads integer registers only, so a fixed prototype is
   * the same call at the ABI level (x86_64 and arm64 Linux).
   */
  syscallBpf: lib.func('syscall', 'long', ['long', 'long', 'void *', 'uint32_t']),
  mmap: lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, intptr_t off)'),
  munmap: lib.func('int munmap(void *addr, size_t len)'),
  sysconf: lib.func('long sysconf(int name)'),
};

function fail(call: string): never {
  const errno = koffi.errno();
  throw new KernelError('TENDRIL_ERR_SYSCALL', `${call} failed: ${errnoText(errno)}`, { errno });
}

function check(ret: unknown, call: string): number {
  const n = Number(ret);
  if (n === -1) fail(call);
  return n;
}

export function socket(domain: number, type: number, protocol: number): number {
  return check(c.socket(domain, type, protocol), 'socket()');
}

export function bind(fd: number, addr: Buffer): void {
  check(c.bind(fd, addr, addr.length), 'bind()');
}

export function listen(fd: number, backlog: number): void {
  check(c.listen(fd, backlog), 'listen()');
}

/** Fills `addr` with the socket's own address; returns the address length. */
export function getsockname(fd: number, addr: Buffer): number {
  const len = [addr.length];
  check(c.getsockname(fd, addr, len), 'getsockname()');
  return len[0] ?? 0;
}

export function setsockopt(fd: number, level: number, name: number, value: Buffer): void {
  check(c.setsockopt(fd, level, name, value, value.length), `setsockopt(${level}, ${name})`);
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  setsockopt(fd, level, name, b);
}

/** Sends `len` bytes of `buf`; returns the number of bytes sent. */
export function sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer | null): number {
  return check(c.sendto(fd, buf, len, flags, addr, addr === null ? 0 : addr.length), 'sendto()');
}

/** Blocking receive into `buf`; with MSG_TRUNC returns the real datagram length even when larger than `len`. */
/**
 * sendto(2) on a libuv worker thread. rtnetlink does a request's work inside sendmsg, and some requests wait on
 * the kernel (deleting a veth waits out RCU grace periods): this keeps the event loop running meanwhile. The
 * socket is bound to its namespace at creation, so the calling thread's namespace does not matter.
 */
export function sendtoAsync(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer | null): Promise<number> {
  return new Promise((resolve, reject) => {
    c.sendto.async(fd, buf, len, flags, addr, addr ? addr.length : 0, (err: unknown, ret: number | bigint) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      const n = Number(ret);
      // errno stays on the worker thread: repeat the call here to learn it (netlink sends fail only on resource
      // shortage, where a second try is harmless).
      if (n < 0) return resolve(sendto(fd, buf, len, flags, addr));
      resolve(n);
    });
  });
}

export function recv(fd: number, buf: Buffer, len: number, flags: number): number {
  return check(c.recv(fd, buf, len, flags), 'recv()');
}

export function close(fd: number): void {
  check(c.close(fd), 'close()');
}

export function open(path: string, flags: number, mode = 0): number {
  return check(c.open(path, flags, 'uint32_t', mode), `open("${path}")`);
}

export function setns(fd: number, nstype: number): void {
  check(c.setns(fd, nstype), 'setns()');
}

export function unshare(flags: number): void {
  check(c.unshare(flags), 'unshare()');
}

export function mount(source: string, target: string, fstype: string, flags: number, data: string | null = null): void {
  check(c.mount(source, target, fstype, flags, data), `mount("${source}", "${target}")`);
}

export function umount2(target: string, flags: number): void {
  check(c.umount2(target, flags), `umount2("${target}")`);
}

/** ioctl(2) without argument (e.g. NS_GET_NSTYPE); returns the call's result. */
export function ioctl(fd: number, request: number): number {
  return check(c.ioctl(fd, request), `ioctl(${request})`);
}

/** Kernel id of the calling thread (namespaces set by setns belong to a thread, not the process). */
export function gettid(): number {
  return check(c.gettid(), 'gettid()');
}

/** bpf(2): returns the syscall's non-negative result (often an fd); throws with errno on failure. */
export function bpfSyscall(cmd: number, attr: Buffer): number {
  const r = bpfSyscallRaw(cmd, attr);
  if (r < 0) throw new KernelError('TENDRIL_ERR_SYSCALL', `bpf(cmd ${cmd}) failed: ${errnoText(-r)}`, { errno: -r });
  return r;
}

/**
 * bpf(2) without exceptions: the non-negative result, or -errno. Map lookups miss all the time (ENOENT is an
 * answer, not an error), and building an Error per miss cost ~50 µs.
 */
export function bpfSyscallRaw(cmd: number, attr: Buffer): number {
  const nr = SYS_BPF[process.arch];
  if (nr === undefined) {
    throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot call bpf(): unknown syscall number on "${process.arch}"`);
  }
  const r = Number(c.syscallBpf(nr, cmd, attr, attr.length));
  return r < 0 ? -koffi.errno() : r;
}

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
const SC_PAGESIZE = 30;

/** An mmap()ed region: its memory as an ArrayBuffer, valid until munmap(). */
export interface Mapping {
  readonly bytes: ArrayBuffer;
  readonly length: number;
  /** opaque */
  readonly ptr: unknown;
}

export function pageSize(): number {
  return Number(c.sysconf(SC_PAGESIZE));
}

/** mmap(NULL, length, prot, MAP_SHARED, fd, offset); throws KernelError on MAP_FAILED. */
export function mmapShared(fd: number, length: number, prot: number, offset: number): Mapping {
  const ptr: unknown = c.mmap(null, length, prot, MAP_SHARED, fd, offset);
  if (ptr === null || koffi.address(ptr) === 0xffffffffffffffffn) fail(`mmap(fd ${fd}, ${length} bytes at ${offset})`);
  return { bytes: koffi.view(ptr, length), length, ptr };
}

/** Unmaps a region of mmapShared(); its ArrayBuffer must not be touched afterwards. */
export function munmap(m: Mapping): void {
  check(c.munmap(m.ptr, m.length), 'munmap');
}

/** Address of a Buffer's memory, for kernel structs that carry pointers (e.g. bpf_attr). Keep `buf` alive. */
export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf);
}
