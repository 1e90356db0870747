// The local (embedded) store: a server hosted by the operator, persisted in a data dir and served as HTTP/1.1 JSON
// on a unix socket or TCP port, and the client agents use to reach it.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { StoreError, describeCause, isStoreErrorCode } from './errors.js';
import { SocketClaimError, claimSocketPath } from '../util/socket.js';
import { HttpJsonClient, openNdjsonStream, resolveRetry, describeTarget, type HttpTarget, type RetryOptions, type ResolvedRetry } from './http.js';
import { LocalState, parseEvent, parseResource } from './local-state.js';
import { checkKind, checkName, checkRevision, encodeValue } from './validate.js';
import { ResumableWatch, type StreamSink } from './watch.js';
import type { DeleteOptions, Kind, PutOptions, Resource, Store, WatchEvent, WatchHandle, WatchOptions } from './types.js';

export type ListenAddress = { socket: string } | { host: string; port: number };

export interface LocalStoreServerOptions {
  dataDir: string;
  /** Events kept for watches that resume from an older revision. Default 10000. */
  historyLimit?: number;
  /** WAL records between snapshots. Default 10000. */
  snapshotEvery?: number;
  /** Period of the keepalive line on watch streams; clients reconnect after 3 silent periods. Default 5000 ms. */
  keepaliveMs?: number;
}

/**
 * Largest request body (a resource value plus envelope): etcd's default request limit, so that what the local
 * store takes the etcd backend takes too. Bigger is a coded 413 (TENDRIL_ERR_STORE_TOO_LARGE).
 */
const MAX_BODY = 1536 * 1024;
/** A watcher this far behind is cut off; it reconnects and resumes from its last revision. */
const MAX_WATCH_BACKLOG = 16 * 1024 * 1024;

interface Watcher {
  kind: Kind;
  res: http.ServerResponse;
  unsubscribe: () => void;
}

export class LocalStoreServer {
  private readonly state: LocalState;
  private readonly keepaliveMs: number;
  private server: http.Server | undefined;
  private readonly watchers = new Set<Watcher>();
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private address: ListenAddress | undefined;

  constructor(opts: LocalStoreServerOptions) {
    const stateOpts: ConstructorParameters<typeof LocalState>[0] = { dataDir: opts.dataDir };
    if (opts.historyLimit !== undefined) stateOpts.historyLimit = opts.historyLimit;
    if (opts.snapshotEvery !== undefined) stateOpts.snapshotEvery = opts.snapshotEvery;
    this.state = new LocalState(stateOpts);
    this.keepaliveMs = opts.keepaliveMs ?? 5000;
    if (!Number.isSafeInteger(this.keepaliveMs) || this.keepaliveMs < 10) {
      throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Invalid keepaliveMs ${this.keepaliveMs}: expected an integer >= 10`);
    }
  }

  /** Current store revision (0 before listen()). */
  get revision(): number {
    return this.state.revision;
  }

  /** The URL clients pass to openStore(), with the real port when listening on port 0. */
  get url(): string {
    const a = this.address;
    if (!a) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', 'Local store server is not listening');
    return 'socket' in a ? `local+unix://${a.socket}` : `local://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  }

  /** Opens the data dir (lock, snapshot, WAL) and starts serving. */
  async listen(addr: ListenAddress): Promise<void> {
    if (this.server) throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Local store server is already listening on ${this.url}`);
    this.state.open();
    const server = http.createServer((req, res) => this.handle(req, res));
    server.keepAliveTimeout = 30_000;
    try {
      if ('socket' in addr) await claimSocketPath(addr.socket);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        if ('socket' in addr) server.listen(addr.socket, resolve);
        else server.listen(addr.port, addr.host, resolve);
      });
      if ('socket' in addr) {
        // Cluster state is for the node's own daemons: root-only, as the agent API socket.
        fs.chmodSync(addr.socket, 0o600);
        this.address = { socket: addr.socket };
      } else {
        const bound = server.address() as net.AddressInfo;
        this.address = { host: addr.host, port: bound.port };
      }
    } catch (err) {
      server.close();
      this.state.close();
      if (err instanceof StoreError) throw err;
      if (err instanceof SocketClaimError) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', err.message, { cause: err });
      const where = 'socket' in addr ? `"${addr.socket}"` : `${addr.host}:${addr.port}`;
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot listen on ${where}: ${describeCause(err)}`, { cause: err });
    }
    this.server = server;
    this.keepaliveTimer = setInterval(() => this.keepalive(), this.keepaliveMs);
    this.keepaliveTimer.unref();
  }

  /** Stops serving, ends every watch stream (clients reconnect elsewhere or later) and closes the data dir. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    for (const w of this.watchers) {
      w.unsubscribe();
      w.res.destroy();
    }
    this.watchers.clear();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    if (this.address && 'socket' in this.address) fs.rmSync(this.address.socket, { force: true });
    this.address = undefined;
    this.state.close();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.route(req, res).catch((err: unknown) => {
      const e = err instanceof StoreError ? err : new StoreError('TENDRIL_ERR_STORE_INTERNAL', describeCause(err), { cause: err });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body: { error: { code: string; message: string; currentRevision?: number } } = { error: { code: e.code, message: e.message } };
      if (e.currentRevision !== undefined) body.error.currentRevision = e.currentRevision;
      sendJson(res, e.httpStatus, body);
    });
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://store');
    const parts = url.pathname.split('/').filter((p) => p.length > 0).map(decodeURIComponent);
    const method = req.method ?? 'GET';
    if (parts[0] !== 'v1') throw notFound(method, url.pathname);
    const [, what, kindText, name, extra] = parts;
    if (what === 'ping' && parts.length === 2 && method === 'GET') {
      sendJson(res, 200, { ok: true, revision: this.state.revision, storeId: this.state.storeId });
      return;
    }
    if (what === 'watch' && kindText !== undefined && name === undefined && method === 'GET') {
      const from = Number(url.searchParams.get('fromRevision') ?? 'NaN');
      this.watch(checkKind(kindText), checkRevision('fromRevision', from), res);
      return;
    }
    if (what !== 'resources' || kindText === undefined || extra !== undefined) throw notFound(method, url.pathname);
    const kind = checkKind(kindText);
    if (name === undefined) {
      if (method !== 'GET') throw notFound(method, url.pathname);
      sendJson(res, 200, this.state.list(kind));
      return;
    }
    checkName(kind, name);
    switch (method) {
      case 'GET': {
        const r = this.state.get(kind, name);
        if (!r) throw new StoreError('TENDRIL_ERR_STORE_NOT_FOUND', `${kind} "${name}" not found`);
        sendJson(res, 200, r);
        return;
      }
      case 'PUT': {
        const body = await readJson(req, res);
        if (typeof body !== 'object' || body === null || !('value' in body)) {
          throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Cannot put ${kind} "${name}": body must be {"value": ..., "expectedRevision"?: n}`);
        }
        const exp = (body as { expectedRevision?: unknown }).expectedRevision;
        const expected = exp === undefined ? undefined : checkRevision('expectedRevision', exp);
        sendJson(res, 200, this.state.put(kind, name, (body as { value: unknown }).value, expected));
        return;
      }
      case 'DELETE': {
        const q = url.searchParams.get('expectedRevision');
        const expected = q === null ? undefined : checkRevision('expectedRevision', Number(q));
        sendJson(res, 200, this.state.delete(kind, name, expected));
        return;
      }
      default:
        throw notFound(method, url.pathname);
    }
  }

  private watch(kind: Kind, fromRevision: number, res: http.ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    // History read and subscription happen in the same tick, so no write can fall between them.
    const past = this.state.eventsSince(kind, fromRevision);
    if ('resync' in past) {
      res.end(line({ type: 'resync', reason: past.resync }));
      return;
    }
    res.write(line({ type: 'hello', storeId: this.state.storeId, revision: this.state.revision, keepaliveMs: this.keepaliveMs }));
    for (const ev of past.events) res.write(line({ type: 'event', event: ev }));
    const w: Watcher = {
      kind,
      res,
      unsubscribe: this.state.subscribe((ev) => {
        if ((ev.type === 'put' ? ev.resource.kind : ev.kind) !== kind) return;
        this.send(w, { type: 'event', event: ev });
      }),
    };
    this.watchers.add(w);
    res.on('close', () => {
      w.unsubscribe();
      this.watchers.delete(w);
    });
  }

  private send(w: Watcher, msg: unknown): void {
    if (w.res.writableLength > MAX_WATCH_BACKLOG) {
      w.res.destroy();
      return;
    }
    w.res.write(line(msg));
  }

  private keepalive(): void {
    const msg = { type: 'keepalive', revision: this.state.revision };
    for (const w of this.watchers) this.send(w, msg);
  }
}

function line(v: unknown): string {
  return JSON.stringify(v) + '\n';
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function notFound(method: string, p: string): StoreError {
  return new StoreError('TENDRIL_ERR_STORE_NOT_FOUND', `No store API route ${method} ${p}`);
}

function tooLarge(size: string): StoreError {
  return new StoreError('TENDRIL_ERR_STORE_TOO_LARGE', `Request body of ${size} bytes exceeds the store's limit of ${MAX_BODY} bytes`);
}

function readJson(req: http.IncomingMessage, res: http.ServerResponse): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > MAX_BODY) {
    // Drained, not read: the client still gets the coded answer; the connection closes after it.
    res.setHeader('connection', 'close');
    req.resume();
    return Promise.reject(tooLarge(String(declared)));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      if (tooBig) return;
      size += c.length;
      if (size > MAX_BODY) {
        // Keep draining (not destroying) so the client still reads the coded error instead of a reset.
        tooBig = true;
        chunks.length = 0;
        res.setHeader('connection', 'close');
        reject(tooLarge(`more than ${MAX_BODY}`));
      } else chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (tooBig) return;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(new StoreError('TENDRIL_ERR_STORE_INVALID', `Request body is not JSON: ${describeCause(err)}`, { cause: err }));
      }
    });
  });
}

export type LocalStoreClientOptions = RetryOptions;

/** Store client of a LocalStoreServer. Operations retry while the server restarts; watches resume by themselves. */
export class LocalStoreClient implements Store {
  readonly description: string;
  private readonly target: HttpTarget;
  private readonly retry: ResolvedRetry;
  private readonly http: HttpJsonClient;
  private readonly watches = new Set<ResumableWatch>();
  private closed = false;

  constructor(addr: ListenAddress, opts: LocalStoreClientOptions = {}) {
    this.target = 'socket' in addr ? { socketPath: addr.socket } : { host: addr.host, port: addr.port };
    this.retry = resolveRetry(opts);
    this.http = new HttpJsonClient(this.target, this.retry, 'local store');
    this.description = `local (${describeTarget(this.target)})`;
  }

  async get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined> {
    checkName(checkKind(kind), name);
    const res = await this.call('GET', resourcePath(kind, name));
    if (res.status === 404 && errorCode(res.body) === 'TENDRIL_ERR_STORE_NOT_FOUND') return undefined;
    return parseResource(this.ok(res, `get ${kind} "${name}"`)) as Resource<T>;
  }

  async list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    checkKind(kind);
    const body = this.ok(await this.call('GET', `/v1/resources/${kind}`), `list ${kind}`);
    const { items, revision } = body as { items?: unknown; revision?: unknown };
    if (!Array.isArray(items) || typeof revision !== 'number') throw malformed(`list ${kind}`);
    return { items: items.map((i) => parseResource(i) as Resource<T>), revision };
  }

  async put<T>(kind: Kind, name: string, value: T, opts: PutOptions = {}): Promise<Resource<T>> {
    checkName(checkKind(kind), name);
    const body: { value: unknown; expectedRevision?: number } = { value: JSON.parse(encodeValue(kind, name, value)) };
    if (opts.expectedRevision !== undefined) body.expectedRevision = checkRevision('expectedRevision', opts.expectedRevision);
    return parseResource(this.ok(await this.call('PUT', resourcePath(kind, name), body), `put ${kind} "${name}"`)) as Resource<T>;
  }

  async delete(kind: Kind, name: string, opts: DeleteOptions = {}): Promise<boolean> {
    checkName(checkKind(kind), name);
    let p = resourcePath(kind, name);
    if (opts.expectedRevision !== undefined) p += `?expectedRevision=${checkRevision('expectedRevision', opts.expectedRevision)}`;
    const body = this.ok(await this.call('DELETE', p), `delete ${kind} "${name}"`);
    const deleted = (body as { deleted?: unknown }).deleted;
    if (typeof deleted !== 'boolean') throw malformed(`delete ${kind} "${name}"`);
    return deleted;
  }

  watch(kind: Kind, opts: WatchOptions): WatchHandle {
    checkKind(kind);
    checkRevision('fromRevision', opts.fromRevision);
    if (this.closed) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot watch ${kind}: store client is closed`);
    let storeId: string | undefined;
    const open = (from: number, sink: StreamSink): (() => void) =>
      openNdjsonStream(this.target, 'GET', `/v1/watch/${kind}?fromRevision=${from}`, undefined, {
        onResponse: (status) => {
          if (status !== 200) sink.closed(new Error(`watch answered HTTP ${status}`));
        },
        onLine: (msg) => {
          const m = msg as { type?: unknown; storeId?: unknown; revision?: unknown; keepaliveMs?: unknown; event?: unknown; reason?: unknown };
          switch (m.type) {
            case 'hello':
              // A server with another identity (data dir lost or replaced) has different history under the same numbers.
              if (typeof m.storeId === 'string' && storeId !== undefined && m.storeId !== storeId) {
                sink.resync(`store was replaced (id ${storeId} is now ${m.storeId})`);
                return;
              }
              if (typeof m.storeId === 'string') storeId = m.storeId;
              sink.opened(typeof m.keepaliveMs === 'number' ? { idleTimeoutMs: 3 * m.keepaliveMs } : {});
              return;
            case 'event': {
              let ev: WatchEvent<unknown>;
              try {
                ev = parseEvent(m.event);
              } catch (err) {
                sink.closed(err);
                return;
              }
              sink.event(ev);
              return;
            }
            case 'keepalive':
              if (typeof m.revision === 'number') sink.progress(m.revision);
              return;
            case 'resync':
              sink.resync(typeof m.reason === 'string' ? m.reason : 'server asked for a resync');
              return;
            default:
              return;
          }
        },
        onEnd: (err) => sink.closed(err),
      });
    const w = new ResumableWatch(opts, open, this.retry.maxBackoffMs, this.retry.requestTimeoutMs, (x) => this.watches.delete(x));
    this.watches.add(w);
    return w;
  }

  async ping(): Promise<{ ok: boolean; revision?: number; error?: string }> {
    try {
      const body = this.ok(await this.http.request('GET', '/v1/ping'), 'ping');
      const revision = (body as { revision?: unknown }).revision;
      return typeof revision === 'number' ? { ok: true, revision } : { ok: true };
    } catch (err) {
      return { ok: false, error: describeCause(err) };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.http.close();
  }

  private call(method: string, p: string, body?: unknown): ReturnType<HttpJsonClient['request']> {
    if (this.closed) return Promise.reject(new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot ${method} ${p}: store client is closed`));
    return this.http.request(method, p, body);
  }

  /** The body of a 200 answer; otherwise the server's coded error, rebuilt on this side. */
  private ok(res: { status: number; body: unknown }, what: string): unknown {
    if (res.status === 200) return res.body;
    const e = (res.body as { error?: { code?: unknown; message?: unknown; currentRevision?: unknown } } | undefined)?.error;
    if (e && isStoreErrorCode(e.code) && typeof e.message === 'string') {
      const opts: { currentRevision?: number } = {};
      if (typeof e.currentRevision === 'number') opts.currentRevision = e.currentRevision;
      throw new StoreError(e.code, e.message, opts);
    }
    throw new StoreError('TENDRIL_ERR_STORE_INTERNAL', `Cannot ${what}: store answered HTTP ${res.status}`);
  }
}

function resourcePath(kind: Kind, name: string): string {
  return `/v1/resources/${kind}/${encodeURIComponent(name)}`;
}

function errorCode(body: unknown): unknown {
  return (body as { error?: { code?: unknown } } | undefined)?.error?.code;
}

function malformed(what: string): StoreError {
  return new StoreError('TENDRIL_ERR_STORE_INTERNAL', `Cannot ${what}: malformed answer from the store`);
}
