// Tendril's CustomResourceDefinitions (install/kubernetes/crds/*.yaml): loaded, installed or upgraded by the
// operator, waited for by the agent.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiextensionsV1Api, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { K8sConnection } from './client.js';
import { Rest } from './rest.js';
import { K8sError, messageOf, statusOf } from './errors.js';

export const GROUP = 'tendril.io';
export const VERSION = 'v2';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** install/kubernetes/crds of this installation (dist/src/k8s -> repo root). */
export const CRD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../install/kubernetes/crds');

/** Every CRD in the directory (a document may be a CRD or a List of them), sorted by name. */
export function loadCrds(dir: string = CRD_DIR): V1CustomResourceDefinition[] {
  const out: V1CustomResourceDefinition[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(dir, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new K8sError('TENDRIL_ERR_K8S_CRD', `${file}: ${doc.errors[0]!.message}`);
      const o = doc.toJS({ maxAliasCount: -1 }) as { kind?: string; items?: unknown[] } | null;
      if (!o) continue;
      const items = o.kind === 'List' ? (o.items ?? []) : [o];
      for (const it of items as V1CustomResourceDefinition[]) {
        if (it.kind !== 'CustomResourceDefinition') throw new K8sError('TENDRIL_ERR_K8S_CRD', `${file}: a ${String(it.kind)} is not a CustomResourceDefinition`);
        out.push(it);
      }
    }
  }
  return out.sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
}

const HASH_ANNOTATION = 'tendril.io/definition-hash';

export interface CrdInstallResult {
  created: string[];
  updated: string[];
}

const CRD_PATH = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/**
 * Creates the CRDs that are missing, replaces those that differ (an upgrade), then waits until all are Established.
 * Written as the files' raw JSON (src/k8s/rest.ts): client-node's typed serializer knows the schema extensions only
 * by its model names (x_kubernetes_preserve_unknown_fields) and drops the files' "x-kubernetes-…" keys wherever it
 * walks the schema through "properties", so the apiserver would prune what those fields keep.
 */
export async function installCrds(conn: K8sConnection, crds = loadCrds(), timeoutMs = 30_000): Promise<CrdInstallResult> {
  const rest = new Rest(conn.kc, conn.server);
  const result: CrdInstallResult = { created: [], updated: [] };
  for (const want of crds) {
    const name = want.metadata!.name!;
    // The apiserver normalizes what it stores, so "differs" is judged by a hash of the file's object, kept on it.
    const hash = createHash('sha256').update(JSON.stringify(want)).digest('hex').slice(0, 16);
    const crd: V1CustomResourceDefinition = { ...want, metadata: { ...want.metadata, annotations: { ...want.metadata?.annotations, [HASH_ANNOTATION]: hash } } };
    try {
      let cur: V1CustomResourceDefinition | undefined;
      try {
        cur = await rest.request<V1CustomResourceDefinition>('GET', `${CRD_PATH}/${name}`);
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
      if (!cur) {
        try {
          await rest.request('POST', CRD_PATH, crd);
          result.created.push(name);
        } catch (err) {
          // Another replica created it a moment ago: it is the same file.
          if (statusOf(err) !== 409) throw err;
        }
      } else if (cur.metadata?.annotations?.[HASH_ANNOTATION] !== hash) {
        await rest.request('PUT', `${CRD_PATH}/${name}`, { ...crd, metadata: { ...crd.metadata, name, resourceVersion: cur.metadata!.resourceVersion! } });
        result.updated.push(name);
      }
    } catch (err) {
      throw new K8sError('TENDRIL_ERR_K8S_CRD', `Cannot install CRD ${name}: ${messageOf(err)}`, { cause: err });
    }
  }
  await waitEstablished(conn, crds.map((c) => c.metadata!.name!), timeoutMs);
  return result;
}

/** Polls until every named CRD has condition Established=True (the agent calls this before it lists them). */
export async function waitEstablished(conn: K8sConnection, names: string[] = loadCrds().map((c) => c.metadata!.name!), timeoutMs = 30_000): Promise<void> {
  const api = conn.kc.makeApiClient(ApiextensionsV1Api);
  const deadline = Date.now() + timeoutMs;
  let pending = [...names];
  let last = '';
  while (pending.length > 0) {
    const still: string[] = [];
    for (const name of pending) {
      try {
        const c = await api.readCustomResourceDefinition({ name });
        if (!c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')) still.push(name);
      } catch (err) {
        last = messageOf(err);
        still.push(name);
      }
    }
    pending = still;
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new K8sError('TENDRIL_ERR_K8S_CRD', `CRDs not established after ${timeoutMs} ms: ${pending.join(', ')}${last ? ` (${last})` : ''}; is the operator running?`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
