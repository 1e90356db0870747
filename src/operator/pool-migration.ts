// Migration of the TendrilPodIPPools of earlier versions, kept as IPAMState "pod-ip-pool.<name>" ({cidrs, maskSize}),
// to their own store kind PodIPPool ({spec: {ipv4: {cidrs, maskSize}}}): run by the operator at start. Each pool is
// created in the new kind first and the old object deleted after, so a crash in between leaves both (the next start
// deletes the old one) and never neither. The allocator state (IPAMState "pool.<name>") stays where it is.
import { POD_IP_POOL_KIND, POD_IP_POOL_PREFIX, StoreError, type PodIPPoolResource, type Store } from '../store/index.js';
import type { Logger } from '../util/log.js';

export interface PoolMigration {
  /** Pools created in the new kind. */
  migrated: string[];
  /** Old objects dropped because the new kind already held the pool (a migration interrupted, or a newer write). */
  dropped: string[];
}

const isConflict = (err: unknown): boolean => err instanceof StoreError && err.code === 'TENDRIL_ERR_STORE_CONFLICT';

export async function migrateLegacyPools(store: Store, log: Logger): Promise<PoolMigration> {
  const out: PoolMigration = { migrated: [], dropped: [] };
  const { items } = await store.list<unknown>('IPAMState');
  for (const old of items.filter((r) => r.name.startsWith(POD_IP_POOL_PREFIX))) {
    const name = old.name.slice(POD_IP_POOL_PREFIX.length);
    const v = (typeof old.value === 'object' && old.value !== null ? old.value : {}) as { cidrs?: unknown; maskSize?: unknown };
    // Carried as it was stored (earlier versions validated it on write): the operator's pass judges it as any pool.
    const value = { spec: { ipv4: { cidrs: v.cidrs, maskSize: v.maskSize } } } as unknown as PodIPPoolResource;
    let created = false;
    if (!(await store.get(POD_IP_POOL_KIND, name))) {
      try {
        await store.put(POD_IP_POOL_KIND, name, value, { expectedRevision: 0 });
        created = true;
      } catch (err) {
        // Written meanwhile (another operator's migration, or a user): that one is the pool.
        if (!isConflict(err)) throw err;
      }
    }
    try {
      await store.delete('IPAMState', old.name, { expectedRevision: old.revision });
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    (created ? out.migrated : out.dropped).push(name);
    log.info({ pool: name, from: `IPAMState ${old.name}`, created }, created ? 'migrated a TendrilPodIPPool to its own kind' : 'dropped an old copy of a TendrilPodIPPool already stored as its own kind');
  }
  return out;
}
