// Integration: a node's datapath (in-process, in a namespace of its own) with two real pods; NodeDatapath.startEvents()
// delivers the traces and drops of their traffic. Also measures what events cost: iperf3 pod -> pod with events on
// (read or not) and off, and how fast the reader decodes a flood of new flows. Root; every namespace, bpffs
// directory and process is the test's own and removed in after(), also on failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { children, exec, inNs, sleep, startProcess, stopProcess } from './lib/proc.js';
import { addTestPod, type TestPod, deleteNamespaces } from './lib/pods.js';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { NodeDatapath, decodeEvent, ktimeToDate, type NodeDatapathConfig } from '../src/datapath/index.js';
import { BpfMap, RingBuffer } from '../src/kernel/bpf/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import type { DatapathEvent, DropEvent, TraceEvent } from '../src/datapath/index.js';

// Compiled to dist/test/: the repository root is two levels up.
const root = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = `tdlt-${process.pid}-ev`;
const NODE_NS = `${PREFIX}-n`;
const BPF_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-events`;

// ---- topology: one node, two pods -----------------------------------------------------------------------

type Pod = TestPod;

const createdNs: string[] = [];
let nodeNs: Netns;
let cfg: NodeDatapathConfig;
let dp: NodeDatapath;
let p1: Pod;
let p2: Pod;

function makeNs(name: string): Netns {
  createdNs.push(name);
  return Netns.create(name);
}

/** A pod as the CNI plugin wires one (test/lib/pods.ts). */
function addPod(host: number, identity: number): Pod {
  const podNs = `${PREFIX}-p${host}`;
  createdNs.push(podNs);
  return addTestPod({ nodeNs, dp, podNs, subnet: '10.230.0', host, hostIfName: `lxcev${host}`, identity });
}

/** Restarts the datapath with events on or off (programs reloaded, links switched in place, pods re-adopted). */
function restartDatapath(events: boolean): void {
  dp.stop();
  cfg = { ...cfg, events };
  dp = new NodeDatapath(cfg);
  nodeNs.run(() => {
    dp.start();
    dp.restoreEndpoint(p1.endpoint);
    dp.restoreEndpoint(p2.endpoint);
  });
}

before(() => {
  // Fail, never skip: without root nothing here can be tested.
  assert.equal(process.getuid?.(), 0, 'test/datapath-events.test.ts needs root (namespaces, BPF, bpffs)');
  for (const tool of ['ping', 'iperf3']) {
    assert.ok(['/usr/bin/', '/bin/', '/usr/sbin/'].some((d) => fs.existsSync(d + tool)), `${tool} is needed`);
  }
  nodeNs = makeNs(NODE_NS);
  const nl = Netlink.openIn(nodeNs);
  try {
    // The node's "underlay": a veth pair of its own, no uplink.
    nl.setLink('lo', { up: true });
    nl.createVeth({ name: 'eth0', peerName: 'eth0p' });
    nl.addAddress(nl.getLink('eth0')!.index, '192.168.88.10/24');
    nl.setLink('eth0p', { up: true });
    nl.setLink('eth0', { up: true });
  } finally {
    nl.close();
  }
  cfg = {
    podCidr: '10.230.0.0/24',
    routerIP: '10.230.0.1',
    nodeIP: '192.168.88.10',
    nativeDev: 'eth0',
    bpfRoot: BPF_ROOT,
    objDir: path.join(root, 'build/bpf'),
  };
  dp = new NodeDatapath(cfg);
  nodeNs.run(() => dp.start());
  p1 = addPod(10, 11001);
  p2 = addPod(20, 11002);
});

after(async () => {
  await Promise.all([...children].map(stopProcess));
  dp?.stop();
  nodeNs?.close();
  deleteNamespaces(createdNs);
  fs.rmSync(BPF_ROOT, { recursive: true, force: true });
});

// ---- helpers ----------------------------------------------------------------------------------------------

/** IPv4 source/destination and protocol of an event's captured packet (Ethernet + IPv4). */
function ipsOf(e: DatapathEvent): { src: string; dst: string; proto: number } | undefined {
  const d = e.data;
  if (d.length < 34 || d.readUInt16BE(12) !== 0x0800) return undefined;
  return { src: [...d.subarray(26, 30)].join('.'), dst: [...d.subarray(30, 34)].join('.'), proto: d[23]! };
}

/** Collects events until `done` holds or the timeout passes. */
async function collect(during: () => Promise<void>, done: (events: DatapathEvent[]) => boolean, timeoutMs = 30_000): Promise<DatapathEvent[]> {
  const events: DatapathEvent[] = [];
  const watch = dp.startEvents((e) => events.push(e));
  try {
    await during();
    const until = Date.now() + timeoutMs;
    while (!done(events) && Date.now() < until) await sleep(20);
  } finally {
    watch.stop();
  }
  return events;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

// ---- tests ------------------------------------------------------------------------------------------------

test('startEvents() delivers from-endpoint and to-endpoint traces of a ping, both directions, new then reply', async () => {
  const icmp = (e: DatapathEvent): e is TraceEvent => e.type === 'trace' && ipsOf(e)?.proto === 1;
  const want = (events: DatapathEvent[]): TraceEvent[] => events.filter(icmp).filter((e) => [p1.ip, p2.ip].includes(ipsOf(e)!.src));
  const t0 = Date.now();
  const events = await collect(
    async () => {
      const r = await exec(inNs(p1.ns, ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '5', p2.ip]));
      assert.equal(r.code, 0, `ping: ${r.stdout}${r.stderr}`);
    },
    (ev) => want(ev).length >= 4,
  );
  const got = want(events).map((e) => {
    const ip = ipsOf(e)!;
    return `${ip.src}->${ip.dst} ${e.obsPoint} ${e.reason} source=${e.source} ${e.srcIdentity}->${e.dstIdentity} dstId=${e.dstId}`;
  });
  // Three echo requests and replies, aggregated to the first of each direction at each point.
  assert.deepEqual(got, [
    `${p1.ip}->${p2.ip} from-endpoint new source=10 11001->11002 dstId=20`,
    `${p1.ip}->${p2.ip} to-endpoint new source=20 11001->11002 dstId=20`,
    `${p2.ip}->${p1.ip} from-endpoint reply source=20 11002->11001 dstId=10`,
    `${p2.ip}->${p1.ip} to-endpoint reply source=10 11002->11001 dstId=10`,
  ]);
  const first = want(events)[0]!;
  assert.equal(first.ifindex, p1.endpoint.hostIfindex, 'from-endpoint ran on the pod veth');
  const at = ktimeToDate(first.ktimeNs).getTime();
  assert.ok(at >= t0 - 1000 && at <= Date.now() + 1000, `timestamp ${at} is wall-clock time during the ping (from ${t0})`);
});

test('startEvents() delivers a drop event (139) for IPv6 a pod sends; stats() counts what was read', async () => {
  let stats = { read: 0, lost: 0, rateLimited: 0, skipped: 0 };
  const events: DatapathEvent[] = [];
  const watch = dp.startEvents((e) => events.push(e));
  try {
    // All-nodes multicast out of the pod's eth0: the datapath does not forward IPv6. The CNI wiring disables
    // IPv6 in pods; a pod that turns it back on is what this drop is for.
    await exec(inNs(p1.ns, ['sysctl', '-q', '-w', 'net.ipv6.conf.eth0.disable_ipv6=0']));
    await exec(inNs(p1.ns, ['ping', '-6', '-n', '-q', '-c', '1', '-W', '1', 'ff02::1%eth0']));
    const until = Date.now() + 30_000;
    while (!events.some((e) => e.type === 'drop' && e.reason === 139 && e.source === p1.endpoint.id) && Date.now() < until) await sleep(20);
  } finally {
    watch.stop();
    stats = watch.stats();
  }
  // Pods send IPv6 of their own accord too (router solicitations, MLD): p1's ping is the one looked for.
  const drop = events.find((e): e is DropEvent => e.type === 'drop' && e.reason === 139 && e.source === p1.endpoint.id);
  assert.ok(drop, `drop 139 in ${JSON.stringify(events.map((e) => e.type))}`);
  assert.deepEqual([drop.file, drop.srcIdentity, drop.ifindex], ['lxc', 11001, p1.endpoint.hostIfindex]);
  assert.equal(drop.data.readUInt16BE(12), 0x86dd, 'captured frame is IPv6');
  assert.equal(stats.read, events.length);
  assert.equal(stats.lost, 0);
});

test('iperf3 pod -> pod: throughput with events on (read / unread) and off (CONFIG_EVENTS=0)', { timeout: 180_000 }, async (t) => {
  const { proc: server } = await startProcess(inNs(p2.ns, ['iperf3', '-s', '-p', '5201', '--forceflush']), /Server listening/);
  const results: Record<'on, read' | 'on, unread' | 'off', number[]> = { 'on, read': [], 'on, unread': [], off: [] };
  try {
    for (let round = 0; round < 3; round++) {
      // Interleaved, so drift of the machine affects every configuration alike.
      for (const mode of ['on, read', 'on, unread', 'off'] as const) {
        const events = mode !== 'off';
        if ((cfg.events ?? true) !== events) restartDatapath(events);
        let read = 0;
        const watch = mode === 'on, read' ? dp.startEvents(() => read++) : undefined;
        try {
          const r = await exec(inNs(p1.ns, ['iperf3', '-c', p2.ip, '-p', '5201', '-t', '3', '-J']), 30_000);
          assert.equal(r.code, 0, `iperf3: ${r.stderr}${r.stdout.slice(0, 500)}`);
          const bps = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
          results[mode].push(bps / 1e9);
        } finally {
          watch?.stop();
        }
        if (watch) assert.ok(read > 0, 'the reader saw the connection');
      }
    }
  } finally {
    await stopProcess(server);
    if (cfg.events === false) restartDatapath(true);
  }
  const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)])) as Record<keyof typeof results, number>;
  t.diagnostic(
    `iperf3 TCP pod -> pod, Gbit/s (3 runs of 3 s, median [runs]): ` +
      Object.entries(results)
        .map(([k, v]) => `${k} ${median(v).toFixed(2)} [${v.map((x) => x.toFixed(2)).join(', ')}]`)
        .join('; ') +
      `; on/off ${(m['on, read'] / m.off).toFixed(3)}, read/unread ${(m['on, read'] / m['on, unread']).toFixed(3)}`,
  );
  // Only a gross regression fails: the figures go into the report. Load only ever slows a run (seen: 12-21 Gbit/s
  // within one mode at load 8), so the best run of each mode is compared, not the median.
  const best = (k: keyof typeof results): number => Math.max(...results[k]);
  assert.ok(best('on, read') > 0.7 * best('off'), `events cost more than 30% of the throughput (best ${best('on, read').toFixed(2)} vs ${best('off').toFixed(2)})`);
});

/** UDP to `count` distinct ports of p2 from one socket: every datagram is a new flow. */
const BLAST = (ip: string, count: number): string =>
  `const s = require('dgram').createSocket('udp4'); const m = Buffer.alloc(16); let i = 0; const t0 = process.hrtime.bigint();` +
  `function go() { for (let k = 0; k < 2000 && i < ${count}; k++, i++) s.send(m, 1024 + (i % 60000), '${ip}'); ` +
  `if (i < ${count}) setImmediate(go); else s.close(() => console.log(JSON.stringify({ sent: i, ms: Number(process.hrtime.bigint() - t0) / 1e6 }))); } go();`;

test('reader throughput: a flood of new flows is decoded at a measured rate, the excess counted as lost', { timeout: 120_000 }, async (t) => {
  const count = 60_000;
  // 1. Live: startEvents() at its default 20 ms period while a pod opens `count` flows.
  let read = 0;
  const watch = dp.startEvents(() => read++);
  const t0 = performance.now();
  let blast: { sent: number; ms: number };
  try {
    const r = await exec(inNs(p1.ns, ['node', '-e', BLAST(p2.ip, count)]), 60_000);
    assert.equal(r.code, 0, r.stderr);
    blast = JSON.parse(r.stdout) as { sent: number; ms: number };
    await sleep(200);
  } finally {
    watch.stop();
  }
  const liveMs = performance.now() - t0;
  const st = watch.stats();
  assert.ok(st.read > 0);

  // 2. Capacity: fill the ring with nobody reading, then time one reader draining it (consume + decode).
  const ring = BpfMap.openPinned(path.join(BPF_ROOT, 'tendril_events'));
  let decoded = 0;
  const rb = RingBuffer.open(ring, (rec) => {
    if (decodeEvent(rec) !== undefined) decoded++;
  });
  let drainMs = 0;
  try {
    rb.consume();
    decoded = 0;
    const r = await exec(inNs(p1.ns, ['node', '-e', BLAST(p2.ip, 20_000).replace(/1024 \+/, '2048 +')]), 60_000);
    assert.equal(r.code, 0, r.stderr);
    const d0 = performance.now();
    rb.consume();
    drainMs = performance.now() - d0;
  } finally {
    rb.close();
    ring.close();
  }
  assert.ok(decoded > 1000, `ring held ${decoded} events`);
  t.diagnostic(
    `flood of ${blast.sent} new UDP flows in ${blast.ms.toFixed(0)} ms (${((blast.sent / blast.ms) * 1000).toFixed(0)} flows/s, 2 traces each): ` +
      `reader read ${st.read} events in ${liveMs.toFixed(0)} ms (${((st.read / liveMs) * 1000).toFixed(0)} events/s), lost ${st.lost}; ` +
      `draining a full ring: ${decoded} events in ${drainMs.toFixed(1)} ms = ${((decoded / drainMs) * 1000).toFixed(0)} events/s (consume + decode)`,
  );
});

test('RingBuffer reads the ring in place (mmap): records stay whole across many wraps, none left undecoded', { timeout: 120_000 }, async () => {
  const ring = BpfMap.openPinned(path.join(BPF_ROOT, 'tendril_events'));
  let decoded = 0;
  let bad = 0;
  let bytes = 0;
  const rb = RingBuffer.open(ring, (rec) => {
    bytes += rec.length;
    if (decodeEvent(rec) !== undefined) decoded++;
    else bad++;
  });
  try {
    assert.equal(rb.reader, 'mmap');
    rb.consume();
    decoded = bad = bytes = 0;
    const blast = exec(inNs(p1.ns, ['node', '-e', BLAST(p2.ip, 40_000)]), 60_000);
    let done = false;
    void blast.finally(() => (done = true));
    while (!done) {
      rb.consume(512);
      await sleep(2);
    }
    const r = await blast;
    assert.equal(r.code, 0, r.stderr);
    await sleep(100);
    rb.consume();
  } finally {
    rb.close();
    ring.close();
  }
  assert.equal(bad, 0, `${bad} records did not decode`);
  // Every record carries at least its header: more bytes than twice the ring means it wrapped at least twice.
  assert.ok(bytes > 2 * ring.maxEntries, `read ${decoded} events, ${bytes} bytes: the ring (${ring.maxEntries} bytes) did not wrap twice`);
  assert.throws(() => rb.consume(), /closed/);
});
