// Unit tests of the pod status the lab writes as its pods' kubelet (Kubernetes mode).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { podStatus } from './k8s-pods.js';

type Status = { phase: string; podIP: string; podIPs: Array<{ ip: string }>; hostIP: string; conditions: Array<{ type: string; status: string; reason?: string }>; containerStatuses: Array<{ name: string; ready: boolean; state: { running: { startedAt: string } } }> };

test('podStatus(): Running with the pod and host IPs; Ready and ContainersReady follow the readiness given, the other conditions stay True', () => {
  const containers = [{ name: 'c', image: 'localhost/busybox:local' }];
  const up = podStatus({ ip: '172.29.0.5' }, '192.168.10.2', containers, true, '2026-12-03T06:00:00Z') as unknown as Status;
  assert.equal(up.phase, 'Running');
  assert.equal(up.podIP, '172.29.0.5');
  assert.deepEqual(up.podIPs, [{ ip: '172.29.0.5' }]);
  assert.equal(up.hostIP, '192.168.10.2');
  const byType = (s: Status) => Object.fromEntries(s.conditions.map((c) => [c.type, c.status]));
  assert.deepEqual(byType(up), { PodReadyToStartContainers: 'True', Initialized: 'True', Ready: 'True', ContainersReady: 'True', PodScheduled: 'True' });
  assert.deepEqual(up.containerStatuses.map((c) => [c.name, c.ready, c.state.running.startedAt]), [['c', true, '2026-12-03T06:00:00Z']]);
  const down = podStatus({ ip: '172.29.0.5' }, '192.168.10.2', containers, false, '2026-12-03T06:00:00Z') as unknown as Status;
  assert.deepEqual(byType(down), { PodReadyToStartContainers: 'True', Initialized: 'True', Ready: 'False', ContainersReady: 'False', PodScheduled: 'True' });
  assert.equal(down.conditions.find((c) => c.type === 'Ready')?.reason, 'ContainersNotReady');
  assert.equal(down.containerStatuses[0]!.ready, false);
});
