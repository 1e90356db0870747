// A live BPF program (an fd we own): test runs (BPF_PROG_TEST_RUN), pinning. Attaching is link.ts's (attachTcx()...).
import { KernelError } from '../errors.js';
import {
  BPF_PROG_GET_FD_BY_ID,
  BPF_PROG_TEST_RUN,
  bpfOrThrow,
  closeQuietly,
  fdById,
  objGet,
  objPin,
  progInfo,
  ptr,
} from './syscall.js';

export interface RunOptions {
  /** Packet bytes (for tc/xdp: starting at the Ethernet header). */
  data: Buffer;
  /** Program context in (tc: a struct __sk_buff, see skbCtx()); the kernel writes it back into result.ctx. */
  ctx?: Buffer;
  /** Runs the program this many times (for timing); the packet result is the last run's. */
  repeat?: number;
  /** Room for the output packet; default data.length + 512 (encapsulation grows packets). */
  dataSizeOut?: number;
}

export interface RunResult {
  retval: number;
  /** The packet after the program ran. */
  data: Buffer;
  /** Mean duration of one run in nanoseconds. */
  durationNs: number;
  ctx?: Buffer;
}

/** sizeof(struct __sk_buff) in Linux >= 5.16 (hwtstamp is the last field). */
export const SKB_CTX_SIZE = 192;

/**
 * A struct __sk_buff for BPF_PROG_TEST_RUN of tc programs. Only the fields the kernel accepts from
 * userspace are settable (the rest must be zero). ifindex/ingressIfindex are looked up by the kernel in
 * the network namespace of the CALLING thread (run inside Netns.run() to use a namespace's devices).
 */
export function skbCtx(o: {
  ifindex?: number;
  ingressIfindex?: number;
  mark?: number;
  priority?: number;
  cb?: readonly number[];
  tstamp?: bigint;
}): Buffer {
  const b = Buffer.alloc(SKB_CTX_SIZE);
  b.writeUInt32LE(o.mark ?? 0, 8);
  b.writeUInt32LE(o.priority ?? 0, 32);
  b.writeUInt32LE(o.ingressIfindex ?? 0, 36);
  b.writeUInt32LE(o.ifindex ?? 0, 40);
  const cb = o.cb ?? [];
  if (cb.length > 5) throw new RangeError(`Cannot build __sk_buff: cb has 5 slots, got ${cb.length}`);
  cb.forEach((v, i) => b.writeUInt32LE(v, 48 + 4 * i));
  b.writeBigUInt64LE(o.tstamp ?? 0n, 152);
  return b;
}

/** Named fields of a __sk_buff written back by a test run. */
export function decodeSkbCtx(b: Buffer): { mark: number; priority: number; ifindex: number; cb: number[]; tcIndex: number } {
  return {
    mark: b.readUInt32LE(8),
    priority: b.readUInt32LE(32),
    ifindex: b.readUInt32LE(40),
    tcIndex: b.readUInt32LE(44),
    cb: [0, 1, 2, 3, 4].map((i) => b.readUInt32LE(48 + 4 * i)),
  };
}

export class BpfProgram {
  readonly name: string;
  /** ELF section the program came from ("" when opened from a pin or id). */
  readonly section: string;
  readonly type: number;
  readonly id: number;
  private fdValue: number;

  /** Takes ownership of `fd`. `name` overrides the kernel's (15-character) name. */
  constructor(fd: number, o: { name?: string; section?: string } = {}) {
    const info = progInfo(fd, () => `Cannot get info of program fd ${fd}`);
    this.fdValue = fd;
    this.name = o.name ?? info.name;
    this.section = o.section ?? '';
    this.type = info.type;
    this.id = info.id;
  }

  /** Opens a program pinned on a bpffs. */
  static openPinned(path: string): BpfProgram {
    const fd = objGet(path, () => `Cannot open pinned program "${path}"`);
    return adopt(fd, () => new BpfProgram(fd));
  }

  /** Opens a loaded program by its kernel id (e.g. a link's progId). */
  static fromId(id: number): BpfProgram {
    const fd = fdById(BPF_PROG_GET_FD_BY_ID, id, () => `Cannot open program id ${id}`);
    return adopt(fd, () => new BpfProgram(fd));
  }

  get fd(): number {
    if (this.fdValue < 0) throw new KernelError('TENDRIL_ERR_BPF', `Cannot use program "${this.name}": it is closed`);
    return this.fdValue;
  }

  /** BPF_PROG_TEST_RUN on a crafted packet. */
  run(o: RunOptions): RunResult {
    const repeat = o.repeat ?? 1;
    const outSize = o.dataSizeOut ?? o.data.length + 512;
    const dataOut = Buffer.alloc(outSize);
    const ctxOut = o.ctx === undefined ? undefined : Buffer.alloc(o.ctx.length);
    // union bpf_attr .test: prog_fd@0 retval@4 data_size_in@8 data_size_out@12 data_in@16 data_out@24
    // repeat@32 duration@36 ctx_size_in@40 ctx_size_out@44 ctx_in@48 ctx_out@56 flags@64 cpu@68 batch_size@72
    const attr = Buffer.alloc(80);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(o.data.length, 8);
    attr.writeUInt32LE(outSize, 12);
    attr.writeBigUInt64LE(ptr(o.data), 16);
    attr.writeBigUInt64LE(ptr(dataOut), 24);
    attr.writeUInt32LE(repeat, 32);
    if (o.ctx !== undefined && ctxOut !== undefined) {
      attr.writeUInt32LE(o.ctx.length, 40);
      attr.writeUInt32LE(ctxOut.length, 44);
      attr.writeBigUInt64LE(ptr(o.ctx), 48);
      attr.writeBigUInt64LE(ptr(ctxOut), 56);
    }
    bpfOrThrow(BPF_PROG_TEST_RUN, attr, () => `Cannot test-run program "${this.name}"`);
    const result: RunResult = {
      retval: attr.readUInt32LE(4),
      data: dataOut.subarray(0, Math.min(attr.readUInt32LE(12), outSize)),
      durationNs: attr.readUInt32LE(36),
    };
    if (ctxOut !== undefined) result.ctx = ctxOut.subarray(0, Math.min(attr.readUInt32LE(44), ctxOut.length));
    return result;
  }

  pin(path: string): void {
    objPin(this.fd, path, () => `Cannot pin program "${this.name}" at "${path}"`);
  }

  close(): void {
    closeQuietly(this.fdValue);
    this.fdValue = -1;
  }
}

function adopt<T>(fd: number, make: () => T): T {
  try {
    return make();
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
}
