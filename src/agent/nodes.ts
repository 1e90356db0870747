// Node manager: registers this node in the cluster store, watches every Node (through the store's KindCache), and
// tells the agent when its own pod CIDR arrives and when remote nodes appear, change or leave. Survives store
// restarts (the watch resumes; when it cannot, the cache re-lists and a resync reconciles).
import { KindCache, type Kind, type NodeSpec, type Store } from '../store/index.js';
import type { Logger } from '../util/log.js';

const KIND: Kind = 'Node';

export interface NodeEvents {
  /** This node's resource changed (e.g. the operator assigned its pod CIDR). */
  self(node: NodeSpec): void;
  /** A remote node appeared or changed. */
  upsert(node: NodeSpec): void;
  /** A remote node left. */
  remove(name: string): void;
  /** After a (re-)list: the complete set of remote nodes (anything else is gone). */
  resync(nodes: NodeSpec[]): void;
}

export class NodeManager {
  private readonly store: Store;
  private readonly selfName: string;
  private readonly addresses: string[];
  private readonly log: Logger;
  private readonly cache: KindCache<NodeSpec>;
  private events: NodeEvents | undefined;
  private stopped = false;

  constructor(store: Store, self: { name: string; addresses: string[] }, log: Logger) {
    this.store = store;
    this.selfName = self.name;
    this.addresses = self.addresses;
    this.log = log;
    this.cache = new KindCache<NodeSpec>(store, KIND, log);
  }

  /** Registers this node, lists and watches every Node; rejects when the store cannot be reached (the caller retries). */
  async start(events: NodeEvents): Promise<void> {
    this.events = events;
    await this.register();
    if (this.stopped) return;
    await this.cache.start({
      change: (name, value) => this.onChange(name, value),
      resync: (all) => this.onResync(all),
      connection: (up) => this.log.info({ connected: up }, up ? 'cluster store reachable again' : 'cluster store unreachable; forwarding continues'),
    });
  }

  /** Closes the watch; nothing is reported afterwards (a listing in flight opens none). */
  stop(): void {
    this.stopped = true;
    this.cache.stop();
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

  private onResync(all: Map<string, NodeSpec>): void {
    if (this.stopped) return;
    const self = all.get(this.selfName);
    if (self) this.events?.self(self);
    this.events?.resync([...all].filter(([name]) => name !== this.selfName).map(([, n]) => n));
  }

  private onChange(name: string, node: NodeSpec | undefined): void {
    if (this.stopped) return;
    if (node) {
      if (name === this.selfName) this.events?.self(node);
      else this.events?.upsert(node);
    } else if (name === this.selfName) {
      this.log.warn('this node was deleted from the cluster store; registering again');
      this.register().catch((err: unknown) => this.log.error({ err }, 're-registration failed'));
    } else {
      this.events?.remove(name);
    }
  }

  list(): NodeSpec[] {
    return this.cache.values().sort((a, b) => a.name.localeCompare(b.name));
  }
}
