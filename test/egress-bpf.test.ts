// The egress gateway datapath on crafted packets (BPF_PROG_TEST_RUN, root; nothing is attached): on the pod's node,
// cil_from_container tunnels a selected pod's packet to a destination CIDR to the gateway (not excluded CIDRs, not
// other pods, not when the node is the gateway itself); on the gateway, cil_to_netdev SNATs such a packet (of a pod of
// another node) to the egress IP and cil_from_netdev reverse-NATs the reply to the pod, only for its own egress IPs.
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, decodeSkbCtx, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { IPCACHE_MAP, LXC_IF_MAP, LXC_MAP, ROUTING_MODE_TUNNEL, endpointInfoCodec, endpointKeyCodec, ifindexKeyCodec, ipcacheKeyCodec, ipcacheValueCodec, type EndpointInfo } from '../src/datapath/maps.js';
import { NAT_DIR_IN, NAT_DIR_OUT, NAT_F_FIN, NAT_F_RST, SNAT_MAP, natConstants, natGc, natValueCodec, type NatValue } from '../src/datapath/nat.js';
import { CT_MAP_ANY, CT_MAP_TCP, ctKeyCodec, ctValueCodec, type CtKey } from '../src/datapath/maps.js';
import { monotonicSeconds } from '../src/datapath/ct.js';
import { EGRESS_IP_MAP, EGRESS_POLICY_MAP, EGRESS_STATE_EMPTY, EGRESS_STATE_MAP, EXCLUDED_GATEWAY, EgressMaps, egressIpCodec, egressKeyCodec, egressValueCodec, type EgressKey, type EgressValue } from '../src/egress/index.js';
import { u32, u8 } from '../src/kernel/bpf/index.js';
import { parseIPv4 } from '../src/util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP, ethernet, icmpError, ipv4, l4, parse } from './lib/packets.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const pinRoot = `/sys/fs/bpf/tendril-test-${process.pid}-egress`;
const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;
const LO = 1;
const NO_KEY = 0xffffffff;

const POD_NODE_IP = '192.168.78.10';
const GW_NODE_IP = '192.168.78.12';
const EGRESS_IP = '192.168.78.241';
const EXT = '93.184.216.34';
const EXT_EXCLUDED = '93.184.216.99';
const EXT_OTHER = '198.51.100.7';
const pod: EndpointInfo = { ifindex: LO, lxcId: 101, flags: 0, mac: '02:00:0a:c8:00:0a', nodeMac: '02:00:0a:c8:01:0a', secId: 1001, ip4: '10.210.0.10' };
const other: EndpointInfo = { ...pod, ifindex: 4243, lxcId: 102, ip4: '10.210.0.11', secId: 1002 };
const REMOTE_POD = '10.211.0.20';

function be32(ip: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b;
}

const loaded: Collection[] = [];
let podSide: BpfProgram; // lxc harness on the pod's node
let gwSidePodNode: BpfProgram; // lxc harness on the gateway node (a pod there)
let toNetdev: BpfProgram;
let fromNetdev: BpfProgram;
let policy: TypedMap<EgressKey, EgressValue>;
let egressIps: TypedMap<string, number>;

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/egress-bpf.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(`${pinRoot}/pod`, { recursive: true });
  mkdirSync(`${pinRoot}/gw`, { recursive: true });
  const load = (obj: string, nodeIP: string, dir: string): Collection => {
    const c = Collection.load(root + obj, {
      constants: { CONFIG_NODE_IP4: be32(nodeIP), CONFIG_ROUTING_MODE: ROUTING_MODE_TUNNEL, CONFIG_TUNNEL_IFINDEX: 4000, ...natConstants({ enabled: true, portMin: 32768, portMax: 60999, ipMasqAgent: false }) },
      pinRoot: `${pinRoot}/${dir}`,
    });
    loaded.push(c);
    return c;
  };
  // Two nodes: each its own pinned maps (as on two machines), the same policy entries in both.
  const podLxc = load('build/bpf/tests/lxc_harness.o', POD_NODE_IP, 'pod');
  const gwLxc = load('build/bpf/tests/lxc_harness.o', GW_NODE_IP, 'gw');
  const gwHost = load('build/bpf/host.o', GW_NODE_IP, 'gw');
  podSide = podLxc.program('test_from_container');
  gwSidePodNode = gwLxc.program('test_from_container');
  toNetdev = gwHost.program('cil_to_netdev');
  fromNetdev = gwHost.program('cil_from_netdev');
  for (const c of [podLxc, gwLxc]) {
    c.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: pod.ip4 }, pod);
    c.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: other.ip4 }, other);
    c.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(pod.ifindex, pod);
    c.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(other.ifindex, other);
    const ipcache = c.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
    ipcache.put({ prefix: REMOTE_POD }, { identity: 3000, tunnelEndpoint: '192.168.78.11', nodeId: 0, flags: 1, key: 0 });
    const pm = c.map(EGRESS_POLICY_MAP).typed(egressKeyCodec, egressValueCodec);
    for (const src of [pod.ip4, REMOTE_POD]) {
      pm.put({ source: src, destination: '93.184.216.0/24' }, { egressIP: EGRESS_IP, gatewayIP: GW_NODE_IP });
      pm.put({ source: src, destination: `${EXT_EXCLUDED}/32` }, { egressIP: EGRESS_IP, gatewayIP: EXCLUDED_GATEWAY });
    }
  }
  policy = gwHost.map(EGRESS_POLICY_MAP).typed(egressKeyCodec, egressValueCodec);
  egressIps = gwHost.map(EGRESS_IP_MAP).typed(egressIpCodec, u8);
  egressIps.put(EGRESS_IP, 1);
});

after(() => {
  for (const c of loaded) c.close();
  rmSync(pinRoot, { recursive: true, force: true });
});




function udp(src: string, dst: string, sport = 40001, dport = 80): Buffer {
  return ethernet('02:00:00:00:78:01', '02:00:00:00:78:0a', ipv4(src, dst, IPPROTO_UDP, l4(IPPROTO_UDP, src, dst, sport, dport, Buffer.from('hello'))));
}

function runCb(prog: BpfProgram, data: Buffer, ifindex = LO): { retval: number; data: Buffer; cb: number[] } {
  const r = prog.run({ data, ctx: skbCtx({ ifindex }) });
  assert.ok(r.ctx, 'test run returned no ctx');
  return { retval: r.retval, data: r.data, cb: decodeSkbCtx(r.ctx).cb };
}

test('pod node: a selected pod\'s packet to a destination CIDR is tunnelled to the gateway with the pod\'s identity', () => {
  const r = runCb(podSide, udp(pod.ip4, EXT));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.cb[1], pod.secId, 'VNI');
  assert.equal(r.cb[2], parseIPv4(GW_NODE_IP), 'tunnel remote: the gateway');
  assert.equal(parse(r.data).src, pod.ip4, 'the packet itself is unchanged (SNAT happens on the gateway)');
});

test('pod node: excluded CIDRs, other destinations and unselected pods go to the stack untunnelled', () => {
  const ifMap = loaded[0]!.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  for (const [src, dst] of [[pod.ip4, EXT_EXCLUDED], [pod.ip4, EXT_OTHER], [other.ip4, EXT]] as const) {
    // The test run's ifindex is lo's: the sending pod is the one the map has there.
    ifMap.put(LO, src === pod.ip4 ? pod : { ...other, ifindex: LO });
    const pkt = udp(src, dst);
    const r = runCb(podSide, pkt);
    assert.equal(r.retval, TC_ACT_OK, `${src} -> ${dst}`);
    assert.equal(r.cb[1], NO_KEY, `${src} -> ${dst}: no tunnel key`);
    assert.deepEqual(r.data, pkt);
  }
  ifMap.put(LO, pod);
});

test('gateway node: its own selected pod is not tunnelled (the native device SNATs it)', () => {
  const r = runCb(gwSidePodNode, udp(pod.ip4, EXT));
  assert.equal(r.retval, TC_ACT_OK);
  assert.equal(r.cb[1], NO_KEY);
  const out = parse(runCb(toNetdev, udp(pod.ip4, EXT, 40002)).data);
  assert.equal(out.src, EGRESS_IP);
});

test('gateway node: another node\'s pod leaves with the egress IP and the reply goes back to it', () => {
  const r = runCb(toNetdev, udp(REMOTE_POD, EXT, 40010));
  assert.equal(r.retval, TC_ACT_OK);
  const p = parse(r.data);
  assert.deepEqual([p.src, p.dst, p.dport], [EGRESS_IP, EXT, 80]);
  assert.ok(p.ipCsumOk && p.l4CsumOk, 'checksums verify after translation');
  const reply = ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, IPPROTO_UDP, l4(IPPROTO_UDP, EXT, EGRESS_IP, 80, p.sport, Buffer.from('hi'))));
  const b = runCb(fromNetdev, reply);
  assert.equal(b.retval, TC_ACT_OK, 'to the stack, which routes it to the pod\'s node');
  const q = parse(b.data);
  assert.deepEqual([q.src, q.dst, q.dport], [EXT, REMOTE_POD, 40010]);
  assert.ok(q.ipCsumOk && q.l4CsumOk);
});

test('gateway node: an ICMP error to the egress IP about a translated flow goes back to the pod, quoting its own packet', () => {
  const out = runCb(toNetdev, udp(REMOTE_POD, EXT, 40050)).data;
  assert.equal(parse(out).src, EGRESS_IP);
  // Port unreachable from the destination, quoting the translated packet (egress IP:port -> EXT:80).
  const err = ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, 1, icmpError(3, 3, out.subarray(14))));
  const r = runCb(fromNetdev, err);
  assert.equal(r.retval, TC_ACT_OK, 'to the stack, which routes it to the pod\'s node');
  const q = parse(r.data);
  assert.equal(q.dst, REMOTE_POD, 'outer destination: the pod');
  assert.ok(q.ipCsumOk && q.l4CsumOk, 'outer checksums');
  assert.deepEqual([q.inner!.src, q.inner!.sport, q.inner!.dst, q.inner!.dport], [REMOTE_POD, 40050, EXT, 80]);
  assert.ok(q.inner!.ipCsumOk, 'quoted IPv4 header checksum');
  assert.equal(q.inner!.l4Csum, udp(REMOTE_POD, EXT, 40050).readUInt16BE(14 + 20 + 6), 'the quoted UDP checksum is the pod\'s packet\'s');
  // The same error to an address this node is no gateway of is left alone.
  const stranger = ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, '192.168.78.242', 1, icmpError(3, 3, out.subarray(14))));
  assert.deepEqual(runCb(fromNetdev, stranger).data, stranger);
});

test('gateway node: the NAT GC keeps another node\'s pod\'s flow (no conntrack entry here) while it is used, and removes it once idle', () => {
  const gwHost = loaded[2]!;
  const snat = gwHost.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  const ct = [gwHost.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec), gwHost.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec)];
  const out = parse(runCb(toNetdev, udp(REMOTE_POD, EXT, 40060)).data);
  const outKey: CtKey = { saddr: REMOTE_POD, daddr: EXT, sport: 40060, dport: 80, nexthdr: IPPROTO_UDP, dir: NAT_DIR_OUT, pad: 0 };
  const inKey: CtKey = { saddr: EXT, daddr: EGRESS_IP, sport: 80, dport: out.sport, nexthdr: IPPROTO_UDP, dir: NAT_DIR_IN, pad: 0 };
  assert.ok(snat.lookup(outKey) && snat.lookup(inKey), 'both entries made');
  assert.equal(ct.some((m) => m.lookup({ ...outKey, dir: 0 }) !== undefined), false, 'no conntrack entry of the flow on the gateway');
  // The datapath stamps the last packet of an egress IP's flow: out (OUT entry) and back (IN entry).
  runCb(toNetdev, udp(REMOTE_POD, EXT, 40060));
  const reply = ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, IPPROTO_UDP, l4(IPPROTO_UDP, EXT, EGRESS_IP, 80, out.sport, Buffer.from('hi'))));
  assert.equal(parse(runCb(fromNetdev, reply).data).dst, REMOTE_POD);
  const t = monotonicSeconds();
  assert.ok(Math.abs(snat.lookup(outKey)!.lastUsed - t) <= 2, `OUT last_used ${snat.lookup(outKey)!.lastUsed} vs now ${t}`);
  assert.ok(Math.abs(snat.lookup(inKey)!.lastUsed - t) <= 2, 'IN last_used');
  const opts = { egressIps: new Set([EGRESS_IP]), idle: { tcp: 8000, any: 60 } };
  // Several GC passes: the flow in use keeps both entries.
  for (let i = 0; i < 3; i++) natGc(snat, ct, opts);
  assert.ok(snat.lookup(outKey) && snat.lookup(inKey), 'kept across GC passes');
  // Idle longer than the UDP timeout (the entries aged by hand): both go.
  const age = (k: CtKey): void => {
    const v = snat.lookup(k)!;
    snat.put(k, { ...v, created: t - 120, lastUsed: t - 61 } satisfies NatValue);
  };
  age(outKey);
  age(inKey);
  natGc(snat, ct, opts);
  assert.equal(snat.lookup(outKey), undefined, 'idle OUT entry removed');
  assert.equal(snat.lookup(inKey), undefined, 'idle IN entry removed');
  // A flow of an address this node is not the gateway of (the node IP: masquerade) still goes with its conntrack entry.
  runCb(toNetdev, udp(REMOTE_POD, EXT, 40061));
  const k2: CtKey = { ...outKey, sport: 40061 };
  assert.ok(snat.lookup(k2));
  natGc(snat, ct, { ...opts, egressIps: new Set<string>() });
  assert.equal(snat.lookup(k2), undefined, 'without the egress IP as this node\'s, no conntrack entry: removed');
});

test('gateway node: a TCP flow seen closed (FIN both ways, or an RST) goes after the closing timeout, an open one is kept', () => {
  const gwHost = loaded[2]!;
  const snat = gwHost.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  const ct = [gwHost.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec), gwHost.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec)];
  const SYN = 0x02, ACK = 0x10, FIN = 0x01, RST = 0x04;
  const tcpOut = (sport: number, flags: number): Buffer => ethernet('02:00:00:00:78:01', '02:00:00:00:78:0a', ipv4(REMOTE_POD, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, REMOTE_POD, EXT, sport, 80, Buffer.alloc(0), flags)));
  const tcpBack = (dport: number, flags: number): Buffer => ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, EGRESS_IP, 80, dport, Buffer.alloc(0), flags)));
  const keys = (sport: number, natPort: number): [CtKey, CtKey] => [
    { saddr: REMOTE_POD, daddr: EXT, sport, dport: 80, nexthdr: IPPROTO_TCP, dir: NAT_DIR_OUT, pad: 0 },
    { saddr: EXT, daddr: EGRESS_IP, sport: 80, dport: natPort, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 },
  ];
  /** A connection through the gateway: handshake, then `close` (packets out and back), its NAT keys. */
  const flow = (sport: number, close: Array<['out' | 'back', number]>): [CtKey, CtKey] => {
    const natPort = parse(runCb(toNetdev, tcpOut(sport, SYN)).data).sport;
    assert.equal(parse(runCb(fromNetdev, tcpBack(natPort, SYN | ACK)).data).dst, REMOTE_POD);
    runCb(toNetdev, tcpOut(sport, ACK));
    for (const [way, flags] of close) runCb(way === 'out' ? toNetdev : fromNetdev, way === 'out' ? tcpOut(sport, flags) : tcpBack(natPort, flags));
    return keys(sport, natPort);
  };
  const opts = { egressIps: new Set([EGRESS_IP]), idle: { tcp: 8000, any: 60, tcpClosed: 10 } };
  const aged = (k: CtKey, by: number): void => {
    const t = monotonicSeconds();
    snat.put(k, { ...snat.lookup(k)!, created: t - by - 1, lastUsed: t - by });
  };
  const open = flow(41000, []);
  const finned = flow(41001, [['out', FIN | ACK], ['back', FIN | ACK], ['out', ACK]]);
  const reset = flow(41002, [['back', RST]]);
  const halfClosed = flow(41003, [['out', FIN | ACK]]);
  assert.equal(snat.lookup(finned[0])!.flags & NAT_F_FIN, NAT_F_FIN, 'the pod\'s FIN is on the OUT entry');
  assert.equal(snat.lookup(finned[1])!.flags & NAT_F_FIN, NAT_F_FIN, 'the far end\'s FIN is on the IN entry');
  assert.equal(snat.lookup(reset[1])!.flags & NAT_F_RST, NAT_F_RST, 'the RST is on the IN entry');
  assert.equal(snat.lookup(open[0])!.flags & (NAT_F_FIN | NAT_F_RST), 0);
  // Just closed: kept for the closing timeout (the last ACK may still be on its way).
  natGc(snat, ct, opts);
  for (const f of [open, finned, reset, halfClosed]) assert.ok(snat.lookup(f[0]) && snat.lookup(f[1]), 'every flow kept right after its last packet');
  // Quiet for longer than the closing timeout, far less than the established one.
  for (const f of [open, finned, reset, halfClosed]) for (const k of f) aged(k, 11);
  natGc(snat, ct, opts);
  for (const [name, f] of [['FIN both ways', finned], ['RST', reset]] as const) {
    assert.equal(snat.lookup(f[0]), undefined, `${name}: OUT entry removed`);
    assert.equal(snat.lookup(f[1]), undefined, `${name}: IN entry removed`);
  }
  for (const [name, f] of [['open', open], ['half closed', halfClosed]] as const) assert.ok(snat.lookup(f[0]) && snat.lookup(f[1]), `${name}: kept (the established timeout)`);
  // A new connection on a half-closed tuple (a bare SYN) is open again.
  runCb(toNetdev, tcpOut(41003, SYN));
  assert.equal(snat.lookup(halfClosed[0])!.flags & NAT_F_FIN, 0, 'a SYN clears FIN');
  for (const f of [open, halfClosed]) for (const k of f) snat.delete(k);
});

test('gateway node: a new flow does not take over the port of another node\'s pod\'s flow in use, only of one gone quiet', () => {
  const gwHost = loaded[2]!;
  const snat = gwHost.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  const [B, C] = ['10.211.0.23', '10.211.0.24'];
  for (const src of [B, C]) policy.put({ source: src, destination: `${EXT}/32` }, { egressIP: EGRESS_IP, gatewayIP: GW_NODE_IP });
  try {
    // Flow A keeps its own port 40080 (in the NAT range); B, another node's pod, tries the same port first.
    assert.equal(parse(runCb(toNetdev, udp(REMOTE_POD, EXT, 40080)).data).sport, 40080);
    const inKey: CtKey = { saddr: EXT, daddr: EGRESS_IP, sport: 80, dport: 40080, nexthdr: IPPROTO_UDP, dir: NAT_DIR_IN, pad: 0 };
    const b = parse(runCb(toNetdev, udp(B, EXT, 40080)).data);
    assert.equal(b.src, EGRESS_IP);
    assert.notEqual(b.sport, 40080, 'A\'s port is A\'s while A is in use');
    assert.equal(snat.lookup(inKey)?.toAddr, REMOTE_POD, 'the way back still leads to A');
    // A quiet for longer than the non-TCP timeout (aged by hand): C may take its port over.
    const t = monotonicSeconds();
    snat.put(inKey, { ...snat.lookup(inKey)!, created: t - 120, lastUsed: t - 61 });
    const outA: CtKey = { saddr: REMOTE_POD, daddr: EXT, sport: 40080, dport: 80, nexthdr: IPPROTO_UDP, dir: NAT_DIR_OUT, pad: 0 };
    snat.put(outA, { ...snat.lookup(outA)!, created: t - 120, lastUsed: t - 61 });
    assert.equal(parse(runCb(toNetdev, udp(C, EXT, 40080)).data).sport, 40080);
    assert.equal(snat.lookup(inKey)?.toAddr, C);
  } finally {
    for (const src of [B, C]) policy.delete({ source: src, destination: `${EXT}/32` });
  }
});

test('gateway node: a new flow takes over the port of another node\'s pod\'s TCP flow only once it is closed both ways and quiet, never an open one', () => {
  const gwHost = loaded[2]!;
  const snat = gwHost.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  const SYN = 0x02, ACK = 0x10, FIN = 0x01, RST = 0x04;
  const [A, NEW] = ['10.211.0.30', '10.211.0.31'];
  for (const src of [A, NEW]) policy.put({ source: src, destination: `${EXT}/32` }, { egressIP: EGRESS_IP, gatewayIP: GW_NODE_IP });
  const tcp = (src: string, sport: number, flags: number): Buffer => ethernet('02:00:00:00:78:01', '02:00:00:00:78:0a', ipv4(src, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, src, EXT, sport, 80, Buffer.alloc(0), flags)));
  const back = (dport: number, flags: number): Buffer => ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, EGRESS_IP, 80, dport, Buffer.alloc(0), flags)));
  const made: CtKey[] = [];
  /** A's connection from `port` (kept as its NAT port), then `close`; its IN key. */
  const flowA = (port: number, close: Array<['out' | 'back', number]>): CtKey => {
    assert.equal(parse(runCb(toNetdev, tcp(A, port, SYN)).data).sport, port, 'A keeps its own port');
    runCb(fromNetdev, back(port, SYN | ACK));
    runCb(toNetdev, tcp(A, port, ACK));
    for (const [way, flags] of close) runCb(way === 'out' ? toNetdev : fromNetdev, way === 'out' ? tcp(A, port, flags) : back(port, flags));
    const outKey: CtKey = { saddr: A, daddr: EXT, sport: port, dport: 80, nexthdr: IPPROTO_TCP, dir: NAT_DIR_OUT, pad: 0 };
    const inKey: CtKey = { saddr: EXT, daddr: EGRESS_IP, sport: 80, dport: port, nexthdr: IPPROTO_TCP, dir: NAT_DIR_IN, pad: 0 };
    made.push(outKey, inKey, { ...outKey, saddr: NEW });
    return inKey;
  };
  /** Both of A's entries last used `by` seconds ago (aged by hand). */
  const quiet = (inKey: CtKey, by: number): void => {
    const t = monotonicSeconds();
    const outKey: CtKey = { saddr: A, daddr: EXT, sport: inKey.dport, dport: 80, nexthdr: IPPROTO_TCP, dir: NAT_DIR_OUT, pad: 0 };
    for (const k of [outKey, inKey]) snat.put(k, { ...snat.lookup(k)!, created: t - by - 1, lastUsed: t - by });
  };
  /** NEW's SYN from the same port: does it get A's port (the way back now leads to NEW)? */
  const takesOver = (inKey: CtKey): boolean => {
    const got = parse(runCb(toNetdev, tcp(NEW, inKey.dport, SYN)).data);
    assert.equal(got.src, EGRESS_IP);
    const won = got.sport === inKey.dport;
    assert.equal(snat.lookup(inKey)?.toAddr, won ? NEW : A, 'the way back follows the port');
    return won;
  };
  try {
    // Open, idle longer than the non-TCP timeout but not the established one: an idle keep-alive connection keeps its port.
    const open = flowA(41100, []);
    quiet(open, 61);
    assert.equal(takesOver(open), false, 'open TCP flow quiet for 61 s');
    // Closed one way only (the pod's FIN): still open the other way.
    const half = flowA(41101, [['out', FIN | ACK]]);
    quiet(half, 61);
    assert.equal(takesOver(half), false, 'half-closed TCP flow');
    // Closed both ways just now: the far end may still hold the connection (its last ACK on the way).
    const justClosed = flowA(41102, [['out', FIN | ACK], ['back', FIN | ACK], ['out', ACK]]);
    assert.equal(takesOver(justClosed), false, 'TCP flow closed both ways a moment ago');
    // Closed both ways, or reset, and quiet for longer than the grace: the port is free.
    const closed = flowA(41103, [['out', FIN | ACK], ['back', FIN | ACK], ['out', ACK]]);
    quiet(closed, 3);
    assert.equal(takesOver(closed), true, 'TCP flow closed both ways, quiet 3 s');
    const reset = flowA(41104, [['back', RST]]);
    quiet(reset, 3);
    assert.equal(takesOver(reset), true, 'reset TCP flow, quiet 3 s');
    // An open flow gone quiet for longer than the established timeout is over as well.
    const stale = flowA(41105, []);
    quiet(stale, 8001);
    assert.equal(takesOver(stale), true, 'open TCP flow quiet for longer than the established timeout');
  } finally {
    for (const src of [A, NEW]) policy.delete({ source: src, destination: `${EXT}/32` });
    for (const k of made) snat.delete(k);
    for (const k of [...snat.keys()]) if (k.nexthdr === IPPROTO_TCP && (k.saddr === NEW || snat.lookup(k)?.toAddr === NEW)) snat.delete(k);
  }
});

test('a node that is not (any longer) the gateway drops another node\'s pod\'s policy traffic (DROP_NO_EGRESS_IP) rather than let it out with the pod\'s address; its own pods\' goes on to the gateway', () => {
  const TC_ACT_SHOT = 2;
  const NEW_GW = '192.168.78.13';
  const STALE = '10.211.0.40';
  // This node's map (the agent's view) has the gateway on another node: a pod's node whose map is stale still sends here.
  policy.put({ source: STALE, destination: `${EXT}/32` }, { egressIP: EGRESS_IP, gatewayIP: NEW_GW });
  policy.put({ source: pod.ip4, destination: `${EXT_OTHER}/32` }, { egressIP: EGRESS_IP, gatewayIP: NEW_GW });
  try {
    for (const proto of ['udp', 'tcp'] as const) {
      const pkt = proto === 'udp' ? udp(STALE, EXT, 40090) : ethernet('02:00:00:00:78:01', '02:00:00:00:78:0a', ipv4(STALE, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, STALE, EXT, 40091, 80, Buffer.alloc(0), 0x02)));
      const r = runCb(toNetdev, pkt);
      assert.equal(r.retval, TC_ACT_SHOT, `${proto}: dropped`);
    }
    const snat = loaded[2]!.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
    assert.equal(snat.lookup({ saddr: STALE, daddr: EXT, sport: 40090, dport: 80, nexthdr: IPPROTO_UDP, dir: NAT_DIR_OUT, pad: 0 }), undefined, 'no mapping made');
    // A pod of this node (native routing: its packet passes here on the way to the gateway as next hop): unchanged.
    const own = udp(pod.ip4, EXT_OTHER, 40092);
    const r = runCb(toNetdev, own);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(r.data, own);
  } finally {
    policy.delete({ source: STALE, destination: `${EXT}/32` });
    policy.delete({ source: pod.ip4, destination: `${EXT_OTHER}/32` });
  }
});

test('gateway node: excluded and unselected traffic of other nodes is not translated; replies to an address not its own are left alone', () => {
  for (const [src, dst] of [[REMOTE_POD, EXT_EXCLUDED], [REMOTE_POD, EXT_OTHER], ['10.211.0.21', EXT]] as const) {
    const pkt = udp(src, dst, 40020);
    const r = runCb(toNetdev, pkt);
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(r.data, pkt, `${src} -> ${dst}`);
  }
  // The flow of the previous test, after the egress IP left this node: its reply is no longer translated.
  const p = parse(runCb(toNetdev, udp(REMOTE_POD, EXT, 40030)).data);
  assert.ok(egressIps.delete(EGRESS_IP));
  const reply = ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', ipv4(EXT, EGRESS_IP, IPPROTO_UDP, l4(IPPROTO_UDP, EXT, EGRESS_IP, 80, p.sport, Buffer.from('hi'))));
  assert.equal(parse(runCb(fromNetdev, reply).data).dst, EGRESS_IP);
  egressIps.put(EGRESS_IP, 1);
  // The policy gone: another node's pod is not translated at all.
  assert.ok(policy.delete({ source: REMOTE_POD, destination: '93.184.216.0/24' }));
  const pkt = udp(REMOTE_POD, EXT, 40040);
  assert.deepEqual(runCb(toNetdev, pkt).data, pkt);
});

test('EgressMaps.replacePolicy(): an emptied policy map is marked so (the datapath skips its lookup), and the first entry clears the mark first', () => {
  const podLxc = loaded[0]!;
  const maps = new EgressMaps((name) => podLxc.map(name));
  const ifMap = podLxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  ifMap.put(LO, pod);
  const before = maps.listPolicy();
  assert.ok(before.length > 0);
  assert.equal(maps.skipsLookup(), false, 'a new state map consults the policy map');
  try {
    maps.replacePolicy([]);
    assert.equal(maps.listPolicy().length, 0);
    assert.equal(maps.skipsLookup(), true);
    assert.equal(podLxc.map(EGRESS_STATE_MAP).typed(u32, u32).lookup(0), EGRESS_STATE_EMPTY);
    // Nothing to redirect: to the stack as any other world traffic.
    assert.equal(runCb(podSide, udp(pod.ip4, EXT)).retval, TC_ACT_OK);
    // The mark stands for an empty map only: an entry written behind the agent's back (it never is) would be missed,
    // which is why the agent clears the mark before it writes one.
    maps.replacePolicy(before);
    assert.equal(maps.skipsLookup(), false);
    const r = runCb(podSide, udp(pod.ip4, EXT));
    assert.equal(r.retval, TC_ACT_REDIRECT, 'the policy applies again');
    assert.equal(r.cb[2], parseIPv4(GW_NODE_IP));
  } finally {
    maps.replacePolicy(before);
  }
});
