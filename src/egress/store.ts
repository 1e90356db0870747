// How egress gateway policies are kept in the cluster store: kind EgressGatewayPolicy, named by the policy, the
// operator writing them (spec as applied through its API, status from its passes).
import type { Store, Resource } from '../store/index.js';
import { EgressError } from './errors.js';
import { parseEgressPolicy, type EgressGatewayPolicyResource } from './policy.js';

export const EGRESS_STORE_KIND = 'EgressGatewayPolicy' as const;

/** Validates and stores a policy document; a changed spec keeps the status until the operator's next pass. */
export async function applyEgressPolicy(store: Store, doc: unknown): Promise<Resource<EgressGatewayPolicyResource>> {
  const spec = parseEgressPolicy(doc);
  for (let attempt = 0; ; attempt++) {
    const cur = await store.get<EgressGatewayPolicyResource>(EGRESS_STORE_KIND, spec.name);
    try {
      return await store.put<EgressGatewayPolicyResource>(EGRESS_STORE_KIND, spec.name, { spec, status: cur?.value.status ?? {} }, { expectedRevision: cur?.revision ?? 0 });
    } catch (err) {
      if (attempt < 5 && (err as { code?: string }).code === 'TENDRIL_ERR_STORE_CONFLICT') continue;
      throw err;
    }
  }
}

export async function deleteEgressPolicy(store: Store, name: string): Promise<void> {
  if (!(await store.delete(EGRESS_STORE_KIND, name))) throw new EgressError('TENDRIL_ERR_EGRESS_POLICY_NOT_FOUND', `TendrilEgressGatewayPolicy "${name}" not found in the cluster`);
}

export async function listEgressPolicies(store: Store): Promise<Array<EgressGatewayPolicyResource & { revision: number }>> {
  return (await store.list<EgressGatewayPolicyResource>(EGRESS_STORE_KIND)).items.map((r) => ({ ...r.value, revision: r.revision }));
}
