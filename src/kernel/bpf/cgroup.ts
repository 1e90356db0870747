// cgroup attachments: BPF links of sock_addr programs on a cgroup v2 directory (BPF_LINK_CREATE with the cgroup's
// fd as target). The link detaches when its last fd closes, so a crashed holder leaves nothing attached.
import fs from 'node:fs';
import { KernelError } from '../errors.js';
import type { BpfProgram } from './program.js';
import { BPF_LINK_CREATE, bpfError, closeQuietly, sysBpf } from './syscall.js';

// enum bpf_attach_type
export const BPF_CGROUP_INET4_CONNECT = 10;
export const BPF_CGROUP_UDP4_SENDMSG = 14;
export const BPF_CGROUP_UDP4_RECVMSG = 19;
export const BPF_CGROUP_INET4_GETPEERNAME = 29;

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** A program attached to a cgroup through a BPF link; close() detaches it. */
export class CgroupLink {
  private fdValue: number;
  readonly cgroup: string;
  readonly attachType: number;

  private constructor(fd: number, cgroup: string, attachType: number) {
    this.fdValue = fd;
    this.cgroup = cgroup;
    this.attachType = attachType;
  }

  get fd(): number {
    return this.fdValue;
  }

  /** Attaches `prog` to the cgroup v2 directory `dir` at `attachType` (BPF_CGROUP_*). */
  static attach(prog: BpfProgram, dir: string, attachType: number): CgroupLink {
    if (!isCgroup2(dir)) throw new KernelError('TENDRIL_ERR_BPF', `Cannot attach "${prog.name}" to "${dir}": not a cgroup v2 directory`);
    const cg = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      // link_create: prog_fd@0 target_fd@4 attach_type@8 flags@12
      const attr = Buffer.alloc(32);
      attr.writeUInt32LE(prog.fd, 0);
      attr.writeUInt32LE(cg, 4);
      attr.writeUInt32LE(attachType, 8);
      const r = sysBpf(BPF_LINK_CREATE, attr);
      if (!r.ok) throw bpfError(`Cannot attach "${prog.name}" to cgroup "${dir}" (attach type ${attachType})`, r.errno);
      return new CgroupLink(r.value, dir, attachType);
    } finally {
      fs.closeSync(cg);
    }
  }

  close(): void {
    if (this.fdValue < 0) return;
    closeQuietly(this.fdValue);
    this.fdValue = -1;
  }
}

/** Whether `dir` is a directory of a cgroup v2 hierarchy. */
export function isCgroup2(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === CGROUP2_SUPER_MAGIC && fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Whether `dir` is the root of its cgroup v2 hierarchy (its parent is on another filesystem). */
export function isCgroupRoot(dir: string): boolean {
  const parent = fs.realpathSync(`${dir}/..`);
  return fs.realpathSync(dir) === parent || fs.statSync(parent).dev !== fs.statSync(dir).dev || !isCgroup2(parent);
}
