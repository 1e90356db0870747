// Integration: a three-node lab with the operator and a cluster store forwards across nodes in tunnel and in native
// routing mode; agents ride out agent and store restarts; node changes reach every node (the time is reported).
// Root; every namespace is the test's own and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Netns } from '../src/kernel/netns/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { execCapture, labDown, labNodeAdd, labNodeDel, labUp, loadLab, podAdd, restartAgent, restartStore, type LabPod, type RoutingMode, type StoreKind } from '../src/lab/lab.js';
import { CNI_BIN_DIR, labPaths, netnsPath } from '../src/lab/paths.js';
import { until } from './lib/proc.js';

interface IpcacheRow { prefix: string; identity: number; tunnelEndpoint?: string }

function ping(pod: LabPod, ip: string): boolean {
  return execCapture(pod.netns, ['ping', '-c', '1', '-W', '5', ip]).status === 0;
}

function http(pod: LabPod, ip: string): string {
  return execCapture(pod.netns, ['curl', '-s', '--max-time', '15', `http://${ip}:8080/`]).stdout;
}

/** One datagram; prints the first answer and exits (socat would give the answer only its fixed 0.5 s after stdin ends). */
function udp(pod: LabPod, ip: string): string {
  const js = `const s = require('dgram').createSocket('udp4'); s.on('message', (m) => { process.stdout.write(m); process.exit(0); }); ` +
    `s.send('hello from ${pod.name}\\n', 8080, '${ip}'); setTimeout(() => process.exit(1), 15000);`;
  return execCapture(pod.netns, [process.execPath, '-e', js]).stdout;
}

/**
 * Captures packets matching `filter` on the underlay port of node `node` (the bridge itself sees only its own
 * traffic, not what it forwards between ports) while `traffic` runs.
 */
async function capture(lab: string, node: string, filter: string, traffic: () => void): Promise<string> {
  const ns = netnsPath(labPaths(lab).underlayNetns);
  const port = labPaths(lab).node(node).underlayIf;
  const child = spawn('nsenter', [`--net=${ns}`, '--', 'tcpdump', '-i', port, '--immediate-mode', '-nn', '-l', '-c', '2', '-T', 'vxlan', filter], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  await until('tcpdump to listen', () => /listening on/.test(err) || child.exitCode !== null);
  traffic();
  // -c 2: tcpdump exits once it has printed both packets; the deadline only bounds a capture that misses them.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 30_000)))]);
  clearTimeout(timer);
  child.kill();
  return out;
}

function suite(routing: RoutingMode, store: StoreKind): void {
  const LAB = `c${process.pid % 100000}${routing[0]}${store[0]}`;
  const pods: LabPod[] = [];
  const agent = (node: string) => new ApiClient(loadLab(LAB).nodes.find((n) => n.name === node)!.socket);

  describe(`three nodes, ${routing} routing, ${store} store`, { timeout: 300_000 }, () => {
    before(async () => {
      await labDown(LAB);
      await labUp({ name: LAB, nodes: 3, routing, store });
      for (const node of ['ctr', 'w1', 'w2']) pods.push(await podAdd(LAB, `web-${node}`, { node, labels: { app: 'web' }, serve: 8080 }));
    });
    after(async () => {
      await labDown(LAB);
    });

    test('every node knows every node and its pod CIDR from the operator', async () => {
      const nodes = await agent('w2').get<Array<{ name: string; addresses: string[]; podCIDRs: string[] }>>('/v1/cluster/nodes');
      assert.deepEqual(nodes.map((n) => [n.name, n.addresses[0], n.podCIDRs[0]]), [
        ['ctr', '192.168.10.100', '172.20.0.0/24'],
        ['w1', '192.168.10.101', '172.20.1.0/24'],
        ['w2', '192.168.10.102', '172.20.2.0/24'],
      ]);
      const cfg = await agent('ctr').get<{ routing: { mode: string }; 'pod-mtu': number }>('/v1/config');
      assert.equal(cfg.routing.mode, routing);
      assert.equal(cfg['pod-mtu'], routing === 'tunnel' ? 1450 : 1500);
    });

    test('full pod mesh across nodes: ICMP, TCP and UDP', () => {
      for (const a of pods) {
        for (const b of pods) {
          if (a === b) continue;
          assert.ok(ping(a, b.ip), `ping ${a.name} -> ${b.name}`);
          assert.match(http(a, b.ip), new RegExp(`Hostname: ${b.name}`), `http ${a.name} -> ${b.name}`);
        }
      }
      assert.match(udp(pods[0]!, pods[2]!.ip), /web-w2/);
      assert.match(udp(pods[2]!, pods[1]!.ip), /web-w1/);
    });

    test('a pod reaches another node\'s IP', () => {
      assert.ok(ping(pods[0]!, '192.168.10.102'));
      assert.ok(ping(pods[2]!, '192.168.10.100'));
    });

    test('the ipcache holds remote pod CIDRs, remote nodes and local endpoints', async () => {
      const rows = await agent('ctr').get<IpcacheRow[]>('/v1/map/tendril_ipcache');
      const by = new Map(rows.map((r) => [r.prefix, r]));
      assert.equal(by.get('172.20.1.0/24')?.identity, 2);
      assert.equal(by.get('192.168.10.101/32')?.identity, 6);
      assert.equal(by.get(`${pods[0]!.ip}/32`)?.tunnelEndpoint ?? '0.0.0.0', '0.0.0.0');
      if (routing === 'tunnel') assert.equal(by.get('172.20.2.0/24')?.tunnelEndpoint, '192.168.10.102');
    });

    test(routing === 'tunnel' ? 'the underlay carries VXLAN on UDP 8472 with the source identity as VNI' : 'the underlay carries the plain pod IPs', async () => {
      const src = pods[0]!;
      const eps = await agent('ctr').get<Array<{ status: { identity: { id: number }; networking: { addressing: Array<{ ipv4: string }> } } }>>('/v1/endpoint');
      const identity = eps.find((e) => e.status.networking.addressing[0]?.ipv4 === src.ip)!.status.identity.id;
      const filter = routing === 'tunnel' ? 'udp port 8472' : `icmp and host ${src.ip}`;
      const out = await capture(LAB, 'w1', filter, () => ping(src, pods[1]!.ip));
      if (routing === 'tunnel') {
        assert.match(out, /192\.168\.10\.100\.\d+ > 192\.168\.10\.101\.8472/);
        assert.match(out, new RegExp(`vni ${identity}\\b`));
        assert.match(out, new RegExp(`${src.ip.replace(/\./g, '\\.')} > ${pods[1]!.ip.replace(/\./g, '\\.')}`));
      } else {
        assert.match(out, new RegExp(`${src.ip.replace(/\./g, '\\.')} > ${pods[1]!.ip.replace(/\./g, '\\.')}: ICMP echo request`));
        assert.doesNotMatch(out, /8472/);
      }
    });

    test('an agent restart keeps traffic flowing and re-adopts its endpoints', async () => {
      const st = loadLab(LAB);
      process.kill(st.nodes[1]!.pid, 'SIGKILL');
      assert.ok(ping(pods[0]!, pods[1]!.ip), 'forwarding while the agent of w1 is down');
      await restartAgent(LAB, 'w1');
      assert.ok(ping(pods[0]!, pods[1]!.ip));
      assert.ok(ping(pods[1]!, pods[2]!.ip));
    });

    test('a store restart keeps traffic flowing and changes still reach every node', async () => {
      await restartStore(LAB);
      assert.ok(ping(pods[0]!, pods[2]!.ip));
      const late = await podAdd(LAB, 'late', { node: 'w2' });
      assert.ok(ping(pods[0]!, late.ip), 'a pod added after the store restart is reachable from another node');
      const nodes = await agent('ctr').get<unknown[]>('/v1/cluster/nodes');
      assert.equal(nodes.length, 3, 'no node duplicated or lost');
    });

    test('node delete and add: ipcache, tunnel entries and routes follow', async (t) => {
      const hasW2 = async () => (await agent('ctr').get<IpcacheRow[]>('/v1/map/tendril_ipcache')).some((r) => r.prefix === '172.20.2.0/24');
      const routeToW2 = () => execCapture(loadLab(LAB).nodes[0]!.netns, ['ip', 'route', 'show', '172.20.2.0/24']).stdout.trim() !== '';
      assert.ok(await hasW2());
      await labNodeDel(LAB, 'w2');
      const gone = await until('ctr forgets w2', async () => !(await hasW2()) && !routeToW2());
      assert.ok(ping(pods[0]!, pods[1]!.ip), 'ctr <-> w1 unaffected');
      const n = await labNodeAdd(LAB);
      assert.equal(n.name, 'w2');
      assert.equal(n.podCidr, '172.20.2.0/24', 'a node back within the grace period gets its CIDR back');
      const back = await until('ctr learns w2 again', async () => (await hasW2()) && routeToW2());
      const pod = await podAdd(LAB, 'web-w2b', { node: 'w2', serve: 8080 });
      assert.ok(ping(pods[0]!, pod.ip), 'ctr -> pod on the re-added node');
      assert.match(http(pod, pods[0]!.ip), /Hostname: web-ctr/);
      t.diagnostic(`node removal seen by ctr after ${gone} ms, re-addition after ${back} ms`);
    });
  });
}

suite('tunnel', 'local');
suite('native', 'etcd');

describe('cluster pool exhausted', { timeout: 120_000 }, () => {
  const LAB = `x${process.pid % 100000}`;
  before(async () => {
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 2, podCidr: '10.77.0.0/23' });
  });
  after(async () => {
    await labDown(LAB);
  });

  test('a node without a CIDR answers CNI ADD with "try again later" (11) and the operator says why', async () => {
    const n = await labNodeAdd(LAB, { wait: false });
    const client = new ApiClient(n.socket);
    await until('the new agent answers', async () => {
      try {
        await client.get('/v1/healthz');
        return true;
      } catch {
        return false;
      }
    });
    // No CNI config yet (it is written when the node is ready); a runtime holding the network config calls anyway.
    assert.equal(fs.existsSync(path.join(labPaths(LAB).node(n.name).cniConfDir, '05-tendril.conflist')), false);
    const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'tendril', type: 'tendril-cni', 'agent-socket': n.socket });
    // The test's own namespace, not the lab's: lab down removes only what the lab made.
    const stuck = `${labPaths(LAB).netnsPrefix}pod-stuck`;
    Netns.create(stuck).close();
    const r = spawnSync(path.join(CNI_BIN_DIR, 'tendril-cni'), [], {
      env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'stuck', CNI_NETNS: netnsPath(stuck), CNI_IFNAME: 'eth0', CNI_PATH: CNI_BIN_DIR },
      input: conf,
      encoding: 'utf8',
    });
    Netns.delete(stuck);
    assert.equal(r.status, 1);
    const err = JSON.parse(r.stdout) as { code: number; msg: string };
    assert.equal(err.code, 11);
    assert.match(`${err.msg} ${(err as { details?: string }).details ?? ''}`, /node w2 has no pod CIDR yet/);
    const st = await new ApiClient(labPaths(LAB).operatorSocket).get<Record<string, unknown>>('/v1/status');
    assert.match(JSON.stringify(st), /cluster pool 10\.77\.0\.0\/23 with mask \/24 is exhausted: 2\/2 CIDRs assigned \(ctr, w1\)/);
    const health = await client.get<{ ready: boolean; tendril: { message: string } }>('/v1/healthz');
    assert.equal(health.ready, false);
    assert.match(health.tendril.message, /no pod CIDR yet/);
  });
});
