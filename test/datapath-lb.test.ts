// Service load-balancing in lxc.o, run on crafted packets through BPF_PROG_TEST_RUN (root; nothing is attached):
// frontend -> backend translation with valid checksums, reverse translation of the reply, per-connection
// stickiness (also when backends are added), random spread, Maglev lookups as the agent computed the table,
// session affinity, and the ICMP port unreachable of a service without backends.
import { mkdirSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, cgroupIdLevel, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { cgroup2Root } from '../src/lab/cgroups.js';
import { IPCACHE_MAP, LXC_IF_MAP, LXC_MAP, endpointInfoCodec, endpointKeyCodec, ifindexKeyCodec, ipcacheKeyCodec, ipcacheValueCodec, type EndpointInfo, type EndpointKey } from '../src/datapath/maps.js';
import { LB4_CT_MAP, LB4_AFFINITY_MAP, LbDatapath, maglevTable, type Frontend, type LbDatapathOptions } from '../src/lb/index.js';
import { parseIPv4, parseMac } from '../src/util/ip.js';

const TC_ACT_REDIRECT = 7;
const root = fileURLToPath(new URL('../../', import.meta.url));
const LO = 1;
const VIP = '10.96.0.10';
const client: EndpointInfo = { ifindex: LO, lxcId: 11, flags: 0, mac: '02:00:0a:c9:00:0b', nodeMac: '02:00:0a:c9:01:0b', secId: 2001, ip4: '10.201.0.11' };
const backendPods: EndpointInfo[] = [21, 22, 23, 24].map((n) => ({
  ifindex: 5000 + n,
  lxcId: n,
  flags: 0,
  mac: `02:00:0a:c9:00:${n.toString(16)}`,
  nodeMac: `02:00:0a:c9:01:${n.toString(16)}`,
  secId: 2000 + n,
  ip4: `10.201.0.${n}`,
}));

function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2) s += buf[buf.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/* Ethernet + IPv4 + TCP (SYN) or UDP, checksums filled in. */
function packet(o: { src: string; dst: string; sport: number; dport: number; proto: 6 | 17; smac: string; dmac: string }): Buffer {
  const l4 = Buffer.alloc(o.proto === 6 ? 20 : 8 + 4);
  l4.writeUInt16BE(o.sport, 0);
  l4.writeUInt16BE(o.dport, 2);
  if (o.proto === 6) {
    l4[12] = 5 << 4;
    l4[13] = 0x02;
    l4.writeUInt16BE(65535, 14);
  } else {
    l4.writeUInt16BE(l4.length, 4);
    l4.write('ping', 8);
  }
  l4.writeUInt16BE(~l4Sum(o.src, o.dst, o.proto, l4) & 0xffff, o.proto === 6 ? 16 : 6);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip[8] = 64;
  ip[9] = o.proto;
  ip.writeUInt32BE(parseIPv4(o.src), 12);
  ip.writeUInt32BE(parseIPv4(o.dst), 16);
  ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);
  const eth = Buffer.alloc(14);
  parseMac(o.dmac).copy(eth, 0);
  parseMac(o.smac).copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, ip, l4]);
}

function l4Sum(src: string, dst: string, proto: number, l4: Buffer): number {
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(parseIPv4(src), 0);
  pseudo.writeUInt32BE(parseIPv4(dst), 4);
  pseudo[9] = proto;
  pseudo.writeUInt16BE(l4.length, 10);
  return sum16(Buffer.concat([pseudo, l4]));
}

interface Parsed {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}

const ipText = (b: Buffer, off: number): string => [...b.subarray(off, off + 4)].join('.');

/* Parses the output and asserts both checksums hold. */
function parse(pkt: Buffer): Parsed {
  const ip = pkt.subarray(14, 34);
  assert.equal(sum16(ip), 0xffff, 'IP header checksum');
  const l4 = pkt.subarray(34, 14 + ip.readUInt16BE(2));
  const src = ipText(pkt, 26);
  const dst = ipText(pkt, 30);
  if (ip[9] === 6 || ip[9] === 17) assert.equal(l4Sum(src, dst, ip[9]!, l4), 0xffff, 'L4 checksum');
  return { src, dst, sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), proto: ip[9]! };
}

/* The datapath's lb4_hash() of a tuple (fields as the CPU loads them: network-order bytes read little-endian). */
function lb4Hash(t: Parsed): number {
  const le32 = (ip: string): number => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(ip));
    return b.readUInt32LE(0);
  };
  const le16 = (port: number): number => ((port & 0xff) << 8) | (port >>> 8);
  const mix = (h: number, v: number): number => (h ^ ((v + 0x7f4a7c15 + ((h << 6) >>> 0) + (h >>> 2)) >>> 0)) >>> 0;
  let h = Math.imul(le32(t.src), 0x9e3779b1) >>> 0;
  h = mix(h, le32(t.dst));
  h = mix(h, (((le16(t.sport) << 16) >>> 0) | le16(t.dport)) >>> 0);
  h = mix(h, t.proto);
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  return h;
}

const pinRoot = `/sys/fs/bpf/tendril-lbtest-${process.pid}-${Date.now().toString(36)}`;
let lxc: Collection | undefined;
let prog: BpfProgram;
let lxcMap: TypedMap<EndpointKey, EndpointInfo>;
let lxcIf: TypedMap<number, EndpointInfo>;

function lbWith(opts: LbDatapathOptions): LbDatapath {
  return new LbDatapath((n) => lxc!.map(n), opts);
}

function frontend(n: number, proto: 'TCP' | 'UDP' = 'TCP', port = 80, extra: Partial<Frontend> = {}): Frontend {
  return { address: VIP, port, protocol: proto, service: 'default/web', type: 'ClusterIP', backends: backendPods.slice(0, n).map((b) => ({ ip: b.ip4, port: 8080 })), ...extra };
}

function send(sport: number, o: { proto?: 6 | 17; dport?: number; from?: EndpointInfo; dst?: string } = {}): { retval: number; out: Buffer } {
  const from = o.from ?? client;
  lxcIf.put(LO, from);
  const data = packet({ src: from.ip4, dst: o.dst ?? VIP, sport, dport: o.dport ?? 80, proto: o.proto ?? 6, smac: from.mac, dmac: from.nodeMac });
  const r = prog.run({ data, ctx: skbCtx({ ifindex: LO }) });
  return { retval: r.retval, out: r.data };
}

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-lb.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(pinRoot, { recursive: true });
  const be32 = (ip: string): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(ip));
    return b;
  };
  lxc = Collection.load(root + 'build/bpf/lxc.o', { constants: { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32('192.0.2.9') }, pinRoot });
  prog = lxc.program('cil_from_container');
  lxcMap = lxc.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
  lxcIf = lxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  for (const ep of [client, ...backendPods]) lxcMap.put({ ip4: ep.ip4 }, ep);
});

after(() => {
  lxc?.close();
  rmSync(pinRoot, { recursive: true, force: true });
});

beforeEach(() => {
  // Each case starts with no frontend and no pinned connection.
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([]);
  for (const name of [LB4_CT_MAP, LB4_AFFINITY_MAP]) {
    const m = lxc!.map(name);
    for (const k of [...m.keys()]) m.delete(k);
  }
});

test('cil_from_container translates a ClusterIP to a backend and the reply back to the ClusterIP', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(1)]);
  const r = send(40000);
  assert.equal(r.retval, TC_ACT_REDIRECT, 'delivered to the backend pod of this node');
  const fwd = parse(r.out);
  assert.deepEqual(fwd, { src: client.ip4, dst: backendPods[0]!.ip4, sport: 40000, dport: 8080, proto: 6 });

  // The backend answers: on the way into the client it gets the frontend back.
  const reply = send(8080, { from: backendPods[0]!, dst: client.ip4, dport: 40000 });
  assert.equal(reply.retval, TC_ACT_REDIRECT);
  assert.deepEqual(parse(reply.out), { src: VIP, dst: client.ip4, sport: 80, dport: 40000, proto: 6 });

  // Direct pod-to-pod traffic is left alone.
  const direct = send(40001, { dst: backendPods[1]!.ip4, dport: 8080 });
  assert.deepEqual(parse(direct.out), { src: client.ip4, dst: backendPods[1]!.ip4, sport: 40001, dport: 8080, proto: 6 });
});

test('cil_from_container translates UDP with a valid checksum and leaves other ports of the ClusterIP alone', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(1, 'UDP', 53)]);
  const r = parse(send(5353, { proto: 17, dport: 53 }).out);
  assert.deepEqual(r, { src: client.ip4, dst: backendPods[0]!.ip4, sport: 5353, dport: 8080, proto: 17 });
  const other = parse(send(5353, { proto: 6, dport: 53 }).out);
  assert.equal(other.dst, VIP, 'TCP/53 is no frontend');
});

test('cil_from_container spreads new connections over every backend and keeps each on its backend, also after backends are added', () => {
  const lb = lbWith({ algorithm: 'random', maglevTableSize: 251 });
  lb.sync([frontend(2)]);
  const first = new Map<number, string>();
  for (let sport = 41000; sport < 41064; sport++) first.set(sport, parse(send(sport).out).dst);
  assert.deepEqual(new Set(first.values()), new Set(backendPods.slice(0, 2).map((b) => b.ip4)), 'both backends chosen');
  lb.sync([frontend(4)]);
  for (const [sport, dst] of first) assert.equal(parse(send(sport).out).dst, dst, `connection from port ${sport} stays on its backend`);
  const later = new Set<string>();
  for (let sport = 42000; sport < 42100; sport++) later.add(parse(send(sport).out).dst);
  assert.equal(later.size, 4, 'new connections reach the added backends too');
});

test('cil_from_container moves a connection whose backend was removed to a remaining one', () => {
  const lb = lbWith({ algorithm: 'random', maglevTableSize: 251 });
  lb.sync([frontend(4)]);
  const pinned = new Map<number, string>();
  for (let sport = 43000; sport < 43040; sport++) pinned.set(sport, parse(send(sport).out).dst);
  const gone = backendPods[0]!.ip4;
  lb.sync([{ ...frontend(4), backends: backendPods.slice(1).map((b) => ({ ip: b.ip4, port: 8080 })) }]);
  for (const sport of pinned.keys()) assert.notEqual(parse(send(sport).out).dst, gone);
});

test('cil_from_container picks the backend the agent\'s Maglev table names for the connection\'s hash', () => {
  const size = 251;
  const lb = lbWith({ algorithm: 'maglev', maglevTableSize: size });
  const f = frontend(4);
  lb.sync([f]);
  const names = f.backends.map((b) => `${b.ip}:${b.port}`);
  const table = maglevTable(names, size);
  const seen = new Set<string>();
  for (let sport = 44000; sport < 44200; sport++) {
    const out = parse(send(sport).out);
    const expected = f.backends[table[lb4Hash({ src: client.ip4, dst: VIP, sport, dport: 80, proto: 6 }) % size]!]!.ip;
    assert.equal(out.dst, expected, `port ${sport}`);
    seen.add(out.dst);
  }
  assert.equal(seen.size, 4);
});

test('maglevTable() gives every backend a near-equal share and moves few slots when one backend is added', () => {
  const names = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
  const t = maglevTable(names, 1021);
  const counts = [0, 0, 0];
  for (const i of t) counts[i]!++;
  for (const c of counts) assert.ok(c >= 330 && c <= 351, `share ${c} of 1021`);
  const t2 = maglevTable([...names, '10.0.0.4:80'], 1021);
  let moved = 0;
  for (let i = 0; i < t.length; i++) if (t2[i] !== 3 && names[t[i]!] !== [...names, '10.0.0.4:80'][t2[i]!]) moved++;
  assert.ok(moved < 1021 * 0.1, `only ${moved} slots move between old backends`);
});

test('cil_from_container keeps a client on one backend with ClientIP session affinity', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(4, 'TCP', 80, { affinityTimeout: 600 })]);
  const seen = new Set<string>();
  for (let sport = 45000; sport < 45040; sport++) seen.add(parse(send(sport).out).dst);
  assert.equal(seen.size, 1, 'every connection of the client reaches one backend');
});

test('cil_from_container answers a service without backends with an ICMP port unreachable from the frontend', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(0), frontend(0, 'UDP')]);
  for (const proto of [6, 17] as const) {
    const sent = packet({ src: client.ip4, dst: VIP, sport: 46000, dport: 80, proto, smac: client.mac, dmac: client.nodeMac });
    const r = send(46000, { proto });
    assert.equal(r.retval, TC_ACT_REDIRECT, 'sent back into the pod at once');
    const out = r.out;
    assert.equal(out.subarray(0, 6).toString('hex'), parseMac(client.mac).toString('hex'), 'to the pod\'s MAC');
    const ip = out.subarray(14, 34);
    assert.equal(sum16(ip), 0xffff);
    assert.equal(ip[9], 1, 'ICMP');
    assert.equal(ipText(out, 26), VIP);
    assert.equal(ipText(out, 30), client.ip4);
    const icmp = out.subarray(34, 14 + ip.readUInt16BE(2));
    assert.equal(icmp[0], 3, 'destination unreachable');
    assert.equal(icmp[1], 3, 'port unreachable');
    assert.equal(sum16(icmp), 0xffff, 'ICMP checksum');
    assert.deepEqual(icmp.subarray(8, 36), sent.subarray(14, 42), 'quotes the IP header and 8 bytes of the packet');
  }
});

test('cil_from_container translates a NodePort on this node\'s IP and on a remote node\'s IP, and the reply back to the IP used', () => {
  const ipcache = lxc!.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
  ipcache.put({ prefix: '192.0.2.77' }, { identity: 6, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 });
  try {
    lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(1), { ...frontend(1), address: '0.0.0.0', port: 30080, type: 'NodePort' }]);
    for (const [nodeIp, sport] of [['192.0.2.9', 47000], ['192.0.2.77', 47001]] as const) {
      const fwd = parse(send(sport, { dst: nodeIp, dport: 30080 }).out);
      assert.deepEqual(fwd, { src: client.ip4, dst: backendPods[0]!.ip4, sport, dport: 8080, proto: 6 }, nodeIp);
      const reply = parse(send(8080, { from: backendPods[0]!, dst: client.ip4, dport: sport }).out);
      assert.deepEqual(reply, { src: nodeIp, dst: client.ip4, sport: 30080, dport: sport, proto: 6 });
    }
    // Not a node: the node port means nothing there.
    assert.equal(parse(send(47002, { dst: '198.51.100.1', dport: 30080 }).out).dst, '198.51.100.1');
  } finally {
    ipcache.delete({ prefix: '192.0.2.77' });
  }
});

test('cil_from_container forgets a service connection\'s reply entry when its port opens a direct connection to the backend', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(1)]);
  assert.equal(parse(send(48000).out).dst, backendPods[0]!.ip4);
  // The client reuses port 48000 for a connection straight to the backend (as TIME_WAIT reuse does).
  parse(send(48000, { dst: backendPods[0]!.ip4, dport: 8080 }).out);
  const reply = parse(send(8080, { from: backendPods[0]!, dst: client.ip4, dport: 48000 }).out);
  assert.equal(reply.src, backendPods[0]!.ip4, 'the direct connection\'s reply keeps the backend as its source');
});

test('cil_from_container skips the per-packet service lookup for a packet whose socket lives in the socket-LB cgroup (CONFIG_SOCK_LB_CGROUP_ID), not for others', () => {
  lbWith({ algorithm: 'random', maglevTableSize: 251 }).sync([frontend(2)]);
  const be32 = (ip: string): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(ip));
    return b;
  };
  // BPF_PROG_TEST_RUN gives the packet a socket of the calling process: its cgroup is this process's.
  const mount = cgroup2Root();
  const own = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
  assert.ok(own !== undefined, 'this process has a cgroup v2 path');
  const other = path.join(mount, `tendril-lbtest-${process.pid}`);
  mkdirSync(other, { recursive: true });
  const load = (cg: { id: bigint; level: number }): Collection =>
    Collection.load(root + 'build/bpf/lxc.o', { constants: { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32('192.0.2.9'), CONFIG_SOCK_LB_CGROUP_ID: cg.id, CONFIG_SOCK_LB_CGROUP_LEVEL: cg.level }, pinRoot });
  const mine = load(cgroupIdLevel(path.join(mount, own!)));
  const theirs = load(cgroupIdLevel(other));
  try {
    lxcIf.put(LO, client);
    const data = packet({ src: client.ip4, dst: VIP, sport: 40100, dport: 80, proto: 6, smac: client.mac, dmac: client.nodeMac });
    const r = mine.program('cil_from_container').run({ data, ctx: skbCtx({ ifindex: LO }) });
    assert.deepEqual(parse(r.data), { src: client.ip4, dst: VIP, sport: 40100, dport: 80, proto: 6 }, 'its socket is in the socket-LB cgroup: not translated');
    assert.equal([...lxc!.map(LB4_CT_MAP).keys()].length, 0, 'no per-packet LB conntrack entry');
    const t = theirs.program('cil_from_container').run({ data, ctx: skbCtx({ ifindex: LO }) });
    assert.notEqual(parse(t.data).dst, VIP, 'a socket outside the socket-LB cgroup: translated per packet');
  } finally {
    mine.close();
    theirs.close();
    rmdirSync(other);
  }
});
