// Integration: a lab node forwards between pods with the eBPF datapath, the CNI plugin behaves as the spec says,
// and an agent restart keeps pods connected. Root; every namespace is the test's own and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient, rawRequest } from '../src/util/api-client.js';
import { Netns } from '../src/kernel/netns/index.js';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, restartAgent, restartStore, runCni, pluginConfig, type LabPod } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { CNI_BIN_DIR, REPO_ROOT, labPaths, netnsPath } from '../src/lab/paths.js';
import { alive, netnsInode, processesInNetns } from '../src/lab/procs.js';

const LAB = `t${process.pid}`;
// Named so that LAB is a prefix of it: removing LAB must leave it alone.
const LAB2 = `t${process.pid}-b`;
const TENDRIL = path.join(REPO_ROOT, 'bin/tendril');
/** Processes the tests start outside any lab (a `tail -f` of a lab's log): each is ended in after(). */
const bystanders: ChildProcess[] = [];

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function inside(ns: string): number[] {
  const ino = netnsInode(ns);
  assert.ok(ino, `netns ${ns} exists`);
  return processesInNetns([ino]);
}

function ping(pod: LabPod | string, ip: string): boolean {
  const ns = typeof pod === 'string' ? pod : pod.netns;
  return execCapture(ns, ['ping', '-c', '1', '-W', '2', ip]).status === 0;
}

function podNs(name: string): LabPod {
  const p = loadLab(LAB).pods.find((x) => x.name === name);
  assert.ok(p, `pod ${name} in lab state`);
  return p;
}

function agent(node = 'ctr'): ApiClient {
  return new ApiClient(loadLab(LAB).nodes.find((n) => n.name === node)!.socket);
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
    for (const b of bystanders) b.kill('SIGKILL');
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

  test('malformed API input is a 400 and an oversized body a 413, nothing logged as a failure', async () => {
    const socket = loadLab(LAB).nodes[0]!.socket;
    for (const [method, url] of [['POST', '/v1/ipam/999.1.1.1?owner=x/y'], ['DELETE', '/v1/ipam/notanip'], ['GET', '/v1/endpoint/%ZZ']] as const) {
      const r = await rawRequest(socket, method, url);
      assert.equal(r.status, 400, `${method} ${url}: ${r.body}`);
      assert.equal((JSON.parse(r.body) as { code: string }).code, 'TENDRIL_ERR_INVALID_REQUEST');
    }
    const big = await rawRequest(socket, 'PUT', '/v1/policy', 'x'.repeat(5 * 1024 * 1024));
    assert.equal(big.status, 413);
    assert.equal((JSON.parse(big.body) as { code: string }).code, 'TENDRIL_ERR_BODY_TOO_LARGE');
    await agent().get('/v1/healthz');
    const log = fs.readFileSync(labPaths(LAB).node('ctr').logFile, 'utf8');
    assert.doesNotMatch(log, /API request failed/);
  });

  test('a second agent refuses to start on a live agent\'s socket, which keeps serving', async () => {
    const n = loadLab(LAB).nodes[0]!;
    const tmp = fs.mkdtempSync(path.join(labPaths(LAB).dir, 'dup-'));
    // In the node's namespace with a store nobody serves (so never a pod CIDR): were the socket taken, it would
    // still attach nothing.
    const r = spawnSync('nsenter', [`--net=${netnsPath(n.netns)}`, '--', TENDRIL, 'agent', '--node-name', 'dup', '--socket', n.socket,
      '--state-dir', path.join(tmp, 'state'), '--bpf-root', path.join(tmp, 'bpf'), '--cni-conf-dir', path.join(tmp, 'net.d'), '--health-netns', `${n.netns}-dup`, '--store', `local+unix://${path.join(tmp, 'none.sock')}`],
    { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, `second agent exits: ${r.stderr}`);
    assert.match(r.stderr, /Cannot listen on ".*tendril\.sock": another server is listening there.*\[TENDRIL_ERR_SOCKET_IN_USE\]/);
    assert.equal((await agent().get<{ tendril: { node: string } }>('/v1/healthz')).tendril.node, 'ctr');
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

  test('a policy applied while a node is down is stored, reported so at once, and enforced when the node returns', async () => {
    const file = path.join(labPaths(LAB).dir, 'down-test.yaml');
    fs.writeFileSync(file, [
      'apiVersion: networking.k8s.io/v1', 'kind: NetworkPolicy', 'metadata: {name: while-down, namespace: default}',
      'spec: {podSelector: {matchLabels: {app: nobody}}, policyTypes: [Ingress]}', ''].join('\n'));
    process.kill(loadLab(LAB).nodes.find((n) => n.name === 'w1')!.pid, 'SIGKILL');
    const warnings: string[] = [];
    const applied = await labPolicyApply(LAB, [file], { warn: (l) => warnings.push(l) });
    assert.equal(applied.length, 1);
    assert.equal(warnings.length, 1, warnings.join('\n'));
    const key = applied[0]!.key;
    assert.match(warnings[0]!, /Policy NetworkPolicy\/default\/while-down \(revision \d+\) stored in the cluster store; node w1 is down \(Cannot reach the agent .*\): it applies it when its agent returns/);
    const ctr = await agent('ctr').get<{ policies: Array<{ key: string }> }>('/v1/policy');
    assert.ok(ctr.policies.some((x) => x.key === key), 'the running node enforces it');
    await restartAgent(LAB, 'w1');
    await until('w1 enforces the policy after it returns', async () =>
      (await agent('w1').get<{ policies: Array<{ key: string }> }>('/v1/policy')).policies.some((x) => x.key === key),
    );
    await labPolicyDelete(LAB, 'default/while-down');
  });

  test('an operator outage is reported as the operator, not the agent', async () => {
    const file = path.join(labPaths(LAB).dir, 'down-test.yaml');
    process.kill(loadLab(LAB).operatorPid, 'SIGKILL');
    await until('the operator is gone', () => !alive(loadLab(LAB).operatorPid));
    const err = await labPolicyApply(LAB, [file]).then(() => assert.fail('applied without an operator'), (e: unknown) => e as { code: string; message: string });
    assert.equal(err.code, 'TENDRIL_ERR_OPERATOR_UNREACHABLE');
    assert.match(err.message, /Cannot reach the operator at .*operator\.sock/);
    await restartStore(LAB, 0);
  });

  test('the CLI as non-root says it needs root', () => {
    const asNobody = (args: string[]) => spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', TENDRIL, ...args], { encoding: 'utf8' });
    const lab = asNobody(['lab', 'status', '--name', LAB]);
    assert.equal(lab.status, 1);
    assert.match(lab.stderr, /tendril lab needs root.*\[TENDRIL_ERR_PERMISSION\]/);
    const node = asNobody(['--socket', loadLab(LAB).nodes[0]!.socket, 'status']);
    assert.equal(node.status, 1);
    assert.match(node.stderr, /Permission denied on the agent API socket .*run tendril as root.*\[TENDRIL_ERR_PERMISSION\]/);
  });

  test('pods whose namespace and name split differently get their own namespaces', async () => {
    const x = await podAdd(LAB, 'a-b', { node: 'ctr' });
    const y = await podAdd(LAB, 'b', { node: 'ctr', namespace: 'default-a' });
    assert.notEqual(x.netns, y.netns);
    assert.ok(ping(x, y.ip), 'default/a-b -> default-a/b');
    await podDel(LAB, 'default/a-b');
    assert.ok(Netns.exists(y.netns), 'deleting one leaves the other');
    await podDel(LAB, 'default-a/b');
  });

  test('pod del ends every process inside the pod, its server and a daemon started with lab exec', async () => {
    const pod = await podAdd(LAB, 'pod-e', { node: 'ctr', serve: 8081 });
    const exec = spawn(TENDRIL, ['--lab', LAB, 'lab', 'exec', 'pod-e', '--', 'sleep', '600'], { stdio: 'ignore' });
    bystanders.push(exec);
    await until('the server and the daemon run in the pod', () => inside(pod.netns).length >= 2);
    const pids = inside(pod.netns);
    await podDel(LAB, 'pod-e');
    assert.deepEqual(pids.filter(alive), [], 'nothing of the pod runs any more');
    assert.equal(Netns.exists(pod.netns), false);
  });

  test('a second lab coexists; down of one ends only what it made, and a tail of its log is no obstacle', async () => {
    await labUp({ name: LAB2, nodes: 1, podCidr: '10.99.0.0/16', underlayCidr: '192.168.77.0/24' });
    const other = await podAdd(LAB2, 'pod-o', { node: 'ctr', serve: 8080 });
    // Bystanders: a tail of each lab's agent log outside both labs, and a daemon in a node started with node exec.
    const tails = [LAB, LAB2].map((lab) => spawn('tail', ['-f', labPaths(lab).node('ctr').logFile], { stdio: 'ignore' }));
    bystanders.push(...tails);
    const running = () => tails.every((t) => t.exitCode === null && t.signalCode === null);
    const daemon = spawn(TENDRIL, ['--lab', LAB, 'lab', 'node', 'exec', 'w1', '--', 'sleep', '600'], { stdio: 'ignore' });
    bystanders.push(daemon);
    const w1 = loadLab(LAB).nodes.find((n) => n.name === 'w1')!;
    await until('the daemon runs in node w1', () => inside(w1.netns).length >= 2);
    const inLab = [
      ...loadLab(LAB).nodes.flatMap((n) => inside(n.netns)),
      ...loadLab(LAB).pods.flatMap((x) => inside(x.netns)),
      ...inside(labPaths(LAB).underlayNetns),
    ];
    const st2 = loadLab(LAB2);
    const ns2 = fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(labPaths(LAB2).netnsPrefix)).sort();
    assert.ok(ping(loadLab(LAB).pods[0]!, loadLab(LAB).pods[1]!.ip), 'first lab unaffected by the second');

    await labDown(LAB);
    assert.deepEqual(inLab.filter(alive), [], 'every process in the lab\'s namespaces ended');
    assert.equal(fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(labPaths(LAB).netnsPrefix) && !n.startsWith(labPaths(LAB2).netnsPrefix)).length, 0);
    assert.deepEqual(fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(labPaths(LAB2).netnsPrefix)).sort(), ns2, `lab ${LAB2} keeps its namespaces`);
    assert.ok(alive(st2.nodes[0]!.pid) && alive(st2.operatorPid), `lab ${LAB2} keeps its agent and operator`);
    assert.ok(running(), 'the tails of the logs still run');
    const r = execCapture(other.netns, ['curl', '-s', '--max-time', '5', `http://${other.ip}:8080/`]);
    assert.match(r.stdout, /Hostname: pod-o/, `lab ${LAB2} still serves`);

    await labDown(LAB2);
    await labDown(LAB2);
    const p = labPaths(LAB2);
    assert.deepEqual(fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(p.netnsPrefix)), []);
    assert.equal(fs.existsSync(p.bpfDir), false);
    assert.equal(fs.existsSync(p.dir), false);
    // A tail of the removed lab's log still runs, and the lab comes up again under the same name.
    await labUp({ name: LAB2, nodes: 1, podCidr: '10.99.0.0/16', underlayCidr: '192.168.77.0/24' });
    await podAdd(LAB2, 'pod-o', { node: 'ctr', serve: 8080 });
    // Without its ledger (a lab made before there was one), down removes what the lab's state names.
    fs.rmSync(p.ownedFile);
    await labDown(LAB2);
    assert.deepEqual(fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(p.netnsPrefix)), []);
    assert.ok(running(), 'lab down leaves processes that only mention the lab');
  });
});
