// Kubernetes mode against the kit's real apiserver: CRDs install and validate, the Kubernetes-backed Store (CRDs +
// watched core resources) keeps the Store contract, and its watches survive an apiserver restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { connect, installCrds, KubernetesStore, loadCrds, type K8sConnection } from '../src/k8s/index.js';
import { KindCache, StoreError, type IdentitySpec, type NamespaceSpec, type PolicySpec } from '../src/store/index.js';
import { CLI_JS } from '../src/lab/paths.js';
import type { OperatorStatusResponse } from '../src/operator/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { killApiserver, startKit, upAgain, type Kit } from './lib/k8s-kit.js';
import { until } from './lib/proc.js';

const silent = pino({ level: 'silent' });

describe('kubernetes mode: apiserver', { timeout: 300_000 }, () => {
  let kit: Kit | undefined;
  let conn: K8sConnection;
  let objects: KubernetesObjectApi;

  before(async () => {
    kit = await startKit({ apiserverOnly: true });
    conn = connect(kit.kubeconfig);
    objects = KubernetesObjectApi.makeApiClient(conn.kc);
  });
  after(async () => {
    await kit?.down();
  });

  test('the operator installs the CRDs, a second install changes nothing, and they are established', async () => {
    const first = await installCrds(conn);
    assert.deepEqual(first.created, loadCrds().map((c) => c.metadata!.name!));
    assert.ok(first.created.includes('tendrilnetworkpolicies.tendril.io'));
    const again = await installCrds(conn);
    assert.deepEqual(again, { created: [], updated: [] });
  });

  test('a malformed TendrilNetworkPolicy is refused by the apiserver, a good one is stored', async () => {
    const good = {
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: 'allow-web', namespace: 'default' },
      spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
    };
    await objects.create(good as KubernetesObject);
    const bad = [
      { spec: { endpointSelector: 'app=web' } },
      { spec: { endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: 80, protocol: 'HTTP' }] }] }] } },
      { spec: { endpointSelector: {}, ingress: [{ fromEntities: ['everyone'] }] } },
      { spec: { ingress: [] } },
    ];
    for (const [i, b] of bad.entries()) {
      await assert.rejects(
        objects.create({ ...good, metadata: { name: `bad-${i}`, namespace: 'default' }, ...b } as KubernetesObject),
        (err: { code?: number; body?: string }) => {
          assert.equal(err.code, 422, `bad-${i}: ${String(err.body)}`);
          return true;
        },
      );
    }
    await objects.delete({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name: 'allow-web', namespace: 'default' } });
  });

  test('the store: CRD kinds with revisions and conflicts, namespaces and policies from core resources', async () => {
    const store = new KubernetesStore(conn, { log: silent });
    try {
      const id = await store.put<IdentitySpec>('Identity', '300', { labels: ['k8s:app=web'] }, { expectedRevision: 0 });
      assert.ok(id.revision > 0);
      await assert.rejects(store.put('Identity', '300', { labels: ['k8s:app=x'] }, { expectedRevision: 0 }), (e: StoreError) => e.code === 'TENDRIL_ERR_STORE_CONFLICT');
      const upd = await store.put<IdentitySpec>('Identity', '300', { labels: ['k8s:app=web2'] }, { expectedRevision: id.revision });
      assert.ok(upd.revision > id.revision);
      await assert.rejects(store.put('Identity', '300', { labels: ['k8s:app=x'] }, { expectedRevision: id.revision }), (e: StoreError) => e.code === 'TENDRIL_ERR_STORE_CONFLICT');
      assert.deepEqual((await store.get<IdentitySpec>('Identity', '300'))?.value, { labels: ['k8s:app=web2'] });
      await assert.rejects(store.put('Identity', '301', { labels: 'not-a-list' }), (e: StoreError) => e.code === 'TENDRIL_ERR_STORE_INVALID');
      await assert.rejects(store.delete('Identity', '300', { expectedRevision: id.revision }), (e: StoreError) => e.code === 'TENDRIL_ERR_STORE_CONFLICT');
      assert.equal(await store.delete('Identity', '300', { expectedRevision: upd.revision }), true);
      assert.equal(await store.delete('Identity', '300'), false);

      // Endpoint names carry a ":" that Kubernetes names cannot.
      const ep = { node: 'n1', id: 7, namespace: 'default', pod: 'web', ip: '10.0.0.7', nodeIP: '192.168.0.1', identity: 300, namedPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }] };
      await store.put('Endpoint', 'n1:7', ep);
      assert.deepEqual((await store.list('Endpoint')).items.map((r) => [r.name, r.value]), [['n1:7', ep]]);

      // Namespaces: the core resource's labels, created and changed through the API, show in the store.
      await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a', labels: { team: 'a' } } } as KubernetesObject);
      await until('namespace team-a in the store', async () => (await store.list<NamespaceSpec>('Namespace')).items.some((r) => r.name === 'team-a' && r.value.labels['team'] === 'a'));
      const ns = (await store.get<NamespaceSpec>('Namespace', 'team-a'))!;
      assert.equal(ns.value.labels['kubernetes.io/metadata.name'], 'team-a');
      await store.put<NamespaceSpec>('Namespace', 'team-a', { labels: { 'kubernetes.io/metadata.name': 'team-a', tier: 'x' } }, { expectedRevision: ns.revision });
      assert.deepEqual((await store.get<NamespaceSpec>('Namespace', 'team-a'))?.value.labels, { 'kubernetes.io/metadata.name': 'team-a', tier: 'x' });

      // Policies: a NetworkPolicy applied through the API is a store Policy, its document what the agent parses.
      await objects.create({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-all', namespace: 'team-a' }, spec: { podSelector: {} } } as KubernetesObject);
      await until('the NetworkPolicy in the store', async () => (await store.list<PolicySpec>('Policy')).items.some((r) => r.name === 'NetworkPolicy.team-a.deny-all'));
      const pol = (await store.get<PolicySpec>('Policy', 'NetworkPolicy.team-a.deny-all'))!;
      assert.deepEqual(pol.value.document, { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-all', namespace: 'team-a' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
      // ... and one the operator's API writes becomes a TendrilClusterwideNetworkPolicy object.
      const doc = { apiVersion: 'tendril.io/v2', kind: 'TendrilClusterwideNetworkPolicy', metadata: { name: 'cw' }, spec: { endpointSelector: {}, ingress: [{ fromEntities: ['cluster'] }] } };
      await store.put<PolicySpec>('Policy', 'TendrilClusterwideNetworkPolicy..cw', { document: doc });
      const read = await objects.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilClusterwideNetworkPolicy', metadata: { name: 'cw' } });
      assert.deepEqual((read as unknown as { spec: unknown }).spec, doc.spec);
      assert.equal(await store.delete('Policy', 'TendrilClusterwideNetworkPolicy..cw'), true);
      assert.ok((await store.ping()).ok);
    } finally {
      await store.close();
    }
  });

  test('a watch broken by an apiserver restart recovers without losing an update', async () => {
    const store = new KubernetesStore(conn, { log: silent });
    const cache = new KindCache<IdentitySpec>(store, 'Identity', silent);
    const seen: Array<[string, string[] | undefined]> = [];
    let downs = 0;
    try {
      await store.put<IdentitySpec>('Identity', '400', { labels: ['k8s:app=a'] });
      await cache.start({ change: (name, v) => seen.push([name, v?.labels]), connection: (up) => (up ? undefined : downs++) });
      assert.deepEqual(cache.get('400'), { labels: ['k8s:app=a'] });
      await store.put<IdentitySpec>('Identity', '401', { labels: ['k8s:app=b'] });
      await until('401 through the watch', () => cache.get('401') !== undefined);

      // Kill the apiserver; while it is down a second client cannot write, so write right after it is back, before
      // the watch has had a chance to reconnect, and also delete one: both must arrive.
      await killApiserver(kit!);
      await until('the watch to notice', () => downs > 0, 60_000);
      await upAgain(kit!);
      const other = new KubernetesStore(connect(kit!.kubeconfig), { log: silent });
      await other.put<IdentitySpec>('Identity', '402', { labels: ['k8s:app=c'] });
      await other.delete('Identity', '401');
      await other.put<IdentitySpec>('Identity', '400', { labels: ['k8s:app=a2'] });
      await other.close();
      await until('the cache to catch up', () => cache.get('402') !== undefined && cache.get('401') === undefined && cache.get('400')?.labels[0] === 'k8s:app=a2', 60_000);
      // Each change once: 400 (changed), 401 (added, then deleted), 402 (added).
      assert.deepEqual(seen.map(([n]) => n).sort(), ['400', '401', '401', '402']);
    } finally {
      cache.stop();
      await store.close();
    }
  });

  test('two operator replicas: one leads (allocates), the other takes over when it dies', async () => {
    const dir = fs.mkdtempSync('/tmp/tk8s-op-');
    const procs: ChildProcess[] = [];
    const start = (i: number): { proc: ChildProcess; api: ApiClient } => {
      const socket = path.join(dir, `op${i}.sock`);
      const log = fs.openSync(path.join(dir, `op${i}.log`), 'a');
      const proc = spawn(process.execPath, [CLI_JS, 'operator', '--k8s-kubeconfig', kit!.kubeconfig, '--api-socket', socket, '--cluster-pool-cidr', '10.60.0.0/16',
        '--leader-election-lease-duration', '2s', '--node-cidr-grace', '1s'], { stdio: ['ignore', log, log] });
      procs.push(proc);
      return { proc, api: new ApiClient(socket, 'operator') };
    };
    const status = (api: ApiClient): Promise<OperatorStatusResponse | undefined> => api.get<OperatorStatusResponse>('/v1/status').catch(() => undefined);
    const store = new KubernetesStore(conn, { log: silent });
    try {
      const a = start(1);
      const b = start(2);
      let leader: { proc: ChildProcess; api: ApiClient } | undefined;
      let follower: typeof leader;
      await until('one leader and one follower', async () => {
        const [sa, sb] = await Promise.all([status(a.api), status(b.api)]);
        if (!sa?.kubernetes || !sb?.kubernetes) return false;
        if (sa.kubernetes.leader === sb.kubernetes.leader) return false;
        [leader, follower] = sa.kubernetes.leader ? [a, b] : [b, a];
        return true;
      }, 60_000);
      const st = (await status(follower!.api))!;
      assert.equal(st.kubernetes?.ok, true);
      assert.match(`${st.kubernetes?.version} ${st.kubernetes?.['git-version']}`, /^1\.32 v1\.32\./);
      // The leader allocates: a TendrilNode gets a pod CIDR from the pool.
      await store.put('Node', 'w1', { name: 'w1', addresses: ['192.168.9.1'], podCIDRs: [] });
      await until('w1 to get a CIDR', async () => ((await store.get<{ podCIDRs: string[] }>('Node', 'w1'))?.value.podCIDRs.length ?? 0) > 0, 60_000);
      leader!.proc.kill('SIGKILL');
      await until('the follower to take the lease over', async () => (await status(follower!.api))?.kubernetes?.leader === true, 60_000);
      await store.put('Node', 'w2', { name: 'w2', addresses: ['192.168.9.2'], podCIDRs: [] });
      await until('w2 to get a CIDR from the new leader', async () => ((await store.get<{ podCIDRs: string[] }>('Node', 'w2'))?.value.podCIDRs.length ?? 0) > 0, 60_000);
      const w1 = (await store.get<{ podCIDRs: string[] }>('Node', 'w1'))!.value.podCIDRs;
      const w2 = (await store.get<{ podCIDRs: string[] }>('Node', 'w2'))!.value.podCIDRs;
      assert.notDeepEqual(w1, w2);
    } finally {
      await store.close();
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
