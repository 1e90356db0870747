// Kubernetes mode end to end on the kit's kubelet node (root): containerd + kubelet in the kit's node netns, calling
// tendril-cni. Tendril is installed from install/kubernetes/ with the image scripts/build-image.sh makes (imported
// into the node's containerd, no registry): the agent runs AS THE DAEMONSET POD (host network = the kit node netns),
// the operator as the Deployment's pod, both with their ServiceAccounts' tokens (in-cluster config) and RBAC.
// Pods created through the API get Tendril addresses and reach each other; a NetworkPolicy applied through the API
// is enforced (deny, then allow); a Service's backends are its EndpointSlices' ready pods (a pod failing its
// readinessProbe gets no connection); deleting a pod releases its IP, veth and endpoint map entry.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig, KubernetesObjectApi, type KubernetesObject, type V1Pod } from '@kubernetes/client-node';
import { ApiClient } from '../src/util/api-client.js';
import type { StatusView } from '../src/agent/api.js';
import { startKit, type Kit } from './lib/k8s-kit.js';
import { deletePods, installOnKitNode, podExec, type TendrilOnKit } from './lib/k8s-node.js';
import { until as untilRaw } from './lib/proc.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RUN = `kn${process.pid % 100000}`;
const PORT_BASE = 16900 + (process.pid % 8) * 6; // 16900-16947 (the pod-start bench: 16660-16695)
const NS = 'default';

describe('kubernetes mode on the kit\'s kubelet node (agent as the DaemonSet pod)', { timeout: 900_000 }, () => {
  let kit: Kit | undefined;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let objects: KubernetesObjectApi;
  let netns = '';
  let dirs: { root: string; run: string; state: string; conf: string; bin: string; netns: string; criNetns: string };
  let tendril: TendrilOnKit | undefined;
  let agent: ApiClient;

  /** Waits, and on a timeout says what the Tendril pods and the kit's logs said. */
  async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 180_000): Promise<void> {
    try {
      await untilRaw(what, async () => { try { return await cond(); } catch { return false; } }, ms);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await diagnostics()}`);
    }
  }
  async function diagnostics(): Promise<string> {
    const out: string[] = [];
    try {
      const pods = (await core.listNamespacedPod({ namespace: 'kube-system' })).items;
      for (const p of pods) {
        out.push(`pod ${p.metadata?.name}: ${p.status?.phase} ${JSON.stringify(p.status?.containerStatuses?.map((c) => c.state))}`);
        for (const c of p.spec?.containers ?? []) {
          const log = await core.readNamespacedPodLog({ name: p.metadata!.name!, namespace: 'kube-system', container: c.name, tailLines: 15 }).catch((e: Error) => e.message);
          out.push(`--- ${p.metadata?.name}/${c.name}:\n${log}`);
        }
      }
    } catch (err) {
      out.push(`(pods: ${(err as Error).message})`);
    }
    for (const f of ['kubelet', 'containerd']) {
      const log = path.join(kit?.runDir ?? '/nonexistent', 'logs', `${f}.log`);
      if (fs.existsSync(log)) out.push(`--- ${f}.log:\n${fs.readFileSync(log, 'utf8').split('\n').filter((l) => /error|fail/i.test(l)).slice(-8).join('\n')}`);
    }
    return out.join('\n');
  }
  /** The end of each kit component's log (a failed start's cause is often only there). */
  function kitLogs(): string {
    const logs = path.join(kit?.runDir ?? '/nonexistent', 'logs');
    if (!fs.existsSync(logs)) return '(no kit logs)';
    return fs.readdirSync(logs).map((f) => `--- ${f}:\n${fs.readFileSync(path.join(logs, f), 'utf8').split('\n').slice(-12).join('\n')}`).join('\n');
  }
  const sh = (argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const inNode = (argv: string[]) => sh(['nsenter', `--net=/run/netns/${netns}`, '--', ...argv]);

  async function pod(name: string, app: string, command: string, container: Record<string, unknown> = {}): Promise<V1Pod> {
    await objects.create({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: NS, labels: { app } },
      spec: {
        automountServiceAccountToken: false,
        terminationGracePeriodSeconds: 1,
        containers: [{ name: 'c', image: 'localhost/busybox:local', imagePullPolicy: 'Never', command: ['/bin/sh', '-c', command], ...container }],
      },
    } as KubernetesObject);
    let p: V1Pod | undefined;
    await until(`pod ${name} Running with an IP`, async () => {
      p = await core.readNamespacedPod({ name, namespace: NS });
      return p.status?.phase === 'Running' && !!p.status.podIP;
    });
    return p!;
  }
  const web = (from: string, ip: string) => podExec(kc, NS, from, 'c', ['/bin/sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ip} 8080`]);

  before(async () => {
    // the image first: a build failure needs no kit
    const image = execFileSync('bash', [path.join(REPO, 'scripts/build-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    // The kit's control plane and node, then Tendril on it. Starting them is the one step that depends on the
    // machine (ports, containerd, the image import): a failed start is said on stderr with the kit's logs, undone,
    // and tried once more; a second failure fails the suite with both causes.
    const failures: string[] = [];
    for (let attempt = 1; !tendril; attempt++) {
      try {
        kit = await startKit({ portBase: PORT_BASE, env: { K8S_ALLOCATE_NODE_CIDRS: 'false' } });
        kc = new KubeConfig();
        kc.loadFromFile(kit.kubeconfig);
        core = kc.makeApiClient(CoreV1Api);
        objects = KubernetesObjectApi.makeApiClient(kc);
        tendril = await installOnKitNode(kit, { run: RUN, image, repo: REPO, kc });
      } catch (err) {
        const why = `k8s-node: starting the kit and Tendril, attempt ${attempt}, failed: ${(err as Error).stack ?? err}\n${kitLogs()}`;
        process.stderr.write(`${why}\n`);
        failures.push(why);
        await kit?.script('down.sh', []).catch(() => {});
        await kit?.down().catch(() => {});
        kit = undefined;
        if (attempt === 2) throw new Error(failures.join('\n\n'));
      }
    }
    dirs = tendril.dirs;
    netns = tendril.netns;
    agent = new ApiClient(`${dirs.run}/tendril.sock`);
  });

  after(async () => {
    // the test's pods first, while the agent still runs their CNI DELs; then down.sh stops everything
    if (kc) await deletePods(kc, NS);
    await kit?.script('down.sh', []).catch((e: Error) => process.stderr.write(`${e.message}\n`));
    await tendril?.cleanup();
    await kit?.down();
  });

  test('the agent runs as the DaemonSet pod, the operator as the Deployment\'s, and the node turns Ready', async () => {
    await until('the tendril-agent pod Running', async () => {
      const pods = (await core.listNamespacedPod({ namespace: 'kube-system', labelSelector: 'k8s-app=tendril-agent' })).items;
      return pods.length === 1 && pods[0]!.status?.phase === 'Running';
    });
    await until('the agent answers on its socket in Kubernetes mode', async () => {
      const st = await agent.get<StatusView>('/v1/healthz');
      return st.kubernetes?.ok === true && st.ipam !== null;
    });
    await until('the conflist written by the agent', () => fs.existsSync(`${dirs.conf}/05-tendril.conflist`));
    await until('the node Ready', async () => {
      const n = (await core.listNode()).items[0];
      return n?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    });
    const op = (await core.listNamespacedPod({ namespace: 'kube-system', labelSelector: 'k8s-app=tendril-operator' })).items;
    assert.equal(op.length, 1);
    assert.equal(op[0]!.status?.phase, 'Running');
    // Ready through the readiness probes (exec `tendril healthz --ready` against each component's API): with a
    // probe the kubelet keeps the container unready until the probe passes once.
    for (const app of ['tendril-agent', 'tendril-operator']) {
      const spec = (await core.listNamespacedPod({ namespace: 'kube-system', labelSelector: `k8s-app=${app}` })).items[0]?.spec?.containers[0];
      assert.match((spec?.readinessProbe?.exec?.command ?? []).join(' '), /healthz --ready/, `${app} has the healthz readiness probe`);
      assert.match((spec?.livenessProbe?.exec?.command ?? []).join(' '), /healthz/, `${app} has the healthz liveness probe`);
      await until(`the ${app} pod Ready by its readiness probe`, async () => {
        const p = (await core.listNamespacedPod({ namespace: 'kube-system', labelSelector: `k8s-app=${app}` })).items[0];
        return p?.status?.containerStatuses?.[0]?.ready === true && p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') === true;
      });
    }
    // the agent process is the container's, in the node netns: its pid's netns is the kit node's
    const ipamCidr = (await agent.get<StatusView>('/v1/healthz')).ipam!['pod-cidr'];
    assert.match(ipamCidr, /^10\.244\./);
  });

  let webIp = '';
  test('pods created through the API get Tendril addresses and reach each other', async (t) => {
    const w = await pod('web', 'web', 'mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www');
    const c = await pod('client', 'client', 'exec sleep 100000');
    webIp = w.status!.podIP!;
    const st = await agent.get<StatusView>('/v1/healthz');
    const owners = new Map(st.ipam!.allocations.map((a) => [a.ip, a.owner]));
    assert.ok(owners.has(webIp), `web's ${webIp} not allocated by Tendril's IPAM: ${JSON.stringify([...owners])}`);
    assert.ok(owners.has(c.status!.podIP!), `client's ${c.status!.podIP} not allocated by Tendril's IPAM`);
    await until('client reaches web', async () => (await web('client', webIp)).stdout.includes('hello-from-web'));
    // what `kubectl get pods -A -o wide` and `tendril endpoint list` show on the node (for the README)
    const all = (await core.listPodForAllNamespaces()).items;
    const rows = [['NAMESPACE', 'NAME', 'READY', 'STATUS', 'IP', 'NODE'], ...all.map((p) => [p.metadata!.namespace!, p.metadata!.name!,
      `${p.status?.containerStatuses?.filter((c) => c.ready).length ?? 0}/${p.spec?.containers.length ?? 0}`, p.status?.phase ?? '', p.status?.podIP ?? '', p.spec?.nodeName ?? ''])];
    const width = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    t.diagnostic('pods:\n' + rows.map((r) => r.map((c, i) => c.padEnd(width[i]!)).join('   ').trimEnd()).join('\n'));
    t.diagnostic('tendril endpoint list:\n' + execFileSync(process.execPath, [path.join(REPO, 'dist/src/cli/main.js'), '--socket', `${dirs.run}/tendril.sock`, 'endpoint', 'list'], { encoding: 'utf8' }));
  });

  test('a NetworkPolicy applied through the API is enforced: deny, then allow', async () => {
    await objects.create({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'web-ingress', namespace: NS },
      spec: { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'] },
    } as KubernetesObject);
    await until('client denied by the default-deny ingress policy', async () => {
      const r = await web('client', webIp);
      return r.code !== 0 && !r.stdout.includes('hello-from-web');
    });
    await objects.patch(
      { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'web-ingress', namespace: NS },
        spec: { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080, protocol: 'TCP' }] }] } } as KubernetesObject,
      undefined, undefined, undefined, undefined, 'application/merge-patch+json' as never,
    );
    await until('client allowed again', async () => (await web('client', webIp)).stdout.includes('hello-from-web'));
  });

  test('a Service over two pods, one failing its readinessProbe: connections to the ClusterIP reach only the ready one', async () => {
    const serve = (name: string) => `mkdir -p /www && echo served-by-${name} > /www/index.html && exec httpd -f -p 8080 -h /www`;
    const probe = (ok: boolean) => ({ readinessProbe: { exec: { command: ['/bin/sh', '-c', ok ? 'true' : 'false'] }, periodSeconds: 2, failureThreshold: 1 } });
    const ready = await pod('svc-ready', 'svc', serve('svc-ready'), probe(true));
    const unready = await pod('svc-unready', 'svc', serve('svc-unready'), probe(false));
    const svc = (await objects.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'svc', namespace: NS }, spec: { selector: { app: 'svc' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } } as KubernetesObject)) as unknown as { spec: { clusterIP: string } };
    const clusterIP = svc.spec.clusterIP;
    // The kubelet's probes → the pods' Ready conditions → the endpoint-slice controller's slice → the agent's backends.
    await until('svc-ready Ready and svc-unready not (their probes)', async () => {
      const cond = async (n: string) => (await core.readNamespacedPod({ name: n, namespace: NS })).status?.conditions?.find((c) => c.type === 'Ready')?.status;
      return (await cond('svc-ready')) === 'True' && (await cond('svc-unready')) === 'False';
    });
    await until(`the agent's frontend ${clusterIP}:80 has only svc-ready's address`, async () => {
      const e = (await agent.get<Array<{ frontend: string; backends: string[] }>>('/v1/service')).find((x) => x.frontend === `${clusterIP}:80/TCP`);
      return JSON.stringify(e?.backends) === JSON.stringify([`${ready.status!.podIP}:8080/TCP`]);
    });
    const get = () => podExec(kc, NS, 'client', 'c', ['/bin/sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${clusterIP} 80`]);
    for (let i = 0; i < 6; i++) {
      const r = await get();
      assert.match(r.stdout, /served-by-svc-ready/, `connection ${i} to ${clusterIP}:80: ${JSON.stringify(r)}`);
    }
    // svc-unready runs and answers on its own address: only the Service leaves it out.
    assert.match((await podExec(kc, NS, 'client', 'c', ['/bin/sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${unready.status!.podIP} 8080`])).stdout, /served-by-svc-unready/);
  });

  test('deleting a pod releases its IP, veth and endpoint map entry', async () => {
    const c = await core.readNamespacedPod({ name: 'client', namespace: NS });
    const ip = c.status!.podIP!;
    const lxc = await agent.get<Array<{ ip?: string; ipv4?: string }>>('/v1/map/tendril_lxc');
    assert.ok(JSON.stringify(lxc).includes(`"${ip}"`), `client ${ip} not in tendril_lxc before deletion: ${JSON.stringify(lxc)}`);
    const veths = () => inNode(['ip', '-o', 'link', 'show', 'type', 'veth']).split('\n').filter((l) => l.trim()).length;
    const before = veths();
    await core.deleteNamespacedPod({ name: 'client', namespace: NS });
    await until('client gone from the API', async () => !(await core.listNamespacedPod({ namespace: NS })).items.some((p) => p.metadata?.name === 'client'));
    await until('its IP released in IPAM', async () => !(await agent.get<StatusView>('/v1/healthz')).ipam!.allocations.some((a) => a.ip === ip));
    await until('its endpoint map entry removed', async () => !JSON.stringify(await agent.get('/v1/map/tendril_lxc')).includes(`"${ip}"`));
    await until('its veth removed from the node netns', () => veths() === before - 1);
    await until('its endpoint gone from the agent', async () => !JSON.stringify(await agent.get('/v1/endpoint')).includes(`"${ip}"`));
  });
});
