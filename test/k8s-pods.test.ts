// The agent's pod lookup for CNI ADDs (src/k8s/pods.ts) against the kit's real apiserver: a pod the node's watch has
// not delivered is read with one direct GET instead of waiting for the watch; a pod that does not exist is a miss
// after the wait; a UID that does not match (the pod was re-created) is never answered.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { connect, PodSource } from '../src/k8s/index.js';
import { startKit, type Kit } from './lib/k8s-kit.js';
import { until } from './lib/proc.js';

const silent = pino({ level: 'silent' });
const NS = 'podsrc';

describe('pod lookup of the CNI ADD path', { timeout: 300_000 }, () => {
  let kit: Kit | undefined;
  let objects: KubernetesObjectApi;
  const sources: PodSource[] = [];

  before(async () => {
    kit = await startKit({ apiserverOnly: true });
    const conn = connect(kit.kubeconfig);
    objects = KubernetesObjectApi.makeApiClient(conn.kc);
    await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } as KubernetesObject);
    // No controller-manager (apiserver only): the ServiceAccount admission needs the account to exist.
    await objects.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: NS } } as KubernetesObject);
    for (const [name, node] of [['here', 'n1'], ['elsewhere', 'n2']] as const) {
      await objects.create({
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: name } },
        spec: { nodeName: node, serviceAccountName: 'default', automountServiceAccountToken: false, containers: [{ name: 'c', image: 'localhost/busybox:local' }] },
      } as KubernetesObject);
    }
  });
  after(async () => {
    for (const s of sources) await s.stop();
    await kit?.down();
  });

  function source(node: string): PodSource {
    const s = new PodSource(connect(kit!.kubeconfig), node, silent);
    sources.push(s);
    s.start();
    return s;
  }

  test('a pod of the node comes from the watch; one the watch does not have, from a direct GET', async () => {
    const s = source('n1');
    await until('the watch has pod "here"', async () => (await s.get(NS, 'here', undefined, 0), s.stats.watch > 0));
    const got = await s.get(NS, 'here');
    assert.deepEqual(got?.labels, { app: 'here' });
    const watched = s.stats.watch;
    const direct = s.stats.direct;
    // "elsewhere" is on n2: this source's watch (spec.nodeName=n1) never delivers it, so only the GET can answer.
    const t0 = performance.now();
    const other = await s.get(NS, 'elsewhere', undefined, 60_000);
    assert.deepEqual(other?.labels, { app: 'elsewhere' });
    assert.equal(other?.serviceAccount, 'default');
    assert.equal(s.stats.direct, direct + 1);
    assert.equal(s.stats.watch, watched);
    assert.ok(performance.now() - t0 < 60_000, 'answered before the wait was over');
  });

  test('a missing pod, or one whose UID is not the CNI call\'s, is a miss after the wait', async () => {
    const s = source('n1');
    assert.equal(await s.get(NS, 'nosuchpod', undefined, 300), undefined);
    assert.equal(await s.get(NS, 'elsewhere', 'not-its-uid', 300), undefined);
    assert.equal(s.stats.missed, 2);
    assert.equal(s.stats.direct, 0);
  });
});
