// BPF iterators (BPF_TRACE_ITER): a link of an iter/* program (BPF_LINK_CREATE), and one pass over its objects per
// BPF_ITER_CREATE fd read to the end. The tcp/udp iterators walk the sockets of the network namespace of the thread
// that creates the fd (run() inside Netns.run() for another namespace's); the bytes read are what the program wrote.
import fs from 'node:fs';
import { KernelError } from '../errors.js';
import type { BpfProgram } from './program.js';
import { BPF_LINK_CREATE, bpfOrThrow, closeQuietly } from './syscall.js';

/** enum bpf_cmd BPF_ITER_CREATE. */
const BPF_ITER_CREATE = 33;
/** enum bpf_attach_type BPF_TRACE_ITER. */
export const BPF_TRACE_ITER = 28;

/** An iter/* program attached as an iterator link; open() makes one pass. */
export class IterLink {
  readonly name: string;
  private fdValue: number;

  private constructor(fd: number, name: string) {
    this.fdValue = fd;
    this.name = name;
  }

  /** Attaches an iter program without iterator arguments (iter/tcp, iter/udp, iter/task...). */
  static attach(prog: BpfProgram): IterLink {
    // link_create: prog_fd@0 target_fd@4 attach_type@8 flags@12, iter_info@16 iter_info_len@24 (none here)
    const attr = Buffer.alloc(32);
    attr.writeUInt32LE(prog.fd, 0);
    attr.writeUInt32LE(BPF_TRACE_ITER, 8);
    const fd = bpfOrThrow(BPF_LINK_CREATE, attr, () => `Cannot attach iterator "${prog.name}"`);
    return new IterLink(fd, prog.name);
  }

  get fd(): number {
    if (this.fdValue < 0) throw new KernelError('TENDRIL_ERR_BPF', `Cannot use iterator "${this.name}": it is closed`);
    return this.fdValue;
  }

  /**
   * One pass: creates the iterator fd (in the calling thread's network namespace) and reads it to the end, which
   * runs the program on every object. Returns what the program wrote (bpf_seq_write/bpf_seq_printf).
   */
  run(): Buffer {
    const attr = Buffer.alloc(8);
    attr.writeUInt32LE(this.fd, 0);
    const fd = bpfOrThrow(BPF_ITER_CREATE, attr, () => `Cannot create an iterator of "${this.name}"`);
    try {
      const chunks: Buffer[] = [];
      const buf = Buffer.alloc(4096);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        chunks.push(Buffer.from(buf.subarray(0, n)));
      }
      return Buffer.concat(chunks);
    } catch (err) {
      throw new KernelError('TENDRIL_ERR_BPF', `Cannot read the iterator of "${this.name}": ${(err as Error).message}`, { cause: err });
    } finally {
      closeQuietly(fd);
    }
  }

  close(): void {
    closeQuietly(this.fdValue);
    this.fdValue = -1;
  }
}
