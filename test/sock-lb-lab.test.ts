// Integration (issue #10): socket-level load-balancing on a 2-node lab brought up with socketLb (a cgroup v2 per node
// under <cgroup2>/tendril-<lab>/, pods in a child each; the agents' sock programs on the node's). The sock links are
// pinned: with the agent stopped the node still reaches a ClusterIP, and a restart adopts the same links with new
// programs. connect() to a service without backends fails with ECONNREFUSED and counts DROP_NO_SERVICE. From a node's
// own netns to a ClusterIP and to a NodePort on its own IP and on loopback (no per-packet path serves those); pod ->
// ClusterIP over TCP and UDP with the translation done at the socket (the per-packet LB conntrack has no entry, the
// socket reverse map has one) and the UDP reply and getpeername() carrying the service address; a removed backend
// is no longer chosen, also by a UDP socket that was sticking to it, and the connected UDP sockets and the TCP
// connections socket LB made to it are destroyed (bpf_sock_destroy from the socket iterators: ECONNABORTED) while
// the others (and a direct connection to the same pod) keep working; lab down
// removes the cgroups. The sock programs are tested here, not by BPF_PROG_TEST_RUN: Linux 6.18 has no test_run for
// cgroup sock_addr programs (ENOTSUPP). Root; the lab is the test's own and is removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, restartAgent, type LabPod } from '../src/lab/lab.js';
import { labPaths, netnsPath } from '../src/lab/paths.js';
import { stopProcesses } from '../src/lab/procs.js';
import { labServiceAdd, labServiceEndpoints } from '../src/lab/services.js';
import { inNetnsArgv, nodeCgroup, labCgroup } from '../src/lab/cgroups.js';
import { BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_UDP4_RECVMSG, BPF_CGROUP_UDP4_SENDMSG, BpfMap, CgroupLink, isCgroupRoot } from '../src/kernel/bpf/index.js';
import { sockLinkDir } from '../src/datapath/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { until } from './lib/proc.js';
import { startHolder } from './lib/tcp-holder.js';

/* n requests, each on a new TCP connection or a new UDP socket (or n datagrams on one UDP socket with o.one). */
const CLIENT = `
const http = require('http'), dgram = require('dgram');
let inp = ''; process.stdin.on('data', (d) => (inp += d)).on('end', async () => {
  const o = JSON.parse(inp); const out = [];
  const tcp = () => new Promise((res) => {
    const req = http.get({ host: o.ip, port: o.port, path: '/', agent: false, timeout: o.timeout, ...(o.localPort ? { localPort: o.localPort } : {}) }, (r) => {
      const peer = r.socket.remoteAddress + ':' + r.socket.remotePort;
      let b = ''; r.on('data', (d) => (b += d)).on('end', () => res({ ok: true, name: (/Hostname: (\\S+)/.exec(b) || [])[1], peer }));
    });
    req.on('timeout', () => { req.destroy(); res({ ok: false, error: 'timeout' }); });
    req.on('error', (e) => res({ ok: false, error: e.code || e.message }));
  });
  const udp = (s) => new Promise((res) => {
    const send = () => s.send('hi', o.port, o.ip); const iv = setInterval(send, 150);
    const done = (v) => { clearInterval(iv); clearTimeout(tm); s.removeAllListeners('message'); res(v); };
    const tm = setTimeout(() => done({ ok: false, error: 'timeout' }), o.timeout);
    s.on('message', (m, rinfo) => done({ ok: true, name: m.toString().split(':')[0], from: rinfo.address + ':' + rinfo.port }));
    send();
  });
  const shared = o.udp && o.one ? dgram.createSocket('udp4') : undefined;
  for (let i = 0; i < o.n; i++) {
    if (!o.udp) { out.push(await tcp()); continue; }
    const s = shared || dgram.createSocket('udp4');
    out.push(await udp(s));
    if (!shared) s.close();
    if (o.pauseMs && i === 0) await new Promise((r) => setTimeout(r, o.pauseMs));
  }
  if (shared) shared.close();
  process.stdout.write(JSON.stringify(out));
});`;

/*
 * o.n connected UDP sockets to o.ip:o.port; prints {names} (each socket's backend), then a line {i, error} per socket
 * error as it comes; when stdin ends, every socket without an error asks once more and {final} says who answered.
 */
const HOLDER = `
const dgram = require('dgram');
const o = JSON.parse(process.argv[1]); const socks = [];
const say = (v) => process.stdout.write(JSON.stringify(v) + '\\n');
const ask = (s) => new Promise((res) => {
  const iv = setInterval(() => s.send('hi'), 150); const tm = setTimeout(() => done(null), o.timeout);
  const done = (v) => { clearInterval(iv); clearTimeout(tm); s.removeListener('message', on); res(v); };
  const on = (m) => done(m.toString().split(':')[0]); s.on('message', on); s.send('hi');
});
(async () => {
  for (let i = 0; i < o.n; i++) {
    const s = dgram.createSocket('udp4'); const rec = { s, error: null };
    s.on('error', (e) => { rec.error = e.code; say({ i, error: e.code }); });
    await new Promise((r) => s.connect(o.port, o.ip, r));
    rec.name = await ask(s); socks.push(rec);
  }
  say({ names: socks.map((x) => x.name) });
  process.stdin.resume();
  process.stdin.on('end', async () => {
    const final = [];
    for (const x of socks) final.push(x.error ? null : await ask(x.s));
    say({ final }); process.exit(0);
  });
})();`;

interface Answer {
  ok: boolean;
  name?: string;
  peer?: string;
  from?: string;
  error?: string;
}

function request(netns: string, ip: string, port: number, n: number, o: { udp?: boolean; one?: boolean; timeout?: number; localPort?: number; outsideCgroup?: boolean } = {}): Answer[] {
  const input = JSON.stringify({ ip, port, n, udp: o.udp ?? false, one: o.one ?? false, timeout: o.timeout ?? 3000, localPort: o.localPort ?? 0 });
  // outsideCgroup: in the pod's netns but in this test's cgroup, so socket LB does not see the socket.
  const r = o.outsideCgroup
    ? spawnSync('nsenter', [`--net=${netnsPath(netns)}`, '--', process.execPath, '-e', CLIENT], { input, encoding: 'utf8', timeout: 120_000 })
    : execCapture(netns, [process.execPath, '-e', CLIENT], 120_000, input);
  assert.equal(r.status, 0, `client in ${netns} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Answer[];
}

const names = (a: Answer[]): Set<string> => new Set(a.filter((x) => x.ok).map((x) => x.name!));

/** Values (hex) of a node's pinned map. */
function dump(lab: string, node: string, map: string): Buffer[] {
  const m = BpfMap.openPinned(path.join(labPaths(lab).node(node).bpfRoot, map));
  try {
    return [...m.entries()].map(([, v]) => v);
  } finally {
    m.close();
  }
}

/** Names of the programs attached to a cgroup, as bpftool lists them (sorted). */
function sockProgs(dir: string): string[] {
  const r = spawnSync('bpftool', ['-j', 'cgroup', 'show', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, `bpftool cgroup show ${dir}: ${r.stderr}`);
  return (JSON.parse(r.stdout || '[]') as Array<{ name: string }>).map((p) => p.name).sort();
}

const HOOKS: Array<[string, number]> = [
  ['tendril_sock4_connect', BPF_CGROUP_INET4_CONNECT],
  ['tendril_sock4_sendmsg', BPF_CGROUP_UDP4_SENDMSG],
  ['tendril_sock4_recvmsg', BPF_CGROUP_UDP4_RECVMSG],
  ['tendril_sock4_getpeername', BPF_CGROUP_INET4_GETPEERNAME],
];

/** hook -> [link id, program id] of the links pinned under the node's bpffs root (fails when one is missing). */
function pinnedLinks(lab: string, node: string): Record<string, [number, number]> {
  const dir = sockLinkDir(labPaths(lab).node(node).bpfRoot);
  const out: Record<string, [number, number]> = {};
  for (const [name, type] of HOOKS) {
    const l = CgroupLink.openPinned(path.join(dir, name), nodeCgroup(lab, node), type);
    try {
      const i = l.info();
      out[name] = [i.id, i.progId];
    } finally {
      l.close();
    }
  }
  return out;
}

/** DROP_NO_SERVICE (158) egress packets counted on a node. */
async function noServiceDrops(socket: string): Promise<number> {
  const rows = await new ApiClient(socket).get<Array<{ reason: number; direction: string; packets: number }>>('/v1/map/metrics');
  return rows.filter((r) => r.reason === 158 && r.direction === 'egress').reduce((a, r) => a + r.packets, 0);
}

const ipBytes = (ip: string): Buffer => Buffer.from(ip.split('.').map(Number));

describe('socket-level LB on a 2-node lab', { concurrency: 1, timeout: 600_000 }, () => {
  const lab = `sl${process.pid}`;
  let client: LabPod;
  let ctr = '';
  let ctrIp = '';
  let clusterIP = '';
  let nodePort = 0;
  let udpIP = '';
  let emptyIP = '';
  let holder: ChildProcessWithoutNullStreams | undefined;
  let tcpHolder: ChildProcessWithoutNullStreams | undefined;
  let solo: LabPod;
  let termIP = '';
  let web0: LabPod;
  let web1: LabPod;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/sock-lb-lab.test.ts needs root');
    const st = await labUp({ name: lab, nodes: 2, socketLb: true });
    ctr = st.nodes[0]!.name;
    ctrIp = st.nodes[0]!.ip;
    web0 = await podAdd(lab, 'web-0', { node: ctr, namespace: 'sock', labels: { app: 'web' }, serve: [8080, 5353] });
    web1 = await podAdd(lab, 'web-1', { node: st.nodes[1]!.name, namespace: 'sock', labels: { app: 'web' }, serve: [8080, 5353] });
    client = await podAdd(lab, 'client', { node: ctr, namespace: 'sock', labels: { role: 'client' } });
    const s = await labServiceAdd(lab, 'web', { namespace: 'sock', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'NodePort' });
    clusterIP = s.clusterIP!;
    nodePort = s.ports[0]!.nodePort!;
    const u = await labServiceAdd(lab, 'dns', { namespace: 'sock', selector: { app: 'web' }, ports: [{ port: 53, targetPort: 5353, protocol: 'UDP' }], type: 'ClusterIP' });
    udpIP = u.clusterIP!;
    const e = await labServiceAdd(lab, 'empty', { namespace: 'sock', selector: { app: 'nobody' }, ports: [{ port: 81, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP' });
    emptyIP = e.clusterIP!;
    solo = await podAdd(lab, 'solo', { node: st.nodes[1]!.name, namespace: 'sock', labels: { app: 'solo' }, serve: [8081] });
    const t = await labServiceAdd(lab, 'term', { namespace: 'sock', selector: {}, ports: [{ port: 82, targetPort: 8081, protocol: 'TCP' }], type: 'ClusterIP' });
    termIP = t.clusterIP!;
    await labServiceEndpoints(lab, 'sock/term', [{ ip: solo.ip, port: 8081 }]);
  });

  after(async () => {
    holder?.kill('SIGKILL');
    tcpHolder?.kill('SIGKILL');
    await labDown(lab).catch(() => undefined);
  });

  test('each node has its own cgroup (not the root), its agent reports Socket LB enabled on it, the pods run below it', async () => {
    for (const n of loadLab(lab).nodes) {
      const dir = nodeCgroup(lab, n.name);
      assert.ok(fs.existsSync(path.join(dir, 'cgroup.procs')), dir);
      assert.equal(isCgroupRoot(dir), false);
      const s = await new ApiClient(n.socket).get<{ 'kube-proxy-replacement': { socketLb?: { enabled: boolean; cgroup: string | null } } | null }>('/v1/healthz');
      assert.deepEqual(s['kube-proxy-replacement']?.socketLb, { enabled: true, cgroup: dir }, n.name);
      const agentCg = fs.readFileSync(`/proc/${n.pid}/cgroup`, 'utf8');
      assert.match(agentCg, new RegExp(`^0::.*/tendril-${lab}/${n.name}$`, 'm'), `agent of ${n.name} runs in its node cgroup`);
    }
    assert.ok(fs.existsSync(path.join(nodeCgroup(lab, ctr), 'pod-sock_client')));
    assert.deepEqual(sockProgs(nodeCgroup(lab, ctr)), ['tendril_sock4_connect', 'tendril_sock4_getpeername', 'tendril_sock4_recvmsg', 'tendril_sock4_sendmsg']);
  });

  test('the sock links are pinned: with the agent stopped the node still reaches the ClusterIP; a restart adopts the links (same link ids, new programs, one set)', async () => {
    const before = pinnedLinks(lab, ctr);
    const n = loadLab(lab).nodes.find((x) => x.name === ctr)!;
    await stopProcesses([n.pid]);
    assert.deepEqual(sockProgs(nodeCgroup(lab, ctr)), ['tendril_sock4_connect', 'tendril_sock4_getpeername', 'tendril_sock4_recvmsg', 'tendril_sock4_sendmsg'], 'attached without the agent');
    const down = request(labPaths(lab).node(ctr).netns, clusterIP, 80, 6);
    assert.ok(down.every((a) => a.ok && a.peer === `${clusterIP}:80`), `agent down: ${JSON.stringify(down)}`);
    await restartAgent(lab, ctr);
    const afterRestart = pinnedLinks(lab, ctr);
    for (const [name] of HOOKS) {
      assert.equal(afterRestart[name]![0], before[name]![0], `${name}: the same link`);
      assert.notEqual(afterRestart[name]![1], before[name]![1], `${name}: the new agent's program`);
    }
    assert.deepEqual(sockProgs(nodeCgroup(lab, ctr)), ['tendril_sock4_connect', 'tendril_sock4_getpeername', 'tendril_sock4_recvmsg', 'tendril_sock4_sendmsg']);
    const got = request(labPaths(lab).node(ctr).netns, clusterIP, 80, 6);
    assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
  });

  test('connect() to a service without backends fails at once with ECONNREFUSED, counted as DROP_NO_SERVICE', async () => {
    const sock = loadLab(lab).nodes.find((x) => x.name === ctr)!.socket;
    const before = await noServiceDrops(sock);
    const got = request(client.netns, emptyIP, 81, 4, { timeout: 10_000 });
    assert.deepEqual(got.map((a) => a.error), ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED'], JSON.stringify(got));
    assert.ok((await noServiceDrops(sock)) - before >= 4, 'each refused connect() is a DROP_NO_SERVICE');
  });

  test('from the node\'s own netns: a ClusterIP, a NodePort on its own IP and on 127.0.0.1 reach every backend', () => {
    const ns = labPaths(lab).node(ctr).netns;
    for (const [ip, port] of [[clusterIP, 80], [ctrIp, nodePort], ['127.0.0.1', nodePort]] as const) {
      const got = request(ns, ip, port, 24);
      assert.ok(got.every((a) => a.ok), `${ip}:${port}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
      assert.deepEqual(names(got), new Set(['web-0', 'web-1']), `${ip}:${port}`);
      for (const a of got) assert.equal(a.peer, `${ip}:${port}`, 'getpeername() gives the frontend back');
    }
  });

  test('pod -> ClusterIP over TCP is translated at the socket: the per-packet LB conntrack has no entry of it', () => {
    const before = dump(lab, ctr, 'tendril_lb4_ct').length;
    const got = request(client.netns, clusterIP, 80, 24);
    assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
    assert.deepEqual(names(got), new Set(['web-0', 'web-1']));
    for (const a of got) assert.equal(a.peer, `${clusterIP}:80`);
    assert.equal(dump(lab, ctr, 'tendril_lb4_ct').length, before, 'no per-packet translation happened');
    const rev = dump(lab, ctr, 'tendril_lb4_sock_rev');
    assert.ok(rev.some((v) => v.subarray(0, 4).equals(ipBytes(clusterIP))), 'the socket reverse map holds the frontend');
  });

  test('a packet whose socket socket LB translated skips the per-packet service path; a socket outside the cgroup keeps it', () => {
    const ct = BpfMap.openPinned(path.join(labPaths(lab).node(ctr).bpfRoot, 'tendril_lb4_ct'));
    // A stale reply entry of the tuple a new connection from client port P would have: the per-packet path deletes
    // it on the connection's SYN (lb4_forget_reply), a skipped one leaves it.
    const stale = (backend: string, sport: number, dport: number): Buffer => {
      const k = Buffer.alloc(16);
      ipBytes(backend).copy(k, 0);
      ipBytes(client.ip).copy(k, 4);
      k.writeUInt16BE(sport, 8);
      k.writeUInt16BE(dport, 10);
      k[12] = 6;
      k[13] = 1; // CT_INGRESS
      return k;
    };
    const value = Buffer.alloc(12);
    value.writeUInt16LE(0xfff0, 4);
    try {
      const viaSock = [web1.ip, web0.ip].map((b) => stale(b, 8080, 45678));
      for (const k of viaSock) ct.put(k, value);
      const got = request(client.netns, clusterIP, 80, 1, { localPort: 45678 });
      assert.ok(got[0]!.ok, JSON.stringify(got));
      for (const k of viaSock) assert.ok(ct.lookup(k), 'the per-packet path did not run for the socket-LB connection');
      // The same SYN from outside the cgroup (to the backend directly: a ClusterIP would be translated per packet).
      const direct = stale(web1.ip, 8080, 45679);
      ct.put(direct, value);
      const out = request(client.netns, web1.ip, 8080, 1, { localPort: 45679, outsideCgroup: true });
      assert.ok(out[0]!.ok, JSON.stringify(out));
      assert.equal(ct.lookup(direct), undefined, 'the per-packet path ran for the socket outside the cgroup');
      const before = dump(lab, ctr, 'tendril_lb4_ct').length;
      const outSvc = request(client.netns, clusterIP, 80, 4, { outsideCgroup: true });
      assert.ok(outSvc.every((a) => a.ok && a.peer === `${clusterIP}:80`), JSON.stringify(outSvc));
      assert.ok(dump(lab, ctr, 'tendril_lb4_ct').length > before, 'outside the cgroup the ClusterIP is translated per packet');
    } finally {
      for (const k of [...ct.keys()]) if (k.length === 16 && ct.lookup(k)?.readUInt16LE(4) === 0xfff0) ct.delete(k);
      ct.close();
    }
  });

  test('pod -> ClusterIP over UDP: the reply comes from the service address, on every backend', () => {
    const got = request(client.netns, udpIP, 53, 24, { udp: true });
    assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
    assert.deepEqual(names(got), new Set(['web-0', 'web-1']));
    for (const a of got) assert.equal(a.from, `${udpIP}:53`, 'recvmsg gives the frontend as the source');
    const one = request(client.netns, udpIP, 53, 6, { udp: true, one: true });
    assert.ok(one.every((a) => a.ok), JSON.stringify(one));
    assert.equal(names(one).size, 1, 'one unconnected UDP socket sticks to one backend');
  });

  test('TCP connections socket LB made to a backend that left its service are destroyed (ECONNABORTED); a direct connection to the same pod lives on', async () => {
    const targets = [...Array(4)].map(() => ({ ip: termIP, port: 82 })).concat([{ ip: solo.ip, port: 8081 }]);
    const h = startHolder(client, { targets, timeout: 10_000 });
    tcpHolder = h.proc;
    await until(`the TCP holder's connections answered (${h.stderr()})`, () => h.lines.some((l) => l['names']), 120_000);
    assert.deepEqual(h.lines.find((l) => l['names'])!['names'], ['solo', 'solo', 'solo', 'solo', 'solo']);
    await labServiceEndpoints(lab, 'sock/term', []);
    await until('the 4 service connections report an error', () => [0, 1, 2, 3].every((i) => h.lines.some((l) => l['i'] === i)), 120_000);
    for (const l of h.lines.filter((x) => x['i'] !== undefined)) {
      assert.notEqual(l['i'], 4, `the direct connection is left alone: ${JSON.stringify(h.lines)}`);
      assert.equal(l['error'], 'ECONNABORTED', JSON.stringify(l));
    }
    h.proc.stdin.end();
    await until('the TCP holder\'s final answers', () => h.lines.some((l) => l['final']), 120_000);
    assert.deepEqual(h.lines.find((l) => l['final'])!['final'], [null, null, null, null, 'solo']);
  });

  test('a removed backend is no longer chosen (TCP and UDP); the connected UDP sockets on it are destroyed (ECONNABORTED), the others live on', async () => {
    const [cmd, args] = inNetnsArgv(netnsPath(client.netns), client.netns, [process.execPath, '-e', HOLDER, JSON.stringify({ ip: udpIP, port: 53, n: 12, timeout: 10_000 })]);
    holder = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const lines: Array<{ names?: string[]; i?: number; error?: string; final?: Array<string | null> }> = [];
    let buf = '';
    let stderr = '';
    holder.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    });
    holder.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await until(`the holder's sockets answered (${stderr})`, () => lines.some((l) => l.names), 120_000);
    const held = lines.find((l) => l.names)!.names!;
    assert.ok(held.includes('web-0') && held.includes('web-1'), `connected sockets on both backends: ${JSON.stringify(held)}`);
    await podDel(lab, 'sock/web-1');
    const onGone = held.flatMap((n, i) => (n === 'web-1' ? [i] : []));
    await until('every socket connected to web-1 reports an error', () => onGone.every((i) => lines.some((l) => l.i === i)), 120_000);
    for (const l of lines.filter((x) => x.i !== undefined)) {
      assert.equal(held[l.i!], 'web-1', `only sockets on web-1 are destroyed: ${JSON.stringify(lines)}`);
      assert.equal(l.error, 'ECONNABORTED', JSON.stringify(l));
    }
    holder.stdin.end();
    await until('the holder\'s final answers', () => lines.some((l) => l.final), 120_000);
    const final = lines.find((l) => l.final)!.final!;
    held.forEach((n, i) => assert.equal(final[i], n === 'web-0' ? 'web-0' : null, `socket ${i} (${n}): ${JSON.stringify(final)}`));
    await until('web-1 gone from the backends of ctr', () => !dump(lab, ctr, 'tendril_lb4_backends').some((v) => v.subarray(0, 4).equals(ipBytes(web1.ip))), 120_000);
    const tcp = request(client.netns, clusterIP, 80, 12);
    assert.ok(tcp.every((a) => a.ok), JSON.stringify(tcp.filter((a) => !a.ok)));
    assert.deepEqual(names(tcp), new Set(['web-0']));
    const udp = request(client.netns, udpIP, 53, 12, { udp: true });
    assert.ok(udp.every((a) => a.ok), JSON.stringify(udp.filter((a) => !a.ok)));
    assert.deepEqual(names(udp), new Set(['web-0']));
  });

  test('lab down removes the lab\'s cgroups', async () => {
    await labDown(lab);
    assert.equal(fs.existsSync(labCgroup(lab)), false);
  });
});
