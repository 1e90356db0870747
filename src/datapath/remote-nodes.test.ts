// Unit tests of the remote-node plan (ipcache entries and routes per routing mode) and the datapath state file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';

import { DatapathError } from './errors.js';
import { IPCACHE_F_HAS_TUNNEL_EP } from './maps.js';
import {
  type PlanContext,
  type RemoteNode,
  emptyState,
  mergeRoutes,
  normalizeRemoteNode,
  planRemoteNode,
  readState,
  writeState,
} from './remote-nodes.js';

const node: RemoteNode = {
  name: 'n2',
  nodeIP: '192.168.50.102',
  podCIDRs: ['10.201.1.0/24'],
  routerIP: '10.201.1.1',
  healthIP: '10.201.1.2',
};
const tunnel: PlanContext = { mode: 'tunnel', hostDev: 'tendril_host', nativeDev: 'eth0', routerIP: '10.201.0.1' };
const native: PlanContext = { ...tunnel, mode: 'native' };

test('planRemoteNode() in tunnel mode: pod CIDR world + tunnel, node IP remote-node direct, router/health behind the tunnel', () => {
  const plan = planRemoteNode(node, tunnel);
  const ep = { tunnelEndpoint: node.nodeIP, nodeId: 0, flags: IPCACHE_F_HAS_TUNNEL_EP, key: 0 };
  assert.deepEqual(Object.fromEntries(plan.entries), {
    '10.201.1.0/24': { identity: 2, ...ep },
    '192.168.50.102/32': { identity: 6, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 },
    '10.201.1.1/32': { identity: 6, ...ep },
    '10.201.1.2/32': { identity: 4, ...ep },
  });
  assert.deepEqual(plan.routes, [{ dst: '10.201.1.0/24', dev: 'tendril_host', src: '10.201.0.1', scope: 'link' }]);
});

test('planRemoteNode() in native mode: no tunnel endpoints, routes via the node IP on the native device', () => {
  const plan = planRemoteNode(node, native);
  for (const [prefix, v] of plan.entries) {
    assert.equal(v.flags, 0, prefix);
    assert.equal(v.tunnelEndpoint, '0.0.0.0', prefix);
  }
  assert.equal(plan.entries.get('10.201.1.0/24')?.identity, 2);
  assert.deepEqual(plan.routes, [{ dst: '10.201.1.0/24', dev: 'eth0', gateway: '192.168.50.102', scope: 'universe' }]);
});

test('planRemoteNode() routes a router or health IP outside every pod CIDR as /32', () => {
  const plan = planRemoteNode({ ...node, routerIP: '10.250.0.1', podCIDRs: ['10.201.1.0/24', '10.201.2.0/24'] }, native);
  assert.deepEqual(
    plan.routes.map((r) => r.dst),
    ['10.201.1.0/24', '10.201.2.0/24', '10.250.0.1/32'],
  );
});

test('normalizeRemoteNode() canonicalises CIDRs and drops duplicates', () => {
  const n = normalizeRemoteNode({ name: 'x', nodeIP: '192.0.2.1', podCIDRs: ['10.1.2.3/24', '10.1.2.0/24', '10.9.0.0/16'] });
  assert.deepEqual(n, { name: 'x', nodeIP: '192.0.2.1', podCIDRs: ['10.1.2.0/24', '10.9.0.0/16'] });
});

test('normalizeRemoteNode() rejects bad names, addresses and CIDRs with a coded error naming the node', () => {
  const bad: RemoteNode[] = [
    { ...node, name: '' },
    { ...node, nodeIP: '192.168.50' },
    { ...node, podCIDRs: ['10.201.1.0/40'] },
    { ...node, routerIP: 'router' },
    { ...node, healthIP: '::1' },
  ];
  for (const b of bad) {
    assert.throws(
      () => normalizeRemoteNode(b),
      (err: unknown) => err instanceof DatapathError && err.code === 'TENDRIL_ERR_DATAPATH_CONFIG' && /Invalid remote node/.test(err.message),
      JSON.stringify(b),
    );
  }
});

test('mergeRoutes() keeps one route per destination, the later one winning', () => {
  const a = [
    { dst: '10.0.1.0/24', dev: 'tendril_host', scope: 'link' as const },
    { dst: '10.0.2.0/24', dev: 'tendril_host', scope: 'link' as const },
  ];
  const b = [{ dst: '10.0.1.0/24', dev: 'eth0', gateway: '192.0.2.1', scope: 'universe' as const }];
  assert.deepEqual(mergeRoutes(a, b), [b[0], a[1]]);
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-dp-state-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('readState() of a missing file is empty; writeState() round-trips atomically', () => {
  const file = path.join(dir, 'sub', 'remote-nodes.json');
  assert.deepEqual(readState(file), emptyState());
  const st = emptyState();
  st.local = { nodeIP: '192.0.2.1', routerIP: '10.0.0.1' };
  st.nodes['n2'] = { node, prefixes: ['10.201.1.0/24'], routes: planRemoteNode(node, tunnel).routes };
  writeState(file, st);
  assert.deepEqual(readState(file), st);
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['remote-nodes.json'], 'no temp file left');
});

test('readState() refuses a corrupt or foreign file with TENDRIL_ERR_DATAPATH_STATE', () => {
  for (const [name, text] of [
    ['garbage.json', '{ not json'],
    ['foreign.json', '{"version": 2, "nodes": {}}'],
  ] as const) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    assert.throws(
      () => readState(file),
      (err: unknown) => err instanceof DatapathError && err.code === 'TENDRIL_ERR_DATAPATH_STATE' && err.message.includes(file),
    );
  }
});
