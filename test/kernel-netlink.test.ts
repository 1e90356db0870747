// Integration tests (root) of Netns and Netlink against the real kernel, inside namespaces this file creates.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Netns, listNetns } from '../src/kernel/netns/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { KernelError } from '../src/kernel/errors.js';
import { MNT_DETACH, addressOf, bpfSyscall, close as closeFd, umount2 } from '../src/kernel/native/libc.js';

const PREFIX = `tdlt-${process.pid}-`;
const opened: Array<{ close(): void }> = [];
// Link names carry a per-run suffix so the leak check below cannot confuse them with anyone else's.
const SUFFIX = (process.pid % 1_000_000).toString(36);
const OUR_LINKS = new Set<string>();
function L(base: string): string {
  const name = `${base}${SUFFIX}`;
  OUR_LINKS.add(name);
  return name;
}
let rootInode = 0;
let rootLinks: string[] = [];

/** A fresh namespace of this run; every one is deleted in after(). */
function makeNs(suffix: string): Netns {
  const ns = Netns.create(`${PREFIX}${suffix}`);
  opened.push(ns);
  return ns;
}

function nlIn(ns: Netns): Netlink {
  const nl = Netlink.openIn(ns);
  opened.push(nl);
  return nl;
}

function nsName(ns: Netns): string {
  return path.basename(ns.path);
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Cross-check with iproute2 (tests only; the library never shells out). */
function ipJson<T>(ns: Netns, ...args: string[]): T {
  return JSON.parse(run('ip', ['-n', nsName(ns), '-j', ...args])) as T;
}

before(() => {
  // Fail loudly, never skip: these tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
  assert.equal(process.getuid?.(), 0, 'kernel-netlink tests must run as root');
  const root = Netns.current();
  rootInode = root.inode();
  root.close();
  const nl = Netlink.open(); // read-only use of the root namespace: a baseline to prove we changed nothing there
  rootLinks = nl.listLinks().map((l) => l.name);
  nl.close();
});

after(() => {
  for (const h of opened.reverse()) {
    try {
      h.close();
    } catch {
      /* keep cleaning */
    }
  }
  for (const name of listNetns()) if (name.startsWith(PREFIX)) Netns.delete(name);
  assert.deepEqual(listNetns().filter((n) => n.startsWith(PREFIX)), []);
  // None of the links this file creates may have appeared in the root namespace (other processes may
  // legitimately add their own links meanwhile, so only our names are checked).
  const nl = Netlink.open();
  const leaked = nl.listLinks().map((l) => l.name).filter((n) => OUR_LINKS.has(n) && !rootLinks.includes(n));
  nl.close();
  assert.deepEqual(leaked, [], 'links of this test leaked into the root namespace');
  const cur = Netns.current();
  assert.equal(cur.inode(), rootInode, 'the main thread did not end in the root namespace');
  cur.close();
});

// ---- Netns ----

test('Netns.create() makes a namespace that open(), exists() and listNetns() see; delete() is idempotent', () => {
  const name = `${PREFIX}life`;
  const ns = Netns.create(name);
  try {
    assert.equal(ns.path, `/var/run/netns/${name}`);
    assert.ok(Netns.exists(name));
    assert.ok(listNetns().includes(name));
    const again = Netns.open(ns.path);
    assert.equal(again.inode(), ns.inode());
    again.close();
    assert.notEqual(ns.inode(), rootInode);
    const cur = Netns.current();
    assert.equal(cur.inode(), rootInode, 'create() must return the thread to its namespace');
    cur.close();
    // iproute2 sees it as a namespace too
    assert.ok(run('ip', ['netns', 'list']).includes(name));
  } finally {
    ns.close();
    Netns.delete(name);
  }
  assert.equal(Netns.exists(name), false);
  Netns.delete(name); // already gone: no error
});

test('Netns.create()/exists()/delete() and listNetns() work in another directory', () => {
  const dir = `/run/${PREFIX}dir`;
  try {
    const ns = Netns.create('other', dir);
    try {
      assert.deepEqual(listNetns(dir), ['other']);
      assert.ok(Netns.exists('other', dir));
      assert.equal(Netns.exists('other'), false);
      assert.equal(ns.run(() => 7), 7);
    } finally {
      ns.close();
      Netns.delete('other', dir);
    }
    assert.deepEqual(listNetns(dir), []);
  } finally {
    // create() made the directory a (shared) mount point, as `ip netns add` does; undo that too.
    try {
      umount2(dir, MNT_DETACH);
    } catch {
      /* not mounted */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(fs.existsSync(dir), false);
});

test('Netns.create() of an existing name fails with TENDRIL_ERR_NETNS and EEXIST', () => {
  makeNs('dup');
  assert.throws(
    () => Netns.create(`${PREFIX}dup`),
    (e: unknown) =>
      e instanceof KernelError &&
      e.code === 'TENDRIL_ERR_NETNS' &&
      e.is('EEXIST') &&
      e.message === `Cannot create network namespace "${PREFIX}dup": File exists (EEXIST)`,
  );
});

test('Netns.open() refuses missing paths and files that are no namespace', () => {
  assert.throws(
    () => Netns.open(`/var/run/netns/${PREFIX}missing`),
    (e: unknown) => e instanceof KernelError && e.code === 'TENDRIL_ERR_NETNS' && e.is('ENOENT'),
  );
  const file = path.join(os.tmpdir(), `${PREFIX}plain`);
  fs.writeFileSync(file, '');
  try {
    assert.throws(() => Netns.open(file), /not a network namespace/);
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('Netns.run() enters the namespace, returns the value and comes back', () => {
  const ns = makeNs('run');
  const inside = ns.run(() => {
    const cur = Netns.current();
    const ino = cur.inode();
    cur.close();
    return ino;
  });
  assert.equal(inside, ns.inode());
  const cur = Netns.current();
  assert.equal(cur.inode(), rootInode);
  cur.close();
  // nested runs restore the outer namespace
  const other = makeNs('run2');
  const seen = ns.run(() => {
    other.run(() => undefined);
    const c = Netns.current();
    const ino = c.inode();
    c.close();
    return ino;
  });
  assert.equal(seen, ns.inode());
});

test('Netns.run() restores the namespace when fn throws', () => {
  const ns = makeNs('throw');
  assert.throws(
    () =>
      ns.run(() => {
        throw new Error('boom');
      }),
    /boom/,
  );
  const cur = Netns.current();
  assert.equal(cur.inode(), rootInode);
  cur.close();
});

test('Netns.run() refuses a Promise and still restores the namespace', () => {
  const ns = makeNs('async');
  assert.throws(
    () => ns.run(async () => 1),
    (e: unknown) => e instanceof KernelError && e.code === 'TENDRIL_ERR_NETNS' && /returned a Promise/.test(e.message),
  );
  const cur = Netns.current();
  assert.equal(cur.inode(), rootInode);
  cur.close();
});

// ---- Netlink ----

test('Netlink.openIn() socket works on its namespace from the root namespace', () => {
  const ns = makeNs('sock');
  const nl = nlIn(ns);
  const cur = Netns.current();
  assert.equal(cur.inode(), rootInode);
  cur.close();
  assert.deepEqual(
    nl.listLinks().map((l) => l.name),
    ['lo'],
  );
  assert.equal(nl.getLink('lo')?.index, 1);
  assert.equal(nl.getLink(1)?.name, 'lo');
});

test('getLink() returns undefined and deleteLink() false for a missing link', () => {
  const nl = nlIn(makeNs('missing'));
  assert.equal(nl.getLink('nope0'), undefined);
  assert.equal(nl.getLink(4242), undefined);
  assert.equal(nl.deleteLink('nope0'), false);
  assert.equal(nl.deleteLink(4242), false);
});

test('createVeth() creates the peer directly in another namespace with MACs, MTU and txqueuelen', () => {
  const a = makeNs('vetha');
  const b = makeNs('vethb');
  const nla = nlIn(a);
  const nlb = nlIn(b);
  nla.createVeth({
    name: L('tv0'),
    peerName: L('tv1'),
    peerNetns: b,
    mtu: 1400,
    mac: '02:00:00:00:aa:01',
    peerMac: '02:00:00:00:aa:02',
    txqueuelen: 500,
  });
  const host = nla.getLink(L('tv0'));
  const peer = nlb.getLink(L('tv1'));
  assert.ok(host && peer);
  assert.equal(nla.getLink(L('tv1')), undefined, 'the peer must not exist in the creating namespace');
  assert.equal(host.kind, 'veth');
  assert.equal(host.mtu, 1400);
  assert.equal(host.mac, '02:00:00:00:aa:01');
  assert.equal(host.up, false);
  assert.equal(peer.mac, '02:00:00:00:aa:02');
  assert.equal(peer.mtu, 1400);
  assert.equal(host.peerIndex, peer.index);
  assert.equal(peer.peerIndex, host.index);
  assert.ok(host.linkNetnsId !== undefined);
  const [ipPeer] = ipJson<Array<{ ifname: string; txqlen: number; address: string; link_index?: number }>>(
    b, 'link', 'show', L('tv1'));
  assert.equal(ipPeer?.address, '02:00:00:00:aa:02');
  assert.equal(ipPeer?.txqlen, 500);
  assert.throws(
    () => nla.createVeth({ name: L('tv0'), peerName: L('tv9') }),
    (e: unknown) =>
      e instanceof KernelError &&
      e.code === 'TENDRIL_ERR_NETLINK' &&
      e.errno === 17 &&
      e.message.startsWith(`Cannot create veth "${L('tv0')}": File exists (EEXIST)`),
  );
});

test('setLink() renames and brings up in one call, and changes MAC and MTU', () => {
  const a = makeNs('set');
  const nl = nlIn(a);
  nl.createVeth({ name: L('sv0'), peerName: L('sv1') });
  nl.setLink(L('sv0'), { name: L('renamed0'), up: true, mtu: 1450, mac: '02:00:00:00:bb:01' });
  assert.equal(nl.getLink(L('sv0')), undefined);
  const l = nl.getLink(L('renamed0'));
  assert.ok(l);
  assert.equal(l.up, true);
  assert.equal(l.mtu, 1450);
  assert.equal(l.mac, '02:00:00:00:bb:01');
  nl.setLink(l.index, { up: false, noarp: true });
  const [j] = ipJson<Array<{ flags: string[]; operstate: string }>>(a, 'link', 'show', L('renamed0'));
  assert.ok(j?.flags.includes('NOARP'));
  assert.ok(!j?.flags.includes('UP'));
  assert.throws(
    () => nl.setLink('ghost0', { up: true }),
    (e: unknown) => e instanceof KernelError && e.is('ENODEV') && e.message === 'Cannot set link "ghost0": No such device (ENODEV)',
  );
  assert.equal(nl.deleteLink(L('renamed0')), true);
  assert.equal(nl.getLink(L('sv1')), undefined, 'deleting one end removes the pair');
});

test('addAddress()/listAddresses()/deleteAddress() (false when already gone)', () => {
  const a = makeNs('addr');
  const nl = nlIn(a);
  nl.createVeth({ name: L('av0'), peerName: L('av1') });
  const idx = nl.getLink(L('av0'))!.index;
  nl.addAddress(idx, '10.211.0.1/24');
  nl.addAddress(idx, '10.211.1.1/32', { scope: 'link', noprefixroute: true });
  const mine = nl.listAddresses(idx).map((x) => `${x.address}/${x.prefixLen}@${x.scope}`).sort();
  assert.deepEqual(mine, ['10.211.0.1/24@0', '10.211.1.1/32@253']);
  const [j] = ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>>(a, 'addr', 'show', 'dev', L('av0'));
  assert.deepEqual(j?.addr_info.map((x) => `${x.local}/${x.prefixlen}`).sort(), ['10.211.0.1/24', '10.211.1.1/32']);
  assert.throws(() => nl.addAddress(idx, '10.211.0.1/24'), /Cannot add address "10.211.0.1\/24" to link \d+: File exists/);
  assert.equal(nl.deleteAddress(idx, '10.211.0.1/24'), true);
  assert.equal(nl.deleteAddress(idx, '10.211.0.1/24'), false);
  assert.deepEqual(nl.listAddresses(idx).map((x) => x.address), ['10.211.1.1']);
});

test('addRoute() X/32 scope link and default via X; listRoutes(); deleteRoute() false when gone', () => {
  const a = makeNs('route');
  const nl = nlIn(a);
  nl.createVeth({ name: 'eth0', peerName: L('rv1') });
  const idx = nl.getLink('eth0')!.index;
  nl.setLink(idx, { up: true });
  nl.addAddress(idx, '10.212.0.2/32');
  nl.addRoute({ dst: '10.212.0.1/32', ifindex: idx, scope: 'link' });
  nl.addRoute({ dst: '0.0.0.0/0', gateway: '10.212.0.1', ifindex: idx, mtu: 1400 });
  nl.addRoute({ dst: '10.99.0.0/16', gateway: '10.212.0.1', ifindex: idx, table: 1000 });
  const routes = nl.listRoutes();
  const gw = routes.find((r) => r.dst === '10.212.0.1/32');
  assert.deepEqual(gw, { dst: '10.212.0.1/32', ifindex: idx, scope: 'link', table: 254, protocol: 3 });
  const def = routes.find((r) => r.dst === '0.0.0.0/0');
  assert.deepEqual(def, { dst: '0.0.0.0/0', gateway: '10.212.0.1', ifindex: idx, scope: 'universe', table: 254, protocol: 3, mtu: 1400 });
  assert.equal(routes.some((r) => r.dst === '10.99.0.0/16'), false, 'other tables stay out of the main listing');
  assert.deepEqual(nl.listRoutes({ table: 1000 }).map((r) => r.dst), ['10.99.0.0/16']);
  const j = ipJson<Array<{ dst: string; gateway?: string; scope?: string }>>(a, 'route', 'show');
  assert.ok(j.some((r) => r.dst === 'default' && r.gateway === '10.212.0.1'));
  assert.ok(j.some((r) => r.dst === '10.212.0.1' && r.scope === 'link'));
  // replace changes, plain add of an existing route is refused
  assert.throws(() => nl.addRoute({ dst: '0.0.0.0/0', gateway: '10.212.0.1', ifindex: idx }), /File exists \(EEXIST\)/);
  nl.addRoute({ dst: '0.0.0.0/0', gateway: '10.212.0.1', ifindex: idx, mtu: 1300, replace: true });
  assert.equal(nl.listRoutes().find((r) => r.dst === '0.0.0.0/0')?.mtu, 1300);
  // the kernel's extended ack reaches the message
  assert.throws(
    () => nl.addRoute({ dst: '10.50.0.0/24', gateway: '10.77.0.1' }),
    (e: unknown) =>
      e instanceof KernelError &&
      e.is('ENETUNREACH') &&
      e.message === 'Cannot add route "10.50.0.0/24 via 10.77.0.1": Network is unreachable (ENETUNREACH): Nexthop has invalid gateway',
  );
  assert.equal(nl.deleteRoute({ dst: '0.0.0.0/0' }), true);
  assert.equal(nl.deleteRoute({ dst: '0.0.0.0/0' }), false);
  assert.equal(nl.deleteRoute({ dst: '10.99.0.0/16', table: 1000 }), true);
});

test('listRoutes() reads a dump spanning many datagrams', () => {
  const a = makeNs('bigdump');
  const nl = nlIn(a);
  nl.createVeth({ name: L('dv0'), peerName: L('dv1') });
  const idx = nl.getLink(L('dv0'))!.index;
  nl.setLink(idx, { up: true });
  for (let i = 0; i < 1000; i++) nl.addRoute({ dst: `10.${100 + (i >> 8)}.${i & 255}.0/24`, ifindex: idx });
  const routes = nl.listRoutes().filter((r) => r.ifindex === idx);
  assert.equal(routes.length, 1000); // ~1000 x 60 bytes: well beyond one 32 KiB dump datagram
  assert.equal(new Set(routes.map((r) => r.dst)).size, 1000);
});

test('addNeighbor() creates a permanent entry; deleteNeighbor() false when gone', () => {
  const a = makeNs('neigh');
  const nl = nlIn(a);
  nl.createVeth({ name: L('nv0'), peerName: L('nv1') });
  const idx = nl.getLink(L('nv0'))!.index;
  nl.addNeighbor({ ifindex: idx, ip: '10.213.0.9', mac: '02:00:00:00:cc:09' });
  const n = nl.listNeighbors(idx).find((x) => x.ip === '10.213.0.9');
  assert.deepEqual(n, { ifindex: idx, ip: '10.213.0.9', mac: '02:00:00:00:cc:09', state: 0x80, permanent: true });
  const j = ipJson<Array<{ dst: string; lladdr: string; state: string[] }>>(a, 'neigh', 'show', 'dev', L('nv0'));
  assert.deepEqual(j.map((x) => [x.dst, x.lladdr, x.state]), [['10.213.0.9', '02:00:00:00:cc:09', ['PERMANENT']]]);
  assert.throws(() => nl.addNeighbor({ ifindex: idx, ip: '10.213.0.9', mac: '02:00:00:00:cc:0a' }), /EEXIST/);
  nl.addNeighbor({ ifindex: idx, ip: '10.213.0.9', mac: '02:00:00:00:cc:0a', replace: true });
  assert.equal(nl.listNeighbors(idx)[0]?.mac, '02:00:00:00:cc:0a');
  assert.equal(nl.deleteNeighbor({ ifindex: idx, ip: '10.213.0.9' }), true);
  assert.equal(nl.deleteNeighbor({ ifindex: idx, ip: '10.213.0.9' }), false);
});

test('a pod-like namespace pings its host side over a veth wired only through Netlink', () => {
  const host = makeNs('host');
  const pod = makeNs('pod');
  const hnl = nlIn(host);
  const pnl = nlIn(pod);
  hnl.createVeth({
    name: L('lxc0'),
    peerName: 'eth0',
    peerNetns: pod,
    mac: '02:00:00:00:dd:01',
    peerMac: '02:00:00:00:dd:02',
    txqueuelen: 1000,
  });
  const lxc = hnl.getLink(L('lxc0'))!.index;
  const eth0 = pnl.getLink('eth0')!.index;
  hnl.setLink(lxc, { up: true });
  hnl.addAddress(lxc, '10.214.0.1/32');
  hnl.addRoute({ dst: '10.214.0.2/32', ifindex: lxc, scope: 'link' });
  hnl.addNeighbor({ ifindex: lxc, ip: '10.214.0.2', mac: '02:00:00:00:dd:02' });
  pnl.setLink(eth0, { up: true });
  pnl.addAddress(eth0, '10.214.0.2/32');
  pnl.addRoute({ dst: '10.214.0.1/32', ifindex: eth0, scope: 'link' });
  pnl.addRoute({ dst: '0.0.0.0/0', gateway: '10.214.0.1', ifindex: eth0 });
  pnl.addNeighbor({ ifindex: eth0, ip: '10.214.0.1', mac: '02:00:00:00:dd:01' });
  const r = spawnSync('nsenter', [`--net=${pod.path}`, 'ping', '-c1', '-W5', '10.214.0.1'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(r.status, 0, `ping failed: ${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}`);
  assert.match(r.stdout, /1 received/);
  // an address nobody has does not answer: the ping above proved the wiring, not a fluke
  const miss = spawnSync('nsenter', [`--net=${pod.path}`, 'ping', '-c1', '-W1', '10.214.0.77'], { encoding: 'utf8' });
  assert.notEqual(miss.status, 0);
});

test('createBridge() and setLink({ masterIndex }) enslave a veth; masterIndex 0 releases it', () => {
  const a = makeNs('bridge');
  const nl = nlIn(a);
  nl.createBridge({ name: L('tbr0'), mtu: 1400, mac: '02:00:00:00:ee:01' });
  const br = nl.getLink(L('tbr0'));
  assert.ok(br);
  assert.equal(br.kind, 'bridge');
  assert.equal(br.mac, '02:00:00:00:ee:01');
  nl.createVeth({ name: L('bv0'), peerName: L('bv1'), mtu: 1400 });
  nl.setLink(L('bv0'), { masterIndex: br.index, up: true });
  assert.equal(nl.getLink(L('bv0'))?.masterIndex, br.index);
  const [j] = ipJson<Array<{ master?: string }>>(a, 'link', 'show', L('bv0'));
  assert.equal(j?.master, L('tbr0'));
  nl.setLink(L('bv0'), { masterIndex: 0 });
  assert.equal(nl.getLink(L('bv0'))?.masterIndex, undefined);
});

test('createVxlan() makes a collect-metadata device on the given port without learning', () => {
  const a = makeNs('vxlan');
  const nl = nlIn(a);
  nl.createVxlan({ name: L('tvx0'), port: 8472, external: true, learning: false, mtu: 1450 });
  const l = nl.getLink(L('tvx0'));
  assert.equal(l?.kind, 'vxlan');
  assert.equal(l?.mtu, 1450);
  const [j] = ipJson<Array<{ linkinfo: { info_kind: string; info_data: { external?: boolean; port: number; learning: boolean } } }>>(
    a, '-d', 'link', 'show', L('tvx0'));
  assert.equal(j?.linkinfo.info_kind, 'vxlan');
  assert.equal(j?.linkinfo.info_data.external, true);
  assert.equal(j?.linkinfo.info_data.port, 8472);
  assert.equal(j?.linkinfo.info_data.learning, false);
});

test('setLink({ netns }) moves a link into another namespace', () => {
  const a = makeNs('mova');
  const b = makeNs('movb');
  const nla = nlIn(a);
  const nlb = nlIn(b);
  nla.createVeth({ name: L('mv0'), peerName: L('mv1') });
  nla.setLink(L('mv1'), { netns: b });
  assert.equal(nla.getLink(L('mv1')), undefined);
  assert.equal(nlb.getLink(L('mv1'))?.kind, 'veth');
});

/** Loads `r0 = 0; exit` (TC_ACT_OK) as a sched_cls program; returns its fd. */
function loadPassProgram(): number {
  const insns = Buffer.from('b700000000000000' + '9500000000000000', 'hex');
  const license = Buffer.from('GPL\0');
  const attr = Buffer.alloc(128);
  attr.writeUInt32LE(3, 0); // BPF_PROG_TYPE_SCHED_CLS
  attr.writeUInt32LE(2, 4); // insn_cnt
  attr.writeBigUInt64LE(addressOf(insns), 8);
  attr.writeBigUInt64LE(addressOf(license), 16);
  attr.write('tdlt_pass', 48);
  const fd = bpfSyscall(5 /* BPF_PROG_LOAD */, attr);
  // keep the buffers reachable until the syscall has returned
  assert.ok(insns.length + license.length > 0);
  return fd;
}

test('ensureClsact() is idempotent; attach/detach of a direct-action cls_bpf filter', () => {
  const a = makeNs('tc');
  const nl = nlIn(a);
  nl.createVeth({ name: L('tc0'), peerName: L('tc1') });
  const idx = nl.getLink(L('tc0'))!.index;
  assert.equal(nl.hasClsact(idx), false);
  assert.equal(nl.detachBpfFilter({ ifindex: idx, direction: 'ingress' }), false, 'no clsact: nothing to detach');
  nl.ensureClsact(idx);
  nl.ensureClsact(idx);
  assert.equal(nl.hasClsact(idx), true);
  assert.match(run('tc', ['-n', nsName(a), 'qdisc', 'show', 'dev', L('tc0')]), /qdisc clsact ffff: parent ffff:fff1/);
  const fd = loadPassProgram();
  try {
    nl.attachBpfFilter({ ifindex: idx, direction: 'ingress', progFd: fd, name: 'cil_from_container' });
    nl.attachBpfFilter({ ifindex: idx, direction: 'ingress', progFd: fd, name: 'cil_from_container' }); // replace
    nl.attachBpfFilter({ ifindex: idx, direction: 'egress', progFd: fd, name: 'cil_to_container', prio: 2, handle: 5 });
    const ing = nl.listBpfFilters(idx, 'ingress');
    assert.equal(ing.length, 1);
    assert.equal(ing[0]?.name, 'cil_from_container');
    assert.equal(ing[0]?.directAction, true);
    assert.equal(ing[0]?.prio, 1);
    assert.equal(ing[0]?.handle, 1);
    assert.ok((ing[0]?.progId ?? 0) > 0);
    const eg = nl.listBpfFilters(idx, 'egress');
    assert.deepEqual(eg.map((f) => [f.name, f.prio, f.handle, f.direction]), [['cil_to_container', 2, 5, 'egress']]);
    const shown = run('tc', ['-n', nsName(a), 'filter', 'show', 'dev', L('tc0'), 'ingress']);
    assert.match(shown, /bpf chain 0 handle 0x1 cil_from_container direct-action/);
    assert.equal(nl.detachBpfFilter({ ifindex: idx, direction: 'ingress' }), true);
    assert.equal(nl.detachBpfFilter({ ifindex: idx, direction: 'ingress' }), false);
    assert.equal(nl.detachBpfFilter({ ifindex: idx, direction: 'egress', prio: 2, handle: 5 }), true);
    assert.deepEqual(nl.listBpfFilters(idx, 'egress'), []);
  } finally {
    closeFd(fd);
  }
});
