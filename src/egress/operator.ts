// The operator's egress gateway loop: on every change of a policy or a Node, one pass plans gateways and egress IPs
// (alloc.ts), stores the pool's assignments first (so an address is never handed out twice, also across restarts)
// and then each policy's status.
import { KindCache, type NodeSpec, type Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import { EGRESS_POOL_STATE, planEgress, type EgressPoolState } from './alloc.js';
import { EgressError } from './errors.js';
import { EGRESS_STORE_KIND } from './store.js';
import type { EgressGatewayPolicyResource } from './policy.js';
import { NodeLiveness } from './liveness.js';

const RETRY_MS = 500;

export interface EgressOperatorOptions {
  store: Store;
  /** --egress-ip-pool, or undefined (then every policy must give its egressIP). */
  pool: string | undefined;
  /** --node-monitor-grace-period, ms: how long a node's lease may go unrenewed at least (0 = the lease's duration). */
  nodeGraceMs?: number;
  log: Logger;
}

export interface EgressOperatorStatus {
  pool: string | null;
  policies: number;
  assigned: number;
  /** --node-monitor-grace-period, ms (0: each node lease's own duration). */
  nodeMonitorGracePeriodMs: number;
  /** Nodes whose lease ran out: no gateway is placed on them. */
  nodesGone: string[];
  lastError: string | null;
}

export class EgressOperator {
  private readonly opts: EgressOperatorOptions;
  private readonly policies: KindCache<EgressGatewayPolicyResource>;
  private readonly nodes: KindCache<NodeSpec>;
  private readonly liveness: NodeLiveness;
  private pending: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastError: string | undefined;
  private assigned = 0;

  constructor(opts: EgressOperatorOptions) {
    this.opts = opts;
    this.policies = new KindCache<EgressGatewayPolicyResource>(opts.store, EGRESS_STORE_KIND, opts.log);
    this.nodes = new KindCache<NodeSpec>(opts.store, 'Node', opts.log);
    this.liveness = new NodeLiveness(opts.store, opts.log, opts.nodeGraceMs ?? 0);
  }

  async start(): Promise<void> {
    const events = { change: () => this.schedule(0), resync: () => this.schedule(0) };
    await this.nodes.start(events);
    await this.liveness.start(() => this.schedule(0));
    await this.policies.start(events);
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.pending);
    this.policies.stop();
    this.nodes.stop();
    this.liveness.stop();
    await this.running;
  }

  status(): EgressOperatorStatus {
    return {
      pool: this.opts.pool ?? null,
      policies: this.policies.values().length,
      assigned: this.assigned,
      nodeMonitorGracePeriodMs: this.opts.nodeGraceMs ?? 0,
      nodesGone: this.liveness.ready ? this.liveness.gone() : [],
      lastError: this.lastError ?? null,
    };
  }

  private schedule(ms: number): void {
    if (this.stopped || this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.running = this.running.then(() => this.pass()).catch((err: unknown) => {
        this.lastError = (err as Error).message;
        this.opts.log.warn({ err }, 'egress gateway pass failed; retrying');
        this.schedule(RETRY_MS);
      });
    }, ms);
  }

  private async pass(): Promise<void> {
    if (this.stopped || !this.policies.ready || !this.nodes.ready || !this.liveness.ready) return;
    const { store, pool } = this.opts;
    let poolRes = await store.get<EgressPoolState>('IPAMState', EGRESS_POOL_STATE);
    let state = poolRes?.value;
    if (pool && state && state.cidr !== pool) {
      // Another pool: assignments outside it are dropped by the plan (it frees what no longer fits).
      this.opts.log.warn({ stored: state.cidr, flag: pool }, 'egress IP pool changed; addresses outside the new pool are reassigned');
      state = { cidr: pool, assigned: state.assigned };
    }
    if (pool && !state) state = { cidr: pool, assigned: {} };
    if (!pool) state = undefined;
    const specs = this.policies.values().map((p) => p.spec);
    // A node whose agent stopped renewing its lease is no gateway (failover); the others keep their policies.
    const nodes = this.nodes.values().filter((n) => this.liveness.alive(n.name));
    const current = new Map(this.policies.values().flatMap((p) => (p.status?.gatewayNode ? [[p.spec.name, p.status.gatewayNode] as const] : [])));
    const plan = planEgress(specs, nodes, state, current);
    if (plan.pool && JSON.stringify(plan.pool) !== JSON.stringify(poolRes?.value)) {
      poolRes = await store.put<EgressPoolState>('IPAMState', EGRESS_POOL_STATE, plan.pool, { expectedRevision: poolRes?.revision ?? 0 });
    }
    this.assigned = Object.keys(plan.pool?.assigned ?? {}).length;
    for (const [name, status] of plan.status) {
      const cur = await store.get<EgressGatewayPolicyResource>(EGRESS_STORE_KIND, name);
      if (!cur) continue;
      if (JSON.stringify(cur.value.status ?? {}) === JSON.stringify(status)) continue;
      await store.put<EgressGatewayPolicyResource>(EGRESS_STORE_KIND, name, { spec: cur.value.spec, status }, { expectedRevision: cur.revision });
      this.opts.log.info({ policy: name, ...status }, 'egress gateway policy status');
    }
    this.lastError = undefined;
  }
}

export { EgressError };
