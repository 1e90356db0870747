// The operator component: keeps cluster-pool IPAM state in the store and gives every Node a pod CIDR.
//
// Level-triggered: every watch event, resync or grace expiry marks the world dirty and one serialized reconcile pass
// recomputes everything from the store (pool state) and the watched Node cache. The pool state is the source of
// truth and is written before the Node, so a crash between the two writes is repaired by the next pass.
import type { ClusterPoolState, NodeSpec, Resource, Store, WatchHandle } from '../store/index.js';
import { logger, type Logger } from '../util/log.js';
import { ClusterPool, type ClusterPoolConfig, type PoolUsage } from './cluster-pool.js';
import { OperatorError } from './errors.js';

/** Name of the IPAMState resource holding the cluster-pool allocator. */
export const CLUSTER_POOL_STATE = 'cluster-pool';
export const DEFAULT_NODE_CIDR_GRACE_MS = 30_000;

/** Optimistic-concurrency retries of one write before the pass gives up and backs off. */
const MAX_CONFLICT_RETRIES = 20;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 10_000;
/** Timers may fire a hair early relative to Date.now(); wake a little after the grace ends. */
const EXPIRY_SLACK_MS = 5;

export interface OperatorOptions {
  store: Store;
  /** Validated pool flags (validatePoolConfig). */
  pool: ClusterPoolConfig;
  /** How long a departed node's CIDR is held for it before another node may get it. */
  graceMs?: number;
  log?: Logger;
}

export type OperatorState = 'stopped' | 'starting' | 'running' | 'stopping';

export interface OperatorStatus {
  state: OperatorState;
  pool: ClusterPoolConfig & PoolUsage;
  graceMs: number;
  /** node -> pod CIDR. */
  assignments: Record<string, string>;
  /** CIDR -> departed node and when the CIDR becomes free. */
  releasing: ClusterPoolState['releasing'];
  /** Set while nodes wait for a CIDR because the pool is full. */
  exhausted: { message: string; waiting: string[]; since: string } | null;
  /** Last failed reconcile (store unreachable, foreign pool state, …); cleared by the next good pass. */
  lastError: { message: string; code?: string; at: string } | null;
  store: { description: string; connected: boolean };
  nodes: number;
  lastReconcile: string | null;
}

export class Operator {
  private readonly store: Store;
  private readonly cfg: ClusterPoolConfig;
  private readonly graceMs: number;
  private readonly log: Logger;

  private state: OperatorState = 'stopped';
  private pool: ClusterPool;
  /** Node name -> last seen resource (from list, then watch events). */
  private nodes = new Map<string, Resource<unknown>>();
  private watch: WatchHandle | undefined;
  private connected = false;

  private dirty = false;
  private loop: Promise<void> | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private resyncing = false;

  private exhausted: OperatorStatus['exhausted'] = null;
  private lastError: OperatorStatus['lastError'] = null;
  private lastReconcile: string | null = null;

  /** Validates only; I/O starts in start(). */
  constructor(opts: OperatorOptions) {
    const graceMs = opts.graceMs ?? DEFAULT_NODE_CIDR_GRACE_MS;
    if (!Number.isFinite(graceMs) || graceMs < 0) {
      throw new OperatorError('TENDRIL_ERR_INVALID_CONFIG', `Invalid node CIDR grace ${graceMs} ms: expected a duration >= 0`);
    }
    this.store = opts.store;
    this.pool = ClusterPool.create(opts.pool);
    this.cfg = { cidr: this.pool.cidr, maskSize: this.pool.maskSize };
    this.graceMs = graceMs;
    this.log = opts.log ?? logger('operator');
  }

  /**
   * Checks (or creates) the stored pool, lists and watches Nodes and runs the first reconcile pass. Refuses to start
   * when the stored pool differs from the flags.
   */
  async start(): Promise<void> {
    if (this.state !== 'stopped') throw new OperatorError('TENDRIL_ERR_STATE', `Cannot start the operator: it is ${this.state}`);
    this.state = 'starting';
    try {
      await this.ensurePoolState();
      await this.relist();
      this.log.info(
        { pool: this.cfg.cidr, maskSize: this.cfg.maskSize, graceMs: this.graceMs, store: this.store.description, nodes: this.nodes.size },
        'operator started',
      );
      this.state = 'running';
      this.kick();
      await this.loop;
    } catch (err) {
      await this.halt();
      throw err;
    }
  }

  /** Stops watching and waits for the pass in flight; leaves the store open (its owner closes it). */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    await this.halt();
    this.log.info('operator stopped');
  }

  status(): OperatorStatus {
    const st = this.pool.toState();
    return {
      state: this.state,
      pool: { ...this.cfg, ...this.pool.usage(Date.now()) },
      graceMs: this.graceMs,
      assignments: st.assigned,
      releasing: st.releasing,
      exhausted: this.exhausted,
      lastError: this.lastError,
      store: { description: this.store.description, connected: this.connected },
      nodes: this.nodes.size,
      lastReconcile: this.lastReconcile,
    };
  }

  /** Resolves when no pass is running or pending (for tests and orderly shutdown). */
  async settled(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private async halt(): Promise<void> {
    this.state = 'stopping';
    this.watch?.close();
    this.watch = undefined;
    clearTimeout(this.expiryTimer);
    clearTimeout(this.retryTimer);
    await this.settled();
    this.state = 'stopped';
  }

  // ---- store plumbing ---------------------------------------------------------------------------------------

  private async ensurePoolState(): Promise<void> {
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      const cur = await this.store.get<unknown>('IPAMState', CLUSTER_POOL_STATE);
      if (cur) {
        this.pool = this.loadPool(cur.value);
        return;
      }
      try {
        await this.store.put<ClusterPoolState>('IPAMState', CLUSTER_POOL_STATE, this.pool.toState(), { expectedRevision: 0 });
        this.log.info({ pool: this.cfg.cidr, maskSize: this.cfg.maskSize }, 'created cluster pool state');
        return;
      } catch (err) {
        if (!isConflict(err)) throw err;
        // Another operator created it first: read theirs (and check it against our flags).
      }
    }
    throw new OperatorError('TENDRIL_ERR_STATE', `Cannot create IPAMState "${CLUSTER_POOL_STATE}": it kept changing under us`);
  }

  /** Parses stored pool state and refuses one carved differently from the flags (never re-carve silently). */
  private loadPool(value: unknown): ClusterPool {
    let p: ClusterPool;
    try {
      p = ClusterPool.fromState(value);
    } catch (err) {
      throw new OperatorError('TENDRIL_ERR_STATE', `Cannot use IPAMState "${CLUSTER_POOL_STATE}" from the store: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (p.cidr !== this.cfg.cidr || p.maskSize !== this.cfg.maskSize) {
      throw new OperatorError(
        'TENDRIL_ERR_POOL_MISMATCH',
        `Cannot use cluster pool ${this.cfg.cidr} with mask /${this.cfg.maskSize} ` +
          `(--cluster-pool-cidr ${this.cfg.cidr} --cluster-pool-mask-size ${this.cfg.maskSize}): ` +
          `the store already holds pool ${p.cidr} with mask /${p.maskSize} for ${p.assignments().size} node(s); ` +
          `re-carving would re-number running nodes, so start with those values ` +
          `(or delete IPAMState "${CLUSTER_POOL_STATE}" once no node uses it)`,
      );
    }
    return p;
  }

  private async relist(): Promise<void> {
    const { items, revision } = await this.store.list<unknown>('Node');
    this.nodes = new Map(items.map((r) => [r.name, r]));
    this.connected = true;
    this.watch?.close();
    this.watch = this.store.watch('Node', {
      fromRevision: revision,
      onEvent: (ev) => {
        if (ev.type === 'put') this.nodes.set(ev.resource.name, ev.resource);
        else this.nodes.delete(ev.name);
        this.kick();
      },
      onResync: (reason) => {
        this.log.warn({ reason }, 'node watch lost its place; listing again');
        this.watch = undefined;
        void this.resync();
      },
      onConnection: (connected) => {
        if (connected === this.connected) return;
        this.connected = connected;
        this.log[connected ? 'info' : 'warn']({ store: this.store.description }, connected ? 'store reachable again' : 'store unreachable');
        // Time-based work (grace expiry) may have piled up while the store was away.
        if (connected) this.kick();
      },
    });
  }

  private async resync(): Promise<void> {
    if (this.resyncing || !this.isActive()) return;
    this.resyncing = true;
    try {
      await this.relist();
      this.kick();
    } catch (err) {
      this.recordError(err, 'cannot list nodes after a watch resync');
      this.scheduleRetry(() => void this.resync());
    } finally {
      this.resyncing = false;
    }
  }

  // ---- the reconcile loop ---------------------------------------------------------------------------------

  private isActive(): boolean {
    return this.state === 'running' || this.state === 'starting';
  }

  /** Marks the world dirty and makes sure one (and only one) pass loop is running. */
  private kick(): void {
    if (!this.isActive()) return;
    this.dirty = true;
    if (this.loop) return;
    this.loop = this.runLoop().finally(() => {
      this.loop = undefined;
    });
  }

  private async runLoop(): Promise<void> {
    while (this.dirty && this.isActive()) {
      this.dirty = false;
      try {
        await this.reconcile();
        this.failures = 0;
        this.lastError = null;
        this.lastReconcile = new Date().toISOString();
      } catch (err) {
        this.recordError(err, 'reconcile failed; will retry');
        this.scheduleRetry(() => this.kick());
        return;
      }
    }
  }

  private recordError(err: unknown, what: string): void {
    const e = err as { message?: unknown; code?: unknown };
    const message = typeof e.message === 'string' ? e.message : String(err);
    this.lastError = { message, ...(typeof e.code === 'string' ? { code: e.code } : {}), at: new Date().toISOString() };
    this.log.error({ err }, what);
  }

  private scheduleRetry(fn: () => void): void {
    if (!this.isActive()) return;
    this.failures++;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(this.failures - 1, 10));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(fn, delay);
  }

  /** One pass: update the pool in the store (released, expired, assigned), then write each Node's podCIDRs. */
  private async reconcile(): Promise<void> {
    const pool = await this.updatePool();
    this.pool = pool;

    for (const [name, res] of this.nodes) {
      const cidr = pool.cidrOf(name);
      if (cidr !== undefined) await this.writeNodeCidr(name, res, cidr);
    }

    clearTimeout(this.expiryTimer);
    const next = pool.nextExpiry();
    if (next !== undefined && this.isActive()) {
      this.expiryTimer = setTimeout(() => this.kick(), Math.max(0, next - Date.now()) + EXPIRY_SLACK_MS);
    }
  }

  private async updatePool(): Promise<ClusterPool> {
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      const now = Date.now();
      const cur = await this.store.get<unknown>('IPAMState', CLUSTER_POOL_STATE);
      // Deleted by hand: start a fresh pool; nodes keep their CIDRs through adoption below.
      const pool = cur ? this.loadPool(cur.value) : ClusterPool.create(this.cfg);
      const before = JSON.stringify(pool.toState());
      const notes: Array<() => void> = [];

      for (const node of pool.assignments().keys()) {
        if (this.nodes.has(node)) continue;
        const cidr = pool.release(node, now, this.graceMs);
        notes.push(() => this.log.info({ node, cidr, graceMs: this.graceMs }, 'node left; holding its CIDR for the grace period'));
      }
      for (const { cidr, node } of pool.expire(now)) {
        notes.push(() => this.log.info({ node, cidr }, 'grace period over; CIDR is free'));
      }

      // Oldest writes first, so nodes waiting on a full pool are served roughly in the order they came.
      const order = [...this.nodes.values()].sort((a, b) => a.revision - b.revision || (a.name < b.name ? -1 : 1));
      const waiting: string[] = [];
      let exhaustion: OperatorError | undefined;
      for (const res of order) {
        const carried = nodePodCIDRs(res.value);
        try {
          const { cidr, source } = pool.assign(res.name, now, carried[0]);
          if (source === 'existing') continue;
          notes.push(() => this.log.info({ node: res.name, cidr, source }, 'assigned pod CIDR'));
        } catch (err) {
          if (!(err instanceof OperatorError) || err.code !== 'TENDRIL_ERR_IPAM_EXHAUSTED') throw err;
          waiting.push(res.name);
          exhaustion = err;
        }
      }

      const after = pool.toState();
      if (JSON.stringify(after) !== before) {
        try {
          await this.store.put<ClusterPoolState>('IPAMState', CLUSTER_POOL_STATE, after, { expectedRevision: cur?.revision ?? 0 });
        } catch (err) {
          if (isConflict(err)) continue; // another writer (a second operator) moved first: recompute on its state
          throw err;
        }
      }
      for (const note of notes) note();
      this.noteExhaustion(waiting, exhaustion);
      return pool;
    }
    throw new OperatorError('TENDRIL_ERR_STATE', `Cannot update IPAMState "${CLUSTER_POOL_STATE}": it kept changing under us`);
  }

  private noteExhaustion(waiting: string[], err: OperatorError | undefined): void {
    if (!err || waiting.length === 0) {
      if (this.exhausted) this.log.info({ served: this.exhausted.waiting }, 'cluster pool has room again; no node is waiting');
      this.exhausted = null;
      return;
    }
    const prev = this.exhausted;
    const same = prev !== null && prev.waiting.join('\0') === waiting.join('\0');
    if (!same) this.log.error({ waiting, err }, `cannot assign a pod CIDR: ${err.message}`);
    this.exhausted = { message: err.message, waiting, since: prev?.since ?? new Date().toISOString() };
  }

  /** Sets Node `name`'s podCIDRs to [cidr], keeping every other field; retries against concurrent agent writes. */
  private async writeNodeCidr(name: string, cached: Resource<unknown>, cidr: string): Promise<void> {
    let res: Resource<unknown> | undefined = cached;
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      if (!res) return; // deleted meanwhile: the next pass releases its CIDR
      const current = nodePodCIDRs(res.value);
      if (current.length === 1 && current[0] === cidr) return;
      if (current.length > 0 && attempt === 0) {
        this.log.warn({ node: name, had: current, cidr }, 'node carries pod CIDRs other than the pool assigned it; rewriting');
      }
      const value = { ...(isRecord(res.value) ? res.value : { name }), podCIDRs: [cidr] } as NodeSpec;
      try {
        await this.store.put<NodeSpec>('Node', name, value, { expectedRevision: res.revision });
        return;
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
      res = await this.store.get<unknown>('Node', name);
    }
    throw new OperatorError('TENDRIL_ERR_STATE', `Cannot write pod CIDR ${cidr} to Node "${name}": it kept changing under us`);
  }
}

/** The podCIDRs a stored Node value carries (tolerating junk: the agent owns the rest of the value). */
function nodePodCIDRs(value: unknown): string[] {
  if (!isRecord(value) || !Array.isArray(value['podCIDRs'])) return [];
  return value['podCIDRs'].filter((c): c is string => typeof c === 'string');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Store conflicts are recognized by code so that any backend's error (local, etcd) qualifies. */
function isConflict(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'TENDRIL_ERR_STORE_CONFLICT';
}
