// Integration: a lab node forwards between pods with the eBPF datapath, the CNI plugin behaves as the spec says,
// and an agent restart keeps pods connected. Root; every namespace is the test's own and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AgentClient } from '../src/cli/client.js';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, restartAgent, runCni, pluginConfig, type LabPod } from '../src/lab/lab.js';
import { CNI_BIN_DIR, labPaths, netnsPath } from '../src/lab/paths.js';

const LAB = `t${process.pid}`;
const LAB2 = `t${process.pid}b`;

function ping(pod: LabPod | string, ip: string): boolean {
  const ns = typeof pod === 'string' ? pod : pod.netns;
  return execCapture(ns, ['ping', '-c', '1', '-W', '2', ip]).status === 0;
}

function podNs(name: string): LabPod {
  const p = loadLab(LAB).pods.find((x) => x.name === name);
  assert.ok(p, `pod ${name} in lab state`);
  return p;
}

function agent(node = 'ctr'): AgentClient {
  return new AgentClient(loadLab(LAB).nodes.find((n) => n.name === node)!.socket);
}

function cni(command: string, env: Record<string, string>, stdin: string): { status: number; out: { code?: number; msg?: string } & Record<string, unknown> } {
  const r = spawnSync(path.join(CNI_BIN_DIR, 'tendril-cni'), [], {
    env: { PATH: process.env['PATH'] ?? '', CNI_COMMAND: command, CNI_IFNAME: 'eth0', CNI_PATH: CNI_BIN_DIR, ...env },
    input: stdin,
    encoding: 'utf8',
  });
  return { status: r.status ?? -1, out: r.stdout ? (JSON.parse(r.stdout) as { code?: number }) : {} };
}

describe('lab with two nodes', { timeout: 240_000 }, () => {
  before(async () => {
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 2 });
    await podAdd(LAB, 'pod-a', { node: 'ctr', labels: { app: 'a' }, serve: 8080 });
    await podAdd(LAB, 'pod-b', { node: 'ctr', labels: { app: 'b' }, serve: 8080 });
  });
  after(async () => {
    await labDown(LAB);
    await labDown(LAB2);
  });

  test('both agents are up with their own pod CIDR', async () => {
    const st = loadLab(LAB);
    assert.deepEqual(st.nodes.map((n) => [n.name, n.ip, n.podCidr]), [
      ['ctr', '192.168.10.100', '172.20.0.0/24'],
      ['w1', '192.168.10.101', '172.20.1.0/24'],
    ]);
    const cfg = await agent('w1').get<{ 'router-ip': string; 'health-ip': string }>('/v1/config');
    assert.equal(cfg['router-ip'], '172.20.1.1');
    assert.equal(cfg['health-ip'], '172.20.1.2');
  });

  test('two pods on one node ping each other and fetch HTTP from each other', () => {
    const a = podNs('pod-a');
    const b = podNs('pod-b');
    assert.ok(ping(a, b.ip), 'a -> b ping');
    assert.ok(ping(b, a.ip), 'b -> a ping');
    const r = execCapture(a.netns, ['curl', '-s', '--max-time', '5', `http://${b.ip}:8080/`]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Hostname: pod-b/);
    assert.match(r.stdout, new RegExp(`IP: ${b.ip.replace(/\./g, '\\.')}`));
    assert.match(r.stdout, new RegExp(`RemoteAddr: ${a.ip.replace(/\./g, '\\.')}:`));
    const back = execCapture(b.netns, ['curl', '-s', '--max-time', '5', `http://${a.ip}:8080/`]);
    assert.match(back.stdout, /Hostname: pod-a/);
  });

  test('pods reach their node: tendril_host router IP and the health endpoint', async () => {
    const a = podNs('pod-a');
    const cfg = await agent().get<{ 'router-ip': string; 'health-ip': string }>('/v1/config');
    assert.ok(ping(a, cfg['router-ip']), 'pod -> router');
    assert.ok(ping(a, cfg['health-ip']), 'pod -> health');
    assert.ok(ping(loadLab(LAB).nodes[0]!.netns, a.ip), 'node -> pod');
  });

  test('a packet with a spoofed source address is dropped', () => {
    const a = podNs('pod-a');
    const b = podNs('pod-b');
    const add = spawnSync('ip', ['-n', a.netns, 'addr', 'add', '172.20.0.250/32', 'dev', 'eth0']);
    assert.equal(add.status, 0, String(add.stderr));
    try {
      assert.equal(execCapture(a.netns, ['ping', '-c', '1', '-W', '1', '-I', '172.20.0.250', b.ip]).status === 0, false, 'spoofed ping must not get through');
      assert.ok(ping(a, b.ip), 'the pod\'s own address still works');
    } finally {
      spawnSync('ip', ['-n', a.netns, 'addr', 'del', '172.20.0.250/32', 'dev', 'eth0']);
    }
  });

  test('endpoint list and the BPF endpoint map agree with the pods', async () => {
    const eps = await agent().get<Array<{ id: number; status: { networking: { addressing: Array<{ ipv4: string }>; 'interface-name': string } } }>>('/v1/endpoint');
    const map = await agent().get<Array<{ ip4: string; lxcId: number }>>('/v1/map/tendril_lxc');
    for (const name of ['pod-a', 'pod-b']) {
      const p = podNs(name);
      const ep = eps.find((e) => e.status.networking.addressing[0]?.ipv4 === p.ip);
      assert.ok(ep, `endpoint for ${name}`);
      assert.match(ep.status.networking['interface-name'], /^lxc[0-9a-f]{12}$/);
      assert.ok(map.some((m) => m.ip4 === p.ip && m.lxcId === ep.id), `map entry for ${name}`);
    }
    const att = await agent().get<Array<{ ifname: string; direction: string; progName: string }>>('/v1/datapath/attachments');
    for (const ep of eps) {
      const ifname = ep.status.networking['interface-name'];
      assert.ok(att.some((a) => a.ifname === ifname && a.direction === 'ingress' && a.progName === 'cil_from_container'), `${ifname} ingress`);
      assert.ok(!att.some((a) => a.ifname === ifname && a.direction === 'egress'), `nothing on ${ifname} egress`);
    }
    assert.ok(att.some((a) => a.ifname === 'tendril_host' && a.direction === 'egress' && a.progName === 'cil_from_host'));
    // One loaded program serves every endpoint: all from_container attachments run the same program ID.
    const ids = new Set(att.filter((a) => a.progName === 'cil_from_container').map((a) => (a as unknown as { progId: number }).progId));
    assert.equal(ids.size, 1);
  });

  test('CNI ADD -> CHECK -> DEL -> DEL, executed as a runtime does', async () => {
    const pod = await podAdd(LAB, 'pod-c', { node: 'ctr' });
    assert.equal(runCni(LAB, 'CHECK', pod), '');
    runCni(LAB, 'DEL', pod);
    runCni(LAB, 'DEL', pod);
    const eps = await agent().get<Array<{ status: { networking: { addressing: Array<{ ipv4: string }> } } }>>('/v1/endpoint');
    assert.ok(!eps.some((e) => e.status.networking.addressing[0]?.ipv4 === pod.ip));
    // DEL when the namespace is already gone also succeeds.
    await podDel(LAB, 'pod-c');
    runCni(LAB, 'DEL', pod);
  });

  test('bad input gets the right CNI code and leaks nothing', async () => {
    const before = await agent().get<{ ipam: { used: number }; endpoints: number }>('/v1/healthz');
    const conf = pluginConfig(LAB, { ...podNs('pod-a') });
    const base = { CNI_CONTAINERID: 'f'.repeat(64) };
    // The shim cannot read "agent-socket" from broken JSON: a runtime on a real node reaches the default socket;
    // here the environment names the node's socket.
    const bad = cni('ADD', { ...base, CNI_NETNS: netnsPath(podNs('pod-a').netns), TENDRIL_AGENT_SOCKET: loadLab(LAB).nodes[0]!.socket }, '{"cniVersion": ');
    assert.equal(bad.status, 1);
    assert.equal(bad.out.code, 6);
    const noVersion = JSON.parse(conf) as Record<string, unknown>;
    delete noVersion['cniVersion'];
    const r7 = cni('ADD', { ...base, CNI_NETNS: netnsPath(podNs('pod-a').netns) }, JSON.stringify(noVersion));
    assert.equal(r7.out.code, 7);
    const r8 = cni('ADD', { ...base, CNI_NETNS: '/var/run/netns/does-not-exist' }, conf);
    assert.equal(r8.out.code, 8);
    assert.match(String(r8.out.msg) + String(r8.out['details']), /does-not-exist/);
    const after = await agent().get<{ ipam: { used: number }; endpoints: number }>('/v1/healthz');
    assert.equal(after.ipam.used, before.ipam.used, 'no IP leaked');
    assert.equal(after.endpoints, before.endpoints, 'no endpoint leaked');
    const links = execCapture(loadLab(LAB).nodes[0]!.netns, ['ip', '-o', 'link']).stdout;
    assert.equal((links.match(/lxc[0-9a-f]{12}/g) ?? []).length, 2, 'only the two pods\' veths exist');
    const unreachable = cni('ADD', { ...base, CNI_NETNS: netnsPath(podNs('pod-a').netns) }, JSON.stringify({ ...JSON.parse(conf), 'agent-socket': '/nonexistent/tendril.sock' }));
    assert.equal(unreachable.out.code, 11);
  });

  test('agent restart keeps existing pods connected and re-adopts them', async () => {
    const a = podNs('pod-a');
    const b = podNs('pod-b');
    const idsBefore = (await agent().get<Array<{ id: number }>>('/v1/endpoint')).map((e) => e.id);
    const st = loadLab(LAB);
    process.kill(st.nodes[0]!.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(ping(a, b.ip), 'forwarding continues while the agent is down');
    await restartAgent(LAB, 'ctr');
    const idsAfter = (await agent().get<Array<{ id: number }>>('/v1/endpoint')).map((e) => e.id);
    assert.deepEqual(idsAfter, idsBefore);
    assert.ok(ping(a, b.ip), 'forwarding after restart');
    const d = await podAdd(LAB, 'pod-d', { node: 'ctr' });
    assert.ok(ping(d, a.ip), 'a pod added after the restart works');
    assert.notEqual(d.ip, a.ip);
    assert.notEqual(d.ip, b.ip);
  });

  test('a second lab coexists and down removes everything it made, twice', async () => {
    await labUp({ name: LAB2, nodes: 1, podCidr: '10.99.0.0/16', underlayCidr: '192.168.77.0/24' });
    assert.ok(ping(loadLab(LAB).pods[0]!, loadLab(LAB).pods[1]!.ip), 'first lab unaffected');
    await labDown(LAB2);
    await labDown(LAB2);
    const p = labPaths(LAB2);
    const leftovers = fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(p.netnsPrefix));
    assert.deepEqual(leftovers, []);
    assert.equal(fs.existsSync(p.bpfDir), false);
    assert.equal(fs.existsSync(p.dir), false);
  });
});
