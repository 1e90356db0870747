// BPF masquerading on crafted packets (BPF_PROG_TEST_RUN, root; nothing is attached): host.o's cil_to_netdev
// translates a pod's flow to the world, cil_from_netdev translates its replies and ICMP errors back, cluster and
// non-masquerade destinations keep the pod's address, and a full port range drops with Cilium's reason 167.
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, decodeSkbCtx, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { TRACE_AGG_MAP, traceKeyCodec, traceStateCodec, type TraceKey, type TraceState } from '../src/datapath/events.js';
import {
  CT_F_RX_CLOSING,
  CT_F_SEEN_NON_SYN,
  CT_F_TX_CLOSING,
  CT_MAP_ANY,
  CT_MAP_TCP,
  IPCACHE_MAP,
  LXC_MAP,
  METRICS_MAP,
  ROUTING_MODE_NATIVE,
  ctKeyCodec,
  ctValueCodec,
  endpointInfoCodec,
  endpointKeyCodec,
  ipcacheKeyCodec,
  ipcacheValueCodec,
  metricsKeyCodec,
  metricsValueCodec,
  type CtKey,
  type EndpointInfo,
} from '../src/datapath/maps.js';
import { IPMASQ_MAP, SNAT_MAP, ipmasqKeyCodec, ipmasqReplace, ipmasqValueCodec, NAT_DIR_IN, NAT_F_MASK, NAT_F_MASQ, NAT_F_SAME_PORT, NAT_F_TRACE_SHIFT, natAdoptUnflagged, natConstants, natGc, natList, natLookupOut, natValueCodec, type NatValue } from '../src/datapath/nat.js';
import { monotonicSeconds } from '../src/datapath/ct.js';
import { parseIPv4 } from '../src/util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP, ethernet, icmpEcho, icmpError, ipv4, l4, parse } from './lib/packets.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pinRoot = `/sys/fs/bpf/tendril-test-${process.pid}-masq-run`;
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const LO = 1;

const NODE_IP = '192.168.77.10';
const ROUTER = '192.168.77.1';
const EXT = '93.184.216.34';
const pod: EndpointInfo = { ifindex: 4242, lxcId: 101, flags: 0, mac: '02:00:0a:c8:00:0a', nodeMac: '02:00:0a:c8:01:0a', secId: 1001, ip4: '10.200.0.10' };
const NODE_MAC = '02:00:00:00:77:0a';
const GW_MAC = '02:00:00:00:77:01';

function be32(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}

const loaded: Collection[] = [];
let toNetdev: BpfProgram;
let fromNetdev: BpfProgram;
let toNetdevSmall: BpfProgram;
let toNetdevIpmasq: BpfProgram;
let snat: TypedMap<CtKey, NatValue>;
let ct: TypedMap<CtKey, ReturnType<typeof ctValueCodec.decode>>;
let ctAny: TypedMap<CtKey, ReturnType<typeof ctValueCodec.decode>>;
let traceAgg: TypedMap<TraceKey, TraceState>;

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-masq-run.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(pinRoot, { recursive: true });
  const base = { CONFIG_NODE_IP4: be32(NODE_IP), CONFIG_ROUTING_MODE: ROUTING_MODE_NATIVE };
  const load = (m: Parameters<typeof natConstants>[0]): Collection => {
    const c = Collection.load(root + 'build/bpf/host.o', { constants: { ...base, ...natConstants(m) }, pinRoot });
    loaded.push(c);
    return c;
  };
  const main = load({ enabled: true, portMin: 32768, portMax: 60999, ipMasqAgent: false });
  // Sharing the pinned maps: a four-port range, and the ip-masq-agent set with a native-routing CIDR.
  const small = load({ enabled: true, portMin: 40000, portMax: 40003, ipMasqAgent: false });
  const ipm = load({ enabled: true, portMin: 32768, portMax: 60999, ipMasqAgent: true, nativeRoutingCidr: '10.0.0.0/8' });
  toNetdev = main.program('cil_to_netdev');
  fromNetdev = main.program('cil_from_netdev');
  toNetdevSmall = small.program('cil_to_netdev');
  toNetdevIpmasq = ipm.program('cil_to_netdev');
  snat = main.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  assert.equal(small.map(SNAT_MAP).id, main.map(SNAT_MAP).id);
  ct = main.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec);
  ctAny = main.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec);
  traceAgg = main.map(TRACE_AGG_MAP).typed(traceKeyCodec, traceStateCodec);
  main.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: pod.ip4 }, pod);
  const ipcache = main.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
  const entry = (identity: number) => ({ identity, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 });
  ipcache.put({ prefix: pod.ip4 }, entry(pod.secId));
  ipcache.put({ prefix: '10.201.1.0/24' }, entry(2)); // a remote node's pod CIDR: world identity, the cluster's
  ipcache.put({ prefix: '192.168.77.11' }, entry(6)); // another node
  ipcache.put({ prefix: '198.18.5.0/24' }, entry(0x01000005)); // a policy CIDR identity: still the world
  ipmasqReplace(ipm.map(IPMASQ_MAP).typed(ipmasqKeyCodec, ipmasqValueCodec), ['198.51.100.0/24']);
});

after(() => {
  for (const c of loaded) c.close();
  rmSync(pinRoot, { recursive: true, force: true });
});

function run(prog: BpfProgram, frame: Buffer): { retval: number; data: Buffer } {
  const r = prog.run({ data: frame, ctx: skbCtx({ ifindex: LO }) });
  return { retval: r.retval, data: r.data };
}

const out = (payload: Buffer): Buffer => ethernet(GW_MAC, NODE_MAC, payload);
const inn = (payload: Buffer): Buffer => ethernet(NODE_MAC, GW_MAC, payload);
const tcpOut = (sport: number, dst = EXT, dport = 80, flags = 0x02): Buffer =>
  out(ipv4(pod.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, dst, sport, dport, Buffer.from('hello'), flags)));

/** The pod's egress conntrack entry of a flow, as lxc's cil_from_container makes it: alive unless told otherwise. */
function ctEntry(protocol: number, sport: number, dst: string, dport: number, o: { flags?: number; expiresIn?: number } = {}): CtKey {
  const now = monotonicSeconds();
  const key = { saddr: pod.ip4, daddr: dst, sport, dport, nexthdr: protocol, dir: 0, pad: 0 };
  const v = { packets: 1n, bytes: 60n, lifetime: now + (o.expiresIn ?? 100), srcSecId: pod.secId, flags: o.flags ?? 0, txFlagsSeen: 2, rxFlagsSeen: 0, created: now };
  (protocol === IPPROTO_TCP ? ct : ctAny).put(key, v);
  return key;
}

function ctForget(keys: CtKey[]): void {
  for (const k of keys) (k.nexthdr === IPPROTO_TCP ? ct : ctAny).delete(k);
}

test('a pod TCP flow to the world leaves with the node IP, keeping its port when in range; replies go back to the pod', () => {
  const r = run(toNetdev, tcpOut(43001));
  assert.equal(r.retval, TC_ACT_OK);
  const p = parse(r.data);
  assert.deepEqual([p.src, p.sport, p.dst, p.dport], [NODE_IP, 43001, EXT, 80]);
  assert.ok(p.ipCsumOk && p.l4CsumOk, 'checksums verify after translation');
  const entries = natList(snat).filter((e) => e.protocol === IPPROTO_TCP && (e.sport === 43001 || e.dport === 43001));
  assert.deepEqual(
    entries.map((e) => `${e.direction} ${e.src}:${e.sport} -> ${e.dst}:${e.dport} ${e.xlate} ${e.toAddr}:${e.toPort}`).sort(),
    [`IN ${EXT}:80 -> ${NODE_IP}:43001 XLATE_DST ${pod.ip4}:43001`, `OUT ${pod.ip4}:43001 -> ${EXT}:80 XLATE_SRC ${NODE_IP}:43001`],
  );
  // The reply: to the pod's own address and port, delivered straight into it.
  const reply = inn(ipv4(EXT, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, NODE_IP, 80, 43001, Buffer.alloc(0), 0x12)));
  const b = run(fromNetdev, reply);
  assert.equal(b.retval, TC_ACT_REDIRECT);
  const q = parse(b.data);
  assert.deepEqual([q.src, q.sport, q.dst, q.dport], [EXT, 80, pod.ip4, 43001]);
  assert.ok(q.ipCsumOk && q.l4CsumOk);
});

test('a port out of the range is replaced by one in it, the same for every packet of the flow', () => {
  const a = parse(run(toNetdev, tcpOut(12345)).data);
  assert.equal(a.src, NODE_IP);
  assert.ok(a.sport >= 32768 && a.sport <= 60999, `port ${a.sport} in range`);
  assert.ok(a.l4CsumOk);
  const b = parse(run(toNetdev, tcpOut(12345, EXT, 80, 0x10)).data);
  assert.equal(b.sport, a.sport);
  const back = parse(run(fromNetdev, inn(ipv4(EXT, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, NODE_IP, 80, a.sport, Buffer.alloc(0), 0x10)))).data);
  assert.deepEqual([back.dst, back.dport], [pod.ip4, 12345]);
});

test('two pods sending from the same port to one ip:port get different ports', () => {
  const other: EndpointInfo = { ...pod, ifindex: 4243, lxcId: 102, ip4: '10.200.0.11', secId: 1002 };
  loaded[0]!.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: other.ip4 }, other);
  // The first flow is alive (a flow without conntrack entry is dead, and its port would be taken over).
  const alive = ctEntry(IPPROTO_TCP, 45000, EXT, 443);
  const a = parse(run(toNetdev, tcpOut(45000, EXT, 443)).data);
  const frame = out(ipv4(other.ip4, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, other.ip4, EXT, 45000, 443, Buffer.alloc(0))));
  const b = parse(run(toNetdev, frame).data);
  assert.equal(a.sport, 45000);
  assert.equal(b.src, NODE_IP);
  assert.notEqual(b.sport, 45000);
  ctForget([alive]);
});

test('UDP: translated both ways, a zero checksum stays zero', () => {
  const u = parse(run(toNetdev, out(ipv4(pod.ip4, EXT, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, EXT, 5353, 53, Buffer.from('q'))))).data);
  assert.equal(u.src, NODE_IP);
  assert.ok(u.l4CsumOk && u.ipCsumOk);
  const seg = l4(IPPROTO_UDP, pod.ip4, EXT, 5354, 53, Buffer.from('q'));
  seg.writeUInt16BE(0, 6);
  const r = run(toNetdev, out(ipv4(pod.ip4, EXT, IPPROTO_UDP, seg))).data;
  assert.equal(r.readUInt16BE(14 + 20 + 6), 0);
  const back = parse(run(fromNetdev, inn(ipv4(EXT, NODE_IP, IPPROTO_UDP, l4(IPPROTO_UDP, EXT, NODE_IP, 53, u.sport, Buffer.from('a'))))).data);
  assert.deepEqual([back.dst, back.dport], [pod.ip4, 5353]);
  assert.ok(back.l4CsumOk);
});

test('ICMP echo: the identifier is translated, and back in the reply', () => {
  const e = parse(run(toNetdev, out(ipv4(pod.ip4, EXT, 1, icmpEcho(8, 7, 1, Buffer.from('ping'))))).data);
  assert.equal(e.src, NODE_IP);
  assert.ok(e.icmpId >= 32768 && e.icmpId <= 60999);
  assert.ok(e.l4CsumOk && e.ipCsumOk);
  const r = run(fromNetdev, inn(ipv4(EXT, NODE_IP, 1, icmpEcho(0, e.icmpId, 1, Buffer.from('ping')))));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  const back = parse(r.data);
  assert.deepEqual([back.dst, back.icmpType, back.icmpId], [pod.ip4, 0, 7]);
  assert.ok(back.l4CsumOk && back.ipCsumOk);
});

test('ICMP errors about translated flows (TCP frag-needed, UDP port unreachable, echo time exceeded) reach the pod quoting its own packet', () => {
  // TCP: the router cannot forward the node's translated packet.
  const t = run(toNetdev, tcpOut(43002)).data;
  const quotedTcp = t.subarray(14, 14 + 20 + 8);
  const fn = run(fromNetdev, inn(ipv4(ROUTER, NODE_IP, 1, icmpError(3, 4, quotedTcp, 1400))));
  assert.equal(fn.retval, TC_ACT_REDIRECT);
  const a = parse(fn.data);
  assert.equal(a.dst, pod.ip4);
  assert.ok(a.ipCsumOk && a.l4CsumOk, 'outer checksums');
  assert.deepEqual([a.inner!.src, a.inner!.sport, a.inner!.dst, a.inner!.dport], [pod.ip4, 43002, EXT, 80]);
  assert.ok(a.inner!.ipCsumOk, 'quoted IPv4 header checksum');

  // UDP from a port out of range, quoted whole: the quoted UDP checksum verifies for the pod's addresses.
  const u = run(toNetdev, out(ipv4(pod.ip4, EXT, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, EXT, 999, 9999, Buffer.from('x'))))).data;
  const un = parse(run(fromNetdev, inn(ipv4(EXT, NODE_IP, 1, icmpError(3, 3, u.subarray(14))))).data);
  assert.equal(un.dst, pod.ip4);
  assert.ok(un.l4CsumOk);
  assert.deepEqual([un.inner!.src, un.inner!.sport], [pod.ip4, 999]);
  const quoted = un.inner!;
  assert.ok(quoted.ipCsumOk);
  const orig = parse(out(ipv4(pod.ip4, EXT, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, EXT, 999, 9999, Buffer.from('x')))));
  assert.ok(orig.l4CsumOk);
  assert.equal(quoted.l4Csum, out(ipv4(pod.ip4, EXT, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, EXT, 999, 9999, Buffer.from('x')))).readUInt16BE(14 + 20 + 6));

  // Echo: time exceeded quoting the translated request.
  const e = run(toNetdev, out(ipv4(pod.ip4, EXT, 1, icmpEcho(8, 9, 1, Buffer.from('ttl'))))).data;
  const te = parse(run(fromNetdev, inn(ipv4(ROUTER, NODE_IP, 1, icmpError(11, 0, e.subarray(14))))).data);
  assert.equal(te.dst, pod.ip4);
  assert.ok(te.l4CsumOk);
  assert.deepEqual([te.inner!.src, te.inner!.proto, te.inner!.icmpId], [pod.ip4, 1, 9]);
  assert.equal(te.inner!.l4Csum, icmpEcho(8, 9, 1, Buffer.from('ttl')).readUInt16BE(2), 'quoted echo checksum as the pod computed it');
});

test('cluster destinations, the node itself, non-masquerade CIDRs and the native-routing CIDR keep the pod address', () => {
  for (const dst of ['10.201.1.20', '192.168.77.11']) assert.equal(parse(run(toNetdev, tcpOut(43100, dst)).data).src, pod.ip4, dst);
  // A policy CIDR identity is still the world.
  assert.equal(parse(run(toNetdev, tcpOut(43101, '198.18.5.9')).data).src, NODE_IP);
  // ip-masq-agent instance: its set and the native-routing CIDR stay, everything else is translated.
  assert.equal(parse(run(toNetdevIpmasq, tcpOut(43102, '198.51.100.20')).data).src, pod.ip4);
  assert.equal(parse(run(toNetdevIpmasq, tcpOut(43103, '10.99.0.1')).data).src, pod.ip4);
  assert.equal(parse(run(toNetdevIpmasq, tcpOut(43104, '8.8.8.8')).data).src, NODE_IP);
  // The node's own traffic, and packets to the node that belong to no translated flow, pass unchanged.
  const own = out(ipv4(NODE_IP, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, NODE_IP, EXT, 50000, 80, Buffer.alloc(0))));
  assert.deepEqual(run(toNetdev, own), { retval: TC_ACT_OK, data: own });
  const stray = inn(ipv4(EXT, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, NODE_IP, 80, 59999, Buffer.alloc(0), 0x12)));
  assert.deepEqual(run(fromNetdev, stray), { retval: TC_ACT_OK, data: stray });
});

function dropCount(reason: number): number {
  let n = 0;
  const m = loaded[0]!.map(METRICS_MAP);
  for (const raw of m.keys()) {
    const k = metricsKeyCodec.decode(raw);
    if (k.reason !== reason || k.dir !== 2) continue;
    for (const v of m.lookupPerCpu(raw) ?? []) n += Number(metricsValueCodec.decode(v).packets);
  }
  return n;
}

test('with every port of the range taken towards one ip:port by live flows, a new flow is dropped with reason 167 (egress)', () => {
  const dst = '203.0.113.53';
  const ports = new Set<number>();
  const live: CtKey[] = [];
  for (let i = 0; i < 4; i++) {
    live.push(ctEntry(IPPROTO_UDP, 1000 + i, dst, 53));
    const r = run(toNetdevSmall, out(ipv4(pod.ip4, dst, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, dst, 1000 + i, 53, Buffer.from('q')))));
    assert.equal(r.retval, TC_ACT_OK);
    ports.add(parse(r.data).sport);
  }
  assert.deepEqual([...ports].sort(), [40000, 40001, 40002, 40003]);
  const before = dropCount(167);
  const r = run(toNetdevSmall, out(ipv4(pod.ip4, dst, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, dst, 2000, 53, Buffer.from('q')))));
  assert.equal(r.retval, TC_ACT_SHOT);
  assert.equal(dropCount(167), before + 1);
  // Another destination port has the whole range again.
  assert.equal(run(toNetdevSmall, out(ipv4(pod.ip4, dst, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, dst, 2000, 54, Buffer.from('q'))))).retval, TC_ACT_OK);
  ctForget(live);
});

test('a port held by a dead flow (TCP closed both ways, expired, or its conntrack entry gone) is taken over by a new flow; live ones are not', () => {
  const dst = '203.0.113.54';
  const syn = (sport: number): Buffer => out(ipv4(pod.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, dst, sport, 443, Buffer.alloc(0), 0x02)));
  const portOf = new Map<number, number>();
  const keys = new Map<number, CtKey>();
  for (let i = 0; i < 4; i++) {
    const sport = 1100 + i;
    keys.set(sport, ctEntry(IPPROTO_TCP, sport, dst, 443, { flags: CT_F_SEEN_NON_SYN }));
    const r = run(toNetdevSmall, syn(sport));
    assert.equal(r.retval, TC_ACT_OK);
    portOf.set(sport, parse(r.data).sport);
  }
  assert.deepEqual([...portOf.values()].sort(), [40000, 40001, 40002, 40003]);
  const before = dropCount(167);
  assert.equal(run(toNetdevSmall, syn(1200)).retval, TC_ACT_SHOT, 'all four alive: no port');
  assert.equal(dropCount(167), before + 1);
  const natOf = (sport: number) =>
    natList(snat).filter((e) => e.protocol === IPPROTO_TCP && e.direction === 'OUT' && e.dst === dst && e.sport === sport);

  // Closed this very second: its last ACK may still be on its way, the port is not taken yet.
  ctEntry(IPPROTO_TCP, 1100, dst, 443, { flags: CT_F_SEEN_NON_SYN | CT_F_RX_CLOSING | CT_F_TX_CLOSING, expiresIn: 10 });
  assert.equal(run(toNetdevSmall, syn(1200)).retval, TC_ACT_SHOT, 'a flow closed just now keeps its port');

  // One flow closed (FIN both ways) a while ago: the next new flow gets its port, the dead flow's OUT entry goes.
  const sets: Array<[number, number, { flags?: number; expiresIn?: number } | 'gone']> = [
    // Closed, last packet 5 s ago (lifetime = last packet + the 10 s closing timeout).
    [1100, 1200, { flags: CT_F_SEEN_NON_SYN | CT_F_RX_CLOSING | CT_F_TX_CLOSING, expiresIn: 5 }],
    [1101, 1201, { flags: CT_F_SEEN_NON_SYN, expiresIn: -5 }],
    [1102, 1202, 'gone'],
  ];
  const fresh: CtKey[] = [];
  for (const [dead, next, how] of sets) {
    if (how === 'gone') ctForget([keys.get(dead)!]);
    else ctEntry(IPPROTO_TCP, dead, dst, 443, how);
    fresh.push(ctEntry(IPPROTO_TCP, next, dst, 443));
    const r = run(toNetdevSmall, syn(next));
    assert.equal(r.retval, TC_ACT_OK, `${next} takes over ${dead}'s port (${JSON.stringify(how)})`);
    const p = parse(r.data);
    assert.equal(p.sport, portOf.get(dead));
    assert.ok(p.l4CsumOk);
    assert.equal(natOf(dead).length, 0, 'the dead flow has no mapping left');
    assert.equal(natOf(next)[0]?.toPort, portOf.get(dead));
    // Its reply reaches the new flow.
    const back = run(fromNetdev, inn(ipv4(dst, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, dst, NODE_IP, 443, p.sport, Buffer.alloc(0), 0x12))));
    assert.equal(back.retval, TC_ACT_REDIRECT);
    assert.equal(parse(back.data).dport, next);
    // The same flow's next packet keeps its mapping.
    assert.equal(parse(run(toNetdevSmall, syn(next)).data).sport, p.sport);
  }
  // Everything alive again (the fourth flow never died): exhaustion still drops.
  const b2 = dropCount(167);
  fresh.push(ctEntry(IPPROTO_TCP, 1300, dst, 443));
  assert.equal(run(toNetdevSmall, syn(1300)).retval, TC_ACT_SHOT);
  assert.equal(dropCount(167), b2 + 1);
  ctForget([...fresh, keys.get(1100)!, keys.get(1101)!, keys.get(1103)!]);
});

test('a flow that keeps its own port has its IN entry alone; a flow whose port is held gets two; a dead one-entry flow\'s port is taken over', () => {
  const dst = '203.0.113.66';
  const pods = ['10.200.0.21', '10.200.0.22', '10.200.0.23'].map((ip4, i): EndpointInfo => ({ ...pod, lxcId: 121 + i, ip4 }));
  const lxc = loaded[0]!.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
  for (const p of pods) lxc.put({ ip4: p.ip4 }, p);
  const now = monotonicSeconds();
  const tuple = (p: EndpointInfo): CtKey => ({ saddr: p.ip4, daddr: dst, sport: 40001, dport: 443, nexthdr: IPPROTO_TCP, dir: 0, pad: 0 });
  for (const p of pods) ct.put(tuple(p), { packets: 1n, bytes: 60n, lifetime: now + 100, srcSecId: p.secId, flags: CT_F_SEEN_NON_SYN, txFlagsSeen: 2, rxFlagsSeen: 0, created: now });
  const syn = (p: EndpointInfo): Buffer => out(ipv4(p.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, p.ip4, dst, 40001, 443, Buffer.alloc(0), 0x02)));
  const inKey = (port: number): CtKey => ({ saddr: dst, daddr: NODE_IP, sport: 443, dport: port, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 });
  const back = (port: number): { dst: string; dport: number } => parse(run(fromNetdev, inn(ipv4(dst, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, dst, NODE_IP, 443, port, Buffer.alloc(0), 0x12)))).data);
  try {
    // The first keeps 40001 (in the range): one entry, the IN one, which stands for the OUT side as well.
    const a = parse(run(toNetdevSmall, syn(pods[0]!)).data);
    assert.deepEqual([a.src, a.sport], [NODE_IP, 40001]);
    assert.deepEqual({ ...snat.lookup(inKey(40001))!, flags: snat.lookup(inKey(40001))!.flags & NAT_F_MASK }, { ...snat.lookup(inKey(40001))!, toAddr: pods[0]!.ip4, toPort: 40001, flags: NAT_F_MASQ | NAT_F_SAME_PORT });
    assert.equal(snat.lookup(tuple(pods[0]!)), undefined, 'no OUT entry');
    assert.deepEqual([natLookupOut(snat, tuple(pods[0]!), [NODE_IP])?.toAddr, natLookupOut(snat, tuple(pods[0]!), [NODE_IP])?.toPort], [NODE_IP, 40001]);
    assert.equal(parse(run(toNetdevSmall, out(ipv4(pods[0]!.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, pods[0]!.ip4, dst, 40001, 443, Buffer.from('x'), 0x10)))).data).sport, 40001);
    assert.deepEqual([back(40001).dst, back(40001).dport], [pods[0]!.ip4, 40001]);
    // The second pod's own port is held by a live flow: another port, with both entries.
    const b = parse(run(toNetdevSmall, syn(pods[1]!)).data);
    assert.notEqual(b.sport, 40001);
    assert.equal(snat.lookup(tuple(pods[1]!))?.toPort, b.sport, 'OUT entry');
    assert.equal((snat.lookup(inKey(b.sport))?.flags ?? 0) & NAT_F_MASK, NAT_F_MASQ, 'its IN entry is not alone');
    assert.deepEqual([back(b.sport).dst, back(b.sport).dport], [pods[1]!.ip4, 40001]);
    // The first flow dies: the third pod's flow takes 40001 over, alone again, and the replies reach it.
    ct.delete(tuple(pods[0]!));
    const c = parse(run(toNetdevSmall, syn(pods[2]!)).data);
    assert.equal(c.sport, 40001);
    assert.deepEqual([snat.lookup(inKey(40001))?.toAddr, (snat.lookup(inKey(40001))?.flags ?? 0) & NAT_F_MASK], [pods[2]!.ip4, NAT_F_MASQ | NAT_F_SAME_PORT]);
    assert.deepEqual([back(40001).dst, back(40001).dport], [pods[2]!.ip4, 40001]);
    // The GC keeps the live ones' entries and lists each flow both ways.
    natGc(snat, [ct]);
    const rows = natList(snat).filter((e) => e.direction === 'OUT' && e.dst === dst).map((e) => `${e.src}:${e.sport} ${e.toAddr}:${e.toPort}`).sort();
    assert.deepEqual(rows, [`${pods[1]!.ip4}:40001 ${NODE_IP}:${b.sport}`, `${pods[2]!.ip4}:40001 ${NODE_IP}:40001`]);
  } finally {
    for (const p of pods) ct.delete(tuple(p));
    natGc(snat, [ct]);
    for (const p of pods) lxc.delete({ ip4: p.ip4 });
  }
});

test('upgrade: a masquerade mapping made before NAT_F_MASQ is flagged by natAdoptUnflagged() and its replies reach the pod again; NodePort\'s stay', () => {
  const dst = '203.0.113.91';
  const now = monotonicSeconds();
  const outKey: CtKey = { saddr: pod.ip4, daddr: dst, sport: 45100, dport: 443, nexthdr: IPPROTO_TCP, dir: 0, pad: 0 };
  const inKey: CtKey = { saddr: dst, daddr: NODE_IP, sport: 443, dport: 45100, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 };
  // NodePort's: a client outside, SNATed towards a remote backend; its IN entry goes back to the client.
  const npIn: CtKey = { saddr: '10.201.1.50', daddr: NODE_IP, sport: 8080, dport: 45101, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 };
  snat.put(outKey, { toAddr: NODE_IP, toPort: 45100, flags: 0, created: now, lastUsed: 0 });
  snat.put(inKey, { toAddr: pod.ip4, toPort: 45100, flags: 0, created: now, lastUsed: 0 });
  snat.put(npIn, { toAddr: '198.51.100.9', toPort: 51000, flags: 0, created: now, lastUsed: 0 });
  const reply = (): { retval: number; dst: string } => {
    const r = run(fromNetdev, inn(ipv4(dst, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, dst, NODE_IP, 443, 45100, Buffer.alloc(0), 0x10))));
    return { retval: r.retval, dst: parse(r.data).dst };
  };
  try {
    assert.notEqual(reply().dst, pod.ip4, 'an unflagged entry is NodePort\'s to the datapath: not translated');
    const isPod = (ip: string): boolean => ip === pod.ip4;
    assert.equal(natAdoptUnflagged(snat, isPod), 2);
    assert.equal(snat.lookup(inKey)?.flags, NAT_F_MASQ);
    assert.equal(snat.lookup(outKey)?.flags, NAT_F_MASQ);
    assert.equal(snat.lookup(npIn)?.flags, 0, 'NodePort\'s entry untouched');
    const r = reply();
    assert.deepEqual([r.retval, r.dst], [TC_ACT_REDIRECT, pod.ip4]);
    assert.equal(natAdoptUnflagged(snat, isPod), 0, 'nothing left to flag');
  } finally {
    for (const k of [outKey, inKey, npIn]) snat.delete(k);
  }
});

test('a new connection (SYN) on a tuple whose port was lost (its IN entry evicted and the port taken) gets a new port', () => {
  const dst = '203.0.113.55';
  const pkt = (flags: number): Buffer => out(ipv4(pod.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, dst, 1400, 443, Buffer.alloc(0), flags)));
  const key = ctEntry(IPPROTO_TCP, 1400, dst, 443);
  const x = parse(run(toNetdevSmall, pkt(0x02)).data).sport;
  const inKey = { saddr: dst, daddr: NODE_IP, sport: 443, dport: x, nexthdr: IPPROTO_TCP, dir: 1, pad: 0 };
  // An established flow's packets keep the mapping without looking at the IN entry.
  snat.put(inKey, { toAddr: '10.200.0.99', toPort: 777, flags: 0, created: monotonicSeconds(), lastUsed: 0 });
  assert.equal(parse(run(toNetdevSmall, pkt(0x10)).data).sport, x);
  // A SYN on the tuple: the port is another flow's now, so the tuple gets one of its own.
  const r = run(toNetdevSmall, pkt(0x02));
  assert.equal(r.retval, TC_ACT_OK);
  const y = parse(r.data).sport;
  assert.notEqual(y, x);
  assert.equal(snat.lookup(inKey)?.toPort, 777, "the other flow's entry is untouched");
  assert.equal(snat.lookup({ ...inKey, dport: y })?.toPort, 1400);
  ctForget([key]);
  snat.delete(inKey);
});

test('the GC removes the NAT entries of flows whose conntrack entry is gone, and keeps the rest', () => {
  run(toNetdev, tcpOut(44444, '9.9.9.9', 80));
  const now = monotonicSeconds();
  const key = { saddr: pod.ip4, daddr: '9.9.9.9', sport: 44444, dport: 80, nexthdr: IPPROTO_TCP, dir: 0, pad: 0 };
  ct.put(key, { packets: 1n, bytes: 60n, lifetime: now + 100, srcSecId: pod.secId, flags: 0, txFlagsSeen: 2, rxFlagsSeen: 0, created: now });
  const r = natGc(snat, [ct]);
  assert.ok(r.deleted > 0);
  const left = natList(snat);
  assert.equal(left.length, 2, JSON.stringify(left));
  assert.ok(left.every((e) => e.sport === 44444 || e.dport === 44444));
  // The flow kept its own port: its IN entry is its only one in the map (NAT_F_SAME_PORT), listed both ways.
  const inKey = { saddr: '9.9.9.9', daddr: NODE_IP, sport: 80, dport: 44444, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 };
  assert.deepEqual([...snat.keys()], [inKey]);
  assert.equal(snat.lookup(inKey)!.flags, NAT_F_MASQ | NAT_F_SAME_PORT);
  assert.equal(natGc(snat, [ct]).deleted, 0, 'kept while its conntrack entry lives');
  ct.delete(key);
  assert.equal(natGc(snat, [ct]).deleted, 1);
  assert.equal(natList(snat).length, 0);
});

test('UDP: a lost IN entry of a live flow is made again with the same port; a port another flow took gives a new one', () => {
  const dst = '203.0.113.77';
  const pkt = (): Buffer => out(ipv4(pod.ip4, dst, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, dst, 1500, 53, Buffer.from('q'))));
  const key = ctEntry(IPPROTO_UDP, 1500, dst, 53);
  const x = parse(run(toNetdevSmall, pkt()).data).sport;
  const inKey = { saddr: dst, daddr: NODE_IP, sport: 53, dport: x, nexthdr: IPPROTO_UDP, dir: 1, pad: 0 };
  assert.equal(snat.lookup(inKey)?.toPort, 1500);
  // Lost (an LRU eviction): the next packet keeps the port and makes the way back again.
  snat.delete(inKey);
  assert.equal(parse(run(toNetdevSmall, pkt()).data).sport, x);
  assert.deepEqual([snat.lookup(inKey)?.toAddr, snat.lookup(inKey)?.toPort], [pod.ip4, 1500]);
  const back = parse(run(fromNetdev, inn(ipv4(dst, NODE_IP, IPPROTO_UDP, l4(IPPROTO_UDP, dst, NODE_IP, 53, x, Buffer.from('a'))))).data);
  assert.deepEqual([back.dst, back.dport], [pod.ip4, 1500]);
  // Taken by another flow meanwhile: this flow moves to a port of its own, the other's entry stays.
  snat.put(inKey, { toAddr: '10.200.0.98', toPort: 778, flags: 0, created: monotonicSeconds(), lastUsed: 0 });
  const y = parse(run(toNetdevSmall, pkt()).data).sport;
  assert.notEqual(y, x);
  assert.equal(snat.lookup(inKey)?.toPort, 778);
  assert.equal(snat.lookup({ ...inKey, dport: y })?.toPort, 1500);
  ctForget([key]);
  snat.delete(inKey);
  snat.delete({ ...inKey, dport: y });
  snat.delete({ saddr: pod.ip4, daddr: dst, sport: 1500, dport: 53, nexthdr: IPPROTO_UDP, dir: 0, pad: 0 });
});

test('a packet from-container traced to-network already (native routing, its mark) is not traced again, and loses the mark', () => {
  const TRACED_NET = 0x0700;
  const HOOK_TO_NETDEV = 5;
  const dst = '203.0.113.88';
  const agg = (sport: number): TraceState | undefined => traceAgg.lookup({ saddr: pod.ip4, daddr: dst, sport, dport: 80, proto: IPPROTO_TCP, hook: HOOK_TO_NETDEV, pad: 0 });
  const marked = toNetdev.run({ data: tcpOut(1601, dst), ctx: skbCtx({ ifindex: LO, mark: TRACED_NET }) });
  assert.equal(marked.retval, TC_ACT_OK);
  assert.equal(parse(marked.data).src, NODE_IP, 'translated all the same');
  assert.equal(decodeSkbCtx(marked.ctx!).mark, 0);
  assert.equal(agg(1601), undefined, 'no trace decision of cil_to_netdev for the traced packet');
  // Unmarked (tunnel mode, or through the stack): cil_to_netdev traces it.
  const plain = toNetdev.run({ data: tcpOut(1602, dst), ctx: skbCtx({ ifindex: LO }) });
  assert.equal(plain.retval, TC_ACT_OK);
  assert.notEqual(agg(1602), undefined);
  // Another mark is left alone.
  const other = toNetdev.run({ data: tcpOut(1603, dst), ctx: skbCtx({ ifindex: LO, mark: 0x0a00 }) });
  assert.equal(decodeSkbCtx(other.ctx!).mark, 0x0a00);
});

test('a translated reply\'s trace aggregation is its IN entry\'s (last_used, flags\' high byte): the first reply, a TCP flag not reported before and every 5 s are reported, no tendril_trace_agg entry', () => {
  const HOOK_FROM_NETDEV = 4;
  const dst = '203.0.113.89';
  const sport = 1701;
  ctEntry(IPPROTO_TCP, sport, dst, 80, { flags: CT_F_SEEN_NON_SYN });
  assert.equal(run(toNetdev, tcpOut(sport, dst, 80, 0x10)).retval, TC_ACT_OK);
  // Out of the NAT range: the flow has two entries, its IN entry the one holding the port.
  const inKey = natList(snat).find((e) => e.direction === 'IN' && e.src === dst && e.protocol === IPPROTO_TCP)!;
  assert.ok(inKey, 'IN entry');
  const key: CtKey = { saddr: dst, daddr: NODE_IP, sport: 80, dport: inKey.dport, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 };
  const reply = (flags: number): number => run(fromNetdev, inn(ipv4(dst, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, dst, NODE_IP, 80, inKey.dport, Buffer.alloc(0), flags)))).retval;
  const lastUsed = (): number => snat.lookup(key)!.lastUsed;
  const seen = (): number => snat.lookup(key)!.flags >> NAT_F_TRACE_SHIFT;
  const stamp = (v: number): void => snat.put(key, { ...snat.lookup(key)!, lastUsed: v });
  assert.deepEqual([lastUsed(), seen()], [0, 0], 'nothing reported yet');
  reply(0x10);
  const now = monotonicSeconds();
  assert.ok(Math.abs(lastUsed() - now) <= 1, `first reply reported: last_used ${lastUsed()} vs ${now}`);
  assert.equal(seen(), 0x10);
  stamp(now - 2);
  reply(0x10);
  assert.equal(lastUsed(), now - 2, 'an ACK again within 5 s: not reported');
  reply(0x11);
  assert.ok(lastUsed() >= now, 'a FIN, new: reported');
  assert.equal(seen(), 0x11);
  stamp(now - 2);
  reply(0x11);
  assert.equal(lastUsed(), now - 2, 'a FIN again within 5 s: not reported');
  stamp(now - 6);
  reply(0x10);
  assert.ok(lastUsed() >= now, 'after 5 s: reported again');
  const agg = traceAgg.lookup({ saddr: dst, daddr: pod.ip4, sport: 80, dport: sport, proto: IPPROTO_TCP, hook: HOOK_FROM_NETDEV, pad: 0 });
  assert.equal(agg, undefined, 'no aggregation map entry for the translated reply');
  assert.equal(snat.lookup(key)!.flags & NAT_F_MASK, NAT_F_MASQ);
});
