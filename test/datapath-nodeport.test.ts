// NodePort from outside in host.o's cil_from_netdev and lxc.o's cil_from_container, run on crafted packets through
// BPF_PROG_TEST_RUN (root; nothing is attached; the two objects share their pinned maps): node IP:nodePort -> a local
// backend with the client's address kept and the backend's reply back from the node port; -> a remote backend with
// the source translated to the node IP and a NAT port, and its reply reverse-translated twice; externalTrafficPolicy
// Local without a local backend answered with ICMP port unreachable; a port outside the node-port range untouched.
// The same for a LoadBalancer IP (an exact frontend with LB_F_EXTERNAL): replies from the LB IP; a ClusterIP untouched.
import { rmSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, skbCtx, u8, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import {
  IPCACHE_F_HAS_TUNNEL_EP,
  IPCACHE_MAP,
  LXC_IF_MAP,
  METRICS_MAP,
  METRIC_DIR_INGRESS,
  metricsKeyCodec,
  metricsValueCodec,
  LXC_MAP,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
  ipcacheKeyCodec,
  ipcacheValueCodec,
  type EndpointInfo,
} from '../src/datapath/maps.js';
import { DROP_NOT_IN_SRC_RANGE, LB4_CT_MAP, LB4_SOURCE_RANGE_MAP, LB_SCOPE_EXTERNAL, LbDatapath, lb4SourceRangeKeyCodec, type Frontend } from '../src/lb/index.js';
import { parseIPv4, parseMac } from '../src/util/ip.js';

const TC_ACT_REDIRECT = 7;
const root = fileURLToPath(new URL('../../', import.meta.url));
const LO = 1;
const NODE = '192.0.2.9';
const CLIENT = '198.51.100.7';
const NODE_PORT = 30080;
const local: EndpointInfo = { ifindex: LO, lxcId: 21, flags: 0, mac: '02:00:0a:c9:00:15', nodeMac: '02:00:0a:c9:01:15', secId: 2021, ip4: '10.201.0.21' };
const REMOTE = '10.202.0.5';
const REMOTE_NODE = '192.0.2.10';

function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2) s += buf[buf.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function l4Sum(src: string, dst: string, proto: number, l4: Buffer): number {
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(parseIPv4(src), 0);
  pseudo.writeUInt32BE(parseIPv4(dst), 4);
  pseudo[9] = proto;
  pseudo.writeUInt16BE(l4.length, 10);
  return sum16(Buffer.concat([pseudo, l4]));
}

/* Ethernet + IPv4 + TCP (SYN) or UDP, checksums filled in. */
function packet(o: { src: string; dst: string; sport: number; dport: number; proto: 6 | 17 }): Buffer {
  const l4 = Buffer.alloc(o.proto === 6 ? 20 : 12);
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
  parseMac('02:00:00:00:00:02').copy(eth, 0);
  parseMac('02:00:00:00:00:01').copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, ip, l4]);
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

const pinRoot = `/sys/fs/bpf/tendril-nptest-${process.pid}-${Date.now().toString(36)}`;
let host: Collection | undefined;
let lxc: Collection | undefined;
let fromNetdev: BpfProgram;
let fromContainer: BpfProgram;
let lxcIf: TypedMap<number, EndpointInfo>;

function netdev(p: Parameters<typeof packet>[0]): { retval: number; out: Buffer } {
  const r = fromNetdev.run({ data: packet(p), ctx: skbCtx({ ifindex: LO }) });
  return { retval: r.retval, out: r.data };
}

function container(p: Parameters<typeof packet>[0]): { retval: number; out: Buffer } {
  lxcIf.put(LO, local);
  const r = fromContainer.run({ data: packet(p), ctx: skbCtx({ ifindex: LO }) });
  return { retval: r.retval, out: r.data };
}

function sync(frontends: Frontend[]): void {
  new LbDatapath((n) => host!.map(n), { algorithm: 'random', maglevTableSize: 251 }).sync(frontends);
}

const np = (backends: string[], extra: Partial<Frontend> = {}): Frontend => ({
  address: '0.0.0.0',
  port: NODE_PORT,
  protocol: 'TCP',
  service: 'edge/web',
  type: 'NodePort',
  backends: backends.map((ip) => ({ ip, port: 8080 })),
  ...extra,
});

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-nodeport.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(pinRoot, { recursive: true });
  const be32 = (ip: string): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIPv4(ip));
    return b;
  };
  // Tunnel mode (the default constant): a remote backend is reached through the tunnel.
  const constants = { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32(NODE), CONFIG_NATIVE_IFINDEX: LO, CONFIG_TUNNEL_IFINDEX: LO };
  host = Collection.load(root + 'build/bpf/host.o', { constants, pinRoot });
  lxc = Collection.load(root + 'build/bpf/lxc.o', { constants, pinRoot });
  fromNetdev = host.program('cil_from_netdev');
  fromContainer = lxc.program('cil_from_container');
  lxcIf = lxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  host.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: local.ip4 }, local);
  const ipcache = host.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
  ipcache.put({ prefix: '10.202.0.0/24' }, { identity: 3000, tunnelEndpoint: REMOTE_NODE, nodeId: 0, flags: IPCACHE_F_HAS_TUNNEL_EP, key: 0 });
});

after(() => {
  host?.close();
  lxc?.close();
  rmSync(pinRoot, { recursive: true, force: true });
});

beforeEach(() => {
  sync([]);
  const m = host!.map(LB4_CT_MAP);
  for (const k of [...m.keys()]) m.delete(k);
});

test('node IP:nodePort from outside reaches a local backend with the client\'s address; the reply leaves from the node port', () => {
  sync([np([local.ip4])]);
  const r = netdev({ src: CLIENT, dst: NODE, sport: 40000, dport: NODE_PORT, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'delivered into the backend pod');
  assert.deepEqual(parse(r.out), { src: CLIENT, dst: local.ip4, sport: 40000, dport: 8080, proto: 6 });
  const reply = container({ src: local.ip4, dst: CLIENT, sport: 8080, dport: 40000, proto: 6 });
  assert.equal(reply.retval, TC_ACT_REDIRECT, 'out of the native device, not to the stack');
  assert.deepEqual(parse(reply.out), { src: NODE, dst: CLIENT, sport: NODE_PORT, dport: 40000, proto: 6 });
});

test('a remote backend is reached from the node IP and a NAT port; its reply gets the client and the node port back', () => {
  sync([np([REMOTE])]);
  const r = netdev({ src: CLIENT, dst: NODE, sport: 40001, dport: NODE_PORT, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'into the tunnel');
  const fwd = parse(r.out);
  assert.equal(fwd.src, NODE, 'SNAT to the node IP');
  assert.equal(fwd.dst, REMOTE);
  assert.equal(fwd.dport, 8080);
  assert.ok(fwd.sport >= 32768 && fwd.sport <= 60999, `a port of the NAT range: ${fwd.sport}`);
  // The same connection keeps its port.
  assert.equal(parse(netdev({ src: CLIENT, dst: NODE, sport: 40001, dport: NODE_PORT, proto: 6 }).out).sport, fwd.sport);
  const reply = netdev({ src: REMOTE, dst: NODE, sport: 8080, dport: fwd.sport, proto: 6 });
  assert.equal(reply.retval, TC_ACT_REDIRECT, 'straight back out');
  assert.deepEqual(parse(reply.out), { src: NODE, dst: CLIENT, sport: NODE_PORT, dport: 40001, proto: 6 });
});

test('UDP: a remote backend, translated both ways with valid checksums', () => {
  sync([np([REMOTE], { protocol: 'UDP' })]);
  const fwd = parse(netdev({ src: CLIENT, dst: NODE, sport: 5000, dport: NODE_PORT, proto: 17 }).out);
  assert.equal(fwd.src, NODE);
  assert.equal(fwd.dst, REMOTE);
  const reply = parse(netdev({ src: REMOTE, dst: NODE, sport: 8080, dport: fwd.sport, proto: 17 }).out);
  assert.deepEqual(reply, { src: NODE, dst: CLIENT, sport: NODE_PORT, dport: 5000, proto: 17 });
});

test('externalTrafficPolicy Local: without a local backend the client gets ICMP port unreachable; with one only it answers', () => {
  sync([np([REMOTE], { extLocal: true }), np([], { scope: LB_SCOPE_EXTERNAL })]);
  const r = netdev({ src: CLIENT, dst: NODE, sport: 40002, dport: NODE_PORT, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'answered');
  const icmp = parse(r.out);
  assert.equal(icmp.proto, 1);
  assert.equal(icmp.src, NODE);
  assert.equal(icmp.dst, CLIENT);
  assert.equal(r.out[34], 3, 'destination unreachable');
  assert.equal(r.out[35], 3, 'port unreachable');

  sync([np([REMOTE, local.ip4], { extLocal: true }), np([local.ip4], { scope: LB_SCOPE_EXTERNAL })]);
  for (let sport = 41000; sport < 41016; sport++) {
    const got = parse(netdev({ src: CLIENT, dst: NODE, sport, dport: NODE_PORT, proto: 6 }).out);
    assert.deepEqual(got, { src: CLIENT, dst: local.ip4, sport, dport: 8080, proto: 6 });
  }
});

test('a port outside the node-port range, and a node port with no service, pass untouched', () => {
  sync([np([local.ip4])]);
  for (const dport of [22, NODE_PORT + 1]) {
    const r = netdev({ src: CLIENT, dst: NODE, sport: 40003, dport, proto: 6 });
    assert.deepEqual(parse(r.out), { src: CLIENT, dst: NODE, sport: 40003, dport, proto: 6 });
  }
});

// A LoadBalancer IP (LB IPAM's, announced on the native device): the frontend's exact address, LB_F_EXTERNAL.
const LB_IP = '192.0.2.240';
const lbf = (backends: string[], extra: Partial<Frontend> = {}): Frontend => ({
  address: LB_IP,
  port: 80,
  protocol: 'TCP',
  service: 'edge/web',
  type: 'LoadBalancer',
  external: true,
  backends: backends.map((ip) => ({ ip, port: 8080 })),
  ...extra,
});

test('LB IP:80 from outside reaches a local backend with the client\'s address; the reply leaves with the LB IP as source', () => {
  sync([lbf([local.ip4])]);
  const r = netdev({ src: CLIENT, dst: LB_IP, sport: 42000, dport: 80, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'delivered into the backend pod');
  assert.deepEqual(parse(r.out), { src: CLIENT, dst: local.ip4, sport: 42000, dport: 8080, proto: 6 });
  const reply = container({ src: local.ip4, dst: CLIENT, sport: 8080, dport: 42000, proto: 6 });
  assert.equal(reply.retval, TC_ACT_REDIRECT, 'out of the native device');
  assert.deepEqual(parse(reply.out), { src: LB_IP, dst: CLIENT, sport: 80, dport: 42000, proto: 6 });
});

test('LB IP:80 to a remote backend: SNAT to the node IP and a NAT port; the reply gets the LB IP and the client back', () => {
  sync([lbf([REMOTE])]);
  const r = netdev({ src: CLIENT, dst: LB_IP, sport: 42001, dport: 80, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'into the tunnel');
  const fwd = parse(r.out);
  assert.equal(fwd.src, NODE, 'SNAT to the node IP');
  assert.equal(fwd.dst, REMOTE);
  assert.equal(fwd.dport, 8080);
  assert.ok(fwd.sport >= 32768 && fwd.sport <= 60999, `a port of the NAT range: ${fwd.sport}`);
  const reply = netdev({ src: REMOTE, dst: NODE, sport: 8080, dport: fwd.sport, proto: 6 });
  assert.equal(reply.retval, TC_ACT_REDIRECT, 'straight back out');
  assert.deepEqual(parse(reply.out), { src: LB_IP, dst: CLIENT, sport: 80, dport: 42001, proto: 6 });
});

test('LB IP with externalTrafficPolicy Local: only the local backend from outside; none: ICMP port unreachable', () => {
  sync([lbf([REMOTE, local.ip4], { extLocal: true }), lbf([local.ip4], { scope: LB_SCOPE_EXTERNAL })]);
  for (let sport = 43000; sport < 43016; sport++) {
    assert.deepEqual(parse(netdev({ src: CLIENT, dst: LB_IP, sport, dport: 80, proto: 6 }).out), { src: CLIENT, dst: local.ip4, sport, dport: 8080, proto: 6 });
  }
  sync([lbf([REMOTE], { extLocal: true }), lbf([], { scope: LB_SCOPE_EXTERNAL })]);
  const r = netdev({ src: CLIENT, dst: LB_IP, sport: 43100, dport: 80, proto: 6 });
  assert.equal(r.retval, TC_ACT_REDIRECT, 'answered');
  const icmp = parse(r.out);
  assert.equal(icmp.proto, 1);
  assert.equal(icmp.src, LB_IP, 'from the LoadBalancer IP the client asked');
  assert.equal(icmp.dst, CLIENT);
  assert.equal(r.out[34], 3, 'destination unreachable');
  assert.equal(r.out[35], 3, 'port unreachable');
});

test('another port of the LB IP, and a frontend not served from outside (a ClusterIP), pass untouched', () => {
  sync([lbf([local.ip4]), lbf([local.ip4], { address: '10.96.0.10', type: 'ClusterIP', external: false })]);
  for (const [dst, dport] of [[LB_IP, 81], ['10.96.0.10', 80]] as const) {
    const r = netdev({ src: CLIENT, dst, sport: 43200, dport, proto: 6 });
    assert.deepEqual(parse(r.out), { src: CLIENT, dst, sport: 43200, dport, proto: 6 });
  }
});

test('loadBalancerSourceRanges: a client inside a range reaches the LB IP, one outside is dropped (DROP_NOT_IN_SRC_RANGE); ranges follow the frontend', () => {
  const TC_ACT_SHOT = 2;
  const ranges = host!.map(LB4_SOURCE_RANGE_MAP).typed(lb4SourceRangeKeyCodec, u8);
  sync([lbf([local.ip4], { sourceRanges: ['198.51.100.0/28', '203.0.113.9/32'] })]);
  assert.deepEqual([...ranges.keys()].map((k) => k.cidr).sort(), ['198.51.100.0/28', '203.0.113.9/32']);
  for (const [src, sport] of [[CLIENT, 44000], ['203.0.113.9', 44001]] as const) {
    const r = netdev({ src, dst: LB_IP, sport, dport: 80, proto: 6 });
    assert.equal(r.retval, TC_ACT_REDIRECT, `${src} is in a range`);
    assert.deepEqual(parse(r.out), { src, dst: local.ip4, sport, dport: 8080, proto: 6 });
  }
  for (const src of ['198.51.100.16', '203.0.113.8', '10.9.9.9']) {
    assert.equal(netdev({ src, dst: LB_IP, sport: 44002, dport: 80, proto: 6 }).retval, TC_ACT_SHOT, `${src} is outside every range`);
  }
  // The drop has its own reason in the metrics (Cilium's 177, "Denied by LB src range check").
  const m = host!.map(METRICS_MAP);
  let dropped = 0;
  for (const raw of m.keys()) {
    const k = metricsKeyCodec.decode(raw);
    if (k.reason !== -DROP_NOT_IN_SRC_RANGE || k.dir !== METRIC_DIR_INGRESS) continue;
    for (const v of m.lookupPerCpu(raw) ?? []) dropped += Number(metricsValueCodec.decode(v).packets);
  }
  assert.equal(dropped, 3, 'three ingress drops counted with reason 177');
  // The node port of the same service is not restricted.
  sync([lbf([local.ip4], { sourceRanges: ['198.51.100.0/28'] }), np([local.ip4])]);
  assert.equal(netdev({ src: '10.9.9.9', dst: NODE, sport: 44003, dport: NODE_PORT, proto: 6 }).retval, TC_ACT_REDIRECT, 'node port from outside the ranges');
  // Without ranges any client passes, and the trie holds nothing of the frontend.
  sync([lbf([local.ip4])]);
  assert.deepEqual([...ranges.keys()], []);
  assert.equal(netdev({ src: '10.9.9.9', dst: LB_IP, sport: 44004, dport: 80, proto: 6 }).retval, TC_ACT_REDIRECT);
});
