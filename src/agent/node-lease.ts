// The node's liveness lease (store kind NodeLease, named by the node): renewed every renewMs while the agent runs and
// its datapath is up. The operator's egress gateway takes a node whose lease went unrenewed for durationMs as gone
// and moves the node's egress IPs to another gateway. A graceful stop leaves the lease to run out by itself: an agent
// restart (a few seconds) must not move gateways, a crash or a dead node must.
import type { NodeLeaseSpec, Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import { AgentError } from './errors.js';

/** --node-lease-renew-interval and --node-lease-duration defaults: a dead agent moves its gateways within 5 s. */
export const DEFAULT_NODE_LEASE_RENEW_MS = 1000;
export const DEFAULT_NODE_LEASE_DURATION_MS = 5000;

/** How often the lease is renewed and how long one renewal lasts (the lease carries both to the operator). */
export interface NodeLeaseTiming {
  renewMs: number;
  durationMs: number;
}

/**
 * Checks the two flags together: a lease renewed no faster than it lasts expires between two renewals on every
 * store round trip, so the renewal must come well within it (at most half of it: one renewal may be lost).
 */
export function nodeLeaseTiming(renewMs: number, durationMs: number): NodeLeaseTiming {
  if (!(renewMs * 2 <= durationMs)) {
    throw new AgentError(
      'TENDRIL_ERR_INVALID_REQUEST',
      `Invalid --node-lease-renew-interval ${renewMs} ms with --node-lease-duration ${durationMs} ms: the renewal must come within half the lease, or one late renewal lets the lease expire`,
    );
  }
  return { renewMs, durationMs };
}

export interface NodeLeaseOptions extends Partial<NodeLeaseTiming> {
  store: Store;
  node: string;
  log: Logger;
}

/** The lease part of the agent's status. */
export interface NodeLeaseStatus {
  'renew-interval-ms': number;
  'duration-ms': number;
  /** When the store last took a renewal (ISO), null before the first. */
  'last-renewed': string | null;
  /** Set while renewals fail (the store away): the operator will take the node as gone once the lease runs out. */
  error: string | null;
}

export class NodeLeaseKeeper {
  private readonly o: NodeLeaseOptions;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private failing = false;
  private stopped = false;
  private lastRenewed: string | null = null;
  private lastError: string | null = null;

  constructor(o: NodeLeaseOptions) {
    this.o = o;
  }

  start(): void {
    this.renew();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight;
  }

  status(): NodeLeaseStatus {
    return {
      'renew-interval-ms': this.o.renewMs ?? DEFAULT_NODE_LEASE_RENEW_MS,
      'duration-ms': this.o.durationMs ?? DEFAULT_NODE_LEASE_DURATION_MS,
      'last-renewed': this.lastRenewed,
      error: this.lastError,
    };
  }

  private renew(): void {
    if (this.stopped) return;
    const renewMs = this.o.renewMs ?? DEFAULT_NODE_LEASE_RENEW_MS;
    const value: NodeLeaseSpec = { node: this.o.node, renewMs, durationMs: this.o.durationMs ?? DEFAULT_NODE_LEASE_DURATION_MS, renewedAt: new Date().toISOString() };
    this.inFlight = this.o.store.put<NodeLeaseSpec>('NodeLease', this.o.node, value).then(
      () => {
        if (this.failing) this.o.log.info('node lease renewed again');
        this.failing = false;
        this.lastRenewed = value.renewedAt;
        this.lastError = null;
      },
      (err: unknown) => {
        this.lastError = (err as Error).message;
        // Logged once per outage: the store away is reported elsewhere too.
        if (!this.failing) this.o.log.warn({ err: (err as Error).message }, 'cannot renew the node lease; retrying');
        this.failing = true;
      },
    ).finally(() => {
      if (!this.stopped) this.timer = setTimeout(() => this.renew(), renewMs);
    });
  }
}
