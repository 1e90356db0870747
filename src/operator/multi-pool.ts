// Multi-pool IPAM (--ipam multi-pool): TendrilPodIPPool resources besides the cluster-pool flags' "default" pool.
// A node asks for chunks of a pool in its Node resource (ipam.pools.<pool>.requested, written by its agent when a pod
// of that pool comes); every pass the operator grows each asking node in each pool and the Node gets the CIDRs
// (ipam.pools.<pool>.allocated, and all of them in podCIDRs so that routes and the ipcache follow every pool).
// Each pool's allocator is a ClusterPool over its own IPAMState "pool.<name>", so restarts never hand a CIDR out twice.
// Pools are store kind PodIPPool ({spec: {ipv4: {cidrs, maskSize}}, status}); the operator writes each one's status.
import {
  KindCache,
  POD_IP_POOL_KIND,
  POD_IP_POOL_STATE_PREFIX,
  StoreError,
  type ClusterPoolState,
  type PodIPPoolResource,
  type PodIPPoolSpec,
  type PodIPPoolStatus,
  type Resource,
  type Store,
} from '../store/index.js';
import type { Logger } from '../util/log.js';
import { HttpError, type ApiServer } from '../util/api.js';
import { formatCidr, type Cidr } from '../util/ip.js';
import { ClusterPool, checkPoolConfig, overlaps, parseStrictCidr, type PoolUsage } from './cluster-pool.js';
import { OperatorError } from './errors.js';

/** The pool of the cluster-pool flags; it cannot be created, changed or deleted as a TendrilPodIPPool. */
export const DEFAULT_POOL_NAME = 'default';
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A node asks for at most this many CIDRs of one pool. */
const MAX_CIDRS_PER_POOL = 64;

/** The flat {cidrs, maskSize} of a stored pool's spec.ipv4 (junk passed through for validatePodIPPool to refuse). */
export function poolSpecOf(value: unknown): unknown {
  const spec = isRecord(value) ? value['spec'] : undefined;
  return isRecord(spec) ? spec['ipv4'] : undefined;
}

/** The store value of a pool: the validated spec, and the status it had (the operator's to change). */
export function poolResource(spec: PodIPPoolSpec, status?: PodIPPoolStatus): PodIPPoolResource {
  return { spec: { ipv4: { cidrs: [...spec.cidrs], maskSize: spec.maskSize } }, ...(status !== undefined ? { status } : {}) };
}

export interface NamedPool {
  name: string;
  cidrs: readonly string[];
}

/**
 * Validates a TendrilPodIPPool: a DNS-label name other than "default", one IPv4 CIDR or more (canonical, not
 * overlapping each other), a mask size that fits them, and no overlap with `others` (other pools, the cluster CIDRs
 * as pool "default"). Errors are coded and name the pool, the CIDR and what it clashes with.
 */
export function validatePodIPPool(name: string, input: unknown, others: readonly NamedPool[]): PodIPPoolSpec {
  if (!NAME_RE.test(name)) {
    throw new OperatorError('TENDRIL_ERR_INVALID_POOL', `Invalid pool name "${name}": use a-z, 0-9 and "-" (a DNS label)`);
  }
  if (name === DEFAULT_POOL_NAME) {
    throw new OperatorError('TENDRIL_ERR_INVALID_POOL', 'Invalid pool "default": it is the cluster pool (--cluster-pool-ipv4-cidr, --cluster-pool-ipv4-mask-size) and cannot be defined as a TendrilPodIPPool');
  }
  const b = input as { cidrs?: unknown; maskSize?: unknown } | null;
  if (typeof b !== 'object' || b === null || !Array.isArray(b.cidrs) || b.cidrs.length === 0 || !b.cidrs.every((c) => typeof c === 'string')) {
    throw new OperatorError('TENDRIL_ERR_INVALID_POOL', `Invalid pool "${name}": "cidrs" must be a non-empty list of IPv4 CIDRs`);
  }
  if (b.maskSize !== undefined && typeof b.maskSize !== 'number' && typeof b.maskSize !== 'string') {
    throw new OperatorError('TENDRIL_ERR_INVALID_POOL', `Invalid pool "${name}": "maskSize" must be a prefix length`);
  }
  const cfg = checkPoolConfig({ cidrs: b.cidrs as string[], maskSize: b.maskSize as number | string | undefined }, 'TENDRIL_ERR_INVALID_POOL', {
    cidr: `cidr of pool "${name}"`,
    mask: `maskSize of pool "${name}"`,
  });
  for (const text of cfg.cidrs) {
    const c = strict(text);
    for (const other of others) {
      if (other.name === name) continue;
      const clash = other.cidrs.find((o) => overlaps(c, strict(o)));
      if (clash !== undefined) {
        const what = other.name === DEFAULT_POOL_NAME ? `the cluster CIDR ${clash} (pool "default")` : `${clash} of pool "${other.name}"`;
        throw new OperatorError('TENDRIL_ERR_POOL_CONFLICT', `Cannot use pool "${name}": its CIDR ${text} overlaps ${what}`);
      }
    }
  }
  return { cidrs: cfg.cidrs, maskSize: cfg.maskSize };
}

function strict(text: string): Cidr {
  return parseStrictCidr(text, (why) => {
    throw new OperatorError('TENDRIL_ERR_INVALID_POOL', `Invalid CIDR "${text}": ${why}`);
  });
}

/** What a node asks of each pool (junk tolerated), from a stored Node value. */
export function nodePoolRequests(value: unknown): Map<string, { requested: number; release: string[] }> {
  const out = new Map<string, { requested: number; release: string[] }>();
  const pools = isRecord(value) && isRecord(value['ipam']) && isRecord(value['ipam']['pools']) ? value['ipam']['pools'] : {};
  for (const [name, p] of Object.entries(pools)) {
    if (!isRecord(p)) continue;
    const requested = Number.isInteger(p['requested']) && (p['requested'] as number) >= 0 ? (p['requested'] as number) : 0;
    const release = Array.isArray(p['release']) ? p['release'].filter((c): c is string => typeof c === 'string') : [];
    out.set(name, { requested, release });
  }
  return out;
}

export interface PoolView extends PodIPPoolSpec, PoolUsage {
  name: string;
  /** node -> CIDRs of this pool. */
  assignments: Record<string, string[]>;
  /** Set while nodes wait for a CIDR of this pool because it is full. */
  exhausted: { message: string; waiting: string[] } | null;
  /** Set when the stored pool cannot be used (overlap, malformed): nothing is allocated from it. */
  problem: string | null;
}

/** The extra pools and their allocators, rebuilt from the store on every pass (the store is the truth). */
export class MultiPools {
  private readonly store: Store;
  private readonly log: Logger;
  private views = new Map<string, PoolView>();
  private cache: KindCache<unknown> | undefined;

  constructor(store: Store, log: Logger) {
    this.store = store;
    this.log = log;
  }

  /** Watches the pools (kubectl apply in Kubernetes mode writes them without the API): every change runs `kick`. */
  async start(kick: () => void): Promise<void> {
    this.cache = new KindCache<unknown>(this.store, POD_IP_POOL_KIND, this.log);
    await this.cache.start({ change: kick, resync: kick });
  }

  stop(): void {
    this.cache?.stop();
    this.cache = undefined;
  }

  /**
   * One pass over every pool: frees CIDRs of departed nodes (after `graceMs`), takes hand-backs and grows every
   * asking node; writes each changed allocator state (conflict: the caller's pass retries). Returns node -> pool ->
   * CIDRs of the extra pools. `defaultCidrs` are the cluster CIDRs (pool "default"), which no pool may overlap.
   */
  async reconcile(nodes: ReadonlyMap<string, Resource<unknown>>, defaultCidrs: readonly string[], now: number, graceMs: number): Promise<Map<string, Record<string, string[]>>> {
    const { items } = await this.store.list<unknown>('IPAMState');
    const states = new Map(items.filter((r) => r.name.startsWith(POD_IP_POOL_STATE_PREFIX)).map((r) => [r.name.slice(POD_IP_POOL_STATE_PREFIX.length), r]));
    // Pools in use first (they were accepted before), then oldest first: of two that overlap, the later is unused.
    // (Status writes move revisions, so the allocator state is what says a pool was there first.)
    const inUse = (r: Resource<unknown>): number => (states.has(r.name) ? 0 : 1);
    const specs = (await this.store.list<unknown>(POD_IP_POOL_KIND)).items.sort((a, b) => inUse(a) - inUse(b) || a.revision - b.revision || (a.name < b.name ? -1 : 1));
    const grants = new Map<string, Record<string, string[]>>();
    const views = new Map<string, PoolView>();
    const accepted: NamedPool[] = [{ name: DEFAULT_POOL_NAME, cidrs: defaultCidrs }];
    const order = [...nodes.values()].sort((a, b) => a.revision - b.revision || (a.name < b.name ? -1 : 1));

    for (const specRes of specs) {
      const name = specRes.name;
      let spec: PodIPPoolSpec;
      try {
        spec = validatePodIPPool(name, poolSpecOf(specRes.value), accepted);
      } catch (err) {
        const raw = poolSpecOf(specRes.value) as Partial<PodIPPoolSpec> | null | undefined;
        // What nodes hold of it stays theirs (running pods keep their addresses); nothing more is handed out.
        const held = await this.keepHeld(name, states.get(name), nodes, now, false, grants);
        views.set(name, { name, cidrs: Array.isArray(raw?.cidrs) ? raw.cidrs : [], maskSize: Number(raw?.maskSize ?? 0), total: 0, assigned: 0, releasing: 0, free: 0, assignments: held, exhausted: null, problem: (err as Error).message });
        continue;
      }
      accepted.push({ name, cidrs: spec.cidrs });
      const stateRes = states.get(name);
      const pool = this.loadPool(name, spec, stateRes?.value);
      const before = JSON.stringify(pool.toState());
      for (const node of pool.assignments().keys()) {
        if (!nodes.has(node)) {
          const cidrs = pool.release(node, now, graceMs);
          this.log.info({ pool: name, node, cidrs, graceMs }, 'node left; holding its CIDRs of the pool for the grace period');
        }
      }
      pool.expire(now);
      const waiting: string[] = [];
      let message = '';
      for (const res of order) {
        const ask = nodePoolRequests(res.value).get(name);
        if (!ask) continue;
        const held = pool.cidrsOf(res.name);
        if (ask.requested === 0 && held.length > 0 && held.every((c) => ask.release.includes(c))) {
          // The node has no pod of this pool left and gives all of it back (its primary included): free at once.
          pool.release(res.name, now, 0);
          this.log.info({ pool: name, node: res.name, cidrs: held }, 'node handed back every CIDR of the pool');
          continue;
        }
        for (const cidr of ask.release) {
          if (pool.handBack(res.name, cidr)) this.log.info({ pool: name, node: res.name, cidr }, 'node handed back a CIDR of the pool');
        }
        const want = Math.min(ask.requested, MAX_CIDRS_PER_POOL);
        const had = pool.cidrsOf(res.name).length;
        if (want <= had) continue;
        try {
          for (const { cidr, source } of pool.grow(res.name, want, now)) {
            this.log.info({ pool: name, node: res.name, cidr, source }, 'assigned a CIDR of the pool');
          }
          if (pool.cidrsOf(res.name).length < want) {
            waiting.push(res.name);
            message = `pool "${name}" cannot grow node "${res.name}" to ${want} CIDRs: it has no more`;
          }
        } catch (err) {
          if (!(err instanceof OperatorError) || err.code !== 'TENDRIL_ERR_IPAM_EXHAUSTED') throw err;
          waiting.push(res.name);
          message = err.message;
        }
      }
      const after = pool.toState();
      if (JSON.stringify(after) !== before || !stateRes) {
        await this.store.put<ClusterPoolState>('IPAMState', POD_IP_POOL_STATE_PREFIX + name, after, { expectedRevision: stateRes?.revision ?? 0 });
      }
      if (waiting.length > 0 && this.views.get(name)?.exhausted?.waiting.join() !== waiting.join()) {
        this.log.error({ pool: name, waiting }, `cannot assign a CIDR of pool "${name}": ${message}`);
      }
      for (const [node, cidrs] of pool.assignments()) {
        const g = grants.get(node) ?? {};
        g[name] = cidrs;
        grants.set(node, g);
      }
      views.set(name, { name, ...spec, ...pool.usage(now), assignments: after.assigned, exhausted: waiting.length > 0 ? { message, waiting } : null, problem: null });
    }
    // A pool deleted while nodes hold chunks of it (kubectl delete: the operator API refuses that, Kubernetes cannot):
    // the chunks stay theirs until handed back, then its allocator state goes.
    for (const [name, stateRes] of states) {
      if (specs.some((r) => r.name === name)) continue;
      const held = await this.keepHeld(name, stateRes, nodes, now, true, grants);
      if (Object.keys(held).length > 0) {
        const problem = `pool "${name}" was deleted while in use: nodes keep the chunks they hold (${Object.entries(held).map(([n, c]) => `${n} ${c.join(',')}`).join('; ')}) until their pods are gone; nothing more is handed out`;
        if (this.views.get(name)?.problem !== problem) this.log.warn({ pool: name, held }, problem);
        views.set(name, { name, cidrs: [], maskSize: 0, total: 0, assigned: 0, releasing: 0, free: 0, assignments: held, exhausted: null, problem });
      }
    }
    this.views = views;
    await this.writeStatus(specs, views);
    return grants;
  }

  /**
   * A pool that cannot be used (deleted, or now invalid): nodes still present keep what they hold of it, a node that
   * hands all of it back (or left) loses it, and nothing new is given. With `dropEmpty`, the allocator state goes once
   * nobody holds any. Adds the kept chunks to `grants`; returns node -> CIDRs kept.
   */
  private async keepHeld(name: string, stateRes: Resource<unknown> | undefined, nodes: ReadonlyMap<string, Resource<unknown>>, now: number, dropEmpty: boolean, grants: Map<string, Record<string, string[]>>): Promise<Record<string, string[]>> {
    if (!stateRes) return {};
    let pool: ClusterPool;
    try {
      pool = ClusterPool.fromState(stateRes.value, `pool "${name}"`);
    } catch {
      return {};
    }
    const before = JSON.stringify(pool.toState());
    for (const [node, cidrs] of pool.assignments()) {
      const ask = nodePoolRequests(nodes.get(node)?.value).get(name);
      if (!nodes.has(node) || (ask && ask.requested === 0 && cidrs.every((c) => ask.release.includes(c)))) pool.release(node, now, 0);
    }
    pool.expire(now);
    const after = pool.toState();
    if (dropEmpty && Object.keys(after.assigned).length === 0) {
      await this.store.delete('IPAMState', stateRes.name, { expectedRevision: stateRes.revision });
      this.log.info({ pool: name }, 'the last chunk of a deleted pool was handed back: its allocator state goes');
      return {};
    }
    if (JSON.stringify(after) !== before) await this.store.put<ClusterPoolState>('IPAMState', stateRes.name, after, { expectedRevision: stateRes.revision });
    for (const [node, cidrs] of Object.entries(after.assigned)) {
      const g = grants.get(node) ?? {};
      g[name] = cidrs;
      grants.set(node, g);
    }
    return after.assigned;
  }

  /** Each pool's status from this pass, written where it changed (a conflict: the next pass writes it). */
  private async writeStatus(specs: ReadonlyArray<Resource<unknown>>, views: ReadonlyMap<string, PoolView>): Promise<void> {
    for (const res of specs) {
      const v = views.get(res.name);
      if (!v) continue;
      const status: PodIPPoolStatus = { chunks: { total: v.total, assigned: v.assigned, free: v.free }, nodes: v.assignments };
      const problem = v.problem ?? v.exhausted?.message;
      if (problem !== undefined) status.problem = problem;
      const cur = res.value as PodIPPoolResource;
      if (JSON.stringify(cur.status ?? null) === JSON.stringify(status)) continue;
      try {
        await this.store.put<PodIPPoolResource>(POD_IP_POOL_KIND, res.name, { ...cur, status }, { expectedRevision: res.revision });
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'TENDRIL_ERR_STORE_CONFLICT') throw err;
      }
    }
  }

  /** The pools as of the last pass. */
  status(): PoolView[] {
    return [...this.views.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  private loadPool(name: string, spec: PodIPPoolSpec, state: unknown): ClusterPool {
    const label = `pool "${name}"`;
    if (state === undefined) return ClusterPool.create(spec, label);
    const p = ClusterPool.fromState(state, label);
    if (p.maskSize === spec.maskSize && p.cidrs.join() === spec.cidrs.join()) return p;
    const moved = p.withConfig(spec);
    if (moved instanceof ClusterPool) return moved;
    throw new OperatorError('TENDRIL_ERR_POOL_MISMATCH', `Cannot use ${label} as now defined (${spec.cidrs.join(', ')} /${spec.maskSize}): ${moved.problem}`);
  }
}

/** The pools stored (valid or not), for the API: name -> spec and revision. */
export async function listPools(store: Store): Promise<Array<{ name: string; spec: unknown; revision: number }>> {
  const { items } = await store.list<unknown>(POD_IP_POOL_KIND);
  return items.map((r) => ({ name: r.name, spec: poolSpecOf(r.value), revision: r.revision }));
}

/**
 * Creates or changes a pool after validation against every other stored pool and the cluster CIDRs. A change may
 * only add CIDRs while nodes hold some (never re-number running pods).
 */
export async function putPool(store: Store, name: string, input: unknown, defaultCidrs: readonly string[]): Promise<PodIPPoolSpec & { name: string; revision: number }> {
  const others: NamedPool[] = [{ name: DEFAULT_POOL_NAME, cidrs: defaultCidrs }];
  for (const p of await listPools(store)) {
    if (p.name === name) continue;
    const raw = p.spec as Partial<PodIPPoolSpec> | null;
    if (Array.isArray(raw?.cidrs)) others.push({ name: p.name, cidrs: raw.cidrs.filter((c): c is string => typeof c === 'string') });
  }
  // The API takes {cidrs, maskSize}, or the pool's spec as stored ({ipv4: {cidrs, maskSize}}).
  const body = isRecord(input) && isRecord(input['ipv4']) ? input['ipv4'] : input;
  const spec = validatePodIPPool(name, body, others);
  const cur = await store.get<PodIPPoolResource>(POD_IP_POOL_KIND, name);
  const state = await store.get<unknown>('IPAMState', POD_IP_POOL_STATE_PREFIX + name);
  if (state) {
    const moved = ClusterPool.fromState(state.value, `pool "${name}"`).withConfig(spec);
    if (!(moved instanceof ClusterPool)) throw new OperatorError('TENDRIL_ERR_POOL_IN_USE', `Cannot change pool "${name}" to ${spec.cidrs.join(', ')} /${spec.maskSize}: ${moved.problem} (CIDRs in use may not go)`);
  }
  const r = await store.put<PodIPPoolResource>(POD_IP_POOL_KIND, name, poolResource(spec, cur?.value.status), { expectedRevision: cur?.revision ?? 0 });
  return { name, ...spec, revision: r.revision };
}

/**
 * Deletes a pool no node uses: refused (TENDRIL_ERR_POOL_IN_USE) while a node holds one of its CIDRs, a departed
 * node's are held for it, or a node asks for it.
 */
export async function deletePool(store: Store, name: string, nodes: ReadonlyArray<Resource<unknown>>): Promise<{ deleted: string }> {
  const cur = await store.get<unknown>(POD_IP_POOL_KIND, name);
  if (!cur) throw new OperatorError('TENDRIL_ERR_POOL_NOT_FOUND', `No pool "${name}"${name === DEFAULT_POOL_NAME ? ' to delete: "default" is the cluster pool (the operator flags)' : ''}`);
  const state = await store.get<unknown>('IPAMState', POD_IP_POOL_STATE_PREFIX + name);
  const users = new Set<string>();
  if (state) {
    const st = ClusterPool.fromState(state.value, `pool "${name}"`).toState();
    for (const [node, cidrs] of Object.entries(st.assigned)) users.add(`${node} (${cidrs.join(', ')})`);
    for (const [cidr, r] of Object.entries(st.releasing)) if (Date.parse(r.until) > Date.now()) users.add(`${r.node} (${cidr}, held until ${r.until})`);
  }
  for (const n of nodes) if ((nodePoolRequests(n.value).get(name)?.requested ?? 0) > 0 && ![...users].some((u) => u.startsWith(`${n.name} `))) users.add(`${n.name} (asking)`);
  if (users.size > 0) {
    throw new OperatorError('TENDRIL_ERR_POOL_IN_USE', `Cannot delete pool "${name}": it is in use by node(s) ${[...users].join(', ')}; delete the pods using it first`);
  }
  await store.delete(POD_IP_POOL_KIND, name, { expectedRevision: cur.revision });
  if (state) await store.delete('IPAMState', POD_IP_POOL_STATE_PREFIX + name, { expectedRevision: state.revision });
  return { deleted: name };
}

/** "10.1.0.0/16" → canonical form, for callers formatting pools. */
export function canonicalCidr(text: string): string {
  return formatCidr(strict(text));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Status codes of the pool errors on the API. */
const HTTP_STATUS: Record<string, number> = {
  TENDRIL_ERR_INVALID_POOL: 400,
  TENDRIL_ERR_POOL_CONFLICT: 409,
  TENDRIL_ERR_POOL_IN_USE: 409,
  TENDRIL_ERR_POOL_MISMATCH: 409,
  TENDRIL_ERR_POOL_NOT_FOUND: 404,
};

/**
 * GET /v1/pools (the pools as of the operator's last pass), PUT /v1/pools/{name} ({"cidrs": [...], "maskSize": N}),
 * DELETE /v1/pools/{name}. Only with --ipam multi-pool.
 */
export function registerPoolRoutes(api: ApiServer, store: Store, o: { mode: () => string; defaultCidrs: () => readonly string[]; status: () => PoolView[]; refresh: () => void }): void {
  const guard = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    if (o.mode() !== 'multi-pool') throw new HttpError(409, `Cannot manage pool "${name}": TendrilPodIPPools need --ipam multi-pool (the operator runs --ipam ${o.mode()})`, 'TENDRIL_ERR_CONFLICT');
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (err instanceof OperatorError && HTTP_STATUS[code] !== undefined) throw new HttpError(HTTP_STATUS[code]!, err.message, code);
      throw err;
    }
  };
  api.route('GET', '/v1/pools', () => o.status());
  api.route('PUT', '/v1/pools/{name}', async (req) => {
    const name = req.params['name']!;
    const r = await guard(name, () => putPool(store, name, req.json(), o.defaultCidrs()));
    o.refresh();
    return r;
  });
  api.route('DELETE', '/v1/pools/{name}', async (req) => {
    const name = req.params['name']!;
    const r = await guard(name, async () => deletePool(store, name, (await store.list<unknown>('Node')).items));
    o.refresh();
    return r;
  });
}
