// Kubernetes mode, the watched core resources on lab nodes (root): NetworkPolicies and TendrilNetworkPolicies applied
// through the apiserver are enforced in BPF (denied, then allowed), a namespace label selector follows the
// Namespace's labels, and these watches recover from an apiserver restart without losing an update.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { execCapture, labDown, labUp, podAdd, type LabPod } from '../src/lab/lab.js';
import { CLI_JS, labPaths } from '../src/lab/paths.js';
import { killApiserver, rawObjects, upAgain, startKit, type Kit, type RawObject } from './lib/k8s-kit.js';
import { until as untilRaw } from './lib/proc.js';

const LAB = `kw${process.pid % 100000}`;
/** This file's ports (16700-16799 are the k8s-watch tests'). */
const PORT_BASE = 16710;

async function until(what: string, cond: () => boolean | Promise<boolean>, ms?: number): Promise<void> {
  try {
    await untilRaw(what, cond, ms);
  } catch (err) {
    const log = fs.readFileSync(labPaths(LAB).node('w1').logFile, 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-15).join('\n');
    throw new Error(`${(err as Error).message}\nagent w1 warnings:\n${log}`);
  }
}

function cli(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI_JS, '--lab', LAB, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function http(from: LabPod, to: LabPod): boolean {
  return execCapture(from.netns, ['curl', '-s', '--max-time', '2', `http://${to.ip}:8080/`]).stdout.length > 0;
}

describe('kubernetes mode: watched NetworkPolicies and Namespaces on lab nodes', { timeout: 900_000 }, () => {
  let kit: Kit | undefined;
  let objects: ReturnType<typeof rawObjects>;
  const pods: Record<string, LabPod> = {};
  const apply = async (o: RawObject): Promise<void> => {
    await objects.create(o);
  };

  before(async () => {
    // The controller-manager too: a Service's backends are the EndpointSlices its endpoint-slice controller writes
    // from the pods' status (which the lab reports as their kubelet would).
    kit = await startKit({ portBase: PORT_BASE });
    objects = rawObjects(kit.kubeconfig);
    await labUp({ name: LAB, nodes: 2, kubeconfig: kit.kubeconfig, podCidr: '172.30.0.0/16' });
    for (const [ns, labels] of [['shop', { team: 'shop' }], ['ops', { team: 'ops' }]] as const) {
      await apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels } });
      // The default ServiceAccount the admission wants (the serviceaccount controller may have made it already).
      await objects.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: ns } }).catch((err: { code?: number }) => {
        if (err.code !== 409) throw err;
      });
    }
    for (const [name, ns, node, app] of [['web', 'shop', 'w1', 'web'], ['client', 'shop', 'ctr', 'client'], ['other', 'shop', 'ctr', 'other'], ['probe', 'ops', 'ctr', 'probe']] as const) {
      await apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels: { app } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
      pods[name] = await podAdd(LAB, name, { node, namespace: ns, serve: 8080 });
    }
  });
  after(async () => {
    await labDown(LAB).catch(() => {});
    await kit?.down();
  });

  test('a NetworkPolicy applied through the API is enforced: denied, then allowed for the selected pods', async () => {
    await until('client reaches web before any policy', () => http(pods['client']!, pods['web']!));
    await apply({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-all', namespace: 'shop' }, spec: { podSelector: {} } });
    await until('deny-all to deny client → web', () => !http(pods['client']!, pods['web']!));
    await apply({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'allow-client', namespace: 'shop' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080, protocol: 'TCP' }] }] },
    });
    await until('allow-client to let client → web through', () => http(pods['client']!, pods['web']!));
    assert.equal(http(pods['other']!, pods['web']!), false, 'other (not selected) must stay denied');
    assert.equal(http(pods['probe']!, pods['web']!), false, 'probe (other namespace) must stay denied');
    // The CLI in Kubernetes mode: the node's endpoints with their pods, the NetworkPolicies from the apiserver, and
    // the flows (here the denied ones) naming namespace/pod.
    const eps = cli(['--node', 'w1', 'endpoint', 'list']);
    assert.equal(eps.status, 0, eps.stderr);
    assert.match(eps.stdout, /\bPOD\b/);
    assert.match(eps.stdout, /ready\s+shop\/web$/m, eps.stdout);
    const pol = cli(['--node', 'w1', 'policy', 'get']);
    assert.equal(pol.status, 0, pol.stderr);
    const names = (JSON.parse(pol.stdout) as Array<{ kind: string; metadata: { name: string; namespace?: string } }>).map((p) => `${p.kind}/${p.metadata.namespace}/${p.metadata.name}`);
    assert.ok(names.includes('NetworkPolicy/shop/deny-all') && names.includes('NetworkPolicy/shop/allow-client'), names.join(' '));
    const fl = cli(['--node', 'w1', 'observe', '--verdict', 'DROPPED', '--last', '200']);
    assert.equal(fl.status, 0, fl.stderr);
    assert.match(fl.stdout, /shop\/other[^\n]* (->|<>) shop\/web[^\n]*DROPPED/, fl.stdout);
  });

  test('a namespace label selector follows the Namespace labels changed through the API', async () => {
    await apply({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'allow-monitoring', namespace: 'shop' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { monitoring: 'yes' } } }] }] },
    });
    assert.equal(http(pods['probe']!, pods['web']!), false);
    await objects.mergePatch({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ops', labels: { monitoring: 'yes' } } });
    await until('probe (namespace ops labelled monitoring=yes) reaches web', () => http(pods['probe']!, pods['web']!));
    assert.equal(http(pods['other']!, pods['web']!), false);
  });

  test('a TendrilNetworkPolicy applied through the API is enforced', async () => {
    assert.equal(http(pods['other']!, pods['web']!), false);
    await apply({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: 'allow-other', namespace: 'shop' },
      spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'other' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
    });
    await until('allow-other to let other → web through', () => http(pods['other']!, pods['web']!));
    await objects.delete({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name: 'allow-other', namespace: 'shop' } });
    await until('deleting it to deny other → web again', () => !http(pods['other']!, pods['web']!));
  });

  test('the agents\' watches survive an apiserver restart: a policy deleted while it restarts is no longer enforced', async () => {
    assert.ok(http(pods['client']!, pods['web']!));
    await killApiserver(kit!);
    await upAgain(kit!);
    // Right after it is back, before the agents' informers have re-listed: both changes must arrive.
    await objects.delete({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'allow-client', namespace: 'shop' } });
    await until('client → web denied after the restart (allow-client deleted)', () => !http(pods['client']!, pods['web']!), 120_000);
    for (const name of ['deny-all', 'allow-monitoring']) await objects.delete({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: 'shop' } });
    await until('other → web allowed again (no policy selects web)', () => http(pods['other']!, pods['web']!), 120_000);
  });

  test('a ClusterIP Service created through the API load-balances from a pod over both backends', async () => {
    pods['web2'] = await (async () => {
      await apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web2', namespace: 'shop', labels: { app: 'web' } }, spec: { nodeName: 'ctr', containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
      return podAdd(LAB, 'web2', { node: 'ctr', namespace: 'shop', serve: 8080 });
    })();
    const svc = await objects.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] } });
    const clusterIP = (svc['spec'] as { clusterIP: string }).clusterIP;
    assert.match(clusterIP, /^10\.96\./, 'the apiserver allocates it from the kit\'s service CIDR');
    const seen = new Set<string>();
    await until(`client reaches web and web2 through ${clusterIP}:80`, () => {
      const out = execCapture(pods['client']!.netns, ['curl', '-s', '--max-time', '2', `http://${clusterIP}:80/`]).stdout;
      const m = /Hostname: (\S+)/.exec(out);
      if (m) seen.add(m[1]!);
      return seen.has('web') && seen.has('web2');
    }, 120_000);
    // Deleting it through the API removes the frontend.
    await objects.delete({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' } });
    await until('the ClusterIP to stop answering', () => execCapture(pods['client']!.netns, ['curl', '-s', '--max-time', '2', `http://${clusterIP}:80/`]).stdout.length === 0);
  });
});
