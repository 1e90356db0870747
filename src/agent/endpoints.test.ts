// EndpointManager against the in-memory datapath (no privileges) and its state file in a temp dir: what it wires,
// refuses, undoes, saves and re-adopts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { EndpointManager, savedEndpoints, type Endpoint, type EndpointRequest } from './endpoints.js';
import { MemoryDatapath } from './testing.js';

const silent = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tdl-${process.pid}-endpoints-`));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let files = 0;
function setup(): { dp: MemoryDatapath; em: EndpointManager; file: string } {
  const dp = new MemoryDatapath();
  const file = path.join(dir, `endpoints-${++files}.json`);
  return { dp, em: new EndpointManager(dp, file, silent), file };
}

function pod(n: number, over: Partial<EndpointRequest> = {}): EndpointRequest {
  return {
    kind: 'pod',
    containerId: `c${n}`.padEnd(64, '0'),
    ifname: 'eth0',
    hostIfName: `lxc${n}`,
    hostIfindex: 100 + n,
    hostMac: '02:00:00:00:00:01',
    podMac: '02:00:00:00:00:02',
    ip: `172.20.0.${10 + n}`,
    netnsPath: `/var/run/netns/p${n}`,
    namespace: 'default',
    podName: `pod-${n}`,
    labels: { app: `a${n}` },
    namedPorts: [],
    securityLabels: [`k8s:app=a${n}`],
    identity: 20000 + n,
    ...over,
  };
}

function saved(file: string): Array<Pick<Endpoint, 'id' | 'ip'>> {
  return savedEndpoints(file).map((e) => ({ id: e.id, ip: e.ip }));
}

test('create() wires the endpoint, saves it and numbers endpoints from 1; lookups find it by ID, IP, container and reference', async () => {
  const { dp, em, file } = setup();
  const a = await em.create(pod(1));
  const b = await em.create(pod(2));
  assert.deepEqual([a.id, b.id, a.state], [1, 2, 'ready']);
  assert.deepEqual(dp.calls, ['add 1', 'add 2']);
  assert.equal(dp.endpoint(1)?.ep.ip, '172.20.0.11');
  assert.deepEqual(dp.ipcache.get('172.20.0.12/32'), { prefix: '172.20.0.12/32', identity: 20002, flags: 0 });
  assert.deepEqual(saved(file), [{ id: 1, ip: '172.20.0.11' }, { id: 2, ip: '172.20.0.12' }]);
  assert.equal(em.findByIp('172.20.0.12')?.id, 2);
  assert.equal(em.findByContainer(pod(1).containerId, 'eth0')?.id, 1);
  assert.equal(em.findByContainer(pod(1).containerId, 'net1'), undefined);
  for (const ref of ['2', `container-id:${pod(2).containerId}`, 'ipv4:172.20.0.12', 'pod-name:default/pod-2']) assert.equal(em.resolve(ref)?.id, 2, ref);
  for (const ref of ['9', 'ipv4:10.0.0.1', 'bogus', 'label:app=a2']) assert.equal(em.resolve(ref), undefined, ref);
  assert.deepEqual(em.list().map((e) => e.id), [1, 2]);
});

test('create() refuses a taken ID, address or container interface with TENDRIL_ERR_ENDPOINT_CONFLICT and wires nothing for it', async () => {
  const { dp, em, file } = setup();
  await em.create(pod(1));
  const conflict = { code: 'TENDRIL_ERR_ENDPOINT_CONFLICT' };
  await assert.rejects(em.create(pod(2, { id: 1 })), { ...conflict, message: 'Cannot create endpoint 1: the ID is in use' });
  await assert.rejects(em.create(pod(2, { ip: '172.20.0.11' })), { ...conflict, message: 'Cannot create endpoint for 172.20.0.11: endpoint 1 has that address' });
  await assert.rejects(em.create(pod(2, { containerId: pod(1).containerId })), {
    ...conflict,
    message: `Cannot create endpoint for container ${pod(1).containerId.slice(0, 12)} interface "eth0": endpoint 1 exists`,
  });
  assert.deepEqual(dp.calls, ['add 1']);
  assert.deepEqual(saved(file), [{ id: 1, ip: '172.20.0.11' }]);
  // Another interface of the same container is another endpoint.
  assert.equal((await em.create(pod(2, { containerId: pod(1).containerId, ifname: 'net1' }))).id, 2);
});

test('an address is claimed from the start of create(): a second create while the first attaches is refused', async () => {
  const { dp, em } = setup();
  let release!: () => void;
  dp.attachGate = new Promise((r) => (release = r));
  const first = em.create(pod(1));
  await assert.rejects(em.create(pod(2, { ip: '172.20.0.11' })), { code: 'TENDRIL_ERR_ENDPOINT_CONFLICT' });
  const other = em.create(pod(3));
  release();
  assert.deepEqual([(await first).id, (await other).id], [1, 2]);
});

test('a failed attach undoes the endpoint: unwired, not saved, its ID and address free again', async () => {
  const { dp, em, file } = setup();
  await em.create(pod(1));
  dp.failNextAttach = true;
  await assert.rejects(em.create(pod(2)), /Cannot attach program to "lxc2": injected failure/);
  assert.deepEqual(dp.calls, ['add 1', 'add 2', 'remove 2']);
  assert.equal(dp.endpoint(2), undefined);
  assert.equal(dp.ipcache.has('172.20.0.12/32'), false, 'the map entries the attach left are gone');
  assert.deepEqual(saved(file), [{ id: 1, ip: '172.20.0.11' }]);
  assert.equal(em.findByIp('172.20.0.12'), undefined);
  const again = await em.create(pod(2));
  assert.equal(again.id, 2);
});

test('delete() unwires and forgets; update() changes labels and identity and saves; unknown IDs are TENDRIL_ERR_ENDPOINT_NOT_FOUND', async () => {
  const { dp, em, file } = setup();
  await em.create(pod(1));
  await em.create(pod(2));
  const next = em.update(2, { labels: { app: 'z' }, securityLabels: ['k8s:app=z'], identity: 30000 });
  assert.equal(next.identity, 30000);
  assert.equal(em.get(2)?.identity, 30000);
  assert.equal(savedEndpoints(file)[1]!.identity, 30000);
  assert.equal(em.delete(1).ip, '172.20.0.11');
  assert.deepEqual(dp.calls.slice(-1), ['remove 1']);
  assert.equal(dp.endpoint(1), undefined);
  assert.equal(em.findByIp('172.20.0.11'), undefined);
  assert.deepEqual(saved(file), [{ id: 2, ip: '172.20.0.12' }]);
  assert.throws(() => em.delete(1), { code: 'TENDRIL_ERR_ENDPOINT_NOT_FOUND', message: 'Endpoint 1 not found' });
  assert.throws(() => em.update(7, { labels: {}, securityLabels: [], identity: 1 }), { code: 'TENDRIL_ERR_ENDPOINT_NOT_FOUND' });
  assert.equal((await em.create(pod(3))).id, 1, 'the lowest free ID is reused');
});

test('restore() re-adopts endpoints whose interface is still there, unwires and returns the rest, and saves the outcome', async () => {
  const { dp, em, file } = setup();
  for (const n of [1, 2, 3]) await em.create(pod(n));
  // An agent of an older version saved records without namedPorts.
  const records: Array<Partial<Endpoint>> = savedEndpoints(file);
  delete records[0]!.namedPorts;
  fs.writeFileSync(file, JSON.stringify(records));
  fs.rmSync(`${file}.journal`, { force: true });

  const dp2 = new MemoryDatapath();
  const em2 = new EndpointManager(dp2, file, silent);
  // lxc1 is there with its index, lxc2 was deleted, lxc3 is another interface now (same name, new index).
  const ifindex: Record<string, number> = { lxc1: 101, lxc3: 999 };
  const gone = em2.restore((name) => ifindex[name]);
  assert.deepEqual(gone.map((e) => e.id), [2, 3]);
  assert.deepEqual(dp2.calls, ['restore 1', 'remove 2', 'remove 3']);
  assert.deepEqual(em2.list().map((e) => [e.id, e.state, e.namedPorts]), [[1, 'ready', []]]);
  assert.equal(em2.findByIp('172.20.0.11')?.id, 1);
  assert.deepEqual(saved(file), [{ id: 1, ip: '172.20.0.11' }]);
  assert.equal((await em2.create(pod(4))).id, 2, 'IDs of dropped endpoints are free');
  assert.deepEqual(new EndpointManager(new MemoryDatapath(), path.join(dir, 'none.json'), silent).restore(() => 1), [], 'no state file: nothing to restore');
});
