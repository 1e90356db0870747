// The Store interface over the apiserver: every kind is a Kubernetes resource (bindings.ts), each read through one
// shared client-node informer (ListWatch: list, watch from the list's resourceVersion, re-list on 410 Gone).
// Revisions are resourceVersions, which the apiserver takes from etcd's global revision, so they order across
// kinds as the Store interface wants. list() answers from the informer's cache; watch() replays what that cache saw
// after the caller's revision and follows it live.
import { makeInformer, type Informer, type KubernetesListObject, type ObjectCache } from '@kubernetes/client-node';
import { StoreError } from '../store/errors.js';
import type { DeleteOptions, Kind, PutOptions, Resource, Store, WatchEvent, WatchHandle, WatchOptions } from '../store/types.js';
import type { Logger } from '../util/log.js';
import { BINDINGS, type Binding, type ObjectRef, type Source } from './bindings.js';
import type { K8sConnection } from './client.js';
import { messageOf, statusOf } from './errors.js';
import { objectPath, Rest, type Obj } from './rest.js';

/** Events each informer keeps for watches that start from an older revision than its cache. */
const HISTORY = 4096;
const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 5000;

interface Watcher {
  kind: Kind;
  from: number;
  opts: WatchOptions;
}

/** One informer: its cache, the revision it is at, and the events it delivered (tagged with that revision). */
class SourceFeed {
  readonly source: Source;
  private readonly informer: Informer<Obj> & ObjectCache<Obj>;
  private readonly log: Logger;
  /** Revision the cache is consistent with. */
  revision = 0;
  /** Set once the first list is in the cache: from then on every event is kept in `history`. */
  private synced = false;
  /** Revision of the newest event dropped from `history` (0: none dropped, so history covers every snapshot). */
  private trimmedAt = 0;
  private readonly history: Array<{ tag: number; obj: Obj; deleted: boolean }> = [];
  private listRevision = 0;
  private listing = false;
  private started: Promise<void> | undefined;
  private stopped = false;
  private backoffMs = BACKOFF_MIN_MS;
  private retry: NodeJS.Timeout | undefined;
  connected = false;
  lastError: string | undefined;
  onChange: (obj: Obj, deleted: boolean, tag: number) => void = () => {};
  onConnection: (up: boolean) => void = () => {};

  constructor(conn: K8sConnection, rest: Rest, source: Source, log: Logger) {
    this.source = source;
    this.log = log;
    const listFn = async () => {
      const list = await rest.request<KubernetesListObject<Obj>>('GET', source.path);
      // Changes the informer reports while it applies this list (a 410 re-list's diff) happened by its revision.
      this.listRevision = Number(list.metadata?.resourceVersion ?? 0);
      this.listing = true;
      return list;
    };
    this.informer = makeInformer<Obj>(conn.kc, source.path, listFn);
    this.informer.on('add', (o) => this.event(o, false));
    this.informer.on('update', (o) => this.event(o, false));
    this.informer.on('delete', (o) => this.event(o, true));
    this.informer.on('connect', () => {
      // Fires before each (re-)list and each watch: the previous list, if any, has been applied.
      this.endListing();
      if (!this.connected) {
        this.connected = true;
        this.onConnection(true);
      }
    });
    this.informer.on('error', (err: unknown) => {
      this.endListing();
      this.lastError = messageOf(err);
      if (this.connected) {
        this.connected = false;
        this.onConnection(false);
      }
      if (this.stopped) return;
      this.log.warn({ kind: source.kind, err: this.lastError, retryMs: this.backoffMs }, 'watch failed; restarting');
      this.retry = setTimeout(() => {
        this.retry = undefined;
        if (!this.stopped) this.informer.start().catch(() => {});
      }, this.backoffMs);
      this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    });
  }

  /** Starts the informer once; resolves when its first list is in the cache. */
  start(): Promise<void> {
    this.started ??= this.informer.start().then(() => {
      this.endListing();
      this.synced = true;
    });
    return this.started.catch((err: unknown) => {
      this.started = undefined;
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot list ${this.source.kind} from the apiserver: ${messageOf(err)}`, { cause: err });
    });
  }

  get ready(): boolean {
    return this.synced;
  }

  list(): readonly Obj[] {
    return this.informer.list();
  }

  /** The cache's copy of one object once the first list is in (a hint for writers: it may be behind the apiserver). */
  cached(name: string, namespace?: string): Obj | undefined {
    return this.synced ? this.informer.get(name, namespace) : undefined;
  }

  /**
   * Events after `from`, or undefined when the history no longer reaches back that far. Every snapshot list() gave
   * is at least this feed's first list, so an untrimmed history covers it (at worst repeating what it already has).
   */
  since(from: number): Array<{ tag: number; obj: Obj; deleted: boolean }> | undefined {
    if (from < this.trimmedAt) return undefined;
    return this.history.filter((h) => h.tag > from);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.informer.stop();
  }

  private endListing(): void {
    if (!this.listing) return;
    this.listing = false;
    this.revision = Math.max(this.revision, this.listRevision);
  }

  private event(obj: Obj, deleted: boolean): void {
    this.backoffMs = BACKOFF_MIN_MS;
    const rv = Number(obj.metadata?.resourceVersion ?? 0);
    const tag = this.listing ? this.listRevision : Math.max(rv, this.revision);
    if (!this.listing) this.revision = tag;
    if (!this.synced) return; // the first list: the cache is the answer, there is nothing to replay
    this.history.push({ tag, obj, deleted });
    if (this.history.length > HISTORY) this.trimmedAt = this.history.shift()!.tag;
    this.onChange(obj, deleted, tag);
  }
}

export interface KubernetesStoreOptions {
  log: Logger;
}

export class KubernetesStore implements Store {
  readonly description: string;
  private readonly conn: K8sConnection;
  private readonly rest: Rest;
  private readonly log: Logger;
  private readonly feeds = new Map<Source, SourceFeed>();
  private readonly watchers = new Set<Watcher>();

  constructor(conn: K8sConnection, opts: KubernetesStoreOptions) {
    this.conn = conn;
    this.description = `kubernetes (${conn.server})`;
    this.rest = new Rest(conn.kc, conn.server);
    this.log = opts.log;
  }

  private binding(kind: Kind): Binding {
    const b = BINDINGS[kind];
    if (!b) throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Store kind ${kind} has no Kubernetes resource in Kubernetes mode`);
    return b;
  }

  private feed(source: Source): SourceFeed {
    let f = this.feeds.get(source);
    if (!f) {
      const feed = new SourceFeed(this.conn, this.rest, source, this.log);
      feed.onChange = (obj, deleted, tag) => this.dispatch(source, obj, deleted, tag);
      feed.onConnection = (up) => {
        for (const w of this.watchers) if (this.binding(w.kind).sources.includes(source)) w.opts.onConnection?.(up);
      };
      this.feeds.set(source, feed);
      f = feed;
    }
    return f;
  }

  private toEvent(kind: Kind, source: Source, obj: Obj, deleted: boolean, tag: number): WatchEvent<unknown> | undefined {
    const r = this.binding(kind).toStore(obj, source);
    if (!r) return undefined;
    if (deleted) return { type: 'delete', kind, name: r.name, revision: tag };
    return { type: 'put', resource: { kind, name: r.name, revision: Number(obj.metadata?.resourceVersion ?? 0), value: r.value } };
  }

  private dispatch(source: Source, obj: Obj, deleted: boolean, tag: number): void {
    for (const w of this.watchers) {
      if (tag <= w.from || !this.binding(w.kind).sources.includes(source)) continue;
      const ev = this.toEvent(w.kind, source, obj, deleted, tag);
      if (ev) w.opts.onEvent(ev);
    }
  }

  async get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined> {
    const b = this.binding(kind);
    const ref = this.ref(b, name);
    try {
      const obj = await this.read(ref);
      const r = b.toStore(obj, ref.source);
      return r ? { kind, name, revision: Number(obj.metadata?.resourceVersion ?? 0), value: r.value as T } : undefined;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw this.fail(err, `get ${kind} ${name}`);
    }
  }

  async list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    const b = this.binding(kind);
    const feeds = b.sources.map((s) => this.feed(s));
    await Promise.all(feeds.map((f) => f.start()));
    const items: Resource<T>[] = [];
    for (const f of feeds) {
      for (const obj of f.list()) {
        const r = b.toStore(obj, f.source);
        if (r) items.push({ kind, name: r.name, revision: Number(obj.metadata?.resourceVersion ?? 0), value: r.value as T });
      }
    }
    // The oldest of the caches: a watch from there may repeat a change one cache already has, never miss one.
    return { items, revision: Math.min(...feeds.map((f) => f.revision)) };
  }

  async put<T>(kind: Kind, name: string, value: T, opts: PutOptions = {}): Promise<Resource<T>> {
    const b = this.binding(kind);
    const ref = this.ref(b, name);
    const body = b.toObject(ref, value);
    const exp = opts.expectedRevision;
    try {
      let out: Obj;
      if (exp === 0) {
        out = await this.create(ref, body);
      } else if (kind === 'Namespace') {
        out = await this.putNamespace(ref, body, exp);
      } else if (exp !== undefined) {
        out = await this.replace(ref, body, String(exp));
      } else {
        out = await this.putUnconditionally(ref, body);
      }
      return { kind, name, revision: Number(out.metadata?.resourceVersion ?? 0), value };
    } catch (err) {
      const code = statusOf(err);
      if (code === 409 || (code === 404 && exp !== undefined)) {
        throw new StoreError('TENDRIL_ERR_STORE_CONFLICT', `${kind} ${name} changed or exists (expected revision ${String(exp)}): ${messageOf(err)}`, { cause: err });
      }
      if (code === 422 || code === 400) throw new StoreError('TENDRIL_ERR_STORE_INVALID', `The apiserver refused ${kind} ${name}: ${messageOf(err)}`, { cause: err });
      throw this.fail(err, `put ${kind} ${name}`);
    }
  }

  /** A Namespace's labels are all the store holds of it: a merge patch sets them, removing the ones gone. */
  private create(ref: ObjectRef, body: Obj): Promise<Obj> {
    return this.rest.request('POST', objectPath(ref.source, '', ref.namespace), body);
  }

  private read(ref: ObjectRef): Promise<Obj> {
    return this.rest.request('GET', objectPath(ref.source, ref.name, ref.namespace));
  }

  private replace(ref: ObjectRef, body: Obj, resourceVersion: string): Promise<Obj> {
    return this.rest.request('PUT', objectPath(ref.source, ref.name, ref.namespace), { ...body, metadata: { ...body.metadata, resourceVersion } });
  }

  /** Custom resources take no update without a resourceVersion: read it, replace, again if someone came between. */
  private async putUnconditionally(ref: ObjectRef, body: Obj): Promise<Obj> {
    // One round trip when the informer is current: a PUT at the cached resourceVersion, or a POST for an object it
    // does not have (an endpoint's first publish). A conflict (the cache behind, the object made or deleted
    // meanwhile) falls back to read + write.
    const feed = this.feeds.get(ref.source);
    if (feed?.ready) {
      const known = feed.cached(ref.name, ref.namespace)?.metadata?.resourceVersion;
      try {
        return known !== undefined ? await this.replace(ref, body, known) : await this.create(ref, body);
      } catch (err) {
        const code = statusOf(err);
        if (code !== 409 && !(known !== undefined && code === 404)) throw err;
      }
    }
    for (let attempt = 0; ; attempt++) {
      const cur = await this.read(ref).catch((err: unknown) => {
        if (statusOf(err) === 404) return undefined;
        throw err;
      });
      try {
        return cur ? await this.replace(ref, body, cur.metadata!.resourceVersion!) : await this.create(ref, body);
      } catch (err) {
        if (statusOf(err) !== 409 || attempt >= 5) throw err;
      }
    }
  }

  /** A Namespace's labels are all the store holds of it: a merge patch sets them, removing the ones gone. */
  private async putNamespace(ref: ObjectRef, body: Obj, expected: number | undefined): Promise<Obj> {
    const cur = await this.read(ref).catch((err: unknown) => {
      if (statusOf(err) === 404) return undefined;
      throw err;
    });
    if (!cur) return this.create(ref, body);
    const labels: Record<string, string | null> = { ...(body.metadata?.labels ?? {}) };
    for (const k of Object.keys(cur.metadata?.labels ?? {})) if (!(k in labels)) labels[k] = null;
    const resourceVersion = expected !== undefined ? String(expected) : cur.metadata!.resourceVersion!;
    return this.rest.request('PATCH', objectPath(ref.source, ref.name), { metadata: { resourceVersion, labels } }, 'application/merge-patch+json');
  }

  async delete(kind: Kind, name: string, opts: DeleteOptions = {}): Promise<boolean> {
    const b = this.binding(kind);
    const ref = this.ref(b, name);
    const body = opts.expectedRevision !== undefined ? { preconditions: { resourceVersion: String(opts.expectedRevision) } } : undefined;
    try {
      await this.rest.request('DELETE', objectPath(ref.source, ref.name, ref.namespace), body);
      return true;
    } catch (err) {
      const code = statusOf(err);
      if (code === 404) {
        if (opts.expectedRevision !== undefined && opts.expectedRevision !== 0) throw new StoreError('TENDRIL_ERR_STORE_CONFLICT', `${kind} ${name} is gone (expected revision ${opts.expectedRevision})`);
        return false;
      }
      if (code === 409) throw new StoreError('TENDRIL_ERR_STORE_CONFLICT', `${kind} ${name} changed (expected revision ${String(opts.expectedRevision)}): ${messageOf(err)}`, { cause: err });
      throw this.fail(err, `delete ${kind} ${name}`);
    }
  }

  watch(kind: Kind, opts: WatchOptions): WatchHandle {
    const b = this.binding(kind);
    const w: Watcher = { kind, from: opts.fromRevision, opts };
    let closed = false;
    const feeds = b.sources.map((s) => this.feed(s));
    const begin = async (): Promise<void> => {
      await Promise.all(feeds.map((f) => f.start()));
      if (closed) return;
      const replay: Array<{ tag: number; source: Source; obj: Obj; deleted: boolean }> = [];
      for (const f of feeds) {
        const since = f.since(opts.fromRevision);
        if (!since) {
          closed = true;
          opts.onResync?.(`revision ${opts.fromRevision} is older than the history kept of ${f.source.kind}`);
          return;
        }
        for (const h of since) replay.push({ ...h, source: f.source });
      }
      this.watchers.add(w);
      for (const h of replay.sort((x, y) => x.tag - y.tag)) {
        const ev = this.toEvent(kind, h.source, h.obj, h.deleted, h.tag);
        if (ev) opts.onEvent(ev);
      }
    };
    begin().catch((err: unknown) => {
      if (closed) return;
      closed = true;
      opts.onResync?.(`cannot start watching ${kind}: ${(err as Error).message}`);
    });
    return {
      close: () => {
        closed = true;
        this.watchers.delete(w);
      },
    };
  }

  async ping(): Promise<{ ok: boolean; revision?: number; error?: string }> {
    try {
      // A list of one namespace: cheap, and its resourceVersion is the current revision.
      const l = await this.rest.request<KubernetesListObject<Obj>>('GET', '/api/v1/namespaces?limit=1');
      return { ok: true, revision: Number(l.metadata?.resourceVersion ?? 0) };
    } catch (err) {
      return { ok: false, error: messageOf(err) };
    }
  }

  /** Whether every informer started so far is connected (for status). */
  health(): { connected: boolean; error?: string } {
    const down = [...this.feeds.values()].find((f) => f.ready && !f.connected);
    return down ? { connected: false, ...(down.lastError !== undefined ? { error: down.lastError } : {}) } : { connected: true };
  }

  async close(): Promise<void> {
    this.watchers.clear();
    await Promise.all([...this.feeds.values()].map((f) => f.stop()));
    this.feeds.clear();
  }

  private ref(b: Binding, name: string): ObjectRef {
    try {
      return b.ref(name);
    } catch (err) {
      throw new StoreError('TENDRIL_ERR_STORE_INVALID', (err as Error).message);
    }
  }

  private fail(err: unknown, what: string): StoreError {
    if (err instanceof StoreError) return err;
    const code = statusOf(err);
    return new StoreError(code === undefined || code >= 500 ? 'TENDRIL_ERR_STORE_UNAVAILABLE' : 'TENDRIL_ERR_STORE_INTERNAL', `Kubernetes ${what} failed: ${messageOf(err)}`, { cause: err });
  }
}

