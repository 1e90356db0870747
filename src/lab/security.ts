// The lab's security verbs: cluster-wide policies and namespaces through the operator (the lab's API server), pod
// labels through the pod's agent; each returns once every node enforces the change.
import fs from 'node:fs';
import path from 'node:path';
import { AgentClient } from '../cli/client.js';
import { policyKey, type PolicyKind } from '../policy/index.js';
import { LabError } from './errors.js';
import { findPod, loadLab, saveLab, type LabPod, type LabState } from './lab.js';
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

function operator(st: LabState): AgentClient {
  return new AgentClient(labPaths(st.name).operatorSocket);
}

/** Waits until every node's agent has @check true of its GET /v1/policy answer. */
async function waitAgents(st: LabState, what: string, check: (policies: Array<{ key: string; source: string; revision?: number }>) => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (const n of st.nodes) {
    const c = new AgentClient(n.socket);
    for (;;) {
      const r = await c.get<{ policies: Array<{ key: string; source: string; revision?: number }> }>('/v1/policy').catch(() => undefined);
      if (r && check(r.policies)) break;
      if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `Node ${n.name} did not pick up ${what} within ${WAIT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}

/** `lab policy apply FILE…`: all files validated together; nothing is stored if one document is invalid. */
export async function labPolicyApply(lab: string, files: string[]): Promise<Array<{ key: string; resource: string; revision: number }>> {
  const st = loadLab(lab);
  const texts = files.map((f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch (err) {
      throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot read policy file "${f}": ${(err as Error).message}`);
    }
  });
  const r = await operator(st).request<{ applied: Array<{ key: string; resource: string; revision: number }> }>('PUT', '/v1/policies', {
    text: texts.join('\n---\n'),
    origin: files.map((f) => path.basename(f)).join(', '),
  });
  await waitAgents(st, `policies ${r.applied.map((a) => a.key).join(', ')}`, (ps) =>
    r.applied.every((a) => ps.some((p) => p.source === 'cluster' && p.key === a.key && (p.revision ?? 0) >= a.revision)),
  );
  return r.applied;
}

/** `lab policy delete NAME` (NAME, NAMESPACE/NAME or the resource name). */
export async function labPolicyDelete(lab: string, ref: string): Promise<string> {
  const st = loadLab(lab);
  const r = await operator(st).request<{ deleted: string }>('DELETE', `/v1/policies/${encodeURIComponent(ref)}`);
  // "<kind>.<namespace>.<name>" (namespace '' for a cluster-wide policy) -> the key agents list it under.
  const [kind, ns, ...rest] = r.deleted.split('.');
  const key = policyKey({ kind: kind as PolicyKind, namespace: ns ?? '', name: rest.join('.') });
  await waitAgents(st, `the deletion of ${key}`, (ps) => !ps.some((p) => p.source === 'cluster' && p.key === key));
  return r.deleted;
}

/** `lab namespace add NS --label k=v` (fails if it exists) and `lab namespace label NS k=v | k-` (creates if needed). */
export async function labNamespaceSet(
  lab: string,
  ns: string,
  changes: Record<string, string | null>,
  mode: 'add' | 'label',
): Promise<{ name: string; labels: Record<string, string> }> {
  const st = loadLab(lab);
  const r = await operator(st).request<{ name: string; labels: Record<string, string> }>('PATCH', `/v1/namespaces/${encodeURIComponent(ns)}`, {
    labels: changes,
    ...(mode === 'add' ? { create: true } : {}),
  });
  await waitIdentities(st, ns);
  return r;
}

export async function labNamespaceList(lab: string): Promise<Array<{ name: string; labels: Record<string, string> }>> {
  return operator(loadLab(lab)).get('/v1/namespaces');
}

/** Waits until every pod of namespace @ns shows the namespace's current labels in its security labels. */
async function waitIdentities(st: LabState, ns: string): Promise<void> {
  const spaces = await operator(st).get<Array<{ name: string; labels: Record<string, string> }>>('/v1/namespaces');
  const labels = spaces.find((s) => s.name === ns)?.labels ?? {};
  const want = Object.entries(labels).map(([k, v]) => `k8s:io.cilium.k8s.namespace.labels.${k}=${v}`);
  const deadline = Date.now() + WAIT_MS;
  for (const pod of st.pods.filter((p) => p.namespace === ns)) {
    const c = new AgentClient(st.nodes.find((n) => n.name === pod.node)!.socket);
    for (;;) {
      const ep = await c.get<{ status: { identity: { labels: string[] } } }>(`/v1/endpoint/${encodeURIComponent(`pod-name:${ns}/${pod.name}`)}`).catch(() => undefined);
      const have = ep?.status.identity.labels.filter((l) => l.startsWith('k8s:io.cilium.k8s.namespace.labels.')) ?? [];
      if (ep && have.length === want.length && want.every((w) => have.includes(w))) break;
      if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `Pod ${ns}/${pod.name} did not take namespace ${ns}'s labels within ${WAIT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }
  for (const pod of st.pods.filter((p) => p.namespace === ns)) {
    const c = new AgentClient(st.nodes.find((n) => n.name === pod.node)!.socket);
    const ep = await c.get<{ status: { identity: { id: number } } }>(`/v1/endpoint/${encodeURIComponent(`pod-name:${ns}/${pod.name}`)}`);
    await waitIpcache(st, pod.ip, ep.status.identity.id);
  }
}

/**
 * Every node maps @ip to @identity in its ipcache: the pod's new identity reached it through the store, and the
 * recompilation that the identity triggers runs in the same turn of that agent's event loop.
 */
async function waitIpcache(st: LabState, ip: string, identity: number): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (const n of st.nodes) {
    const c = new AgentClient(n.socket);
    for (;;) {
      const rows = await c.get<Array<{ prefix: string; identity: number }>>('/v1/ip').catch(() => []);
      if (rows.some((r) => r.prefix === `${ip}/32` && r.identity === identity)) break;
      if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `Node ${n.name} did not learn identity ${identity} of ${ip} within ${WAIT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}

/** `lab pod label POD k=v | k-`: the pod's agent re-labels the endpoint (new identity, policies follow). */
export async function labPodLabel(lab: string, ref: string, changes: Record<string, string | null>): Promise<LabPod> {
  const st = loadLab(lab);
  const pod = findPod(st, ref);
  const node = st.nodes.find((n) => n.name === pod.node);
  if (!node) throw new LabError('TENDRIL_ERR_LAB_NODE_NOT_FOUND', `Pod ${pod.namespace}/${pod.name} is on node ${pod.node}, which is not in the lab`);
  const ep = await new AgentClient(node.socket).request<{ status: { identity: { id: number } } }>(
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
  await waitIpcache(st, pod.ip, ep.status.identity.id);
  return { ...pod, labels };
}
