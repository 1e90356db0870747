// Unit tests of the bench's statistics (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { median, percentile, summarize } from './stats.js';

test('median() of odd and even counts, unsorted input, empty is NaN', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

test('median() does not reorder its input', () => {
  const xs = [3, 1, 2];
  median(xs);
  assert.deepEqual(xs, [3, 1, 2]);
});

test('percentile() is nearest-rank: p50 of 1..100 is 50, p99 is 99, p100 is the max', () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(xs, 0.5), 50);
  assert.equal(percentile(xs, 0.95), 95);
  assert.equal(percentile(xs, 0.99), 99);
  assert.equal(percentile(xs, 1), 100);
});

test('percentile() of 20 samples: p99 is the largest (nearest rank 20)', () => {
  const xs = Array.from({ length: 20 }, (_, i) => i + 1);
  assert.equal(percentile(xs, 0.99), 20);
  assert.equal(percentile(xs, 0.95), 19);
});

test('percentile() rejects q outside (0, 1]', () => {
  assert.throws(() => percentile([1], 0), RangeError);
  assert.throws(() => percentile([1], 1.5), RangeError);
});

test('summarize() gives count, mean, p50, p95, p99 and max', () => {
  assert.deepEqual(summarize([10, 20, 30, 40]), { count: 4, mean: 25, p50: 20, p95: 40, p99: 40, max: 40 });
  const e = summarize([]);
  assert.equal(e.count, 0);
  assert.ok(Number.isNaN(e.p50));
});
