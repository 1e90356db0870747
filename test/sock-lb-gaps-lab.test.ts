// Integration (issue #10, socket-LB gaps) on a 2-node lab brought up with socketLb: socket LB and the per-packet path
// agree where they used to differ.
// - loadBalancerSourceRanges: a pod outside the ranges does not reach the LoadBalancer IP, through socket LB (a process
//   in the pod's cgroup) as through the per-packet path (the same pod's netns, outside the cgroup), counted as
//   DROP_NOT_IN_SRC_RANGE (177); a pod inside them does, the ClusterIP of the same service stays open to both.
// - A backend shared by two services leaves one of them: the TCP connections socket LB made to it through that service
//   are destroyed (ECONNABORTED), those it made through the other service and a direct one keep working.
// - Socket LB switched on for a live agent (restart with it on): TCP connections the per-packet path translated
//   through the ClusterIP before keep working (their translation and reverse NAT stay), new ones go through socket LB.
// Root; the lab is the test's own (unique name) and is removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { execCapture, labDown, labUp, loadLab, podAdd, restartAgent, saveLab, type LabPod } from '../src/lab/lab.js';
import { labPaths, netnsPath } from '../src/lab/paths.js';
import { labLbPoolAdd, labServiceStatuses } from '../src/lab/lb-pools.js';
import { labServiceAdd, labServiceEndpoints } from '../src/lab/services.js';
import { BpfMap } from '../src/kernel/bpf/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { until } from './lib/proc.js';
import { holderFinal, startHolder } from './lib/tcp-holder.js';

/* One HTTP GET on a new connection: the backend's name, or "error:CODE". */
const GET = `
const http = require('http'); const [ip, port, t] = process.argv.slice(1);
const req = http.get({ host: ip, port: Number(port), path: '/', agent: false, timeout: Number(t) }, (r) => { let b = ''; r.on('data', (d) => (b += d)).on('end', () => process.stdout.write((/Hostname: (\\S+)/.exec(b) || [])[1] || 'answered')); });
req.on('timeout', () => { req.destroy(); process.stdout.write('error:timeout'); });
req.on('error', (e) => { if (!req.destroyed || e.code !== 'ECONNRESET') process.stdout.write('error:' + (e.code || e.message)); });`;

/** A GET from a pod: in its cgroup (socket LB sees the socket) or, with outsideCgroup, only in its netns (per packet). */
function get(pod: LabPod, ip: string, port: number, o: { timeoutMs?: number; outsideCgroup?: boolean } = {}): string {
  const argv = [process.execPath, '-e', GET, ip, String(port), String(o.timeoutMs ?? 2000)];
  const r = o.outsideCgroup ? spawnSync('nsenter', [`--net=${netnsPath(pod.netns)}`, '--', ...argv], { encoding: 'utf8', timeout: 60_000 }) : execCapture(pod.netns, argv, 60_000);
  assert.equal(r.status, 0, `GET in ${pod.netns}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Packets a node counted under drop reason `reason`, direction egress. */
async function drops(socket: string, reason: number): Promise<number> {
  const rows = await new ApiClient(socket).get<Array<{ reason: number; direction: string; packets: number }>>('/v1/map/metrics');
  return rows.filter((r) => r.reason === reason && r.direction === 'egress').reduce((a, r) => a + r.packets, 0);
}

/** Entries of a node's pinned map. */
function count(lab: string, node: string, map: string): number {
  const m = BpfMap.openPinned(path.join(labPaths(lab).node(node).bpfRoot, map));
  try {
    return [...m.keys()].length;
  } finally {
    m.close();
  }
}

describe('socket LB gaps on a 2-node lab', { concurrency: 1, timeout: 900_000 }, () => {
  const lab = `sg${process.pid}`;
  let ctr = '';
  let inside: LabPod;
  let outside: LabPod;
  let solo: LabPod;
  const holders: ChildProcessWithoutNullStreams[] = [];

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/sock-lb-gaps-lab.test.ts needs root');
    const st = await labUp({ name: lab, nodes: 2, socketLb: true });
    ctr = st.nodes[0]!.name;
    await podAdd(lab, 'web-0', { node: ctr, namespace: 'gap', labels: { app: 'web' }, serve: [8080] });
    await podAdd(lab, 'web-1', { node: st.nodes[1]!.name, namespace: 'gap', labels: { app: 'web' }, serve: [8080] });
    solo = await podAdd(lab, 'solo', { node: st.nodes[1]!.name, namespace: 'gap', labels: { app: 'solo' }, serve: [8081] });
    inside = await podAdd(lab, 'inside', { node: ctr, namespace: 'gap', labels: { role: 'client' } });
    outside = await podAdd(lab, 'outside', { node: ctr, namespace: 'gap', labels: { role: 'client' } });
  });

  after(async () => {
    for (const h of holders) h.kill('SIGKILL');
    await labDown(lab).catch(() => undefined);
  });

  test('loadBalancerSourceRanges: a pod outside them does not reach the LoadBalancer IP, with socket LB as without (DROP_NOT_IN_SRC_RANGE); inside them it does; the ClusterIP stays open', async () => {
    await labLbPoolAdd(lab, 'lan', { cidrs: [], start: '192.168.10.240', stop: '192.168.10.241', selector: { exposed: 'yes' } });
    const s = await labServiceAdd(lab, 'guarded', { namespace: 'gap', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'LoadBalancer', labels: { exposed: 'yes' }, loadBalancerSourceRanges: [`${inside.ip}/32`] });
    let lbIp = '';
    await until('the service has a LoadBalancer IP', async () => {
      lbIp = (await labServiceStatuses(lab)).get('gap/guarded')?.loadBalancer.ingress[0] ?? '';
      return lbIp !== '';
    }, 120_000);
    await until('the inside pod reaches the LoadBalancer IP through socket LB', () => get(inside, lbIp, 80).startsWith('web-'), 120_000);
    const seen = new Set<string>();
    await until('the inside pod reaches both backends (socket LB)', () => (seen.add(get(inside, lbIp, 80)), seen.has('web-0') && seen.has('web-1')), 120_000);
    assert.ok(get(inside, lbIp, 80, { outsideCgroup: true }).startsWith('web-'), 'inside, per packet');
    const sock = loadLab(lab).nodes.find((n) => n.name === ctr)!.socket;
    const before = await drops(sock, 177);
    assert.match(get(outside, lbIp, 80, { timeoutMs: 1500 }), /^error:/, 'outside the ranges, socket LB on: not served');
    assert.match(get(outside, lbIp, 80, { timeoutMs: 1500, outsideCgroup: true }), /^error:/, 'outside the ranges, per packet: not served');
    assert.ok((await drops(sock, 177)) - before >= 2, 'each attempt counted as DROP_NOT_IN_SRC_RANGE (egress)');
    assert.ok(get(outside, s.clusterIP!, 80).startsWith('web-'), 'the ClusterIP is not restricted (socket LB)');
    assert.ok(get(outside, s.clusterIP!, 80, { outsideCgroup: true }).startsWith('web-'), 'the ClusterIP is not restricted (per packet)');
  });

  test('a backend shared by two services leaves one: socket LB\'s connections through that one are destroyed, those through the other and a direct one live on', async () => {
    const a = await labServiceAdd(lab, 'sa', { namespace: 'gap', selector: {}, ports: [{ port: 83, targetPort: 8081, protocol: 'TCP' }], type: 'ClusterIP' });
    const c = await labServiceAdd(lab, 'sc', { namespace: 'gap', selector: {}, ports: [{ port: 84, targetPort: 8081, protocol: 'TCP' }], type: 'ClusterIP' });
    await labServiceEndpoints(lab, 'gap/sa', [{ ip: solo.ip, port: 8081 }]);
    await labServiceEndpoints(lab, 'gap/sc', [{ ip: solo.ip, port: 8081 }]);
    await until('both services answer from the pod', () => get(outside, a.clusterIP!, 83) === 'solo' && get(outside, c.clusterIP!, 84) === 'solo', 120_000);
    const targets = [{ ip: a.clusterIP!, port: 83 }, { ip: a.clusterIP!, port: 83 }, { ip: c.clusterIP!, port: 84 }, { ip: c.clusterIP!, port: 84 }, { ip: solo.ip, port: 8081 }];
    const h = startHolder(outside, { targets, timeout: 10_000 });
    holders.push(h.proc);
    await until(`the holder's connections answered (${h.stderr()})`, () => h.lines.some((l) => l['names']), 120_000);
    assert.deepEqual(h.lines.find((l) => l['names'])!['names'], ['solo', 'solo', 'solo', 'solo', 'solo']);
    await labServiceEndpoints(lab, 'gap/sa', []);
    await until(`the 2 connections through gap/sa report an error (${JSON.stringify(h.lines)})`, () => [0, 1].every((i) => h.lines.some((l) => l['i'] === i)), 120_000);
    const final = await holderFinal(h);
    for (const l of h.lines.filter((x) => x['i'] !== undefined)) {
      assert.ok(l['i'] === 0 || l['i'] === 1, `only the connections through gap/sa go: ${JSON.stringify(h.lines)}`);
      assert.equal(l['error'], 'ECONNABORTED', JSON.stringify(l));
    }
    assert.deepEqual(final, [null, null, 'solo', 'solo', 'solo'], 'gap/sc\'s and the direct connection still answer');
  });

  test('socket LB switched on for a live agent: TCP connections the per-packet path translated through the ClusterIP keep working; new ones go through socket LB', async () => {
    const s = await labServiceAdd(lab, 'live', { namespace: 'gap', selector: { app: 'web' }, ports: [{ port: 85, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP' });
    const setSocketLb = async (on: boolean): Promise<void> => {
      const st = loadLab(lab);
      st.socketLb = on;
      saveLab(st);
      await restartAgent(lab, ctr);
      const n = loadLab(lab).nodes.find((x) => x.name === ctr)!;
      const hz = await new ApiClient(n.socket).get<{ 'kube-proxy-replacement': { socketLb?: { enabled: boolean } } | null }>('/v1/healthz');
      assert.equal(hz['kube-proxy-replacement']?.socketLb?.enabled, on, `socket LB ${on ? 'on' : 'off'} on ${ctr}`);
    };
    try {
      await setSocketLb(false);
      await until('the pod reaches the ClusterIP per packet', () => get(outside, s.clusterIP!, 85).startsWith('web-'), 120_000);
      const ctBefore = count(lab, ctr, 'tendril_lb4_ct');
      const h = startHolder(outside, { targets: [...Array(4)].map(() => ({ ip: s.clusterIP!, port: 85 })), timeout: 10_000 });
      holders.push(h.proc);
      await until(`the holder's connections answered (${h.stderr()})`, () => h.lines.some((l) => l['names']), 120_000);
      const held = h.lines.find((l) => l['names'])!['names'] as string[];
      assert.ok(held.every((x) => x.startsWith('web-')), JSON.stringify(held));
      assert.ok(count(lab, ctr, 'tendril_lb4_ct') > ctBefore, 'translated per packet (LB conntrack entries)');
      await setSocketLb(true);
      // New connections: socket LB.
      assert.ok(get(outside, s.clusterIP!, 85).startsWith('web-'));
      const final = await holderFinal(h);
      assert.deepEqual(final, held, `the connections made before socket LB came on still answer, each from its backend (${JSON.stringify(h.lines)})`);
    } finally {
      const st = loadLab(lab);
      if (!st.socketLb) await setSocketLb(true).catch(() => undefined);
    }
  });
});
