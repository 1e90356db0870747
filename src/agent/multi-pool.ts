// --ipam multi-pool on the node: a pod's address comes from the IP pool its annotation ipam.tendril.io/ip-pool names
// ("default" otherwise). The node asks the operator for chunks of a pool on demand (ipam.pools.<pool>.requested on
// its Node), waits a bounded time for the grant (ipam.pools.<pool>.allocated) and allocates inside that pool's CIDRs
// alone. A pool's free addresses below the pre-allocation watermark make it ask for one more chunk ahead of need; a
// pool other than "default" left without pods for the hand-back grace is given back whole (so it may be deleted).
import { CniCode, CniError } from '../cni/index.js';
import { POD_IP_POOL_ANNOTATION, type NodeIpamPool, type NodeSpec } from '../store/types.js';
import type { Logger } from '../util/log.js';
import type { AgentError } from './errors.js';
import type { AttachmentRef, NodeIpam } from './ipam.js';

export const DEFAULT_IP_POOL = 'default';
const POOL_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const RETRY_MS = 1000;

export interface PoolAddressOptions {
  ipam: NodeIpam;
  /** Free addresses of a pool below this make the node ask for another chunk of it. */
  preAllocate: number;
  /** How long an ADD waits for a chunk of its pool. */
  waitMs: number;
  /** How long a pool (not "default") stays without pods on this node before its chunks are handed back. */
  handBackGraceMs: number;
  /** Read-modify-write of this node's resource. */
  updateNode: (fn: (cur: NodeSpec | undefined) => NodeSpec) => Promise<unknown>;
  /** Whether a TendrilPodIPPool of that name exists (the cluster store). */
  poolExists: (name: string) => Promise<boolean>;
  log: Logger;
}

/** The pool an ADD's pod asks for: its annotation, else its namespace's, else "default". */
export function poolOf(annotations: Record<string, string> | undefined, namespaceAnnotations?: Record<string, string>): string {
  return annotations?.[POD_IP_POOL_ANNOTATION] ?? namespaceAnnotations?.[POD_IP_POOL_ANNOTATION] ?? DEFAULT_IP_POOL;
}

export interface PoolAddressStatus {
  pool: string;
  requested: number;
  cidrs: Array<{ cidr: string; used: number; capacity: number }>;
}

export class PoolAddresses {
  private readonly o: PoolAddressOptions;
  /** pool -> CIDRs the operator gave this node (as the Node lists them). */
  private readonly grants = new Map<string, string[]>();
  /** pool -> how many chunks this node asks for. */
  private readonly requested = new Map<string, number>();
  /** Pools being handed back: no address comes from them until the Node no longer lists them. */
  private readonly handingBack = new Set<string>();
  private readonly emptyTimers = new Map<string, NodeJS.Timeout>();
  private readonly waiters = new Set<() => void>();
  private writing: Promise<void> = Promise.resolve();
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(o: PoolAddressOptions) {
    this.o = o;
  }

  /** The Node changed (after PodCidrs took its CIDRs): the grants per pool. */
  follow(n: NodeSpec): void {
    if (this.stopped) return;
    for (const [name, p] of Object.entries(n.ipam?.pools ?? {})) {
      this.grants.set(name, p.allocated);
      if (!this.requested.has(name)) this.requested.set(name, p.requested);
      if (this.handingBack.has(name) && p.allocated.length === 0) this.handingBack.delete(name);
    }
    for (const wake of [...this.waiters]) wake();
  }

  /** CIDRs of `pool` this node allocates from. */
  cidrsOf(pool: string): string[] {
    if (this.handingBack.has(pool)) return [];
    const g = this.grants.get(pool);
    // A Node of an older operator lists no grant for "default": the primary is its.
    if (g === undefined && pool === DEFAULT_IP_POOL) return this.o.ipam.cidrs().slice(0, 1);
    return (g ?? []).filter((c) => this.o.ipam.cidrs().includes(c));
  }

  /** An address of `pool` for the pod `who` ("namespace/pod"); asks for and waits for a chunk when none is free. */
  async allocate(pool: string, owner: string, attachment: AttachmentRef, who: string): Promise<string> {
    // A pool the node holds a chunk of exists (it cannot be deleted while in use): the store is asked only otherwise.
    if (!POOL_NAME_RE.test(pool) || (pool !== DEFAULT_IP_POOL && this.cidrsOf(pool).length === 0 && !(await this.o.poolExists(pool)))) {
      throw new CniError(CniCode.NO_POOL, `unknown IP pool "${pool}" for pod ${who}: no TendrilPodIPPool of that name (TENDRIL_ERR_POOL_NOT_FOUND)`, {
        details: `the pod's annotation ${POD_IP_POOL_ANNOTATION}=${pool} names no pool; create it (lab pool add ${pool} --cidr …) or fix the annotation`,
      });
    }
    clearTimeout(this.emptyTimers.get(pool));
    this.emptyTimers.delete(pool);
    const deadline = Date.now() + this.o.waitMs;
    for (;;) {
      try {
        const ip = this.o.ipam.allocateNext(owner, attachment, this.cidrsOf(pool));
        this.watermark(pool);
        return ip;
      } catch (err) {
        if ((err as AgentError).code !== 'TENDRIL_ERR_IPAM_EXHAUSTED') throw err;
      }
      const held = this.cidrsOf(pool).length;
      if (!this.handingBack.has(pool) && (this.requested.get(pool) ?? 0) <= held) this.ask(pool, held + 1, []);
      const left = deadline - Date.now();
      if (left <= 0 || this.stopped) {
        const use = this.usage(pool).map((u) => `${u.cidr} ${u.used}/${u.capacity}`).join(', ') || 'none yet';
        throw new CniError(CniCode.POOL_EXHAUSTED, `no IP available in pool "${pool}" for pod ${who}: waiting for the operator`, {
          details: `pool "${pool}" CIDRs on this node: ${use}; asked for ${this.requested.get(pool) ?? 0} chunk(s); existing pods are not affected; retry later`,
        });
      }
      await this.changed(left);
    }
  }

  /** After a release: a pool other than "default" without pods here is handed back after the grace. */
  released(): void {
    if (this.stopped) return;
    for (const [pool, cidrs] of this.grants) {
      if (pool === DEFAULT_IP_POOL || cidrs.length === 0 || this.handingBack.has(pool) || this.emptyTimers.has(pool)) continue;
      if (this.usage(pool).some((u) => u.used > 0)) continue;
      this.emptyTimers.set(
        pool,
        setTimeout(() => {
          this.emptyTimers.delete(pool);
          if (this.stopped || this.usage(pool).some((u) => u.used > 0)) return;
          const all = this.grants.get(pool) ?? [];
          // No address comes from it meanwhile; the CIDRs go (routes too) when the Node stops listing them.
          this.handingBack.add(pool);
          this.o.log.info({ pool, cidrs: all }, 'no pod of the pool left on this node for the grace period: handing its CIDRs back');
          this.ask(pool, 0, all);
        }, this.o.handBackGraceMs),
      );
    }
  }

  status(): PoolAddressStatus[] {
    const names = new Set([DEFAULT_IP_POOL, ...this.grants.keys(), ...this.requested.keys()]);
    return [...names].sort().map((pool) => ({ pool, requested: this.requested.get(pool) ?? 0, cidrs: this.usage(pool) }));
  }

  /** The pool of an address this node allocated, if any. */
  poolOfAddress(cidr: string): string | undefined {
    for (const [pool, cidrs] of this.grants) if (cidrs.includes(cidr)) return pool;
    return undefined;
  }

  async settled(): Promise<void> {
    await this.writing;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    for (const t of this.emptyTimers.values()) clearTimeout(t);
    this.emptyTimers.clear();
    for (const wake of [...this.waiters]) wake();
  }

  private usage(pool: string): Array<{ cidr: string; used: number; capacity: number }> {
    const mine = new Set(this.grants.get(pool) ?? (pool === DEFAULT_IP_POOL ? this.o.ipam.cidrs().slice(0, 1) : []));
    return this.o.ipam.usage().filter((u) => mine.has(u.cidr)).map((u) => ({ cidr: u.cidr, used: u.used, capacity: u.capacity }));
  }

  private watermark(pool: string): void {
    const held = this.cidrsOf(pool).length;
    const free = this.usage(pool).reduce((n, u) => n + u.capacity - u.used, 0);
    if (free < this.o.preAllocate && (this.requested.get(pool) ?? 0) <= held) {
      this.o.log.info({ pool, free, preAllocate: this.o.preAllocate, cidrs: held }, 'free addresses of the pool below the watermark: asking for another chunk');
      this.ask(pool, held + 1, []);
    }
  }

  private changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Writes the request of one pool to this node's resource; retried on failure. */
  private ask(pool: string, requested: number, release: string[]): void {
    const before = this.requested.get(pool) ?? 0;
    this.requested.set(pool, requested);
    this.writing = this.writing.then(() =>
      this.o
        .updateNode((cur) => {
          const base: NodeSpec = cur ?? { name: '', addresses: [], podCIDRs: [] };
          const pools = { ...(base.ipam?.pools ?? {}) };
          const prev = pools[pool];
          const entry: NodeIpamPool = { requested, allocated: prev?.allocated ?? [] };
          if (release.length > 0) entry.release = release;
          pools[pool] = entry;
          return { ...base, ipam: { pools } };
        })
        .then(
          () => undefined,
          (err: unknown) => {
            this.o.log.warn({ err: (err as Error).message, pool, requested }, 'cannot write the IP pool request to the cluster store; will ask again');
            if (this.requested.get(pool) === requested) this.requested.set(pool, before);
            if (!this.stopped) {
              clearTimeout(this.retry);
              this.retry = setTimeout(() => this.ask(pool, requested, release), RETRY_MS);
            }
          },
        ),
    );
  }
}
