// Kubernetes mode with --ipam kubernetes (root): an agent takes its pod CIDR from the core Node's spec.podCIDRs
// (written through the API, as kube-controller-manager does), comes up with it, publishes it for the other nodes,
// and its pods get addresses from it and reach a pod on another node.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execCapture, labDown, labNodeAdd, labUp, podAdd } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import type { StatusView } from '../src/agent/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { rawObjects, startKit, type Kit } from './lib/k8s-kit.js';
import { until } from './lib/proc.js';

const LAB = `ki${process.pid % 100000}`;
const PORT_BASE = 16730;

describe('kubernetes mode: --ipam kubernetes follows the core Node spec.podCIDRs', { timeout: 600_000 }, () => {
  let kit: Kit | undefined;

  before(async () => {
    kit = await startKit({ apiserverOnly: true, portBase: PORT_BASE });
    await labUp({ name: LAB, nodes: 1, kubeconfig: kit.kubeconfig, podCidr: '172.27.0.0/16', ipam: { mode: 'kubernetes' } });
  });
  after(async () => {
    await labDown(LAB).catch(() => {});
    await kit?.down();
  });

  test('a node whose agent waits gets its CIDR from the Node object, and its pods reach the other node', async () => {
    const o = rawObjects(kit!.kubeconfig);
    await o.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'w1' } });
    await labNodeAdd(LAB, { name: 'w1', wait: false });
    const agent = new ApiClient(labPaths(LAB).node('w1').socket, 'agent');
    // Set after the agent started (it waits for one): the watch must deliver it.
    await o.mergePatch({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'w1' }, spec: { podCIDR: '172.27.77.0/24', podCIDRs: ['172.27.77.0/24'] } });
    let st: StatusView | undefined;
    await until('agent w1 up with the Node\'s CIDR', async () => {
      st = await agent.get<StatusView>('/v1/healthz').catch(() => undefined);
      return st?.ipam?.['pod-cidr'] === '172.27.77.0/24';
    }, 180_000);
    // Its CNI config comes once it is ready (after its egress map synced), a moment after the CIDR shows in status.
    await until('agent w1 wrote its CNI config', () => fs.existsSync(`${labPaths(LAB).node('w1').cniConfDir}/05-tendril.conflist`), 180_000);
    // No controller-manager (apiserver only): the ServiceAccount the admission wants, then the Pods the CNI ADDs name.
    await o.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'default' } });
    for (const [name, node] of [['a', 'w1'], ['b', 'ctr']]) {
      await o.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: name!, namespace: 'default', labels: { app: name! } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
    }
    const a = await podAdd(LAB, 'a', { node: 'w1', serve: 8080 });
    assert.match(a.ip, /^172\.27\.77\./);
    const b = await podAdd(LAB, 'b', { node: 'ctr' });
    await until('b (ctr) reaches a (w1) across nodes', () => execCapture(b.netns, ['curl', '-s', '--max-time', '2', `http://${a.ip}:8080/`]).stdout.length > 0, 120_000);
  });
});
