// `node dist/bench/k8s-memory.js` (root, TENDRIL_K8S_KIT): the agent's memory in Kubernetes mode as the watched
// cluster grows. A one-node lab whose agent and operator use the kit's apiserver (apiserver only, envtest-like);
// the agent's RSS (and its anonymous part, the JS heap + native allocations) is read from /proc when it is idle
// (a) with nothing but the lab, (b) with 200 NetworkPolicies, (c) with 1,000 pods more. The pods are API objects:
// 1,000 Pods bound to this agent's node (spec.nodeName, no kubelet: the agent's pod informer holds them) and, for
// each, the TendrilEndpoint its node's agent would publish plus 50 identities (label sets app=app-0..49), as if
// they ran on 20 other nodes: the agent caches them and writes their ipcache entries. Per-pod KiB = (c - b) / 1000.
import fs from 'node:fs';
import { labDown, labUp } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { ApiClient } from '../src/util/api-client.js';
import { rawObjects, startKit, type RawObject } from '../src/lab/k8s-kit.js';
import { median } from './stats.js';

const PODS = Number(process.env['K8S_MEM_PODS'] ?? 1000);
const POLICIES = Number(process.env['K8S_MEM_POLICIES'] ?? 200);
const APPS = 50;
const REMOTE_NODES = 20;
const NS = 'bench';
const PORT_BASE = 16760;

function memKiB(pid: number): { rss: number; anon: number } {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
  return { rss: kb('VmRSS'), anon: kb('RssAnon') };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Mem {
  rss: number;
  anon: number;
  /** V8 heap used after a full collection (the agent's GET /v1/debug/memory?gc=1), KiB. */
  heap: number;
}

/** Medians of 7 samples a second apart, after the agent has been idle for `settleMs`. */
async function sample(pid: number, agent: ApiClient, settleMs = 8000): Promise<Mem> {
  await sleep(settleMs);
  const xs: Mem[] = [];
  for (let i = 0; i < 7; i++) {
    const heap = (await agent.get<{ heapUsed: number }>('/v1/debug/memory?gc=1')).heapUsed / 1024;
    xs.push({ ...memKiB(pid), heap });
    await sleep(1000);
  }
  return { rss: median(xs.map((x) => x.rss)), anon: median(xs.map((x) => x.anon)), heap: median(xs.map((x) => x.heap)) };
}

async function inBatches<T>(items: T[], n: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 600_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond().catch(() => false))) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

export interface K8sMemoryResult {
  empty: Mem;
  policies: Mem;
  pods: Mem;
  podsCount: number;
  policyCount: number;
}

export async function k8sMemory(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<K8sMemoryResult> {
  const lab = `km${process.pid % 100000}`;
  const kit = await startKit({ apiserverOnly: true, portBase: PORT_BASE });
  try {
    const st = await labUp({ name: lab, nodes: 1, kubeconfig: kit.kubeconfig, podCidr: '172.28.0.0/16' });
    const node = st.nodes[0]!;
    const agent = new ApiClient(labPaths(lab).node(node.name).socket, 'agent');
    const o = rawObjects(kit.kubeconfig);
    await o.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { team: NS } } });
    await o.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: NS } });
    const empty = await sample(node.pid, agent);
    log(`empty agent: RSS ${empty.rss} KiB, heap ${empty.heap.toFixed(0)} KiB`);

    const pols: RawObject[] = Array.from({ length: POLICIES }, (_, i) => ({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: `np-${i}`, namespace: NS },
      spec: { podSelector: { matchLabels: { app: `app-${i % APPS}` } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: `app-${(i + 1) % APPS}` } } }], ports: [{ port: 8000 + i, protocol: 'TCP' }] }] },
    }));
    await inBatches(pols, 8, (p) => o.create(p));
    await waitFor(`${POLICIES} policies in the agent`, async () => (await agent.get<{ policies: unknown[] }>('/v1/policy')).policies.length >= POLICIES);
    const policies = await sample(node.pid, agent);
    log(`+${POLICIES} NetworkPolicies: RSS ${policies.rss} KiB, heap ${policies.heap.toFixed(0)} KiB`);

    const ids = Array.from({ length: APPS }, (_, a) => ({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilIdentity',
      metadata: { name: String(40000 + a) },
      spec: { labels: [`k8s:app=app-${a}`, `k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=${NS}`, `k8s:io.cilium.k8s.namespace.labels.team=${NS}`, 'k8s:io.cilium.k8s.policy.serviceaccount=default', `k8s:io.kubernetes.pod.namespace=${NS}`] },
    }));
    // The other nodes as their agents register them (the operator removes the endpoints of nodes that do not exist).
    const nodes = Array.from({ length: REMOTE_NODES }, (_, k) => ({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNode',
      metadata: { name: `remote-${k}` },
      spec: { name: `remote-${k}`, addresses: [`192.168.${100 + k}.1`], podCIDRs: [`10.${200 + k}.0.0/16`] },
    }));
    await inBatches(nodes, 4, (x) => o.create(x));
    await inBatches(ids, 8, (x) => o.create(x));
    const objs: RawObject[] = [];
    for (let i = 0; i < PODS; i++) {
      const app = `app-${i % APPS}`;
      const remote = `remote-${i % REMOTE_NODES}`;
      const ip = `10.${200 + (i % REMOTE_NODES)}.${Math.floor(i / 250)}.${(i % 250) + 2}`;
      objs.push({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `p-${i}`, namespace: NS, labels: { app } }, spec: { nodeName: node.name, containers: [{ name: 'c', image: 'localhost/busybox:local' }] } });
      objs.push({
        apiVersion: 'tendril.io/v2',
        kind: 'TendrilEndpoint',
        metadata: { name: `${remote}.${i + 1}` },
        spec: { node: remote, id: i + 1, namespace: NS, pod: `p-${i}`, ip, nodeIP: `192.168.${100 + (i % REMOTE_NODES)}.1`, identity: 40000 + (i % APPS), namedPorts: [] },
      });
    }
    const t0 = Date.now();
    await inBatches(objs, 8, (x) => o.create(x));
    log(`${PODS} pods + endpoints written in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    await waitFor(`${PODS} remote endpoints in the agent's ipcache`, async () => (await agent.get<Array<{ prefix: string }>>('/v1/map/tendril_ipcache')).filter((e) => e.prefix.startsWith('10.2')).length >= PODS);
    const pods = await sample(node.pid, agent);
    log(`+${PODS} pods: RSS ${pods.rss} KiB, heap ${pods.heap.toFixed(0)} KiB`);
    return { empty, policies, pods, podsCount: PODS, policyCount: POLICIES };
  } finally {
    await labDown(lab).catch(() => {});
    await kit.down().catch(() => {});
  }
}

export function k8sMemoryTable(r: K8sMemoryResult): string[] {
  const mib = (k: number): string => (k / 1024).toFixed(1);
  const row = (what: string, m: Mem): string => `| ${what} | ${mib(m.heap)} | ${(m.heap / r.empty.heap).toFixed(2)}x | ${mib(m.rss)} | ${(m.rss / r.empty.rss).toFixed(2)}x |`;
  const perPod = (r.pods.heap - r.policies.heap) / r.podsCount;
  const perPodRss = (r.pods.rss - r.policies.rss) / r.podsCount;
  return [
    `## Agent memory in Kubernetes mode (one lab node, kit apiserver; medians of 7 samples a second apart after 8 s idle)`,
    '',
    '| agent watching | heap after GC MiB | ratio to empty | RSS MiB | ratio to empty |',
    '| --- | --- | --- | --- | --- |',
    row('empty (lab only)', r.empty),
    row(`+${r.policyCount} NetworkPolicies`, r.policies),
    row(`+${r.podsCount} pods (Pod + TendrilEndpoint each, 50 identities)`, r.pods),
    '',
    `- per pod: ${perPod.toFixed(1)} KiB of V8 heap after a full GC (target <= 10 KiB; Cilium's published figure 10.5 KiB); RSS moved ${perPodRss.toFixed(1)} KiB/pod (RSS follows V8's heap sizing and the allocator, not the live data); per policy: ${((r.policies.heap - r.empty.heap) / r.policyCount).toFixed(1)} KiB heap`,
    `- pods: API objects, ${r.podsCount} Pods bound to this node (no kubelet) held by its pod informer, and a TendrilEndpoint each on 20 other (registered, not running) nodes: cached, an ipcache entry each`,
    '',
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await k8sMemory();
  process.stdout.write(k8sMemoryTable(r).join('\n') + '\n');
}
