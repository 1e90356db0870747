// Kubernetes mode with --ipam multi-pool (root): TendrilPodIPPool is a CRD of its own (the apiserver's schema refuses
// malformed pools; `kubectl get tendrilpodippools` lists them with their columns); a pool of an earlier version,
// left as TendrilIPAMState "pod-ip-pool.NAME", is migrated by the operator at start; and a pod's IP pool comes from
// the watched Pod's annotation ipam.tendril.io/ip-pool (the kubelet's CNI call carries no annotations), or from its
// Namespace's. The Node shows requested/allocated per pool and the pool's status the chunks the operator gave.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execCapture, labDown, labUp, podAdd } from '../src/lab/lab.js';
import { connect, installCrds, Rest } from '../src/k8s/index.js';
import { cidrContains, parseCidr, parseIPv4 } from '../src/util/ip.js';
import { rawObjects, startKit, type Kit } from './lib/k8s-kit.js';
import { until } from './lib/proc.js';

const LAB = `kmp${process.pid % 100000}`;
const PORT_BASE = 16950;
const POOLS = '/apis/tendril.io/v2/tendrilpodippools';
const inCidr = (ip: string, cidr: string): boolean => cidrContains(parseCidr(cidr), parseIPv4(ip));
const pool = (name: string, cidrs: unknown, maskSize: unknown): Record<string, unknown> => ({ apiVersion: 'tendril.io/v2', kind: 'TendrilPodIPPool', metadata: { name }, spec: { ipv4: { cidrs, maskSize } } });

interface PoolObject {
  spec: { ipv4: { cidrs: string[]; maskSize: number } };
  status?: { chunks?: { total: number; assigned: number; free: number }; nodes?: Record<string, string[]>; problem?: string };
}

describe('kubernetes mode: TendrilPodIPPool CRD, migration, and the IP pool from the watched Pod', { timeout: 600_000 }, () => {
  let kit: Kit | undefined;
  let rest: Rest;
  let o: ReturnType<typeof rawObjects>;

  before(async () => {
    kit = await startKit({ apiserverOnly: true, portBase: PORT_BASE });
    const conn = connect(kit.kubeconfig);
    rest = new Rest(conn.kc, conn.server);
    o = rawObjects(kit.kubeconfig);
    // A cluster of an earlier version: its pool "legacy" stored as TendrilIPAMState pod-ip-pool.legacy.
    await installCrds(conn);
    await o.create({ apiVersion: 'tendril.io/v2', kind: 'TendrilIPAMState', metadata: { name: 'pod-ip-pool.legacy' }, spec: { cidrs: ['10.93.0.0/24'], maskSize: 26 } });
    await labUp({ name: LAB, nodes: 1, kubeconfig: kit.kubeconfig, podCidr: '172.29.0.0/24', ipam: { mode: 'multi-pool', maskSize: 26 } });
    await o.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'default' } });
  });
  after(async () => {
    await labDown(LAB).catch(() => {});
    await kit?.down();
  });

  test('the operator migrated the IPAMState pool to a TendrilPodIPPool and deleted the old object', async () => {
    const legacy = await rest.request<PoolObject>('GET', `${POOLS}/legacy`);
    assert.deepEqual(legacy.spec, { ipv4: { cidrs: ['10.93.0.0/24'], maskSize: 26 } });
    await assert.rejects(o.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilIPAMState', metadata: { name: 'pod-ip-pool.legacy' } }), /404|not found/i);
  });

  test('the CRD\'s schema refuses malformed pools; a good one is listed by kubectl get with its columns', async (t) => {
    for (const [why, bad] of [
      ['a CIDR that is no CIDR', pool('bad1', ['10.94.0.0'], 26)],
      ['an empty CIDR list', pool('bad2', [], 26)],
      ['a mask size over 32', pool('bad3', ['10.94.0.0/24'], 40)],
      ['a mask size that is a string', pool('bad4', ['10.94.0.0/24'], 'big')],
      ['no ipv4', { apiVersion: 'tendril.io/v2', kind: 'TendrilPodIPPool', metadata: { name: 'bad5' }, spec: {} }],
    ] as const) {
      await assert.rejects(rest.request('POST', POOLS, bad), /is invalid/, why);
    }
    await rest.request('POST', POOLS, pool('blue', ['10.91.0.0/24'], 26));
    await rest.request('POST', POOLS, pool('red', ['10.92.0.0/24'], 27));
    // What `kubectl get tendrilpodippools` asks for: the server-side table with the CRD's printer columns.
    const table = await rest.request<{ columnDefinitions: Array<{ name: string }>; rows: Array<{ cells: unknown[] }> }>('GET', POOLS, undefined, undefined, 'application/json;as=Table;v=v1;g=meta.k8s.io');
    assert.deepEqual(table.columnDefinitions.map((c) => c.name), ['Name', 'CIDRs', 'Mask', 'Chunks Used', 'Chunks Free', 'Problem']);
    assert.deepEqual(table.rows.map((r) => r.cells[0]).sort(), ['blue', 'legacy', 'red']);
    t.diagnostic(['NAME CIDRS MASK USED FREE PROBLEM', ...table.rows.map((r) => r.cells.map((c) => (Array.isArray(c) ? JSON.stringify(c) : String(c ?? '<none>'))).join(' '))].join('\n'));
  });

  test('a pod annotated on the Pod object gets an address of its pool; one in an annotated Namespace gets the namespace\'s', async () => {
    await o.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'pa', namespace: 'default', annotations: { 'ipam.tendril.io/ip-pool': 'blue' } }, spec: { nodeName: 'ctr', containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
    await o.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team', annotations: { 'ipam.tendril.io/ip-pool': 'red' } } });
    await o.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'team' } });
    await o.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'pb', namespace: 'team' }, spec: { nodeName: 'ctr', containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
    await o.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'pc', namespace: 'default' }, spec: { nodeName: 'ctr', containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
    // The CNI calls carry no annotation (as a kubelet's): the agent reads them from its Pod and Namespace watches.
    const a = await podAdd(LAB, 'pa', { node: 'ctr', serve: 8080 });
    assert.ok(inCidr(a.ip, '10.91.0.0/24'), `pa ${a.ip} is in pool blue`);
    // The agent's Namespace watch may see "team" a moment after it was created: the ADD is retried as a runtime would.
    let b: Awaited<ReturnType<typeof podAdd>> | undefined;
    await until('pb (namespace team) gets an address of pool red', async () => {
      b = await podAdd(LAB, 'pb', { node: 'ctr', namespace: 'team' }).catch(() => undefined);
      if (b && !inCidr(b.ip, '10.92.0.0/24')) assert.fail(`pb got ${b.ip}, not an address of pool red 10.92.0.0/24`);
      return b !== undefined;
    }, 120_000);
    const c = await podAdd(LAB, 'pc', { node: 'ctr' });
    assert.ok(inCidr(c.ip, '172.29.0.0/24'), `pc ${c.ip} is in the default pool`);
    assert.equal(execCapture(b!.netns, ['curl', '-s', '--max-time', '5', `http://${a.ip}:8080/`]).status, 0, 'pools reach each other');
  });

  test('the Node shows requested/allocated per pool, and each pool\'s status the chunks given', async () => {
    const node = await o.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilNode', metadata: { name: 'ctr' } });
    const pools = (node['spec'] as { ipam: { pools: Record<string, { requested: number; allocated: string[] }> } }).ipam.pools;
    assert.equal(pools['blue']!.requested, 1);
    assert.deepEqual(pools['blue']!.allocated, ['10.91.0.0/26']);
    assert.deepEqual(pools['red']!.allocated, ['10.92.0.0/27']);
    assert.equal(pools['default']!.allocated.length, 1);
    await until('pool blue\'s status', async () => {
      const p = await rest.request<PoolObject>('GET', `${POOLS}/blue`);
      return p.status?.chunks?.assigned === 1 && p.status.nodes?.['ctr']?.[0] === '10.91.0.0/26';
    }, 60_000);
    const red = await rest.request<PoolObject>('GET', `${POOLS}/red`);
    assert.deepEqual(red.status?.chunks, { total: 8, assigned: 1, free: 7 });
  });
});
