// The lab's security verbs: cluster-wide policies and namespaces through the operator (the lab's API server), pod
// labels through the pod's agent; each returns once every node enforces the change.
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient, ApiClientError } from '../util/api-client.js';
import type { EndpointView, IpView, PolicyListView, PolicyView } from '../agent/index.js';
import type { NamespaceView, PolicyApplyResult, PolicyDeleteResult } from '../operator/index.js';
import { policyKey, type PolicyKind } from '../policy/index.js';
import { LabError } from './errors.js';
import { findPod, loadLab, saveLab, type LabNode, type LabPod, type LabState } from './lab.js';
import { labPaths } from './paths.js';

const WAIT_MS = 10_000;

/** "k=v" sets, "k-" removes (kubectl label's syntax). */
export function parseLabelChanges(args: string[]): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const a of args) {
    if (a.endsWith('-') && !a.includes('=')) {
      out[a.slice(0, -1)] = null;
      continue;
    }
    const i = a.indexOf('=');
    if (i <= 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid label change "${a}": expected KEY=VALUE to set or KEY- to remove`);
    out[a.slice(0, i)] = a.slice(i + 1);
  }
  if (Object.keys(out).length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', 'No label change given: expected KEY=VALUE or KEY-');
  return out;
}

export function operator(st: LabState): ApiClient {
  return new ApiClient(labPaths(st.name).operatorSocket, 'operator');
}

export interface ChangeOptions {
  /** Told about each node whose agent is down: the change is stored, and it applies it when it returns. */
  warn?: (line: string) => void;
}

/**
 * Polls @probe against each node's agent until it says true. The change is in the cluster store already (@stored
 * says what): a node whose agent does not answer is reported through @warn at once, since it applies the change
 * when it returns; one that answers but does not @pending within WAIT_MS fails the wait, saying @stored all the same.
 */
export async function untilEachNode(nodes: LabNode[], stored: string, pending: string, probe: (c: ApiClient) => Promise<boolean>, o: ChangeOptions): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (const n of nodes) {
    const c = new ApiClient(n.socket);
    for (;;) {
      try {
        if (await probe(c)) break;
      } catch (err) {
        if (err instanceof ApiClientError && err.code === 'TENDRIL_ERR_AGENT_UNREACHABLE') {
          o.warn?.(`${stored}; node ${n.name} is down (${err.message}): it applies it when its agent returns`);
          break;
        }
        // any other answer (a 404 while an endpoint is re-created, a slow agent's timeout, …): not yet
      }
      if (Date.now() > deadline) {
        throw new LabError('TENDRIL_ERR_LAB_AGENT', `${stored}, but node ${n.name} did not ${pending} within ${WAIT_MS / 1000} s; it will once its agent catches up`);
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}

/** Until every running node's GET /v1/policy satisfies @check. */
function waitAgents(st: LabState, stored: string, check: (policies: PolicyView[]) => boolean, o: ChangeOptions): Promise<void> {
  return untilEachNode(st.nodes, stored, 'apply it', async (c) => check((await c.get<PolicyListView>('/v1/policy', 2000)).policies), o);
}

/** `lab policy apply FILE…`: all files validated together; nothing is stored if one document is invalid. */
export async function labPolicyApply(lab: string, files: string[], o: ChangeOptions = {}): Promise<Array<{ key: string; resource: string; revision: number }>> {
  const st = loadLab(lab);
  const texts = files.map((f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch (err) {
      throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot read policy file "${f}": ${(err as Error).message}`);
    }
  });
  const r = await operator(st).request<PolicyApplyResult>('PUT', '/v1/policies', {
    text: texts.join('\n---\n'),
    origin: files.map((f) => path.basename(f)).join(', '),
  });
  const stored = `Polic${r.applied.length === 1 ? 'y' : 'ies'} ${r.applied.map((a) => `${a.key} (revision ${a.revision})`).join(', ')} stored in the cluster store`;
  await waitAgents(st, stored, (ps) => r.applied.every((a) => ps.some((p) => p.source === 'cluster' && p.key === a.key && (p.revision ?? 0) >= a.revision)), o);
  return r.applied;
}

/** `lab policy delete NAME` (NAME, NAMESPACE/NAME or the resource name). */
export async function labPolicyDelete(lab: string, ref: string, o: ChangeOptions = {}): Promise<string> {
  const st = loadLab(lab);
  const r = await operator(st).request<PolicyDeleteResult>('DELETE', `/v1/policies/${encodeURIComponent(ref)}`);
  // "<kind>.<namespace>.<name>" (namespace '' for a cluster-wide policy) -> the key agents list it under.
  const [kind, ns, ...rest] = r.deleted.split('.');
  const key = policyKey({ kind: kind as PolicyKind, namespace: ns ?? '', name: rest.join('.') });
  await waitAgents(st, `Policy ${key} deleted from the cluster store`, (ps) => !ps.some((p) => p.source === 'cluster' && p.key === key), o);
  return r.deleted;
}

/** `lab namespace add NS --label k=v` (fails if it exists) and `lab namespace label NS k=v | k-` (creates if needed). */
export async function labNamespaceSet(
  lab: string,
  ns: string,
  changes: Record<string, string | null>,
  mode: 'add' | 'label',
  o: ChangeOptions = {},
  annotations?: Record<string, string>,
): Promise<NamespaceView> {
  const st = loadLab(lab);
  const r = await operator(st).request<NamespaceView>('PATCH', `/v1/namespaces/${encodeURIComponent(ns)}`, {
    labels: changes,
    ...(annotations && Object.keys(annotations).length > 0 ? { annotations } : {}),
    ...(mode === 'add' ? { create: true } : {}),
  });
  await waitIdentities(st, ns, o);
  return r;
}

export async function labNamespaceList(lab: string): Promise<NamespaceView[]> {
  return operator(loadLab(lab)).get('/v1/namespaces');
}

/** Waits until every pod of namespace @ns shows the namespace's current labels in its security labels. */
async function waitIdentities(st: LabState, ns: string, o: ChangeOptions): Promise<void> {
  const spaces = await operator(st).get<NamespaceView[]>('/v1/namespaces');
  const labels = spaces.find((s) => s.name === ns)?.labels ?? {};
  const want = Object.entries(labels).map(([k, v]) => `k8s:io.cilium.k8s.namespace.labels.${k}=${v}`);
  const stored = `Namespace ${ns}'s labels stored in the cluster store`;
  const endpoint = (c: ApiClient, pod: LabPod) => c.get<EndpointView>(`/v1/endpoint/${encodeURIComponent(`pod-name:${ns}/${pod.name}`)}`, 2000);
  for (const pod of st.pods.filter((p) => p.namespace === ns)) {
    const node = st.nodes.filter((n) => n.name === pod.node);
    let relabelled: EndpointView | undefined;
    await untilEachNode(node, stored, `give pod ${ns}/${pod.name} its namespace's labels`, async (c) => {
      const ep = await endpoint(c, pod);
      const have = ep.status.identity.labels.filter((l) => l.startsWith('k8s:io.cilium.k8s.namespace.labels.'));
      if (have.length !== want.length || !want.every((w) => have.includes(w))) return false;
      relabelled = ep;
      return true;
    }, o);
    // A pod whose node is down keeps its identity until its agent returns: nothing for the others to learn yet.
    if (relabelled) await waitIpcache(st, pod.ip, relabelled.status.identity.id, o);
  }
}

/**
 * Every running node maps @ip to @identity in its ipcache: the pod's new identity reached it through the store, and
 * the recompilation that the identity triggers runs in the same turn of that agent's event loop.
 */
function waitIpcache(st: LabState, ip: string, identity: number, o: ChangeOptions): Promise<void> {
  return untilEachNode(st.nodes, `Identity ${identity} of ${ip} stored in the cluster store`, `learn it`, async (c) =>
    (await c.get<IpView[]>('/v1/ip', 2000)).some((r) => r.prefix === `${ip}/32` && r.identity === identity), o);
}

/** `lab pod label POD k=v | k-`: the pod's agent re-labels the endpoint (new identity, policies follow). */
export async function labPodLabel(lab: string, ref: string, changes: Record<string, string | null>, o: ChangeOptions = {}): Promise<LabPod> {
  const st = loadLab(lab);
  const pod = findPod(st, ref);
  const node = st.nodes.find((n) => n.name === pod.node);
  if (!node) throw new LabError('TENDRIL_ERR_LAB_NODE_NOT_FOUND', `Pod ${pod.namespace}/${pod.name} is on node ${pod.node}, which is not in the lab`);
  const ep = await new ApiClient(node.socket).request<EndpointView>(
    'PATCH',
    `/v1/endpoint/${encodeURIComponent(`pod-name:${pod.namespace}/${pod.name}`)}/labels`,
    { labels: changes },
  );
  const labels: Record<string, string> = { ...pod.labels };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete labels[k];
    else labels[k] = v;
  }
  const fresh = loadLab(lab);
  const p = fresh.pods.find((x) => x.name === pod.name && x.namespace === pod.namespace);
  if (p) p.labels = labels;
  saveLab(fresh);
  await waitIpcache(st, pod.ip, ep.status.identity.id, o);
  return { ...pod, labels };
}
