// Which nodes are alive for the egress gateway: a node whose NodeLease (renewed by its agent, src/agent/node-lease.ts)
// saw no new revision for the lease's durationMs, by this process's monotonic clock, is gone. A node that never had a
// lease (an agent of an earlier version) counts as alive while its Node says so. Each change, and each expiry, calls
// back so the operator plans again (the gateway moves to another node its selector picks). The operator may wait
// longer than a lease says (--node-monitor-grace-period), never shorter: a node is gone after the longer of the two.
import { performance } from 'node:perf_hooks';
import { KindCache, type NodeLeaseSpec, type Store } from '../store/index.js';
import type { Logger } from '../util/log.js';

/** Timers may fire a hair early: wake a little after the lease ends. */
const SLACK_MS = 20;

export class NodeLiveness {
  private readonly leases: KindCache<NodeLeaseSpec>;
  private readonly log: Logger;
  /** node -> revision last seen and when it was first seen. */
  private readonly seen = new Map<string, { revision: number; at: number; durationMs: number }>();
  private readonly expired = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private onChange: () => void = () => {};
  private stopped = false;
  private connected = true;
  private readonly graceMs: number;

  /** graceMs: --node-monitor-grace-period (0: each lease's own duration). */
  constructor(store: Store, log: Logger, graceMs = 0) {
    this.leases = new KindCache<NodeLeaseSpec>(store, 'NodeLease', log);
    this.log = log;
    this.graceMs = graceMs;
  }

  /** The nodes taken as gone now (their lease ran out). */
  gone(): string[] {
    this.observe();
    return [...this.expired].sort();
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    // Renewals are not changes: only a node turning alive or gone (or a new or deleted lease) plans again.
    const observe = (): void => {
      if (this.observe()) onChange();
    };
    await this.leases.start({
      change: observe,
      resync: observe,
      connection: (up) => {
        // Cut off from the store, this process sees no renewal of anyone's: nobody expires meanwhile, and every
        // lease's time starts again on return.
        this.connected = up;
        if (up) for (const s of this.seen.values()) s.at = performance.now();
        observe();
      },
    });
    this.observe();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.leases.stop();
  }

  get ready(): boolean {
    return this.leases.ready;
  }

  /** Whether the node's lease (if it has one) is current. */
  alive(node: string): boolean {
    this.observe();
    return !this.expired.has(node);
  }

  /** Records new revisions and expiries, and arms the timer for the next expiry; true when a node turned alive or gone. */
  private observe(): boolean {
    if (this.stopped) return false;
    const now = performance.now();
    const names = new Set<string>();
    let next = Infinity;
    let changed = false;
    for (const [node] of this.leases.entries()) {
      names.add(node);
      const rev = this.leases.revisionOf(node) ?? 0;
      const durationMs = Math.max(this.leases.get(node)?.durationMs ?? 0, this.graceMs);
      const s = this.seen.get(node);
      if (!s || s.revision !== rev) {
        if (!s) changed = true;
        this.seen.set(node, { revision: rev, at: now, durationMs });
        if (this.expired.delete(node)) {
          changed = true;
          this.log.info({ node }, 'node lease renewed again: the node is alive');
        }
      }
      const cur = this.seen.get(node)!;
      const ends = cur.at + cur.durationMs;
      if (now >= ends && this.connected) {
        if (!this.expired.has(node)) {
          changed = true;
          this.expired.add(node);
          this.log.warn({ node, durationMs: cur.durationMs }, 'node lease expired: the node is taken as gone');
        }
      } else if (now < ends) next = Math.min(next, ends);
    }
    for (const node of [...this.seen.keys()]) {
      if (!names.has(node)) {
        this.seen.delete(node);
        this.expired.delete(node);
        changed = true;
      }
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    if (next !== Infinity) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (this.observe()) this.onChange();
      }, Math.max(0, next - now) + SLACK_MS);
    }
    return changed;
  }
}
