// Integration: BPF masquerading on more than the native device (--masquerade-interfaces): a node with two underlay
// devices, eth0 (the native one, default route) and eth1 (a second network), each with an "external" host of its
// own namespace that reports the source address it sees. Pod traffic leaves each device with that device's address,
// and its replies come back to the pod. Root; every namespace, bpffs directory and process is the test's own and
// removed in after(), also on failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { children, exec, inNs, startProcess, stopProcess } from './lib/proc.js';
import { addTestPod, type TestPod, deleteNamespaces } from './lib/pods.js';
import { seenIp, sh, tcpSeen, udpSeen } from './lib/external.js';
import { NodeDatapath, type NodeDatapathConfig } from '../src/datapath/index.js';
import { Masquerade, masqConfig } from '../src/nat/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import { rootLogger } from '../src/util/log.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = `tdlt-${process.pid}-mqif`;
const NODE_NS = `${PREFIX}-n`;
const BPF_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-mqif`;
const SUBNET = '10.236.0';
// Per device: the node's address on it, the external host behind it.
const NETS = [
  { dev: 'eth0', peer: 'exa0', ns: `${PREFIX}-a`, node: '192.168.93.10', ext: '192.168.93.200' },
  { dev: 'eth1', peer: 'exb0', ns: `${PREFIX}-b`, node: '192.168.94.10', ext: '192.168.94.200' },
] as const;

const createdNs: string[] = [];
let nodeNs: Netns;
let dp: NodeDatapath;
let masq: Masquerade;
let pod: TestPod;

/* TCP and UDP 8080 answer "seen <ip>:<port>" with the peer address they saw. */
const EXT_SERVER = `
const net = require('net');
net.createServer((c) => { c.on('error', () => {}); c.end('seen ' + c.remoteAddress + ':' + c.remotePort); }).listen(8080, '0.0.0.0');
const u = require('dgram').createSocket('udp4');
u.on('message', (m, r) => u.send('seen ' + r.address + ':' + r.port, r.port, r.address));
u.bind(8080, () => setTimeout(() => console.log('ready'), 100));
`;

/** A Masquerade for `--masquerade-interfaces ifaces` and the node datapath it configures (started by the caller). */
function newNode(ifaces: string): void {
  masq = new Masquerade(masqConfig({ masqueradeInterfaces: ifaces }), { nativeDev: 'eth0', podCidr: `${SUBNET}.0/24` }, rootLogger({ level: 'silent' }));
  const dcfg: NodeDatapathConfig = {
    podCidr: `${SUBNET}.0/24`,
    routerIP: `${SUBNET}.1`,
    nodeIP: NETS[0].node,
    nativeDev: 'eth0',
    bpfRoot: BPF_ROOT,
    objDir: path.join(root, 'build/bpf'),
    masquerade: masq.datapathConfig()!,
  };
  dp = new NodeDatapath(dcfg);
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-masq-ifaces.test.ts needs root (namespaces, BPF, bpffs)');
  createdNs.push(NODE_NS);
  nodeNs = Netns.create(NODE_NS);
  const nl = Netlink.openIn(nodeNs);
  try {
    nl.setLink('lo', { up: true });
    for (const n of NETS) {
      nl.createVeth({ name: n.dev, peerName: n.peer });
      nl.addAddress(nl.getLink(n.dev)!.index, `${n.node}/24`);
      nl.setLink(n.dev, { up: true });
    }
  } finally {
    nl.close();
  }
  for (const n of NETS) {
    createdNs.push(n.ns);
    Netns.create(n.ns).close();
    await sh(NODE_NS, 'ip', 'link', 'set', n.peer, 'netns', n.ns);
    await sh(n.ns, 'ip', 'link', 'set', 'lo', 'up');
    await sh(n.ns, 'ip', 'addr', 'add', `${n.ext}/24`, 'dev', n.peer);
    await sh(n.ns, 'ip', 'link', 'set', n.peer, 'up');
  }
  await sh(NODE_NS, 'ip', 'route', 'add', 'default', 'via', NETS[0].ext);

  newNode('eth0,eth1');
  nodeNs.run(() => {
    dp.start();
    masq.start(dp);
  });
  createdNs.push(`${PREFIX}-p10`);
  pod = addTestPod({ nodeNs, dp, podNs: `${PREFIX}-p10`, subnet: SUBNET, host: 10, hostIfName: 'lxcmq10', identity: 13000 });
  for (const n of NETS) await startProcess(inNs(n.ns, ['node', '-e', EXT_SERVER]), /ready/);
});

after(async () => {
  await Promise.all([...children].map(stopProcess));
  masq?.stop();
  dp?.stop();
  nodeNs?.close();
  deleteNamespaces(createdNs);
  fs.rmSync(BPF_ROOT, { recursive: true, force: true });
});

test('--masquerade-interfaces eth0,eth1: a pod\'s TCP and UDP leave each device with that device\'s address; replies reach the pod', async () => {
  for (const n of NETS) {
    assert.equal(seenIp(await tcpSeen(pod.ns, n.ext)), n.node, `TCP out of ${n.dev}`);
    assert.equal(seenIp(await udpSeen(pod.ns, n.ext)), n.node, `UDP out of ${n.dev}`);
  }
  const nat = dp.natList();
  for (const n of NETS) {
    assert.ok(nat.some((e) => e.proto === 'TCP' && e.direction === 'OUT' && e.src === pod.ip && e.dst === n.ext && e.toAddr === n.node), `OUT entry via ${n.dev} in ${JSON.stringify(nat)}`);
    assert.ok(nat.some((e) => e.proto === 'TCP' && e.direction === 'IN' && e.dst === n.node && e.toAddr === pod.ip), `IN entry via ${n.dev}`);
  }
  assert.deepEqual(masq.status().devices, ['eth0', 'eth1']);
});

test('a masquerade interface that does not exist fails start() with a clear error', () => {
  const bad = new NodeDatapath({
    podCidr: `${SUBNET}.0/24`,
    routerIP: `${SUBNET}.1`,
    nodeIP: NETS[0].node,
    nativeDev: 'eth0',
    bpfRoot: BPF_ROOT,
    objDir: path.join(root, 'build/bpf'),
    masquerade: { ...masq.datapathConfig()!, interfaces: ['eth0', 'nosuch9'] },
  });
  assert.throws(() => nodeNs.run(() => bad.start()), /masquerade interface "nosuch9" not found/);
});

test('a device dropped from --masquerade-interfaces loses its programs at the next start; the others keep masquerading', async () => {
  const onDev = (d: NodeDatapath, dev: string) => nodeNs.run(() => d.attachments()).filter((a) => a.ifname === dev).map((a) => `${a.direction}:${a.progName}`).sort();
  assert.deepEqual(onDev(dp, 'eth1'), ['egress:cil_to_netdev', 'ingress:cil_from_netdev'], 'eth1 masqueraded before');
  masq.stop();
  dp.stop();
  newNode('eth0');
  nodeNs.run(() => {
    dp.start();
    masq.start(dp);
  });
  assert.deepEqual(onDev(dp, 'eth1'), [], 'nothing of ours left on eth1');
  for (const dir of ['ingress', 'egress']) assert.equal(fs.existsSync(path.join(BPF_ROOT, 'links', `eth1-${dir}`)), false, `eth1-${dir} pin removed`);
  assert.deepEqual(onDev(dp, 'eth0'), ['egress:cil_to_netdev', 'ingress:cil_from_netdev'], 'eth0 keeps its programs');
  assert.equal(seenIp(await tcpSeen(pod.ns, NETS[0].ext)), NETS[0].node, 'TCP out of eth0 still masqueraded');
  // eth1 no longer translates: the far host would see the pod's own address, and has no route back to it.
  assert.notEqual(seenIp(await tcpSeen(pod.ns, NETS[1].ext)), NETS[1].node, 'TCP out of eth1 not masqueraded any more');
});
