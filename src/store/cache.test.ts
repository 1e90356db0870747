// Unit tests of KindCache on a real local store server in a temp dir (no root needed).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { KindCache, startInOrder } from './cache.js';
import { LocalStoreClient, LocalStoreServer, StoreError, type Kind, type Resource } from './index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-cache-`));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The real client, whose list() fails as an unreachable store's does while `failList` is set. */
class FailingList extends LocalStoreClient {
  failList = false;
  override async list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    if (this.failList) throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot list ${kind}: store unreachable (injected)`);
    return super.list<T>(kind);
  }
}

test('stop() clears the retry timer of a failed re-list', async (t) => {
  const dataDir = path.join(tmp, 'data');
  const socket = path.join(tmp, 'store.sock');
  let server = new LocalStoreServer({ dataDir, keepaliveMs: 200 });
  await server.listen({ socket });
  const client = new FailingList({ socket }, { maxBackoffMs: 100 });
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void warnings.push((JSON.parse(s) as { msg: string }).msg) });
  const cache = new KindCache<unknown>(client, 'Node', log);
  const retries = t.mock.method(KindCache.prototype as unknown as { retryRelist(): void }, 'retryRelist');
  try {
    await client.put('Node', 'a', {});
    await cache.start({ change: () => undefined });
    assert.deepEqual(cache.entries(), [['a', {}]]);
    // The store is replaced under the watch (a wiped data dir): the watch loses its place and the re-list fails.
    client.failList = true;
    await server.close();
    fs.rmSync(dataDir, { recursive: true });
    server = new LocalStoreServer({ dataDir, keepaliveMs: 200 });
    await server.listen({ socket });
    await until('a failed re-list', () => warnings.includes('re-list failed; retrying'));
    const before = retries.mock.callCount();
    cache.stop();
    // Timers fire in order of expiry: once this one (armed later, for longer) has fired, the retry's would have.
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(retries.mock.callCount(), before, 'no re-list retry after stop()');
  } finally {
    cache.stop();
    await client.close();
    await server.close();
  }
});

test('startInOrder() starts caches in order, retries from the first not listed while the store fails, and stop() ends the retries', async () => {
  const calls: string[] = [];
  let failuresLeft = 2;
  const cache = (name: string, failing = false) => {
    const c = {
      ready: false,
      async start(): Promise<void> {
        calls.push(name);
        if (failing && failuresLeft-- > 0) throw new Error(`cannot list ${name}`);
        c.ready = true;
      },
    };
    return c;
  };
  const errors: string[] = [];
  let ready = 0;
  const noop = { change: () => {}, resync: () => {} };
  await new Promise<void>((resolve) => {
    startInOrder([cache('a'), cache('b', true), cache('c')], {
      events: noop,
      retryMs: 5,
      ready: () => {
        ready++;
        resolve();
      },
      failed: (err) => errors.push(err.message),
    });
  });
  assert.deepEqual(calls, ['a', 'b', 'b', 'b', 'c'], 'a retry resumes at the cache that failed, never lists one twice');
  assert.deepEqual(errors, ['cannot list b', 'cannot list b']);
  assert.equal(ready, 1);

  // Stopped while failing: no attempt after stop(), ready never called.
  const never = { ready: false, start: async (): Promise<void> => { calls.push('x'); throw new Error('down'); } };
  calls.length = 0;
  const h = startInOrder([never], { events: noop, retryMs: 5, ready: () => assert.fail('not ready'), failed: () => {} });
  await new Promise((r) => setTimeout(r, 30));
  h.stop();
  const n = calls.length;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(calls.length, n, 'no attempt after stop()');
  assert.ok(n >= 1);
});
