// BPF_PROG_QUERY on tcx hooks: which programs and links are attached to an interface (what `bpftool net show`
// prints on newer bpftool; Debian 12's bpftool 7.1 predates tcx and shows nothing).
import { BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY, BPF_TCX_EGRESS, BPF_TCX_INGRESS, closeQuietly, fdById, progInfo, ptr, sysBpf, bpfError } from './syscall.js';
import type { Direction } from './link.js';

export interface TcxAttachment {
  direction: Direction;
  progId: number;
  progName: string;
  linkId: number;
}

const MAX_PROGS = 64;

/** Programs attached with tcx to `ifindex` (in the calling thread's netns), in execution order. */
export function queryTcx(ifindex: number, direction: Direction): TcxAttachment[] {
  const progIds = Buffer.alloc(4 * MAX_PROGS);
  const linkIds = Buffer.alloc(4 * MAX_PROGS);
  const attr = Buffer.alloc(64);
  attr.writeUInt32LE(ifindex, 0);
  attr.writeUInt32LE(direction === 'ingress' ? BPF_TCX_INGRESS : BPF_TCX_EGRESS, 4);
  attr.writeBigUInt64LE(ptr(progIds), 16);
  attr.writeUInt32LE(MAX_PROGS, 24);
  attr.writeBigUInt64LE(ptr(linkIds), 40);
  const r = sysBpf(BPF_PROG_QUERY, attr);
  if (!r.ok) throw bpfError(`Cannot query tcx ${direction} programs of ifindex ${ifindex}`, r.errno);
  const count = attr.readUInt32LE(24);
  const out: TcxAttachment[] = [];
  for (let i = 0; i < Math.min(count, MAX_PROGS); i++) {
    const progId = progIds.readUInt32LE(4 * i);
    let progName = '';
    try {
      const fd = fdById(BPF_PROG_GET_FD_BY_ID, progId, () => `Cannot open program ${progId}`);
      try {
        progName = progInfo(fd, () => `Cannot read program ${progId}`).name;
      } finally {
        closeQuietly(fd);
      }
    } catch {
      // detached meanwhile
    }
    out.push({ direction, progId, progName, linkId: linkIds.readUInt32LE(4 * i) });
  }
  return out;
}
