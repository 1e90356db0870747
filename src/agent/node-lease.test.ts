// The node lease's timing flags (--node-lease-renew-interval, --node-lease-duration) and the keeper over a real local
// store (unix socket in a temporary directory): what it writes carries the timing, its status says when it last
// renewed; the operator's NodeLiveness waits for the longer of the lease and --node-monitor-grace-period.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { LocalStoreClient, LocalStoreServer, type NodeLeaseSpec } from '../store/index.js';
import { NodeLiveness } from '../egress/liveness.js';
import { agentConfig } from './config.js';
import { DEFAULT_NODE_LEASE_DURATION_MS, DEFAULT_NODE_LEASE_RENEW_MS, NodeLeaseKeeper, nodeLeaseTiming } from './node-lease.js';

const base = { nodeName: 'n1', store: 'local+unix:///nonexistent.sock' };
const log = pino({ level: 'silent' });

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function withStore(fn: (store: LocalStoreClient) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-lease-'));
  const server = new LocalStoreServer({ dataDir: path.join(dir, 'data') });
  await server.listen({ socket: path.join(dir, 's.sock') });
  const store = new LocalStoreClient({ socket: path.join(dir, 's.sock') });
  try {
    await fn(store);
  } finally {
    await store.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('agentConfig(): the node lease renews every 1s and lasts 5s unless --node-lease-renew-interval / --node-lease-duration say otherwise', () => {
  assert.deepEqual(agentConfig(base).nodeLease, { renewMs: DEFAULT_NODE_LEASE_RENEW_MS, durationMs: DEFAULT_NODE_LEASE_DURATION_MS });
  assert.equal(DEFAULT_NODE_LEASE_RENEW_MS, 1000);
  assert.equal(DEFAULT_NODE_LEASE_DURATION_MS, 5000);
  assert.deepEqual(agentConfig({ ...base, nodeLeaseRenewInterval: '250ms', nodeLeaseDuration: '2s' }).nodeLease, { renewMs: 250, durationMs: 2000 });
  assert.deepEqual(agentConfig({ ...base, nodeLeaseDuration: '40s', nodeLeaseRenewInterval: '10s' }).nodeLease, { renewMs: 10_000, durationMs: 40_000 });
});

test('agentConfig() refuses a renewal that does not come well within the lease, and malformed durations, naming the flags', () => {
  const coded = (re: RegExp) => (err: unknown) => (err as { code?: string }).code === 'TENDRIL_ERR_INVALID_REQUEST' && re.test((err as Error).message);
  assert.throws(() => agentConfig({ ...base, nodeLeaseRenewInterval: '5s', nodeLeaseDuration: '5s' }), coded(/^Invalid --node-lease-renew-interval 5000 ms with --node-lease-duration 5000 ms: the renewal must come within half the lease/));
  assert.throws(() => agentConfig({ ...base, nodeLeaseRenewInterval: '3s' }), coded(/--node-lease-renew-interval 3000 ms with --node-lease-duration 5000 ms/));
  assert.throws(() => agentConfig({ ...base, nodeLeaseDuration: '1s' }), coded(/--node-lease-renew-interval 1000 ms with --node-lease-duration 1000 ms/));
  assert.throws(() => agentConfig({ ...base, nodeLeaseDuration: 'soon' }), coded(/^Invalid --node-lease-duration "soon"/));
  assert.throws(() => agentConfig({ ...base, nodeLeaseRenewInterval: '0s' }), coded(/^Invalid --node-lease-renew-interval "0s"/));
  assert.deepEqual(nodeLeaseTiming(500, 1000), { renewMs: 500, durationMs: 1000 }, 'exactly half is enough');
});

test('NodeLeaseKeeper writes its timing into the lease, renews it, and reports the last renewal', async () => {
  await withStore(async (store) => {
    const keeper = new NodeLeaseKeeper({ store, node: 'n1', renewMs: 50, durationMs: 400, log });
    assert.equal(keeper.status()['last-renewed'], null);
    keeper.start();
    try {
      const first = await (async () => {
        await until('the first renewal', async () => (await store.get<NodeLeaseSpec>('NodeLease', 'n1')) !== undefined);
        return (await store.get<NodeLeaseSpec>('NodeLease', 'n1'))!;
      })();
      assert.equal(first.value.renewMs, 50);
      assert.equal(first.value.durationMs, 400);
      await until('a later renewal', async () => ((await store.get<NodeLeaseSpec>('NodeLease', 'n1'))?.revision ?? 0) > first.revision);
      await until('the status to show it', () => keeper.status()['last-renewed'] !== null);
      const st = keeper.status();
      assert.equal(st['renew-interval-ms'], 50);
      assert.equal(st['duration-ms'], 400);
      assert.equal(st.error, null);
    } finally {
      await keeper.stop();
    }
  });
});

test('NodeLiveness: --node-monitor-grace-period longer than a lease keeps the node alive for the grace period, never shorter than the lease', async () => {
  await withStore(async (store) => {
    const lease = (node: string, durationMs: number): NodeLeaseSpec => ({ node, renewMs: 20, durationMs, renewedAt: new Date().toISOString() });
    const live = new NodeLiveness(store, log, 800);
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
