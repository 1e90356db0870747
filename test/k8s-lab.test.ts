// Kubernetes mode end to end on lab nodes (root): operator and agents use the kit's real apiserver as their store;
// pods and namespaces created through the API get identities from the watched Pods' and Namespaces' labels, and
// reach each other across nodes. (Policies applied through the API, enforced: test/k8s-watch.test.ts.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { connect, KubernetesStore } from '../src/k8s/index.js';
import { execCapture, labDown, labUp, podAdd, podDel, type LabPod } from '../src/lab/lab.js';
import type { EndpointSpec, IdentitySpec } from '../src/store/index.js';
import { startKit, type Kit } from './lib/k8s-kit.js';
import { until as untilRaw } from './lib/proc.js';
import fs from 'node:fs';
import { labPaths } from '../src/lab/paths.js';

/** until(), and on a timeout the warnings at the end of the web node's agent log. */
async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  try {
    await untilRaw(what, cond);
  } catch (err) {
    const log = fs.readFileSync(labPaths(LAB).node('w1').logFile, 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-15).join('\n');
    throw new Error(`${(err as Error).message}\nagent w1 warnings:\n${log}`);
  }
}

const LAB = `k8s${process.pid % 100000}`;
const silent = pino({ level: 'silent' });

function http(from: LabPod, to: LabPod): boolean {
  return execCapture(from.netns, ['curl', '-s', '--max-time', '2', `http://${to.ip}:8080/`]).stdout.length > 0;
}

describe('kubernetes mode on lab nodes', { timeout: 600_000 }, () => {
  let kit: Kit | undefined;
  let objects: KubernetesObjectApi;
  let store: KubernetesStore;
  const pods: Record<string, LabPod> = {};

  before(async () => {
    kit = await startKit({ apiserverOnly: true });
    const conn = connect(kit.kubeconfig);
    objects = KubernetesObjectApi.makeApiClient(conn.kc);
    store = new KubernetesStore(conn, { log: silent });
    await labUp({ name: LAB, nodes: 2, kubeconfig: kit.kubeconfig, podCidr: '172.31.0.0/16' });
  });
  after(async () => {
    await store?.close();
    await labDown(LAB).catch(() => {});
    await kit?.down();
  });

  test('pods and namespaces created through the API get identities from their labels', async () => {
    await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { team: 'shop' } } } as KubernetesObject);
    // No controller-manager here (apiserver only): the ServiceAccount admission needs the account to exist.
    await objects.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'shop' } } as KubernetesObject);
    const place = [['web', 'w1', 'web'], ['client', 'ctr', 'client'], ['other', 'ctr', 'other']] as const;
    for (const [name, node, app] of place) {
      await objects.create({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'shop', labels: { app } },
        spec: { nodeName: node, containers: [{ name: 'c', image: 'localhost/busybox:local' }] },
      } as KubernetesObject);
      // The runtime's CNI ADD names the pod only (K8S_POD_NAMESPACE/K8S_POD_NAME); no labels are passed.
      pods[name] = await podAdd(LAB, name, { node, namespace: 'shop', serve: 8080 });
    }
    const ids = (await store.list<IdentitySpec>('Identity')).items;
    const web = ids.find((r) => r.value.labels.includes('k8s:app=web'));
    assert.ok(web, `no identity with k8s:app=web among ${JSON.stringify(ids.map((r) => r.value.labels))}`);
    assert.ok(web.value.labels.includes('k8s:io.cilium.k8s.namespace.labels.team=shop') || web.value.labels.some((l) => l.includes('team=shop')), JSON.stringify(web.value.labels));
    await until('the endpoints as TendrilEndpoints', async () => (await store.list<EndpointSpec>('Endpoint')).items.filter((r) => r.value.namespace === 'shop').length === 3);
    const eps = (await store.list<EndpointSpec>('Endpoint')).items.map((r) => r.value);
    assert.equal(eps.find((e) => e.pod === 'web')?.identity, Number(web.name));
    assert.equal(eps.find((e) => e.pod === 'web')?.ip, pods['web']!.ip);
    await until('client reaches web across nodes', () => http(pods['client']!, pods['web']!));
    assert.ok(http(pods['other']!, pods['web']!));
  });

  test('lab pod add in Kubernetes mode makes the Pod object (namespace and account too) when nobody did; lab pod del removes it', async () => {
    // What `tendril lab pod add web2 --namespace tools --label app=web` does on a lab started with --k8s-kubeconfig.
    const web2 = await podAdd(LAB, 'web2', { node: 'w1', namespace: 'tools', labels: { app: 'web' }, serve: 8080 });
    const obj = (await objects.read({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web2', namespace: 'tools' } })) as KubernetesObject & { spec?: { nodeName?: string }; status?: { podIP?: string } };
    assert.deepEqual(obj.metadata?.labels, { app: 'web' });
    assert.equal(obj.spec?.nodeName, 'w1');
    assert.equal(obj.status?.podIP, web2.ip, 'the lab reports the pod as its kubelet would');
    await until('web2 as a TendrilEndpoint with the k8s:app=web identity', async () => {
      const ep = (await store.list<EndpointSpec>('Endpoint')).items.find((r) => r.value.namespace === 'tools' && r.value.pod === 'web2')?.value;
      const id = ep && (await store.get<IdentitySpec>('Identity', String(ep.identity)))?.value;
      return !!id && id.labels.includes('k8s:app=web') && id.labels.includes('k8s:io.kubernetes.pod.namespace=tools');
    });
    await until('client reaches web2', () => http(pods['client']!, web2));
    await podDel(LAB, 'tools/web2');
    await until('the Pod object gone', async () => {
      try {
        await objects.read({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web2', namespace: 'tools' } });
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 404;
      }
    });
  });
});
