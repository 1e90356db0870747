// Unit tests of the node's pod-CIDR follower: watermark requests, grants followed, hand-back after the grace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { NodeIpam } from './ipam.js';
import { PodCidrs } from './pod-cidrs.js';
import { CniError } from '../cni/index.js';
import type { NodeSpec } from '../store/types.js';

const silent = pino({ level: 'silent' });

function rig(o: { preAllocate?: number; graceMs?: number; mode?: 'cluster-pool' | 'kubernetes' } = {}) {
  let node: NodeSpec = { name: 'n1', addresses: ['192.168.0.1'], podCIDRs: ['10.0.0.0/28'] };
  const routes: string[] = [];
  let clock = 1_000_000;
  let writes = 0;
  const ipam = new NodeIpam('10.0.0.0/28'); // 14 usable
  ipam.allocateNext('router');
  const pc = new PodCidrs({
    mode: o.mode ?? 'cluster-pool',
    ipam,
    preAllocate: o.preAllocate ?? 4,
    handBackGraceMs: o.graceMs ?? 1000,
    routes: { add: (c) => void routes.push(`+${c}`), remove: (c) => void routes.push(`-${c}`) },
    updateNode: async (fn) => {
      writes++;
      node = fn(node);
      return node;
    },
    log: silent,
    now: () => clock,
  });
  return {
    ipam,
    pc,
    routes,
    get node() {
      return node;
    },
    get writes() {
      return writes;
    },
    tick: (ms: number) => (clock += ms),
    /** What the operator does: grant the CIDRs, drop handled hand-backs. */
    grant: (cidrs: string[]) => {
      const req = node.ipam?.pools['default'];
      node = { ...node, podCIDRs: cidrs, ipam: { pools: { default: { requested: req?.requested ?? 1, allocated: cidrs } } } };
      pc.follow(node);
    },
  };
}

test('below the watermark the node asks for one more CIDR (once), follows the grant and routes it', async () => {
  const r = rig();
  for (let i = 0; i < 9; i++) r.ipam.allocateNext(`p${i}`); // 10 of 14 used, 4 free: at the watermark
  r.pc.check();
  assert.equal(r.writes, 0);
  r.ipam.allocateNext('p9');
  r.pc.check();
  r.pc.check();
  await r.pc.settled();
  assert.equal(r.writes, 1, 'a pending request is not repeated');
  assert.deepEqual(r.node.ipam?.pools['default'], { requested: 2, allocated: ['10.0.0.0/28'] });
  assert.match(r.pc.status().waiting ?? '', /asked for 2 CIDR\(s\), holding 1/);
  for (let i = 10; i < 13; i++) r.ipam.allocateNext(`p${i}`);
  const err = r.pc.exhausted();
  assert.ok(err instanceof CniError);
  assert.equal(err.code, 100);
  assert.equal(err.message, 'no IP available: pool exhausted, waiting for the operator');
  assert.match(err.details ?? '', /10\.0\.0\.0\/28 14\/14; asked the operator for 2 CIDR/);
  r.grant(['10.0.0.0/28', '10.0.0.16/28']);
  assert.deepEqual(r.routes, ['+10.0.0.16/28']);
  assert.equal(r.ipam.allocateNext('p13'), '10.0.0.17');
  assert.equal(r.pc.status().waiting, null);
});

test('an extra CIDR empty for the grace period is handed back; one in use or needed is kept', async () => {
  const r = rig({ preAllocate: 4, graceMs: 1000 });
  r.grant(['10.0.0.0/28', '10.0.0.16/28']);
  const ip = r.ipam.allocate('10.0.0.20', 'x');
  r.pc.check();
  r.tick(5000);
  r.pc.check();
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28', '10.0.0.16/28'], 'in use: kept');
  r.ipam.release(ip);
  r.pc.check(); // empty since now
  r.tick(999);
  r.pc.check();
  assert.equal(r.ipam.cidrs().length, 2, 'not before the grace');
  r.tick(1);
  r.pc.check();
  await r.pc.settled();
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28']);
  assert.deepEqual(r.routes, ['+10.0.0.16/28', '-10.0.0.16/28']);
  assert.deepEqual(r.node.ipam?.pools['default'], { requested: 1, release: ['10.0.0.16/28'], allocated: ['10.0.0.0/28', '10.0.0.16/28'] });
  // Until the operator has freed it the Node still lists it: not taken back.
  r.pc.follow(r.node);
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28']);
  r.grant(['10.0.0.0/28']);
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28']);
  r.pc.stop();
});

test('an empty extra the node needs to stay above the watermark is not handed back', () => {
  const r = rig({ preAllocate: 4, graceMs: 10 });
  for (let i = 0; i < 12; i++) r.ipam.allocateNext(`p${i}`); // primary: 13/14 used
  r.grant(['10.0.0.0/28', '10.0.0.16/28']);
  r.tick(1000);
  r.pc.check();
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28', '10.0.0.16/28']);
  r.pc.stop();
});

test('kubernetes mode follows the given CIDRs and never asks', async () => {
  const r = rig({ mode: 'kubernetes' });
  for (let i = 0; i < 13; i++) r.ipam.allocateNext(`p${i}`);
  r.pc.check();
  await r.pc.settled();
  assert.equal(r.writes, 0);
  assert.match(r.pc.exhausted().message, /^no IP available: pool exhausted \(the pod CIDRs on this Node are full\)$/);
  // The given CIDR changes: the new one serves, the old primary drains (it keeps router and existing pods).
  r.pc.follow({ ...r.node, podCIDRs: ['10.0.5.0/28'] });
  assert.deepEqual(r.ipam.cidrs(), ['10.0.0.0/28', '10.0.5.0/28']);
  r.ipam.release('10.0.0.5');
  assert.equal(r.ipam.allocateNext('new'), '10.0.5.1', 'not from the drained primary');
  assert.deepEqual(r.routes, ['+10.0.5.0/28']);
});
