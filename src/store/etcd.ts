// The etcd backend, spoken through etcd's v3 JSON gateway (plain HTTP/1.1, no gRPC stack): keys
// /tendril/<Kind>/<name>, JSON values, revision = mod_revision, conditional writes as Txn on mod/create revision.
import { StoreError, describeCause } from './errors.js';
import { HttpJsonClient, Members, OutcomeUnknownError, openNdjsonStream, resolveRetry, describeTarget, type JsonResponse, type RequestPolicy, type RetryOptions, type ResolvedRetry } from './http.js';
import { logger } from '../util/log.js';
import { conflictError } from './local-state.js';
import { checkKind, checkName, checkRevision, encodeValue } from './validate.js';
import { ResumableWatch, type StreamSink } from './watch.js';
import type { DeleteOptions, Kind, PutOptions, Resource, Store, WatchEvent, WatchHandle, WatchOptions } from './types.js';

export interface EtcdStoreOptions extends RetryOptions {
  /** Key prefix; several clusters may share one etcd under different prefixes. Default "/tendril/". */
  prefix?: string;
  /** A watch quiet this long checks that etcd still answers, and reconnects if not. Default 15000 ms. */
  livenessMs?: number;
}

/** etcd's mvccpb.KeyValue as the gateway renders it (int64 as strings, bytes as base64, zero fields omitted). */
interface GwKeyValue {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
}
interface GwHeader {
  cluster_id?: string;
  revision?: string;
  raft_term?: string;
}
interface GwRange {
  header?: GwHeader;
  kvs?: GwKeyValue[];
}
interface GwTxn {
  header?: GwHeader;
  succeeded?: boolean;
  responses?: { response_range?: GwRange; response_delete_range?: { deleted?: string } }[];
}
interface GwWatchResult {
  header?: GwHeader;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: { type?: 'PUT' | 'DELETE'; kv?: GwKeyValue }[];
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

/** etcd range end that covers every key starting with `prefix` (prefix with its last byte + 1). */
function prefixEnd(prefix: string): string {
  const buf = Buffer.from(prefix, 'utf8');
  for (let i = buf.length - 1; i >= 0; i--) {
    const byte = buf[i] ?? 0;
    if (byte < 0xff) {
      const end = Buffer.from(buf.subarray(0, i + 1));
      end[i] = byte + 1;
      return end.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

function num(s: string | undefined): number {
  const n = s === undefined ? 0 : Number(s);
  if (!Number.isSafeInteger(n)) throw new StoreError('TENDRIL_ERR_STORE_INTERNAL', `etcd answered a revision out of range: ${JSON.stringify(s)}`);
  return n;
}

/** Asks each etcd member to refuse requests and end watches while it has no leader (clientv3's WithRequireLeader). */
const REQUIRE_LEADER = { 'grpc-metadata-hasleader': 'true' };

/** How long a write may be pending before its member's raft term is checked, and how often after that. */
const LEADER_PATIENCE_MS = 1000;
const LEADER_CHECK_MS = 500;

/** A watch resumed on a member whose revision is behind it waits this long for that member to catch up. */
const BEHIND_GRACE_MS = 5000;

/** etcd's answers (gRPC status as the gateway forwards it) that say this member did not act on the request. */
function unservedReason(res: JsonResponse, read: boolean): string | undefined {
  if (res.status === 200) return undefined;
  const e = res.body as { message?: unknown; error?: unknown; code?: unknown } | undefined;
  const msg = typeof e?.message === 'string' ? e.message : typeof e?.error === 'string' ? e.error : `HTTP ${res.status}`;
  // 8 RESOURCE_EXHAUSTED: "too many requests", refused before proposing; a member without a leader drops proposals.
  if (e?.code === 8 || /proposal dropped/.test(msg)) return msg;
  // 14 UNAVAILABLE and 4 DEADLINE_EXCEEDED: a read is answered or not, never applied; of the writes, only a
  // refusal before proposing ("no leader", "unhealthy cluster", "server stopped") is known not to be applied.
  if (e?.code === 14 || e?.code === 4 || res.status === 503) {
    if (read || /no leader|unhealthy cluster|server stopped|not capable/.test(msg)) return msg;
  }
  return undefined;
}

export class EtcdStore implements Store {
  private readonly members: Members;
  private readonly retry: ResolvedRetry;
  private readonly http: HttpJsonClient;
  private readonly prefix: string;
  private readonly livenessMs: number;
  private readonly watches = new Set<ResumableWatch>();
  private closed = false;
  /** The highest raft term any answer carried: a later one means the leader changed. */
  private term = 0;

  /** `endpoints`: the client URLs of one cluster's members; the first is used until it fails. */
  constructor(endpoints: { host: string; port: number } | readonly { host: string; port: number }[], opts: EtcdStoreOptions = {}) {
    const list = Array.isArray(endpoints) ? endpoints : [endpoints as { host: string; port: number }];
    this.members = new Members(list.map((e) => ({ host: e.host, port: e.port })));
    this.retry = resolveRetry(opts);
    this.http = new HttpJsonClient(this.members, this.retry, 'etcd', REQUIRE_LEADER);
    this.prefix = opts.prefix ?? '/tendril/';
    if (!this.prefix.startsWith('/') || !this.prefix.endsWith('/')) {
      throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Invalid etcd key prefix ${JSON.stringify(this.prefix)}: must start and end with "/"`);
    }
    this.livenessMs = opts.livenessMs ?? 15_000;
  }

  /** "etcd (HOST:PORT)", or with several members all of them and the one in use. */
  get description(): string {
    if (this.members.targets.length === 1) return `etcd (${this.members.describe()})`;
    return `etcd (${this.members.describe()}; using ${describeTarget(this.members.current)})`;
  }

  async get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined> {
    const key = this.key(kind, name);
    const r = (await this.read('/v3/kv/range', { key: b64(key) }, `get ${kind} "${name}"`)) as GwRange;
    const kv = r.kvs?.[0];
    return kv ? (this.decode(kind, name, kv) as Resource<T>) : undefined;
  }

  async list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    checkKind(kind);
    const p = `${this.prefix}${kind}/`;
    // One range read: the items and header.revision come from the same consistent snapshot.
    const r = (await this.read('/v3/kv/range', { key: b64(p), range_end: prefixEnd(p) }, `list ${kind}`)) as GwRange;
    const items: Resource<T>[] = [];
    for (const kv of r.kvs ?? []) {
      const name = unb64(kv.key).slice(p.length);
      items.push(this.decode(kind, name, kv) as Resource<T>);
    }
    return { items, revision: num(r.header?.revision) };
  }

  async put<T>(kind: Kind, name: string, value: T, opts: PutOptions = {}): Promise<Resource<T>> {
    const key = b64(this.key(kind, name));
    const text = encodeValue(kind, name, value);
    const stored = JSON.parse(text) as T;
    const req = { key, value: b64(text) };
    const what = `put ${kind} "${name}"`;
    const done = (revision: number): Resource<T> => ({ kind, name, revision, value: stored });
    const ours = (kv: GwKeyValue | undefined): boolean => kv !== undefined && unb64(kv.value) === text;
    if (opts.expectedRevision === undefined) {
      let guarded = false;
      return this.write('/v3/kv/put', req, what, key,
        (r) => {
          // A guarded resend that did not apply: something changed the key since it was read back (maybe our
          // first attempt, landing late); look again.
          if (guarded && (r as GwTxn).succeeded !== true) return undefined;
          return done(num((r as { header?: GwHeader }).header?.revision));
        },
        // Our value is there: applied (or someone wrote the same, which leaves the same state).
        (kv) => (ours(kv) ? done(num(kv?.mod_revision)) : undefined),
        // Otherwise sent again only if the key is still as read back: a first attempt still queued in the leader's
        // log then commits first and fails the resend, instead of both landing.
        (kv) => {
          guarded = true;
          const compare = kv
            ? { key, target: 'MOD', result: 'EQUAL', mod_revision: String(num(kv.mod_revision)) }
            : { key, target: 'CREATE', result: 'EQUAL', create_revision: '0' };
          return { path: '/v3/kv/txn', body: { compare: [compare], success: [{ request_put: req }], failure: [] } };
        });
    }
    const expected = checkRevision('expectedRevision', opts.expectedRevision);
    // 0 = "must not exist": create_revision is 0 only for a key that does not exist.
    const compare = expected === 0
      ? { key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }
      : { key, target: 'MOD', result: 'EQUAL', mod_revision: String(expected) };
    return this.write('/v3/kv/txn', { compare: [compare], success: [{ request_put: req }], failure: [{ request_range: { key } }] }, what, key,
      (res) => {
        const r = res as GwTxn;
        if (r.succeeded === true) return done(num(r.header?.revision));
        throw conflictError('put', kind, name, expected, num(r.responses?.[0]?.response_range?.kvs?.[0]?.mod_revision));
      },
      (kv) => {
        const rev = num(kv?.mod_revision);
        if (rev === expected) return undefined; // still as before: not applied
        if (ours(kv)) return done(rev);
        throw conflictError('put', kind, name, expected, rev);
      });
  }

  async delete(kind: Kind, name: string, opts: DeleteOptions = {}): Promise<boolean> {
    const key = b64(this.key(kind, name));
    const what = `delete ${kind} "${name}"`;
    // A key gone after a lost answer: deleted, by us as far as anyone can tell.
    if (opts.expectedRevision === undefined) {
      return this.write('/v3/kv/deleterange', { key }, what, key,
        // Sent again after a lost answer, "nothing to delete" means the first attempt did it.
        (r, afterLoss) => num((r as { deleted?: string }).deleted) > 0 || afterLoss,
        (kv) => (kv === undefined ? true : undefined));
    }
    const expected = checkRevision('expectedRevision', opts.expectedRevision);
    return this.write('/v3/kv/txn', {
      compare: [{ key, target: 'MOD', result: 'EQUAL', mod_revision: String(expected) }],
      success: [{ request_delete_range: { key } }],
      failure: [{ request_range: { key } }],
    }, what, key,
    (res, afterLoss) => {
      const r = res as GwTxn;
      if (r.succeeded === true) return num(r.responses?.[0]?.response_delete_range?.deleted) > 0;
      const cur = r.responses?.[0]?.response_range?.kvs?.[0];
      // Already gone is not a conflict (same rule as the local store).
      if (!cur) return afterLoss;
      throw conflictError('delete', kind, name, expected, num(cur.mod_revision));
    },
    (kv) => {
      if (kv === undefined) return true;
      if (num(kv.mod_revision) === expected) return undefined;
      throw conflictError('delete', kind, name, expected, num(kv.mod_revision));
    });
  }

  watch(kind: Kind, opts: WatchOptions): WatchHandle {
    checkKind(kind);
    checkRevision('fromRevision', opts.fromRevision);
    if (this.closed) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot watch ${kind}: store client is closed`);
    const p = `${this.prefix}${kind}/`;
    let clusterId: string | undefined;
    let behindSince: number | undefined;
    const open = (from: number, sink: StreamSink): ((dead?: boolean) => void) => {
      // Each (re)open goes to the member in use; a member that fails the watch passes that role on.
      const member = this.members.current;
      let quietSince = Date.now();
      let cancelled = false;
      const failed = (err?: unknown): void => {
        this.members.failed(member);
        sink.closed(err);
      };
      const body = { create_request: { key: b64(p), range_end: prefixEnd(p), start_revision: String(from + 1), progress_notify: true } };
      const cancelStream = openNdjsonStream(member, 'POST', '/v3/watch', body, {
        onResponse: (status) => {
          if (status !== 200) failed(new Error(`etcd watch answered HTTP ${status}`));
        },
        onLine: (msg) => {
          quietSince = Date.now();
          const m = msg as { result?: GwWatchResult; error?: unknown };
          const res = m.result;
          if (!res) {
            failed(new Error(`etcd watch failed: ${JSON.stringify(m.error ?? msg).slice(0, 200)}`));
            return;
          }
          this.onWatchResult(kind, p, from, res, { ...sink, closed: failed }, {
            get: () => clusterId,
            set: (id) => { clusterId = id; },
            behind: (yes) => {
              if (!yes) behindSince = undefined;
              else behindSince ??= Date.now();
              return Date.now() - (behindSince ?? Date.now()) >= (this.members.targets.length > 1 ? BEHIND_GRACE_MS : 0);
            },
          });
        },
        onEnd: (err) => failed(err),
      }, REQUIRE_LEADER);
      const stop = (): void => {
        cancelled = true;
        clearInterval(timer);
        cancelStream();
      };
      // etcd's own progress notifications come every 10 minutes; in between, a quiet watch asks its member whether
      // it is still there, because a host that vanished or froze does not close the TCP connection.
      const timer = setInterval(() => {
        if (cancelled || Date.now() - quietSince < this.livenessMs) return;
        void this.http.requestTo(member, 'POST', '/v3/maintenance/status', {}).then(
          (res) => res.status === 200 ? undefined : `etcd at ${describeTarget(member)} answered HTTP ${res.status}`,
          (err: unknown) => describeCause(err),
        ).then((problem) => {
          if (cancelled) return;
          if (problem === undefined) quietSince = Date.now();
          else {
            stop();
            failed(new Error(problem));
          }
        });
      }, Math.max(1000, Math.floor(this.livenessMs / 3)));
      timer.unref();
      return (dead) => {
        stop();
        if (dead === true) this.members.failed(member);
      };
    };
    const w = new ResumableWatch(opts, open, this.retry.maxBackoffMs, this.retry.requestTimeoutMs, (x) => this.watches.delete(x));
    this.watches.add(w);
    return w;
  }

  async ping(): Promise<{ ok: boolean; revision?: number; error?: string }> {
    try {
      const r = (await this.read('/v3/maintenance/status', {}, 'ping')) as { header?: GwHeader };
      return { ok: true, revision: num(r.header?.revision) };
    } catch (err) {
      return { ok: false, error: describeCause(err) };
    }
  }

  /** Discards etcd's history up to `revision` (maintenance; watches older than that then resync). */
  async compact(revision: number): Promise<void> {
    checkRevision('revision', revision);
    await this.call('/v3/kv/compaction', { revision: String(revision), physical: true }, `compact to revision ${revision}`, false);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.http.close();
  }

  private onWatchResult(
    kind: Kind, p: string, from: number, res: GwWatchResult, sink: StreamSink,
    cluster: { get(): string | undefined; set(id: string): void; behind(yes: boolean): boolean },
  ): void {
    if (res.compact_revision !== undefined && num(res.compact_revision) > 0) {
      sink.resync(`etcd history before revision ${num(res.compact_revision)} was compacted (watch asked for revisions after ${from})`);
      return;
    }
    if (res.canceled === true) {
      sink.closed(new Error(`etcd cancelled the watch: ${res.cancel_reason ?? 'no reason given'}`));
      return;
    }
    const headerRev = num(res.header?.revision);
    const term = num(res.header?.raft_term);
    if (term > this.term) this.term = term;
    if (res.created === true) {
      const id = res.header?.cluster_id;
      const known = cluster.get();
      // Another cluster (or a wiped one) numbers its revisions independently: nothing can be resumed.
      if (id !== undefined && known !== undefined && id !== known) {
        sink.resync(`etcd cluster changed (id ${known} is now ${id})`);
        return;
      }
      if (headerRev < from) {
        // A member that has not yet applied what another one delivered is only late; one that stays behind lost data.
        if (cluster.behind(true)) sink.resync(`etcd revision ${headerRev} is behind the watch's revision ${from} (etcd data was lost or replaced)`);
        else sink.closed(new Error(`etcd member at revision ${headerRev} is behind the watch's revision ${from}`));
        return;
      }
      cluster.behind(false);
      if (id !== undefined) cluster.set(id);
      sink.opened();
      return;
    }
    const events = res.events ?? [];
    for (const e of events) {
      const ev = this.decodeEvent(kind, p, e);
      if (ev) sink.event(ev);
    }
    // An empty, non-created response is a progress notification: everything up to header.revision was sent.
    if (events.length === 0 && headerRev > 0) sink.progress(headerRev);
  }

  private decodeEvent(kind: Kind, p: string, e: { type?: 'PUT' | 'DELETE'; kv?: GwKeyValue }): WatchEvent<unknown> | undefined {
    const kv = e.kv;
    if (!kv) return undefined;
    const name = unb64(kv.key).slice(p.length);
    const revision = num(kv.mod_revision);
    if (e.type === 'DELETE') return { type: 'delete', kind, name, revision };
    try {
      return { type: 'put', resource: this.decode(kind, name, kv) };
    } catch {
      // Not ours (a foreign writer under our prefix): skipping it keeps the watch alive for our own keys.
      return undefined;
    }
  }

  private decode(kind: Kind, name: string, kv: GwKeyValue): Resource<unknown> {
    let value: unknown;
    try {
      value = JSON.parse(unb64(kv.value));
    } catch (err) {
      throw new StoreError('TENDRIL_ERR_STORE_CORRUPT', `Cannot read ${kind} "${name}" from etcd: value is not JSON`, { cause: err });
    }
    return { kind, name, revision: num(kv.mod_revision), value };
  }

  private key(kind: Kind, name: string): string {
    return `${this.prefix}${kind}/${checkName(checkKind(kind), name)}`;
  }

  /** A read: answered by any member (linearizable, so as fresh as the leader), sent again on any failure. */
  private read(path: string, body: unknown, what: string): Promise<unknown> {
    return this.call(path, body, what, true);
  }

  /**
   * A write, sent again while members cannot be reached. When its answer is lost (member died or hung after it
   * was sent), the key is read back from a member that works: `verify` says from what it finds whether the write
   * was applied (its result), not applied (undefined: send it again, as `again` makes it from what was read) or
   * lost a race (throws), so a failover neither loses a write nor applies it twice. `settle` answering undefined
   * means a resend did not apply: read back again.
   */
  private async write<R>(
    path: string, body: unknown, what: string, key: string,
    settle: (answer: unknown, afterLoss: boolean) => R | undefined, verify: (kv: GwKeyValue | undefined) => R | undefined,
    again?: (kv: GwKeyValue | undefined) => { path: string; body: unknown },
  ): Promise<R> {
    let deadline = Infinity;
    const readBack = async (): Promise<GwKeyValue | undefined> => ((await this.read('/v3/kv/range', { key }, what)) as GwRange).kvs?.[0];
    let afterLoss = false;
    let req = { path, body };
    for (;;) {
      let lost: OutcomeUnknownError | undefined;
      try {
        const out = settle(await this.call(req.path, req.body, what, false), afterLoss);
        if (out !== undefined) return out;
      } catch (err) {
        // A conflict of a write sent again may be with its first attempt, committed after all while we looked.
        if (afterLoss && err instanceof StoreError && err.code === 'TENDRIL_ERR_STORE_CONFLICT') {
          const outcome = verify(await readBack());
          if (outcome !== undefined) return outcome;
        }
        if (!(err instanceof OutcomeUnknownError)) throw err;
        lost = err;
      }
      if (lost) {
        // Patience counts from the first loss, not from a first attempt that may have waited out etcd's own timeout.
        if (!afterLoss) deadline = Date.now() + this.retry.connectTimeoutMs;
        afterLoss = true;
        logger('store').warn({ op: what, member: describeTarget(lost.target), err: describeCause(lost.cause) }, 'etcd write answer lost; checking it on another member');
      }
      const kv = await readBack();
      const outcome = verify(kv);
      if (outcome !== undefined) return outcome;
      if (Date.now() >= deadline) throw lost ?? new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot ${what}: the key kept changing under it`);
      if (again) req = again(kv);
    }
  }

  /**
   * A write forwarded to a leader that then died is dropped, yet etcd answers it only after its own timeout (7 s
   * with the default election timeout). A write still pending after a second is abandoned as soon as a member
   * reports a newer raft term: from then on reading the key back tells for certain whether it was applied.
   */
  private leaderWatchdog(policy: RequestPolicy): () => void {
    const ctl = new AbortController();
    policy.signal = ctl.signal;
    const since = this.term;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const check = (): void => {
      void this.http.requestTo(this.members.current, 'POST', '/v3/maintenance/status', {}).then(
        (r) => num((r.body as { header?: GwHeader } | undefined)?.header?.raft_term),
        () => 0,
      ).then((term) => {
        if (done) return;
        if (since > 0 && term > since) {
          logger('store').warn({ term, since }, 'etcd leader changed under a pending write; abandoning it to check it');
          ctl.abort(new Error(`etcd leader changed (raft term ${since} -> ${term})`));
        } else timer = setTimeout(check, LEADER_CHECK_MS);
      });
    };
    timer = setTimeout(check, LEADER_PATIENCE_MS);
    return () => {
      done = true;
      clearTimeout(timer);
    };
  }

  private async call(path: string, body: unknown, what: string, read: boolean): Promise<unknown> {
    if (this.closed) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot ${what}: store client is closed`);
    const policy: RequestPolicy = { resend: read, strict: !read, unserved: (r) => unservedReason(r, read) };
    const stopWatchdog = read ? () => {} : this.leaderWatchdog(policy);
    let res: JsonResponse;
    try {
      res = await this.http.request('POST', path, body, policy);
    } finally {
      stopWatchdog();
    }
    const term = num((res.body as { header?: GwHeader } | undefined)?.header?.raft_term);
    if (term > this.term) this.term = term;
    if (res.status === 200) return res.body;
    const e = res.body as { message?: unknown; error?: unknown; code?: unknown } | undefined;
    const msg = typeof e?.message === 'string' ? e.message : typeof e?.error === 'string' ? e.error : `HTTP ${res.status}`;
    const where = describeTarget(this.members.current);
    // gRPC codes as the gateway forwards them: 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED, 3 INVALID_ARGUMENT. A write
    // that got one of them and is not known unapplied ("request timed out", "leader changed") may still commit.
    if (e?.code === 14 || e?.code === 4 || res.status === 503) {
      throw new OutcomeUnknownError(`Cannot ${what} in etcd at ${where}: ${msg}`, this.members.current, new Error(msg));
    }
    throw new StoreError(e?.code === 3 ? 'TENDRIL_ERR_STORE_INVALID' : 'TENDRIL_ERR_STORE_INTERNAL', `Cannot ${what} in etcd at ${where}: ${msg}`);
  }
}
