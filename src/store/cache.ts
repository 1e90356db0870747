// A watched, in-memory copy of one resource kind: list, then watch from the listing's revision, re-list when the
// watch loses its place. Callers get per-resource changes and a full resync after every (re-)list.
import type { Kind, Resource, Store, WatchEvent, WatchHandle } from './types.js';
import type { Logger } from '../util/log.js';

export interface KindCacheEvents<T> {
  /** A resource appeared or changed (value), or was deleted (undefined). */
  change(name: string, value: T | undefined): void;
  /** After a (re-)list: the complete set; anything the caller knew that is not in it is gone. */
  resync?(all: Map<string, T>): void;
  /** The watch lost or regained the store (it reconnects by itself and resumes). */
  connection?(up: boolean): void;
}

/** Pause before a failed re-list is tried again. */
const RELIST_RETRY_MS = 500;

export class KindCache<T> {
  private readonly store: Store;
  private readonly kind: Kind;
  private readonly log: Logger;
  private readonly items = new Map<string, Resource<T>>();
  private watch: WatchHandle | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private events: KindCacheEvents<T> | undefined;
  private stopped = false;
  private synced = false;

  constructor(store: Store, kind: Kind, log: Logger) {
    this.store = store;
    this.kind = kind;
    this.log = log;
  }

  /** Lists and starts watching; rejects when the store cannot be listed (the caller retries). */
  async start(events: KindCacheEvents<T>): Promise<void> {
    this.events = events;
    await this.relist();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.watch?.close();
    this.watch = undefined;
  }

  /** Whether a listing has been loaded. */
  get ready(): boolean {
    return this.synced;
  }

  get(name: string): T | undefined {
    return this.items.get(name)?.value;
  }

  revisionOf(name: string): number | undefined {
    return this.items.get(name)?.revision;
  }

  values(): T[] {
    return [...this.items.values()].map((r) => r.value);
  }

  entries(): Array<[string, T]> {
    return [...this.items].map(([k, r]) => [k, r.value]);
  }

  private async relist(): Promise<void> {
    this.watch?.close();
    const { items, revision } = await this.store.list<T>(this.kind);
    this.items.clear();
    for (const r of items) this.items.set(r.name, r);
    this.synced = true;
    this.events?.resync?.(new Map(items.map((r) => [r.name, r.value])));
    if (this.stopped) return;
    this.watch = this.store.watch(this.kind, {
      fromRevision: revision,
      onEvent: (ev) => this.onEvent(ev as WatchEvent<T>),
      onResync: (reason) => {
        this.log.warn({ kind: this.kind, reason }, 'watch lost its place; re-listing');
        this.retryRelist();
      },
      onConnection: (up) => this.events?.connection?.(up),
    });
  }

  private retryRelist(): void {
    if (this.stopped) return;
    this.relist().catch((err: unknown) => {
      if (this.stopped) return;
      this.log.warn({ kind: this.kind, err: (err as Error).message }, 're-list failed; retrying');
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.retryRelist();
      }, RELIST_RETRY_MS);
    });
  }

  private onEvent(ev: WatchEvent<T>): void {
    if (ev.type === 'put') {
      const r = ev.resource;
      const old = this.items.get(r.name);
      if (old && old.revision >= r.revision) return;
      this.items.set(r.name, r);
      if (old && JSON.stringify(old.value) === JSON.stringify(r.value)) return;
      this.events?.change(r.name, r.value);
    } else {
      if (!this.items.delete(ev.name)) return;
      this.events?.change(ev.name, undefined);
    }
  }
}

/** What startInOrder() needs of a cache (any KindCache<T>). */
export interface StartableCache {
  readonly ready: boolean;
  start(events: { change(): void; resync(): void }): Promise<void>;
}

export interface StartInOrderOptions {
  /** Every change and resync of any of the caches (a consumer schedules one pass over all of them). */
  events: { change(): void; resync(): void };
  /** Pause before a failed attempt is made again. */
  retryMs: number;
  /** Once all caches are listed. */
  ready(): void;
  /** After each failed attempt (the store away): log it, keep it for status. */
  failed(err: Error): void;
}

/**
 * Starts caches one after the other (the order a consumer's first pass needs: e.g. identities before the endpoints
 * that refer to them), retrying while the store cannot list them; a retry resumes at the first cache not listed yet.
 * stop() cancels a pending retry (the caches themselves are the caller's to stop).
 */
export function startInOrder(caches: readonly StartableCache[], o: StartInOrderOptions): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const attempt = async (): Promise<void> => {
    timer = undefined;
    try {
      for (const c of caches) {
        if (stopped) return;
        if (!c.ready) await c.start(o.events);
      }
      if (!stopped) o.ready();
    } catch (err) {
      if (stopped) return;
      o.failed(err as Error);
      timer = setTimeout(() => void attempt(), o.retryMs);
    }
  };
  void attempt();
  return {
    stop(): void {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
