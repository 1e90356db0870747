// Unit tests of node-local IPAM (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NodeIpam } from './ipam.js';
import { AgentError } from './errors.js';

function tmpFile(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-ipam-')), 'ipam.json');
}

test('allocateNext() hands out router and health first, in order', () => {
  const ipam = new NodeIpam('172.20.0.0/24');
  assert.equal(ipam.allocateNext('router'), '172.20.0.1');
  assert.equal(ipam.allocateNext('health'), '172.20.0.2');
  assert.equal(ipam.allocateNext('default/a'), '172.20.0.3');
});

test('allocateNext() never returns an address twice and skips network/broadcast', () => {
  const ipam = new NodeIpam('10.1.2.0/28');
  const seen = new Set<string>();
  for (let i = 0; i < 14; i++) {
    const ip = ipam.allocateNext(`o${i}`);
    assert.ok(!seen.has(ip), `duplicate ${ip}`);
    assert.notEqual(ip, '10.1.2.0');
    assert.notEqual(ip, '10.1.2.15');
    seen.add(ip);
  }
  assert.throws(() => ipam.allocateNext('x'), (e: unknown) => e instanceof AgentError && e.code === 'TENDRIL_ERR_IPAM_EXHAUSTED' && /exhausted \(14\/14/.test(e.message));
});

test('release() frees an address but it is not reused until the range wraps', () => {
  const ipam = new NodeIpam('10.1.2.0/29');
  const a = ipam.allocateNext('a');
  ipam.allocateNext('b');
  assert.equal(ipam.release(a), true);
  assert.equal(ipam.release(a), false);
  assert.notEqual(ipam.allocateNext('c'), a);
});

test('allocations persist: a restarted IPAM never hands out an address twice', () => {
  const file = tmpFile();
  const first = new NodeIpam('172.20.1.0/24', file);
  const router = first.allocateNext('router');
  const pod = first.allocateNext('default/curl-pod');
  const second = new NodeIpam('172.20.1.0/24', file);
  assert.deepEqual(second.list(), [
    { ip: router, owner: 'router' },
    { ip: pod, owner: 'default/curl-pod' },
  ]);
  const next = second.allocateNext('default/web');
  assert.ok(next !== router && next !== pod);
});

test('allocate() restores a specific address and rejects conflicts and foreign addresses', () => {
  const ipam = new NodeIpam('172.20.0.0/24');
  assert.equal(ipam.allocate('172.20.0.9', 'router'), '172.20.0.9');
  assert.equal(ipam.allocate('172.20.0.9', 'router'), '172.20.0.9');
  assert.throws(() => ipam.allocate('172.20.0.9', 'x'), /already owned by "router"/);
  assert.throws(() => ipam.allocate('172.20.1.9', 'x'), /not a usable address of pod CIDR 172.20.0.0\/24/);
  assert.throws(() => ipam.allocate('172.20.0.255', 'x'), /not a usable address/);
});

test('a state file of another CIDR is refused with a clear message', () => {
  const file = tmpFile();
  new NodeIpam('172.20.1.0/24', file).allocateNext('router');
  assert.throws(() => new NodeIpam('172.20.2.0/24', file), /is for pod CIDR 172.20.1.0\/24/);
});

test('allocate() of a static address: free and in the pool is honoured, another container\'s is a conflict', () => {
  const ipam = new NodeIpam('10.1.3.0/24');
  const a = { containerId: 'c1', ifname: 'eth0' };
  assert.equal(ipam.allocate('10.1.3.50', 'default/a', a), '10.1.3.50');
  assert.equal(ipam.allocate('10.1.3.50', 'default/a', a), '10.1.3.50', 'the same attachment again is a no-op');
  // A pod of the same name in another sandbox must not share it.
  assert.throws(
    () => ipam.allocate('10.1.3.50', 'default/a', { containerId: 'c2', ifname: 'eth0' }),
    (e: unknown) => e instanceof AgentError && e.code === 'TENDRIL_ERR_IPAM_CONFLICT' && /already owned by "default\/a" \(container c1 eth0\)/.test(e.message),
  );
  for (const ip of ['10.1.4.5', '10.1.3.0', '10.1.3.255']) {
    assert.throws(() => ipam.allocate(ip, 'default/b', a), (e: unknown) => e instanceof AgentError && e.code === 'TENDRIL_ERR_IPAM_OUT_OF_RANGE');
  }
});

test('findByAttachment() and releaseUnless() see the attachment an address was allocated for, across restarts', () => {
  const file = tmpFile();
  const first = new NodeIpam('10.1.5.0/24', file);
  first.allocateNext('router');
  const mid = first.allocateNext('default/mid', { containerId: 'c-mid', ifname: 'eth0' });
  const done = first.allocateNext('default/done', { containerId: 'c-done', ifname: 'eth0' });
  const second = new NodeIpam('10.1.5.0/24', file);
  assert.deepEqual(second.findByAttachment('c-mid', 'eth0'), [mid]);
  assert.deepEqual(second.get(mid), { ip: mid, owner: 'default/mid', containerId: 'c-mid', ifname: 'eth0' });
  const released = second.releaseUnless((a) => a.owner === 'router' || a.ip === done);
  assert.deepEqual(released.map((a) => a.ip), [mid]);
  assert.deepEqual(new NodeIpam('10.1.5.0/24', file).list().map((a) => a.owner), ['router', 'default/done']);
  assert.equal(second.free, 254 - 2);
});

test('several pod CIDRs: the first with room serves, a draining one none, and all of it survives a restart', () => {
  const file = tmpFile();
  const ipam = new NodeIpam('10.1.0.0/29', file); // 6 usable
  for (let i = 0; i < 6; i++) ipam.allocateNext(`p${i}`);
  assert.throws(() => ipam.allocateNext('x'), (e: unknown) => e instanceof AgentError && e.code === 'TENDRIL_ERR_IPAM_EXHAUSTED');
  ipam.addCidr('10.9.0.0/29');
  assert.throws(() => ipam.addCidr('10.9.0.4/30'), /overlaps 10\.9\.0\.0\/29/);
  assert.equal(ipam.allocateNext('x'), '10.9.0.1');
  assert.deepEqual(ipam.cidrs(), ['10.1.0.0/29', '10.9.0.0/29']);
  assert.equal(ipam.capacity, 12);
  assert.equal(ipam.free, 5);
  ipam.release('10.1.0.3');
  assert.equal(ipam.allocateNext('y'), '10.1.0.3', 'the primary is used first again once it has room');
  ipam.allocate('10.9.0.5', 'static');
  assert.throws(() => ipam.allocate('10.9.0.7', 'bcast'), /not a usable address of pod CIDR 10\.1\.0\.0\/29, 10\.9\.0\.0\/29/);
  // Draining: nothing new from it; removed once its last address goes.
  assert.equal(ipam.drain('10.9.0.0/29'), false);
  assert.deepEqual(ipam.usage().map((u) => [u.cidr, u.used, u.draining]), [['10.1.0.0/29', 6, false], ['10.9.0.0/29', 2, true]]);
  assert.equal(ipam.free, 0);
  const again = new NodeIpam('10.1.0.0/29', file);
  assert.deepEqual(again.usage(), ipam.usage(), 'restart keeps extra and draining CIDRs');
  again.release('10.9.0.1');
  assert.deepEqual(again.drained(), []);
  again.release('10.9.0.5');
  assert.deepEqual(again.drained(), ['10.9.0.0/29']);
  assert.deepEqual(new NodeIpam('10.1.0.0/29', file).cidrs(), ['10.1.0.0/29']);
  assert.equal(again.drain('10.9.0.0/29'), true, 'draining a CIDR the node lacks is a no-op');
});
