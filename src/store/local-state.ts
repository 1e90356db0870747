// The local store's state machine: resources, store-wide revision and bounded event history, persisted as a
// snapshot plus a write-ahead log so that any acknowledged write survives a crash and revisions never go back.
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { StoreError, describeCause } from './errors.js';
import { checkKind, checkName, eventKind, eventRevision } from './validate.js';
import type { Kind, Resource, WatchEvent } from './types.js';

export interface LocalStateOptions {
  dataDir: string;
  /** Events kept for watches resuming from an older revision (older => resync). Default 10000. */
  historyLimit?: number;
  /** WAL records after which a snapshot is written and the WAL emptied. Default 10000. */
  snapshotEvery?: number;
}

export type HistoryResult = { events: WatchEvent<unknown>[] } | { resync: string };

const SNAPSHOT = 'snapshot.json';
const WAL = 'wal.ndjson';
const LOCK = 'LOCK';
const FORMAT = 'tendril-store/1';

interface SnapshotFile {
  format: typeof FORMAT;
  storeId: string;
  revision: number;
  /** Revision of the newest event no longer in `history`: watches must start at or after it. */
  compactedThrough: number;
  resources: Resource<unknown>[];
  history: WatchEvent<unknown>[];
}

function keyOf(kind: Kind, name: string): string {
  return `${kind}/${name}`;
}

export class LocalState {
  readonly dataDir: string;
  private readonly historyLimit: number;
  private readonly snapshotEvery: number;
  private readonly resources = new Map<string, Resource<unknown>>();
  /**
   * Contiguous: history[i] has revision compactedThrough + 1 + i, because every write bumps the revision by
   * exactly one and produces exactly one event.
   */
  private history: WatchEvent<unknown>[] = [];
  private readonly subscribers = new Set<(ev: WatchEvent<unknown>) => void>();
  private _storeId = '';
  private _revision = 0;
  private _compactedThrough = 0;
  private walFd: number | undefined;
  private walSize = 0;
  private walRecords = 0;
  /** Set when the WAL could not be repaired after a failed write: further writes would corrupt it. */
  private broken: string | undefined;

  constructor(opts: LocalStateOptions) {
    this.dataDir = path.resolve(opts.dataDir);
    this.historyLimit = positiveInt('historyLimit', opts.historyLimit ?? 10_000);
    this.snapshotEvery = positiveInt('snapshotEvery', opts.snapshotEvery ?? 10_000);
  }

  get storeId(): string {
    return this._storeId;
  }
  get revision(): number {
    return this._revision;
  }
  get compactedThrough(): number {
    return this._compactedThrough;
  }
  get isOpen(): boolean {
    return this.walFd !== undefined;
  }

  /** Takes the data dir's lock, loads snapshot + WAL (repairing a torn last record) and opens the WAL. */
  open(): void {
    if (this.walFd !== undefined) return;
    try {
      fs.mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot create store data dir "${this.dataDir}": ${describeCause(err)}`, { cause: err });
    }
    this.lock();
    try {
      this.load();
      this.walFd = fs.openSync(path.join(this.dataDir, WAL), 'a', 0o600);
      this.walSize = fs.fstatSync(this.walFd).size;
    } catch (err) {
      this.unlock();
      if (err instanceof StoreError) throw err;
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot open store data dir "${this.dataDir}": ${describeCause(err)}`, { cause: err });
    }
  }

  close(): void {
    if (this.walFd === undefined) return;
    try {
      fs.fsyncSync(this.walFd);
    } finally {
      fs.closeSync(this.walFd);
      this.walFd = undefined;
      this.subscribers.clear();
      this.unlock();
    }
  }

  get(kind: Kind, name: string): Resource<unknown> | undefined {
    return this.resources.get(keyOf(kind, name));
  }

  list(kind: Kind): { items: Resource<unknown>[]; revision: number } {
    const items: Resource<unknown>[] = [];
    for (const r of this.resources.values()) if (r.kind === kind) items.push(r);
    items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { items, revision: this._revision };
  }

  put(kind: Kind, name: string, value: unknown, expectedRevision?: number): Resource<unknown> {
    const cur = this.get(kind, name);
    if (expectedRevision !== undefined && (cur?.revision ?? 0) !== expectedRevision) {
      throw conflictError('put', kind, name, expectedRevision, cur?.revision ?? 0);
    }
    const resource: Resource<unknown> = { kind, name, revision: this._revision + 1, value };
    this.commit({ type: 'put', resource });
    return resource;
  }

  delete(kind: Kind, name: string, expectedRevision?: number): { deleted: boolean; revision: number } {
    const cur = this.get(kind, name);
    // Already gone is not a conflict: whatever the caller meant to remove does not exist any more.
    if (!cur) return { deleted: false, revision: this._revision };
    if (expectedRevision !== undefined && cur.revision !== expectedRevision) {
      throw conflictError('delete', kind, name, expectedRevision, cur.revision);
    }
    const revision = this._revision + 1;
    this.commit({ type: 'delete', kind, name, revision });
    return { deleted: true, revision };
  }

  /** Every event of `kind` with a revision > fromRevision, or why that cannot be answered. */
  eventsSince(kind: Kind, fromRevision: number): HistoryResult {
    if (fromRevision > this._revision) {
      return { resync: `revision ${fromRevision} is ahead of the store's revision ${this._revision} (store state was lost or replaced)` };
    }
    if (fromRevision < this._compactedThrough) {
      return { resync: `history before revision ${this._compactedThrough + 1} is gone (watch asked for revisions after ${fromRevision})` };
    }
    const events: WatchEvent<unknown>[] = [];
    for (let i = fromRevision - this._compactedThrough; i < this.history.length; i++) {
      const ev = this.history[i];
      if (ev && eventKind(ev) === kind) events.push(ev);
    }
    return { events };
  }

  /** Called synchronously after each committed write, in revision order. */
  subscribe(fn: (ev: WatchEvent<unknown>) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** Writes a snapshot now and empties the WAL (also done automatically every `snapshotEvery` writes). */
  snapshot(): void {
    const fd = this.requireOpen();
    const file: SnapshotFile = {
      format: FORMAT,
      storeId: this._storeId,
      revision: this._revision,
      compactedThrough: this._compactedThrough,
      resources: [...this.resources.values()],
      history: this.history,
    };
    writeFileDurably(path.join(this.dataDir, SNAPSHOT), JSON.stringify(file));
    // A crash before this truncate is harmless: replay skips WAL records the snapshot already holds.
    fs.ftruncateSync(fd, 0);
    fs.fsyncSync(fd);
    this.walSize = 0;
    this.walRecords = 0;
  }

  private commit(ev: WatchEvent<unknown>): void {
    const fd = this.requireOpen();
    if (this.broken) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', this.broken);
    const line = Buffer.from(JSON.stringify(ev) + '\n');
    try {
      let off = 0;
      while (off < line.length) off += fs.writeSync(fd, line, off, line.length - off);
      fs.fsyncSync(fd);
    } catch (err) {
      // Cut a partial record off so the next append does not land behind garbage in the middle of the log.
      try {
        fs.ftruncateSync(fd, this.walSize);
      } catch (err2) {
        this.broken = `Store write-ahead log "${path.join(this.dataDir, WAL)}" is damaged: ${describeCause(err2)}; restart the store`;
      }
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot persist revision ${eventRevision(ev)}: ${describeCause(err)}`, { cause: err });
    }
    this.walSize += line.length;
    this.walRecords++;
    this.apply(ev);
    if (this.walRecords >= this.snapshotEvery) {
      try {
        this.snapshot();
      } catch {
        // The write is already durable in the WAL; the snapshot is retried after the next write.
      }
    }
    for (const fn of this.subscribers) {
      try {
        fn(ev);
      } catch {
        // A failing watcher must not turn a committed write into an error for the writer.
      }
    }
  }

  private apply(ev: WatchEvent<unknown>): void {
    if (ev.type === 'put') this.resources.set(keyOf(ev.resource.kind, ev.resource.name), ev.resource);
    else this.resources.delete(keyOf(ev.kind, ev.name));
    this._revision = eventRevision(ev);
    this.history.push(ev);
    // Trim in batches (a tenth of the limit) so a write does not shift the whole array each time.
    const slack = Math.floor(this.historyLimit / 10);
    if (this.history.length > this.historyLimit + slack) {
      const drop = this.history.length - this.historyLimit;
      this._compactedThrough += drop;
      this.history = this.history.slice(drop);
    }
  }

  private load(): void {
    const snapPath = path.join(this.dataDir, SNAPSHOT);
    const walPath = path.join(this.dataDir, WAL);
    let snap: SnapshotFile | undefined;
    try {
      snap = parseSnapshot(snapPath, fs.readFileSync(snapPath, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.resources.clear();
    this.history = [];
    if (snap) {
      this._storeId = snap.storeId;
      this._revision = snap.revision;
      this._compactedThrough = snap.compactedThrough;
      this.history = snap.history;
      for (const r of snap.resources) this.resources.set(keyOf(r.kind, r.name), r);
    } else {
      if (fs.existsSync(walPath) && fs.statSync(walPath).size > 0) {
        throw new StoreError('TENDRIL_ERR_STORE_CORRUPT', `Store data dir "${this.dataDir}" has a write-ahead log but no ${SNAPSHOT}`);
      }
      // A new store: persist its identity at once so clients can tell a restart from a replacement.
      this._storeId = randomUUID();
      this._revision = 0;
      this._compactedThrough = 0;
      writeFileDurably(snapPath, JSON.stringify({
        format: FORMAT, storeId: this._storeId, revision: 0, compactedThrough: 0, resources: [], history: [],
      } satisfies SnapshotFile));
    }
    this.replayWal(walPath);
  }

  private replayWal(walPath: string): void {
    let text: string;
    try {
      text = fs.readFileSync(walPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let offset = 0;
    while (offset < text.length) {
      const nl = text.indexOf('\n', offset);
      const line = nl < 0 ? text.slice(offset) : text.slice(offset, nl);
      let ev: WatchEvent<unknown> | undefined;
      try {
        ev = parseEvent(line);
      } catch (err) {
        if (nl < 0) {
          // A torn last record (crash during the write, never acknowledged): cut it off.
          fs.truncateSync(walPath, Buffer.byteLength(text.slice(0, offset)));
          return;
        }
        throw new StoreError('TENDRIL_ERR_STORE_CORRUPT', `Cannot read store write-ahead log "${walPath}" at byte ${Buffer.byteLength(text.slice(0, offset))}: ${describeCause(err)}`, { cause: err });
      }
      const rev = eventRevision(ev);
      if (rev > this._revision) {
        if (rev !== this._revision + 1) {
          throw new StoreError('TENDRIL_ERR_STORE_CORRUPT', `Cannot read store write-ahead log "${walPath}": revision ${rev} follows ${this._revision}`);
        }
        this.apply(ev);
        this.walRecords++;
      }
      offset = nl < 0 ? text.length : nl + 1;
    }
  }

  private lock(): void {
    const lockPath = path.join(this.dataDir, LOCK);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(lockPath, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot lock store data dir "${this.dataDir}": ${describeCause(err)}`, { cause: err });
        }
      }
      const pid = Number.parseInt(readOr(lockPath, ''), 10);
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot lock store data dir "${this.dataDir}": in use by process ${pid}`);
      }
      // Left behind by a process that died: take it over.
      fs.rmSync(lockPath, { force: true });
    }
    throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot lock store data dir "${this.dataDir}": lock file keeps reappearing`);
  }

  private unlock(): void {
    fs.rmSync(path.join(this.dataDir, LOCK), { force: true });
  }

  private requireOpen(): number {
    if (this.walFd === undefined) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Store data dir "${this.dataDir}" is not open`);
    return this.walFd;
  }
}

export function conflictError(op: string, kind: Kind, name: string, expected: number, current: number): StoreError {
  const found = current === 0 ? 'it does not exist' : `it is at revision ${current}`;
  return new StoreError('TENDRIL_ERR_STORE_CONFLICT', `Cannot ${op} ${kind} "${name}": expected revision ${expected}, but ${found}`, { currentRevision: current });
}

function positiveInt(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Invalid ${what} ${n}: expected an integer >= 1`);
  return n;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readOr(p: string, fallback: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return fallback;
  }
}

/** tmp file + fsync + rename + fsync(dir): the file is either the old or the new content after a crash. */
function writeFileDurably(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dirFd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isRev(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function parseResource(v: unknown): Resource<unknown> {
  if (!isRecord(v) || !isRev(v['revision']) || !('value' in v)) throw new Error('malformed resource');
  const kind = checkKind(v['kind']);
  return { kind, name: checkName(kind, v['name']), revision: v['revision'], value: v['value'] };
}

/** Parses one stored or transmitted event (also used by the local client for events off the wire). */
export function parseEvent(text: string | unknown): WatchEvent<unknown> {
  const v: unknown = typeof text === 'string' ? JSON.parse(text) : text;
  if (!isRecord(v)) throw new Error('event is not an object');
  if (v['type'] === 'put') return { type: 'put', resource: parseResource(v['resource']) };
  if (v['type'] === 'delete' && isRev(v['revision'])) {
    const kind = checkKind(v['kind']);
    return { type: 'delete', kind, name: checkName(kind, v['name']), revision: v['revision'] };
  }
  throw new Error('malformed event');
}

function parseSnapshot(file: string, text: string): SnapshotFile {
  try {
    const v: unknown = JSON.parse(text);
    if (!isRecord(v) || v['format'] !== FORMAT) throw new Error(`not a ${FORMAT} snapshot`);
    const { storeId, revision, compactedThrough, resources, history } = v;
    if (typeof storeId !== 'string' || !isRev(revision) || !isRev(compactedThrough) || !Array.isArray(resources) || !Array.isArray(history)) {
      throw new Error('missing fields');
    }
    const evs = history.map((h) => parseEvent(h));
    if (evs.length !== revision - compactedThrough) throw new Error('history does not cover the revisions after compactedThrough');
    return { format: FORMAT, storeId, revision, compactedThrough, resources: resources.map(parseResource), history: evs };
  } catch (err) {
    throw new StoreError('TENDRIL_ERR_STORE_CORRUPT', `Cannot read store snapshot "${file}": ${describeCause(err)}`, { cause: err });
  }
}
