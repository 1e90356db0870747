// Integration: how a node's datapath puts its programs on and takes them off. A pod added on the CNI path
// (addEndpointAsync) enforces through a tc filter at once and is switched to a pinned tcx link when the node is quiet;
// a start() that fails half-way unwinds what it attached. Root; every namespace and bpffs directory is the test's own
// and removed in after(), also on failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec, inNs, sleep } from './lib/proc.js';
import { addTestPod, type TestPod } from './lib/pods.js';
import { NodeDatapath, type Attachment, type NodeDatapathConfig } from '../src/datapath/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = `tdlt-${process.pid}-lc`;
const BPF_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-lifecycle`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-lc-`));
/** DROP_INVALID_SIP as a positive code. */
const INVALID_SIP = 132;
/** An address pod p2 also holds, which is not its endpoint's: cil_from_container drops it as a source. */
const SPOOFED = '10.231.0.99';

const createdNs: string[] = [];
const opened: Netns[] = [];
const started: NodeDatapath[] = [];
let nodeNs: Netns;
let nodeCfg: NodeDatapathConfig;
let dp: NodeDatapath;
let p1: TestPod;
let p2: TestPod;

function makeNs(name: string): Netns {
  createdNs.push(name);
  const ns = Netns.create(name);
  opened.push(ns);
  return ns;
}

/** A node namespace with an "underlay" eth0 of its own (a veth pair, no uplink). */
function makeNode(suffix: string, nodeIP: string): Netns {
  const ns = makeNs(`${PREFIX}-${suffix}`);
  const nl = Netlink.openIn(ns);
  try {
    nl.setLink('lo', { up: true });
    nl.createVeth({ name: 'eth0', peerName: 'eth0p' });
    nl.addAddress(nl.getLink('eth0')!.index, `${nodeIP}/24`);
    nl.setLink('eth0p', { up: true });
    nl.setLink('eth0', { up: true });
  } finally {
    nl.close();
  }
  return ns;
}

function config(bpfRoot: string, subnet: string, nodeIP: string, stateFile?: string): NodeDatapathConfig {
  return {
    podCidr: `${subnet}.0/24`,
    routerIP: `${subnet}.1`,
    nodeIP,
    nativeDev: 'eth0',
    bpfRoot,
    objDir: path.join(root, 'build/bpf'),
    ...(stateFile !== undefined ? { stateFile } : {}),
  };
}

function attachmentsOf(ns: Netns, d: NodeDatapath, ifname?: string): Array<Pick<Attachment, 'ifname' | 'attach' | 'direction' | 'progName' | 'progId'>> {
  return ns
    .run(() => d.attachments())
    .filter((a) => ifname === undefined || a.ifname === ifname)
    .map((a) => ({ ifname: a.ifname, attach: a.attach, direction: a.direction, progName: a.progName, progId: a.progId }));
}

/** Packets dropped as coming from an address that is not the pod's (anti-spoofing in cil_from_container). */
function spoofDrops(): number {
  return dp.metrics().find((m) => m.reason === INVALID_SIP && m.direction === 'egress')?.packets ?? 0;
}

/** One ping from pod a to pod b; true when answered. */
async function ping(a: TestPod, b: TestPod, from?: string): Promise<boolean> {
  const r = await exec(inNs(a.ns, ['ping', '-c', '1', '-W', '1', ...(from ? ['-I', from] : []), b.ip]));
  return r.code === 0;
}

/** Restarts the node's datapath with another switch quiet time; the pods are re-adopted (on tcx). */
function restart(tcxSwitchQuietMs?: number): void {
  dp.stop();
  dp = new NodeDatapath({ ...nodeCfg, ...(tcxSwitchQuietMs !== undefined ? { tcxSwitchQuietMs } : {}) });
  started.push(dp);
  nodeNs.run(() => {
    dp.start();
    dp.restoreEndpoint(p1.endpoint);
    dp.restoreEndpoint(p2.endpoint);
  });
}

/** p2 taken off and added again on the CNI path: on a tc filter now. */
function rebridgeP2(): void {
  nodeNs.run(() => dp.removeEndpoint(p2.endpoint));
  nodeNs.run(() => void dp.addEndpointAsync(p2.endpoint));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-lifecycle.test.ts needs root (namespaces, BPF, bpffs)');
  nodeNs = makeNode('n', '192.168.89.10');
  nodeCfg = config(BPF_ROOT, '10.231.0', '192.168.89.10');
  dp = new NodeDatapath(nodeCfg);
  started.push(dp);
  nodeNs.run(() => dp.start());
  for (const host of [10, 20]) createdNs.push(`${PREFIX}-p${host}`);
  p1 = addTestPod({ nodeNs, dp, podNs: `${PREFIX}-p10`, subnet: '10.231.0', host: 10, hostIfName: 'lxclc10', identity: 12001 });
  p2 = addTestPod({ nodeNs, dp, podNs: `${PREFIX}-p20`, subnet: '10.231.0', host: 20, hostIfName: 'lxclc20', identity: 12002 });
});

after(() => {
  for (const d of started) d.stop();
  for (const ns of opened) ns.close();
  for (const name of [...createdNs].reverse()) {
    try {
      if (Netns.exists(name)) Netns.delete(name);
    } catch (err) {
      console.error(`cleanup: ${String(err)}`);
    }
  }
  for (const d of [BPF_ROOT, `${BPF_ROOT}-2`]) fs.rmSync(d, { recursive: true, force: true });
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('addEndpoint() attaches cil_from_container on the ingress of the veth only, as a pinned tcx link', () => {
  assert.deepEqual(
    attachmentsOf(nodeNs, dp, p1.endpoint.hostIfName).map((a) => `${a.attach} ${a.direction} ${a.progName}`),
    ['tcx ingress cil_from_container'],
  );
  assert.ok(fs.existsSync(path.join(BPF_ROOT, 'links', `${p1.endpoint.hostIfName}-ingress`)));
  assert.ok(!fs.existsSync(path.join(BPF_ROOT, 'links', `${p1.endpoint.hostIfName}-egress`)));
});

test('addEndpointAsync() starts a pod on a tc filter that enforces: cil_from_container drops its spoofed source', async () => {
  // An hour of quiet needed before the switch: the filter is what runs for the whole test.
  restart(3_600_000);
  const ifname = p2.endpoint.hostIfName;
  rebridgeP2();
  assert.deepEqual(
    attachmentsOf(nodeNs, dp, ifname).map((a) => `${a.attach} ${a.direction} ${a.progName}`),
    ['tc ingress cil_from_container'],
  );
  assert.equal(dp.tcxSwitchStats().bridged, 1);
  const podNs = Netns.open(`/var/run/netns/${p2.ns}`);
  opened.push(podNs);
  const pod = Netlink.openIn(podNs);
  try {
    pod.addAddress(pod.getLink('eth0')!.index, `${SPOOFED}/32`);
  } finally {
    pod.close();
  }
  // The stack would forward the spoofed packet; the filter drops it.
  const drops0 = spoofDrops();
  assert.equal(await ping(p2, p1, SPOOFED), false);
  assert.ok(spoofDrops() > drops0, 'the filter dropped the spoofed packet');
  assert.ok(await ping(p2, p1), 'the pod reaches the other');
  assert.ok(await ping(p1, p2));
  assert.equal(attachmentsOf(nodeNs, dp, ifname)[0]?.attach, 'tc', 'still the filter');
});

test('a bridged endpoint is switched to a pinned tcx link once the node is quiet, and the filter goes', async () => {
  restart();
  const ifname = p2.endpoint.hostIfName;
  rebridgeP2();
  assert.deepEqual(attachmentsOf(nodeNs, dp, ifname).map((a) => a.attach), ['tc']);
  await waitFor('the switch to tcx', () => dp.tcxSwitchStats().bridged === 0);
  // In-process, inside Netns.run(): libuv's threads are in another namespace, so the attach ran on this thread.
  assert.deepEqual(dp.tcxSwitchStats(), { bridged: 0, switched: 1, failed: 0, offThread: 0 });
  assert.deepEqual(
    attachmentsOf(nodeNs, dp, ifname).map((a) => `${a.attach} ${a.direction} ${a.progName}`),
    ['tcx ingress cil_from_container'],
    'the filter is gone once the link runs',
  );
  assert.ok(fs.existsSync(path.join(BPF_ROOT, 'links', `${ifname}-ingress`)));
  const drops0 = spoofDrops();
  assert.equal(await ping(p2, p1, SPOOFED), false);
  assert.ok(spoofDrops() > drops0, 'the tcx link drops the spoofed packet');
  assert.ok(await ping(p2, p1));
  assert.ok(await ping(p1, p2));
});

test('NodeDatapath refuses a tcxSwitchQuietMs that is no integer number of ms', () => {
  for (const bad of [-1, 1.5, 2 ** 31]) {
    assert.throws(() => new NodeDatapath({ ...nodeCfg, tcxSwitchQuietMs: bad }), { code: 'TENDRIL_ERR_DATAPATH_CONFIG', message: /tcxSwitchQuietMs/ });
  }
});

test('removeEndpoint() of a bridged endpoint leaves nothing on the veth, and nothing is switched later', async () => {
  const ifname = p2.endpoint.hostIfName;
  rebridgeP2();
  const before = dp.tcxSwitchStats();
  nodeNs.run(() => dp.removeEndpoint(p2.endpoint));
  assert.deepEqual(attachmentsOf(nodeNs, dp, ifname), []);
  assert.equal(dp.tcxSwitchStats().bridged, 0);
  await sleep(400);
  assert.deepEqual(attachmentsOf(nodeNs, dp, ifname), [], 'still nothing after the quiet time');
  assert.equal(dp.tcxSwitchStats().switched, before.switched);
  assert.ok(!fs.existsSync(path.join(BPF_ROOT, 'links', `${ifname}-ingress`)));
  nodeNs.run(() => dp.addEndpoint(p2.endpoint));
  assert.ok(await ping(p1, p2));
});

test('start() unwinds on a later failure: a new node keeps no attachment, a restarted one keeps its programs', () => {
  const ns = makeNode('m', '192.168.90.10');
  const bpfRoot = `${BPF_ROOT}-2`;
  const stateFile = path.join(tmp, 'm', 'datapath.json');
  // The state file is written last (this node's own ipcache entries); a directory where its temporary file goes
  // makes that write fail after every attachment was made.
  const blocker = `${stateFile}.${process.pid}.tmp`;
  fs.mkdirSync(blocker, { recursive: true });
  const cfg = config(bpfRoot, '10.232.0', '192.168.90.10', stateFile);

  const fresh = new NodeDatapath(cfg);
  assert.throws(() => ns.run(() => fresh.start()), /EISDIR/);
  assert.deepEqual(attachmentsOf(ns, fresh), [], 'nothing attached after the failed start');
  assert.deepEqual(fs.readdirSync(path.join(bpfRoot, 'links')), [], 'no link pinned');

  fs.rmSync(blocker, { recursive: true });
  const first = new NodeDatapath(cfg);
  started.push(first);
  ns.run(() => first.start());
  const running = attachmentsOf(ns, first);
  assert.deepEqual(
    running.map((a) => `${a.ifname} ${a.attach} ${a.direction} ${a.progName}`),
    // The native device carries its programs in tunnel mode too (NodePort from outside, ARP for LoadBalancer IPs).
    ['eth0 tcx ingress cil_from_netdev', 'eth0 tcx egress cil_to_netdev', 'tendril_host tcx egress cil_from_host', 'tendril_vxlan tcx ingress cil_from_overlay', 'tendril_vxlan tcx egress cil_to_overlay'],
  );
  first.stop();

  // A restart that fails after switching the pinned links to its new programs switches them back.
  fs.mkdirSync(blocker);
  const restarted = new NodeDatapath(cfg);
  assert.throws(() => ns.run(() => restarted.start()), /EISDIR/);
  // (Names by ID are known to a started datapath only: compare what runs by program ID.)
  const hooks = (xs: typeof running): string[] => xs.map((a) => `${a.ifname} ${a.attach} ${a.direction} ${a.progId}`);
  assert.deepEqual(hooks(attachmentsOf(ns, restarted)), hooks(running), 'the programs of the earlier run still attached');
  fs.rmSync(blocker, { recursive: true });
  const again = new NodeDatapath(cfg);
  started.push(again);
  ns.run(() => again.start());
  const now = attachmentsOf(ns, again);
  assert.deepEqual(now.map((a) => a.progName), running.map((a) => a.progName));
  assert.ok(now.every((a, i) => a.progId !== running[i]!.progId), 'a successful restart runs its own programs');
});
