import { test } from 'node:test';
import assert from 'node:assert/strict';
import { podStartReport, sandboxTimes } from './k8s-podstart.js';

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
