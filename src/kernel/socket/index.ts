// Sockets Node's net module cannot make: transparent (IP_TRANSPARENT) TCP listeners and marked (SO_MARK) TCP sockets
// bound to a foreign address, created with libc and handed to net.Server.listen({fd}) / new net.Socket({fd}).
import { KernelError } from '../errors.js';
import * as libc from '../native/libc.js';
import { parseIPv4 } from '../../util/ip.js';

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const SO_REUSEADDR = 2;
const SO_MARK = 36;

function sockaddrIn(ip: string, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.writeUInt32BE(parseIPv4(ip) >>> 0, 4);
  return b;
}

function withFd<T>(fd: number, what: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    libc.close(fd);
    throw new KernelError('TENDRIL_ERR_SYSCALL', `Cannot create ${what}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A listening TCP socket on `address`:`port` with IP_TRANSPARENT, so that connections the datapath assigns to it
 * (bpf_sk_assign) for any destination are accepted with that destination as their local address. Non-blocking,
 * close-on-exec; the caller owns the fd (net.Server.listen({fd}) takes it over).
 */
export function transparentListener(port: number, opts: { address?: string; backlog?: number } = {}): number {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | libc.SOCK_CLOEXEC, 0);
  return withFd(fd, `a transparent listener on port ${port}`, () => {
    libc.setsockoptInt(fd, libc.SOL_SOCKET, SO_REUSEADDR, 1);
    libc.setsockoptInt(fd, SOL_IP, IP_TRANSPARENT, 1);
    libc.bind(fd, sockaddrIn(opts.address ?? '0.0.0.0', port));
    libc.listen(fd, opts.backlog ?? 511);
    return fd;
  });
}

/**
 * An unconnected TCP socket bound to `localAddress` (any address, also one that is not the node's: IP_TRANSPARENT)
 * and port 0, with SO_MARK `mark` on every packet, for new net.Socket({fd}).connect(). The proxy's upstream
 * connections keep the client's address and carry its identity in the mark this way.
 */
export function markedSocket(opts: { localAddress?: string; mark?: number }): number {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | libc.SOCK_CLOEXEC, 0);
  return withFd(fd, `a socket from ${opts.localAddress ?? 'any address'}`, () => {
    if (opts.mark !== undefined) libc.setsockoptInt(fd, libc.SOL_SOCKET, SO_MARK, opts.mark | 0);
    if (opts.localAddress !== undefined) {
      libc.setsockoptInt(fd, SOL_IP, IP_TRANSPARENT, 1);
      libc.bind(fd, sockaddrIn(opts.localAddress, 0));
    }
    return fd;
  });
}

/** Closes an fd nobody took over. */
export function closeFd(fd: number): void {
  libc.close(fd);
}
