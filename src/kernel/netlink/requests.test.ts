// Unit tests: request bodies equal, byte for byte, what iproute2 6.1 sends for the same command (captured with strace).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as K from './constants.js';
import * as R from './requests.js';

const hex = (s: string): string => s.replace(/\s+/g, '');
const body = (r: { body: Buffer }): string => r.body.toString('hex');

test('vethRequest() matches `ip link add v2 mtu 1400 address .. type veth peer name v3 netns B mtu 1400 address ..`', () => {
  const r = R.vethRequest({
    name: 'v2',
    peerName: 'v3',
    peerNsFd: 4,
    mtu: 1400,
    mac: '02:00:00:00:00:01',
    peerMac: '02:00:00:00:00:02',
  });
  assert.equal(r.type, K.RTM_NEWLINK);
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(
    body(r),
    hex(`00000000000000000000000000000000 08000400 78050000 0a000100 020000000001 0000 07000300 76320000
         48001200 08000100 76657468 3c000200 38000100 00000000000000000000000000000000 08001c00 04000000
         08000400 78050000 0a000100 020000000002 0000 07000300 76330000`),
  );
});

test('bridgeRequest() matches `ip link add br0 type bridge`', () => {
  const r = R.bridgeRequest({ name: 'br0' });
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(body(r), hex('00000000000000000000000000000000 08000300 62723000 10001200 0a000100 627269646765 0000'));
});

test('vxlanRequest() matches `ip link add vx0 mtu 1450 type vxlan external nolearning dstport 8472`', () => {
  const r = R.vxlanRequest({ name: 'vx0', mtu: 1450, port: 8472, external: true, learning: false });
  assert.equal(
    body(r),
    hex(`00000000000000000000000000000000 08000400 aa050000 08000300 76783000 2c001200 09000100 76786c616e000000
         1c000200 05001900 01000000 05000700 00000000 06000f00 21180000`),
  );
});

test('linkSetRequest() for up matches `ip link set dev v0 up`', () => {
  const r = R.linkSetRequest(2, { up: true });
  assert.equal(r.type, K.RTM_NEWLINK);
  assert.equal(r.flags, 0);
  assert.equal(body(r), hex('00000000 02000000 01000000 01000000'));
});

test('linkSetRequest() carries netns fd, mtu, mac, name and master', () => {
  const r = R.linkSetRequest(7, { nsFd: 9, mtu: 1500, mac: '02:00:00:00:00:03', name: 'eth0', masterIndex: 4, noarp: true });
  assert.equal(
    body(r),
    hex(`00000000 07000000 80000000 80000000 08001c00 09000000 08000400 dc050000 0a000100 020000000003 0000
         09000300 65746830 00000000 08000a00 04000000`),
  );
});

test('linkDeleteRequest() by index matches `ip link del v2` (ifindex 5)', () => {
  const r = R.linkDeleteRequest(5);
  assert.equal(r.type, K.RTM_DELLINK);
  assert.equal(body(r), hex('00000000 05000000 00000000 00000000'));
});

test('linkGetRequest() by name matches the lookup iproute2 sends for "v0"', () => {
  // iproute2 asks for RTEXT_FILTER_VF|SKIP_STATS (9); we skip stats only.
  assert.equal(body(R.linkGetRequest('v0')), hex('00000000000000000000000000000000 08001d00 08000000 07000300 76300000'));
});

test('addrRequest() matches `ip addr add/del 10.1.2.3/24 dev v0`', () => {
  const add = R.addrRequest('add', 2, '10.1.2.3/24');
  assert.equal(add.type, K.RTM_NEWADDR);
  assert.equal(add.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(body(add), hex('02180000 02000000 08000200 0a010203 08000100 0a010203'));
  const del = R.addrRequest('delete', 2, '10.1.2.3/24');
  assert.equal(del.type, K.RTM_DELADDR);
  assert.equal(del.flags, 0);
  assert.equal(body(del), body(add));
});

test('addrRequest() with scope link and noprefixroute adds IFA_FLAGS', () => {
  const r = R.addrRequest('add', 3, '10.0.0.1/32', { scope: 'link', noprefixroute: true });
  assert.equal(body(r), hex('022000fd 03000000 08000200 0a000001 08000100 0a000001 08000800 00020000'));
});

test('routeAddRequest() matches `ip route add 10.9.0.0/24 dev v0` (scope link by default)', () => {
  const r = R.routeAddRequest({ dst: '10.9.0.0/24', ifindex: 2 });
  assert.equal(r.type, K.RTM_NEWROUTE);
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(body(r), hex('02180000 fe03fd01 00000000 08000100 0a090000 08000400 02000000'));
});

test('routeAddRequest() matches `ip route add default via 10.1.2.1`', () => {
  const r = R.routeAddRequest({ dst: '0.0.0.0/0', gateway: '10.1.2.1' });
  assert.equal(body(r), hex('02000000 fe030001 00000000 08000500 0a010201'));
});

test('routeAddRequest() encodes replace, onlink, src, mtu and a table above 255', () => {
  const r = R.routeAddRequest({
    dst: '10.0.0.0/8',
    gateway: '192.168.1.1',
    ifindex: 3,
    src: '10.1.1.1',
    mtu: 1450,
    table: 1000,
    replace: true,
    onlink: true,
  });
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_REPLACE);
  assert.equal(
    body(r),
    hex(`02080000 00030001 04000000 08000f00 e8030000 08000100 0a000000 08000500 c0a80101 08000400 03000000
         08000700 0a010101 0c000800 08000200 aa050000`),
  );
});

test('routeDeleteRequest() matches `ip route del 10.9.0.0/24`', () => {
  const r = R.routeDeleteRequest({ dst: '10.9.0.0/24' });
  assert.equal(r.type, K.RTM_DELROUTE);
  assert.equal(body(r), hex('02180000 fe00ff00 00000000 08000100 0a090000'));
});

test('neighAddRequest() matches `ip neigh add 10.1.2.9 lladdr 02:00:00:00:00:09 dev v0 nud permanent`', () => {
  const r = R.neighAddRequest({ ifindex: 2, ip: '10.1.2.9', mac: '02:00:00:00:00:09' });
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(body(r), hex('02000000 02000000 80000000 08000100 0a010209 0a000200 020000000009 0000'));
});

test('clsactRequest() matches `tc qdisc add dev v0 clsact`', () => {
  const r = R.clsactRequest(2);
  assert.equal(r.type, K.RTM_NEWQDISC);
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_EXCL);
  assert.equal(body(r), hex('00000000 02000000 0000ffff f1ffffff 00000000 0b000100 636c7361637400 00'));
});

test('bpfFilterRequest() matches `tc filter add dev v0 ingress prio 1 handle 1 bpf da` (we replace, tc adds)', () => {
  const r = R.bpfFilterRequest({ ifindex: 2, direction: 'ingress', progFd: 6, name: 'pass.o:[tc]', prio: 1, handle: 1 });
  assert.equal(r.type, K.RTM_NEWTFILTER);
  assert.equal(r.flags, K.NLM_F_CREATE | K.NLM_F_REPLACE);
  assert.equal(
    body(r),
    hex(`00000000 02000000 01000000 f2ffffff 00030100 08000100 62706600 24000200 08000600 06000000
         10000700 706173732e6f3a5b74635d00 08000800 01000000`),
  );
});

test('bpfFilterDeleteRequest() names prio, ETH_P_ALL and kind; egress parent is ffff:fff3', () => {
  const r = R.bpfFilterDeleteRequest({ ifindex: 2, direction: 'egress' });
  assert.equal(r.type, K.RTM_DELTFILTER);
  assert.equal(body(r), hex('00000000 02000000 01000000 f3ffffff 00030100 08000100 62706600'));
});

test('request builders reject bad input before anything reaches the kernel', () => {
  assert.throws(() => R.vethRequest({ name: 'a-name-longer-than-15', peerName: 'p' }), /Invalid interface name/);
  assert.throws(() => R.addrRequest('add', 1, '10.0.0.1'), /Invalid CIDR "10.0.0.1"/);
  assert.throws(() => R.routeAddRequest({ dst: '10.0.0.0/33' }), /Invalid CIDR/);
  assert.throws(() => R.neighAddRequest({ ifindex: 1, ip: '10.0.0.1', mac: 'zz' }), /Invalid MAC/);
});
