// Identity allocation through a real local store (unprivileged: a unix socket in a temp dir), and the operator's
// identity garbage collection against it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LocalStoreServer, openStore, type EndpointSpec, type IdentitySpec, type Store } from '../store/index.js';
import { IdentityGc } from '../operator/identity-gc.js';
import { IDENTITY_MAX, IDENTITY_MIN, IdentityAllocator, securityLabels } from './identity.js';

const silent = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-identity-'));
const server = new LocalStoreServer({ dataDir: path.join(dir, 'data'), keepaliveMs: 200 });
await server.listen({ socket: path.join(dir, 'store.sock') });
const stores: Store[] = [];
function client(): Store {
  const s = openStore(server.url);
  stores.push(s);
  return s;
}
after(async () => {
  for (const s of stores) await s.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function allocator(): Promise<IdentityAllocator> {
  const a = new IdentityAllocator(client(), silent);
  await a.start({ change: () => {}, resync: () => {} });
  return a;
}

test('securityLabels: pod labels, namespace and namespace labels, sorted and source-prefixed', () => {
  assert.deepEqual(securityLabels('x', { pod: 'a', app: 'web' }, { team: 'blue', 'kubernetes.io/metadata.name': 'x' }), [
    'k8s:app=web',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x',
    'k8s:io.cilium.k8s.namespace.labels.team=blue',
    'k8s:io.kubernetes.pod.namespace=x',
    'k8s:pod=a',
  ]);
});

test('securityLabels: the service account is a label of its own that the pod cannot set through its labels', () => {
  assert.deepEqual(securityLabels('x', { app: 'web', 'io.cilium.k8s.policy.serviceaccount': 'admin' }, {}, 'builder'), [
    'k8s:app=web',
    'k8s:io.cilium.k8s.policy.serviceaccount=builder',
    'k8s:io.kubernetes.pod.namespace=x',
  ]);
});

test('two nodes racing for the same new label set get one identity; other sets get other numbers', async () => {
  const [a, b] = [await allocator(), await allocator()];
  const labels = securityLabels('race', { app: 'web' });
  const ids = await Promise.all([a.allocate(labels), b.allocate(labels), a.allocate([...labels].reverse()), b.allocate(labels)]);
  assert.equal(new Set(ids).size, 1, `one number for one label set, got ${ids.join(',')}`);
  const id = ids[0]!;
  assert.ok(id >= IDENTITY_MIN && id <= IDENTITY_MAX);
  const stored = await client().get<IdentitySpec>('Identity', String(id));
  assert.deepEqual(stored?.value.labels, [...labels].sort());

  const many = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).allocate(securityLabels('many', { pod: `p${i}` }))));
  assert.equal(new Set(many).size, 40, 'distinct label sets never share a number');
  assert.ok(!many.includes(id));
  a.stop();
  b.stop();
});

test('a number already taken by other labels is skipped (probing), and ensure() refuses to take it over', async () => {
  const a = await allocator();
  const labels = securityLabels('probe', { app: 'x' });
  const first = await a.allocate(labels);
  // Steal the number: delete it and give it to other labels, then ask again from a fresh allocator.
  const s = client();
  await s.delete('Identity', String(first));
  await s.put<IdentitySpec>('Identity', String(first), { labels: ['k8s:other=1'] });
  const b = await allocator();
  const second = await b.allocate(labels);
  assert.notEqual(second, first);
  assert.equal(await b.ensure(first, labels), false, 'ensure() must not re-bind a number owned by other labels');
  assert.equal(await b.ensure(second, labels), true);
  a.stop();
  b.stop();
});

test('ensure() re-creates an identity collected while still in use', async () => {
  const a = await allocator();
  const labels = securityLabels('gc', { app: 'y' });
  const id = await a.allocate(labels);
  await client().delete('Identity', String(id));
  // ensure() trusts the watched copy; the agent calls it again when the deletion arrives (identityChanged).
  await waitFor(async () => a.labels(id) === undefined);
  assert.equal(await a.ensure(id, labels), true);
  assert.deepEqual((await client().get<IdentitySpec>('Identity', String(id)))?.value.labels, [...labels].sort());
  a.stop();
});

test('without a store, identities are allocated in memory and forgotten once unused', async () => {
  const a = new IdentityAllocator(undefined, silent);
  const x = await a.allocate(['k8s:a=1']);
  const y = await a.allocate(['k8s:a=2']);
  assert.notEqual(x, y);
  assert.equal(await a.allocate(['k8s:a=1']), x);
  a.releaseLocal(new Set([y]));
  assert.equal(a.labels(x), undefined);
  assert.deepEqual(a.labels(y), ['k8s:a=2']);
});

test('operator GC deletes an identity only after it has been unused for the grace period, and endpoints of departed nodes', async () => {
  const s = client();
  await s.put('Node', 'gc-node', { name: 'gc-node', addresses: ['192.0.2.1'], podCIDRs: [] });
  await s.put<IdentitySpec>('Identity', '60001', { labels: ['k8s:gc=used'] });
  await s.put<IdentitySpec>('Identity', '60002', { labels: ['k8s:gc=unused'] });
  const ep: EndpointSpec = { node: 'gc-node', id: 7, namespace: 'default', pod: 'p', ip: '10.9.0.7', nodeIP: '192.0.2.1', identity: 60001, namedPorts: [] };
  await s.put<EndpointSpec>('Endpoint', 'gc-node:7', ep);
  await s.put<EndpointSpec>('Endpoint', 'gone-node:3', { ...ep, node: 'gone-node', id: 3, identity: 60002 });

  const gc = new IdentityGc({ store: client(), log: silent, intervalMs: 3_600_000, graceMs: 1000 });
  await gc.start();
  await waitFor(async () => gc.status().identities >= 2);
  const t0 = Date.now();
  await gc.pass(t0);
  // The departed node's endpoint went first; 60002 is now unused but only just.
  assert.equal(await s.get('Endpoint', 'gone-node:3'), undefined);
  await new Promise((r) => setTimeout(r, 50));
  await gc.pass(t0 + 10);
  assert.ok(await s.get('Identity', '60002'), 'still within its grace period');
  await gc.pass(t0 + 1500);
  assert.equal(await s.get('Identity', '60002'), undefined, 'unused past the grace: deleted');
  assert.ok(await s.get('Identity', '60001'), 'in use: kept');
  assert.ok(gc.status().deleted >= 1);
  await gc.stop();
});

async function waitFor(cond: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('securityLabels: a pod cannot claim another namespace through its own labels', () => {
  const sec = securityLabels('zzz', {
    app: 'x',
    'io.kubernetes.pod.namespace': 'prod',
    'io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name': 'prod',
    'io.cilium.k8s.policy.serviceaccount': 'admin',
  });
  assert.deepEqual(sec, ['k8s:app=x', 'k8s:io.kubernetes.pod.namespace=zzz']);
});

test('the first endpoint of a label set touches its identity: a collection decided before that fails', async () => {
  const a = await allocator();
  const labels = securityLabels('touch', { app: 'z' });
  const id = await a.allocate(labels);
  const s = client();
  const judged = (await s.get<IdentitySpec>('Identity', String(id)))!.revision;
  await waitFor(async () => a.labels(id) !== undefined);
  // The operator judged it unused at `judged`; the agent reuses it for a new first endpoint meanwhile.
  assert.equal(await a.allocate(labels, { touch: true }), id);
  await assert.rejects(s.delete('Identity', String(id), { expectedRevision: judged }), /conflict|revision/i, 'the stale collection fails');
  assert.ok(await s.get('Identity', String(id)));
  // Collected first: the touch finds it gone and creates it again under the same number.
  const now = (await s.get<IdentitySpec>('Identity', String(id)))!.revision;
  await waitFor(async () => (a as unknown as { cache: { revisionOf(n: string): number | undefined } }).cache.revisionOf(String(id)) === now);
  await s.delete('Identity', String(id));
  assert.equal(await a.allocate(labels, { touch: true }), id);
  assert.deepEqual((await s.get<IdentitySpec>('Identity', String(id)))?.value.labels, [...labels].sort());
  a.stop();
});

test('concurrent allocations of one label set on a node share one store write (pods of a Deployment starting at once)', async () => {
  const s = client();
  let puts = 0;
  const put = s.put.bind(s);
  s.put = ((...args: Parameters<Store['put']>) => (puts++, put(...args))) as Store['put'];
  const a = new IdentityAllocator(s, silent);
  await a.start({ change: () => {}, resync: () => {} });
  const labels = securityLabels('flight', { app: 'burst' });
  const ids = await Promise.all(Array.from({ length: 20 }, () => a.allocate(labels, { touch: true })));
  assert.equal(new Set(ids).size, 1);
  assert.equal(puts, 1, `one create for 20 concurrent ADDs, got ${puts} writes`);
  // Once it is done, the next first endpoint touches again (its own write).
  await waitFor(async () => a.labels(ids[0]!) !== undefined);
  assert.equal(await a.allocate(labels, { touch: true }), ids[0]);
  assert.equal(puts, 2);
  a.stop();
});
