import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerTimes, kubeletStartTimes, podStartReport, processSched, sandboxTimes } from './k8s-podstart.js';

const LOG = [
  'time="2026-12-02T19:48:13.402373189Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:p1,Uid:b3,Namespace:podstart,Attempt:0,}"',
  'time="2026-12-02T19:48:13.500000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:x,Uid:b4,Namespace:kube-system,Attempt:0,}"',
  'time="2026-12-02T19:48:13.765123700Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:p1,Uid:b3,Namespace:podstart,Attempt:0,} returns sandbox id \\"c9\\""',
  'time="2026-12-02T19:48:14.000000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:x,Uid:b4,Namespace:kube-system,Attempt:0,} returns sandbox id \\"d0\\""',
  'time="2026-12-02T19:48:14.100000000Z" level=error msg="RunPodSandbox for &PodSandboxMetadata{Name:p2,Uid:b5,Namespace:podstart,Attempt:0,} failed, error"',
].join('\n');

test('sandboxTimes pairs start and "returns sandbox id" of the namespace\'s pods, in ms with sub-ms digits', () => {
  const t = sandboxTimes(LOG, 'podstart');
  assert.equal(t.length, 1);
  assert.ok(Math.abs(t[0]! - 362.7505) < 0.01, String(t[0]));
});

test('podStartReport gives ratios to bridge and says when pods were not Ready', () => {
  const r = podStartReport([
    { plugin: 'bridge', pods: 2, readyMs: [1000, 2000], sandboxMs: [400, 600], cniAddMs: [100, 200], notReady: 0, wallMs: 2500 },
    { plugin: 'tendril', pods: 2, readyMs: [500], sandboxMs: [200, 300], cniAddMs: [50, 100], notReady: 1, wallMs: 3000 },
  ]).join('\n');
  assert.match(r, /\| CNI ADD \(containerd exec of the plugin\) \| tendril \| 2 \| 50 \| 100 \| 0\.50x \| 0\.50x \|/);
  assert.match(r, /\*\*1 not Ready\*\*/);
});

test('podStartReport lists the agent\'s own ADD phases (where the tail goes)', () => {
  const addPhases = { verb: 'ADD', calls: 2, total: { p50: 40, p99: 90, max: 90 }, phases: [{ phase: 'pod-labels', p50: 5, p99: 60, max: 60 }, { phase: 'attach', p50: 20, p99: 25, max: 25 }] };
  const r = podStartReport([
    { plugin: 'bridge', pods: 2, readyMs: [1000, 2000], sandboxMs: [400, 600], cniAddMs: [100, 200], notReady: 0, wallMs: 2500 },
    { plugin: 'tendril', pods: 2, readyMs: [500, 600], sandboxMs: [200, 300], cniAddMs: [50, 100], notReady: 0, wallMs: 3000, addPhases },
  ]).join('\n');
  assert.match(r, /- tendril agent-side ADD phases over its last 2 ADDs \(ms, p50\/p99\/max\): total 40\/90\/90; pod-labels 5\/60\/60, attach 20\/25\/25/);
  assert.doesNotMatch(r, /bridge agent-side/);
});

test('containerTimes follows a pod\'s sandbox to its container\'s create and start; kubeletStartTimes reads the kubelet\'s SLO durations', () => {
  const log = [
    'time="2026-12-03T06:02:06.347023814Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:p7,Uid:3a,Namespace:podstart,Attempt:0,} returns sandbox id \\"bf01\\""',
    'time="2026-12-03T06:02:06.350000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:x,Uid:3b,Namespace:kube-system,Attempt:0,} returns sandbox id \\"aa02\\""',
    'time="2026-12-03T06:02:06.378105684Z" level=info msg="CreateContainer within sandbox \\"bf01\\" for container &ContainerMetadata{Name:c,Attempt:0,}"',
    'time="2026-12-03T06:02:06.400000000Z" level=info msg="CreateContainer within sandbox \\"aa02\\" for container &ContainerMetadata{Name:c,Attempt:0,}"',
    'time="2026-12-03T06:02:07.946907972Z" level=info msg="CreateContainer within sandbox \\"bf01\\" for &ContainerMetadata{Name:c,Attempt:0,} returns container id \\"f008\\""',
    'time="2026-12-03T06:02:07.989449923Z" level=info msg="StartContainer for \\"f008\\""',
    'time="2026-12-03T06:02:09.497895455Z" level=info msg="StartContainer for \\"f008\\" returns successfully"',
  ].join('\n');
  const { createMs, startMs } = containerTimes(log, 'podstart');
  assert.equal(createMs.length, 1);
  assert.ok(Math.abs(createMs[0]! - 1568.802288) < 0.01, String(createMs[0]));
  assert.equal(startMs.length, 1);
  assert.ok(Math.abs(startMs[0]! - 1508.445532) < 0.01, String(startMs[0]));
  const kubelet = [
    'I1203 06:02:09.862528    6337 pod_startup_latency_tracker.go:104] "Observed pod startup duration" pod="podstart/p7" podStartSLOduration=4.862515171 podStartE2EDuration="4.862515171s"',
    'I1203 06:02:09.900000    6337 pod_startup_latency_tracker.go:104] "Observed pod startup duration" pod="kube-system/tendril-agent-x" podStartSLOduration=9.5 podStartE2EDuration="9.5s"',
  ].join('\n');
  assert.deepEqual(kubeletStartTimes(kubelet, 'podstart').map((x) => Math.round(x)), [4863]);
});

test('processSched sums the threads\' schedstat of a process (here: this one, which has run)', () => {
  const a = processSched(process.pid);
  assert.ok(a && a.runNs > 0, JSON.stringify(a));
  for (let x = 0, t = Date.now(); Date.now() - t < 20; x++) void x; // spin: on-CPU time grows
  const b = processSched(process.pid)!;
  assert.ok(b.runNs > a.runNs, `${b.runNs} <= ${a.runNs}`);
  assert.equal(processSched(2 ** 30), undefined);
});

test('podStartReport shows the agent\'s scheduler time and the load when present', () => {
  const r = podStartReport([
    { plugin: 'bridge', pods: 1, readyMs: [1000], sandboxMs: [400], cniAddMs: [100], notReady: 0, wallMs: 2500, load1: 3.5 },
    { plugin: 'tendril', pods: 1, readyMs: [500], sandboxMs: [200], cniAddMs: [50], notReady: 0, wallMs: 3000, agentSched: { runMs: 1200, waitMs: 800, wallMs: 3000 }, load1: 4 },
  ]).join('\n');
  assert.match(r, /- tendril agent process over the burst \(3\.0 s\): on a CPU 1\.2 s, runnable but waiting for a CPU 0\.8 s/);
  assert.match(r, /- bridge: machine load \(1 min\) at the end of the burst 3\.5/);
});
