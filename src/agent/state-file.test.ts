// The record journal behind IPAM and endpoint state: changes are appended, snapshots compact them, a reader
// sees snapshot + journal, a torn last line (machine crash mid-append) is ignored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RecordJournal, readRecords } from './state-file.js';

type Rec = { n: number };
const decode = (s: unknown): Array<[string, Rec]> => Object.entries(s as Record<string, Rec>);

function fixture(compactEvery = 256): { file: string; state: Map<string, Rec>; j: RecordJournal<Rec> } {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-journal-')), 'recs.json');
  const state = new Map<string, Rec>();
  const j = new RecordJournal<Rec>(file, () => Object.fromEntries(state), compactEvery);
  return { file, state, j };
}

test('changes are appended to the journal; a reader sees snapshot plus journal', () => {
  const { file, state, j } = fixture();
  for (const [k, n] of [['a', 1], ['b', 2], ['a', 3]] as const) {
    state.set(k, { n });
    j.put(k, { n });
  }
  state.delete('b');
  j.delete('b');
  // The first change wrote a snapshot (readers always find the file); the rest went to the journal.
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { a: { n: 1 } });
  assert.equal(fs.readFileSync(`${file}.journal`, 'utf8').trim().split('\n').length, 3);
  assert.deepEqual([...readRecords(file, decode)], [['a', { n: 3 }]]);
  assert.deepEqual([...j.load(decode)], [['a', { n: 3 }]]);
});

test('every compactEvery changes the snapshot is rewritten and the journal emptied', () => {
  const { file, state, j } = fixture(3);
  // k0 writes the first snapshot, k1-k3 are journaled, k4 is the 4th change since: a snapshot again; k5 journaled.
  for (let i = 0; i < 6; i++) {
    state.set(`k${i}`, { n: i });
    j.put(`k${i}`, { n: i });
  }
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8')) as object), ['k0', 'k1', 'k2', 'k3', 'k4']);
  assert.equal(fs.readFileSync(`${file}.journal`, 'utf8'), '{"k":"k5","v":{"n":5}}\n');
  assert.equal(readRecords(file, decode).size, 6);
});

test('a torn last line is ignored; a damaged line before others is an error naming the file and line', () => {
  const { file, state, j } = fixture();
  state.set('a', { n: 1 });
  j.put('a', { n: 1 });
  j.put('b', { n: 2 });
  fs.appendFileSync(`${file}.journal`, '{"k":"c","v":{"n"');
  assert.deepEqual([...readRecords(file, decode).keys()], ['a', 'b']);
  fs.appendFileSync(`${file}.journal`, '\n{"k":"d","v":{"n":4}}\n');
  assert.throws(() => readRecords(file, decode), /recs\.json\.journal line 2 is not JSON/);
});

test('no snapshot and no journal is no records', () => {
  const { file } = fixture();
  assert.equal(readRecords(file, decode).size, 0);
});
