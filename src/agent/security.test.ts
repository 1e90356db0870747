// SecurityManager against a real local store (unprivileged: a unix socket in a temp dir), a real EndpointManager and
// the in-memory datapath: identities, policy entries and enforcement, the ipcache of other nodes' pods and of
// policy CIDRs, and what survives a restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LocalStoreServer, openStore, type EndpointSpec, type Store } from '../store/index.js';
import { EndpointManager, type Endpoint } from './endpoints.js';
import { IDENTITY_LOCAL_MIN, IDENTITY_MAX, IDENTITY_MIN } from './identity.js';
import { SecurityManager, endpointResourceName } from './security.js';
import { MemoryDatapath } from './testing.js';

const silent = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tdl-${process.pid}-security-`));
const server = new LocalStoreServer({ dataDir: path.join(dir, 'data'), keepaliveMs: 200 });
await server.listen({ socket: path.join(dir, 'store.sock') });
const stores: Store[] = [];
const managers: SecurityManager[] = [];
after(async () => {
  for (const m of managers) m.stop();
  for (const s of stores) await s.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function store(): Store {
  const s = openStore(server.url);
  stores.push(s);
  return s;
}

interface Node {
  sm: SecurityManager;
  dp: MemoryDatapath;
  endpoints: EndpointManager;
  stateDir: string;
}

/** A node's security manager as the agent wires it: started on the store, attached to datapath and endpoints. */
function node(name: string, o: { stateDir?: string; dp?: MemoryDatapath; withStore?: boolean } = {}): Node {
  const stateDir = o.stateDir ?? fs.mkdtempSync(path.join(dir, `${name}-`));
  const sm = new SecurityManager({ nodeName: name, nodeIP: '10.0.0.1', store: o.withStore === false ? undefined : store(), stateDir, mode: 'default', log: silent });
  managers.push(sm);
  sm.start();
  const dp = o.dp ?? new MemoryDatapath();
  const endpoints = new EndpointManager(dp, path.join(stateDir, 'endpoints.json'), silent);
  // After a restart the veths of the last run are still there: the ones the datapath has wired.
  endpoints.restore((ifname) => [...dp.wired.values()].find((w) => w.ep.hostIfName === ifname)?.ep.hostIfindex);
  sm.attach(dp, endpoints);
  return { sm, dp, endpoints, stateDir };
}

let nextIf = 1;
/** A pod created as the agent's CNI path does: identity, endpoint (wired), then the security manager told. */
async function addPod(n: Node, podName: string, labels: Record<string, string>, ip: string): Promise<Endpoint> {
  const { securityLabels, identity } = await n.sm.podIdentity('default', labels);
  const i = nextIf++;
  const ep = await n.endpoints.create({
    kind: 'pod',
    containerId: `${podName}-container`,
    ifname: 'eth0',
    hostIfName: `lxc${i}`,
    hostIfindex: 200 + i,
    hostMac: '02:00:00:00:00:01',
    podMac: '02:00:00:00:00:02',
    ip,
    netnsPath: `/var/run/netns/${podName}`,
    namespace: 'default',
    podName,
    labels,
    namedPorts: [],
    securityLabels,
    identity,
  });
  n.sm.endpointCreated(ep);
  return ep;
}

async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + 30_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const WEB_FROM_CLIENT = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: 'web-from-client', namespace: 'default' },
  spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }] },
};

test('a pod gets its identity from the store and is published there; a cluster policy from the store is enforced on it and lifted when deleted', async () => {
  const n = node('sec1');
  const web = await addPod(n, 'web', { app: 'web' }, '172.20.0.10');
  const client = await addPod(n, 'client', { app: 'client' }, '172.20.0.11');
  assert.ok(web.identity >= IDENTITY_MIN && web.identity <= IDENTITY_MAX);
  assert.notEqual(web.identity, client.identity);
  assert.deepEqual(web.securityLabels, ['k8s:app=web', 'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default', 'k8s:io.kubernetes.pod.namespace=default']);
  assert.equal((await n.sm.podIdentity('default', { app: 'web' })).identity, web.identity, 'the same labels, the same identity');

  const s = store();
  await until('the endpoint record in the store', async () => (await s.get<EndpointSpec>('Endpoint', endpointResourceName('sec1', web.id)))?.value.identity === web.identity);
  assert.deepEqual((await s.get<EndpointSpec>('Endpoint', endpointResourceName('sec1', web.id)))?.value, {
    node: 'sec1',
    id: web.id,
    namespace: 'default',
    pod: 'web',
    ip: '172.20.0.10',
    nodeIP: '10.0.0.1',
    identity: web.identity,
    namedPorts: [],
  });
  await until('both endpoints compiled', () => n.dp.calls.filter((c) => c.startsWith('policy ')).length >= 2);
  assert.equal(n.dp.endpoint(web.id)?.ingressEnforced, false, 'no policy selects it yet');

  await s.put('Policy', 'NetworkPolicy.default.web-from-client', { document: WEB_FROM_CLIENT });
  await until('ingress enforced on web', () => n.dp.endpoint(web.id)?.ingressEnforced === true);
  const entries = n.dp.endpoint(web.id)!.entries;
  assert.ok(entries.some((e) => e.direction === 'ingress' && e.identity === client.identity && !e.deny), JSON.stringify(entries));
  assert.ok(!entries.some((e) => e.identity === web.identity), 'web is not allowed to itself');
  assert.equal(n.dp.endpoint(web.id)?.egressEnforced, false);
  assert.equal(n.dp.endpoint(client.id)?.ingressEnforced, false, 'the client is not selected');
  assert.deepEqual(n.sm.listPolicies().map((p) => [p.key, p.source]), [['NetworkPolicy/default/web-from-client', 'cluster']]);

  await s.delete('Policy', 'NetworkPolicy.default.web-from-client');
  await until('ingress lifted', () => n.dp.endpoint(web.id)?.ingressEnforced === false);
  assert.deepEqual(n.dp.endpoint(web.id)?.entries, []);

  n.endpoints.delete(web.id);
  n.sm.endpointDeleted(web);
  await until('the record removed from the store', async () => (await s.get('Endpoint', endpointResourceName('sec1', web.id))) === undefined);
});

test("other nodes' pods reach the ipcache with their node as tunnel endpoint, and leave it with their record; a local pod's address is never shadowed", async () => {
  const n = node('sec2');
  const mine = await addPod(n, 'mine', { app: 'mine' }, '172.20.0.20');
  const s = store();
  const remote: EndpointSpec = { node: 'other', id: 5, namespace: 'default', pod: 'far', ip: '172.20.9.5', nodeIP: '10.0.0.2', identity: mine.identity, namedPorts: [] };
  await s.put('Endpoint', 'other:5', remote);
  await until('the remote pod in the ipcache', () => n.dp.ipcache.has('172.20.9.5/32'));
  assert.deepEqual(n.dp.ipcache.get('172.20.9.5/32'), { prefix: '172.20.9.5/32', identity: mine.identity, tunnelEndpoint: '10.0.0.2', flags: 1 });
  assert.deepEqual(n.sm.remoteEndpoint('172.20.9.5'), remote);
  assert.equal(n.sm.ipSource('172.20.9.5/32', mine.identity), 'cluster-endpoint');
  assert.equal(n.sm.ipSource('172.20.0.20/32', mine.identity), 'local-endpoint');

  // A stale record of another node naming this node's pod address (a pod that moved here).
  await s.put('Endpoint', 'other:6', { ...remote, id: 6, ip: '172.20.0.20', pod: 'moved' });
  await s.put('Endpoint', 'other:7', { ...remote, id: 7, ip: '172.20.9.7' });
  await until('the later record applied', () => n.dp.ipcache.has('172.20.9.7/32'));
  assert.deepEqual(n.dp.ipcache.get('172.20.0.20/32'), { prefix: '172.20.0.20/32', identity: mine.identity, flags: 0 }, 'the local endpoint keeps its entry');

  await s.delete('Endpoint', 'other:5');
  await until('the remote pod gone from the ipcache', () => !n.dp.ipcache.has('172.20.9.5/32'));
  assert.equal(n.sm.remoteEndpoint('172.20.9.5'), undefined);
  await s.delete('Endpoint', 'other:6');
  await s.delete('Endpoint', 'other:7');
  await until('the last record gone', () => !n.dp.ipcache.has('172.20.9.7/32'));
  assert.ok(n.dp.ipcache.has('172.20.0.20/32'), 'deleting the stale record leaves the local entry');
});

const TO_DOCS = `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata:
  name: to-docs
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: cidr
  egress:
  - toCIDR:
    - 192.0.2.0/24
`;

test('a CIDR in an imported policy gets a node-local identity in the ipcache, kept across a restart and removed with the policy', async () => {
  const n = node('sec3');
  const ep = await addPod(n, 'cidr', { app: 'cidr' }, '172.20.0.30');
  // A CIDR numbered before, and gone: 192.0.2.0/24 is not the first number, which a fresh count would give it.
  n.sm.importPolicies(TO_DOCS.replace('to-docs', 'earlier').replace('192.0.2.0/24', '198.51.100.0/24'), 'earlier.yaml');
  const r = n.sm.importPolicies(TO_DOCS, 'to-docs.yaml');
  n.sm.deletePolicy('earlier');
  assert.equal(n.dp.ipcache.has('198.51.100.0/24'), false);
  assert.deepEqual(r.imported, ['TendrilNetworkPolicy/default/to-docs']);
  assert.equal(r.regeneration.endpoints, 1, 'enforced before importPolicies() returns');
  const cidr = n.dp.ipcache.get('192.0.2.0/24');
  assert.equal(cidr?.identity, IDENTITY_LOCAL_MIN + 1, JSON.stringify(cidr));
  assert.deepEqual(n.sm.labelsOf(cidr.identity), ['reserved:world', 'cidr:192.0.2.0/24']);
  assert.equal(n.sm.ipSource('192.0.2.0/24', cidr.identity), 'policy-cidr');
  const wired = n.dp.endpoint(ep.id)!;
  assert.equal(wired.egressEnforced, true);
  assert.ok(wired.entries.some((e) => e.direction === 'egress' && e.identity === cidr.identity), JSON.stringify(wired.entries));

  // A restart: the same state dir (saved local policies, endpoints) and the maps as the last run left them.
  n.sm.stop();
  const again = node('sec3', { stateDir: n.stateDir, dp: n.dp });
  assert.deepEqual(again.sm.listPolicies().map((p) => [p.key, p.source]), [['TendrilNetworkPolicy/default/to-docs', 'local']]);
  await until('the policy compiled again', () => again.sm.endpointPolicy(ep.id) !== undefined);
  assert.equal(again.dp.ipcache.get('192.0.2.0/24')?.identity, cidr.identity, 'the CIDR keeps its number: pinned entries refer to it');

  assert.deepEqual(again.sm.deletePolicy('to-docs'), { deleted: ['TendrilNetworkPolicy/default/to-docs'] });
  assert.equal(again.dp.ipcache.has('192.0.2.0/24'), false);
  assert.equal(again.dp.endpoint(ep.id)?.egressEnforced, false);
});

test('relabel() gives the endpoint the identity of its new labels, rewrites it in the datapath and recompiles who selects it', async () => {
  const n = node('sec4');
  const client = await addPod(n, 'client', { app: 'client' }, '172.20.0.41');
  const ep = await addPod(n, 'x', { app: 'other' }, '172.20.0.40');
  n.sm.importPolicies(JSON.stringify(WEB_FROM_CLIENT), 'web.json');
  assert.equal(n.dp.endpoint(ep.id)?.ingressEnforced, false);
  const next = await n.sm.relabel(ep, { app: 'web' });
  assert.notEqual(next.identity, ep.identity);
  assert.equal(n.endpoints.get(ep.id)?.identity, next.identity);
  assert.ok(n.dp.calls.includes(`update ${ep.id}`));
  assert.equal(n.dp.endpoint(ep.id)?.ep.identity, next.identity);
  assert.equal(n.dp.ipcache.get('172.20.0.40/32')?.identity, next.identity);
  await until('the policy now selects it', () => n.dp.endpoint(ep.id)?.ingressEnforced === true);
  assert.ok(n.dp.endpoint(ep.id)!.entries.some((e) => e.identity === client.identity));
});

test('policy import and delete: bad input is TENDRIL_ERR_POLICY_INVALID and changes nothing; unknown or cluster names are TENDRIL_ERR_POLICY_NOT_FOUND', async () => {
  const n = node('sec5', { withStore: false });
  await addPod(n, 'a', { app: 'a' }, '172.20.0.50');
  n.sm.importPolicies(TO_DOCS, 'to-docs.yaml');
  const broken = `${TO_DOCS}---\n${TO_DOCS.replace('to-docs', 'second').replace('192.0.2.0/24', '300.0.0.0/8')}`;
  assert.throws(() => n.sm.importPolicies(broken, 'broken.yaml'), { code: 'TENDRIL_ERR_POLICY_INVALID', message: /300\.0\.0\.0\/8/ });
  assert.throws(() => n.sm.importPolicies('# nothing\n', 'empty.yaml'), { code: 'TENDRIL_ERR_POLICY_INVALID', message: /^No policy in empty\.yaml/ });
  assert.deepEqual(n.sm.listPolicies().map((p) => p.name), ['to-docs'], 'all or nothing: the valid first document was not imported either');
  assert.throws(() => n.sm.deletePolicy('nope'), { code: 'TENDRIL_ERR_POLICY_NOT_FOUND' });
  assert.deepEqual(n.sm.deletePolicy('default/to-docs'), { deleted: ['TendrilNetworkPolicy/default/to-docs'] });
});
