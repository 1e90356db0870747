// Cluster-wide resources written through the operator's API (the role Kubernetes' API server plays for Cilium):
// policies, validated before anything is stored, and namespaces with their labels.
import { LABEL_NAMESPACE_NAME, PolicyError, isDnsLabel, labelKeyProblem, labelValueProblem, parsePolicies, policyKey, type Policy } from '../policy/index.js';
import type { NamespaceSpec, PolicySpec, Store } from '../store/types.js';
import { HttpError, type ApiServer } from '../util/api.js';
import type { AppliedPolicy, NamespaceView, PolicyApplyResult, PolicyDeleteResult, StoredPolicyView } from './api.js';


/** Store name of a Policy resource: "<kind>.<namespace>.<name>" (the agent reads it back the same way). */
export function policyResourceName(p: Pick<Policy, 'kind' | 'namespace' | 'name'>): string {
  return `${p.kind}.${p.namespace}.${p.name}`;
}

export function registerResourceRoutes(api: ApiServer, store: Store): void {
  api.route('GET', '/v1/policies', async () =>
    (await store.list<PolicySpec>('Policy')).items.map((r): StoredPolicyView => ({ resource: r.name, revision: r.revision, document: r.value.document })),
  );
  api.route('PUT', '/v1/policies', async (req) => {
    const b = req.json() as { text?: unknown; origin?: unknown };
    if (typeof b !== 'object' || b === null || typeof b.text !== 'string') {
      throw new HttpError(400, 'Policy request must be {"text": "<YAML or JSON documents>", "origin": "<file name>"}', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    let parsed: Policy[];
    try {
      parsed = parsePolicies(b.text, typeof b.origin === 'string' ? b.origin : 'request');
    } catch (err) {
      if (err instanceof PolicyError) throw new HttpError(400, err.message, 'TENDRIL_ERR_POLICY_INVALID');
      throw err;
    }
    if (parsed.length === 0) throw new HttpError(400, 'No policy documents in the request', 'TENDRIL_ERR_POLICY_INVALID');
    // Everything parsed: only now is anything written.
    const applied: AppliedPolicy[] = [];
    for (const p of parsed) {
      const resource = policyResourceName(p);
      const r = await store.put<PolicySpec>('Policy', resource, { document: p.source });
      applied.push({ key: policyKey(p), resource, revision: r.revision });
    }
    return { applied } satisfies PolicyApplyResult;
  });
  api.route('DELETE', '/v1/policies/{ref}', async (req) => {
    const ref = req.params['ref']!;
    const items = (await store.list<PolicySpec>('Policy')).items;
    const matches = items.filter((r) => {
      const [kind, ns, ...rest] = r.name.split('.');
      const name = rest.join('.');
      return r.name === ref || `${ns}/${name}` === ref || (!ref.includes('/') && name === ref) || `${kind}/${ns}/${name}` === ref;
    });
    if (matches.length === 0) throw new HttpError(404, `Policy "${ref}" not found in the cluster`, 'TENDRIL_ERR_POLICY_NOT_FOUND');
    if (matches.length > 1) {
      throw new HttpError(409, `Policy "${ref}" is ambiguous: ${matches.map((m) => m.name).join(', ')}; use NAMESPACE/NAME or the resource name`, 'TENDRIL_ERR_POLICY_AMBIGUOUS');
    }
    const m = matches[0]!;
    await store.delete('Policy', m.name);
    const after = await store.ping();
    return { deleted: m.name, revision: after.revision ?? 0 } satisfies PolicyDeleteResult;
  });

  api.route('GET', '/v1/namespaces', async () => (await store.list<NamespaceSpec>('Namespace')).items.map((r): NamespaceView => ({ name: r.name, labels: r.value.labels })));
  api.route('PATCH', '/v1/namespaces/{name}', async (req) => {
    const name = req.params['name']!;
    if (!isDnsLabel(name)) throw new HttpError(400, `Invalid namespace name "${name}": a DNS label (a-z, 0-9, "-")`, 'TENDRIL_ERR_INVALID_REQUEST');
    const b = req.json() as { labels?: unknown; create?: unknown; annotations?: unknown };
    const annotationChanges = namespaceAnnotationChanges(name, b?.annotations);
    if (typeof b !== 'object' || b === null || typeof b.labels !== 'object' || b.labels === null || Array.isArray(b.labels)) {
      throw new HttpError(400, 'Namespace change must be {"labels": {"key": "value" | null}}', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    const changes = b.labels as Record<string, unknown>;
    for (const [k, v] of Object.entries(changes)) {
      const keyProblem = labelKeyProblem(k);
      if (keyProblem) throw new HttpError(400, `Invalid label for namespace ${name}: ${keyProblem}`, 'TENDRIL_ERR_INVALID_REQUEST');
      if (k === LABEL_NAMESPACE_NAME) throw new HttpError(400, `Label "${k}" is set by the cluster to the namespace's name and cannot be changed`, 'TENDRIL_ERR_INVALID_REQUEST');
      const valueProblem = v === null ? undefined : typeof v !== 'string' ? 'a label value is a string (or null to remove it)' : labelValueProblem(v);
      if (valueProblem) throw new HttpError(400, `Invalid value for label "${k}" of namespace ${name}: ${valueProblem}`, 'TENDRIL_ERR_INVALID_REQUEST');
    }
    for (let attempt = 0; ; attempt++) {
      const cur = await store.get<NamespaceSpec>('Namespace', name);
      if (!cur && b.create === false) throw new HttpError(404, `Namespace "${name}" not found`, 'TENDRIL_ERR_NOT_FOUND');
      if (cur && b.create === true) throw new HttpError(409, `Namespace "${name}" already exists`, 'TENDRIL_ERR_CONFLICT');
      const labels: Record<string, string> = { ...(cur?.value.labels ?? {}) };
      for (const [k, v] of Object.entries(changes)) {
        if (v === null) delete labels[k];
        else labels[k] = v as string;
      }
      labels[LABEL_NAMESPACE_NAME] = name;
      const annotations = applyAnnotationChanges(cur?.value.annotations, annotationChanges);
      try {
        const r = await store.put<NamespaceSpec>('Namespace', name, { labels, ...(annotations ? { annotations } : {}) }, { expectedRevision: cur?.revision ?? 0 });
        return { name, labels, revision: r.revision } satisfies NamespaceView;
      } catch (err) {
        if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_CONFLICT' || attempt > 10) throw err;
      }
    }
  });
}

/** `annotations` of a namespace change: {"key": "value" | null}; undefined when not given. */
function namespaceAnnotationChanges(ns: string, raw: unknown): Record<string, string | null> | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new HttpError(400, 'Namespace "annotations" must be {"key": "value" | null}', 'TENDRIL_ERR_INVALID_REQUEST');
  for (const [k, v] of Object.entries(raw)) {
    const keyProblem = labelKeyProblem(k);
    if (keyProblem) throw new HttpError(400, `Invalid annotation for namespace ${ns}: ${keyProblem}`, 'TENDRIL_ERR_INVALID_REQUEST');
    if (v !== null && typeof v !== 'string') throw new HttpError(400, `Invalid value for annotation "${k}" of namespace ${ns}: a string (or null to remove it)`, 'TENDRIL_ERR_INVALID_REQUEST');
  }
  return raw as Record<string, string | null>;
}

function applyAnnotationChanges(cur: Record<string, string> | undefined, changes: Record<string, string | null> | undefined): Record<string, string> | undefined {
  if (!changes) return cur;
  const out: Record<string, string> = { ...(cur ?? {}) };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
