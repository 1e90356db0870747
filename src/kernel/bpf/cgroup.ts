// cgroup attachments: BPF links of sock_addr programs on a cgroup v2 directory (BPF_LINK_CREATE with the cgroup's
// fd as target). An unpinned link detaches when its last fd closes, so a crashed holder leaves nothing attached; a
// link pinned on a bpffs stays attached without a holder (the agent's socket LB survives its restart) and is
// re-adopted with openPinned() and given the new program with update() (BPF_LINK_UPDATE: no moment without one).
import fs from 'node:fs';
import { KernelError } from '../errors.js';
import type { BpfProgram } from './program.js';
import { BPF_LINK_CREATE, BPF_LINK_UPDATE, bpfError, bpfOrThrow, closeQuietly, objGet, objInfo, objPin, sysBpf } from './syscall.js';

// enum bpf_attach_type
export const BPF_CGROUP_INET4_CONNECT = 10;
export const BPF_CGROUP_UDP4_SENDMSG = 14;
export const BPF_CGROUP_UDP4_RECVMSG = 19;
export const BPF_CGROUP_INET4_GETPEERNAME = 29;

const CGROUP2_SUPER_MAGIC = 0x63677270;
/** enum bpf_link_type BPF_LINK_TYPE_CGROUP. */
export const BPF_LINK_TYPE_CGROUP = 3;

/** What the kernel says of a cgroup link (struct bpf_link_info with its cgroup member). */
export interface CgroupLinkInfo {
  type: number;
  id: number;
  progId: number;
  /** The cgroup's id: the inode number of its directory. */
  cgroupId: bigint;
  attachType: number;
}

/** A program attached to a cgroup through a BPF link; close() detaches it unless the link is pinned. */
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

  /**
   * Opens a link pinned at `pinPath` and checks it is a cgroup link of `attachType` on the cgroup `dir` (a pin of
   * something else is an error: the caller decides whether to replace it).
   */
  static openPinned(pinPath: string, dir: string, attachType: number): CgroupLink {
    const fd = objGet(pinPath, () => `Cannot open pinned link "${pinPath}"`);
    try {
      const info = CgroupLink.info(fd);
      const want = BigInt(fs.statSync(dir, { bigint: true }).ino);
      if (info.type !== BPF_LINK_TYPE_CGROUP || info.attachType !== attachType || info.cgroupId !== want) {
        throw new KernelError(
          'TENDRIL_ERR_BPF',
          `Cannot adopt pinned link "${pinPath}": it is link type ${info.type}, attach type ${info.attachType} on cgroup id ${info.cgroupId}, not a cgroup link of attach type ${attachType} on "${dir}" (id ${want})`,
        );
      }
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    return new CgroupLink(fd, dir, attachType);
  }

  /** BPF_OBJ_GET_INFO_BY_FD of a link fd. */
  static info(fd: number): CgroupLinkInfo {
    // struct bpf_link_info: type@0 id@4 prog_id@8, union@16; cgroup { cgroup_id@16 (u64), attach_type@24 }.
    const b = objInfo(fd, 64, () => `Cannot get info of link fd ${fd}`);
    return { type: b.readUInt32LE(0), id: b.readUInt32LE(4), progId: b.readUInt32LE(8), cgroupId: b.readBigUInt64LE(16), attachType: b.readUInt32LE(24) };
  }

  info(): CgroupLinkInfo {
    return CgroupLink.info(this.fd);
  }

  /** Pins the link at `pinPath` (on a bpffs): it stays attached after every fd is closed, until the pin goes. */
  pin(pinPath: string): void {
    objPin(this.fd, pinPath, () => `Cannot pin cgroup link at "${pinPath}"`);
  }

  /** Atomically replaces the attached program (the cgroup is never without one). */
  update(prog: BpfProgram): void {
    // link_update: link_fd@0 new_prog_fd@4 flags@8 old_prog_fd@12
    const attr = Buffer.alloc(16);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(prog.fd, 4);
    bpfOrThrow(BPF_LINK_UPDATE, attr, () => `Cannot update cgroup link on "${this.cgroup}" to program "${prog.name}"`);
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

/**
 * The kernel's id of the cgroup v2 directory `dir` (its inode number: what bpf_skb_cgroup_id() and friends return)
 * and its level (0 the hierarchy's root, 1 a directory in it...): bpf_skb_ancestor_cgroup_id(skb, level) == id says
 * whether a packet's socket lives in `dir` or below.
 */
export function cgroupIdLevel(dir: string): { id: bigint; level: number } {
  if (!isCgroup2(dir)) throw new KernelError('TENDRIL_ERR_BPF', `Cannot get the cgroup id of "${dir}": not a cgroup v2 directory`);
  let level = 0;
  for (let d = fs.realpathSync(dir); !isCgroupRoot(d); d = fs.realpathSync(`${d}/..`)) level++;
  return { id: BigInt(fs.statSync(dir, { bigint: true }).ino), level };
}

/** Whether `dir` is the root of its cgroup v2 hierarchy (its parent is on another filesystem). */
export function isCgroupRoot(dir: string): boolean {
  const parent = fs.realpathSync(`${dir}/..`);
  return fs.realpathSync(dir) === parent || fs.statSync(parent).dev !== fs.statSync(dir).dev || !isCgroup2(parent);
}
