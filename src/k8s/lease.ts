// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: the holder renews the
// lease every retry period; another candidate takes it over once renewTime + leaseDuration has passed. The
// resourceVersion makes each take-over or renewal a compare-and-swap, so two candidates never both hold it.
import type { Logger } from '../util/log.js';
import { messageOf, statusOf } from './errors.js';
import { RestError, type Obj, type Rest } from './rest.js';

export interface LeaseOptions {
  namespace: string;
  name: string;
  /** This candidate (e.g. hostname + pid). */
  identity: string;
  leaseDurationMs: number;
  /** How often the holder renews and a candidate retries. */
  retryMs: number;
  log: Logger;
  onStartedLeading(): void;
  /** The lease was lost (not renewed in time, or taken over). */
  onStoppedLeading(): void;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

/** MicroTime: RFC 3339 with six fraction digits. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaseElector {
  private readonly rest: Rest;
  private readonly o: LeaseOptions;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  private running: Promise<void> | undefined;
  /** Who holds the lease, as last seen. */
  holder = '';

  constructor(rest: Rest, opts: LeaseOptions) {
    this.rest = rest;
    this.o = opts;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      this.running = this.attempt().finally(() => {
        this.running = undefined;
        if (!this.stopped) this.timer = setTimeout(tick, this.o.retryMs);
      });
    };
    tick();
  }

  /** Stops trying; a leader gives the lease up (so that another candidate need not wait for it to expire). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    if (!this.leading) return;
    this.leading = false;
    try {
      const cur = await this.rest.request<Obj & { spec?: LeaseSpec }>('GET', this.path(this.o.name));
      if (cur.spec?.holderIdentity === this.o.identity) {
        await this.rest.request('PUT', this.path(this.o.name), { ...cur, spec: { ...cur.spec, holderIdentity: '', leaseDurationSeconds: 1 } });
      }
    } catch (err) {
      this.o.log.warn({ err: messageOf(err) }, 'could not release the lease; it expires by itself');
    }
  }

  private path(name = ''): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.o.namespace)}/leases${name ? `/${encodeURIComponent(name)}` : ''}`;
  }

  private async attempt(): Promise<void> {
    const now = Date.now();
    try {
      const won = await this.tryAcquireOrRenew(now);
      if (won) {
        this.lastRenew = now;
        if (!this.leading) {
          this.leading = true;
          this.o.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, 'became the leader');
          this.o.onStartedLeading();
        }
        return;
      }
      if (this.leading) this.lose(`the lease is held by ${this.holder}`);
    } catch (err) {
      // Not reachable: a leader keeps leading until its lease would have expired for the others.
      this.o.log.warn({ err: messageOf(err) }, 'lease not renewed');
      if (this.leading && Date.now() - this.lastRenew > this.o.leaseDurationMs) this.lose('the lease could not be renewed in time');
    }
  }

  private lose(why: string): void {
    this.leading = false;
    this.o.log.warn({ why }, 'lost the leadership');
    this.o.onStoppedLeading();
  }

  private async tryAcquireOrRenew(now: number): Promise<boolean> {
    const me = this.o.identity;
    const seconds = Math.max(1, Math.round(this.o.leaseDurationMs / 1000));
    let cur: (Obj & { spec?: LeaseSpec }) | undefined;
    try {
      cur = await this.rest.request<Obj & { spec?: LeaseSpec }>('GET', this.path(this.o.name));
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
    if (!cur) {
      try {
        await this.rest.request('POST', this.path(), {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.o.name, namespace: this.o.namespace },
          spec: { holderIdentity: me, leaseDurationSeconds: seconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        });
        this.holder = me;
        return true;
      } catch (err) {
        if (statusOf(err) === 409) return false;
        throw err;
      }
    }
    const spec = cur.spec ?? {};
    this.holder = spec.holderIdentity ?? '';
    const renewed = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = !spec.holderIdentity || renewed + (spec.leaseDurationSeconds ?? seconds) * 1000 < now;
    if (spec.holderIdentity !== me && !expired) return false;
    const next: LeaseSpec = {
      ...spec,
      holderIdentity: me,
      leaseDurationSeconds: seconds,
      renewTime: microTime(now),
      ...(spec.holderIdentity !== me ? { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
    };
    try {
      await this.rest.request('PUT', this.path(this.o.name), { ...cur, spec: next });
      this.holder = me;
      return true;
    } catch (err) {
      if (err instanceof RestError && err.code === 409) return false;
      throw err;
    }
  }
}
