import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_MAX_FLOWS, FlowRing } from './ring.js';

test('FlowRing keeps the last N items oldest first and counts every push as seen', () => {
  const r = new FlowRing<number>(3);
  assert.deepEqual(r.toArray(), []);
  assert.equal(r.last(), undefined);
  r.push(1);
  r.push(2);
  assert.deepEqual(r.toArray(), [1, 2]);
  for (const n of [3, 4, 5]) r.push(n);
  assert.deepEqual(r.toArray(), [3, 4, 5]);
  assert.deepEqual([...r.reversed()], [5, 4, 3]);
  assert.equal(r.size, 3);
  assert.equal(r.seen, 5);
  assert.equal(r.last(), 5);
  r.clear();
  assert.equal(r.size, 0);
  assert.equal(r.seen, 5, 'seen survives clear()');
});

test('FlowRing defaults to Hubble\'s 4095 flows and rejects a bad capacity', () => {
  assert.equal(new FlowRing<number>().capacity, DEFAULT_MAX_FLOWS);
  assert.equal(DEFAULT_MAX_FLOWS, 4095);
  assert.throws(() => new FlowRing<number>(0), RangeError);
  assert.throws(() => new FlowRing<number>(1.5), RangeError);
  const r = new FlowRing<number>(DEFAULT_MAX_FLOWS);
  for (let i = 0; i < 10_000; i++) r.push(i);
  assert.equal(r.size, 4095);
  assert.equal(r.toArray()[0], 10_000 - 4095);
});
