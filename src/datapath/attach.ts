// How the node's programs sit on its interfaces: tcx links pinned per interface and hook (switched in place to a new
// program after a restart), cls_bpf filters in attach mode 'tc', and the tc bridge that lets a pod start without
// waiting for a tcx attach.
import fs from 'node:fs';
import path from 'node:path';
import { BpfProgram, Link, attachProgram, attachTc, type Direction } from '../kernel/bpf/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import type { Netns } from '../kernel/netns/index.js';

/** Default quiet time (no endpoint added or removed) before bridged endpoints are switched to tcx. */
export const TCX_SWITCH_QUIET_MS = 200;

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

/**
 * A tcx attach waits out an RCU grace period holding RTNL (10-30 ms on a VM), which every rtnetlink operation of the
 * machine queues behind; a cls_bpf filter takes about a millisecond. So a pod's ingress program starts as a filter
 * ("bridged"), and is switched to a pinned tcx link once the node has been quiet (no endpoint added or removed) for
 * `quietMs` (TCX_SWITCH_QUIET_MS by default), one endpoint per event-loop turn. A pod start arriving while a switch runs waits for at most
 * that one grace period. Runs in the namespace the datapath was started in.
 */
export class TcxSwitcher {
  private readonly pending = new Map<number, { ifname: string; prog: BpfProgram }>();
  private readonly att: PinnedAttachments;
  private readonly ns: Netns;
  private readonly quietMs: number;
  private timer: NodeJS.Timeout | undefined;
  private lastChurn = 0;
  private switchedCount = 0;
  private failedCount = 0;
  private lastErrorText: string | undefined;

  constructor(att: PinnedAttachments, ns: Netns, quietMs = TCX_SWITCH_QUIET_MS) {
    this.att = att;
    this.ns = ns;
    this.quietMs = quietMs;
  }

  /** Attaches `prog` to the ingress of a new endpoint's veth as a filter, queued for the switch to tcx. */
  bridge(prog: BpfProgram, ifindex: number, ifname: string): void {
    attachTc({ program: prog, ifindex, direction: 'ingress' }).close();
    this.pending.set(ifindex, { ifname, prog });
    this.churn();
  }

  /** The endpoint is going: nothing to switch. */
  forget(ifindex: number): void {
    this.pending.delete(ifindex);
    this.churn();
  }

  /** An endpoint was added or removed: the switch waits for quiet. */
  churn(): void {
    this.lastChurn = performance.now();
    this.arm();
  }

  /** Endpoints still on a filter, switched so far, failed switches (their filter stays and enforces). */
  stats(): { bridged: number; switched: number; failed: number; lastError?: string } {
    return {
      bridged: this.pending.size,
      switched: this.switchedCount,
      failed: this.failedCount,
      ...(this.lastErrorText !== undefined ? { lastError: this.lastErrorText } : {}),
    };
  }

  /** Cancels the timer; bridged endpoints keep their filters (a restart's restore switches them). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
  }

  private arm(): void {
    if (this.timer !== undefined || this.pending.size === 0) return;
    const wait = Math.max(0, this.lastChurn + this.quietMs - performance.now());
    this.timer = setTimeout(() => this.tick(), wait);
    // Filters enforce as well as links: a process about to exit need not stay for the switch.
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    if (performance.now() - this.lastChurn < this.quietMs) {
      this.arm();
      return;
    }
    const next = this.pending.entries().next();
    if (next.done) return;
    const [ifindex, { ifname, prog }] = next.value;
    this.pending.delete(ifindex);
    try {
      this.ns.run(() => this.att.switchToTcx(prog, ifindex, ifname, 'ingress'));
      this.switchedCount++;
    } catch (err) {
      // E.g. the interface went between the DEL's netlink work and its endpoint removal: its filter went with it.
      this.failedCount++;
      this.lastErrorText = err instanceof Error ? err.message : String(err);
    }
    this.arm();
  }
}
