// Unit tests of the node's IP-pool addresses (--ipam multi-pool): pool choice by annotation, allocation inside the
// pool's chunks only, on-demand requests and the wait for the grant, unknown pool, hand-back of an emptied pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { NodeIpam } from './ipam.js';
import { PoolAddresses, poolOf } from './multi-pool.js';
import { CniCode, CniError } from '../cni/index.js';
import type { NodeSpec } from '../store/types.js';
import { cidrContains, parseCidr, parseIPv4 } from '../util/ip.js';

const silent = pino({ level: 'silent' });
const att = (id: string) => ({ containerId: id.padEnd(12, '0'), ifname: 'eth0' });
const inCidr = (ip: string, c: string): boolean => cidrContains(parseCidr(c), parseIPv4(ip));

function rig(o: { waitMs?: number; graceMs?: number } = {}) {
  let node: NodeSpec = { name: 'n1', addresses: ['192.168.0.1'], podCIDRs: ['10.0.0.0/28'], ipam: { pools: { default: { requested: 1, allocated: ['10.0.0.0/28'] } } } };
  const ipam = new NodeIpam('10.0.0.0/28');
  ipam.allocateNext('router');
  const pools = new Set(['blue']);
  const pa = new PoolAddresses({
    ipam,
    preAllocate: 0,
    waitMs: o.waitMs ?? 5000,
    handBackGraceMs: o.graceMs ?? 10,
    updateNode: async (fn) => (node = fn(node)),
    poolExists: async (name) => pools.has(name),
    log: silent,
  });
  /** What PodCidrs and the operator do: the Node lists the grant, its CIDRs are the node's. */
  const grant = (pool: string, cidrs: string[]): void => {
    const p = node.ipam!.pools;
    node = { ...node, ipam: { pools: { ...p, [pool]: { requested: p[pool]?.requested ?? 0, allocated: cidrs } } } };
    for (const c of cidrs) ipam.addCidr(c);
    pa.follow(node);
  };
  return { ipam, pa, grant, get node() { return node; } };
}

test('poolOf: the pod annotation, else the namespace annotation, else default', () => {
  assert.equal(poolOf({ 'ipam.tendril.io/ip-pool': 'blue' }, { 'ipam.tendril.io/ip-pool': 'red' }), 'blue');
  assert.equal(poolOf({}, { 'ipam.tendril.io/ip-pool': 'red' }), 'red');
  assert.equal(poolOf(undefined), 'default');
});

test('a pod of a pool the node has no chunk of asks for one, waits for the grant and gets an address inside it only', async () => {
  const r = rig();
  r.pa.follow(r.node);
  const pending = r.pa.allocate('blue', 'default/a', att('a'), 'default/a');
  await new Promise((res) => setTimeout(res, 20));
  assert.equal(r.node.ipam!.pools['blue']!.requested, 1, 'asked the operator for a chunk of blue');
  r.grant('blue', ['10.9.0.0/30']);
  const ip = await pending;
  assert.ok(inCidr(ip, '10.9.0.0/30'), ip);
  const ip2 = await r.pa.allocate('blue', 'default/b', att('b'), 'default/b');
  assert.ok(inCidr(ip2, '10.9.0.0/30'), ip2);
  // default pods never get a blue address, and blue pods never a default one.
  const d = await r.pa.allocate('default', 'default/d', att('d'), 'default/d');
  assert.ok(inCidr(d, '10.0.0.0/28'), d);
  // The /30 is full (2 usable): the next blue ADD asks for a second chunk.
  const p3 = r.pa.allocate('blue', 'default/c', att('c'), 'default/c');
  await new Promise((res) => setTimeout(res, 20));
  assert.equal(r.node.ipam!.pools['blue']!.requested, 2);
  r.grant('blue', ['10.9.0.0/30', '10.9.0.4/30']);
  assert.ok(inCidr(await p3, '10.9.0.4/30'));
  r.pa.stop();
});

test('unknown pool: a coded CNI error naming the pool and the pod; no grant in time: exhausted, waiting for the operator', async () => {
  const r = rig({ waitMs: 50 });
  r.pa.follow(r.node);
  await assert.rejects(r.pa.allocate('nope', 'ns/p', att('p'), 'ns/p'), (e: CniError) => e.code === CniCode.NO_POOL && /unknown IP pool "nope" for pod ns\/p/.test(e.message));
  await assert.rejects(r.pa.allocate('blue', 'ns/q', att('q'), 'ns/q'), (e: CniError) => e.code === CniCode.POOL_EXHAUSTED && /pool "blue" for pod ns\/q: waiting for the operator/.test(e.message));
  r.pa.stop();
});

test('a pool left without pods is handed back whole after the grace; its addresses are not given meanwhile', async () => {
  const r = rig({ graceMs: 10 });
  r.pa.follow(r.node);
  r.grant('blue', ['10.9.0.0/29']);
  const ip = await r.pa.allocate('blue', 'default/a', att('a'), 'default/a');
  r.ipam.release(ip);
  r.pa.released();
  await new Promise((res) => setTimeout(res, 60));
  assert.deepEqual(r.node.ipam!.pools['blue'], { requested: 0, release: ['10.9.0.0/29'], allocated: ['10.9.0.0/29'] });
  assert.deepEqual(r.pa.cidrsOf('blue'), [], 'no address of a pool being handed back');
  r.grant('blue', []);
  assert.equal(r.pa.status().find((s) => s.pool === 'blue')!.requested, 0);
  r.pa.stop();
});
