// The node's pod CIDRs over time: follows what the Node resource gives (operator grants in cluster-pool mode, or
// someone else's podCIDRs in kubernetes mode), asks the operator for another CIDR when free addresses fall below
// the pre-allocation watermark, and hands an extra CIDR back once it has been empty for a grace period.
import { CniCode, CniError } from '../cni/index.js';
import type { NodeIpamPool, NodeSpec } from '../store/types.js';
import type { Logger } from '../util/log.js';
import type { CidrUsage, NodeIpam } from './ipam.js';

export type AgentIpamMode = 'cluster-pool' | 'kubernetes' | 'multi-pool';
export const DEFAULT_IPAM_PRE_ALLOCATE = 8;
export const DEFAULT_IPAM_HAND_BACK_GRACE_MS = 30_000;
/** The pool cluster-pool nodes ask in (the operator's DEFAULT_POOL). */
const POOL = 'default';

export interface PodCidrOptions {
  mode: AgentIpamMode;
  ipam: NodeIpam;
  /** Free addresses below this make the node ask for another CIDR (cluster-pool). */
  preAllocate: number;
  /** How long an extra CIDR stays empty before it is handed back (cluster-pool). */
  handBackGraceMs: number;
  /** Routes a pod CIDR to the node's pods (and removes it). */
  routes: { add(cidr: string): void; remove(cidr: string): void };
  /** Read-modify-write of this node's resource (NodeManager.update); absent without a cluster store. */
  updateNode?: (fn: (cur: NodeSpec | undefined) => NodeSpec) => Promise<unknown>;
  log: Logger;
  now?: () => number;
}

export interface PodCidrStatus {
  mode: AgentIpamMode;
  'pre-allocate': number;
  /** CIDRs asked of the operator (cluster-pool), and how many it has given. */
  requested: number | null;
  cidrs: CidrUsage[];
  /** Set while the node asks for more than it was given. */
  waiting: string | null;
}

export class PodCidrs {
  private readonly o: PodCidrOptions;
  private readonly now: () => number;
  /** What this node last asked for (CIDR count), once known. */
  private requested = 0;
  /** Extra CIDRs handed back; the Node may still list them until the operator has freed them. */
  private readonly handedBack = new Set<string>();
  /** Extra CIDR -> since when it is empty. */
  private readonly emptySince = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(o: PodCidrOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
    for (const c of o.ipam.cidrs().slice(1)) o.routes.add(c);
  }

  /** The Node resource changed: take every CIDR it gives, give up (drain) extras it no longer lists. */
  follow(n: NodeSpec): void {
    if (this.stopped) return;
    const given = n.podCIDRs;
    // A Node that lists nothing (registered afresh, an older writer) takes nothing away.
    if (given.length === 0) return;
    const grant = n.ipam?.pools[POOL];
    if (grant && this.requested === 0) this.requested = grant.requested;
    for (const c of [...this.handedBack]) if (!given.includes(c)) this.handedBack.delete(c);
    for (const c of given) {
      if (this.handedBack.has(c)) continue;
      const had = this.o.ipam.cidrs().includes(c);
      this.o.ipam.addCidr(c); // also takes a draining one back into use
      if (had) continue;
      this.o.routes.add(c);
      this.o.log.info({ cidr: c, cidrs: this.o.ipam.cidrs() }, 'node got another pod CIDR');
    }
    const primary = this.o.ipam.cidrs()[0]!;
    if (given.length > 0 && !given.includes(primary) && !this.o.ipam.usage()[0]!.draining) {
      this.o.ipam.drain(primary);
      this.o.log.warn({ primary, given }, 'the Node no longer lists the primary pod CIDR: keeping it (router and health addresses live there), new pods get addresses of the given CIDRs');
    }
    for (const c of this.o.ipam.cidrs().slice(1)) {
      if (given.includes(c)) continue;
      if (this.o.ipam.drain(c)) this.o.routes.remove(c);
      this.o.log.info({ cidr: c }, 'pod CIDR no longer given to this node: no new address comes from it');
    }
    this.check();
  }

  /** After every allocation or release: drained CIDRs go, the watermark and hand-backs are looked at. */
  check(): void {
    if (this.stopped) return;
    for (const c of this.o.ipam.drained()) {
      this.o.routes.remove(c);
      this.o.log.info({ cidr: c }, 'drained pod CIDR removed');
    }
    if (this.o.mode !== 'cluster-pool' || !this.o.updateNode) return;
    const active = this.o.ipam.usage().filter((u) => !u.draining);
    const held = active.length;
    const free = this.o.ipam.free;
    // Exhausted always asks, whatever the watermark (0 = ask only then).
    if ((free < this.o.preAllocate || free === 0) && this.requested <= held) {
      this.ask(held + 1, []);
      this.o.log.info({ free, preAllocate: this.o.preAllocate, cidrs: held }, 'free pod addresses below the watermark: asking the operator for another CIDR');
      return;
    }
    this.lookForHandBack(active, free);
  }

  /** The error an ADD gets when no address is left. */
  exhausted(): CniError {
    const use = this.o.ipam.usage().map((u) => `${u.cidr} ${u.used}/${u.capacity}${u.draining ? ' (draining)' : ''}`).join(', ');
    if (this.o.mode === 'kubernetes') {
      return new CniError(CniCode.POOL_EXHAUSTED, 'no IP available: pool exhausted (the pod CIDRs on this Node are full)', { details: `pod CIDRs ${use}` });
    }
    return new CniError(CniCode.POOL_EXHAUSTED, 'no IP available: pool exhausted, waiting for the operator', {
      details: `pod CIDRs ${use}; asked the operator for ${this.requested} CIDR(s), existing pods are not affected; retry later`,
    });
  }

  status(): PodCidrStatus {
    const cidrs = this.o.ipam.usage();
    const held = cidrs.filter((u) => !u.draining).length;
    const waiting = this.o.mode === 'cluster-pool' && this.requested > held ? `asked for ${this.requested} CIDR(s), holding ${held}` : null;
    return { mode: this.o.mode, 'pre-allocate': this.o.preAllocate, requested: this.o.mode === 'cluster-pool' ? this.requested : null, cidrs, waiting };
  }

  /** Waits for Node writes in flight (tests). */
  async settled(): Promise<void> {
    await this.writing;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private lookForHandBack(active: CidrUsage[], free: number): void {
    const now = this.now();
    let next: number | undefined;
    for (const u of active.slice(1)) {
      // Only an empty extra the node can do without (it stays above the watermark).
      if (u.used > 0 || free - u.capacity < this.o.preAllocate) {
        this.emptySince.delete(u.cidr);
        continue;
      }
      const since = this.emptySince.get(u.cidr) ?? now;
      this.emptySince.set(u.cidr, since);
      if (now - since >= this.o.handBackGraceMs) {
        this.emptySince.delete(u.cidr);
        this.handedBack.add(u.cidr);
        if (this.o.ipam.drain(u.cidr)) this.o.routes.remove(u.cidr);
        this.ask(active.length - 1, [u.cidr]);
        this.o.log.info({ cidr: u.cidr, emptyMs: now - since }, 'extra pod CIDR empty for the grace period: handing it back');
        return; // one at a time; the next check looks again
      }
      const due = since + this.o.handBackGraceMs;
      next = next === undefined ? due : Math.min(next, due);
    }
    for (const c of [...this.emptySince.keys()]) if (!active.some((u) => u.cidr === c)) this.emptySince.delete(c);
    clearTimeout(this.timer);
    this.timer = next === undefined ? undefined : setTimeout(() => this.check(), Math.max(0, next - now) + 5);
  }

  /** Writes the request (CIDR count, hand-backs) to this node's resource; retried by the next check on failure. */
  private ask(requested: number, release: string[]): void {
    const update = this.o.updateNode!;
    const before = this.requested;
    this.requested = requested;
    this.writing = this.writing.then(() =>
      update((cur) => {
        const base: NodeSpec = cur ?? { name: '', addresses: [], podCIDRs: [] };
        const pools = { ...(base.ipam?.pools ?? {}) };
        const prev = pools[POOL];
        const entry: NodeIpamPool = { requested, allocated: prev?.allocated ?? base.podCIDRs };
        const rel = [...new Set([...(prev?.release ?? []), ...release, ...this.handedBack])];
        if (rel.length > 0) entry.release = rel;
        pools[POOL] = entry;
        return { ...base, ipam: { pools } };
      }).then(
        () => undefined,
        (err: unknown) => {
          this.o.log.warn({ err: (err as Error).message, requested }, 'cannot write the IPAM request to the cluster store; will ask again');
          if (this.requested === requested) this.requested = before;
          // Asked again later (a hand-back too: the CIDR stays drained locally, the request names it again).
          if (!this.stopped) {
            clearTimeout(this.timer);
            this.timer = setTimeout(() => (release.length > 0 ? this.ask(requested, release) : this.check()), 1000);
          }
        },
      ),
    );
  }
}
