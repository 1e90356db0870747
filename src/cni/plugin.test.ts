// Unit tests of CniHandler's dispatch, undo list and DEL/GC idempotence over an in-memory CniBackend.
// No privileges: every netns path here does not exist, so no interface is ever created.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeIpam } from '../agent/ipam.js';
import { CniHandler } from './plugin.js';
import { MemoryBackend } from './testing.js';

const GONE_NETNS = `/var/run/netns/tdlt-${process.pid}-does-not-exist`;
const backend = (cidr = '10.9.0.0/24'): MemoryBackend => new MemoryBackend({ cidr, ipam: new NodeIpam(cidr), goneNetns: GONE_NETNS });
const CONF = { cniVersion: '1.1.0', name: 'tendril', type: 'tendril-cni' };

function hdr(command: string, over: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { 'x-cni-command': command, 'x-cni-containerid': 'c1', 'x-cni-netns': GONE_NETNS, 'x-cni-ifname': 'eth0', ...over };
}

function parsed(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout) as Record<string, unknown>;
}

test('CniHandler VERSION lists the supported versions in the caller\'s cniVersion', async () => {
  const supportedVersions = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
  const r = await new CniHandler(backend()).handleRaw({ 'x-cni-command': 'VERSION' }, '{"cniVersion":"1.0.0"}');
  assert.equal(r.exitCode, 0);
  assert.deepEqual(parsed(r.stdout), { cniVersion: '1.0.0', supportedVersions });
  const r2 = await new CniHandler(backend()).handleRaw({ 'x-cni-command': 'VERSION' }, '{"cniVersion":"0.3.1"}');
  assert.deepEqual(parsed(r2.stdout), { cniVersion: '0.3.1', supportedVersions });
});

test('CniHandler STATUS is silent success when ready and code 50 when not', async () => {
  const b = backend();
  const h = new CniHandler(b);
  assert.deepEqual(await h.handleRaw({ 'x-cni-command': 'STATUS' }, JSON.stringify(CONF)), { exitCode: 0, stdout: '' });
  b.ready = false;
  const r = await h.handleRaw({ 'x-cni-command': 'STATUS' }, JSON.stringify(CONF));
  assert.equal(r.exitCode, 1);
  assert.deepEqual(parsed(r.stdout), { cniVersion: '1.1.0', code: 50, msg: 'Tendril agent is not ready', details: 'IPAM not initialised' });
  b.limited = true;
  assert.equal(parsed((await h.handleRaw({ 'x-cni-command': 'STATUS' }, JSON.stringify(CONF))).stdout)['code'], 51);
});

test('CniHandler STATUS is 50 when the pool is exhausted, 51 when ready but existing pods are limited', async () => {
  const b = backend('10.9.0.0/30'); // two usable addresses: the router's and one pod's
  const h = new CniHandler(b);
  const status = async (): Promise<string> => (await h.handleRaw({ 'x-cni-command': 'STATUS' }, JSON.stringify(CONF))).stdout;
  assert.equal(await status(), '');
  b.seed('c1');
  assert.deepEqual(parsed(await status()), {
    cniVersion: '1.1.0',
    code: 50,
    msg: "Tendril cannot add pods: the node's pod address pool is exhausted",
    details: 'pod CIDR 10.9.0.0/30 has no free address',
  });
  await b.releaseIP(b.findEndpoint('c1', 'eth0')!.ip);
  b.limited = true;
  assert.equal(parsed(await status())['code'], 51);
});

test('CniHandler ADD when the agent is not ready: code 11 and nothing allocated', async () => {
  const b = backend();
  b.ready = false;
  const r = await new CniHandler(b).handleRaw(hdr('ADD'), JSON.stringify(CONF));
  assert.equal(parsed(r.stdout)['code'], 11);
  assert.deepEqual(b.calls, []);
});

test('CniHandler ADD with a netns that does not exist: code 8 naming the path, no IP allocated', async () => {
  const b = backend();
  const r = await new CniHandler(b).handleRaw(hdr('ADD'), JSON.stringify(CONF));
  assert.equal(r.exitCode, 1);
  const err = parsed(r.stdout);
  assert.equal(err['code'], 8);
  assert.match(String(err['msg']), new RegExp(`Cannot open network namespace "${GONE_NETNS}": No such file or directory \\(ENOENT\\)`));
  assert.deepEqual(b.calls, []);
  assert.equal(b.ips.size, 0);
});

test('CniHandler ADD of an attachment that exists already is refused before anything is acquired', async () => {
  const b = backend();
  b.seed('c1');
  const r = await new CniHandler(b).handleRaw(hdr('ADD', { 'x-cni-netns': '/proc/self/ns/net' }), JSON.stringify(CONF));
  assert.equal(r.exitCode, 1);
  assert.match(String(parsed(r.stdout)['msg']), /Cannot add "eth0" to container "c1": it is already attached/);
  assert.deepEqual(b.calls, []);
});

test('CniHandler ADD naming the node\'s own netns is code 8 before anything is allocated', async () => {
  const b = backend();
  const r = await new CniHandler(b).handleRaw(hdr('ADD', { 'x-cni-netns': '/proc/self/ns/net' }), JSON.stringify(CONF));
  assert.equal(r.exitCode, 1);
  const err = parsed(r.stdout);
  assert.equal(err['code'], 8);
  assert.match(String(err['msg']), /"\/proc\/self\/ns\/net" is the node's own namespace, not a pod's/);
  assert.deepEqual(b.calls, []);
});

test('CniHandler ADD of a second interface of a container is code 103 before anything is acquired', async () => {
  const b = backend();
  b.seed('c1');
  const r = await new CniHandler(b).handleRaw(hdr('ADD', { 'x-cni-ifname': 'net1' }), JSON.stringify(CONF));
  assert.equal(r.exitCode, 1);
  const err = parsed(r.stdout);
  assert.equal(err['code'], 103);
  assert.match(String(err['msg']), /Cannot add "net1" to container "c1": it already has the Tendril interface "eth0"/);
  assert.deepEqual(b.calls, []);
});

test('CniHandler DEL releases an address allocated for the container by an ADD that never made an endpoint', async () => {
  const b = backend();
  const ip = b.ipam.allocateNext('default/mid', { containerId: 'c1', ifname: 'eth0' });
  const other = b.ipam.allocateNext('default/other', { containerId: 'c2', ifname: 'eth0' });
  const r = await new CniHandler(b).handleRaw(hdr('DEL'), JSON.stringify(CONF));
  assert.deepEqual(r, { exitCode: 0, stdout: '' });
  assert.deepEqual(b.calls, [`releaseIP ${ip}`]);
  assert.deepEqual([...b.ips.keys()], [other]);
});

test('CniHandler DEL removes endpoint and IP of an attachment whose netns is gone; DEL again succeeds', async () => {
  const b = backend();
  const id = b.seed('c1');
  const ip = b.findEndpoint('c1', 'eth0')!.ip;
  const h = new CniHandler(b);
  const r1 = await h.handleRaw(hdr('DEL'), JSON.stringify(CONF));
  assert.deepEqual(r1, { exitCode: 0, stdout: '' });
  assert.deepEqual(b.calls, [`deleteEndpoint ${id}`, `releaseIP ${ip}`]);
  assert.equal(b.endpoints.size, 0);
  assert.equal(b.ips.size, 0);
  const r2 = await h.handleRaw(hdr('DEL'), JSON.stringify(CONF));
  assert.deepEqual(r2, { exitCode: 0, stdout: '' });
  assert.deepEqual(b.calls, [`deleteEndpoint ${id}`, `releaseIP ${ip}`]);
});

test('CniHandler DEL keeps the IP when the endpoint cannot be deleted, so a retry finishes the job', async () => {
  const b = backend();
  b.seed('c1');
  const ip = b.findEndpoint('c1', 'eth0')!.ip;
  const realDelete = b.deleteEndpoint.bind(b);
  b.deleteEndpoint = async () => {
    throw Object.assign(new Error('Cannot reach the cluster store: connection refused'), { code: 'TENDRIL_ERR_STORE_UNAVAILABLE' });
  };
  const h = new CniHandler(b);
  const r1 = await h.handleRaw(hdr('DEL'), JSON.stringify(CONF));
  assert.equal(r1.exitCode, 1);
  // The store being away is transient whichever path meets it: 11, never 999.
  assert.equal(parsed(r1.stdout)['code'], 11);
  assert.match(String(parsed(r1.stdout)['msg']), /Cannot remove "eth0" of container "c1": endpoint \d+: Cannot reach the cluster store/);
  assert.ok(b.ips.has(ip), 'IP must stay allocated while the endpoint exists');
  b.deleteEndpoint = realDelete;
  assert.equal((await h.handleRaw(hdr('DEL'), JSON.stringify(CONF))).exitCode, 0);
  assert.equal(b.ips.size, 0);
  assert.equal(b.endpoints.size, 0);
});

test('CniHandler DEL runs after a pending call of the same attachment, not alongside it', async () => {
  const b = backend();
  b.seed('c1');
  let inside = 0;
  let overlap = false;
  const realDelete = b.deleteEndpoint.bind(b);
  b.deleteEndpoint = async (id: number) => {
    inside++;
    if (inside > 1) overlap = true;
    await new Promise((r) => setTimeout(r, 20));
    await realDelete(id);
    inside--;
  };
  const h = new CniHandler(b);
  const rs = await Promise.all([h.handleRaw(hdr('DEL'), JSON.stringify(CONF)), h.handleRaw(hdr('DEL'), JSON.stringify(CONF))]);
  assert.deepEqual(rs.map((r) => r.exitCode), [0, 0]);
  assert.equal(overlap, false);
});

test('CniHandler CHECK of an unknown attachment is code 3; a prevResult without its IP fails', async () => {
  const b = backend();
  const h = new CniHandler(b);
  const prev = { ...CONF, prevResult: { cniVersion: '1.1.0', ips: [{ address: '10.9.0.77/32' }] } };
  const r1 = await h.handleRaw(hdr('CHECK'), JSON.stringify(prev));
  assert.equal(parsed(r1.stdout)['code'], 3);
  assert.match(String(parsed(r1.stdout)['msg']), /container "c1" has no Tendril interface "eth0"/);
  b.seed('c1');
  const r2 = await h.handleRaw(hdr('CHECK'), JSON.stringify(prev));
  assert.match(String(parsed(r2.stdout)['msg']), /prevResult does not hold 10\.9\.0\.\d+\/32/);
});

test('CniHandler CHECK fails when the address is no longer allocated to the container', async () => {
  const b = backend();
  b.seed('c1');
  const ip = b.findEndpoint('c1', 'eth0')!.ip;
  await b.releaseIP(ip);
  b.ipam.allocate(ip, 'someone-else');
  const prev = { ...CONF, prevResult: { cniVersion: '1.1.0', ips: [{ address: `${ip}/32` }] } };
  const r = await new CniHandler(b).handleRaw(hdr('CHECK'), JSON.stringify(prev));
  assert.equal(r.exitCode, 1);
  assert.deepEqual(parsed(r.stdout), {
    cniVersion: '1.1.0',
    code: 999,
    msg: `CHECK failed for container "c1": ${ip} is no longer allocated to it`,
    details: 'IPAM holds no address for it',
  });
});

test('CniHandler GC releases addresses of attachments that never finished unless listed as valid', async () => {
  const b = backend();
  const stale = b.ipam.allocateNext('default/mid', { containerId: 'gone', ifname: 'eth0' });
  const valid = b.ipam.allocateNext('default/slow', { containerId: 'slow', ifname: 'eth0' });
  const conf = { ...CONF, 'cni.dev/valid-attachments': [{ containerID: 'slow', ifname: 'eth0' }] };
  assert.deepEqual(await new CniHandler(b).handleRaw({ 'x-cni-command': 'GC' }, JSON.stringify(conf)), { exitCode: 0, stdout: '' });
  assert.deepEqual([...b.ips.keys()], [valid]);
  assert.ok(b.calls.includes(`releaseIP ${stale}`));
});

test('CniHandler GC removes the endpoints not listed as valid and keeps the listed ones', async () => {
  const b = backend();
  b.seed('keep');
  b.seed('stale');
  b.seed('keep', 'net1');
  const keepIps = [b.findEndpoint('keep', 'eth0')!.ip, b.findEndpoint('keep', 'net1')!.ip];
  const conf = { ...CONF, 'cni.dev/valid-attachments': [{ containerID: 'keep', ifname: 'eth0' }, { containerID: 'keep', ifname: 'net1' }] };
  const r = await new CniHandler(b).handleRaw({ 'x-cni-command': 'GC' }, JSON.stringify(conf));
  assert.deepEqual(r, { exitCode: 0, stdout: '' });
  assert.deepEqual(b.listEndpoints().map((e) => `${e.containerId}/${e.ifname}`).sort(), ['keep/eth0', 'keep/net1']);
  assert.deepEqual([...b.ips.keys()].sort(), keepIps.sort());
});

test('CniHandler.handleRaw() answers decode (6) and config (7) errors in the best known version', async () => {
  const h = new CniHandler(backend());
  const r6 = await h.handleRaw(hdr('ADD'), '{"cniVersion": "0.4.0", ');
  assert.equal(r6.exitCode, 1);
  assert.equal(r6.cniCode, 6);
  assert.equal(parsed(r6.stdout)['cniVersion'], '1.1.0');
  const r7 = await h.handleRaw(hdr('ADD'), JSON.stringify({ cniVersion: '0.4.0', type: 'tendril-cni' }));
  assert.deepEqual(parsed(r7.stdout), { cniVersion: '0.4.0', code: 7, msg: 'invalid network config: "name" is missing' });
});

test('CniHandler DEL and CHECK while the agent is not ready are 11 (try again later), not 999', async () => {
  const b = backend();
  b.findEndpoint = () => {
    throw Object.assign(new Error('Node n1 has no pod CIDR yet: waiting for the operator to assign one'), { code: 'TENDRIL_ERR_NOT_READY' });
  };
  const h = new CniHandler(b);
  for (const cmd of ['DEL', 'CHECK']) {
    const conf = cmd === 'CHECK' ? { ...CONF, prevResult: { cniVersion: '1.1.0', ips: [] } } : CONF;
    const r = await h.handleRaw(hdr(cmd), JSON.stringify(conf));
    assert.equal(parsed(r.stdout)['code'], 11, `${cmd}: ${r.stdout}`);
  }
});
