// The node's liveness lease (store kind NodeLease, named by the node): renewed every renewMs while the agent runs and
// its datapath is up. The operator's egress gateway takes a node whose lease went unrenewed for durationMs as gone
// and moves the node's egress IPs to another gateway. A graceful stop leaves the lease to run out by itself: an agent
// restart (a few seconds) must not move gateways, a crash or a dead node must.
import type { NodeLeaseSpec, Store } from '../store/index.js';
import type { Logger } from '../util/log.js';

export const DEFAULT_NODE_LEASE_RENEW_MS = 1000;
export const DEFAULT_NODE_LEASE_DURATION_MS = 5000;

export interface NodeLeaseOptions {
  store: Store;
  node: string;
  renewMs?: number;
  durationMs?: number;
  log: Logger;
}

export class NodeLeaseKeeper {
  private readonly o: NodeLeaseOptions;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private failing = false;
  private stopped = false;

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

  private renew(): void {
    if (this.stopped) return;
    const renewMs = this.o.renewMs ?? DEFAULT_NODE_LEASE_RENEW_MS;
    const value: NodeLeaseSpec = { node: this.o.node, renewMs, durationMs: this.o.durationMs ?? DEFAULT_NODE_LEASE_DURATION_MS, renewedAt: new Date().toISOString() };
    this.inFlight = this.o.store.put<NodeLeaseSpec>('NodeLease', this.o.node, value).then(
      () => {
        if (this.failing) this.o.log.info('node lease renewed again');
        this.failing = false;
      },
      (err: unknown) => {
        // Logged once per outage: the store away is reported elsewhere too.
        if (!this.failing) this.o.log.warn({ err: (err as Error).message }, 'cannot renew the node lease; retrying');
        this.failing = true;
      },
    ).finally(() => {
      if (!this.stopped) this.timer = setTimeout(() => this.renew(), renewMs);
    });
  }
}
