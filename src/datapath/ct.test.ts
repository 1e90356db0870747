import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CT_GC_MIN_INTERVAL_MS, ctGcIntervalMs } from './ct.js';

test('the GC keeps its configured interval while the fullest table is at most a quarter full', () => {
  for (const fill of [0, 0.1, 0.25, Number.NaN]) assert.equal(ctGcIntervalMs(30_000, fill), 30_000, String(fill));
});

test('above a quarter the interval shrinks in proportion, down to the minimum when full', () => {
  assert.equal(ctGcIntervalMs(30_000, 0.5), 20_000);
  assert.equal(ctGcIntervalMs(30_000, 0.85), 6_000);
  assert.equal(ctGcIntervalMs(30_000, 1), CT_GC_MIN_INTERVAL_MS);
  assert.equal(ctGcIntervalMs(30_000, 3), CT_GC_MIN_INTERVAL_MS);
  // Monotone: fuller never waits longer.
  let last = Infinity;
  for (let f = 0; f <= 1; f += 0.05) {
    const ms = ctGcIntervalMs(30_000, f);
    assert.ok(ms <= last, `fill ${f}`);
    last = ms;
  }
});

test('a configured interval below the minimum is never lengthened', () => {
  assert.equal(ctGcIntervalMs(500, 0.9), 500);
  assert.equal(ctGcIntervalMs(500, 0), 500);
});
