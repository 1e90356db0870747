// Unit tests of the store's public entry: --store URL parsing and the backend openStore() picks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdStore, LocalStoreClient, StoreError, isKind, openStore, parseStoreUrl } from './index.js';

test('parseStoreUrl() accepts the three forms', () => {
  assert.deepEqual(parseStoreUrl('local+unix:///run/tendril/store.sock'), { backend: 'local', socket: '/run/tendril/store.sock' });
  assert.deepEqual(parseStoreUrl('local://127.0.0.1:4240'), { backend: 'local', host: '127.0.0.1', port: 4240 });
  assert.deepEqual(parseStoreUrl('etcd://etcd-0.example:2379'), { backend: 'etcd', endpoints: [{ host: 'etcd-0.example', port: 2379 }] });
  assert.deepEqual(parseStoreUrl('etcd://[::1]:2379'), { backend: 'etcd', endpoints: [{ host: '::1', port: 2379 }] });
});

test('parseStoreUrl() takes the members of an etcd cluster, comma-separated, in order', () => {
  const three = [{ host: '10.0.0.1', port: 2379 }, { host: '10.0.0.2', port: 22379 }, { host: 'e3', port: 2379 }];
  assert.deepEqual(parseStoreUrl('etcd+http://10.0.0.1:2379,http://10.0.0.2:22379,http://e3:2379'), { backend: 'etcd', endpoints: three });
  assert.deepEqual(parseStoreUrl('etcd://10.0.0.1:2379,10.0.0.2:22379,e3:2379/'), { backend: 'etcd', endpoints: three });
  assert.deepEqual(parseStoreUrl('etcd+http://10.0.0.1:2379,10.0.0.2:22379,http://e3:2379'), { backend: 'etcd', endpoints: three });
  assert.deepEqual(parseStoreUrl('etcd+http://[::1]:2379'), { backend: 'etcd', endpoints: [{ host: '::1', port: 2379 }] });
});

test('parseStoreUrl() says which etcd member is wrong', () => {
  const cases: [string, RegExp][] = [
    ['etcd://a:1,', /member 2: expected HOST:PORT;/],
    ['etcd+http://a:1,http://b', /member 2: expected HOST:PORT, not "b";/],
    ['etcd://a:1,b:99999', /member 2: port 99999 out of range;/],
    ['etcd://a:1,b:2,a:1', /member a:1 is listed twice;/],
    ['etcd+https://a:1', /TLS to etcd is not supported;/],
    ['etcd+http://a:1,https://b:2', /member 2: TLS to etcd is not supported;/],
  ];
  for (const [url, why] of cases) {
    assert.throws(() => parseStoreUrl(url), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'TENDRIL_ERR_STORE_INVALID');
      assert.match(err.message, why);
      assert.match(err.message, /expected .*"etcd\+http:\/\/HOST:PORT\[,http:\/\/HOST:PORT…\]"$/);
      return true;
    }, url);
  }
});

test('parseStoreUrl() refuses anything else with TENDRIL_ERR_STORE_INVALID and says what is expected', () => {
  for (const bad of ['', '/run/x.sock', 'http://h:1', 'etcd://h', 'etcd://h:0', 'etcd://h:70000', 'local+unix://relative.sock', 'etcd://h:1/x', 'etcd://a b:1']) {
    assert.throws(() => parseStoreUrl(bad), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'TENDRIL_ERR_STORE_INVALID');
      assert.match(err.message, /^Invalid store URL ".*": .*; expected "local\+unix:/);
      return true;
    }, bad);
  }
});

test('openStore() picks the backend from the scheme and connects lazily', async () => {
  const a = openStore('local+unix:///nonexistent/store.sock');
  const b = openStore('local://127.0.0.1:1');
  const c = openStore('etcd://127.0.0.1:1');
  const d = openStore('etcd+http://127.0.0.1:1,http://127.0.0.1:2');
  assert.ok(a instanceof LocalStoreClient && b instanceof LocalStoreClient && c instanceof EtcdStore && d instanceof EtcdStore);
  assert.equal(a.description, 'local (unix:/nonexistent/store.sock)');
  assert.equal(c.description, 'etcd (127.0.0.1:1)');
  assert.equal(d.description, 'etcd (127.0.0.1:1, 127.0.0.1:2; using 127.0.0.1:1)');
  await Promise.all([a.close(), b.close(), c.close(), d.close()]);
});

// The test's timeout is the deadline: failing at all, rather than retrying forever, is what is asserted.
test('an unreachable store fails operations with TENDRIL_ERR_STORE_UNAVAILABLE after connectTimeoutMs', { timeout: 20_000 }, async (t) => {
  const s = openStore('local+unix:///nonexistent/store.sock', { connectTimeoutMs: 100 });
  const t0 = Date.now();
  await assert.rejects(s.get('Node', 'a'), (err: unknown) => {
    assert.ok(err instanceof StoreError);
    assert.equal(err.code, 'TENDRIL_ERR_STORE_UNAVAILABLE');
    assert.match(err.message, /^Cannot reach local store at unix:\/nonexistent\/store.sock: .*ENOENT/);
    return true;
  });
  t.diagnostic(`failed after ${Date.now() - t0} ms (connectTimeoutMs 100)`);
  assert.deepEqual(Object.keys(await s.ping()).sort(), ['error', 'ok']);
  await s.close();
});

test('an etcd client tries every member before it gives up, and says so', async () => {
  const s = openStore('etcd+http://127.0.0.1:1,http://127.0.0.1:2', { connectTimeoutMs: 100 });
  await assert.rejects(s.put('Node', 'a', {}), (err: unknown) => {
    assert.ok(err instanceof StoreError);
    assert.equal(err.code, 'TENDRIL_ERR_STORE_UNAVAILABLE');
    assert.match(err.message, /^Cannot reach etcd at any of 127\.0\.0\.1:1, 127\.0\.0\.1:2: .*ECONNREFUSED/);
    return true;
  });
  assert.equal((await s.ping()).ok, false);
  await s.close();
});

test('isKind() knows exactly the declared kinds', () => {
  assert.equal(isKind('Node'), true);
  assert.equal(isKind('IPAMState'), true);
  assert.equal(isKind('Identity'), true);
  assert.equal(isKind('Policy'), true);
  assert.equal(isKind('node'), false);
  assert.equal(isKind('Pod'), false);
});
