// Integration: the lab's outside (seed "Cilium Networking" §2.1–2.3) on a two-node lab, tunnel and native routing:
// an external host on the underlay (the seed's router VM at 192.168.10.200) routing a far network 10.0.0.0/16 with
// a host 10.0.1.10, what each of them sees of pod traffic (the agents masquerade in BPF; 10.0.0.0/16 is in their
// non-masquerade set), a change of the ip-masq-agent file taking effect without a restart, and `lab down` removing
// all of it.
// Root; every namespace is the test's own (run-unique lab names) and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { execCapture, labDown, labUp, loadLab, podAdd, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { externalAdd, masqSet, networkAdd, outsideNetns } from '../src/lab/outside.js';
import { masqFile } from '../src/lab/masq.js';
import { NETNS_DIR, WEBPOD_JS, labPaths, netnsPath } from '../src/lab/paths.js';
import { alive, spawnInNetns } from '../src/lab/procs.js';
import { ownPid, ownedPids } from '../src/lab/owned.js';
import { until } from './lib/proc.js';

const EXT_IP = '192.168.10.200';
const FAR_IP = '10.0.1.10';

/** HTTP GET from namespace `ns`; the web server's answer names the source address it saw ("RemoteAddr: IP:PORT"). */
function httpFrom(ns: string, ip: string, port = 80): string {
  return execCapture(ns, ['curl', '-s', '--max-time', '10', `http://${ip}:${port}/`]).stdout;
}

/** One UDP datagram (resent until answered); the answer names the source the server saw. */
function udpFrom(ns: string, ip: string, port = 80): string {
  const js =
    `const s = require('dgram').createSocket('udp4'); s.on('message', (m) => { process.stdout.write(m); process.exit(0); }); ` +
    `const send = () => s.send('hello', ${port}, '${ip}'); send(); setInterval(send, 300); setTimeout(() => process.exit(1), 10000);`;
  return execCapture(ns, [process.execPath, '-e', js]).stdout;
}

function remoteAddr(answer: string): string | undefined {
  return /RemoteAddr: ([\d.]+):\d+/.exec(answer)?.[1];
}

/** ICMP echo from `ns` to `ip` while tcpdump on host `seer`'s eth0 waits for the first echo request: its source. */
async function pingSeenBy(lab: string, ns: string, ip: string, seer: string): Promise<{ ok: boolean; source: string | undefined }> {
  const child = spawn('nsenter', [`--net=${netnsPath(outsideNetns(loadLab(lab), seer))}`, '--', 'tcpdump', '-i', 'eth0', '-nn', '-l', '-c', '1', 'icmp[icmptype] == icmp-echo'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    await until('tcpdump to listen', () => /listening on/.test(err) || child.exitCode !== null, 20_000);
    const ok = execCapture(ns, ['ping', '-c', '1', '-W', '5', ip]).status === 0;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
    clearTimeout(timer);
    return { ok, source: /IP ([\d.]+) > /.exec(out)?.[1] };
  } finally {
    child.kill();
  }
}

function suite(routing: RoutingMode): void {
  const LAB = `m${process.pid % 100000}${routing[0]}`;
  let p1: LabPod;
  let p2: LabPod;

  describe(`two nodes, ${routing} routing, an external host and a far network`, { timeout: 300_000 }, () => {
    before(async () => {
      await labDown(LAB);
      await labUp({ name: LAB, nodes: 2, routing, nonMasqueradeCidrs: ['10.0.0.0/16'] });
      await externalAdd(LAB, 'router', { ip: EXT_IP, serve: [80] });
      await networkAdd(LAB, 'far', { cidr: '10.0.0.0/16', via: 'router', hosts: [FAR_IP], serve: [80], routeBack: true });
      p1 = await podAdd(LAB, 'p1', { node: 'ctr', serve: 80 });
      p2 = await podAdd(LAB, 'p2', { node: 'w1', serve: 80 });
      // A server in node w1's own namespace, to see what a node sees of pod traffic (lab down ends it).
      const np = labPaths(LAB).node('w1');
      const pid = ownPid(LAB, spawnInNetns(np.netns, [process.execPath, WEBPOD_JS, '--name', 'node-w1', '--port', '8081'], `${np.dir}/webpod.log`));
      await until('the node server', () => fs.existsSync(`${np.dir}/webpod.log`) && fs.readFileSync(`${np.dir}/webpod.log`, 'utf8').includes('listening') && alive(pid), 20_000);
    });
    after(async () => {
      await labDown(LAB);
    });

    test('nodes route the far network via the external host; with --route-back it routes pod CIDRs via the nodes', () => {
      const st = loadLab(LAB);
      for (const n of st.nodes) assert.match(execCapture(n.netns, ['ip', 'route']).stdout, /^10\.0\.0\.0\/16 via 192\.168\.10\.200 dev eth0/m, n.name);
      const routes = execCapture(outsideNetns(st, 'router'), ['ip', 'route']).stdout;
      for (const n of st.nodes) assert.match(routes, new RegExp(`^${n.podCidr.replace(/\./g, '\\.')} via ${n.ip.replace(/\./g, '\\.')} dev eth0`, 'm'), routes);
      assert.match(execCapture(outsideNetns(st, 'router'), ['sysctl', '-n', 'net.ipv4.ip_forward']).stdout, /^1/);
      assert.match(execCapture(outsideNetns(st, FAR_IP), ['ip', 'route']).stdout, /^default via 10\.0\.0\.1 dev eth0/m);
    });

    test('a node reaches the external host and the far host with its own address (TCP, UDP, ping)', async () => {
      const ctr = loadLab(LAB).nodes[0]!;
      assert.equal(remoteAddr(httpFrom(ctr.netns, EXT_IP)), ctr.ip);
      assert.match(udpFrom(ctr.netns, EXT_IP), new RegExp(`^router: hello \\(RemoteAddr: ${ctr.ip.replace(/\./g, '\\.')}:\\d+\\)`));
      assert.equal(remoteAddr(httpFrom(ctr.netns, FAR_IP)), ctr.ip);
      assert.match(udpFrom(ctr.netns, FAR_IP), /^far-h1: hello/);
      assert.deepEqual(await pingSeenBy(LAB, ctr.netns, EXT_IP, 'router'), { ok: true, source: ctr.ip });
    });

    test('every node\'s agent reads its ip-masq-agent file', () => {
      for (const n of loadLab(LAB).nodes) assert.equal(fs.readFileSync(masqFile(LAB, n.name), 'utf8'), 'nonMasqueradeCIDRs:\n- 10.0.0.0/16\nmasqLinkLocal: false\n');
    });

    test('the external host sees the node IP for pod traffic and its replies reach the pod (TCP, UDP, ping)', async () => {
      const [ctr, w1] = loadLab(LAB).nodes;
      assert.equal(remoteAddr(httpFrom(p1.netns, EXT_IP)), ctr!.ip);
      assert.equal(remoteAddr(httpFrom(p2.netns, EXT_IP)), w1!.ip);
      assert.match(udpFrom(p1.netns, EXT_IP), new RegExp(`^router: hello \\(RemoteAddr: ${ctr!.ip.replace(/\./g, '\\.')}:`));
      assert.match(udpFrom(p2.netns, EXT_IP), new RegExp(`^router: hello \\(RemoteAddr: ${w1!.ip.replace(/\./g, '\\.')}:`));
      assert.deepEqual(await pingSeenBy(LAB, p1.netns, EXT_IP, 'router'), { ok: true, source: ctr!.ip });
    });

    test('pod-to-pod and pod-to-node traffic keeps the pod IP', () => {
      assert.equal(remoteAddr(httpFrom(p1.netns, p2.ip)), p1.ip);
      assert.match(udpFrom(p1.netns, p2.ip), new RegExp(`^p2: hello \\(RemoteAddr: ${p1.ip.replace(/\./g, '\\.')}:`));
      assert.equal(remoteAddr(httpFrom(p1.netns, loadLab(LAB).nodes[1]!.ip, 8081)), p1.ip);
    });

    test('with the pod CIDRs routed back, the far host sees the pod IP and its replies arrive (TCP, UDP, ping)', async () => {
      assert.equal(remoteAddr(httpFrom(p2.netns, FAR_IP)), p2.ip);
      assert.match(udpFrom(p2.netns, FAR_IP), new RegExp(`^far-h1: hello \\(RemoteAddr: ${p2.ip.replace(/\./g, '\\.')}:`));
      assert.deepEqual(await pingSeenBy(LAB, p2.netns, FAR_IP, FAR_IP), { ok: true, source: p2.ip });
    });

    test('a changed ip-masq-agent file takes effect without an agent restart', async () => {
      const st = loadLab(LAB);
      const [ctr, w1] = st.nodes;
      const pids = st.nodes.map((n) => n.pid);
      // Now the router (it routes the pod CIDRs back) is reached with pod IPs, and 10.0.0.0/16 is masqueraded.
      masqSet(LAB, { nonMasqueradeCidrs: [`${EXT_IP}/32`] });
      await until('the far host to see node w1', () => remoteAddr(httpFrom(p2.netns, FAR_IP)) === w1!.ip, 60_000);
      await until('the router to see pod p1', () => remoteAddr(httpFrom(p1.netns, EXT_IP)) === p1.ip, 60_000);
      assert.equal(remoteAddr(httpFrom(p1.netns, FAR_IP)), ctr!.ip);
      assert.deepEqual(loadLab(LAB).nodes.map((n) => n.pid), pids);
      assert.ok(pids.every(alive));
    });

    test('lab down removes the external host, the far network and their servers', async () => {
      const st = loadLab(LAB);
      const pids = ownedPids(LAB);
      const outside = [...(st.externals ?? []).map((x) => x.netns), ...(st.networks ?? []).flatMap((n) => n.hosts.map((h) => h.netns))];
      assert.equal(outside.length, 2);
      await labDown(LAB);
      assert.deepEqual(fs.readdirSync(NETNS_DIR).filter((n) => n.startsWith(labPaths(LAB).netnsPrefix)), []);
      assert.deepEqual(pids.filter(alive), []);
    });
  });
}

suite('tunnel');
suite('native');
