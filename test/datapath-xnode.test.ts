// Integration: two nodes' datapaths in-process (each in its own namespace on a bridged underlay) forward pod
// traffic across nodes in tunnel and native routing mode, follow node removal/re-adding and survive a restart.
// Root; every namespace, bpffs directory and process is the test's own and removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { children, exec, inNs, sleep, startProcess, stopProcess, until } from './lib/proc.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  NodeDatapath,
  VXLAN_DEV,
  VXLAN_PORT,
  type DatapathEndpoint,
  type NodeDatapathConfig,
  type PolicyMapEntry,
  type RemoteNode,
  type RoutingMode,
  wirePodInterface,
} from '../src/datapath/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import { randomMac } from '../src/util/ip.js';

// Compiled to dist/test/: the repository root is two levels up.
const root = fileURLToPath(new URL('../../', import.meta.url));
const OBJ_DIR = path.join(root, 'build/bpf');
const PREFIX = `tdlt-${process.pid}`;


// ---- pcap -----------------------------------------------------------------------------------------------

interface Ip4 {
  src: string;
  dst: string;
  proto: number;
  /** Offset of the L4 header in the frame. */
  l4: number;
}

function ip4At(f: Buffer, off: number): Ip4 | undefined {
  if (f.readUInt16BE(off - 2) !== 0x0800 || f.length < off + 20) return undefined;
  const ip = (o: number): string => [...f.subarray(o, o + 4)].join('.');
  return { src: ip(off + 12), dst: ip(off + 16), proto: f[off + 9]!, l4: off + (f[off]! & 0x0f) * 4 };
}

/** Ethernet frames of a classic little-endian pcap file as tcpdump -w writes it. */
function readPcap(file: string): Buffer[] {
  const b = fs.readFileSync(file);
  assert.equal(b.readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
  assert.equal(b.readUInt32LE(20), 1, 'linktype Ethernet');
  const out: Buffer[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const len = b.readUInt32LE(o + 8);
    out.push(b.subarray(o + 16, o + 16 + len));
    o += 16 + len;
  }
  return out;
}

interface VxlanFrame {
  outer: Ip4;
  dport: number;
  vni: number;
  inner: Ip4;
}

function parseVxlan(f: Buffer): VxlanFrame | undefined {
  const outer = ip4At(f, 14);
  if (!outer || outer.proto !== 17) return undefined;
  const dport = f.readUInt16BE(outer.l4 + 2);
  const vx = outer.l4 + 8;
  const inner = ip4At(f, vx + 8 + 14);
  if (!inner) return undefined;
  return { outer, dport, vni: f.readUIntBE(vx + 4, 3), inner };
}

/**
 * Captures on a port of the underlay bridge while `during` runs. Not on br0 itself: a bridge device only sees
 * frames for the bridge's own host, not those it forwards between its ports.
 */
async function capture(port: string, filter: string, during: () => Promise<void>, frames = 4): Promise<Buffer[]> {
  const file = path.join(stateDir, `cap-${Date.now()}.pcap`);
  const { proc } = await startProcess(inNs(UNDERLAY_NS, ['tcpdump', '-i', port, '-nn', '-U', '--immediate-mode', '-s', '256', '-w', file, filter]), /listening on/);
  try {
    await during();
    await until(`${frames} frames in the capture`, () => fs.existsSync(file) && fs.statSync(file).size > 24 && readPcap(file).length >= frames);
  } finally {
    await stopProcess(proc);
  }
  return readPcap(file);
}

// ---- topology -------------------------------------------------------------------------------------------

const UNDERLAY_NS = `${PREFIX}-ul`;
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-`));
const createdNs: string[] = [];
const bpfRoots: string[] = [];

function makeNs(name: string): Netns {
  createdNs.push(name);
  return Netns.create(name);
}

interface Pod {
  name: string;
  ns: string;
  ip: string;
  identity: number;
  hostIfName: string;
  endpoint: DatapathEndpoint;
}

interface Node {
  name: string;
  /** Its veth port on the underlay bridge. */
  port: string;
  ns: Netns;
  nsName: string;
  ip: string;
  podCidr: string;
  routerIP: string;
  healthIP: string;
  cfg: NodeDatapathConfig;
  dp: NodeDatapath;
  pod: Pod;
}

function remoteSpec(n: Node): RemoteNode {
  return { name: n.name, nodeIP: n.ip, podCIDRs: [n.podCidr], routerIP: n.routerIP, healthIP: n.healthIP };
}

/** Underlay: a bridge in its own namespace, no uplink. */
function buildUnderlay(): void {
  const ul = makeNs(UNDERLAY_NS);
  const nl = Netlink.openIn(ul);
  try {
    nl.setLink('lo', { up: true });
    nl.createBridge({ name: 'br0' });
    nl.setLink('br0', { up: true });
  } finally {
    nl.close();
    ul.close();
  }
}

function buildNode(mode: RoutingMode, i: number): Node {
  const name = `n${i}`;
  const nsName = `${PREFIX}-${mode[0]}${name}`;
  const ns = makeNs(nsName);
  const ip = `192.168.77.${10 + i}`;
  const port = `${mode[0]}${name}`;
  const ul = Netns.open(`/var/run/netns/${UNDERLAY_NS}`);
  const unl = Netlink.openIn(ul);
  try {
    unl.createVeth({ name: port, peerName: 'eth0', peerNetns: ns });
    unl.setLink(port, { masterIndex: unl.getLink('br0')!.index, up: true });
  } finally {
    unl.close();
    ul.close();
  }
  const nnl = Netlink.openIn(ns);
  try {
    nnl.setLink('lo', { up: true });
    const eth = nnl.getLink('eth0')!;
    nnl.addAddress(eth.index, `${ip}/24`);
    nnl.setLink(eth.index, { up: true });
  } finally {
    nnl.close();
  }
  const bpfRoot = `/sys/fs/bpf/tendril-test-${process.pid}-${mode}-${name}`;
  bpfRoots.push(bpfRoot);
  const cfg: NodeDatapathConfig = {
    podCidr: `10.210.${i}.0/24`,
    routerIP: `10.210.${i}.1`,
    nodeIP: ip,
    routing: mode,
    nativeDev: 'eth0',
    bpfRoot,
    objDir: OBJ_DIR,
    stateFile: path.join(stateDir, `${mode}-${name}.json`),
  };
  const dp = new NodeDatapath(cfg);
  ns.run(() => dp.start());
  const node: Node = {
    name,
    port,
    ns,
    nsName,
    ip,
    podCidr: cfg.podCidr,
    routerIP: cfg.routerIP,
    healthIP: `10.210.${i}.2`,
    cfg,
    dp,
    pod: undefined as unknown as Pod,
  };
  node.pod = addPod(node, mode, 10, 1000 * i + 1);
  return node;
}

/** A pod as the CNI plugin wires one (the datapath's wirePodInterface), then the datapath's endpoint. */
function addPod(node: Node, mode: RoutingMode, host: number, identity: number): Pod {
  const ip = `10.210.${node.podCidr.split('.')[2]}.${host}`;
  const podNsName = `${node.nsName}-p${host}`;
  const podNs = makeNs(podNsName);
  const hostIfName = `lxc${mode[0]}${node.name}p${host}`;
  try {
    const link = wirePodInterface({ netns: podNs, netnsPath: podNs.path, hostNetns: node.ns, hostIfName, podIfName: 'eth0', ip, routerIP: node.routerIP, mtu: node.dp.podMtu });
    const endpoint: DatapathEndpoint = { id: host, ip, hostIfName, hostIfindex: link.hostIfindex, hostMac: link.hostMac, podMac: link.podMac, identity };
    node.ns.run(() => node.dp.addEndpoint(endpoint));
    return { name: `${node.name}-p${host}`, ns: podNsName, ip, identity, hostIfName, endpoint };
  } finally {
    podNs.close();
  }
}

function routesOf(node: Node): string[] {
  const nl = Netlink.openIn(node.ns);
  try {
    const dev = new Map(nl.listLinks().map((l) => [l.index, l.name]));
    return nl
      .listRoutes()
      .map((r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${dev.get(r.ifindex ?? 0) ?? '?'}`)
      .sort();
  } finally {
    nl.close();
  }
}

async function ping(ns: string, ip: string, count = 1): Promise<boolean> {
  const r = await exec(inNs(ns, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '5', ip]));
  return r.code === 0;
}

/** Replies of a background `ping -D` with their receive times (seconds since the epoch). */
function replyTimes(out: string, from: string): number[] {
  const re = new RegExp(`^\\[(\\d+\\.\\d+)\\] \\d+ bytes from ${from.replace(/\./g, '\\.')}`, 'gm');
  return [...out.matchAll(re)].map((m) => Number(m[1]));
}

// ---- the suites -----------------------------------------------------------------------------------------

before(() => {
  // Fail, never skip: without root nothing here can be tested.
  assert.equal(process.getuid?.(), 0, 'test/datapath-xnode.test.ts needs root (namespaces, BPF, bpffs)');
  for (const tool of ['tcpdump', 'curl', 'ping']) {
    assert.ok(fs.existsSync(`/usr/bin/${tool}`) || fs.existsSync(`/usr/sbin/${tool}`) || fs.existsSync(`/bin/${tool}`), `${tool} is needed`);
  }
  buildUnderlay();
});

after(async () => {
  await Promise.all([...children].map(stopProcess));
  for (const name of [...createdNs].reverse()) {
    try {
      Netns.delete(name);
    } catch (err) {
      console.error(`cleanup: ${String(err)}`);
    }
  }
  for (const dir of bpfRoots) fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const UDP_ECHO = `const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(9090, '0.0.0.0', () => console.log('ready'))`;
const udpClient = (ip: string, size: number): string =>
  `const c = require('dgram').createSocket('udp4'); const m = Buffer.alloc(${size}, 'u'); ` +
  `c.on('message', (r) => { console.log(r.equals(m) ? 'echo ok' : 'echo differs'); process.exit(0); }); ` +
  `c.send(m, 9090, '${ip}'); setTimeout(() => process.exit(1), 15000);`;
const HTTP_SERVER = `require('http').createServer((q, s) => s.end(Buffer.alloc(Number(q.url.slice(1)) || 5, 'x'))).listen(8080, '0.0.0.0', () => console.log('ready'))`;

function suite(mode: RoutingMode): void {
  describe(`two nodes, ${mode} routing`, { timeout: 120_000 }, () => {
    let n1: Node;
    let n2: Node;

    before(() => {
      n1 = buildNode(mode, 1);
      n2 = buildNode(mode, 2);
      n1.ns.run(() => n1.dp.upsertRemoteNode(remoteSpec(n2)));
      n2.ns.run(() => n2.dp.upsertRemoteNode(remoteSpec(n1)));
    });

    after(() => {
      for (const n of [n1, n2]) {
        n?.dp.stop();
        n?.ns.close();
      }
    });

    test('start() sets up the mode: devices, attachments, MTU, ipcache and routes', () => {
      const tunnel = mode === 'tunnel';
      assert.equal(n1.dp.routingMode, mode);
      assert.equal(n1.dp.podMtu, tunnel ? 1450 : 1500);
      const att = n1.ns.run(() => n1.dp.attachments()).map((a) => `${a.ifname} ${a.direction} ${a.progName}`);
      const dev = tunnel ? VXLAN_DEV : 'eth0';
      const prog = tunnel ? 'overlay' : 'netdev';
      for (const want of [`tendril_host egress cil_from_host`, `${dev} ingress cil_from_${prog}`, `${dev} egress cil_to_${prog}`,
        `${n1.pod.hostIfName} ingress cil_from_container`]) {
        assert.ok(att.includes(want), `${want} in ${JSON.stringify(att)}`);
      }
      assert.ok(!att.some((a) => a.startsWith(`${n1.pod.hostIfName} egress`)), `nothing on the egress of a pod's veth: ${JSON.stringify(att)}`);
      const vx = n1.ns.run(() => {
        const nl = Netlink.open();
        try {
          return nl.getLink(VXLAN_DEV);
        } finally {
          nl.close();
        }
      });
      if (tunnel) assert.equal(vx?.mtu, 1450);
      else assert.equal(vx, undefined);
      const ipc = n1.dp.dumpIpcache();
      const ep = tunnel ? { tunnelEndpoint: n2.ip, flags: 1 } : { flags: 0 };
      assert.deepEqual(ipc, [
        { prefix: `10.210.1.1/32`, identity: 1, flags: 0 },
        { prefix: `${n1.pod.ip}/32`, identity: n1.pod.identity, flags: 0 },
        { prefix: `10.210.2.0/24`, identity: 2, ...ep },
        { prefix: `10.210.2.1/32`, identity: 6, ...ep },
        { prefix: `10.210.2.2/32`, identity: 4, ...ep },
        { prefix: `${n1.ip}/32`, identity: 1, flags: 0 },
        { prefix: `${n2.ip}/32`, identity: 6, flags: 0 },
      ]);
      const want = tunnel ? '10.210.2.0/24 dev tendril_host' : `10.210.2.0/24 via ${n2.ip} dev eth0`;
      assert.ok(routesOf(n1).includes(want), `${want} in ${JSON.stringify(routesOf(n1))}`);
    });

    test('pod -> pod across nodes: ping both ways', async () => {
      assert.ok(await ping(n1.pod.ns, n2.pod.ip, 3), `${n1.pod.name} -> ${n2.pod.name}`);
      assert.ok(await ping(n2.pod.ns, n1.pod.ip, 3), `${n2.pod.name} -> ${n1.pod.name}`);
    });

    test('pod -> pod across nodes: TCP (HTTP, 5 bytes and 4 MB)', async () => {
      const server = await startProcess(inNs(n2.pod.ns, ['node', '-e', HTTP_SERVER]), /ready/);
      try {
        for (const size of [5, 4 << 20]) {
          const r = await exec(inNs(n1.pod.ns, ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${n2.pod.ip}:8080/${size}`]));
          assert.equal(r.stdout, `200 ${size}`, `curl: ${r.stderr}`);
        }
      } finally {
        await stopProcess(server.proc);
      }
    });

    test('pod -> pod across nodes: UDP (one datagram, and one of 8000 bytes sent as IP fragments)', async () => {
      const server = await startProcess(inNs(n2.pod.ns, ['node', '-e', UDP_ECHO]), /ready/);
      try {
        for (const size of [64, 8000]) {
          const r = await exec(inNs(n1.pod.ns, ['node', '-e', udpClient(n2.pod.ip, size)]));
          assert.equal(r.stdout.trim(), 'echo ok', `UDP ${size} bytes: exit ${r.code} ${r.stderr}`);
        }
      } finally {
        await stopProcess(server.proc);
      }
    });

    test('pod -> remote node IP, node -> remote pod, pod -> remote router IP', async () => {
      assert.ok(await ping(n1.pod.ns, n2.ip, 2), 'pod -> remote node IP');
      assert.ok(await ping(n1.nsName, n2.pod.ip, 2), 'node -> remote pod');
      assert.ok(await ping(n1.pod.ns, n2.routerIP, 2), 'pod -> remote router IP');
    });

    test('ingress policy across nodes: the source identity comes from the VNI (tunnel) or the ipcache (native); allow, deny', async () => {
      const src = n1.pod;
      const dst = n2.pod;
      const icmpFrom = (identity: number, deny = false): PolicyMapEntry => ({ direction: 'ingress', identity, protocol: 1, port: 0, portPrefixLen: 0, deny });
      const set = (entries: PolicyMapEntry[], ingressEnforced = true): void => {
        n2.dp.setEndpointPolicy(dst.endpoint, { ingressEnforced, egressEnforced: false, entries });
      };
      // Nothing on the wire names the source in native mode: the receiving node's ipcache must know the pod.
      if (mode === 'native') n2.dp.ipcacheUpsert(src.ip, { identity: src.identity });
      try {
        set([]);
        assert.ok(!(await ping(src.ns, dst.ip)), 'enforced, nothing allowed');
        set([icmpFrom(src.identity)]);
        assert.ok(await ping(src.ns, dst.ip), `allowed for identity ${src.identity}`);
        const denied = (): number => n2.dp.metrics().find((m) => m.reason === 181 && m.direction === 'ingress')?.packets ?? 0;
        const before = denied();
        set([icmpFrom(0), icmpFrom(src.identity, true)]);
        assert.ok(!(await ping(src.ns, dst.ip)), `denied for identity ${src.identity}`);
        assert.ok(denied() > before, 'drop 181 counted on the receiving node');
        assert.ok(await ping(n1.nsName, dst.ip), 'the wildcard still allows the remote node');
      } finally {
        set([], false);
        if (mode === 'native') n2.dp.ipcacheDelete(src.ip);
      }
      assert.ok(await ping(src.ns, dst.ip), 'open again');
    });

    if (mode === 'tunnel') {
      test('the underlay carries VXLAN on UDP 8472 with VNI = source pod identity', async () => {
        const frames = await capture(n1.port, `udp port ${VXLAN_PORT}`, async () => {
          assert.ok(await ping(n1.pod.ns, n2.pod.ip, 2));
        });
        const vx = frames.map(parseVxlan).filter((f): f is VxlanFrame => f !== undefined);
        const req = vx.filter((f) => f.inner.src === n1.pod.ip && f.inner.dst === n2.pod.ip);
        const rep = vx.filter((f) => f.inner.src === n2.pod.ip && f.inner.dst === n1.pod.ip);
        assert.ok(req.length >= 2 && rep.length >= 2, `captured ${vx.length} VXLAN frames`);
        for (const f of req) assert.deepEqual([f.outer.src, f.outer.dst, f.dport, f.vni], [n1.ip, n2.ip, VXLAN_PORT, n1.pod.identity]);
        for (const f of rep) assert.deepEqual([f.outer.src, f.outer.dst, f.dport, f.vni], [n2.ip, n1.ip, VXLAN_PORT, n2.pod.identity]);
      });
    } else {
      test('the underlay carries the plain pod addresses, no encapsulation', async () => {
        const frames = await capture(n1.port, 'icmp or udp', async () => {
          assert.ok(await ping(n1.pod.ns, n2.pod.ip, 2));
        });
        const ips = frames.map((f) => ip4At(f, 14)).filter((p): p is Ip4 => p !== undefined);
        assert.equal(ips.filter((p) => p.proto === 17).length, 0, 'no UDP (no VXLAN) on the underlay');
        assert.ok(ips.filter((p) => p.proto === 1 && p.src === n1.pod.ip && p.dst === n2.pod.ip).length >= 2, 'requests pod -> pod');
        assert.ok(ips.filter((p) => p.proto === 1 && p.src === n2.pod.ip && p.dst === n1.pod.ip).length >= 2, 'replies pod -> pod');
      });
    }

    test('removeRemoteNode() stops traffic, upsertRemoteNode() restores it', async (t) => {
      const pinger = await startProcess(inNs(n1.pod.ns, ['ping', '-n', '-D', '-O', '-i', '0.05', '-W', '1', n2.pod.ip]), /bytes from/);
      let removedAt = 0;
      let restoredAt = 0;
      let removeMs = 0;
      let upsertMs = 0;
      try {
        await until('replies before the removal', () => replyTimes(pinger.out(), n2.pod.ip).length >= 3);
        removedAt = Date.now() / 1000;
        const t0 = performance.now();
        assert.equal(n1.ns.run(() => n1.dp.removeRemoteNode(n2.name)), true);
        removeMs = performance.now() - t0;
        assert.equal(n1.dp.dumpIpcache().filter((e) => e.prefix.startsWith('10.210.2.') || e.prefix === `${n2.ip}/32`).length, 0, 'ipcache entries gone');
        assert.ok(!routesOf(n1).some((r) => r.startsWith('10.210.2.0/24')), 'route gone');
        assert.equal(await ping(n1.pod.ns, n2.pod.ip), false, 'no reply while the node is removed');
        restoredAt = Date.now() / 1000;
        const t1 = performance.now();
        n1.ns.run(() => n1.dp.upsertRemoteNode(remoteSpec(n2)));
        upsertMs = performance.now() - t1;
        await until('a reply after upsertRemoteNode()', () => replyTimes(pinger.out(), n2.pod.ip).some((x) => x >= restoredAt));
      } finally {
        await stopProcess(pinger.proc);
      }
      const times = replyTimes(pinger.out(), n2.pod.ip);
      const whileRemoved = times.filter((x) => x > removedAt && x < restoredAt);
      const lastBeforeRestore = Math.max(...times.filter((x) => x < restoredAt)) - removedAt;
      const firstAfterRestore = Math.min(...times.filter((x) => x >= restoredAt)) - restoredAt;
      t.diagnostic(
        `${mode}: ${whileRemoved.length} replies after removeRemoteNode() (last reply at ${(lastBeforeRestore * 1000).toFixed(1)} ms ` +
          `relative to it), first reply ${(firstAfterRestore * 1000).toFixed(1)} ms after upsertRemoteNode() (ping every 50 ms); ` +
          `the calls took ${removeMs.toFixed(2)} / ${upsertMs.toFixed(2)} ms`,
      );
    });

    test('a node replaced under the same IP (new underlay MAC) is reachable right after it is re-added', async () => {
      assert.ok(await ping(n1.pod.ns, n2.pod.ip, 1), 'n1 has resolved n2 on the underlay');
      n1.ns.run(() => n1.dp.removeRemoteNode(n2.name));
      // The "new" n2: same IP, another MAC. Its own routes on eth0 go with the link and come back with the upsert.
      const nl = Netlink.openIn(n2.ns);
      try {
        nl.setLink('eth0', { up: false });
        nl.setLink('eth0', { mac: randomMac() });
        nl.setLink('eth0', { up: true });
      } finally {
        nl.close();
      }
      n2.ns.run(() => n2.dp.upsertRemoteNode(remoteSpec(n1)));
      n1.ns.run(() => n1.dp.upsertRemoteNode(remoteSpec(n2)));
      assert.ok(await ping(n1.pod.ns, n2.pod.ip, 1), 'pod -> pod on the replaced node, first try');
    });

    test('upsertRemoteNode() replaces a changed pod CIDR and is idempotent', () => {
      const moved = { ...remoteSpec(n2), podCIDRs: ['10.211.2.0/24'] };
      n1.ns.run(() => n1.dp.upsertRemoteNode(moved));
      n1.ns.run(() => n1.dp.upsertRemoteNode(moved));
      const prefixes = n1.dp.dumpIpcache().map((e) => e.prefix);
      assert.ok(prefixes.includes('10.211.2.0/24') && !prefixes.includes('10.210.2.0/24'), JSON.stringify(prefixes));
      const routes = routesOf(n1);
      assert.ok(routes.some((r) => r.startsWith('10.211.2.0/24')) && !routes.some((r) => r.startsWith('10.210.2.0/24')), JSON.stringify(routes));
      n1.ns.run(() => n1.dp.upsertRemoteNode(remoteSpec(n2)));
      assert.ok(n1.dp.dumpIpcache().some((e) => e.prefix === '10.210.2.0/24'));
    });

    test('restart: pinned state keeps forwarding, a node that vanished meanwhile is pruned', async (t) => {
      // A third node n1 learns of, then "loses" while its agent is down.
      const n3: RemoteNode = { name: 'n3', nodeIP: '192.168.77.13', podCIDRs: ['10.210.3.0/24'], routerIP: '10.210.3.1' };
      n1.ns.run(() => n1.dp.upsertRemoteNode(n3));
      assert.ok(routesOf(n1).some((r) => r.startsWith('10.210.3.0/24')));

      const pinger = await startProcess(inNs(n1.pod.ns, ['ping', '-n', '-D', '-O', '-i', '0.05', '-W', '1', n2.pod.ip]), /bytes from/);
      let restarted = 0;
      try {
        await until('replies before the stop', () => replyTimes(pinger.out(), n2.pod.ip).length >= 3);
        n1.dp.stop();
        await sleep(500); // the agent is "down": nothing of ours runs, pinned programs forward
        const dp = new NodeDatapath(n1.cfg);
        n1.ns.run(() => {
          // As the agent does: start, re-adopt endpoints, prune to the nodes the store knows, upsert them.
          dp.start();
          dp.restoreEndpoint(n1.pod.endpoint);
          assert.deepEqual(dp.pruneRemoteNodes([n2.name]), ['n3']);
          dp.upsertRemoteNode(remoteSpec(n2));
        });
        n1.dp = dp;
        restarted = Date.now() / 1000;
        await until('a reply after the restart', () => replyTimes(pinger.out(), n2.pod.ip).some((x) => x > restarted));
      } finally {
        await stopProcess(pinger.proc);
      }
      const out = pinger.out();
      const seqs = [...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
      // -O says "no answer yet" of a reply slower than the 50 ms interval: reported, while a lost ping is one never answered.
      const unanswered = (out.match(/no answer yet/g) ?? []).length;
      const answered = new Set([...out.matchAll(/bytes from .*icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
      const [first, last] = [Math.min(...answered), Math.max(...answered)];
      const lost = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter((q) => !answered.has(q));
      t.diagnostic(`${mode}: ${replyTimes(out, n2.pod.ip).length} replies, ${unanswered} not answered within 50 ms across stop/start (seq ${Math.min(...seqs)}-${Math.max(...seqs)}), restarted at ${restarted}`);
      assert.deepEqual(lost, [], 'no ping lost across the restart');
      const ipc = n1.dp.dumpIpcache().map((e) => e.prefix);
      for (const p of ['10.210.3.0/24', '10.210.3.1/32', '192.168.77.13/32']) assert.ok(!ipc.includes(p), `${p} pruned`);
      assert.ok(ipc.includes('10.210.2.0/24'));
      assert.ok(!routesOf(n1).some((r) => r.startsWith('10.210.3.0/24')), 'route of n3 pruned');
      assert.deepEqual(n1.dp.remoteNodes().map((n) => n.name), ['n2']);
      assert.ok(await ping(n1.pod.ns, n2.pod.ip, 2), 'still forwarding after the restart');
    });

    test('restart of both nodes in the other routing mode: devices, programs and routes follow', async () => {
      const other: RoutingMode = mode === 'tunnel' ? 'native' : 'tunnel';
      for (const n of [n1, n2]) {
        n.dp.stop();
        // NodePort off: in tunnel mode the native device then carries none of our programs (they are detached).
        n.cfg = { ...n.cfg, routing: other, nodePort: false };
        n.dp = new NodeDatapath(n.cfg);
        n.ns.run(() => {
          n.dp.start();
          n.dp.restoreEndpoint(n.pod.endpoint);
        });
      }
      n1.ns.run(() => n1.dp.upsertRemoteNode(remoteSpec(n2)));
      n2.ns.run(() => n2.dp.upsertRemoteNode(remoteSpec(n1)));
      const att = n1.ns.run(() => n1.dp.attachments()).map((a) => `${a.ifname} ${a.direction} ${a.progName}`);
      const hasVxlan = n1.ns.run(() => {
        const nl = Netlink.open();
        try {
          return nl.getLink(VXLAN_DEV) !== undefined;
        } finally {
          nl.close();
        }
      });
      assert.equal(hasVxlan, other === 'tunnel', 'tendril_vxlan exists only in tunnel mode');
      assert.equal(att.some((a) => a.startsWith('eth0 ')), other === 'native', `eth0 programs only in native mode (NodePort off): ${JSON.stringify(att)}`);
      const want = other === 'tunnel' ? '10.210.2.0/24 dev tendril_host' : `10.210.2.0/24 via ${n2.ip} dev eth0`;
      assert.ok(routesOf(n1).includes(want), `${want} in ${JSON.stringify(routesOf(n1))}`);
      assert.equal(n1.dp.dumpIpcache().find((e) => e.prefix === '10.210.2.0/24')?.tunnelEndpoint, other === 'tunnel' ? n2.ip : undefined);
      assert.ok(await ping(n1.pod.ns, n2.pod.ip, 2), `pod -> pod after switching to ${other}`);
      assert.ok(await ping(n2.nsName, n1.pod.ip, 2), `node -> remote pod after switching to ${other}`);
    });
  });
}

suite('tunnel');
suite('native');
