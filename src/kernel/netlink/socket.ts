// A NETLINK_ROUTE socket: request/ack and dumps with sequence numbers over blocking send/recv.
import * as libc from '../native/libc.js';
import { KernelError, errnoText } from '../errors.js';
import { NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP_INTR } from './constants.js';
import { encodeMessage, parseAck, parseMessages } from './message.js';
import type { Ack, Message, Request } from './message.js';

const SOCKADDR_NL_LEN = 12;
const INITIAL_RECV_BUFFER = 64 * 1024;
/** Answers are immediate; a stuck kernel call must fail rather than hang the agent forever. */
const RECV_TIMEOUT_S = 30;
const DUMP_RETRIES = 5;

/** The kernel refused a request: errno and extended-ack text. Netlink wraps it with what it tried to do. */
export class NetlinkRequestError extends KernelError {
  readonly ack: Ack;
  constructor(ack: Ack) {
    super('TENDRIL_ERR_NETLINK', `${errnoText(ack.errno)}${ack.message ? `: ${ack.message}` : ''}`, {
      errno: ack.errno,
    });
    this.name = 'NetlinkRequestError';
    this.ack = ack;
  }
}

function sockaddrNl(pid = 0): Buffer {
  const b = Buffer.alloc(SOCKADDR_NL_LEN);
  b.writeUInt16LE(libc.AF_NETLINK, 0);
  b.writeUInt32LE(pid, 4);
  return b;
}

export class NetlinkSocket {
  readonly fd: number;
  /** Port id the kernel gave this socket. */
  readonly portId: number;
  private seq: number;
  private buf = Buffer.alloc(INITIAL_RECV_BUFFER);
  private closed = false;

  private constructor(fd: number, portId: number) {
    this.fd = fd;
    this.portId = portId;
    // Start from the clock, as iproute2 does, so answers meant for an earlier socket are never mistaken for ours.
    this.seq = Math.floor(Date.now() / 1000) & 0x7fffffff;
  }

  /** Opens a socket in the calling thread's current network namespace. */
  static open(protocol = libc.NETLINK_ROUTE): NetlinkSocket {
    let fd = -1;
    try {
      fd = libc.socket(libc.AF_NETLINK, libc.SOCK_RAW | libc.SOCK_CLOEXEC, protocol);
      libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO_SNDBUF, 1 << 20);
      libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO_RCVBUF, 1 << 20);
      // Extended acks carry the kernel's reason text; capped acks keep errors from echoing whole requests.
      libc.setsockoptInt(fd, libc.SOL_NETLINK, libc.NETLINK_EXT_ACK, 1);
      libc.setsockoptInt(fd, libc.SOL_NETLINK, libc.NETLINK_CAP_ACK, 1);
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
      libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_RCVTIMEO, tv);
      libc.bind(fd, sockaddrNl());
      const self = Buffer.alloc(SOCKADDR_NL_LEN);
      libc.getsockname(fd, self);
      return new NetlinkSocket(fd, self.readUInt32LE(4));
    } catch (err) {
      if (fd >= 0) libc.close(fd);
      const errno = err instanceof KernelError ? err.errno : undefined;
      throw new KernelError(
        'TENDRIL_ERR_NETLINK',
        `Cannot open netlink socket: ${err instanceof Error ? err.message : String(err)}`,
        { ...(errno !== undefined ? { errno } : {}), cause: err },
      );
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }

  /**
   * Sends a request with NLM_F_ACK and returns the messages answered before the ack (e.g. the link of a
   * RTM_GETLINK). Throws NetlinkRequestError when the kernel refuses.
   */
  request(req: Request): Message[] {
    return this.collect(this.send({ ...req, flags: req.flags | NLM_F_ACK }));
  }

  /** request() with the send (where the kernel does the work) on a worker thread. One at a time per socket. */
  async requestAsync(req: Request): Promise<Message[]> {
    this.assertOpen();
    this.seq = (this.seq + 1) >>> 0;
    const seq = this.seq;
    const buf = encodeMessage({ ...req, flags: req.flags | NLM_F_ACK }, seq);
    await libc.sendtoAsync(this.fd, buf, buf.length, 0, sockaddrNl(0));
    return this.collect(seq);
  }

  private collect(seq: number): Message[] {
    const out: Message[] = [];
    for (;;) {
      for (const msg of this.receive()) {
        if (msg.seq !== seq) continue; // late answer to an earlier request
        if (msg.type === NLMSG_ERROR) {
          const ack = parseAck(msg);
          if (ack.errno !== 0) throw new NetlinkRequestError(ack);
          return out;
        }
        if (msg.type === NLMSG_NOOP) continue;
        out.push(msg);
      }
    }
  }

  /** Sends a dump request (flags include NLM_F_DUMP) and collects every part up to NLMSG_DONE. */
  dump(req: Request): Message[] {
    for (let attempt = 1; ; attempt++) {
      const { messages, interrupted } = this.dumpOnce(req);
      // The kernel marks a dump whose tables changed under it; a retry gives a consistent view.
      if (!interrupted || attempt >= DUMP_RETRIES) return messages;
    }
  }

  private dumpOnce(req: Request): { messages: Message[]; interrupted: boolean } {
    const seq = this.send(req);
    const messages: Message[] = [];
    let interrupted = false;
    for (;;) {
      for (const msg of this.receive()) {
        if (msg.seq !== seq) continue;
        if (msg.flags & NLM_F_DUMP_INTR) interrupted = true;
        if (msg.type === NLMSG_DONE) {
          const ack = parseAck(msg);
          if (ack.errno !== 0) throw new NetlinkRequestError(ack);
          return { messages, interrupted };
        }
        if (msg.type === NLMSG_ERROR) {
          const ack = parseAck(msg);
          throw new NetlinkRequestError(ack.errno !== 0 ? ack : { errno: 5 /* EIO: ack where parts were due */ });
        }
        if (msg.type === NLMSG_NOOP || msg.type === NLMSG_OVERRUN) continue;
        messages.push(msg);
      }
    }
  }

  private send(req: Request): number {
    this.assertOpen();
    this.seq = (this.seq + 1) >>> 0;
    const buf = encodeMessage(req, this.seq);
    libc.sendto(this.fd, buf, buf.length, 0, sockaddrNl(0));
    return this.seq;
  }

  /** One datagram, split into messages. Peeks first so the buffer can grow to fit any answer. */
  private receive(): Message[] {
    this.assertOpen();
    for (;;) {
      try {
        const size = libc.recv(this.fd, this.buf, this.buf.length, libc.MSG_PEEK | libc.MSG_TRUNC);
        if (size > this.buf.length) this.buf = Buffer.alloc(Math.max(size, this.buf.length * 2));
        const n = libc.recv(this.fd, this.buf, this.buf.length, 0);
        // Copy out: the buffer is reused by the next receive while callers still hold payload views.
        return parseMessages(Buffer.from(this.buf.subarray(0, n)));
      } catch (err) {
        if (err instanceof KernelError && err.is('EINTR')) continue; // a signal (e.g. SIGCHLD) woke us
        if (err instanceof KernelError && (err.is('EAGAIN') || err.is('EWOULDBLOCK'))) {
          throw new KernelError('TENDRIL_ERR_NETLINK', `No netlink answer within ${RECV_TIMEOUT_S} s`, {
            ...(err.errno !== undefined ? { errno: err.errno } : {}),
            cause: err,
          });
        }
        throw err;
      }
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new KernelError('TENDRIL_ERR_NETLINK', 'Cannot use netlink socket: it is closed');
  }
}
