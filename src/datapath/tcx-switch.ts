// The switch of bridged endpoints (a pod's ingress program started as a cls_bpf filter) to pinned tcx links: only
// once the node is quiet, i.e. no CNI ADD or DEL in flight and no endpoint added or removed for `quietMs`, one
// endpoint at a time, the attach itself on a libuv thread when that thread sees the switcher's namespace.
import fs from 'node:fs';
import type { BpfProgram } from '../kernel/bpf/index.js';
import { attachTc } from '../kernel/bpf/index.js';
import type { Netns } from '../kernel/netns/index.js';
import type { PinnedAttachments } from './attach.js';

/**
 * Default quiet time (no CNI call in flight, no endpoint added or removed) before bridged endpoints are switched.
 * A kubelet's pod burst under load leaves gaps of several hundred ms between its ADDs: 200 ms let switches (each an
 * RCU grace period under RTNL) interleave with the burst's ADDs; a second keeps them out of it.
 */
export const TCX_SWITCH_QUIET_MS = 1000;
/** An endpoint bridged this long is switched at the next moment without a CNI call in flight, quiet or not. */
export const TCX_SWITCH_MAX_DEFER_MS = 60_000;

export interface TcxSwitchStats {
  /** endpoints still on their filter */
  bridged: number;
  switched: number;
  /** failed switches (their filter stays and enforces) */
  failed: number;
  /** of the switched: attached on a libuv thread (the event loop ran on meanwhile) */
  offThread: number;
  lastError?: string;
}

interface Pending {
  ifname: string;
  prog: BpfProgram;
  since: number;
}

/**
 * A tcx attach waits out an RCU grace period holding RTNL (10-30 ms on a VM), which every rtnetlink operation of the
 * machine queues behind; a cls_bpf filter takes about a millisecond. So a pod's ingress program starts as a filter
 * ("bridged") and is switched to a pinned tcx link once the node is quiet: hold() marks a CNI call in flight (no
 * switch starts until it ends), bridge()/forget() mark churn, and the switch waits `quietMs` after the last of
 * them. Then it switches one endpoint after another, each step re-checking quiet, so a burst starting meanwhile
 * waits for at most the one attach in flight. The attach runs on a libuv worker thread (the event loop goes on)
 * when every thread of the process is in the switcher's namespace (the agent as a process of its node); inside a
 * Netns.run() of the main thread (an in-process datapath, as in tests) it runs there, synchronously.
 */
export class TcxSwitcher {
  private readonly pending = new Map<number, Pending>();
  private readonly att: PinnedAttachments;
  private readonly ns: Netns;
  private readonly quietMs: number;
  private readonly maxDeferMs: number;
  private timer: NodeJS.Timeout | undefined;
  private lastChurn = 0;
  private holds = 0;
  /** The async attach in flight: its endpoint, and whether it was forgotten meanwhile. */
  private inFlight: { ifindex: number; cancelled: boolean } | undefined;
  private stopped = false;
  private switchedCount = 0;
  private failedCount = 0;
  private offThreadCount = 0;
  private lastErrorText: string | undefined;

  constructor(att: PinnedAttachments, ns: Netns, quietMs = TCX_SWITCH_QUIET_MS, maxDeferMs = TCX_SWITCH_MAX_DEFER_MS) {
    this.att = att;
    this.ns = ns;
    this.quietMs = quietMs;
    this.maxDeferMs = Math.max(quietMs, maxDeferMs);
  }

  /** Attaches `prog` to the ingress of a new endpoint's veth as a filter, queued for the switch to tcx. */
  bridge(prog: BpfProgram, ifindex: number, ifname: string): void {
    attachTc({ program: prog, ifindex, direction: 'ingress' }).close();
    this.pending.set(ifindex, { ifname, prog, since: performance.now() });
    this.churn();
  }

  /** The endpoint is going (or is wired another way): nothing to switch; an attach in flight for it is undone. */
  forget(ifindex: number): void {
    this.pending.delete(ifindex);
    if (this.inFlight?.ifindex === ifindex) this.inFlight.cancelled = true;
    this.churn();
  }

  /** An endpoint was added or removed: the switch waits for quiet. */
  churn(): void {
    this.lastChurn = performance.now();
    this.arm();
  }

  /** A CNI call is in flight until the returned function is called (once is enough; more are ignored). */
  hold(): () => void {
    this.holds++;
    this.churn();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
      this.churn();
    };
  }

  stats(): TcxSwitchStats {
    return {
      // The one being attached still runs on its filter.
      bridged: this.pending.size + (this.inFlight && !this.inFlight.cancelled ? 1 : 0),
      switched: this.switchedCount,
      failed: this.failedCount,
      offThread: this.offThreadCount,
      ...(this.lastErrorText !== undefined ? { lastError: this.lastErrorText } : {}),
    };
  }

  /**
   * Cancels the timer; bridged endpoints keep their filters (a restart's restore switches them). An attach in flight
   * is undone when it returns (its link closed unpinned; the filter is still there).
   */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    if (this.inFlight) this.inFlight.cancelled = true;
  }

  private arm(): void {
    if (this.stopped || this.timer !== undefined || this.inFlight || this.pending.size === 0 || this.holds > 0) return;
    const now = performance.now();
    const wait = Math.max(0, Math.min(this.lastChurn + this.quietMs, this.oldest() + this.maxDeferMs) - now);
    this.timer = setTimeout(() => this.tick(), wait);
    // Filters enforce as well as links: a process about to exit need not stay for the switch.
    this.timer.unref();
  }

  private oldest(): number {
    let t = Infinity;
    for (const p of this.pending.values()) t = Math.min(t, p.since);
    return t;
  }

  private tick(): void {
    this.timer = undefined;
    if (this.stopped || this.holds > 0) return;
    const now = performance.now();
    const quiet = now - this.lastChurn >= this.quietMs;
    // Overdue: pick the oldest; quiet: any (insertion order is the oldest first too).
    if (!quiet && now - this.oldest() < this.maxDeferMs) {
      this.arm();
      return;
    }
    const next = this.pending.entries().next();
    if (next.done) return;
    const [ifindex, { ifname, prog }] = next.value;
    this.pending.delete(ifindex);
    if (!threadsIn(this.ns)) {
      try {
        this.ns.run(() => this.att.switchToTcx(prog, ifindex, ifname, 'ingress'));
        this.switchedCount++;
      } catch (err) {
        this.failed(err);
      }
      this.arm();
      return;
    }
    const flight = { ifindex, cancelled: false };
    this.inFlight = flight;
    this.att
      .switchToTcxAsync(prog, ifindex, ifname, 'ingress', this.ns, () => flight.cancelled)
      .then(
        (done) => {
          if (!done) return;
          this.switchedCount++;
          this.offThreadCount++;
        },
        (err: unknown) => this.failed(err),
      )
      .finally(() => {
        this.inFlight = undefined;
        this.arm();
      });
  }

  private failed(err: unknown): void {
    // E.g. the interface went between the DEL's netlink work and its endpoint removal: its filter went with it.
    this.failedCount++;
    this.lastErrorText = err instanceof Error ? err.message : String(err);
  }
}

/**
 * Whether every thread of this process is in `ns` (so a libuv worker resolves ifindexes there). setns() moves one
 * thread; a thread inherits its creator's namespace. Reads /proc/self/task/<tid>/ns/net (a few µs per thread).
 */
export function threadsIn(ns: Netns, proc = '/proc/self/task'): boolean {
  let want: number;
  try {
    want = fs.fstatSync(ns.fd).ino;
  } catch {
    return false;
  }
  let tids: string[];
  try {
    tids = fs.readdirSync(proc);
  } catch {
    return false;
  }
  for (const tid of tids) {
    try {
      if (fs.statSync(`${proc}/${tid}/ns/net`).ino !== want) return false;
    } catch {
      // the thread ended
    }
  }
  return true;
}
