// Integration: conntrack and policy enforcement of a node's datapath (in-process, in a namespace of its own) with real
// pods: NodeDatapath.setEndpointPolicy() entries and flags, the verdicts real TCP/UDP/ICMP traffic gets, drop and verdict
// events, drop metrics, ctList/ctGc/ctFlush, a restart, and 10,000 entries for one endpoint. Root; every namespace,
// bpffs directory and process is the test's own and removed in after(), also on failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { children, exec, inNs, sleep, startProcess, stopProcess } from './lib/proc.js';
import { addTestPod, type TestPod, deleteNamespaces } from './lib/pods.js';
import {
  NodeDatapath,
  type EndpointPolicyState,
  type NodeDatapathConfig,
  type PolicyMapEntry,
} from '../src/datapath/index.js';
import { DatapathError } from '../src/datapath/errors.js';
import {
  CT_MAP_ANY,
  CT_MAP_TCP,
  IPBLOCK_MAP,
  LXC_IF_MAP,
  LXC_MAP,
  POLICY_MAP,
  ctKeyCodec,
  ctValueCodec,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
  ipblockValueCodec,
  ipcacheKeyCodec,
  policyKeyCodec,
  policyValueCodec,
  type CtKey,
  type CtValue,
  type EndpointInfo,
  type EndpointKey,
  type PolicyKeyRaw,
  type PolicyValueRaw,
} from '../src/datapath/maps.js';
import { EVENTS_MAP, decodeEvent } from '../src/datapath/events.js';
import { policyKey as policyKeyOf, policyValue as policyValueOf } from '../src/datapath/policy.js';
import { Collection, RingBuffer, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import type { DatapathEvent, DropEvent, PolicyVerdictEvent } from '../src/datapath/index.js';
import { parseIPv4, parseMac } from '../src/util/ip.js';

// Compiled to dist/test/: the repository root is two levels up.
const root = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = `tdlt-${process.pid}-pol`;
const NODE_NS = `${PREFIX}-n`;
const BPF_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-policy`;
const TCP = 6;
const UDP = 17;
const ICMP = 1;
/* Short enough for the GC test to wait them out; the TCP ones stay long so live connections are never expired. */
/** One generous deadline for every condition a test waits on (a loaded 2-core machine is slow, never wrong). */
const DEADLINE_MS = 15_000;

/** Polls @cond until it holds; fails with @what after DEADLINE_MS. */
async function waitFor(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + DEADLINE_MS;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${DEADLINE_MS} ms`);
    await sleep(20);
  }
}
const CT_TIMEOUTS = { tcp: 8000, tcpSyn: 60, tcpFin: 3, any: 3 };

// ---- topology: one node, pods ----------------------------------------------------------------------------

type Pod = TestPod;

const createdNs: string[] = [];
let nodeNs: Netns;
let cfg: NodeDatapathConfig;
let dp: NodeDatapath;
let p1: Pod;
let p2: Pod;
let p3: Pod;

function makeNs(name: string): Netns {
  createdNs.push(name);
  return Netns.create(name);
}

/** A pod as the CNI plugin wires one (test/lib/pods.ts). */
function addPod(host: number, identity: number): Pod {
  const podNs = `${PREFIX}-p${host}`;
  createdNs.push(podNs);
  return addTestPod({ nodeNs, dp, podNs, subnet: '10.232.0', host, hostIfName: `lxcpo${host}`, identity });
}

/* p2 serves: TCP 8080, 8090 (answer "hi <port>" and close), 9000 (counts bytes received, logs the total), UDP 9090 (echo). */
const SERVER = `
const net = require('net');
for (const port of [8080, 8090]) net.createServer((c) => { c.on('error', () => {}); c.end('hi ' + port); }).listen(port, '0.0.0.0');
let total = 0;
net.createServer((c) => { c.on('error', () => {}); c.on('data', (d) => { total += d.length; console.log('total ' + total); }); }).listen(9000, '0.0.0.0');
const u = require('dgram').createSocket('udp4');
u.on('message', (m, r) => u.send(m, r.port, r.address));
u.bind(9090, '0.0.0.0', () => setTimeout(() => console.log('ready'), 100));
`;
let server: { out: () => string };

/** TCP connect from `pod` to ip:port: the server's greeting, 'timeout' or an error code. Callers expecting a drop pass
 *  a short timeout; the default leaves an allowed connection time on a loaded machine. */
async function tcpProbe(pod: Pod, ip: string, port: number, timeoutMs = 4000): Promise<string> {
  const js =
    `const s = require('net').connect(${port}, '${ip}'); let got = ''; s.on('data', (d) => { got += d; });` +
    `s.on('end', () => { console.log(got); process.exit(0); }); s.on('error', (e) => { console.log(e.code); process.exit(0); });` +
    `setTimeout(() => { console.log('timeout'); process.exit(0); }, ${timeoutMs});`;
  const r = await exec(inNs(pod.ns, ['node', '-e', js]));
  return r.stdout.trim();
}

/** One UDP datagram from `pod` to ip:port on a connected socket: 'echo', 'timeout' or an error code (ECONNREFUSED). */
async function udpProbe(pod: Pod, ip: string, port: number, timeoutMs = 4000): Promise<string> {
  const js =
    `const s = require('dgram').createSocket('udp4'); s.on('error', (e) => { console.log(e.code); process.exit(0); });` +
    `s.on('message', () => { console.log('echo'); process.exit(0); });` +
    `s.connect(${port}, '${ip}', () => { s.send('x'); setTimeout(() => s.send('y'), 300); });` +
    `setTimeout(() => { console.log('timeout'); process.exit(0); }, ${timeoutMs});`;
  const r = await exec(inNs(pod.ns, ['node', '-e', js]));
  return r.stdout.trim();
}

async function ping(pod: Pod, ip: string): Promise<boolean> {
  const r = await exec(inNs(pod.ns, ['ping', '-n', '-q', '-c', '1', '-W', '1', ip]));
  return r.code === 0;
}

/** Collects the datapath's events while `during` runs, then until `done` holds (or the deadline). */
async function collect(during: () => Promise<void>, done: (ev: DatapathEvent[]) => boolean = () => true): Promise<DatapathEvent[]> {
  const events: DatapathEvent[] = [];
  const watch = dp.startEvents((e) => events.push(e));
  try {
    await during();
    const until = Date.now() + DEADLINE_MS;
    while (!done(events) && Date.now() < until) await sleep(20);
    await sleep(50);
  } finally {
    watch.stop();
  }
  return events;
}

const allowFrom = (identity: number, protocol = TCP, port = 8080, portPrefixLen = 16): PolicyMapEntry => ({
  direction: 'ingress',
  identity,
  protocol,
  port,
  portPrefixLen: protocol === 0 ? 0 : portPrefixLen,
  deny: false,
});

function setPolicy(pod: Pod, p: Partial<EndpointPolicyState>): { added: number; removed: number; changed: number } {
  return dp.setEndpointPolicy(pod.endpoint, { ingressEnforced: false, egressEnforced: false, entries: [], ...p });
}

function metric(reason: number, direction: 'ingress' | 'egress'): number {
  return dp.metrics().find((m) => m.reason === reason && m.direction === direction)?.packets ?? 0;
}

before(async () => {
  // Fail, never skip: without root nothing here can be tested.
  assert.equal(process.getuid?.(), 0, 'test/datapath-policy.test.ts needs root (namespaces, BPF, bpffs)');
  assert.ok(['/usr/bin/', '/bin/'].some((d) => fs.existsSync(d + 'ping')), 'ping is needed');
  nodeNs = makeNs(NODE_NS);
  const nl = Netlink.openIn(nodeNs);
  try {
    // The node's "underlay": a veth pair of its own, no uplink.
    nl.setLink('lo', { up: true });
    nl.createVeth({ name: 'eth0', peerName: 'eth0p' });
    nl.addAddress(nl.getLink('eth0')!.index, '192.168.87.10/24');
    nl.setLink('eth0p', { up: true });
    nl.setLink('eth0', { up: true });
  } finally {
    nl.close();
  }
  cfg = {
    podCidr: '10.232.0.0/24',
    routerIP: '10.232.0.1',
    nodeIP: '192.168.87.10',
    nativeDev: 'eth0',
    bpfRoot: BPF_ROOT,
    objDir: path.join(root, 'build/bpf'),
    ctTimeouts: CT_TIMEOUTS,
  };
  dp = new NodeDatapath(cfg);
  nodeNs.run(() => dp.start());
  p1 = addPod(10, 11001);
  p2 = addPod(20, 11002);
  p3 = addPod(30, 11003);
  server = await startProcess(inNs(p2.ns, ['node', '-e', SERVER]), /ready/);
});

after(async () => {
  await Promise.all([...children].map(stopProcess));
  dp?.stop();
  nodeNs?.close();
  deleteNamespaces(createdNs);
  fs.rmSync(BPF_ROOT, { recursive: true, force: true });
});

// ---- tests ------------------------------------------------------------------------------------------------

test('no enforcement: TCP, UDP and ping pass, and no policy entries exist', async () => {
  assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
  assert.equal(await udpProbe(p1, p2.ip, 9090), 'echo');
  assert.ok(await ping(p1, p2.ip));
  assert.deepEqual(dp.endpointPolicy(p2.endpoint.id), []);
});

test('ingress enforced with no entries: the SYN is dropped (133, event, verdict, metrics); enforcement off restores', async () => {
  const before = metric(133, 'ingress');
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true }), { added: 0, removed: 0, changed: 0 });
  let result = '';
  const events = await collect(
    async () => {
      result = await tcpProbe(p1, p2.ip, 8080, 800);
    },
    (ev) => ev.some((e) => e.type === 'drop' && e.reason === 133),
  );
  assert.equal(result, 'timeout');
  const drop = events.find((e): e is DropEvent => e.type === 'drop' && e.reason === 133 && e.source === p2.endpoint.id);
  assert.ok(drop, `drop 133 in ${JSON.stringify(events.map((e) => e.type))}`);
  assert.deepEqual([drop.srcIdentity, drop.file], [11001, 'lxc']);
  const verdict = events.find((e): e is PolicyVerdictEvent => e.type === 'policy-verdict' && e.source === p2.endpoint.id);
  assert.ok(verdict, 'policy verdict event');
  assert.deepEqual(
    [verdict.action, verdict.direction, verdict.match, verdict.proto, verdict.dport, verdict.source, verdict.srcIdentity, verdict.dstIdentity],
    ['deny', 'ingress', 'none', TCP, 8080, p2.endpoint.id, 11001, 11002],
  );
  // The SYN and at least one retransmission, counted before the event rate limit.
  assert.ok(metric(133, 'ingress') - before >= 1, `tendril_metrics 133/ingress: ${JSON.stringify(dp.metrics())}`);
  const m = dp.metrics().find((x) => x.reason === 133 && x.direction === 'ingress')!;
  assert.equal(m.description, 'Policy denied');
  assert.ok(m.bytes >= m.packets * 54, 'bytes counted');
  setPolicy(p2, { ingressEnforced: false });
  assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
});

test('an identity allow entry lets that identity in (L3-L4 verdict, counters), not another one', async () => {
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001)] }), { added: 1, removed: 0, changed: 0 });
  let ok = '';
  const events = await collect(
    async () => {
      ok = await tcpProbe(p1, p2.ip, 8080);
    },
    (ev) => ev.some((e) => e.type === 'policy-verdict'),
  );
  assert.equal(ok, 'hi 8080');
  const allows = events.filter((e): e is PolicyVerdictEvent => e.type === 'policy-verdict' && e.action === 'allow' && e.srcIdentity === 11001);
  // One verdict for the new flow, none for its established packets.
  assert.equal(allows.length, 1, JSON.stringify(allows.map((e) => [e.action, e.match])));
  assert.deepEqual([allows[0]!.match, allows[0]!.direction, allows[0]!.dport], ['L3-L4', 'ingress', 8080]);
  assert.equal(await tcpProbe(p3, p2.ip, 8080, 800), 'timeout', 'p3 has another identity');
  assert.equal(await tcpProbe(p1, p2.ip, 8090, 800), 'timeout', 'another port');
  const [entry] = dp.endpointPolicy(p2.endpoint.id);
  assert.deepEqual({ ...entry, packets: 0, bytes: 0 }, { ...allowFrom(11001), packets: 0, bytes: 0 });
  // SYN, ACK, FIN... of the established connection: every non-reply packet is looked up and counted.
  assert.ok(Number(entry!.packets) >= 3, `packets ${entry!.packets}`);
  assert.ok(Number(entry!.bytes) > 0);
  // A wildcard identity allow lets p3 in too (L4-only).
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001), allowFrom(0)] }), { added: 1, removed: 0, changed: 0 });
  assert.equal(await tcpProbe(p3, p2.ip, 8080), 'hi 8080');
});

test('replies pass with the answering pod egress-enforced and no entry for them; its own new flows do not', async () => {
  setPolicy(p2, { ingressEnforced: true, egressEnforced: true, entries: [allowFrom(11001)] });
  assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
  const before = metric(133, 'egress');
  assert.equal(await tcpProbe(p2, p1.ip, 8080, 800), 'timeout', 'p2 -> p1 is a new egress flow of p2');
  assert.ok(metric(133, 'egress') > before, 'egress drop counted');
  setPolicy(p2, {});
});

test('deny beats allow: a specific deny over a wildcard allow, a wildcard deny over a specific allow (181)', async () => {
  const deny = (identity: number): PolicyMapEntry => ({ ...allowFrom(identity), deny: true });
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(0), deny(11001)] });
  let r = '';
  const events = await collect(
    async () => {
      r = await tcpProbe(p1, p2.ip, 8080, 800);
    },
    (ev) => ev.some((e) => e.type === 'drop' && e.reason === 181 && e.source === p2.endpoint.id),
  );
  assert.equal(r, 'timeout');
  assert.ok(events.some((e) => e.type === 'drop' && e.reason === 181 && e.source === p2.endpoint.id), 'drop 181');
  // The ring may still hold events of earlier tests: the verdict of this flow is picked by its fields.
  const v = events.find((e): e is PolicyVerdictEvent => e.type === 'policy-verdict' && e.action === 'deny' && e.srcIdentity === 11001 && e.dport === 8080);
  assert.deepEqual([v?.direction, v?.match, v?.source], ['ingress', 'L3-L4', p2.endpoint.id]);
  assert.equal(await tcpProbe(p3, p2.ip, 8080), 'hi 8080', 'the wildcard still allows others');

  // Same two keys, each verdict flipped: changes in place.
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001), deny(0)] }), { added: 0, removed: 0, changed: 2 });
  assert.equal(await tcpProbe(p1, p2.ip, 8080, 800), 'timeout');
  assert.ok(metric(181, 'ingress') >= 2);
  // Same key, allow -> deny: a change in place.
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true, entries: [deny(11001), deny(0)] }), { added: 0, removed: 0, changed: 1 });
  setPolicy(p2, {});
});

test('a port-range entry (prefix) allows 8080 but not 8090', async () => {
  // 8080-8087: 8080 = 0x1f90, 13 leading bits; 8090 = 0x1f9a is outside.
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, TCP, 8083, 13)] });
  assert.deepEqual(dp.endpointPolicy(p2.endpoint.id).map((e) => [e.port, e.portPrefixLen]), [[8080, 13]], 'port stored as the range start');
  assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
  assert.equal(await tcpProbe(p1, p2.ip, 8090, 800), 'timeout');
  // Protocol only (any port), and any protocol.
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, TCP, 0, 0)] });
  assert.equal(await tcpProbe(p1, p2.ip, 8090), 'hi 8090');
  assert.equal(await udpProbe(p1, p2.ip, 9090), 'timeout', 'UDP is not TCP');
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, 0)] });
  assert.equal(await udpProbe(p1, p2.ip, 9090), 'echo');
  setPolicy(p2, {});
});

test('removing the allow entry cuts an established TCP connection', async () => {
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, TCP, 9000)] });
  const client = await startProcess(
    inNs(p1.ns, ['node', '-e', `const s = require('net').connect(9000, '${p2.ip}', () => { console.log('open'); setInterval(() => s.write('x'), 50); }); s.on('error', () => {});`]),
    /open/,
  );
  const total = (): number => Math.max(0, ...[...server.out().matchAll(/total (\d+)/g)].map((m) => Number(m[1])));
  try {
    const t0 = total();
    await waitFor('data flows while allowed', () => total() > t0);
    setPolicy(p2, { ingressEnforced: true, entries: [] });
    // What was in flight when the entry went may still land: wait for the count to settle, then for nothing more.
    let last = total();
    let since = Date.now();
    await waitFor('the byte count settles once the entry is removed', () => {
      if (total() !== last) [last, since] = [total(), Date.now()];
      return Date.now() - since >= 300;
    });
    const cut = total();
    await sleep(800);
    assert.equal(total(), cut, 'no data after the entry is removed');
    const ct = dp.ctList().find((e) => e.direction === 'in' && e.dst === p2.ip && e.dport === 9000);
    assert.ok(ct, 'the connection stays tracked');
    // Allowed again: the retransmissions get through, the connection resumes.
    setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, TCP, 9000)] });
    await waitFor('resumes once allowed again', () => total() > cut);
  } finally {
    await stopProcess(client.proc);
    setPolicy(p2, {});
  }
});

test('UDP and ICMP echo replies pass into a pod whose ingress is enforced with nothing allowed', async () => {
  setPolicy(p1, { ingressEnforced: true });
  try {
    assert.equal(await udpProbe(p1, p2.ip, 9090), 'echo');
    assert.ok(await ping(p1, p2.ip), 'ping reply');
    assert.ok(!(await ping(p2, p1.ip)), 'but p1 itself cannot be pinged');
  } finally {
    setPolicy(p1, {});
  }
});

test('an ICMP error about a tracked flow passes (related): UDP to a closed port reports ECONNREFUSED', async () => {
  setPolicy(p1, { ingressEnforced: true });
  try {
    assert.equal(await udpProbe(p1, p2.ip, 9999), 'ECONNREFUSED');
  } finally {
    setPolicy(p1, {});
  }
});

test('ctList() shows both entries of a same-node TCP connection with direction, state flags and identity', async () => {
  assert.equal(await tcpProbe(p3, p2.ip, 8090), 'hi 8090');
  const flow = (): ReturnType<typeof dp.ctList> => dp.ctList().filter((e) => e.src === p3.ip && e.dst === p2.ip && e.dport === 8090);
  await waitFor('both entries of the closed connection', () => flow().length === 2 && flow().every((e) => e.flags.includes('tx_closing') && e.flags.includes('rx_closing')));
  const mine = flow();
  assert.deepEqual(mine.map((e) => e.direction).sort(), ['in', 'out'], JSON.stringify(mine));
  for (const e of mine) {
    assert.equal(e.proto, 'TCP');
    assert.equal(e.srcIdentity, 11003);
    assert.ok(e.flags.includes('seen_non_syn') && e.flags.includes('tx_closing') && e.flags.includes('rx_closing'), JSON.stringify(e.flags));
    assert.ok(e.expires <= CT_TIMEOUTS.tcpFin && e.expires >= CT_TIMEOUTS.tcpFin - 2, `closed: FIN timeout, expires ${e.expires}`);
    assert.ok(e.packets >= 5 && e.bytes > 0, `counters ${e.packets} ${e.bytes}`);
    assert.equal(e.txFlagsSeen & 0x03, 0x03, 'SYN and FIN sent');
    assert.equal(e.rxFlagsSeen & 0x12, 0x12, 'SYN-ACK received');
  }
  assert.equal(mine[0]!.sport, mine[1]!.sport);
  const udp = dp.ctList().find((e) => e.proto === 'UDP' && e.src === p1.ip && e.dport === 9090 && e.direction === 'out');
  assert.ok(udp && udp.expires <= CT_TIMEOUTS.any);
  const icmp = dp.ctList().find((e) => e.proto === 'ICMP' && e.src === p1.ip && e.dst === p2.ip);
  assert.ok(icmp && icmp.sport !== 0 && icmp.dport === 0, 'ping: the echo id is the source port');
});

test('ctGc() removes expired entries only', async () => {
  assert.equal(await udpProbe(p3, p2.ip, 9090), 'echo');
  const fresh = (): number => dp.ctList().filter((e) => e.src === p3.ip && e.proto === 'UDP').length;
  assert.equal(fresh(), 2);
  let r = dp.ctGc();
  assert.equal(fresh(), 2, 'not expired yet');
  await sleep(CT_TIMEOUTS.any * 1000);
  let deleted = 0;
  await waitFor('the expired entries collected', () => {
    r = dp.ctGc();
    deleted += r.deleted;
    return fresh() === 0;
  });
  assert.ok(deleted >= 2, JSON.stringify(r));
  assert.equal(r.alive, dp.ctList().length);
  assert.ok(dp.ctList().every((e) => e.expires >= 0));
});

test('ctGcInThread() collects as ctGc() does, on the GC thread: the caller\'s event loop runs during the pass', async () => {
  assert.equal(await udpProbe(p3, p2.ip, 9090), 'echo');
  const fresh = (): number => dp.ctList().filter((e) => e.src === p3.ip && e.proto === 'UDP').length;
  assert.equal(fresh(), 2);
  assert.equal((await dp.ctGcInThread()).deleted >= 0, true);
  assert.equal(fresh(), 2, 'not expired yet');
  await sleep(CT_TIMEOUTS.any * 1000);
  let deleted = 0;
  let turns = 0;
  await waitFor('the expired entries collected by the thread', async () => {
    let spinning = true;
    const spin = (): void => {
      if (!spinning) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    const r = await dp.ctGcInThread();
    spinning = false;
    deleted += r.deleted;
    return fresh() === 0;
  });
  assert.ok(deleted >= 2, `deleted ${deleted}`);
  // A pass in the calling thread would run to its end before any setImmediate callback.
  assert.ok(turns > 0, 'the event loop turned while the thread walked the tables');
});

test('updateEndpoint(): a new identity keeps the enforcement flags and meets the policy of the new identity', async () => {
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001)] });
  const before = dp.dumpEndpoints().find((e) => e.ip4 === p2.ip)!.flags;
  p1.endpoint = { ...p1.endpoint, identity: 11111 };
  dp.updateEndpoint(p1.endpoint);
  try {
    assert.equal(dp.dumpEndpoints().find((e) => e.ip4 === p2.ip)!.flags, before);
    assert.equal(dp.dumpIpcache().find((e) => e.prefix === `${p1.ip}/32`)?.identity, 11111);
    assert.equal(await tcpProbe(p1, p2.ip, 8080, 800), 'timeout', 'old identity allowed only');
    setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11111)] });
    assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
    // p1's own flags survive its update too.
    setPolicy(p1, { egressEnforced: true });
    dp.updateEndpoint(p1.endpoint);
    assert.equal(dp.dumpEndpoints().find((e) => e.ip4 === p1.ip)!.flags, 4);
  } finally {
    p1.endpoint = { ...p1.endpoint, identity: 11001 };
    dp.updateEndpoint(p1.endpoint);
    setPolicy(p1, {});
    setPolicy(p2, {});
  }
  assert.throws(() => dp.updateEndpoint({ ...p1.endpoint, id: 999 }), DatapathError);
});

test('ipcacheUpsert()/ipcacheDelete() write and remove single entries', () => {
  dp.ipcacheUpsert('10.99.0.0/16', { identity: 16777217 });
  dp.ipcacheUpsert('10.98.0.5', { identity: 300, tunnelEndpoint: '192.168.87.20' });
  const ipc = dp.dumpIpcache();
  assert.deepEqual(ipc.find((e) => e.prefix === '10.99.0.0/16'), { prefix: '10.99.0.0/16', identity: 16777217, flags: 0 });
  assert.deepEqual(ipc.find((e) => e.prefix === '10.98.0.5/32'), { prefix: '10.98.0.5/32', identity: 300, flags: 1, tunnelEndpoint: '192.168.87.20' });
  assert.equal(dp.ipcacheDelete('10.99.0.0/16'), true);
  assert.equal(dp.ipcacheDelete('10.98.0.5'), true);
  assert.equal(dp.ipcacheDelete('10.98.0.5'), false);
});

test('ingress from the node (from_host): the node is identity host (1)', async () => {
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001)] });
  try {
    const r1 = await exec(inNs(NODE_NS, ['ping', '-n', '-q', '-c', '1', '-W', '1', p2.ip]));
    assert.notEqual(r1.code, 0, 'host not allowed');
    setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001), allowFrom(1, ICMP, 0, 0)] });
    const r2 = await exec(inNs(NODE_NS, ['ping', '-n', '-q', '-c', '1', '-W', '1', p2.ip]));
    assert.equal(r2.code, 0, 'host allowed for ICMP');
  } finally {
    setPolicy(p2, {});
  }
});

test('NetworkPolicy ipBlock by address: egress to one pod by /32, a block around pods minus one, a pod created inside the block at once; ingress too', async () => {
  const [ONE, NET, EXCEPT, FROM] = [0x02000001, 0x02000002, 0x02000003, 0x02000004];
  const block = (direction: 'ingress' | 'egress', identity: number): PolicyMapEntry => ({ direction, identity, protocol: 0, port: 0, portPrefixLen: 0, deny: false });
  let p5: Pod | undefined;
  try {
    // The e2e case "egress access to server in CIDR block": p2's /32, though the ipcache gives p2 its pod identity.
    dp.ipBlockSet(`${p2.ip}/32`, ONE);
    setPolicy(p1, { egressEnforced: true, entries: [block('egress', ONE)] });
    assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080', 'p2 by its /32');
    assert.ok(!(await ping(p1, p3.ip)), 'p3 is outside the block');
    // "except clause": the pods' /24 minus p2.
    dp.ipBlockSet(`${p2.ip}/32`, EXCEPT);
    dp.ipBlockSet('10.232.0.0/24', NET);
    setPolicy(p1, { egressEnforced: true, entries: [block('egress', NET)] });
    assert.ok(await ping(p1, p3.ip), 'p3 inside the block');
    assert.equal(await tcpProbe(p1, p2.ip, 8080, 800), 'timeout', 'p2 is the except');
    assert.deepEqual(
      dp.dumpIpBlocks().sort((a, b) => a.identity - b.identity),
      [{ prefix: '10.232.0.0/24', identity: NET }, { prefix: `${p2.ip}/32`, identity: EXCEPT }],
    );
    // A pod created inside the block is matched by its address: no policy change at all.
    p5 = addPod(50, 11005);
    assert.ok(await ping(p1, p5.ip), 'a new pod inside the block');
    // Ingress: only p1's address may open connections to p2.
    setPolicy(p1, {});
    dp.ipBlockSet(`${p1.ip}/32`, FROM);
    setPolicy(p2, { ingressEnforced: true, entries: [block('ingress', FROM)] });
    assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
    assert.equal(await tcpProbe(p3, p2.ip, 8080, 800), 'timeout');
  } finally {
    setPolicy(p1, {});
    setPolicy(p2, {});
    for (const prefix of ['10.232.0.0/24', `${p1.ip}/32`, `${p2.ip}/32`]) dp.ipBlockDelete(prefix);
    if (p5) nodeNs.run(() => dp.removeEndpoint(p5!.endpoint));
  }
  assert.deepEqual(dp.dumpIpBlocks(), []);
});

test('an ICMP echo-request entry (type 8, port prefix 8) lets ping in and nothing else', async () => {
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001, ICMP, 8 << 8, 8)] });
  try {
    assert.ok(await ping(p1, p2.ip), 'echo request allowed, the reply passes by conntrack');
    assert.equal(await tcpProbe(p1, p2.ip, 8080, 800), 'timeout', 'no TCP');
    assert.ok(!(await ping(p3, p2.ip)), 'another identity');
  } finally {
    setPolicy(p2, {});
  }
});

test('setEndpointPolicy() validates entries and refuses an endpoint that is not wired', () => {
  assert.throws(() => setPolicy(p2, { entries: [{ ...allowFrom(1), portPrefixLen: 17 }] }), /portPrefixLen 17/);
  assert.throws(() => setPolicy(p2, { entries: [{ ...allowFrom(1, 0), portPrefixLen: 8 }] }), /without a protocol/);
  assert.throws(() => dp.setEndpointPolicy({ ...p2.endpoint, id: 4321 }, { ingressEnforced: true, egressEnforced: false, entries: [] }), /not wired/);
  assert.deepEqual(dp.endpointPolicy(p2.endpoint.id), []);
});

test('10,000 entries for one endpoint: applied, diffed and removed in place (timed)', (t) => {
  const many: PolicyMapEntry[] = [];
  for (let i = 0; i < 10_000; i++) many.push({ direction: i % 2 ? 'egress' : 'ingress', identity: 100_000 + i, protocol: TCP, port: 1000 + (i % 5000), portPrefixLen: 16, deny: false });
  let t0 = performance.now();
  const r1 = setPolicy(p3, { ingressEnforced: true, egressEnforced: true, entries: many });
  const applyMs = performance.now() - t0;
  assert.deepEqual(r1, { added: 10_000, removed: 0, changed: 0 });
  t0 = performance.now();
  const listed = dp.endpointPolicy(p3.endpoint.id);
  const listMs = performance.now() - t0;
  assert.equal(listed.length, 10_000);
  t0 = performance.now();
  const same = setPolicy(p3, { ingressEnforced: true, egressEnforced: true, entries: many });
  const noopMs = performance.now() - t0;
  assert.deepEqual(same, { added: 0, removed: 0, changed: 0 });
  // Half replaced by other identities, 10 flipped to deny.
  const next = many.map((e, i) => (i < 5000 ? { ...e, identity: e.identity + 1_000_000 } : i < 5010 ? { ...e, deny: true } : e));
  t0 = performance.now();
  const r2 = setPolicy(p3, { ingressEnforced: true, egressEnforced: true, entries: next });
  const diffMs = performance.now() - t0;
  assert.deepEqual(r2, { added: 5000, removed: 5000, changed: 10 });
  t0 = performance.now();
  const r3 = setPolicy(p3, {});
  const clearMs = performance.now() - t0;
  assert.deepEqual(r3, { added: 0, removed: 10_000, changed: 0 });
  assert.deepEqual(dp.endpointPolicy(p3.endpoint.id), []);
  t.diagnostic(
    `setEndpointPolicy: 10k entries added in ${applyMs.toFixed(0)} ms, same 10k again (no-op) ${noopMs.toFixed(1)} ms, ` +
      `5k replaced + 10 changed ${diffMs.toFixed(0)} ms, 10k removed ${clearMs.toFixed(0)} ms; endpointPolicy() of 10k ${listMs.toFixed(0)} ms`,
  );
});

test('restart: flags and entries stay in the maps, restoreEndpoint() keeps them, the next diff is against them', async () => {
  setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001), allowFrom(11003, TCP, 8090)] });
  dp.stop();
  dp = new NodeDatapath(cfg);
  nodeNs.run(() => {
    dp.start();
    for (const p of [p1, p2, p3]) dp.restoreEndpoint(p.endpoint);
  });
  assert.equal(dp.dumpEndpoints().find((e) => e.ip4 === p2.ip)!.flags, 2, 'still ingress-enforced');
  assert.equal(await tcpProbe(p1, p2.ip, 8080), 'hi 8080');
  assert.equal(await tcpProbe(p3, p2.ip, 8080, 800), 'timeout');
  assert.deepEqual(setPolicy(p2, { ingressEnforced: true, entries: [allowFrom(11001)] }), { added: 0, removed: 1, changed: 0 });
  assert.equal(dp.endpointPolicy(p2.endpoint.id).length, 1);
  setPolicy(p2, {});
});

test('removeEndpoint() removes the endpoint policy entries and flushes its conntrack entries', async () => {
  const p4 = addPod(40, 11004);
  setPolicy(p4, { ingressEnforced: true, entries: [allowFrom(11001, 0)] });
  assert.ok(await ping(p1, p4.ip));
  assert.ok(dp.ctList().some((e) => e.dst === p4.ip));
  nodeNs.run(() => dp.removeEndpoint(p4.endpoint));
  assert.deepEqual(dp.endpointPolicy(p4.endpoint.id), []);
  assert.ok(!dp.ctList().some((e) => e.src === p4.ip || e.dst === p4.ip), 'conntrack entries flushed');
  assert.equal(dp.ctFlush({ ip: p4.ip }), 0);
  // An ID re-used by a new endpoint starts unenforced, with no entries.
  nodeNs.run(() => dp.addEndpoint(p4.endpoint));
  assert.equal(dp.dumpEndpoints().find((e) => e.ip4 === p4.ip)!.flags, 0);
  assert.ok(await ping(p1, p4.ip));
  assert.ok(dp.ctFlush() > 0);
  assert.equal(dp.ctList().length, 0);
});

// ---- BPF_PROG_TEST_RUN: conntrack states, verdict choice and match types, related ICMP, fragments ----------------
// lxc.o loaded on its own (own bpffs directory, nothing attached), run on crafted packets. Pod A sends from ifindex 1
// (lo: the one device every namespace has; it is only the skb's ifindex of a test run), pod B is a redirect target.

const RUN_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-policy-run`;
const LO = 1;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const RUN_TIMEOUTS = { CONFIG_CT_TIMEOUT_TCP: 1000, CONFIG_CT_TIMEOUT_TCP_SYN: 100, CONFIG_CT_TIMEOUT_TCP_FIN: 10, CONFIG_CT_TIMEOUT_ANY: 50 };
const podA: EndpointInfo = { ifindex: LO, lxcId: 101, flags: 0, mac: '02:00:0a:c8:00:0a', nodeMac: '02:00:0a:c8:01:0a', secId: 1001, ip4: '10.240.0.10' };
const podB: EndpointInfo = { ifindex: 4242, lxcId: 102, flags: 0, mac: '02:00:0a:c8:00:14', nodeMac: '02:00:0a:c8:01:14', secId: 1002, ip4: '10.240.0.20' };

function csum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ip4Header(src: string, dst: string, proto: number, payloadLen: number, o: { id?: number; frag?: number } = {}): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payloadLen, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(o.frag ?? 0x4000, 6);
  h[8] = 64;
  h[9] = proto;
  h.writeUInt32BE(parseIPv4(src), 12);
  h.writeUInt32BE(parseIPv4(dst), 16);
  h.writeUInt16BE(csum(h), 10);
  return h;
}

/** Ethernet + IPv4 from `from` (its veth MACs) with an L4 payload built by the caller. */
function frame(from: EndpointInfo, dst: string, proto: number, l4: Buffer, o: { id?: number; frag?: number } = {}): Buffer {
  const eth = Buffer.alloc(14);
  parseMac(from.nodeMac).copy(eth, 0);
  parseMac(from.mac).copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, ip4Header(from.ip4, dst, proto, l4.length, o), l4]);
}

function tcpSeg(sport: number, dport: number, flags: number): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h[12] = 5 << 4;
  h[13] = flags;
  return h;
}

function udpDgram(sport: number, dport: number, len = 8): Buffer {
  const h = Buffer.alloc(len);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(len, 4);
  return h;
}

/** ICMP destination unreachable (port) quoting `inner` (IPv4 header + 8 bytes). */
function icmpUnreach(inner: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 3;
  h[1] = 3;
  const msg = Buffer.concat([h, inner]);
  msg.writeUInt16BE(csum(msg), 2);
  return msg;
}

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

let runColl: Collection | undefined;
let runProg: BpfProgram;
let runLxcIf: TypedMap<number, EndpointInfo>;
let runLxc: TypedMap<EndpointKey, EndpointInfo>;
let runPolicy: TypedMap<PolicyKeyRaw, PolicyValueRaw>;
let runCt: TypedMap<CtKey, CtValue>;
let runCtAny: TypedMap<CtKey, CtValue>;
let runRing: RingBuffer;
let ringEvents: DatapathEvent[] = [];

function loadRun(): void {
  if (runColl) return;
  runColl = Collection.load(path.join(root, 'build/bpf/lxc.o'), {
    constants: { CONFIG_ROUTER_IP4: 0, CONFIG_HOST_IFINDEX: 0, CONFIG_NODE_IP4: 0, ...RUN_TIMEOUTS },
    pinRoot: RUN_ROOT,
  });
  runProg = runColl.program('cil_from_container');
  runLxcIf = runColl.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec);
  runLxc = runColl.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
  runPolicy = runColl.map(POLICY_MAP).typed(policyKeyCodec, policyValueCodec);
  runCt = runColl.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec);
  runCtAny = runColl.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec);
  runRing = RingBuffer.open(runColl.map(EVENTS_MAP), (rec) => {
    const e = decodeEvent(rec);
    if (e) ringEvents.push(e);
  });
  runLxc.put({ ip4: podA.ip4 }, podA);
  runLxc.put({ ip4: podB.ip4 }, podB);
}

/** Runs cil_from_container as sent by `from` (its entry on ifindex 1) with A's and B's flags as given. */
function send(from: EndpointInfo, pkt: Buffer, flags: { a?: number; b?: number } = {}): number {
  loadRun();
  const a = { ...podA, flags: flags.a ?? 0 };
  const b = { ...podB, flags: flags.b ?? 0 };
  runLxc.put({ ip4: a.ip4 }, a);
  runLxc.put({ ip4: b.ip4 }, b);
  runLxcIf.put(LO, from.ip4 === a.ip4 ? a : { ...b, ifindex: LO });
  return runProg.run({ data: pkt, ctx: skbCtx({ ifindex: LO }) }).retval;
}

function takeRingEvents(): DatapathEvent[] {
  runRing.consume();
  const out = ringEvents;
  ringEvents = [];
  return out;
}

const nowSec = (): number => Number(process.hrtime.bigint() / 1_000_000_000n);

function ctOf(sport: number, dport: number, dir: number): CtValue | undefined {
  return runCt.lookup({ saddr: podA.ip4, daddr: podB.ip4, sport, dport, nexthdr: TCP, dir, pad: 0 });
}

function putEntry(epId: number, e: PolicyMapEntry): void {
  runPolicy.put(policyKeyOf(epId, e), policyValueOf(e));
}

after(() => {
  runRing?.close();
  runColl?.close();
  fs.rmSync(RUN_ROOT, { recursive: true, force: true });
});

test('test-run: TCP conntrack states — SYN, SYN-ACK, ACK, FIN both ways, reopen by SYN, RST; both entries, counters', () => {
  const sp = 40001;
  const A = (flags: number): number => send(podA, frame(podA, podB.ip4, TCP, tcpSeg(sp, 80, flags)));
  const B = (flags: number): number => send(podB, frame(podB, podA.ip4, TCP, tcpSeg(80, sp, flags)));
  const life = (v: CtValue | undefined): number => (v ? v.lifetime - nowSec() : NaN);
  const near = (got: number, want: number, what: string): void => assert.ok(Math.abs(got - want) <= 1, `${what}: lifetime in ${got} s, want ${want}`);

  assert.equal(A(SYN), TC_ACT_REDIRECT);
  for (const dir of [0, 1]) {
    const v = ctOf(sp, 80, dir)!;
    assert.ok(v, `entry dir ${dir}`);
    assert.deepEqual([v.flags, v.txFlagsSeen, v.rxFlagsSeen, v.srcSecId, Number(v.packets)], [0, SYN, 0, podA.secId, 1]);
    near(life(v), 100, 'SYN only');
  }
  assert.equal(B(SYN | ACK), TC_ACT_REDIRECT);
  assert.equal(ctOf(sp, 80, 1)!.rxFlagsSeen, SYN | ACK);
  near(life(ctOf(sp, 80, 1)), 100, 'SYN-ACK is still a SYN');
  assert.equal(runCt.lookup({ saddr: podB.ip4, daddr: podA.ip4, sport: 80, dport: sp, nexthdr: TCP, dir: 0, pad: 0 }), undefined, 'a reply makes no entry');
  assert.equal(A(ACK), TC_ACT_REDIRECT);
  near(life(ctOf(sp, 80, 0)), 1000, 'established');
  assert.equal(ctOf(sp, 80, 0)!.flags, 4);
  assert.equal(A(FIN | ACK), TC_ACT_REDIRECT);
  assert.equal(ctOf(sp, 80, 0)!.flags, 4 | 2, 'tx_closing');
  near(life(ctOf(sp, 80, 0)), 1000, 'half closed');
  assert.equal(B(FIN | ACK), TC_ACT_REDIRECT);
  assert.equal(ctOf(sp, 80, 1)!.flags, 4 | 2 | 1, 'both closing');
  near(life(ctOf(sp, 80, 1)), 10, 'closed: FIN timeout');
  assert.equal(A(SYN), TC_ACT_REDIRECT);
  assert.equal(ctOf(sp, 80, 0)!.flags, 0, 'reopened by a SYN');
  near(life(ctOf(sp, 80, 0)), 100, 'reopened: SYN timeout');
  assert.equal(B(RST | ACK), TC_ACT_REDIRECT);
  assert.equal(ctOf(sp, 80, 0)!.flags & 3, 3, 'RST closes both ways');
  for (const dir of [0, 1]) assert.equal(Number(ctOf(sp, 80, dir)!.packets), 7, `packets of both directions, dir ${dir}`);
  assert.ok(Number(ctOf(sp, 80, 0)!.bytes) >= 7 * 54);
});

test('test-run: verdict choice — deny wins, then the longer L4 prefix, specific identity on a tie; match types', () => {
  const E = 4; // egress enforced on A
  const egress = (identity: number, protocol: number, port: number, portPrefixLen: number, deny = false): PolicyMapEntry => ({ direction: 'egress', identity, protocol, port, portPrefixLen, deny });
  const counted = (e: PolicyMapEntry): number => Number(runPolicy.lookup(policyKeyOf(podA.lxcId, e))?.packets ?? -1);
  let port = 50000;
  const syn = (dport: number): number => send(podA, frame(podA, podB.ip4, TCP, tcpSeg(port++, dport, SYN)), { a: E });
  const verdicts = (): Array<[string, string, number]> =>
    takeRingEvents()
      .filter((e): e is PolicyVerdictEvent => e.type === 'policy-verdict' && e.source === podA.lxcId)
      .map((e) => [e.action, e.match, e.dport]);
  takeRingEvents();

  assert.equal(syn(80), TC_ACT_SHOT, 'nothing allowed');
  const l3 = egress(podB.secId, 0, 0, 0);
  const all = egress(0, 0, 0, 0);
  const l4 = egress(0, TCP, 80, 16);
  const l3l4 = egress(podB.secId, TCP, 80, 16);
  const l3proto = egress(podB.secId, TCP, 0, 0);
  const protoOnly = egress(0, TCP, 0, 0);
  putEntry(podA.lxcId, all);
  assert.equal(syn(80), TC_ACT_REDIRECT);
  putEntry(podA.lxcId, l3);
  assert.equal(syn(80), TC_ACT_REDIRECT);
  assert.deepEqual([counted(l3), counted(all)], [1, 1], 'tie at L4 prefix 0: the specific identity counts');
  putEntry(podA.lxcId, l4);
  assert.equal(syn(80), TC_ACT_REDIRECT);
  assert.equal(counted(l4), 1, 'a wildcard with a port beats an L3-only entry');
  putEntry(podA.lxcId, l3l4);
  assert.equal(syn(80), TC_ACT_REDIRECT);
  putEntry(podA.lxcId, protoOnly);
  putEntry(podA.lxcId, l3proto);
  assert.equal(syn(81), TC_ACT_REDIRECT, 'port 81: the protocol-only entries are the longest match');
  runPolicy.delete(policyKeyOf(podA.lxcId, l3proto));
  assert.equal(syn(81), TC_ACT_REDIRECT);
  // A deny found by either lookup wins over the other lookup's allow. (Within one identity the trie answers with the
  // longest entry only: a broader deny under a narrower allow is the policy compiler's to resolve, as in Cilium.)
  runPolicy.put(policyKeyOf(podA.lxcId, l4), policyValueOf({ ...l4, deny: true }));
  assert.equal(syn(80), TC_ACT_SHOT, 'the wildcard-identity deny beats the specific L3-L4 allow');
  assert.deepEqual(verdicts(), [
    ['deny', 'none', 80],
    ['allow', 'all', 80],
    ['allow', 'L3-Only', 80],
    ['allow', 'L4-Only', 80],
    ['allow', 'L3-L4', 80],
    ['allow', 'L3-Proto', 81],
    ['allow', 'Proto-Only', 81],
    ['deny', 'L4-Only', 80],
  ]);
  assert.equal(counted(l4), 1, 'the deny counts the packet it dropped (its counters were reset by the rewrite)');
  for (const e of [l3, all, l4, l3l4, protoOnly]) runPolicy.delete(policyKeyOf(podA.lxcId, e));
});

test('test-run: an ICMP error about a tracked flow is related (passes an enforced ingress); an untracked one is not', () => {
  const I = 2; // ingress enforced on A
  const out = frame(podA, podB.ip4, UDP, udpDgram(41000, 53));
  assert.equal(send(podA, out), TC_ACT_REDIRECT);
  const quoted = out.subarray(14, 14 + 28);
  assert.equal(send(podB, frame(podB, podA.ip4, ICMP, icmpUnreach(quoted)), { a: I }), TC_ACT_REDIRECT, 'related');
  const other = frame(podA, podB.ip4, UDP, udpDgram(41001, 53)).subarray(14, 14 + 28);
  assert.equal(send(podB, frame(podB, podA.ip4, ICMP, icmpUnreach(other)), { a: I }), TC_ACT_SHOT, 'about no tracked flow');
  // A reply of the flow passes too; a new datagram B -> A does not.
  assert.equal(send(podB, frame(podB, podA.ip4, UDP, udpDgram(53, 41000)), { a: I }), TC_ACT_REDIRECT);
  assert.equal(send(podB, frame(podB, podA.ip4, UDP, udpDgram(53, 41002)), { a: I }), TC_ACT_SHOT);
});

test('test-run: an ICMP error only relates to a flow between its own ends (no wrapping a tracked tuple to pass as related)', () => {
  const E = 4; // egress enforced on A: only UDP to B:53 allowed
  const dnsAllow: PolicyMapEntry = { direction: 'egress', identity: podB.secId, protocol: UDP, port: 53, portPrefixLen: 16, deny: false };
  putEntry(podA.lxcId, dnsAllow);
  try {
    assert.equal(send(podA, frame(podA, podB.ip4, UDP, udpDgram(41500, 53)), { a: E }), TC_ACT_REDIRECT, 'the allowed flow');
    // A reports B's reply as unreachable: an error about the flow between A and B, sent to B — related.
    const reply = frame(podB, podA.ip4, UDP, udpDgram(53, 41500)).subarray(14, 14 + 28);
    assert.equal(send(podA, frame(podA, podB.ip4, ICMP, icmpUnreach(reply)), { a: E }), TC_ACT_REDIRECT, 'related');
    // The same quote sent to a world address: exfiltration wrapped in an ICMP error, dropped by A's egress policy.
    assert.equal(send(podA, frame(podA, '198.51.100.7', ICMP, icmpUnreach(reply)), { a: E }), TC_ACT_SHOT, 'not related to the world address');
  } finally {
    runPolicy.delete(policyKeyOf(podA.lxcId, dnsAllow));
  }
});

test('test-run: SCTP ports are tracked and policed like UDP ports', () => {
  const I = 2;
  const SCTP = 132;
  const allow: PolicyMapEntry = { direction: 'ingress', identity: podA.secId, protocol: SCTP, port: 9000, portPrefixLen: 16, deny: false };
  putEntry(podB.lxcId, allow);
  try {
    assert.equal(send(podA, frame(podA, podB.ip4, SCTP, udpDgram(40000, 9000, 12)), { b: I }), TC_ACT_REDIRECT, 'allowed port');
    assert.equal(send(podA, frame(podA, podB.ip4, SCTP, udpDgram(40000, 9001, 12)), { b: I }), TC_ACT_SHOT, 'other port');
    // B may not open SCTP to A on the strength of A's association to B:9000 (ports are part of the tuple now).
    assert.equal(send(podB, frame(podB, podA.ip4, SCTP, udpDgram(9000, 40000, 12)), { a: I }), TC_ACT_REDIRECT, 'the reply');
    assert.equal(send(podB, frame(podB, podA.ip4, SCTP, udpDgram(9000, 40001, 12)), { a: I }), TC_ACT_SHOT, 'not a reply');
  } finally {
    runPolicy.delete(policyKeyOf(podB.lxcId, allow));
  }
});

test('test-run: an expired conntrack entry is no longer a flow: its replies face policy again', () => {
  const I = 2;
  assert.equal(send(podA, frame(podA, podB.ip4, UDP, udpDgram(41600, 5353))), TC_ACT_REDIRECT);
  assert.equal(send(podB, frame(podB, podA.ip4, UDP, udpDgram(5353, 41600)), { a: I }), TC_ACT_REDIRECT, 'reply while alive');
  const key = { saddr: podA.ip4, daddr: podB.ip4, sport: 41600, dport: 5353, nexthdr: UDP, dir: 0, pad: 0 };
  const any = runCtAny.lookup(key);
  assert.ok(any, 'the egress entry of A');
  runCtAny.put(key, { ...any, lifetime: nowSec() - 5 });
  assert.equal(send(podB, frame(podB, podA.ip4, UDP, udpDgram(5353, 41600)), { a: I }), TC_ACT_SHOT, 'expired: not a reply');
});

test('test-run: later IP fragments take the ports of their first fragment (tracked and policed as the flow)', () => {
  const I = 2;
  putEntry(podB.lxcId, { direction: 'ingress', identity: podA.secId, protocol: UDP, port: 9090, portPrefixLen: 16, deny: false });
  try {
    const first = frame(podA, podB.ip4, UDP, udpDgram(42000, 9090, 24), { id: 0x4242, frag: 0x2000 });
    const later = frame(podA, podB.ip4, UDP, Buffer.alloc(16), { id: 0x4242, frag: 3 });
    const stray = frame(podA, podB.ip4, UDP, Buffer.alloc(16), { id: 0x4343, frag: 3 });
    assert.equal(send(podA, first, { b: I }), TC_ACT_REDIRECT);
    assert.equal(send(podA, later, { b: I }), TC_ACT_REDIRECT, 'later fragment of an allowed datagram');
    assert.equal(send(podA, stray, { b: I }), TC_ACT_SHOT, 'later fragment whose first was never seen');
    assert.equal(ctAnyPackets(42000, 9090), 2n, 'both fragments counted on the flow (ingress entry of B)');
  } finally {
    runPolicy.delete(policyKeyOf(podB.lxcId, { direction: 'ingress', identity: podA.secId, protocol: UDP, port: 9090, portPrefixLen: 16, deny: false }));
  }
});

test('test-run: ICMP entries match the type (port prefix 8) or the type and code (16) in the port\'s place', () => {
  const E = 4;
  const msg = (type: number, code: number): Buffer => {
    const h = Buffer.alloc(8);
    h[0] = type;
    h[1] = code;
    h.writeUInt16BE(0x4321, 4);
    h.writeUInt16BE(csum(h), 2);
    return h;
  };
  const icmpTo = (type: number, code = 0): number => send(podA, frame(podA, podB.ip4, ICMP, msg(type, code)), { a: E });
  const entry = (port: number, portPrefixLen: number): PolicyMapEntry => ({ direction: 'egress', identity: podB.secId, protocol: ICMP, port, portPrefixLen, deny: false });
  const echo = entry(8 << 8, 8);
  const unreach = entry((3 << 8) | 4, 16);
  putEntry(podA.lxcId, echo);
  putEntry(podA.lxcId, unreach);
  takeRingEvents();
  try {
    assert.equal(icmpTo(8), TC_ACT_REDIRECT, 'echo request: its type');
    assert.equal(icmpTo(13), TC_ACT_SHOT, 'timestamp: another type');
    assert.equal(icmpTo(3, 4), TC_ACT_REDIRECT, 'destination unreachable, code 4');
    assert.equal(icmpTo(3, 3), TC_ACT_SHOT, 'destination unreachable, another code');
    assert.equal(send(podA, frame(podA, podB.ip4, TCP, tcpSeg(52000, 80, SYN)), { a: E }), TC_ACT_SHOT, 'ICMP entries allow no TCP');
    const v = takeRingEvents().filter((e): e is PolicyVerdictEvent => e.type === 'policy-verdict' && e.source === podA.lxcId && e.proto === ICMP);
    assert.deepEqual(v.map((e) => [e.action, e.dport]), [['allow', 0x0800], ['deny', 0x0d00], ['allow', 0x0304], ['deny', 0x0303]], 'verdicts carry type << 8 | code');
  } finally {
    runPolicy.delete(policyKeyOf(podA.lxcId, echo));
    runPolicy.delete(policyKeyOf(podA.lxcId, unreach));
  }
});

test('test-run: an ipBlock identity is looked up by address beside the ipcache identity; a deny through it wins over an identity allow', () => {
  const E = 4;
  loadRun();
  const blocks = runColl!.map(IPBLOCK_MAP).typed(ipcacheKeyCodec, ipblockValueCodec);
  const [NET, ONE] = [0x02000010, 0x02000011];
  const net80: PolicyMapEntry = { direction: 'egress', identity: NET, protocol: TCP, port: 80, portPrefixLen: 16, deny: false };
  const byIdentity: PolicyMapEntry = { direction: 'egress', identity: podB.secId, protocol: 0, port: 0, portPrefixLen: 0, deny: false };
  const denyOne: PolicyMapEntry = { direction: 'egress', identity: ONE, protocol: 0, port: 0, portPrefixLen: 0, deny: true };
  let port = 53000;
  const syn = (dport: number): number => send(podA, frame(podA, podB.ip4, TCP, tcpSeg(port++, dport, SYN)), { a: E });
  blocks.put({ prefix: '10.240.0.0/24' }, NET);
  putEntry(podA.lxcId, net80);
  try {
    assert.equal(syn(80), TC_ACT_REDIRECT, 'B by the block around its address');
    assert.equal(syn(81), TC_ACT_SHOT, 'another port');
    putEntry(podA.lxcId, byIdentity);
    blocks.put({ prefix: `${podB.ip4}/32` }, ONE);
    putEntry(podA.lxcId, denyOne);
    assert.equal(syn(81), TC_ACT_SHOT, 'a deny of B\'s address beats the allow of its identity');
    blocks.delete({ prefix: `${podB.ip4}/32` });
    assert.equal(syn(81), TC_ACT_REDIRECT, 'the identity allow once the address is no longer denied');
  } finally {
    for (const e of [net80, byIdentity, denyOne]) runPolicy.delete(policyKeyOf(podA.lxcId, e));
    blocks.delete({ prefix: '10.240.0.0/24' });
    blocks.delete({ prefix: `${podB.ip4}/32` });
  }
});

function ctAnyPackets(sport: number, dport: number): bigint {
  const m = runColl!.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec);
  return m.lookup({ saddr: podA.ip4, daddr: podB.ip4, sport, dport, nexthdr: UDP, dir: 1, pad: 0 })?.packets ?? -1n;
}
