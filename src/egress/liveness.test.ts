// NodeLiveness over a real local store (unix socket in a temporary directory): a lease renewed stays alive, one left
// unrenewed for its duration expires (by this process's clock) and calls back, a renewal brings it back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { withLocalStore, type NodeLeaseSpec } from '../store/index.js';
import { NodeLiveness } from './liveness.js';

const lease = (node: string, durationMs: number): NodeLeaseSpec => ({ node, renewMs: 50, durationMs, renewedAt: new Date().toISOString() });

async function until(what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('NodeLiveness: an unrenewed lease expires and calls back; a renewal revives it; nodes without a lease are alive', async () => {
  await withLocalStore('liveness', async (store) => {
    const live = new NodeLiveness(store, pino({ level: 'silent' }));
    let changes = 0;
    try {
      await store.put('NodeLease', 'n1', lease('n1', 300));
      await store.put('NodeLease', 'n2', lease('n2', 300));
      await live.start(() => changes++);
      assert.ok(live.alive('n1') && live.alive('n2') && live.alive('no-lease'));
      // n2 renews, n1 does not.
      const renew = setInterval(() => void store.put('NodeLease', 'n2', lease('n2', 300)).catch(() => {}), 50);
      try {
        await until('n1 to expire', () => changes > 0 && !live.alive('n1'));
        assert.ok(live.alive('n2'), 'the renewed lease stays alive');
      } finally {
        clearInterval(renew);
      }
      const before = changes;
      await store.put('NodeLease', 'n1', lease('n1', 300));
      await until('n1 to be alive again', () => changes > before && live.alive('n1'));
    } finally {
      live.stop();
    }
  });
});

test('NodeLiveness: --node-monitor-grace-period longer than a lease keeps the node alive for the grace period, never shorter than the lease', async () => {
  await withLocalStore('liveness', async (store) => {
    const live = new NodeLiveness(store, pino({ level: 'silent' }), 800);
    let gone: Record<string, number> = {};
    try {
      const t0 = performance.now();
      await store.put('NodeLease', 'short', lease('short', 100));
      await store.put('NodeLease', 'long', lease('long', 1500));
      await live.start(() => {
        for (const n of live.gone()) gone[n] ??= performance.now() - t0;
      });
      await until('both leases to expire', () => gone['short'] !== undefined && gone['long'] !== undefined);
      // Lower bounds only (a loaded machine makes them later, never earlier).
      assert.ok(gone['short']! >= 800, `a 100 ms lease is kept for the 800 ms grace period (gone after ${Math.round(gone['short']!)} ms)`);
      assert.ok(gone['long']! >= 1500, `a 1.5 s lease is kept for its own duration (gone after ${Math.round(gone['long']!)} ms)`);
      assert.deepEqual(live.gone(), ['long', 'short']);
      gone = {};
    } finally {
      live.stop();
    }
  });
});
