// Unit tests of the store guard against a real local store server, stopped and restarted, and a server that accepts
// connections but never answers (a frozen process): calls are bounded, fail fast once the store is known away (after
// a short re-check), ping() never waits, and the guard notices the store's return by itself or on the next call.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { GuardedStore } from './guard.js';
import { LocalStoreServer, StoreError, openStore } from './index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-guard-`));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const unavailable = (err: unknown): boolean => {
  assert.ok(err instanceof StoreError, String(err));
  assert.equal(err.code, 'TENDRIL_ERR_STORE_UNAVAILABLE');
  return true;
};

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; err?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await p;
    return { ms: performance.now() - t0, value };
  } catch (err) {
    return { ms: performance.now() - t0, err };
  }
}

test('a stopped store fails calls fast once noticed, ping() answers from the last probe, and its return is noticed', async () => {
  const socket = path.join(tmp, 'store.sock');
  const dataDir = path.join(tmp, 'data');
  let server = new LocalStoreServer({ dataDir });
  await server.listen({ socket });
  const changes: boolean[] = [];
  const g = new GuardedStore(openStore(`local+unix://${socket}`, { connectTimeoutMs: 300, requestTimeoutMs: 1000 }), {
    callTimeoutMs: 500,
    probeUpMs: 100,
    probeDownMs: 20,
    recheckMs: 500,
    onChange: (up) => changes.push(up),
  });
  try {
    g.start();
    await g.put('Node', 'a', { name: 'a', addresses: [], podCIDRs: [] });
    await until('the first probe', () => g.health().ok === true);
    await server.close();
    // The first call finds out (bounded by the client's connect retries), the next ones after a short re-check.
    const first = await timed(g.get('Node', 'a'));
    assert.ok(unavailable(first.err));
    assert.ok(first.ms < 1000, `first call took ${first.ms} ms`);
    const second = await timed(g.put('Node', 'b', { name: 'b', addresses: [], podCIDRs: [] }));
    assert.ok(unavailable(second.err));
    assert.ok(second.ms < 1000, `a call to a store known away took ${second.ms} ms`);
    assert.match((second.err as Error).message, /^Cannot put Node "b": cluster store local \(unix:.*\) unavailable since .*; try again later$/);
    const ping = await timed(g.ping());
    assert.equal(ping.value?.ok, false);
    assert.ok(ping.ms < 20);
    assert.equal(g.health().ok, false);
    assert.deepEqual(changes, [false]);

    server = new LocalStoreServer({ dataDir });
    await server.listen({ socket });
    // The next call re-checks and goes through: no wait for the probe's period.
    assert.equal((await g.get<{ name: string }>('Node', 'a'))?.value.name, 'a', 'the data survived');
    assert.equal(g.health().ok, true);
    assert.deepEqual(changes, [false, true]);
  } finally {
    await g.close();
    await server.close();
  }
});

test('a store that accepts but never answers (frozen) fails calls within the call timeout, and a coded refusal is no outage', async () => {
  const socket = path.join(tmp, 'frozen.sock');
  const held: net.Socket[] = [];
  const frozen = net.createServer((c) => held.push(c));
  await new Promise<void>((r) => frozen.listen(socket, r));
  const g = new GuardedStore(openStore(`local+unix://${socket}`, { connectTimeoutMs: 300, requestTimeoutMs: 5000 }), { callTimeoutMs: 300, probeDownMs: 50, recheckMs: 100 });
  try {
    const r = await timed(g.list('Identity'));
    assert.ok(unavailable(r.err));
    assert.match((r.err as Error).message, /did not answer within 300 ms/);
    assert.ok(r.ms >= 290 && r.ms < 1000, `took ${r.ms} ms`);
    assert.equal(g.up, false);
    const again = await timed(g.list('Identity'));
    assert.ok(unavailable(again.err));
    assert.ok(again.ms < 400, `a call to a frozen store known away took ${again.ms} ms`);
  } finally {
    await g.close();
    for (const c of held) c.destroy();
    await new Promise<void>((r) => frozen.close(() => r()));
  }

  const dataDir = path.join(tmp, 'data2');
  const sock2 = path.join(tmp, 'store2.sock');
  const server = new LocalStoreServer({ dataDir });
  await server.listen({ socket: sock2 });
  const g2 = new GuardedStore(openStore(`local+unix://${sock2}`));
  try {
    await g2.put('Node', 'a', { name: 'a', addresses: [], podCIDRs: [] }, { expectedRevision: 0 });
    await assert.rejects(g2.put('Node', 'a', { name: 'a', addresses: [], podCIDRs: [] }, { expectedRevision: 0 }), (err: unknown) => {
      assert.equal((err as StoreError).code, 'TENDRIL_ERR_STORE_CONFLICT');
      return true;
    });
    assert.equal(g2.health().ok, true, 'a conflict is an answer');
  } finally {
    await g2.close();
    await server.close();
  }
});
