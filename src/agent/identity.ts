// Security identities: a pod's security labels -> a number that is the same on every node, allocated through the
// cluster store (Identity resources, 256..65535, Cilium's cluster-scoped range); the reserved ones as Cilium's.
import { createHash } from 'node:crypto';
import { KindCache } from '../store/cache.js';
import type { IdentitySpec, Store } from '../store/types.js';
import type { Logger } from '../util/log.js';
import { IDENTITY_MIN_CLUSTER, LABEL_NAMESPACE_LABELS_PREFIX, LABEL_POD_NAMESPACE, reservedIdentities } from '../policy/index.js';
import { AgentError } from './errors.js';
import { readJsonFile, writeJsonFile } from './state-file.js';

export { IDENTITY_HEALTH, IDENTITY_HOST } from '../policy/index.js';

/** Cluster-scoped identities (cluster ID 0). */
export const IDENTITY_MIN = IDENTITY_MIN_CLUSTER;
export const IDENTITY_MAX = 65535;
/** Node-local CIDR identities (Cilium's local scope 0x01 in the top byte): never leave the node. */
export const IDENTITY_LOCAL_MIN = 0x01000001;

/** Labels of the reserved identities, as Cilium names them. */
export const RESERVED_LABELS: Record<number, string[]> = Object.fromEntries(reservedIdentities().map((i) => [i.id, i.labels]));

/**
 * Security labels of a pod, Cilium style and sorted: its labels (`k8s:app=curl`), its namespace
 * (`k8s:io.kubernetes.pod.namespace=default`) and its namespace's labels (`k8s:io.cilium.k8s.namespace.labels.team=a`).
 */
export function securityLabels(namespace: string, labels: Record<string, string>, nsLabels: Record<string, string> = {}, serviceAccount?: string): string[] {
  // A pod cannot speak for its namespace: labels under the keys the cluster sets are dropped (Cilium's
  // SanitizePodLabels), or a pod could give itself another namespace's identity.
  const out = Object.entries(labels)
    .filter(([k]) => !isReservedPodLabel(k))
    .map(([k, v]) => `k8s:${k}=${v}`);
  // Namespace labels as pod labels (Cilium's convention), so a namespaceSelector is a label match.
  for (const [k, v] of Object.entries(nsLabels)) out.push(`k8s:${LABEL_NAMESPACE_LABELS_PREFIX}${k}=${v}`);
  out.push(`k8s:${LABEL_POD_NAMESPACE}=${namespace}`);
  // Cilium's label for the pod's service account, so policies can select peers by it.
  if (serviceAccount !== undefined) out.push(`k8s:${LABEL_SERVICE_ACCOUNT}=${serviceAccount}`);
  return [...new Set(out)].sort();
}

/** The security label key of a pod's service account (Cilium's). */
export const LABEL_SERVICE_ACCOUNT = 'io.cilium.k8s.policy.serviceaccount';
/** What a pod's service account is when the runtime names none (Kubernetes' default). */
export const DEFAULT_SERVICE_ACCOUNT = 'default';

/** Keys the cluster sets on a pod's security labels; a pod's own labels under them are ignored. */
export function isReservedPodLabel(key: string): boolean {
  return key === LABEL_POD_NAMESPACE || key.startsWith(LABEL_NAMESPACE_LABELS_PREFIX) || key.startsWith('io.cilium.k8s.policy.');
}

function labelsKey(labels: readonly string[]): string {
  return [...labels].sort().join(',');
}

/** Where the search for a free number starts: a hash, so that the same labels usually get the same number. */
function firstCandidate(key: string): number {
  const h = createHash('sha256').update(key).digest();
  return IDENTITY_MIN + (h.readUInt32BE(0) % (IDENTITY_MAX - IDENTITY_MIN + 1));
}

function isConflict(err: unknown): boolean {
  return (err as { code?: string }).code === 'TENDRIL_ERR_STORE_CONFLICT';
}

/** How soon a change of the cluster's identities is written to the state file (one write per burst). */
const SAVE_DELAY_MS = 1000;

interface IdentityStateFile {
  identities: Array<{ id: number; labels: string[] }>;
}

export interface IdentityEvents {
  /** An identity appeared, changed or vanished (labels undefined). */
  change(id: number, labels: string[] | undefined): void;
  /** After a (re-)list of the store. */
  resync(): void;
}

/**
 * Allocates identities through the store: the number for a label set is found in the watched cache, or claimed
 * by a create-if-absent write starting at the label set's hash and probing upwards. Two agents racing for the same
 * new label set probe the same sequence, so the loser of the write finds the winner's resource and uses it. Without
 * a store (a single node started with --pod-cidr) numbers are allocated in memory.
 */
export class IdentityAllocator {
  private readonly store: Store | undefined;
  private readonly log: Logger;
  private readonly cache: KindCache<IdentitySpec> | undefined;
  /** Without a store: the node's own table. */
  private readonly local = new Map<number, string[]>();
  private readonly byLabels = new Map<string, number>();
  /** allocate() calls under way, by label set (see allocate()). */
  private readonly inflight = new Map<string, { touch: boolean; done: Promise<number> }>();
  /** The cluster's identities as last seen (@stateFile), answered until the store is listed after a restart. */
  private readonly persisted = new Map<number, string[]>();
  private readonly stateFile: string | undefined;
  private saveTimer: NodeJS.Timeout | undefined;

  constructor(store: Store | undefined, log: Logger, stateFile?: string) {
    this.store = store;
    this.log = log;
    this.stateFile = store ? stateFile : undefined;
    if (store) this.cache = new KindCache<IdentitySpec>(store, 'Identity', log);
    if (!this.stateFile) return;
    try {
      for (const i of readJsonFile<IdentityStateFile>(this.stateFile)?.identities ?? []) this.persisted.set(i.id, i.labels);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, file: this.stateFile }, 'ignoring an unreadable identity state file');
    }
  }

  async start(events: IdentityEvents): Promise<void> {
    if (!this.cache) return;
    await this.cache.start({
      change: (name, v) => {
        const id = Number(name);
        if (v) this.byLabels.set(labelsKey(v.labels), id);
        else this.forget(id);
        this.scheduleSave();
        events.change(id, v?.labels);
      },
      resync: (all) => {
        this.byLabels.clear();
        this.persisted.clear();
        for (const [name, v] of all) this.byLabels.set(labelsKey(v.labels), Number(name));
        this.scheduleSave();
        events.resync();
      },
    });
  }

  stop(): void {
    this.cache?.stop();
    if (this.saveTimer) this.save();
  }

  private scheduleSave(): void {
    if (!this.stateFile || this.saveTimer) return;
    this.saveTimer = setTimeout(() => this.save(), SAVE_DELAY_MS);
    this.saveTimer.unref();
  }

  private save(): void {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    if (!this.stateFile || !this.cache?.ready) return;
    try {
      writeJsonFile(this.stateFile, { identities: this.list() } satisfies IdentityStateFile);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, file: this.stateFile }, 'cannot save the identities known');
    }
  }

  get ready(): boolean {
    return !this.cache || this.cache.ready;
  }

  private forget(id: number): void {
    for (const [k, v] of this.byLabels) if (v === id) this.byLabels.delete(k);
  }

  /** Labels of any identity this node knows: reserved, cluster-wide, or local. */
  labels(id: number): string[] | undefined {
    return RESERVED_LABELS[id] ?? this.cache?.get(String(id))?.labels ?? this.local.get(id) ?? this.persisted.get(id);
  }

  /** Every cluster identity known (reserved ones not included). */
  list(): Array<{ id: number; labels: string[] }> {
    const out = this.cache?.ready
      ? this.cache.entries().map(([name, v]) => ({ id: Number(name), labels: v.labels }))
      : [...(this.cache ? this.persisted : this.local)].map(([id, labels]) => ({ id, labels }));
    return out.sort((a, b) => a.id - b.id);
  }

  /** The identity of a label set, allocating it cluster-wide when it does not exist yet. */
  async allocate(labels: string[], opts: { touch?: boolean } = {}): Promise<number> {
    const sorted = [...labels].sort();
    const key = labelsKey(sorted);
    // Single flight per label set: pods of one Deployment starting at once share one store round trip (and one
    // touch) instead of each creating the same identity and losing the race with a conflict and a re-read.
    const flying = this.inflight.get(key);
    if (flying && (flying.touch || opts.touch !== true)) return flying.done;
    const done = this.allocateNow(key, sorted, opts);
    const entry = { touch: opts.touch === true, done };
    this.inflight.set(key, entry);
    try {
      return await done;
    } finally {
      if (this.inflight.get(key) === entry) this.inflight.delete(key);
    }
  }

  private async allocateNow(key: string, sorted: string[], opts: { touch?: boolean }): Promise<number> {
    const known = this.byLabels.get(key);
    if (!this.store || !this.cache) {
      if (known !== undefined) return known;
      return this.allocateLocal(key, sorted);
    }
    // A number the store says belongs to other labels now, though the watched copy may not know yet.
    let taken: number | undefined;
    if (known !== undefined) {
      const reused = await this.reuse(known, key, sorted, opts.touch === true);
      if (reused === true) return known;
      if (reused === 'taken') taken = known;
    }

    const range = IDENTITY_MAX - IDENTITY_MIN + 1;
    const start = firstCandidate(key);
    for (let i = 0; i < range; i++) {
      const id = IDENTITY_MIN + ((start - IDENTITY_MIN + i) % range);
      if (id === taken) continue;
      const cached = this.cache.get(String(id));
      if (cached) {
        if (labelsKey(cached.labels) === key) return id;
        continue;
      }
      try {
        await this.store.put<IdentitySpec>('Identity', String(id), { labels: sorted }, { expectedRevision: 0 });
        this.byLabels.set(key, id);
        this.log.info({ identity: id, labels: sorted }, 'identity allocated');
        return id;
      } catch (err) {
        if (!isConflict(err)) throw err;
        const cur = await this.store.get<IdentitySpec>('Identity', String(id));
        if (cur && labelsKey(cur.value.labels) === key) {
          this.byLabels.set(key, id);
          return id;
        }
      }
    }
    throw new AgentError('TENDRIL_ERR_STATE', `Cannot allocate an identity for [${sorted.join(' ')}]: all ${range} cluster identities are in use`);
  }

  /**
   * An identity the watched copy has for these labels. With @touch (the label set gets its first endpoint on this
   * node, so the operator may be about to collect it as unused) it is rewritten unchanged, conditionally on the
   * revision seen: that bumps its revision, so a collection decided on the old one fails, and a collection that
   * came first shows up as a conflict and the identity is created again. False when it is gone or not ours.
   */
  private async reuse(id: number, key: string, sorted: string[], touch: boolean): Promise<boolean | 'taken'> {
    const store = this.store!;
    const name = String(id);
    const cached = this.cache!.get(name);
    const rev = this.cache!.revisionOf(name);
    if (!cached || rev === undefined || labelsKey(cached.labels) !== key) return false;
    if (!touch) return true;
    try {
      await store.put<IdentitySpec>('Identity', name, { labels: sorted }, { expectedRevision: rev });
      return true;
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    const cur = await store.get<IdentitySpec>('Identity', name);
    if (cur) return labelsKey(cur.value.labels) === key ? true : 'taken';
    try {
      await store.put<IdentitySpec>('Identity', name, { labels: sorted }, { expectedRevision: 0 });
      return true;
    } catch (err) {
      if (!isConflict(err)) throw err;
      const again = await store.get<IdentitySpec>('Identity', name);
      return again !== undefined && labelsKey(again.value.labels) === key ? true : 'taken';
    }
  }

  /**
   * Makes sure identity @id exists with @labels (an endpoint restored after a restart, or one whose identity the
   * operator collected while it was being used): re-created if absent. False when the number now belongs to other
   * labels (the caller allocates again).
   */
  async ensure(id: number, labels: string[]): Promise<boolean> {
    const sorted = [...labels].sort();
    const key = labelsKey(sorted);
    if (!this.store || !this.cache) {
      const cur = this.local.get(id);
      if (cur && labelsKey(cur) !== key) return false;
      this.local.set(id, sorted);
      this.byLabels.set(key, id);
      return true;
    }
    // The watched copy answers the common case (publishing an endpoint) without a store round trip.
    const cached = this.cache.get(String(id));
    if (cached && labelsKey(cached.labels) === key) return true;
    const cur = await this.store.get<IdentitySpec>('Identity', String(id));
    if (cur) return labelsKey(cur.value.labels) === key;
    try {
      await this.store.put<IdentitySpec>('Identity', String(id), { labels: sorted }, { expectedRevision: 0 });
      this.byLabels.set(key, id);
      return true;
    } catch (err) {
      if (!isConflict(err)) throw err;
      const again = await this.store.get<IdentitySpec>('Identity', String(id));
      return again !== undefined && labelsKey(again.value.labels) === key;
    }
  }

  private allocateLocal(key: string, sorted: string[]): number {
    for (let id = IDENTITY_MIN; id <= IDENTITY_MAX; id++) {
      if (this.local.has(id)) continue;
      this.local.set(id, sorted);
      this.byLabels.set(key, id);
      return id;
    }
    throw new AgentError('TENDRIL_ERR_STATE', `Cannot allocate an identity for [${sorted.join(' ')}]: all identities are in use`);
  }

  /** Without a store, a label set no endpoint uses any more is forgotten (with a store the operator collects it). */
  releaseLocal(inUse: Set<number>): void {
    if (this.cache) return;
    for (const id of [...this.local.keys()]) {
      if (inUse.has(id)) continue;
      const labels = this.local.get(id)!;
      this.local.delete(id);
      this.byLabels.delete(labelsKey(labels));
    }
  }
}
