// Identity garbage collection (the operator's, as Cilium's): an Identity no Endpoint has used for a grace period is
// deleted; so are Endpoint records of nodes that left the cluster (their agent is gone and cannot remove them).
import { KindCache } from '../store/cache.js';
import type { EndpointSpec, IdentitySpec, Store } from '../store/types.js';
import type { Logger } from '../util/log.js';

export const DEFAULT_IDENTITY_GC_INTERVAL_MS = 10_000;
export const DEFAULT_IDENTITY_GC_GRACE_MS = 60_000;

export interface IdentityGcOptions {
  store: Store;
  log: Logger;
  /** How often a pass runs. */
  intervalMs?: number;
  /** How long an identity stays unused before it is deleted (an agent may be about to publish its endpoint). */
  graceMs?: number;
}

export interface IdentityGcStatus {
  intervalMs: number;
  graceMs: number;
  identities: number;
  /** Identities unused now, with the time they were first seen unused. */
  unused: Record<string, string>;
  deleted: number;
  endpointsDeleted: number;
  lastPass: string | null;
  lastError: string | null;
}

export class IdentityGc {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly graceMs: number;
  private readonly identities: KindCache<IdentitySpec>;
  private readonly endpoints: KindCache<EndpointSpec>;
  private readonly nodes: KindCache<unknown>;
  /** Identity name -> ms when it was first seen unused. */
  private readonly unusedSince = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private deleted = 0;
  private endpointsDeleted = 0;
  private lastPass: string | null = null;
  private lastError: string | null = null;

  constructor(opts: IdentityGcOptions) {
    this.store = opts.store;
    this.log = opts.log;
    this.intervalMs = opts.intervalMs ?? DEFAULT_IDENTITY_GC_INTERVAL_MS;
    this.graceMs = opts.graceMs ?? DEFAULT_IDENTITY_GC_GRACE_MS;
    this.identities = new KindCache<IdentitySpec>(opts.store, 'Identity', opts.log);
    this.endpoints = new KindCache<EndpointSpec>(opts.store, 'Endpoint', opts.log);
    this.nodes = new KindCache<unknown>(opts.store, 'Node', opts.log);
  }

  async start(): Promise<void> {
    const nothing = { change: () => {} };
    await Promise.all([this.identities.start(nothing), this.endpoints.start(nothing), this.nodes.start(nothing)]);
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.identities.stop();
    this.endpoints.stop();
    this.nodes.stop();
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass(Date.now()).finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.intervalMs);
  }

  /** One collection pass at time @now (exposed for tests). */
  async pass(now: number): Promise<void> {
    try {
      // Endpoints of nodes that are gone: nobody else will remove them.
      if (this.nodes.ready) {
        for (const [name, ep] of this.endpoints.entries()) {
          if (this.nodes.get(ep.node) !== undefined) continue;
          await this.deleteIfUnchanged('Endpoint', name, this.endpoints.revisionOf(name));
          this.endpointsDeleted++;
          this.log.info({ endpoint: name, node: ep.node }, 'deleted the endpoint of a node that left');
        }
      }
      const used = new Set(this.endpoints.values().map((e) => String(e.identity)));
      for (const name of [...this.unusedSince.keys()]) if (used.has(name) || this.identities.get(name) === undefined) this.unusedSince.delete(name);
      // Listed again from the store right before deleting: the watched copy may not have the endpoint an agent
      // published a moment ago for an identity it just reused.
      let fresh: Set<string> | undefined;
      for (const [name] of this.identities.entries()) {
        if (used.has(name)) continue;
        const since = this.unusedSince.get(name);
        if (since === undefined) {
          this.unusedSince.set(name, now);
          continue;
        }
        if (now - since < this.graceMs) continue;
        fresh ??= new Set((await this.store.list<EndpointSpec>('Endpoint')).items.map((r) => String(r.value.identity)));
        if (fresh.has(name)) {
          this.unusedSince.delete(name);
          continue;
        }
        // Conditional on the revision we judged: an identity re-created meanwhile is not ours to delete.
        if (await this.deleteIfUnchanged('Identity', name, this.identities.revisionOf(name))) {
          this.deleted++;
          this.log.info({ identity: Number(name), labels: this.identities.get(name)?.labels }, 'identity unused for the grace period; deleted');
        }
        this.unusedSince.delete(name);
      }
      this.lastPass = new Date(now).toISOString();
      this.lastError = null;
    } catch (err) {
      this.lastError = (err as Error).message;
      this.log.warn({ err: this.lastError }, 'identity garbage collection pass failed; next pass retries');
    }
  }

  private async deleteIfUnchanged(kind: 'Identity' | 'Endpoint', name: string, revision: number | undefined): Promise<boolean> {
    try {
      return await this.store.delete(kind, name, revision !== undefined ? { expectedRevision: revision } : {});
    } catch (err) {
      if ((err as { code?: string }).code === 'TENDRIL_ERR_STORE_CONFLICT') return false;
      throw err;
    }
  }

  status(): IdentityGcStatus {
    const unused: Record<string, string> = {};
    for (const [k, v] of this.unusedSince) unused[k] = new Date(v).toISOString();
    return {
      intervalMs: this.intervalMs,
      graceMs: this.graceMs,
      identities: this.identities.values().length,
      unused,
      deleted: this.deleted,
      endpointsDeleted: this.endpointsDeleted,
      lastPass: this.lastPass,
      lastError: this.lastError,
    };
  }
}
