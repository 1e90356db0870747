// Sockets Node's net module cannot make: transparent (IP_TRANSPARENT) TCP listeners and marked (SO_MARK) TCP sockets
// bound to a foreign address, created with libc and handed to net.Server.listen({fd}) / new net.Socket({fd}); and
// raw Ethernet frames sent on an interface (AF_PACKET).
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

const AF_PACKET = 17;
const SOCK_RAW = 3;

/**
 * Sends one whole Ethernet frame (header included) out of the interface `ifindex` of the calling thread's network
 * namespace, through a send-only AF_PACKET socket (protocol 0: it receives nothing), opened and closed per call: the
 * callers (gratuitous ARP on an L2-announcement takeover) send a handful of frames per failover. Needs CAP_NET_RAW.
 */
export function sendFrame(ifindex: number, frame: Buffer): void {
  if (frame.length < 14) throw new KernelError('TENDRIL_ERR_SYSCALL', `Cannot send a frame of ${frame.length} bytes on interface ${ifindex}: shorter than an Ethernet header`);
  const fd = libc.socket(AF_PACKET, SOCK_RAW | libc.SOCK_CLOEXEC, 0);
  try {
    // struct sockaddr_ll: family, protocol (the frame's EtherType), ifindex, hatype, pkttype, halen, addr[8].
    const sll = Buffer.alloc(20);
    sll.writeUInt16LE(AF_PACKET, 0);
    frame.copy(sll, 2, 12, 14);
    sll.writeInt32LE(ifindex, 4);
    sll.writeUInt8(6, 11);
    frame.copy(sll, 12, 0, 6);
    libc.sendto(fd, frame, frame.length, 0, sll);
  } catch (err) {
    throw new KernelError('TENDRIL_ERR_SYSCALL', `Cannot send a frame on interface ${ifindex}: ${(err as Error).message}`, { cause: err });
  } finally {
    libc.close(fd);
  }
}

/** Closes an fd nobody took over. */
export function closeFd(fd: number): void {
  libc.close(fd);
}
