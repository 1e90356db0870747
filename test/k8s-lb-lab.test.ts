// Kubernetes mode on lab nodes (root), issue #10/#11 features served from the apiserver: a TendrilLoadBalancerIPPool
// and a core LoadBalancer Service created through the API get the Service an IP (the operator's LB IPAM); pods
// reach it (the core Service's status.loadBalancer.ingress shows it); one node holds its TendrilL2Lease and answers ARP, so the external host on the underlay reaches it; a
// TendrilEgressGatewayPolicy applied through the API gets its gateway from the operator and reaches the agents.
// The whole control plane runs: the lab reports its pods' status as their kubelet would (src/lab/k8s-kubelet.ts), the
// real endpoint-slice controller writes the Services' EndpointSlices from it, and the agents take every Service's
// backends from those slices: a pod set not ready leaves them, ready again comes back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { connect, KubernetesStore, Rest } from '../src/k8s/index.js';
import { spawnSync } from 'node:child_process';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, type LabPod } from '../src/lab/lab.js';
import { externalAdd } from '../src/lab/outside.js';
import { CLI_JS, labPaths } from '../src/lab/paths.js';
import type { L2LeaseSpec, L2AnnouncementView } from '../src/l2/index.js';
import type { ServiceStatusSpec } from '../src/lb/index.js';
import type { EgressStatusView } from '../src/egress/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { rawObjects, startKit, type Kit } from './lib/k8s-kit.js';
import { until as untilRaw } from './lib/proc.js';

const LAB = `k8lb${process.pid % 100000}`;
/** This file's ports: 17000-17005 (helper E's range 17000-17059). */
const PORT_BASE = 17000;
const EXT_IP = '192.168.10.200';
const POOL_START = '192.168.10.240';
const POOL_STOP = '192.168.10.241';
const silent = pino({ level: 'silent' });

/** until(), and on a timeout the warnings at the end of the operator's log. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 120_000): Promise<void> {
  try {
    await untilRaw(what, cond, ms);
  } catch (err) {
    const file = labPaths(LAB).operatorLog;
    const log = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-15).join('\n') : '(no operator log)';
    throw new Error(`${(err as Error).message}\noperator warnings:\n${log}`);
  }
}

const GET = `
const http = require('http'); const [ip, port, t] = process.argv.slice(1);
const req = http.get({ host: ip, port: Number(port), path: '/', timeout: Number(t) }, (r) => { let b = ''; r.on('data', (d) => (b += d)).on('end', () => { process.stdout.write((/Hostname: (\\S+)/.exec(b) || [])[1] || 'answered'); }); });
req.on('timeout', () => { req.destroy(); process.stdout.write('error:timeout'); });
req.on('error', (e) => process.stdout.write('error:' + (e.code || e.message)));`;
const get = (netns: string, ip: string, port: number): string => execCapture(netns, [process.execPath, '-e', GET, ip, String(port), '1000'], 30_000).stdout.trim();

describe('kubernetes mode on lab nodes: LB IPAM, L2 announcements, egress gateway', { concurrency: 1, timeout: 600_000 }, () => {
  let kit: Kit | undefined;
  let objects: KubernetesObjectApi;
  let store: KubernetesStore;
  let extNetns = '';
  let lbIp = '';
  const pods: Record<string, LabPod> = {};

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/k8s-lb-lab.test.ts needs root');
    // The controller-manager too: its endpoint-slice controller writes the Services' slices from the pods' status.
    kit = await startKit({ portBase: PORT_BASE });
    const conn = connect(kit.kubeconfig);
    objects = KubernetesObjectApi.makeApiClient(conn.kc);
    store = new KubernetesStore(conn, { log: silent });
    await labUp({ name: LAB, nodes: 2, kubeconfig: kit.kubeconfig, podCidr: '172.29.0.0/16' });
    extNetns = (await externalAdd(LAB, 'outside', { ip: EXT_IP })).netns;
    await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } } as KubernetesObject);
    // The serviceaccount controller makes the namespace's "default" ServiceAccount the admission wants.
    await until('ServiceAccount shop/default', async () => (await objects.read({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: 'shop' } }).then(() => true, () => false)));
    for (const [name, node, app] of [['web-0', 'ctr', 'web'], ['web-1', 'w1', 'web'], ['client', 'ctr', 'client']] as const) {
      await objects.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels: { app } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'localhost/busybox:local' }] } } as KubernetesObject);
      pods[name] = await podAdd(LAB, name, { node, namespace: 'shop', ...(app === 'web' ? { serve: [8080] } : {}) });
    }
  });
  after(async () => {
    await store?.close();
    await labDown(LAB).catch(() => {});
    await kit?.down();
  });

  test('a LoadBalancer Service gets an IP of the pool that selects it; pods and the external host reach it', async () => {
    await objects.create({ apiVersion: 'tendril.io/v2', kind: 'TendrilLoadBalancerIPPool', metadata: { name: 'lan' }, spec: { blocks: [{ start: POOL_START, stop: POOL_STOP }], serviceSelector: { matchLabels: { exposed: 'yes' } } } } as KubernetesObject);
    await objects.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', labels: { exposed: 'yes' } }, spec: { type: 'LoadBalancer', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] } } as KubernetesObject);
    await until('the Service has a LoadBalancer IP', async () => ((await store.get<ServiceStatusSpec>('ServiceStatus', 'shop.web'))?.value.loadBalancer.ingress.length ?? 0) > 0);
    lbIp = (await store.get<ServiceStatusSpec>('ServiceStatus', 'shop.web'))!.value.loadBalancer.ingress[0]!;
    assert.ok([POOL_START, POOL_STOP].includes(lbIp), lbIp);
    await until('the core Service shows it (status.loadBalancer.ingress)', async () => {
      const svc = (await objects.read({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' } })) as unknown as { status?: { loadBalancer?: { ingress?: Array<{ ip?: string }> } } };
      // (The apiserver adds ipMode: VIP to each entry.)
      return JSON.stringify(svc.status?.loadBalancer?.ingress?.map((e) => e.ip)) === JSON.stringify([lbIp]);
    });
    const seen = new Set<string>();
    await until('the client pod reaches both backends through the LoadBalancer IP', () => {
      seen.add(get(pods['client']!.netns, lbIp, 80));
      return seen.has('web-0') && seen.has('web-1');
    });

    // L2: one TendrilL2Lease, its holder the one node announcing; the external host's GETs are answered.
    await until('a node holds the L2 lease', async () => (await store.get<L2LeaseSpec>('L2Lease', lbIp)) !== undefined);
    const holder = (await store.get<L2LeaseSpec>('L2Lease', lbIp))!.value.holder;
    const views: Record<string, L2AnnouncementView[]> = {};
    await until('exactly the holder announces', async () => {
      for (const n of loadLab(LAB).nodes) views[n.name] = await new ApiClient(n.socket).get<L2AnnouncementView[]>('/v1/l2', 2000).catch(() => []);
      return Object.entries(views).every(([n, l]) => l.some((e) => e.ip === lbIp && e.announcedHere === (n === holder)));
    });
    const ext = new Set<string>();
    await until('the external host reaches both backends through the LoadBalancer IP', () => {
      ext.add(get(extNetns, lbIp, 80));
      return ext.has('web-0') && ext.has('web-1');
    });
  });

  const clusterIpOfWeb = async (): Promise<string> =>
    ((await objects.read({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' } })) as unknown as { spec: { clusterIP: string } }).spec.clusterIP;
  /** Every node's agent lists exactly `want` as the backends of `frontend`. */
  const backendsOnEveryNode = async (frontend: string, want: string[]): Promise<boolean> => {
    for (const n of loadLab(LAB).nodes) {
      const e = (await new ApiClient(n.socket).get<Array<{ frontend: string; backends: string[] }>>('/v1/service', 2000).catch(() => [])).find((x) => x.frontend === frontend);
      if (JSON.stringify(e?.backends) !== JSON.stringify(want)) return false;
    }
    return true;
  };

  test('readiness drives the backends: a pod set not ready leaves every node\'s backends (traffic only to the ready one), ready again comes back', async (t) => {
    const ip = await clusterIpOfWeb();
    const web0 = pods['web-0']!;
    const web1 = pods['web-1']!;
    const backendsEverywhere = (want: string[]): Promise<boolean> => backendsOnEveryNode(`${ip}:80/TCP`, want);
    const both = [web0.ip, web1.ip].sort().map((a) => `${a}:8080/TCP`);
    await until('every node has both pods as backends (from the controller\'s EndpointSlice)', () => backendsEverywhere(both));
    const r = spawnSync(process.execPath, [CLI_JS, 'lab', 'pod', 'set-ready', 'shop/web-1', 'false', '--name', LAB], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /pod shop\/web-1: Ready=False/);
    await until('the controller marks web-1 not ready in the EndpointSlice', async () => {
      const list = (await objects.list('discovery.k8s.io/v1', 'EndpointSlice', 'shop', undefined, undefined, undefined, undefined, 'kubernetes.io/service-name=web')) as unknown as { items: Array<{ endpoints?: Array<{ addresses: string[]; conditions?: { ready?: boolean } }> | null }> };
      const eps = list.items.flatMap((s) => s.endpoints ?? []);
      return eps.some((e) => e.addresses.includes(web1.ip) && e.conditions?.ready === false) && eps.some((e) => e.addresses.includes(web0.ip) && e.conditions?.ready === true);
    });
    await until('every node load-balances to web-0 only', () => backendsEverywhere([`${web0.ip}:8080/TCP`]));
    for (let i = 0; i < 6; i++) assert.equal(get(pods['client']!.netns, ip, 80), 'web-0');
    t.diagnostic(`$ tendril lab pod set-ready shop/web-1 false\n${r.stdout}$ tendril --lab ${LAB} --node w1 service list\n${spawnSync(process.execPath, [CLI_JS, '--lab', LAB, '--node', 'w1', 'service', 'list'], { encoding: 'utf8', timeout: 60_000 }).stdout}`);
    const back = spawnSync(process.execPath, [CLI_JS, 'lab', 'pod', 'set-ready', 'shop/web-1', 'true', '--name', LAB], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(back.status, 0, back.stderr);
    await until('web-1 is a backend again on every node', () => backendsEverywhere(both));
    const seen = new Set<string>();
    await until('the client reaches web-1 again through the ClusterIP', () => {
      seen.add(get(pods['client']!.netns, ip, 80));
      return seen.has('web-0') && seen.has('web-1');
    });
  });

  test('externalTrafficPolicy Local: the external host reaches only the backend on the announcing node (the slice endpoint\'s nodeName)', async () => {
    const objs = rawObjects(kit!.kubeconfig);
    await objs.mergePatch({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { externalTrafficPolicy: 'Local' } });
    const podOn: Record<string, string> = { ctr: 'web-0', w1: 'web-1' };
    // Both nodes have a backend, so either may hold the lease; the holder's pod is the only answer from outside.
    let holder = '';
    await until('a node holds the L2 lease and announces', async () => {
      holder = (await store.get<L2LeaseSpec>('L2Lease', lbIp))?.value.holder ?? '';
      const n = loadLab(LAB).nodes.find((x) => x.name === holder);
      if (!n) return false;
      const l = await new ApiClient(n.socket).get<L2AnnouncementView[]>('/v1/l2', 2000).catch(() => []);
      return l.some((e) => e.ip === lbIp && e.announcedHere);
    });
    const want = podOn[holder]!;
    await until(`the external host reaches ${want} (on the holder ${holder}) through the LoadBalancer IP`, () => get(extNetns, lbIp, 80) === want);
    for (let i = 0; i < 6; i++) assert.equal(get(extNetns, lbIp, 80), want, `GET ${i} from outside with externalTrafficPolicy Local`);
    await objs.mergePatch({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { externalTrafficPolicy: 'Cluster' } });
  });

  test('a terminating pod still serving is a backend only while no pod is ready (kube-proxy\'s fallback), through the controller\'s conditions', async () => {
    const ip = await clusterIpOfWeb();
    const web0 = pods['web-0']!;
    const web1 = pods['web-1']!;
    const backendsEverywhere = (want: string[]): Promise<boolean> => backendsOnEveryNode(`${ip}:80/TCP`, want);
    const setReady = (pod: string, ready: boolean) => {
      const r = spawnSync(process.execPath, [CLI_JS, 'lab', 'pod', 'set-ready', pod, String(ready), '--name', LAB], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
    };
    const rest = new Rest(connect(kit!.kubeconfig).kc, connect(kit!.kubeconfig).server);
    const podPath = '/api/v1/namespaces/shop/pods/web-1';
    // Deleted with a grace period: the object stays (no kubelet confirms it) with a deletionTimestamp, still Ready.
    await rest.request('DELETE', podPath, { gracePeriodSeconds: 600 });
    await until('the controller lists web-1 as terminating and serving, not ready', async () => {
      const list = (await objects.list('discovery.k8s.io/v1', 'EndpointSlice', 'shop', undefined, undefined, undefined, undefined, 'kubernetes.io/service-name=web')) as unknown as { items: Array<{ endpoints?: Array<{ addresses: string[]; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean } }> | null }> };
      const e = list.items.flatMap((x) => x.endpoints ?? []).find((x) => x.addresses.includes(web1.ip));
      return e?.conditions?.terminating === true && e.conditions.serving === true && e.conditions.ready === false;
    });
    await until('every node load-balances to the ready web-0 only', () => backendsEverywhere([`${web0.ip}:8080/TCP`]));
    setReady('shop/web-0', false);
    await until('no pod ready: every node falls back to the terminating, serving web-1', () => backendsEverywhere([`${web1.ip}:8080/TCP`]));
    for (let i = 0; i < 4; i++) assert.equal(get(pods['client']!.netns, ip, 80), 'web-1');
    setReady('shop/web-0', true);
    await until('web-0 ready again: the terminating web-1 leaves the backends', () => backendsEverywhere([`${web0.ip}:8080/TCP`]));
    // The deletion finished as a kubelet finishes it (grace 0), the lab's pod torn down.
    await rest.request('DELETE', podPath, { gracePeriodSeconds: 0 });
    await podDel(LAB, 'shop/web-1');
  });

  test('a Service without a selector and a hand-made EndpointSlice: the agents load-balance to the slice\'s ready address', async () => {
    await objects.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'manual', namespace: 'shop' }, spec: { type: 'ClusterIP', ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] } } as KubernetesObject);
    const web0 = pods['web-0']!;
    const web1 = pods['web-1']!;
    // web-1 is listed not ready: it must not become a backend.
    await objects.create({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'manual-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'manual' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [web0.ip], conditions: { ready: true } }, { addresses: [web1.ip], conditions: { ready: false } }],
      ports: [{ name: '', port: 8080, protocol: 'TCP' }],
    } as unknown as KubernetesObject);
    const svc = (await objects.read({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'manual', namespace: 'shop' } })) as unknown as { spec: { clusterIP: string } };
    const ip = svc.spec.clusterIP;
    await until('every node load-balances the ClusterIP to the ready address only', async () => {
      for (const n of loadLab(LAB).nodes) {
        const e = (await new ApiClient(n.socket).get<Array<{ frontend: string; backends: string[] }>>('/v1/service', 2000).catch(() => [])).find((x) => x.frontend === `${ip}:80/TCP`);
        if (JSON.stringify(e?.backends) !== JSON.stringify([`${web0.ip}:8080/TCP`])) return false;
      }
      return true;
    });
    for (let i = 0; i < 4; i++) assert.equal(get(pods['client']!.netns, ip, 80), 'web-0');
    // The slice deleted: its backends go with it.
    await objects.delete({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'manual-1', namespace: 'shop' } } as KubernetesObject);
    await until('every node has no backend left for the ClusterIP', async () => {
      for (const n of loadLab(LAB).nodes) {
        const e = (await new ApiClient(n.socket).get<Array<{ frontend: string; backends: string[] }>>('/v1/service', 2000).catch(() => [])).find((x) => x.frontend === `${ip}:80/TCP`);
        if (!e || e.backends.length !== 0) return false;
      }
      return true;
    });
  });

  test('the lab registers its nodes as kubelets do: Nodes with their InternalIP, Ready, and a kube-node-lease Lease it keeps renewing', async () => {
    const objs = rawObjects(kit!.kubeconfig);
    for (const n of loadLab(LAB).nodes) {
      const node = (await objs.read({ apiVersion: 'v1', kind: 'Node', metadata: { name: n.name } })) as { metadata: { annotations?: Record<string, string> }; status?: { addresses?: Array<{ type: string; address: string }>; conditions?: Array<{ type: string; status: string }> } };
      assert.equal(node.metadata.annotations?.['lab.tendril.io/registered-by'], LAB);
      assert.ok(node.status?.addresses?.some((a) => a.type === 'InternalIP' && a.address === n.ip), JSON.stringify(node.status?.addresses));
      // Still Ready, long after registration: the node lifecycle controller saw the heartbeats.
      assert.equal(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    }
    const renewTime = async () => ((await objs.read({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'w1', namespace: 'kube-node-lease' } })) as { spec: { renewTime: string } }).spec.renewTime;
    const first = await renewTime();
    await until('the lab renews Node w1\'s Lease', async () => (await renewTime()) !== first);
  });

  test('a TendrilEgressGatewayPolicy applied through the API gets its gateway and reaches the agents', async () => {
    await objects.create({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilEgressGatewayPolicy',
      metadata: { name: 'via-w1' },
      spec: { selectors: [{ podSelector: { matchLabels: { app: 'client' } } }], destinationCIDRs: ['192.168.10.200/32'], egressGateway: { nodeSelector: { matchLabels: { 'kubernetes.io/hostname': 'w1' } }, egressIP: '192.168.10.250' } },
    } as KubernetesObject);
    await until('the operator picked w1 (status on the object)', async () => {
      const o = (await objects.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name: 'via-w1' } })) as unknown as { status?: { gatewayNode?: string; egressIP?: string } };
      return o.status?.gatewayNode === 'w1' && o.status.egressIP === '192.168.10.250';
    });
    const ctr = loadLab(LAB).nodes.find((n) => n.name === 'ctr')!;
    await until('the client\'s node applied the policy', async () => ((await new ApiClient(ctr.socket).get<EgressStatusView | null>('/v1/egress', 2000).catch(() => null))?.applied['via-w1'] ?? 0) > 0);
  });
});
