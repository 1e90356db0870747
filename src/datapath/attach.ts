// How the node's programs sit on its interfaces: tcx links pinned per interface and hook (switched in place to a new
// program after a restart), cls_bpf filters in attach mode 'tc', and the tc bridge that lets a pod start without
// waiting for a tcx attach.
import fs from 'node:fs';
import path from 'node:path';
import { BpfProgram, Link, attachProgram, attachTc, attachTcxAsync, type Direction } from '../kernel/bpf/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import type { Netns } from '../kernel/netns/index.js';

// The switcher lives in its own file; re-exported for the datapath's users.
export { TCX_SWITCH_QUIET_MS, TcxSwitcher, type TcxSwitchStats } from './tcx-switch.js';

/** See PinnedAttachments.attachReversibly(). */
export interface ReversibleAttach {
  kind: 'tcx' | 'tc';
  undo(): void;
  commit(): void;
}

/** Pinned attachments under `<bpfRoot>/links/<ifname>-<direction>`. */
export class PinnedAttachments {
  private readonly dir: string;
  private readonly mode: 'tcx' | 'tc' | undefined;

  /** mode 'tc' attaches cls_bpf filters only; otherwise tcx, or tc on a kernel without tcx. */
  constructor(linksDir: string, mode: 'tcx' | 'tc' | undefined) {
    this.dir = linksDir;
    this.mode = mode;
  }

  get tcOnly(): boolean {
    return this.mode === 'tc';
  }

  /**
   * Attaches `prog` and pins the link; when a pinned link of an earlier agent run exists, it is switched to the
   * freshly loaded program in place (BPF_LINK_UPDATE: no gap for traffic, no RCU grace period).
   */
  attach(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction): Link {
    // A cls_bpf filter attach replaces one with the same prio/handle: that is its re-adoption, and it needs no pin.
    if (this.mode === 'tc') return attachTc({ program: prog, ifindex, direction: dir });
    return this.reuse(prog, ifindex, ifname, dir) ?? this.pinNew(attachProgram({ program: prog, ifindex, direction: dir }), ifname, dir);
  }

  /**
   * attach() that can be taken back: undo() puts the hook back as it was (the program that ran there before, or
   * nothing), commit() lets go of what undo() would have needed. One of the two must be called.
   */
  attachReversibly(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction): ReversibleAttach {
    const prev = this.running(ifindex, ifname, dir);
    let link: Link;
    try {
      link = this.attach(prog, ifindex, ifname, dir);
    } catch (err) {
      prev?.close();
      throw err;
    }
    link.close();
    return {
      kind: link.kind,
      undo: () => {
        try {
          if (prev) this.attach(prev, ifindex, ifname, dir).close();
          else this.detachHook(ifname, ifindex, dir);
        } finally {
          prev?.close();
        }
      },
      commit: () => prev?.close(),
    };
  }

  /** Our program on the hook now (an fd of our own, which keeps it loaded), if any. */
  private running(ifindex: number, ifname: string, dir: Direction): BpfProgram | undefined {
    const pin = this.pin(ifname, dir);
    if (this.mode !== 'tc' && fs.existsSync(pin)) {
      const link = Link.openPinned(pin);
      try {
        const info = Link.info(link.fd);
        return info.ifindex === ifindex ? BpfProgram.fromId(info.progId) : undefined;
      } finally {
        link.close();
      }
    }
    if (this.mode !== 'tc') return undefined;
    const nl = Netlink.open();
    try {
      const id = nl.listBpfFilters(ifindex, dir)[0]?.progId;
      return id === undefined ? undefined : BpfProgram.fromId(id);
    } finally {
      nl.close();
    }
  }

  /** The pinned link of an earlier run switched to `prog`, or undefined when there is none (or it is dead). */
  reuse(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction): Link | undefined {
    const pin = this.pin(ifname, dir);
    if (!fs.existsSync(pin)) return undefined;
    const old = Link.openPinned(pin);
    if (Link.info(old.fd).ifindex === ifindex) {
      old.update(prog);
      return old;
    }
    // The interface was re-created since the pin was made: the old link is dead.
    old.close();
    fs.unlinkSync(pin);
    return undefined;
  }

  /**
   * Moves a hook from a cls_bpf filter to a pinned tcx link: the link first (tcx runs before tc and decides every
   * packet itself, so from then on the filter is never reached), then the filter goes. No moment without a program.
   */
  switchToTcx(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction): void {
    const link = this.attach(prog, ifindex, ifname, dir);
    link.close();
    if (link.kind !== 'tcx') return;
    // The filter is the bridge's, on the clsact it made: no need to look for the qdisc first.
    removeFilters(ifindex, dir, true);
  }

  /**
   * switchToTcx() with the attach (the RCU grace period) on a libuv worker thread, which resolves `ifindex` in the
   * PROCESS's namespace (the caller checks that it is `ns`); pinning and the filter's removal run here, in `ns`.
   * When `cancelled()` says so once the attach returns (the endpoint went meanwhile, the switcher stopped), the link
   * is closed unpinned, which detaches it, and false is returned: the hook is as it was.
   */
  async switchToTcxAsync(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction, ns: Netns, cancelled: () => boolean): Promise<boolean> {
    const link = await attachTcxAsync({ program: prog, ifindex, direction: dir });
    try {
      if (cancelled()) return false;
      const pin = this.pin(ifname, dir);
      // A pin of a dead link on a re-created interface of the same name.
      fs.rmSync(pin, { force: true });
      link.pin(pin);
    } finally {
      link.close();
    }
    ns.run(() => removeFilters(ifindex, dir, true));
    return true;
  }

  /** Detaches and unpins our attachments of one hook (tcx link and tc filters); parts already gone are fine. */
  detachHook(ifname: string, ifindex: number, dir: Direction): void {
    removeFilters(ifindex, dir);
    const pin = this.pin(ifname, dir);
    if (!fs.existsSync(pin)) return;
    const link = Link.openPinned(pin);
    try {
      link.detach();
    } catch {
      // The interface is already gone, and with it the attachment.
    } finally {
      link.close();
    }
    fs.rmSync(pin, { force: true });
  }

  /** detachHook() for both directions. */
  detach(ifname: string, ifindex: number): void {
    for (const dir of ['ingress', 'egress'] as const) this.detachHook(ifname, ifindex, dir);
  }

  private pinNew(link: Link, ifname: string, dir: Direction): Link {
    // On a kernel without tcx, attach fell back to a tc filter, which persists without a pin.
    if (link.kind === 'tcx') {
      const pin = this.pin(ifname, dir);
      // A pin of a dead link on a re-created interface of the same name (reuse() looked before us).
      fs.rmSync(pin, { force: true });
      link.pin(pin);
    }
    return link;
  }

  private pin(ifname: string, dir: Direction): string {
    return path.join(this.dir, `${ifname}-${dir}`);
  }
}

/** tc filters of a hook removed; none there (or no interface) is fine. `clsact`: the link's clsact is known to be there. */
function removeFilters(ifindex: number, dir: Direction, clsact?: true): void {
  const nl = Netlink.open();
  try {
    nl.detachBpfFilter({ ifindex, direction: dir, ...(clsact ? { clsact } : {}) });
  } catch {
    // The interface is already gone.
  } finally {
    nl.close();
  }
}
