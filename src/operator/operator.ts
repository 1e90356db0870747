// The operator component: keeps cluster-pool IPAM state in the store and gives every Node a pod CIDR.
//
// Level-triggered: every watch event, resync or grace expiry marks the world dirty and one serialized reconcile pass
// recomputes everything from the store (pool state) and the watched Node cache. The pool state is the source of
// truth and is written before the Node, so a crash between the two writes is repaired by the next pass.
import type { ClusterPoolState, NodeIpamPool, NodeSpec, Resource, Store, WatchHandle } from '../store/index.js';
import { logger, type Logger } from '../util/log.js';
import { ClusterPool, type ClusterPoolConfig, type PoolConfigInput, type PoolUsage } from './cluster-pool.js';
import { OperatorError } from './errors.js';
import { MultiPools, nodePoolRequests, type PoolView } from './multi-pool.js';
import { migrateLegacyPools } from './pool-migration.js';

/** Name of the IPAMState resource holding the cluster-pool allocator. */
export const CLUSTER_POOL_STATE = 'cluster-pool';
export const DEFAULT_NODE_CIDR_GRACE_MS = 30_000;
/** The pool name cluster-pool nodes ask in (NodeSpec.ipam.pools). */
export const DEFAULT_POOL = 'default';
/** A node asks for at most this many CIDRs of one pool (a runaway agent cannot drain the cluster). */
export const MAX_CIDRS_PER_NODE = 64;

/** Optimistic-concurrency retries of one write before the pass gives up and backs off. */
const MAX_CONFLICT_RETRIES = 20;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 10_000;
/** Timers may fire a hair early relative to Date.now(); wake a little after the grace ends. */
const EXPIRY_SLACK_MS = 5;

export interface OperatorOptions {
  store: Store;
  /** Pool flags (validated here: validatePoolConfig). */
  pool: PoolConfigInput;
  /**
   * 'cluster-pool' (default): carve node CIDRs. 'kubernetes': node CIDRs are written to the Node by someone else
   * (kube-controller-manager's role); the operator allocates nothing.
   */
  ipam?: 'cluster-pool' | 'kubernetes' | 'multi-pool';
  /** How long a departed node's CIDR is held for it before another node may get it. */
  graceMs?: number;
  log?: Logger;
}

export type OperatorState = 'stopped' | 'starting' | 'running' | 'stopping';

export interface OperatorStatus {
  state: OperatorState;
  ipam: 'cluster-pool' | 'kubernetes' | 'multi-pool';
  /** --ipam multi-pool: every TendrilPodIPPool besides "default" (the cluster pool above). */
  pools?: PoolView[];
  pool: ClusterPoolConfig & PoolUsage;
  graceMs: number;
  /** node -> pod CIDRs (primary first). */
  assignments: Record<string, string[]>;
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
  private readonly mode: 'cluster-pool' | 'kubernetes' | 'multi-pool';
  /** The TendrilPodIPPools (--ipam multi-pool). */
  private readonly multi: MultiPools | undefined;

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
    this.cfg = { cidrs: [...this.pool.cidrs], maskSize: this.pool.maskSize };
    this.graceMs = graceMs;
    this.log = opts.log ?? logger('operator');
    this.mode = opts.ipam ?? 'cluster-pool';
    this.multi = this.mode === 'multi-pool' ? new MultiPools(this.store, this.log.child({ subsys: 'multi-pool' })) : undefined;
  }

  /**
   * Checks (or creates) the stored pool, lists and watches Nodes and runs the first reconcile pass. Refuses to start
   * when the stored pool differs from the flags.
   */
  async start(): Promise<void> {
    if (this.state !== 'stopped') throw new OperatorError('TENDRIL_ERR_STATE', `Cannot start the operator: it is ${this.state}`);
    this.state = 'starting';
    if (this.mode === 'kubernetes') {
      this.log.info({ ipam: this.mode }, 'operator started; node pod CIDRs are given on the Node resources, nothing to allocate');
      this.state = 'running';
      return;
    }
    try {
      await this.ensurePoolState();
      // TendrilPodIPPools of earlier versions (IPAMState "pod-ip-pool.*") become their own kind.
      await migrateLegacyPools(this.store, this.log.child({ subsys: 'multi-pool' }));
      await this.multi?.start(() => this.kick());
      await this.relist();
      this.log.info(
        { pool: this.cfg.cidrs, maskSize: this.cfg.maskSize, graceMs: this.graceMs, store: this.store.description, nodes: this.nodes.size },
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
      ipam: this.mode,
      ...(this.multi ? { pools: this.multi.status() } : {}),
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

  /** Runs a pass soon (a TendrilPodIPPool was written through the API). */
  refresh(): void {
    this.kick();
  }

  /** Resolves when no pass is running or pending (for tests and orderly shutdown). */
  async settled(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private async halt(): Promise<void> {
    this.state = 'stopping';
    this.watch?.close();
    this.watch = undefined;
    this.multi?.stop();
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
        this.log.info({ pool: this.cfg.cidrs, maskSize: this.cfg.maskSize }, 'created cluster pool state');
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
    const same = p.maskSize === this.cfg.maskSize && p.cidrs.join(',') === this.cfg.cidrs.join(',');
    if (same) return p;
    // Cluster CIDRs may be added (and reordered); none in use may go and the mask size never changes.
    const moved = p.withConfig(this.cfg);
    if (!(moved instanceof ClusterPool)) {
      const flags = [...this.cfg.cidrs.map((c) => `--cluster-pool-ipv4-cidr ${c}`), `--cluster-pool-ipv4-mask-size ${this.cfg.maskSize}`].join(' ');
      throw new OperatorError(
        'TENDRIL_ERR_POOL_MISMATCH',
        `Cannot use cluster pool ${this.cfg.cidrs.join(', ')} with mask /${this.cfg.maskSize} (${flags}): ` +
          `the store already holds pool ${p.cidrs.join(', ')} with mask /${p.maskSize} for ${p.assignments().size} node(s) ` +
          `and ${moved.problem}; re-carving would re-number running nodes, so start with those values ` +
          `(cluster CIDRs may only be added) or delete IPAMState "${CLUSTER_POOL_STATE}" once no node uses it`,
      );
    }
    return moved;
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

    const extra = this.multi ? await this.multi.reconcile(this.nodes, this.cfg.cidrs, Date.now(), this.graceMs) : undefined;
    for (const [name, res] of this.nodes) {
      const cidrs = pool.cidrsOf(name);
      if (cidrs.length > 0) await this.writeNodeCidrs(name, res, cidrs, extra?.get(name));
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
        const ask = nodeRequest(res.value);
        for (const cidr of ask.release) {
          if (pool.handBack(res.name, cidr)) notes.push(() => this.log.info({ node: res.name, cidr }, 'node handed back an empty pod CIDR; it is free'));
        }
        const had = pool.cidrsOf(res.name).length;
        const want = Math.max(1, Math.min(ask.requested, MAX_CIDRS_PER_NODE));
        if (had >= want) continue;
        try {
          // A node new to the pool may carry CIDRs already (the pool state was lost): it keeps them when free.
          const added = pool.grow(res.name, want, now, had === 0 ? nodePodCIDRs(res.value) : []);
          for (const { cidr, source } of added) {
            notes.push(() => this.log.info({ node: res.name, cidr, source, cidrs: had + added.length }, had === 0 ? 'assigned pod CIDR' : 'node grew: assigned another pod CIDR'));
          }
          if (pool.cidrsOf(res.name).length < want) {
            waiting.push(res.name);
            exhaustion = new OperatorError('TENDRIL_ERR_IPAM_EXHAUSTED', `cannot grow node "${res.name}" to ${want} CIDRs: the pool has no more`);
          }
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

  /**
   * Sets Node `name`'s podCIDRs (and its ipam grant) to `cidrs`, keeping every other field and dropping handled
   * hand-backs from its request; retries against concurrent agent writes.
   */
  private async writeNodeCidrs(name: string, cached: Resource<unknown>, cidrs: string[], extra?: Record<string, string[]>): Promise<void> {
    let res: Resource<unknown> | undefined = cached;
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      if (!res) return; // deleted meanwhile: the next pass releases its CIDRs
      const value = isRecord(res.value) ? res.value : { name };
      const current = nodePodCIDRs(value);
      const ask = nodeRequest(value);
      const entry: NodeIpamPool = { requested: ask.requested, allocated: cidrs };
      const release = ask.release.filter((c) => cidrs.includes(c));
      if (release.length > 0) entry.release = release;
      const ipam = { pools: { ...nodePools(value), [DEFAULT_POOL]: entry, ...(this.multi ? poolGrants(value, extra ?? {}) : {}) } };
      const podCIDRs = [...cidrs, ...Object.values(extra ?? {}).flat()];
      const next = { ...value, podCIDRs, ipam } as unknown as NodeSpec;
      if (JSON.stringify(next) === JSON.stringify(value)) return;
      if (attempt === 0 && current.length > 0 && !current.every((c) => podCIDRs.includes(c))) {
        this.log.warn({ node: name, had: current, cidrs }, 'node carries pod CIDRs other than the pool assigned it; rewriting');
      }
      try {
        await this.store.put<NodeSpec>('Node', name, next, { expectedRevision: res.revision });
        return;
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
      res = await this.store.get<unknown>('Node', name);
    }
    throw new OperatorError('TENDRIL_ERR_STATE', `Cannot write pod CIDRs ${cidrs.join(', ')} to Node "${name}": it kept changing under us`);
  }
}

/** What a node asks of the default pool: how many CIDRs, and which it hands back (junk tolerated: 1, none). */
function nodeRequest(value: unknown): { requested: number; release: string[] } {
  const p = nodePools(value)[DEFAULT_POOL];
  const requested = isRecord(p) && Number.isInteger(p['requested']) && (p['requested'] as number) > 0 ? (p['requested'] as number) : 1;
  const release = isRecord(p) && Array.isArray(p['release']) ? p['release'].filter((c): c is string => typeof c === 'string') : [];
  return { requested, release };
}

/** --ipam multi-pool: the extra pools' entries of a Node, each with its grant (the agent's request kept). */
function poolGrants(value: unknown, extra: Record<string, string[]>): Record<string, NodeIpamPool> {
  const out: Record<string, NodeIpamPool> = {};
  const asks = nodePoolRequests(value);
  for (const name of new Set([...asks.keys(), ...Object.keys(extra)])) {
    if (name === DEFAULT_POOL) continue;
    const ask = asks.get(name) ?? { requested: 0, release: [] };
    const allocated = extra[name] ?? [];
    const entry: NodeIpamPool = { requested: ask.requested, allocated };
    const release = ask.release.filter((c) => allocated.includes(c));
    if (release.length > 0) entry.release = release;
    out[name] = entry;
  }
  return out;
}

function nodePools(value: unknown): Record<string, unknown> {
  if (!isRecord(value) || !isRecord(value['ipam']) || !isRecord(value['ipam']['pools'])) return {};
  return value['ipam']['pools'];
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
