// NodeLiveness over a real local store (unix socket in a temporary directory): a lease renewed stays alive, one left
// unrenewed for its duration expires (by this process's clock) and calls back, a renewal brings it back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LocalStoreClient, LocalStoreServer, type NodeLeaseSpec } from '../store/index.js';
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
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-liveness-'));
  const server = new LocalStoreServer({ dataDir: path.join(dir, 'data') });
  await server.listen({ socket: path.join(dir, 's.sock') });
  const store = new LocalStoreClient({ socket: path.join(dir, 's.sock') });
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
    await store.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
