// Datapath tests: lxc.o, host.o, overlay.o (and their test harnesses) run on crafted packets through
// BPF_PROG_TEST_RUN (root; nothing is attached). Native-routing cases run inside a namespace of their own whose
// routes and neighbours feed bpf_fib_lookup.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, decodeSkbCtx, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import {
  ENDPOINT_F_HOST,
  IPCACHE_F_HAS_TUNNEL_EP,
  IPCACHE_F_SKIP_TUNNEL,
  IPCACHE_MAP,
  LXC_IF_MAP,
  LXC_MAP,
  ROUTING_MODE_NATIVE,
  ROUTING_MODE_TUNNEL,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
  ipcacheKeyCodec,
  ipcacheValueCodec,
  type EndpointInfo,
  type EndpointKey,
  type IpcacheKey,
  type IpcacheValue,
} from '../src/datapath/maps.js';
import { parseIPv4, parseMac } from '../src/util/ip.js';
import { RingBuffer } from '../src/kernel/bpf/index.js';
import {
  EVENTS_LOST_DROP_RATE,
  EVENTS_LOST_MAP,
  EVENTS_LOST_RING_FULL,
  EVENTS_MAP,
  TRACE_AGG_MAP,
  TRACE_HOOK_FROM_CONTAINER,
  decodeEvent,
  traceKeyCodec,
  traceStateCodec,
  type TraceKey,
  type TraceState,
} from '../src/datapath/events.js';
import { sumPerCpu, watchEvents } from '../src/datapath/event-reader.js';
import { type DatapathEvent, type DropEvent, type ObsPoint, type TraceEvent } from '../src/datapath/index.js';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

const ETH_P_IP = 0x0800;
const ETH_P_ARP = 0x0806;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_LLDP = 0x88cc;

// Compiled to dist/test/: the repository root is two levels up.
const root = fileURLToPath(new URL('../../', import.meta.url));

/*
 * Source pod A sits on ifindex 1: BPF_PROG_TEST_RUN resolves the ctx ifindex in the caller's namespace, and lo
 * is the one device that exists everywhere. It is only the skb's ifindex of a test run; nothing is attached.
 */
const LO = 1;
const podA: EndpointInfo = {
  ifindex: LO,
  lxcId: 101,
  flags: 0,
  mac: '02:00:0a:c8:00:0a',
  nodeMac: '02:00:0a:c8:01:0a',
  secId: 1001,
  ip4: '10.200.0.10',
};
/* Destination pod B: its ifindex is only a redirect target, which a test run does not resolve. */
const podB: EndpointInfo = {
  ifindex: 4242,
  lxcId: 102,
  flags: 0,
  mac: '02:00:0a:c8:00:14',
  nodeMac: '02:00:0a:c8:01:14',
  secId: 1002,
  ip4: '10.200.0.20',
};
const ROUTER_IP = '10.200.0.1';
/* The router address as a host endpoint: in tendril_lxc but delivered by the stack. */
const hostEp: EndpointInfo = {
  ifindex: 0,
  lxcId: 0,
  flags: ENDPOINT_F_HOST,
  mac: '00:00:00:00:00:00',
  nodeMac: '00:00:00:00:00:00',
  secId: 1,
  ip4: ROUTER_IP,
};
const BCAST = 'ff:ff:ff:ff:ff:ff';

// ---- packet builder -------------------------------------------------------------------------------------

function csum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ethernet(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  parseMac(dst).copy(h, 0);
  parseMac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

function arp(op: 1 | 2, sha: string, spa: string, tha: string, tpa: string): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0); // Ethernet
  b.writeUInt16BE(ETH_P_IP, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(op, 6);
  parseMac(sha).copy(b, 8);
  b.writeUInt32BE(parseIPv4(spa), 14);
  parseMac(tha).copy(b, 18);
  b.writeUInt32BE(parseIPv4(tpa), 24);
  return b;
}

interface Ip4Opts {
  src: string;
  dst: string;
  proto: number;
  ttl?: number;
  id?: number;
  tos?: number;
}

function ipv4(o: Ip4Opts, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = o.ttl ?? 64;
  h[9] = o.proto;
  h.writeUInt32BE(parseIPv4(o.src), 12);
  h.writeUInt32BE(parseIPv4(o.dst), 16);
  h.writeUInt16BE(csum(h), 10);
  return Buffer.concat([h, payload]);
}

function icmpEcho(id: number, seq: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 8;
  b.writeUInt16BE(id, 4);
  b.writeUInt16BE(seq, 6);
  const msg = Buffer.concat([b, data]);
  msg.writeUInt16BE(csum(msg), 2);
  return msg;
}

function tcp(src: string, dst: string, sport: number, dport: number, flags: number, data: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(1000, 4);
  h[12] = 5 << 4;
  h[13] = flags;
  h.writeUInt16BE(65535, 14);
  const seg = Buffer.concat([h, data]);
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(parseIPv4(src), 0);
  pseudo.writeUInt32BE(parseIPv4(dst), 4);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(seg.length, 10);
  seg.writeUInt16BE(csum(Buffer.concat([pseudo, seg])), 16);
  return seg;
}

function ipv6Udp(): Buffer {
  const h = Buffer.alloc(40 + 8);
  h[0] = 0x60;
  h.writeUInt16BE(8, 4);
  h[6] = 17;
  h[7] = 64;
  h[8] = 0xfe;
  h[9] = 0x80;
  h[23] = 1;
  h[24] = 0xfe;
  h[25] = 0x80;
  h[39] = 2;
  h.writeUInt16BE(8, 44);
  return h;
}

function pingAtoB(o: Partial<Ip4Opts> = {}): Buffer {
  const ip = ipv4({ src: podA.ip4, dst: podB.ip4, proto: 1, ...o }, icmpEcho(7, 1, Buffer.from('tendril ping')));
  return ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ip);
}

function macAt(pkt: Buffer, off: number): string {
  return [...pkt.subarray(off, off + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function ipAt(pkt: Buffer, off: number): string {
  return [...pkt.subarray(off, off + 4)].join('.');
}

// ---- fixture -------------------------------------------------------------------------------------------

const pinRoot = `/sys/fs/bpf/tendril-test-${process.pid}-${Date.now().toString(36)}`;
let lxc: Collection | undefined;
let host: Collection | undefined;
let fromContainer: BpfProgram;
let fromHost: BpfProgram;
let lxcMap: TypedMap<EndpointKey, EndpointInfo>;
let lxcIfMap: TypedMap<number, EndpointInfo>;
let ipcache: TypedMap<IpcacheKey, IpcacheValue>;
/* Tunnel-mode and native-mode instances of the objects, sharing the pinned maps above. */
const loaded: Collection[] = [];
const tun = {} as {
  fromContainer: BpfProgram;
  keyFromContainer: BpfProgram;
  keyFromHost: BpfProgram;
  fromOverlay: BpfProgram;
  keyFromOverlay: BpfProgram;
  toOverlay: BpfProgram;
};
const nat = {} as { fromContainer: BpfProgram; fromNetdev: BpfProgram; toNetdev: BpfProgram };

/* Cross-node addresses: node 2 hosts 10.201.1.0/24 behind underlay 192.168.50.102. */
const REMOTE_NODE_IP = '192.168.50.102';
const REMOTE_POD = '10.201.1.20';
const TUNNEL_IFINDEX = 77;
const HOST_IFINDEX = 55;
const HOST_MAC = '02:00:00:00:99:98';
const IDENTITY_REMOTE_NODE = 6;

function be32(ip: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b;
}

before(() => {
  // Fail, never skip: the datapath is untested otherwise.
  assert.equal(process.getuid?.(), 0, 'test/datapath.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(pinRoot, { recursive: true });
  const constants = { CONFIG_ROUTER_IP4: be32(ROUTER_IP), CONFIG_HOST_IFINDEX: 0, CONFIG_NODE_IP4: be32('192.0.2.1') };
  lxc = Collection.load(root + 'build/bpf/lxc.o', { constants, pinRoot });
  // host.o pins the same map names in the same directory: it must reuse lxc.o's maps.
  host = Collection.load(root + 'build/bpf/host.o', { constants, pinRoot });
  fromContainer = lxc.program('cil_from_container');
  fromHost = host.program('cil_from_host');
  lxcMap = lxc.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
  lxcIfMap = lxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  for (const ep of [podA, podB, hostEp]) lxcMap.put({ ip4: ep.ip4 }, ep);
  lxcIfMap.put(podA.ifindex, podA);
  lxcIfMap.put(podB.ifindex, podB);
  ipcache = lxc.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);

  const modeConstants = (mode: number): Record<string, number | Buffer> => ({
    ...constants,
    CONFIG_ROUTING_MODE: mode,
    CONFIG_TUNNEL_IFINDEX: mode === ROUTING_MODE_TUNNEL ? TUNNEL_IFINDEX : 0,
    CONFIG_HOST_IFINDEX: HOST_IFINDEX,
    CONFIG_HOST_MAC: parseMac(HOST_MAC),
  });
  const load = (obj: string, mode: number): Collection => {
    const c = Collection.load(root + obj, { constants: modeConstants(mode), pinRoot });
    loaded.push(c);
    return c;
  };
  const tLxc = load('build/bpf/tests/lxc_harness.o', ROUTING_MODE_TUNNEL);
  const tHost = load('build/bpf/tests/host_harness.o', ROUTING_MODE_TUNNEL);
  const tOverlay = load('build/bpf/tests/overlay_harness.o', ROUTING_MODE_TUNNEL);
  tun.fromContainer = tLxc.program('cil_from_container');
  tun.keyFromContainer = tLxc.program('test_from_container');
  tun.keyFromHost = tHost.program('test_from_host');
  tun.fromOverlay = tOverlay.program('cil_from_overlay');
  tun.keyFromOverlay = tOverlay.program('test_from_overlay');
  tun.toOverlay = tOverlay.program('cil_to_overlay');
  const nLxc = load('build/bpf/lxc.o', ROUTING_MODE_NATIVE);
  const nHost = load('build/bpf/host.o', ROUTING_MODE_NATIVE);
  nat.fromContainer = nLxc.program('cil_from_container');
  nat.fromNetdev = nHost.program('cil_from_netdev');
  nat.toNetdev = nHost.program('cil_to_netdev');
  // Every object must have found the one pinned ipcache, not made its own.
  for (const c of loaded) assert.equal(c.map(IPCACHE_MAP).id, ipcache.map.id);

  const tunnelTo = (identity: number, ep: string, flags = IPCACHE_F_HAS_TUNNEL_EP): IpcacheValue => ({ identity, tunnelEndpoint: ep, nodeId: 0, flags, key: 0 });
  ipcache.put({ prefix: '10.201.1.0/24' }, tunnelTo(2, REMOTE_NODE_IP));
  ipcache.put({ prefix: '10.201.1.1' }, tunnelTo(IDENTITY_REMOTE_NODE, REMOTE_NODE_IP));
  /* A pod whose IP is known individually, on a node other than the CIDR's: the longer prefix must win. */
  ipcache.put({ prefix: '10.201.1.99' }, tunnelTo(3000, '192.168.50.103'));
  ipcache.put({ prefix: REMOTE_NODE_IP }, tunnelTo(IDENTITY_REMOTE_NODE, '0.0.0.0', 0));
  ipcache.put({ prefix: '10.202.0.0/16' }, tunnelTo(2, REMOTE_NODE_IP, IPCACHE_F_HAS_TUNNEL_EP | IPCACHE_F_SKIP_TUNNEL));
  ipcache.put({ prefix: ROUTER_IP }, tunnelTo(1, '0.0.0.0', 0));
  ipcache.put({ prefix: podA.ip4 }, tunnelTo(podA.secId, '0.0.0.0', 0));
  ipcache.put({ prefix: podB.ip4 }, tunnelTo(podB.secId, '0.0.0.0', 0));
});

after(() => {
  lxc?.close();
  host?.close();
  for (const c of loaded) c.close();
  rmSync(pinRoot, { recursive: true, force: true });
});

function run(prog: BpfProgram, data: Buffer, ifindex = LO): { retval: number; data: Buffer } {
  const r = prog.run({ data, ctx: skbCtx({ ifindex }) });
  return { retval: r.retval, data: r.data };
}

/* A run that also returns skb->cb: cb[0] source identity, cb[1..4] the harness's tunnel key read-back. */
function runCb(prog: BpfProgram, data: Buffer, cb: number[] = [], ifindex = LO): { retval: number; data: Buffer; cb: number[] } {
  const r = prog.run({ data, ctx: skbCtx({ ifindex, cb }) });
  assert.ok(r.ctx, 'test run returned no ctx');
  return { retval: r.retval, data: r.data, cb: decodeSkbCtx(r.ctx).cb };
}

// ---- cil_from_container: ARP ----------------------------------------------------------------------------

test('cil_from_container answers an ARP request for the gateway with the host-side MAC', () => {
  const req = ethernet(BCAST, podA.mac, ETH_P_ARP, arp(1, podA.mac, podA.ip4, '00:00:00:00:00:00', ROUTER_IP));
  const r = run(fromContainer, req);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.data.length, req.length);
  const p = r.data;
  assert.equal(macAt(p, 0), podA.mac, 'eth dst = requester');
  assert.equal(macAt(p, 6), podA.nodeMac, 'eth src = host-side veth');
  assert.equal(p.readUInt16BE(12), ETH_P_ARP);
  assert.deepEqual([...p.subarray(14, 20)], [0, 1, 8, 0, 6, 4], 'htype/ptype/hlen/plen kept');
  assert.equal(p.readUInt16BE(20), 2, 'op = reply');
  assert.equal(macAt(p, 22), podA.nodeMac, 'sha');
  assert.equal(ipAt(p, 28), ROUTER_IP, 'spa = the asked address');
  assert.equal(macAt(p, 32), podA.mac, 'tha');
  assert.equal(ipAt(p, 38), podA.ip4, 'tpa');
});

test('cil_from_container answers ARP for any address other than the pod own, also unicast to the gateway MAC', () => {
  const req = ethernet(podA.nodeMac, podA.mac, ETH_P_ARP, arp(1, podA.mac, podA.ip4, podA.nodeMac, '10.200.0.99'));
  const r = run(fromContainer, req);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.data.readUInt16BE(20), 2);
  assert.equal(ipAt(r.data, 28), '10.200.0.99');
  assert.equal(macAt(r.data, 22), podA.nodeMac);
});

test('cil_from_container passes ARP for the pod own address (DAD) unchanged', () => {
  const req = ethernet(BCAST, podA.mac, ETH_P_ARP, arp(1, podA.mac, '0.0.0.0', '00:00:00:00:00:00', podA.ip4));
  const r = run(fromContainer, req);
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data, req);
});

test('cil_from_container passes ARP replies and requests to other MACs unchanged', () => {
  const reply = ethernet(podA.nodeMac, podA.mac, ETH_P_ARP, arp(2, podA.mac, podA.ip4, podA.nodeMac, ROUTER_IP));
  const r1 = run(fromContainer, reply);
  assert.equal(r1.retval, TC_ACT_OK);
  assert.deepEqual(r1.data, reply);
  const other = ethernet('02:11:22:33:44:55', podA.mac, ETH_P_ARP, arp(1, podA.mac, podA.ip4, BCAST, ROUTER_IP));
  const r2 = run(fromContainer, other);
  assert.equal(r2.retval, TC_ACT_OK);
  assert.deepEqual(r2.data, other);
});

// ---- cil_from_container: IPv4 ---------------------------------------------------------------------------

function assertForwardedToB(input: Buffer, out: { retval: number; data: Buffer }): void {
  assert.equal(out.retval, TC_ACT_REDIRECT);
  const p = out.data;
  assert.equal(p.length, input.length);
  assert.equal(macAt(p, 0), podB.mac, 'eth dst = destination pod');
  assert.equal(macAt(p, 6), podB.nodeMac, 'eth src = destination host-side veth');
  assert.equal(p[22], input[22]! - 1, 'TTL - 1');
  assert.equal(csum(p.subarray(14, 34)), 0, 'IPv4 header checksum still valid');
  // Apart from MACs, TTL and header checksum, nothing changed.
  const masked = (b: Buffer): Buffer => {
    const c = Buffer.from(b.subarray(12));
    c[22 - 12] = 0;
    c.writeUInt16BE(0, 24 - 12);
    return c;
  };
  assert.deepEqual(masked(p), masked(input));
}

test('cil_from_container redirects ICMP to a local pod with MACs rewritten, TTL - 1 and a valid checksum', () => {
  const pkt = pingAtoB();
  assertForwardedToB(pkt, run(fromContainer, pkt));
});

test('cil_from_container redirects TCP to a local pod and keeps the L4 checksum valid', () => {
  const seg = tcp(podA.ip4, podB.ip4, 40000, 80, 0x02, Buffer.alloc(0));
  const pkt = ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ipv4({ src: podA.ip4, dst: podB.ip4, proto: 6 }, seg));
  const r = run(fromContainer, pkt);
  assertForwardedToB(pkt, r);
  const pseudo = Buffer.alloc(12);
  pseudo.writeUInt32BE(parseIPv4(podA.ip4), 0);
  pseudo.writeUInt32BE(parseIPv4(podB.ip4), 4);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(seg.length, 10);
  assert.equal(csum(Buffer.concat([pseudo, r.data.subarray(34)])), 0);
});

test('cil_from_container fixes the header checksum for any TTL and header contents', () => {
  // Incremental checksum updates go wrong at carries and at 0x0000/0xffff: cover many header values.
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let i = 0; i < 300; i++) {
    const pkt = pingAtoB({ ttl: 2 + rnd(254), id: rnd(65536), tos: rnd(256) });
    assertForwardedToB(pkt, run(fromContainer, pkt));
  }
});

test('cil_from_container drops a packet to a local pod whose TTL would expire', () => {
  for (const ttl of [0, 1]) {
    assert.equal(run(fromContainer, pingAtoB({ ttl })).retval, TC_ACT_SHOT, `ttl ${ttl}`);
  }
});

test('cil_from_container hands IPv4 to a non-local address to the stack unchanged', () => {
  const pkt = ethernet(
    podA.nodeMac,
    podA.mac,
    ETH_P_IP,
    ipv4({ src: podA.ip4, dst: '192.0.2.50', proto: 1 }, icmpEcho(1, 1, Buffer.alloc(8))),
  );
  const r = run(fromContainer, pkt);
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data, pkt);
});

test('cil_from_container hands IPv4 to a host endpoint (router IP) to the stack unchanged', () => {
  const pkt = ethernet(
    podA.nodeMac,
    podA.mac,
    ETH_P_IP,
    ipv4({ src: podA.ip4, dst: ROUTER_IP, proto: 1 }, icmpEcho(1, 1, Buffer.alloc(8))),
  );
  const r = run(fromContainer, pkt);
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data, pkt);
});

test('cil_from_container drops a spoofed source address (local and remote destinations)', () => {
  for (const dst of [podB.ip4, '192.0.2.50']) {
    const pkt = ethernet(
      podA.nodeMac,
      podA.mac,
      ETH_P_IP,
      ipv4({ src: '10.200.0.99', dst, proto: 1 }, icmpEcho(1, 1, Buffer.alloc(8))),
    );
    assert.equal(run(fromContainer, pkt).retval, TC_ACT_SHOT, `to ${dst}`);
  }
});

test('cil_from_container drops IPv6 and other ethertypes', () => {
  assert.equal(run(fromContainer, ethernet(podA.nodeMac, podA.mac, ETH_P_IPV6, ipv6Udp())).retval, TC_ACT_SHOT);
  assert.equal(
    run(fromContainer, ethernet('01:80:c2:00:00:0e', podA.mac, ETH_P_LLDP, Buffer.alloc(46))).retval,
    TC_ACT_SHOT,
  );
});

// A truncated header cannot be fed in: this kernel's test run refuses packets under 34 bytes (EINVAL).
test('cil_from_container drops a malformed IPv4 header', () => {
  const pkt = pingAtoB();
  const shortIhl = Buffer.from(pkt);
  shortIhl[14] = 0x44; // IHL 4 < 5
  assert.equal(run(fromContainer, shortIhl).retval, TC_ACT_SHOT, 'ihl');
  const wrongVersion = Buffer.from(pkt);
  wrongVersion[14] = 0x65; // version 6 under an IPv4 ethertype
  assert.equal(run(fromContainer, wrongVersion).retval, TC_ACT_SHOT, 'version');
});

test('cil_from_container drops everything from an interface that is no known endpoint', () => {
  assert.ok(lxcIfMap.delete(LO));
  try {
    const req = ethernet(BCAST, podA.mac, ETH_P_ARP, arp(1, podA.mac, podA.ip4, '00:00:00:00:00:00', ROUTER_IP));
    assert.equal(run(fromContainer, req).retval, TC_ACT_SHOT, 'arp');
    assert.equal(run(fromContainer, pingAtoB()).retval, TC_ACT_SHOT, 'ipv4');
  } finally {
    lxcIfMap.put(LO, podA);
  }
  assert.equal(run(fromContainer, pingAtoB()).retval, TC_ACT_REDIRECT, 'back after re-adding');
});

test('cil_from_container follows map updates: a removed destination goes to the stack', () => {
  assert.ok(lxcMap.delete({ ip4: podB.ip4 }));
  try {
    const pkt = pingAtoB();
    const r = run(fromContainer, pkt);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(r.data, pkt);
  } finally {
    lxcMap.put({ ip4: podB.ip4 }, podB);
  }
});

// ---- cil_from_host ---------------------------------------------------------------------------------------

test('lxc.o has no program for the egress of a pod\'s veth (nothing of a pod needs that hook)', () => {
  assert.deepEqual([...lxc!.programs.keys()], ['cil_from_container']);
});

test('cil_from_host redirects to a local pod with MACs rewritten and TTL untouched (shared pinned maps)', () => {
  const ip = ipv4({ src: ROUTER_IP, dst: podB.ip4, proto: 1, ttl: 64 }, icmpEcho(3, 9, Buffer.alloc(16)));
  const pkt = ethernet('02:00:00:00:99:99', '02:00:00:00:99:98', ETH_P_IP, ip);
  const r = run(fromHost, pkt);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(macAt(r.data, 0), podB.mac);
  assert.equal(macAt(r.data, 6), podB.nodeMac);
  assert.deepEqual(r.data.subarray(12), pkt.subarray(12), 'L3 and above unchanged');
});

test('cil_from_host passes traffic to other addresses, host endpoints, ARP and IPv6 unchanged', () => {
  const hostMac = '02:00:00:00:99:98';
  const udp = Buffer.alloc(8);
  const cases = [
    ethernet(BCAST, hostMac, ETH_P_IP, ipv4({ src: ROUTER_IP, dst: '192.0.2.50', proto: 17 }, udp)),
    ethernet(BCAST, hostMac, ETH_P_IP, ipv4({ src: podA.ip4, dst: ROUTER_IP, proto: 17 }, udp)),
    ethernet(BCAST, hostMac, ETH_P_ARP, arp(1, hostMac, ROUTER_IP, BCAST, podB.ip4)),
    ethernet(BCAST, hostMac, ETH_P_IPV6, ipv6Udp()),
  ];
  for (const pkt of cases) {
    const r = run(fromHost, pkt);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(r.data, pkt);
  }
});

// ---- tunnel mode: cil_from_container, cil_from_host ------------------------------------------------------

const HARNESS_NO_KEY = 0xffffffff;
const TUNNEL_CSUM = 0x0001;
const TUNNEL_KEY = 0x0004;

function pingAto(dst: string, o: Partial<Ip4Opts> = {}): Buffer {
  const ip = ipv4({ src: podA.ip4, dst, proto: 1, ...o }, icmpEcho(7, 1, Buffer.from('tendril ping')));
  return ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ip);
}

test('cil_from_container (tunnel) encapsulates to a remote pod: VNI = source identity, remote = node IP, TTL 64, no UDP checksum', () => {
  const pkt = pingAto(REMOTE_POD);
  assert.equal(run(tun.fromContainer, pkt).retval, TC_ACT_REDIRECT);
  const r = runCb(tun.keyFromContainer, pkt);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.deepEqual(r.data, pkt, 'the inner packet is sent as the pod sent it');
  const [srcIdentity, vni, remote, ttl, flags] = r.cb;
  assert.equal(srcIdentity, podA.secId, 'cb source identity');
  assert.equal(vni, podA.secId, 'VNI');
  assert.equal(remote, parseIPv4(REMOTE_NODE_IP), 'tunnel remote');
  assert.equal(ttl, 64, 'outer TTL');
  assert.equal(flags! & TUNNEL_KEY, TUNNEL_KEY, 'keyed tunnel');
  assert.equal(flags! & TUNNEL_CSUM, 0, 'outer UDP checksum off');
});

test('cil_from_container (tunnel) takes the longest ipcache prefix: a known pod IP beats its CIDR', () => {
  const r = runCb(tun.keyFromContainer, pingAto('10.201.1.99'));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.cb[2], parseIPv4('192.168.50.103'));
  const router = runCb(tun.keyFromContainer, pingAto('10.201.1.1'));
  assert.equal(router.retval, TC_ACT_REDIRECT, 'remote router IP');
  assert.equal(router.cb[2], parseIPv4(REMOTE_NODE_IP));
});

test('cil_from_container (tunnel) leaves unknown, skip-tunnel and underlay destinations to the stack unencapsulated', () => {
  for (const dst of ['192.0.2.50', '10.202.3.4', REMOTE_NODE_IP, ROUTER_IP]) {
    const pkt = pingAto(dst);
    const r = runCb(tun.keyFromContainer, pkt);
    assert.equal(r.retval, TC_ACT_OK, dst);
    assert.deepEqual(r.data, pkt, dst);
    assert.equal(r.cb[1], HARNESS_NO_KEY, `${dst}: no tunnel key`);
  }
});

test('cil_from_container (tunnel) still delivers to local pods directly and still drops spoofed sources to remote pods', () => {
  const pkt = pingAtoB();
  assertForwardedToB(pkt, run(tun.fromContainer, pkt));
  const spoofed = ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ipv4({ src: '10.200.0.99', dst: REMOTE_POD, proto: 1 }, icmpEcho(1, 1, Buffer.alloc(8))));
  assert.equal(run(tun.fromContainer, spoofed).retval, TC_ACT_SHOT);
});

test('cil_from_container (tunnel) follows ipcache updates: a removed CIDR goes to the stack, a re-added one is tunnelled', () => {
  const v = ipcache.lookup({ prefix: '10.201.1.0/24' });
  assert.ok(v);
  assert.ok(ipcache.delete({ prefix: '10.201.1.0/24' }));
  try {
    assert.equal(run(tun.fromContainer, pingAto(REMOTE_POD)).retval, TC_ACT_OK);
  } finally {
    ipcache.put({ prefix: '10.201.1.0/24' }, v);
  }
  assert.equal(run(tun.fromContainer, pingAto(REMOTE_POD)).retval, TC_ACT_REDIRECT);
});

test('cil_from_host (tunnel) encapsulates node traffic to a remote pod with the remote-node identity as VNI', () => {
  const ip = ipv4({ src: ROUTER_IP, dst: REMOTE_POD, proto: 1 }, icmpEcho(3, 9, Buffer.alloc(16)));
  const pkt = ethernet('02:00:00:00:99:99', HOST_MAC, ETH_P_IP, ip);
  const r = runCb(tun.keyFromHost, pkt);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.deepEqual(r.data, pkt);
  assert.equal(r.cb[1], IDENTITY_REMOTE_NODE, 'VNI');
  assert.equal(r.cb[2], parseIPv4(REMOTE_NODE_IP));
  assert.equal(r.cb[4]! & TUNNEL_CSUM, 0);
});

test('cil_from_host (tunnel) keeps local pods local and leaves the rest unencapsulated', () => {
  const toB = ethernet('02:00:00:00:99:99', HOST_MAC, ETH_P_IP, ipv4({ src: ROUTER_IP, dst: podB.ip4, proto: 1 }, icmpEcho(3, 9, Buffer.alloc(16))));
  const r = runCb(tun.keyFromHost, toB);
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(macAt(r.data, 0), podB.mac);
  assert.equal(r.cb[1], HARNESS_NO_KEY);
  for (const dst of ['192.0.2.50', REMOTE_NODE_IP]) {
    const pkt = ethernet(BCAST, HOST_MAC, ETH_P_IP, ipv4({ src: ROUTER_IP, dst, proto: 17 }, Buffer.alloc(8)));
    const o = runCb(tun.keyFromHost, pkt);
    assert.equal(o.retval, TC_ACT_OK, dst);
    assert.deepEqual(o.data, pkt, dst);
    assert.equal(o.cb[1], HARNESS_NO_KEY, dst);
  }
});

// ---- tunnel mode: cil_from_overlay, cil_to_overlay --------------------------------------------------------

/* What arrives out of tendril_vxlan: the sender's inner frame (its pod's MACs) for one of our addresses. */
function fromTunnel(dst: string, o: Partial<Ip4Opts> = {}): Buffer {
  const ip = ipv4({ src: REMOTE_POD, dst, proto: 1, ...o }, icmpEcho(9, 4, Buffer.from('over the tunnel')));
  return ethernet('02:00:0a:c9:01:aa', '02:00:0a:c9:01:bb', ETH_P_IP, ip);
}
const REMOTE_POD_IDENTITY = 4321;

test('cil_from_overlay delivers to a local pod with MACs rewritten, TTL - 1, and the VNI as source identity', () => {
  const pkt = fromTunnel(podB.ip4);
  const r = runCb(tun.keyFromOverlay, pkt, [0, REMOTE_POD_IDENTITY, parseIPv4(REMOTE_NODE_IP)]);
  assertForwardedToB(pkt, r);
  assert.equal(r.cb[0], REMOTE_POD_IDENTITY, 'source identity in cb');
});

test('cil_from_overlay hands traffic for the node to tendril_host ingress addressed to its MAC', () => {
  for (const dst of [ROUTER_IP, '10.200.0.77']) {
    const pkt = fromTunnel(dst);
    const r = runCb(tun.keyFromOverlay, pkt, [0, IDENTITY_REMOTE_NODE, parseIPv4(REMOTE_NODE_IP)]);
    assert.equal(r.retval, TC_ACT_REDIRECT, dst);
    assert.equal(macAt(r.data, 0), HOST_MAC, `${dst}: eth dst = tendril_host`);
    assert.deepEqual(r.data.subarray(6), pkt.subarray(6), `${dst}: nothing else changed (no TTL hop: the stack routes it)`);
  }
});

test('cil_from_overlay drops packets without a tunnel key and with the host or unknown identity on the wire', () => {
  assert.equal(run(tun.fromOverlay, fromTunnel(podB.ip4)).retval, TC_ACT_SHOT, 'no key');
  for (const vni of [0, 1]) {
    const r = runCb(tun.keyFromOverlay, fromTunnel(podB.ip4), [0, vni, parseIPv4(REMOTE_NODE_IP)]);
    assert.equal(r.retval, TC_ACT_SHOT, `VNI ${vni}`);
  }
});

test('cil_from_overlay drops a local delivery whose TTL would expire; non-IPv4 goes to the stack', () => {
  const r = runCb(tun.keyFromOverlay, fromTunnel(podB.ip4, { ttl: 1 }), [0, REMOTE_POD_IDENTITY, parseIPv4(REMOTE_NODE_IP)]);
  assert.equal(r.retval, TC_ACT_SHOT);
  const arpPkt = ethernet(BCAST, '02:00:0a:c9:01:bb', ETH_P_ARP, arp(1, '02:00:0a:c9:01:bb', REMOTE_POD, '00:00:00:00:00:00', podB.ip4));
  const a = runCb(tun.keyFromOverlay, arpPkt, [0, REMOTE_POD_IDENTITY, parseIPv4(REMOTE_NODE_IP)]);
  assert.equal(a.retval, TC_ACT_OK);
  assert.deepEqual(a.data, arpPkt);
});

test('cil_to_overlay passes everything', () => {
  const pkt = pingAto(REMOTE_POD);
  const r = run(tun.toOverlay, pkt);
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data, pkt);
});

// ---- native mode: FIB forwarding in a namespace of our own -------------------------------------------------

/*
 * Namespace with lo (ifindex 1, pod A's stand-in) and a veth whose end "tdlt0" holds 192.168.60.1/24. Routes:
 * 10.201.1.0/24 via .2 (a permanent neighbour: bpf_fib_lookup succeeds with MACs), 10.201.2.0/24 via .3 (no
 * neighbour: bpf_redirect_neigh resolves it). 10.203.0.0/24 is in the ipcache but has no route.
 */
const NATIVE_NS = `tdlt-${process.pid}-dp`;
const GW_MAC = '02:00:c0:a8:3c:02';
let nativeNs: Netns | undefined;
let underlayMac = '';

function inNative<T>(fn: () => T): T {
  assert.ok(nativeNs, 'native test namespace missing');
  return nativeNs.run(fn);
}

before(() => {
  nativeNs = Netns.create(NATIVE_NS);
  const nl = Netlink.openIn(nativeNs);
  try {
    nl.setLink('lo', { up: true });
    nl.createVeth({ name: 'tdlt0', peerName: 'tdlt1' });
    nl.setLink('tdlt1', { up: true });
    nl.setLink('tdlt0', { up: true });
    const dev = nl.getLink('tdlt0')!;
    underlayMac = dev.mac;
    nl.addAddress(dev.index, '192.168.60.1/24');
    nl.addNeighbor({ ifindex: dev.index, ip: '192.168.60.2', mac: GW_MAC, permanent: true });
    nl.addRoute({ dst: '10.201.1.0/24', gateway: '192.168.60.2', ifindex: dev.index });
    nl.addRoute({ dst: '10.201.2.0/24', gateway: '192.168.60.3', ifindex: dev.index });
  } finally {
    nl.close();
  }
  // bpf_fib_lookup answers "forwarding disabled" unless the input device forwards.
  inNative(() => writeFileSync('/proc/sys/net/ipv4/ip_forward', '1'));
  const value = (identity: number): IpcacheValue => ({ identity, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 });
  ipcache.put({ prefix: '10.201.2.0/24' }, value(2));
  ipcache.put({ prefix: '10.203.0.0/24' }, value(2));
});

after(() => {
  nativeNs?.close();
  Netns.delete(NATIVE_NS);
});

function assertRouted(input: Buffer, out: { retval: number; data: Buffer }, macs?: { src: string; dst: string }): void {
  assert.equal(out.retval, TC_ACT_REDIRECT);
  const p = out.data;
  assert.equal(p.length, input.length);
  if (macs) {
    assert.equal(macAt(p, 0), macs.dst, 'eth dst = next hop');
    assert.equal(macAt(p, 6), macs.src, 'eth src = egress device');
  } else {
    assert.deepEqual(p.subarray(0, 12), input.subarray(0, 12), 'MACs left to bpf_redirect_neigh');
  }
  assert.equal(p[22], input[22]! - 1, 'TTL - 1');
  assert.equal(csum(p.subarray(14, 34)), 0, 'IPv4 header checksum still valid');
  assert.deepEqual(p.subarray(26), input.subarray(26), 'addresses and payload unchanged');
}

test('cil_from_container (native) forwards to a remote pod with the FIB: next-hop MACs, TTL - 1', () => {
  const pkt = pingAto(REMOTE_POD);
  inNative(() => assertRouted(pkt, run(nat.fromContainer, pkt), { src: underlayMac, dst: GW_MAC }));
});

test('cil_from_container (native) lets bpf_redirect_neigh resolve a next hop without a neighbour entry', () => {
  const pkt = pingAto('10.201.2.20');
  inNative(() => assertRouted(pkt, run(nat.fromContainer, pkt)));
});

test('cil_from_container (native) routes with the FIB even for an entry that has a tunnel endpoint', () => {
  // 10.201.1.99 has a tunnel endpoint in the ipcache; native mode routes it with the FIB all the same.
  const pkt = pingAto('10.201.1.99');
  inNative(() => assertRouted(pkt, run(nat.fromContainer, pkt), { src: underlayMac, dst: GW_MAC }));
});

test('cil_from_container (native) hands unknown, unroutable and host destinations to the stack unchanged', () => {
  for (const dst of ['192.0.2.50', '10.203.0.5', ROUTER_IP]) {
    const pkt = pingAto(dst);
    const r = inNative(() => run(nat.fromContainer, pkt));
    assert.equal(r.retval, TC_ACT_OK, dst);
    assert.deepEqual(r.data, pkt, dst);
  }
});

test('cil_from_container (native) drops a routed packet whose TTL would expire and still delivers locally', () => {
  for (const ttl of [0, 1]) assert.equal(inNative(() => run(nat.fromContainer, pingAto(REMOTE_POD, { ttl }))).retval, TC_ACT_SHOT);
  const pkt = pingAtoB();
  assertForwardedToB(pkt, inNative(() => run(nat.fromContainer, pkt)));
});

test('cil_from_netdev delivers to a local pod with MACs rewritten, TTL - 1, and the ipcache identity of the source', () => {
  const ip = ipv4({ src: '10.201.1.99', dst: podB.ip4, proto: 1 }, icmpEcho(5, 5, Buffer.alloc(24)));
  const pkt = ethernet(underlayMac || '02:00:00:00:00:01', GW_MAC, ETH_P_IP, ip);
  const r = runCb(nat.fromNetdev, pkt);
  assertForwardedToB(pkt, r);
  assert.equal(r.cb[0], 3000, 'source identity from the ipcache');
  const world = runCb(nat.fromNetdev, ethernet(GW_MAC, GW_MAC, ETH_P_IP, ipv4({ src: '198.51.100.1', dst: podB.ip4, proto: 1 }, icmpEcho(5, 5, Buffer.alloc(8)))));
  assert.equal(world.retval, TC_ACT_REDIRECT);
  assert.equal(world.cb[0], 2, 'unknown source = world');
});

test('cil_from_netdev drops a packet for a local pod whose source claims to be this node or one of its pods', () => {
  // Nothing of the node arrives from the wire; such a source would borrow the host's (always allowed) identity.
  for (const src of [ROUTER_IP, podA.ip4]) {
    const pkt = ethernet(GW_MAC, GW_MAC, ETH_P_IP, ipv4({ src, dst: podB.ip4, proto: 1 }, icmpEcho(5, 5, Buffer.alloc(8))));
    assert.equal(run(nat.fromNetdev, pkt).retval, TC_ACT_SHOT, `source ${src}`);
  }
});

test('cil_from_netdev passes traffic for the node and for unknown addresses, ARP and IPv6 unchanged', () => {
  const cases = [
    ethernet(GW_MAC, GW_MAC, ETH_P_IP, ipv4({ src: REMOTE_NODE_IP, dst: ROUTER_IP, proto: 17 }, Buffer.alloc(8))),
    ethernet(GW_MAC, GW_MAC, ETH_P_IP, ipv4({ src: REMOTE_NODE_IP, dst: '192.168.60.1', proto: 17 }, Buffer.alloc(8))),
    ethernet(BCAST, GW_MAC, ETH_P_ARP, arp(1, GW_MAC, REMOTE_NODE_IP, '00:00:00:00:00:00', '192.168.60.1')),
    ethernet(BCAST, GW_MAC, ETH_P_IPV6, ipv6Udp()),
  ];
  for (const pkt of cases) {
    const r = run(nat.fromNetdev, pkt);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(r.data, pkt);
  }
});

test('cil_to_netdev passes everything', () => {
  const pkt = pingAto(REMOTE_POD);
  const r = run(nat.toNetdev, pkt);
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data, pkt);
});

// ---- events: the ring buffer after a test run ---------------------------------------------------------------

/*
 * Every object loaded above shares one pinned tendril_events ring (and tendril_trace_agg). Each case drains the
 * ring first and uses flows of its own (distinct ports or ICMP ids), because the aggregation remembers every flow
 * the earlier cases sent.
 */
let ring: RingBuffer | undefined;
let traceAgg: TypedMap<TraceKey, TraceState>;
const pending: DatapathEvent[] = [];

before(() => {
  assert.ok(lxc, 'lxc.o not loaded');
  ring = RingBuffer.open(lxc.map(EVENTS_MAP), (rec) => {
    const e = decodeEvent(rec);
    assert.ok(e, `undecodable record ${rec.subarray(0, 16).toString('hex')}`);
    pending.push(e);
  });
  traceAgg = lxc.map(TRACE_AGG_MAP).typed(traceKeyCodec, traceStateCodec);
});

after(() => ring?.close());

/** Events written since the last call. */
function takeEvents(): DatapathEvent[] {
  ring!.consume();
  return pending.splice(0);
}

function traces(events: DatapathEvent[]): TraceEvent[] {
  return events.filter((e): e is TraceEvent => e.type === 'trace');
}

function drops(events: DatapathEvent[]): DropEvent[] {
  return events.filter((e): e is DropEvent => e.type === 'drop');
}

/** [point, reason] of each trace, in order. */
function pointsOf(events: DatapathEvent[]): string[] {
  return traces(events).map((e) => `${e.obsPoint} ${e.reason}`);
}

const TCP_SYN = 0x02;
const TCP_ACK = 0x10;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;

function tcpPkt(src: EndpointInfo | string, dst: string, sport: number, dport: number, flags: number, payload = Buffer.alloc(0)): Buffer {
  const saddr = typeof src === 'string' ? src : src.ip4;
  const macs = typeof src === 'string' ? [BCAST, '02:00:00:00:00:01'] : [src.nodeMac, src.mac];
  const ip = ipv4({ src: saddr, dst, proto: 6 }, tcp(saddr, dst, sport, dport, flags, payload));
  return ethernet(macs[0]!, macs[1]!, ETH_P_IP, ip);
}

/** Runs `fn` with pod B's endpoint on ifindex 1 (lo), i.e. as if cil_from_container ran on B's veth. */
function asPodB<T>(fn: () => T): T {
  lxcIfMap.put(LO, podB);
  try {
    return fn();
  } finally {
    lxcIfMap.put(LO, podA);
  }
}

let nextPort = 50000;
const freshPort = (): number => nextPort++;

test('events: the layout anchor section makes no map, and every object shares the one ring', () => {
  assert.ok(![...lxc!.maps.keys()].some((n) => n.includes('layout')), JSON.stringify([...lxc!.maps.keys()]));
  for (const c of [host!, ...loaded]) assert.equal(c.map(EVENTS_MAP).id, lxc!.map(EVENTS_MAP).id);
  takeEvents();
});

test('events: cil_from_container local delivery writes from-endpoint and to-endpoint with endpoints and identities', () => {
  takeEvents();
  const sport = freshPort();
  const pkt = tcpPkt(podA, podB.ip4, sport, 80, TCP_SYN);
  const ran = process.hrtime.bigint();
  const out = run(fromContainer, pkt);
  assert.equal(out.retval, TC_ACT_REDIRECT);
  const ev = traces(takeEvents());
  assert.deepEqual(ev.map((e) => e.obsPoint), ['from-endpoint', 'to-endpoint']);
  const [from, to] = ev as [TraceEvent, TraceEvent];
  assert.deepEqual(
    { source: from.source, src: from.srcIdentity, dst: from.dstIdentity, dstId: from.dstId, reason: from.reason, ifindex: from.ifindex },
    { source: podA.lxcId, src: podA.secId, dst: podB.secId, dstId: podB.lxcId, reason: 'new', ifindex: LO },
  );
  assert.deepEqual(
    { source: to.source, src: to.srcIdentity, dst: to.dstIdentity, dstId: to.dstId, reason: to.reason },
    { source: podB.lxcId, src: podA.secId, dst: podB.secId, dstId: podB.lxcId, reason: 'new' },
  );
  assert.equal(from.origLen, pkt.length);
  assert.deepEqual(from.data, pkt, 'from-endpoint captures the packet as the pod sent it');
  assert.deepEqual(to.data, out.data, 'to-endpoint captures the packet as delivered (MACs, TTL)');
  assert.notEqual(from.hash, 0);
  assert.equal(from.hash, to.hash, 'one flow, one hash at every point');
  const now = process.hrtime.bigint();
  assert.ok(from.ktimeNs >= ran && from.ktimeNs <= now, 'ktime is CLOCK_MONOTONIC, taken during the run');
});

test('events: a packet longer than 128 bytes is captured by its first 128 bytes, with its full length', () => {
  takeEvents();
  const pkt = tcpPkt(podA, podB.ip4, freshPort(), 80, TCP_SYN, Buffer.alloc(400, 0xab));
  run(fromContainer, pkt);
  const [from] = traces(takeEvents());
  assert.ok(from);
  assert.equal(from.origLen, pkt.length);
  assert.equal(from.capLen, 128);
  assert.deepEqual(from.data, pkt.subarray(0, 128));
});

test('events: traffic to a host address or the world is traced from-endpoint then to-stack', () => {
  takeEvents();
  assert.equal(run(fromContainer, tcpPkt(podA, ROUTER_IP, freshPort(), 22, TCP_SYN)).retval, TC_ACT_OK);
  const toHost = traces(takeEvents());
  assert.deepEqual(toHost.map((e) => `${e.obsPoint} ${e.dstIdentity} ${e.dstId}`), ['from-endpoint 1 0', 'to-stack 1 0']);
  assert.equal(run(fromContainer, tcpPkt(podA, '192.0.2.50', freshPort(), 443, TCP_SYN)).retval, TC_ACT_OK);
  const toWorld = traces(takeEvents());
  assert.deepEqual(toWorld.map((e) => `${e.obsPoint} ${e.dstIdentity} ${e.source}`), [`from-endpoint 2 ${podA.lxcId}`, `to-stack 2 ${podA.lxcId}`]);
});

test('events: (tunnel) a remote pod is traced to-overlay with its ipcache identity', () => {
  takeEvents();
  assert.equal(run(tun.fromContainer, tcpPkt(podA, '10.201.1.99', freshPort(), 80, TCP_SYN)).retval, TC_ACT_REDIRECT);
  const ev = traces(takeEvents());
  assert.deepEqual(ev.map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity}`), ['from-endpoint 1001->3000', 'to-overlay 1001->3000']);
  assert.equal(ev[1]!.source, podA.lxcId);
});

test('events: (native) a FIB-forwarded packet is traced to-network', () => {
  takeEvents();
  const r = inNative(() => run(nat.fromContainer, tcpPkt(podA, REMOTE_POD, freshPort(), 80, TCP_SYN)));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-network new']);
});

test('events: cil_from_overlay traces from-overlay with the VNI as source identity, then to-endpoint or to-stack', () => {
  takeEvents();
  const sport = freshPort();
  const toPod = ethernet('02:00:0a:c9:01:aa', '02:00:0a:c9:01:bb', ETH_P_IP, ipv4({ src: REMOTE_POD, dst: podB.ip4, proto: 6 }, tcp(REMOTE_POD, podB.ip4, sport, 80, TCP_SYN, Buffer.alloc(0))));
  assert.equal(runCb(tun.keyFromOverlay, toPod, [0, REMOTE_POD_IDENTITY, parseIPv4(REMOTE_NODE_IP)]).retval, TC_ACT_REDIRECT);
  const ev = traces(takeEvents());
  assert.deepEqual(ev.map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity} src=${e.source} dstId=${e.dstId}`), [
    `from-overlay ${REMOTE_POD_IDENTITY}->${podB.secId} src=0 dstId=${podB.lxcId}`,
    `to-endpoint ${REMOTE_POD_IDENTITY}->${podB.secId} src=${podB.lxcId} dstId=${podB.lxcId}`,
  ]);
  const toNode = ethernet('02:00:0a:c9:01:aa', '02:00:0a:c9:01:bb', ETH_P_IP, ipv4({ src: REMOTE_POD, dst: ROUTER_IP, proto: 6 }, tcp(REMOTE_POD, ROUTER_IP, sport, 22, TCP_SYN, Buffer.alloc(0))));
  runCb(tun.keyFromOverlay, toNode, [0, IDENTITY_REMOTE_NODE, parseIPv4(REMOTE_NODE_IP)]);
  assert.deepEqual(traces(takeEvents()).map((e) => `${e.obsPoint} ${e.dstIdentity}`), ['from-overlay 1', 'to-stack 1']);
});

test('events: cil_from_netdev traces from-network (ipcache source identity) and to-endpoint', () => {
  takeEvents();
  const pkt = tcpPkt('10.201.1.99', podB.ip4, freshPort(), 80, TCP_SYN);
  assert.equal(run(nat.fromNetdev, pkt).retval, TC_ACT_REDIRECT);
  assert.deepEqual(traces(takeEvents()).map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity} ${e.source}`), [
    `from-network 3000->${podB.secId} 0`,
    `to-endpoint 3000->${podB.secId} ${podB.lxcId}`,
  ]);
  // The node's own traffic: from-network only, to the host identity.
  run(nat.fromNetdev, tcpPkt(REMOTE_NODE_IP, ROUTER_IP, freshPort(), 22, TCP_SYN));
  assert.deepEqual(traces(takeEvents()).map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity}`), ['from-network 6->1']);
});

test('events: cil_from_host traces from-host then to-endpoint, or to-overlay (tunnel)', () => {
  takeEvents();
  const toB = ethernet('02:00:00:00:99:99', HOST_MAC, ETH_P_IP, ipv4({ src: ROUTER_IP, dst: podB.ip4, proto: 6 }, tcp(ROUTER_IP, podB.ip4, freshPort(), 80, TCP_SYN, Buffer.alloc(0))));
  assert.equal(run(fromHost, toB).retval, TC_ACT_REDIRECT);
  assert.deepEqual(traces(takeEvents()).map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity} ${e.source}/${e.dstId}`), [
    `from-host 1->${podB.secId} 0/${podB.lxcId}`,
    `to-endpoint 1->${podB.secId} ${podB.lxcId}/${podB.lxcId}`,
  ]);
  const toRemote = ethernet('02:00:00:00:99:99', HOST_MAC, ETH_P_IP, ipv4({ src: ROUTER_IP, dst: '10.201.1.99', proto: 6 }, tcp(ROUTER_IP, '10.201.1.99', freshPort(), 80, TCP_SYN, Buffer.alloc(0))));
  assert.equal(runCb(tun.keyFromHost, toRemote).retval, TC_ACT_REDIRECT);
  assert.deepEqual(traces(takeEvents()).map((e) => `${e.obsPoint} ${e.srcIdentity}->${e.dstIdentity}`), ['from-host 1->3000', 'to-overlay 1->3000']);
});

test('events: a spoofed source is a drop event with reason 132, the endpoint, the object and line, and no trace', () => {
  takeEvents();
  const pkt = ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ipv4({ src: '10.200.0.99', dst: podB.ip4, proto: 6 }, tcp('10.200.0.99', podB.ip4, freshPort(), 80, TCP_SYN, Buffer.alloc(0))));
  assert.equal(run(fromContainer, pkt).retval, TC_ACT_SHOT);
  const ev = takeEvents();
  assert.equal(traces(ev).length, 0);
  const [d] = drops(ev);
  assert.ok(d && drops(ev).length === 1, JSON.stringify(ev.map((e) => e.type)));
  assert.deepEqual({ reason: d.reason, file: d.file, source: d.source, src: d.srcIdentity, ifindex: d.ifindex }, { reason: 132, file: 'lxc', source: podA.lxcId, src: podA.secId, ifindex: LO });
  assert.ok(d.line > 0, 'source line');
  assert.notEqual(d.hash, 0);
  assert.deepEqual(d.data, pkt);
});

test('events: IPv6 from a pod is a drop event with reason 139; an unknown interface 203; a missing tunnel key 147', () => {
  takeEvents();
  run(fromContainer, ethernet(podA.nodeMac, podA.mac, ETH_P_IPV6, ipv6Udp()));
  const [v6] = drops(takeEvents());
  assert.deepEqual(v6 && [v6.reason, v6.file, v6.source, v6.hash], [139, 'lxc', podA.lxcId, 0]);
  assert.ok(lxcIfMap.delete(LO));
  try {
    run(fromContainer, pingAtoB());
  } finally {
    lxcIfMap.put(LO, podA);
  }
  const [unknown] = drops(takeEvents());
  assert.deepEqual(unknown && [unknown.reason, unknown.source, unknown.srcIdentity], [203, 0, 0]);
  run(tun.fromOverlay, fromTunnel(podB.ip4));
  const [noKey] = drops(takeEvents());
  assert.deepEqual(noKey && [noKey.reason, noKey.file], [147, 'overlay']);
});

test('events: aggregation — the same packet twice is traced once; a new TCP flag reports again', () => {
  takeEvents();
  const sport = freshPort();
  for (let i = 0; i < 3; i++) run(fromContainer, tcpPkt(podA, podB.ip4, sport, 80, TCP_SYN));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-endpoint new']);
  run(fromContainer, tcpPkt(podA, podB.ip4, sport, 80, TCP_ACK));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint established', 'to-endpoint established'], 'ACK is new');
  run(fromContainer, tcpPkt(podA, podB.ip4, sport, 80, TCP_ACK | TCP_PSH, Buffer.from('data')));
  assert.deepEqual(pointsOf(takeEvents()), [], 'PSH is not a reported flag, ACK was seen');
  run(fromContainer, tcpPkt(podA, podB.ip4, sport, 80, TCP_FIN | TCP_ACK));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint established', 'to-endpoint established'], 'FIN is new');
});

test('events: aggregation — the reverse tuple is reported as reply, at every point and on later reports', () => {
  takeEvents();
  const sport = freshPort();
  run(fromContainer, tcpPkt(podA, podB.ip4, sport, 80, TCP_SYN));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-endpoint new']);
  const synAck = tcpPkt(podB, podA.ip4, 80, sport, TCP_SYN | TCP_ACK);
  assert.equal(asPodB(() => run(fromContainer, synAck)).retval, TC_ACT_REDIRECT);
  const reply = traces(takeEvents());
  assert.deepEqual(reply.map((e) => `${e.obsPoint} ${e.reason} ${e.source}`), [`from-endpoint reply ${podB.lxcId}`, `to-endpoint reply ${podA.lxcId}`]);
  assert.notEqual(reply[0]!.hash, 0);
  asPodB(() => run(fromContainer, tcpPkt(podB, podA.ip4, 80, sport, TCP_FIN | TCP_ACK)));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint reply', 'to-endpoint reply'], 'a later report of the reply direction');
  // ICMP: the echo reply answers the request with the same identifier.
  const id = freshPort();
  run(fromContainer, ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ipv4({ src: podA.ip4, dst: podB.ip4, proto: 1 }, icmpEcho(id, 1, Buffer.alloc(8)))));
  const echoReply = icmpEcho(id, 1, Buffer.alloc(8));
  echoReply[0] = 0;
  echoReply.writeUInt16BE(0, 2);
  echoReply.writeUInt16BE(csum(echoReply), 2);
  asPodB(() => run(fromContainer, ethernet(podB.nodeMac, podB.mac, ETH_P_IP, ipv4({ src: podB.ip4, dst: podA.ip4, proto: 1 }, echoReply))));
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-endpoint new', 'from-endpoint reply', 'to-endpoint reply']);
});

test('events: aggregation — a reply arriving through the tunnel is matched to the request that left through it', () => {
  takeEvents();
  const sport = freshPort();
  const peer = '10.201.1.99';
  assert.equal(run(tun.fromContainer, tcpPkt(podA, peer, sport, 443, TCP_SYN)).retval, TC_ACT_REDIRECT);
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-overlay new']);
  const synAck = ethernet('02:00:0a:c9:01:aa', '02:00:0a:c9:01:bb', ETH_P_IP, ipv4({ src: peer, dst: podA.ip4, proto: 6 }, tcp(peer, podA.ip4, 443, sport, TCP_SYN | TCP_ACK, Buffer.alloc(0))));
  assert.equal(runCb(tun.keyFromOverlay, synAck, [0, 3000, parseIPv4(REMOTE_NODE_IP)]).retval, TC_ACT_REDIRECT);
  const reply = traces(takeEvents());
  assert.deepEqual(reply.map((e) => `${e.obsPoint} ${e.reason} ${e.srcIdentity}->${e.dstIdentity} ${e.source}`), [
    `from-overlay reply 3000->${podA.secId} 0`,
    `to-endpoint reply 3000->${podA.secId} ${podA.lxcId}`,
  ]);
});

test('events: aggregation — an established flow is reported again once 5 s passed since its last report', () => {
  takeEvents();
  const sport = freshPort();
  const pkt = tcpPkt(podA, podB.ip4, sport, 80, TCP_ACK);
  run(fromContainer, pkt);
  assert.equal(traces(takeEvents()).length, 2);
  run(fromContainer, pkt);
  assert.equal(traces(takeEvents()).length, 0);
  // Age the flow's entry of cil_from_container by 6 s instead of waiting.
  const key: TraceKey = { saddr: podA.ip4, daddr: podB.ip4, sport, dport: 80, proto: 6, hook: TRACE_HOOK_FROM_CONTAINER, pad: 0 };
  const st = traceAgg.lookup(key);
  assert.ok(st, 'cil_from_container entry in tendril_trace_agg');
  assert.equal(st.tcpFlags, TCP_ACK);
  traceAgg.update(key, { ...st, lastReport: st.lastReport - 6_000_000_000n }, 'exist');
  run(fromContainer, pkt);
  assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint established', 'to-endpoint established']);
});

test('events: drop events are rate-limited per CPU (1000/s), the rest counted in tendril_events_lost', () => {
  takeEvents();
  const lostMap = lxc!.map(EVENTS_LOST_MAP);
  const limitedBefore = sumPerCpu(lostMap, EVENTS_LOST_DROP_RATE);
  const fullBefore = sumPerCpu(lostMap, EVENTS_LOST_RING_FULL);
  const spoofed = ethernet(podA.nodeMac, podA.mac, ETH_P_IP, ipv4({ src: '10.200.0.99', dst: podB.ip4, proto: 1 }, icmpEcho(1, 1, Buffer.alloc(8))));
  const n = 3000;
  const r = fromContainer.run({ data: spoofed, ctx: skbCtx({ ifindex: LO }), repeat: n });
  assert.equal(r.retval, TC_ACT_SHOT);
  const written = drops(takeEvents()).length;
  const limited = sumPerCpu(lostMap, EVENTS_LOST_DROP_RATE) - limitedBefore;
  assert.equal(sumPerCpu(lostMap, EVENTS_LOST_RING_FULL) - fullBefore, 0, 'ring never full');
  assert.equal(written + limited, n, `${written} written + ${limited} rate-limited`);
  assert.ok(written <= 1000 + 20 && written > 0, `${written} drop events written`);
});

test('events: CONFIG_EVENTS=0 writes nothing and leaves the aggregation map alone', (t) => {
  const off = Collection.load(root + 'build/bpf/lxc.o', {
    constants: { CONFIG_ROUTER_IP4: be32(ROUTER_IP), CONFIG_HOST_IFINDEX: 0, CONFIG_NODE_IP4: be32('192.0.2.1'), CONFIG_EVENTS: 0 },
    pinRoot,
  });
  try {
    takeEvents();
    const prog = off.program('cil_from_container');
    const sport = freshPort();
    assert.equal(run(prog, tcpPkt(podA, podB.ip4, sport, 80, TCP_SYN)).retval, TC_ACT_REDIRECT);
    assert.equal(run(prog, tcpPkt(podA, '10.201.1.99', sport, 80, TCP_SYN)).retval, TC_ACT_REDIRECT, 'tunnelled');
    assert.equal(run(prog, ethernet(podA.nodeMac, podA.mac, ETH_P_IPV6, ipv6Udp())).retval, TC_ACT_SHOT);
    assert.deepEqual(takeEvents(), []);
    assert.equal(traceAgg.lookup({ saddr: podA.ip4, daddr: podB.ip4, sport, dport: 80, proto: 6, hook: TRACE_HOOK_FROM_CONTAINER, pad: 0 }), undefined);

    // What events cost per packet of a known flow (one aggregation lookup, no event written): the same packet to
    // the world (left unchanged, so it can be repeated) through both programs, best of 20 x 20000 runs.
    const known = tcpPkt(podA, '192.0.2.77', freshPort(), 80, TCP_ACK);
    run(fromContainer, known);
    assert.deepEqual(pointsOf(takeEvents()), ['from-endpoint new', 'to-stack new']);
    const best = (p: BpfProgram): number => {
      let min = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 20; i++) min = Math.min(min, p.run({ data: known, ctx: skbCtx({ ifindex: LO }), repeat: 20_000 }).durationNs);
      return min;
    };
    const [on, none] = [best(fromContainer), best(prog)];
    t.diagnostic(`cil_from_container, known flow to the world (from-endpoint + to-stack): ${on} ns with events, ${none} ns with CONFIG_EVENTS=0`);
    assert.equal(takeEvents().length, 0, 'a known flow writes no event');
  } finally {
    off.close();
  }
});

test('events: a full ring counts lost events, and the reader reports them (one-page ring); policy verdicts decode', () => {
  const smallRoot = `${pinRoot}-small`;
  const small = Collection.load(root + 'build/bpf/tests/events_harness.o', {
    constants: { CONFIG_ROUTER_IP4: be32(ROUTER_IP), CONFIG_HOST_IFINDEX: 0, CONFIG_NODE_IP4: be32('192.0.2.1') },
    pinRoot: smallRoot,
  });
  try {
    small.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: podB.ip4 }, podB);
    small.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(LO, podA);
    const got: DatapathEvent[] = [];
    const watch = watchEvents(small.map(EVENTS_MAP), small.map(EVENTS_LOST_MAP), (e) => got.push(e), { intervalMs: 60_000 });
    const flows = 40;
    const prog = small.program('cil_from_container');
    for (let i = 0; i < flows; i++) assert.equal(run(prog, tcpPkt(podA, podB.ip4, 20000 + i, 80, TCP_SYN)).retval, TC_ACT_REDIRECT);
    watch.stop();
    const st = watch.stats();
    // 4096 bytes hold 22 records of 176 + 8 bytes; 40 flows wrote 80 traces.
    assert.equal(st.read, got.length);
    assert.equal(st.read + st.lost, 2 * flows, JSON.stringify(st));
    assert.ok(st.read >= 20 && st.read <= 22, `read ${st.read}`);
    assert.deepEqual(
      got.slice(0, 2).map((e) => (e.type === 'trace' ? e.obsPoint : e.type)),
      ['from-endpoint', 'to-endpoint'] satisfies ObsPoint[],
    );

    // The policy-verdict helper (no caller in the datapath yet) writes what the decoder reads.
    const verdicts: DatapathEvent[] = [];
    const ringOfSmall = RingBuffer.open(small.map(EVENTS_MAP), (rec) => verdicts.push(decodeEvent(rec)!));
    try {
      ringOfSmall.consume();
      verdicts.length = 0;
      const pkt = tcpPkt(podA, podB.ip4, 20999, 8080, TCP_SYN);
      // cb: source 101, remote identity 2, ingress (1) / TCP (6) / L3-L4 (2), deny (2), port 8080.
      const r = small.program('test_policy_verdict').run({ data: pkt, ctx: skbCtx({ ifindex: LO, cb: [101, 2, (1 << 16) | (6 << 8) | 2, 2, 8080] }) });
      assert.equal(r.retval, TC_ACT_OK);
      ringOfSmall.consume();
    } finally {
      ringOfSmall.close();
    }
    assert.equal(verdicts.length, 1);
    const v = verdicts[0]!;
    assert.equal(v.type, 'policy-verdict');
    if (v.type === 'policy-verdict') {
      assert.deepEqual(
        { dir: v.direction, action: v.action, match: v.match, proto: v.proto, dport: v.dport, source: v.source, src: v.srcIdentity, capLen: v.capLen },
        { dir: 'ingress', action: 'deny', match: 'L3-L4', proto: 6, dport: 8080, source: 101, src: 2, capLen: 54 },
      );
    }
  } finally {
    small.close();
    rmSync(smallRoot, { recursive: true, force: true });
  }
});
