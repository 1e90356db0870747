// Netlink messages: nlmsghdr encoding, splitting a received datagram into messages, and ack/error parsing.
import { Attrs, align4 } from './attrs.js';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_REQUEST,
  NLMSGERR_ATTR_MSG,
  NLMSGERR_ATTR_OFFS,
} from './constants.js';

export const NLMSG_HDRLEN = 16;

/** A request before it gets a sequence number: message type, flags (NLM_F_REQUEST is implied), body. */
export interface Request {
  readonly type: number;
  readonly flags: number;
  /** Fixed header (ifinfomsg, rtmsg, ...) followed by the encoded attributes. */
  readonly body: Buffer;
}

export interface Message {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** Everything after the nlmsghdr, up to nlmsg_len. */
  readonly payload: Buffer;
}

/** Outcome carried by an NLMSG_ERROR (or a dump's NLMSG_DONE): errno 0 is an ack. */
export interface Ack {
  /** Positive errno, 0 for success. */
  readonly errno: number;
  /** Extended ack text (NLMSGERR_ATTR_MSG), when the kernel gave one. */
  readonly message?: string;
  /** Offset of the offending attribute in the request (NLMSGERR_ATTR_OFFS). */
  readonly offset?: number;
}

export function encodeMessage(req: Request, seq: number, pid = 0): Buffer {
  const len = NLMSG_HDRLEN + req.body.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt32LE(len, 0);
  buf.writeUInt16LE(req.type, 4);
  buf.writeUInt16LE(req.flags | NLM_F_REQUEST, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(pid >>> 0, 12);
  req.body.copy(buf, NLMSG_HDRLEN);
  return buf;
}

/** Splits one received datagram into its messages (payloads are views into `buf`). */
export function parseMessages(buf: Buffer, length = buf.length): Message[] {
  const out: Message[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > length) {
      throw new RangeError(`Malformed netlink message at offset ${off}: length ${len} of ${length - off} bytes`);
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/**
 * Reads struct nlmsgerr from NLMSG_ERROR (int error, the echoed request header — whole request unless
 * NLM_F_CAPPED — then extended-ack TLVs if NLM_F_ACK_TLVS) or the int of an NLMSG_DONE.
 */
export function parseAck(msg: Message): Ack {
  const p = msg.payload;
  if (p.length < 4) return { errno: 0 };
  const raw = p.readInt32LE(0);
  const errno = raw === 0 ? 0 : -raw;
  let tlvStart: number;
  if (msg.type === NLMSG_ERROR) {
    if (p.length < 4 + NLMSG_HDRLEN) return { errno };
    const echoed = msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : p.readUInt32LE(4);
    tlvStart = 4 + align4(echoed);
  } else if (msg.type === NLMSG_DONE) {
    tlvStart = 4;
  } else {
    throw new TypeError(`parseAck() needs NLMSG_ERROR or NLMSG_DONE, got message type ${msg.type}`);
  }
  if (!(msg.flags & NLM_F_ACK_TLVS) || tlvStart >= p.length) return { errno };
  const tlvs = Attrs.parse(p, tlvStart);
  const message = tlvs.str(NLMSGERR_ATTR_MSG);
  const offset = tlvs.u32(NLMSGERR_ATTR_OFFS);
  return {
    errno,
    ...(message !== undefined && message !== '' ? { message } : {}),
    ...(offset !== undefined ? { offset } : {}),
  };
}
