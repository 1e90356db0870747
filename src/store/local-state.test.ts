// Unit tests of the local store's persisted state: revisions, history, WAL + snapshot recovery, locking.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { LocalState } from './local-state.js';
import { StoreError } from './errors.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-state-`));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => path.join(root, `d${n++}`);

function code(c: string) {
  return (err: unknown): boolean => err instanceof StoreError && err.code === c;
}

test('put()/delete() bump one store-wide revision; get() and list() see the result', () => {
  const s = new LocalState({ dataDir: freshDir() });
  s.open();
  try {
    assert.equal(s.revision, 0);
    assert.equal(s.put('Node', 'a', { x: 1 }).revision, 1);
    assert.equal(s.put('IPAMState', 'p', { y: 1 }).revision, 2);
    assert.equal(s.put('Node', 'b', { x: 2 }).revision, 3);
    assert.deepEqual(s.delete('Node', 'a'), { deleted: true, revision: 4 });
    assert.deepEqual(s.delete('Node', 'a'), { deleted: false, revision: 4 });
    assert.equal(s.get('Node', 'a'), undefined);
    assert.deepEqual(s.list('Node'), { items: [{ kind: 'Node', name: 'b', revision: 3, value: { x: 2 } }], revision: 4 });
  } finally {
    s.close();
  }
});

test('put() and delete() check expectedRevision (0 = must not exist)', () => {
  const s = new LocalState({ dataDir: freshDir() });
  s.open();
  try {
    const r = s.put('Node', 'a', 1, 0);
    assert.throws(() => s.put('Node', 'a', 2, 0), code('TENDRIL_ERR_STORE_CONFLICT'));
    assert.throws(() => s.put('Node', 'a', 2, r.revision + 5), (err: unknown) => code('TENDRIL_ERR_STORE_CONFLICT')(err) && (err as StoreError).currentRevision === r.revision);
    assert.throws(() => s.delete('Node', 'a', 0), code('TENDRIL_ERR_STORE_CONFLICT'));
    assert.equal(s.revision, 1, 'a refused write does not consume a revision');
    assert.equal(s.delete('Node', 'a', r.revision).deleted, true);
  } finally {
    s.close();
  }
});

test('eventsSince() returns the kind\'s events after a revision, or a resync reason', () => {
  const s = new LocalState({ dataDir: freshDir(), historyLimit: 5 });
  s.open();
  try {
    s.put('Node', 'a', 1);
    s.put('IPAMState', 'p', 1);
    s.delete('Node', 'a');
    const r = s.eventsSince('Node', 0);
    assert.ok('events' in r);
    assert.deepEqual(r.events.map((e) => e.type), ['put', 'delete']);
    assert.ok('resync' in s.eventsSince('Node', 99), 'ahead of the store');
    for (let i = 0; i < 10; i++) s.put('Node', 'b', i);
    assert.ok(s.compactedThrough > 0);
    const gone = s.eventsSince('Node', 0);
    assert.ok('resync' in gone && /history before revision/.test(gone.resync));
    const recent = s.eventsSince('Node', s.revision - 2);
    assert.ok('events' in recent && recent.events.length === 2);
  } finally {
    s.close();
  }
});

test('reopening restores resources, revision, history and store id (WAL replay)', () => {
  const dir = freshDir();
  const s = new LocalState({ dataDir: dir });
  s.open();
  s.put('Node', 'a', { v: 1 });
  s.put('Node', 'b', { v: 2 });
  s.delete('Node', 'a');
  const id = s.storeId;
  s.close();
  const t = new LocalState({ dataDir: dir });
  t.open();
  try {
    assert.equal(t.storeId, id);
    assert.equal(t.revision, 3);
    assert.deepEqual(t.list('Node').items.map((r) => r.name), ['b']);
    const h = t.eventsSince('Node', 0);
    assert.ok('events' in h && h.events.length === 3);
    assert.equal(t.put('Node', 'c', {}).revision, 4);
  } finally {
    t.close();
  }
});

test('snapshots empty the WAL and a reopen combines snapshot and WAL', () => {
  const dir = freshDir();
  const s = new LocalState({ dataDir: dir, snapshotEvery: 4, historyLimit: 3 });
  s.open();
  for (let i = 0; i < 10; i++) s.put('Node', `n${i % 3}`, i);
  const walLines = fs.readFileSync(path.join(dir, 'wal.ndjson'), 'utf8').split('\n').filter(Boolean).length;
  assert.equal(walLines, 2, '10 writes, snapshot every 4: 2 left in the WAL');
  const compacted = s.compactedThrough;
  s.close();
  const t = new LocalState({ dataDir: dir, snapshotEvery: 4, historyLimit: 3 });
  t.open();
  try {
    assert.equal(t.revision, 10);
    assert.equal(t.compactedThrough, compacted);
    assert.deepEqual(t.list('Node').items.map((r) => [r.name, r.value]), [['n0', 9], ['n1', 7], ['n2', 8]]);
  } finally {
    t.close();
  }
});

test('a torn last WAL record (crash mid-write) is cut off and later writes are readable', () => {
  const dir = freshDir();
  const s = new LocalState({ dataDir: dir });
  s.open();
  s.put('Node', 'a', 1);
  s.close();
  fs.appendFileSync(path.join(dir, 'wal.ndjson'), '{"type":"put","resou');
  const t = new LocalState({ dataDir: dir });
  t.open();
  assert.equal(t.revision, 1);
  t.put('Node', 'b', 2);
  t.close();
  const u = new LocalState({ dataDir: dir });
  u.open();
  try {
    assert.equal(u.revision, 2);
    assert.deepEqual(u.list('Node').items.map((r) => r.name), ['a', 'b']);
  } finally {
    u.close();
  }
});

test('a damaged WAL record in the middle is TENDRIL_ERR_STORE_CORRUPT, not silently skipped', () => {
  const dir = freshDir();
  const s = new LocalState({ dataDir: dir });
  s.open();
  s.put('Node', 'a', 1);
  s.put('Node', 'b', 2);
  s.close();
  const wal = path.join(dir, 'wal.ndjson');
  fs.writeFileSync(wal, fs.readFileSync(wal, 'utf8').replace('"type":"put"', '"type":"pu'));
  const t = new LocalState({ dataDir: dir });
  assert.throws(() => t.open(), code('TENDRIL_ERR_STORE_CORRUPT'));
  assert.ok(!fs.existsSync(path.join(dir, 'LOCK')), 'a failed open releases the lock');
});

test('a data dir is locked by its process; a dead owner\'s lock is taken over', () => {
  const dir = freshDir();
  const s = new LocalState({ dataDir: dir });
  s.open();
  try {
    assert.throws(() => new LocalState({ dataDir: dir }).open(), (err: unknown) => code('TENDRIL_ERR_STORE_UNAVAILABLE')(err) && /in use by process/.test((err as Error).message));
  } finally {
    s.close();
  }
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  fs.writeFileSync(path.join(dir, 'LOCK'), `${dead.stdout}\n`);
  const t = new LocalState({ dataDir: dir });
  t.open();
  t.close();
});

test('subscribers see committed events in order; a throwing subscriber does not fail the write', () => {
  const s = new LocalState({ dataDir: freshDir() });
  s.open();
  try {
    const seen: number[] = [];
    s.subscribe(() => {
      throw new Error('boom');
    });
    const off = s.subscribe((ev) => seen.push(ev.type === 'put' ? ev.resource.revision : ev.revision));
    s.put('Node', 'a', 1);
    s.delete('Node', 'a');
    off();
    s.put('Node', 'a', 2);
    assert.deepEqual(seen, [1, 2]);
  } finally {
    s.close();
  }
});
