// Attachments of tc programs: tcx BPF links (BPF_LINK_CREATE, Linux >= 6.6) and the clsact + cls_bpf fallback.
import fs from 'node:fs';
import { KernelError, errnoText } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { linkCreateAsync } from '../native/libbpf.js';
import {
  BPF_LINK_CREATE,
  BPF_LINK_DETACH,
  BPF_LINK_GET_FD_BY_ID,
  BPF_LINK_TYPE_TCX,
  BPF_LINK_UPDATE,
  BPF_PROG_LOAD,
  BPF_PROG_TYPE_SCHED_CLS,
  BPF_TCX_EGRESS,
  BPF_TCX_INGRESS,
  bpfError,
  bpfOrThrow,
  closeQuietly,
  fdById,
  objGet,
  objInfo,
  objPin,
  ptr,
  sysBpf,
} from './syscall.js';

export type Direction = 'ingress' | 'egress';
export type AttachMode = 'tcx' | 'tc' | 'auto';

/** What an attach needs of a program: its fd and (for tc filters and messages) its name. A BpfProgram is one. */
export interface AttachableProgram {
  readonly fd: number;
  readonly name: string;
}

export interface AttachOptions {
  program: AttachableProgram;
  /** ifindex in the CALLING thread's network namespace (the async verbs: the PROCESS's, see attachTcxAsync). */
  ifindex: number;
  direction: Direction;
  /** 'auto' (default): tcx, or clsact + cls_bpf when the kernel has no tcx. */
  mode?: AttachMode;
  /** tc fallback only: filter priority and handle (default 1/1, as Cilium). */
  prio?: number;
  handle?: number;
}

export interface LinkInfo {
  /** enum bpf_link_type (11 = tcx). */
  type: number;
  id: number;
  progId: number;
  /** 0 once the link is detached (defunct) or its device is gone. */
  ifindex: number;
  attachType: number;
  direction: Direction | undefined;
}

const EINVAL = 22;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524; // kernel-internal, leaks to userspace from some BPF paths
const ENODEV = 19;

interface TcAttachment {
  netlink: Netlink;
  ifindex: number;
  direction: Direction;
  prio: number;
  handle: number;
  name: string;
}

export class Link {
  readonly kind: 'tcx' | 'tc';
  private fdValue: number;
  private pinnedAt: string | undefined;
  private readonly tc: TcAttachment | undefined;

  private constructor(kind: 'tcx' | 'tc', fd: number, tc?: TcAttachment) {
    this.kind = kind;
    this.fdValue = fd;
    this.tc = tc;
  }

  /** The link fd (tcx); -1 for a tc attachment, which is not an fd-backed object. */
  get fd(): number {
    if (this.kind === 'tc') return -1;
    if (this.fdValue < 0) throw new KernelError('TENDRIL_ERR_BPF', 'Cannot use link: it is closed');
    return this.fdValue;
  }

  /** Opens a tcx link pinned on a bpffs (re-adoption after an agent restart). */
  static openPinned(path: string): Link {
    const fd = objGet(path, () => `Cannot open pinned link "${path}"`);
    try {
      const info = Link.info(fd);
      if (info.type !== BPF_LINK_TYPE_TCX) {
        throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot open pinned link "${path}": link type ${info.type} is not tcx`);
      }
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    const link = new Link('tcx', fd);
    link.pinnedAt = path;
    return link;
  }

  /** Opens a link by kernel id. */
  static fromId(id: number): Link {
    const fd = fdById(BPF_LINK_GET_FD_BY_ID, id, () => `Cannot open link id ${id}`);
    return new Link('tcx', fd);
  }

  /** BPF_OBJ_GET_INFO_BY_FD on a link fd: which program, which device, which hook. */
  static info(fd: number): LinkInfo {
    // struct bpf_link_info: type@0 id@4 prog_id@8, union@16; tcx { ifindex@16, attach_type@20 }.
    const b = objInfo(fd, 64, () => `Cannot get info of link fd ${fd}`);
    const attachType = b.readUInt32LE(20);
    return {
      type: b.readUInt32LE(0),
      id: b.readUInt32LE(4),
      progId: b.readUInt32LE(8),
      ifindex: b.readUInt32LE(16),
      attachType,
      direction: attachType === BPF_TCX_INGRESS ? 'ingress' : attachType === BPF_TCX_EGRESS ? 'egress' : undefined,
    };
  }

  info(): LinkInfo {
    if (this.tc !== undefined) {
      throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot get link info of tc filter "${this.tc.name}": not a BPF link`);
    }
    return Link.info(this.fd);
  }

  /** Pins the link so the program stays attached after this process closes the fd. tcx only. */
  pin(path: string): void {
    if (this.tc !== undefined) {
      // A cls_bpf filter already persists without an fd; there is nothing to pin.
      throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `Cannot pin tc filter "${this.tc.name}": only tcx links can be pinned`);
    }
    objPin(this.fd, path, () => `Cannot pin link at "${path}"`);
    this.pinnedAt = path;
  }

  /** Removes the pin this link was pinned at or opened from; the link lives on while the fd is open. */
  unpin(): void {
    if (this.pinnedAt === undefined) return;
    fs.rmSync(this.pinnedAt, { force: true });
    this.pinnedAt = undefined;
  }

  /** Atomically replaces the attached program (no RCU grace period, unlike a new tcx attach). */
  update(prog: AttachableProgram): void {
    if (this.tc !== undefined) {
      // cls_bpf create-or-replace on the same prio/handle swaps the program in one step.
      this.tc.netlink.attachBpfFilter({ ...this.tcSpec(this.tc), progFd: prog.fd, name: prog.name });
      this.tc.name = prog.name;
      return;
    }
    // link_update: link_fd@0 new_prog_fd@4 flags@8 old_prog_fd@12
    const attr = Buffer.alloc(16);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(prog.fd, 4);
    bpfOrThrow(BPF_LINK_UPDATE, attr, () => `Cannot update link to program "${prog.name}"`);
  }

  /** Detaches the program now (even if pinned elsewhere), removes our pin and closes the link. */
  detach(): void {
    if (this.tc !== undefined) {
      this.tc.netlink.detachBpfFilter(this.tcSpec(this.tc));
      this.close();
      return;
    }
    const attr = Buffer.alloc(4);
    attr.writeUInt32LE(this.fd, 0);
    bpfOrThrow(BPF_LINK_DETACH, attr, () => 'Cannot detach link');
    this.unpin();
    this.close();
  }

  /**
   * Releases our handle. An unpinned tcx link detaches when its last fd closes; a pinned one, or a tc
   * filter, stays attached.
   */
  close(): void {
    if (this.tc !== undefined) {
      this.tc.netlink.close();
      this.fdValue = -1;
      return;
    }
    closeQuietly(this.fdValue);
    this.fdValue = -1;
  }

  private tcSpec(tc: TcAttachment): { ifindex: number; direction: Direction; prio: number; handle: number } {
    return { ifindex: tc.ifindex, direction: tc.direction, prio: tc.prio, handle: tc.handle };
  }

  /** @internal The verbs below make links; this wraps a link fd they got from the kernel. */
  static fromFd(fd: number): Link {
    return new Link('tcx', fd);
  }

  /** @internal attachTc() makes tc attachments. */
  static fromTc(tc: TcAttachment): Link {
    return new Link('tc', -1, tc);
  }
}

/**
 * Attaches a program as a tcx link (BPF_LINK_CREATE) on a hook of an interface of the CALLING thread's network
 * namespace. The link detaches when its last fd closes, unless pinned. Costs an RCU grace period under RTNL in the
 * kernel (10-30 ms on a VM): see attachTcxAsync(). "tcx not supported (needs Linux 6.6)" on older kernels.
 */
export function attachTcx(o: AttachOptions): Link {
  const r = simulateNoTcx ? { errno: EINVAL } : tcxCreate(o);
  return r instanceof Link ? r : tcxFailed(o, r.errno);
}

/**
 * attachTcx() on a libuv worker thread, so the event loop runs on while the kernel waits out its grace period, and
 * concurrent attaches share one. The ifindex is resolved in the netns of the worker threads, i.e. the PROCESS's:
 * not for use inside Netns.run().
 */
export async function attachTcxAsync(o: AttachOptions): Promise<Link> {
  const r = simulateNoTcx ? { errno: EINVAL } : await linkCreateAsync(o.program.fd, o.ifindex, tcxAttachType(o.direction));
  return 'fd' in r ? Link.fromFd(r.fd) : tcxFailed(o, r.errno);
}

/** Attaches a program as a cls_bpf filter on clsact (created when missing): the pre-6.6 way, about a millisecond. */
export function attachTc(o: AttachOptions): Link {
  const netlink = Netlink.open();
  const tc: TcAttachment = {
    netlink,
    ifindex: o.ifindex,
    direction: o.direction,
    prio: o.prio ?? 1,
    handle: o.handle ?? 1,
    name: o.program.name,
  };
  try {
    netlink.ensureClsact(o.ifindex);
    netlink.attachBpfFilter({ ifindex: tc.ifindex, direction: tc.direction, prio: tc.prio, handle: tc.handle, progFd: o.program.fd, name: o.program.name });
  } catch (err) {
    netlink.close();
    throw err;
  }
  return Link.fromTc(tc);
}

/** By mode: 'tcx', 'tc', or 'auto' (default): tcx, or clsact + cls_bpf when the kernel has no tcx (< 6.6). */
export function attachProgram(o: AttachOptions): Link {
  const mode = o.mode ?? 'auto';
  if (mode === 'tc') return attachTc(o);
  if (mode === 'tcx') return attachTcx(o);
  const r = simulateNoTcx ? { errno: EINVAL } : tcxCreate(o);
  return r instanceof Link ? r : fallback(o, r.errno);
}

function tcxAttachType(direction: Direction): number {
  return direction === 'ingress' ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
}

function tcxCreate(o: AttachOptions): Link | { errno: number } {
  // link_create: prog_fd@0 target_ifindex@4 attach_type@8 flags@12 tcx.relative_fd@16 tcx.expected_revision@24
  const attr = Buffer.alloc(32);
  attr.writeUInt32LE(o.program.fd, 0);
  attr.writeUInt32LE(o.ifindex, 4);
  attr.writeUInt32LE(tcxAttachType(o.direction), 8);
  const r = sysBpf(BPF_LINK_CREATE, attr);
  return r.ok ? Link.fromFd(r.value) : { errno: r.errno };
}

function where(o: AttachOptions): string {
  return `Cannot attach program "${o.program.name}" to ${o.direction} of ifindex ${o.ifindex}`;
}

function looksUnsupported(errno: number): boolean {
  return errno === EINVAL || errno === EOPNOTSUPP || errno === ENOTSUPP;
}

/** A failed tcx attach: "not supported" when the probe says the kernel has no tcx, else the errno. */
function tcxFailed(o: AttachOptions, errno: number): never {
  if (looksUnsupported(errno) && !haveTcx()) {
    throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `${where(o)}: tcx not supported (needs Linux 6.6)`, { errno });
  }
  throw bpfError(`${where(o)} with tcx`, errno);
}

/** After a failed tcx attach in mode 'auto': a real error, or (kernel < 6.6) clsact + cls_bpf. */
function fallback(o: AttachOptions, errno: number): Link {
  if (!looksUnsupported(errno) || haveTcx()) throw bpfError(`${where(o)} with tcx`, errno);
  try {
    return attachTc(o);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new KernelError('TENDRIL_ERR_NOT_SUPPORTED', `${where(o)}: tcx not supported (needs Linux 6.6), tc fallback failed: ${why}`, {
      cause: err,
    });
  }
}

let tcxProbe: boolean | undefined;
let simulateNoTcx = false;

/** @internal Tests only: behave as on a kernel without tcx (< 6.6), to exercise the fallback on a newer one. */
export function simulateNoTcxForTesting(on: boolean): void {
  simulateNoTcx = on;
}

/**
 * Feature probe: does this kernel know tcx? Attaches a trivial tc program to a device that cannot exist:
 * a kernel with tcx says ENODEV (it looked for the device), one without says EINVAL (unknown attach type).
 * Lets us tell "no tcx" apart from an EINVAL caused by the program itself.
 */
export function haveTcx(): boolean {
  if (simulateNoTcx) return false;
  if (tcxProbe !== undefined) return tcxProbe;
  const insns = Buffer.from([0xb7, 0, 0, 0, 0, 0, 0, 0, /* r0 = 0 */ 0x95, 0, 0, 0, 0, 0, 0, 0 /* exit */]);
  const license = Buffer.from('GPL\0');
  // prog_load: prog_type@0 insn_cnt@4 insns@8 license@16 ... prog_name@48
  const attr = Buffer.alloc(72);
  attr.writeUInt32LE(BPF_PROG_TYPE_SCHED_CLS, 0);
  attr.writeUInt32LE(insns.length / 8, 4);
  attr.writeBigUInt64LE(ptr(insns), 8);
  attr.writeBigUInt64LE(ptr(license), 16);
  attr.write('tendril_probe', 48);
  const fd = bpfOrThrow(BPF_PROG_LOAD, attr, () => 'Cannot load the tcx probe program');
  try {
    const link = Buffer.alloc(32);
    link.writeUInt32LE(fd, 0);
    link.writeUInt32LE(0x7fffffff, 4);
    link.writeUInt32LE(BPF_TCX_INGRESS, 8);
    const r = sysBpf(BPF_LINK_CREATE, link);
    if (r.ok) {
      closeQuietly(r.value); // cannot happen (no such device), but never leak an attachment
      tcxProbe = true;
    } else {
      tcxProbe = r.errno === ENODEV;
      if (!tcxProbe && r.errno !== EINVAL) {
        throw new KernelError('TENDRIL_ERR_BPF', `Cannot probe for tcx: unexpected ${errnoText(r.errno)}`, { errno: r.errno });
      }
    }
  } finally {
    closeQuietly(fd);
  }
  return tcxProbe;
}
