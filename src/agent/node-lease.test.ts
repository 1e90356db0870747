// The node lease's timing flags (--node-lease-renew-interval, --node-lease-duration) and the keeper over a real local
// store (unix socket in a temporary directory): what it writes carries the timing, its status says when it last
// renewed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { withLocalStore, type LocalStoreClient, type NodeLeaseSpec } from '../store/index.js';
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

const withStore = (fn: (store: LocalStoreClient) => Promise<void>): Promise<void> => withLocalStore('lease', fn);

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
