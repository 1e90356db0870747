// Node manager: registers this node in the cluster store, watches every Node, and tells the agent when its own pod
// CIDR arrives and when remote nodes appear, change or leave. Survives store restarts (the client reconnects and the
// watch resumes; when it cannot, a full re-list reconciles).
import type { Kind, NodeSpec, Resource, Store, WatchEvent, WatchHandle } from '../store/types.js';
import type { Logger } from '../util/log.js';

const KIND: Kind = 'Node';

export interface NodeEvents {
  /** This node's resource changed (e.g. the operator assigned its pod CIDR). */
  self(node: NodeSpec): void;
  /** A remote node appeared or changed. */
  upsert(node: NodeSpec): void;
  /** A remote node left. */
  remove(name: string): void;
  /** After a re-list: the complete set of remote nodes (anything else is gone). */
  resync(nodes: NodeSpec[]): void;
}

export class NodeManager {
  private readonly store: Store;
  private readonly selfName: string;
  private readonly addresses: string[];
  private readonly log: Logger;
  private readonly cache = new Map<string, Resource<NodeSpec>>();
  private watch: WatchHandle | undefined;
  private events: NodeEvents | undefined;
  private stopped = false;
  connected = true;

  constructor(store: Store, self: { name: string; addresses: string[] }, log: Logger) {
    this.store = store;
    this.selfName = self.name;
    this.addresses = self.addresses;
    this.log = log;
  }

  async start(events: NodeEvents): Promise<void> {
    this.events = events;
    await this.register();
    await this.relist();
  }

  stop(): void {
    this.stopped = true;
    this.watch?.close();
    this.watch = undefined;
  }

  /** Registers this node, keeping what the operator already assigned (a restart keeps its CIDR). */
  private async register(): Promise<void> {
    await this.update((cur) => ({
      ...cur,
      name: this.selfName,
      addresses: this.addresses,
      podCIDRs: cur?.podCIDRs ?? [],
    }));
  }

  /** Read-modify-write of this node's resource with optimistic concurrency (the operator writes it too). */
  async update(fn: (cur: NodeSpec | undefined) => NodeSpec): Promise<NodeSpec> {
    for (let attempt = 0; ; attempt++) {
      const cur = await this.store.get<NodeSpec>(KIND, this.selfName);
      const next = fn(cur?.value);
      if (cur && JSON.stringify(cur.value) === JSON.stringify(next)) return next;
      try {
        await this.store.put(KIND, this.selfName, next, { expectedRevision: cur?.revision ?? 0 });
        return next;
      } catch (err) {
        if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_CONFLICT' || attempt > 20) throw err;
      }
    }
  }

  private async relist(): Promise<void> {
    this.watch?.close();
    const { items, revision } = await this.store.list<NodeSpec>(KIND);
    this.cache.clear();
    for (const r of items) this.cache.set(r.name, r);
    const self = this.cache.get(this.selfName);
    if (self) this.events?.self(self.value);
    this.events?.resync(items.filter((r) => r.name !== this.selfName).map((r) => r.value));
    this.watch = this.store.watch(KIND, {
      fromRevision: revision,
      onEvent: (ev) => this.onEvent(ev as WatchEvent<NodeSpec>),
      onResync: (reason) => {
        this.log.warn({ reason }, 'node watch lost its place; re-listing');
        this.retryRelist();
      },
      onConnection: (up) => {
        this.connected = up;
        this.log.info({ connected: up }, up ? 'cluster store reachable again' : 'cluster store unreachable; forwarding continues');
      },
    });
  }

  private retryRelist(): void {
    if (this.stopped) return;
    this.relist().catch((err: unknown) => {
      this.log.warn({ err }, 're-list of nodes failed; retrying');
      setTimeout(() => this.retryRelist(), 500);
    });
  }

  private onEvent(ev: WatchEvent<NodeSpec>): void {
    if (ev.type === 'put') {
      const r = ev.resource;
      const old = this.cache.get(r.name);
      if (old && old.revision >= r.revision) return;
      this.cache.set(r.name, r);
      if (old && JSON.stringify(old.value) === JSON.stringify(r.value)) return;
      if (r.name === this.selfName) this.events?.self(r.value);
      else this.events?.upsert(r.value);
    } else {
      if (!this.cache.delete(ev.name)) return;
      if (ev.name === this.selfName) {
        this.log.warn('this node was deleted from the cluster store; registering again');
        this.register().catch((err: unknown) => this.log.error({ err }, 're-registration failed'));
      } else {
        this.events?.remove(ev.name);
      }
    }
  }

  list(): NodeSpec[] {
    return [...this.cache.values()].map((r) => r.value).sort((a, b) => a.name.localeCompare(b.name));
  }
}
