// What tendril_egress_gw_policy_v4 must hold: for every pod of the cluster a policy selects, one entry per
// destination CIDR (to its gateway, with its egress IP) and one per excluded CIDR (not redirected).
import { parseLabel, LABEL_NAMESPACE_NAME } from '../policy/index.js';
import { labelsMatch, type EgressGatewayPolicyResource } from './policy.js';

/** gatewayIP of an excludedCIDRs entry (bpf/lib/egress.h EGRESS_GW_EXCLUDED). */
export const EXCLUDED_GATEWAY = '0.0.0.1';

export interface EgressEndpoint {
  ip: string;
  namespace: string;
  /** Security labels of its identity ("k8s:app=web", …). */
  labels: readonly string[];
}

export interface EgressEntry {
  /** Pod IP. */
  source: string;
  /** Destination CIDR (normalized). */
  destination: string;
  egressIP: string;
  /** Underlay IP of the gateway node, or EXCLUDED_GATEWAY. */
  gatewayIP: string;
  /** The policy the entry is from. */
  policy: string;
}

/** The pod's own labels (k8s source) from its security labels. */
export function podLabels(labels: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of labels) {
    const p = parseLabel(l);
    if (p.source === 'k8s') out[p.key] = p.value;
  }
  return out;
}

/** Does one of the policy's selectors pick the endpoint (pod labels, and its namespace's labels)? */
export function policySelects(p: EgressGatewayPolicyResource, ep: EgressEndpoint, nsLabels: Readonly<Record<string, string>> | undefined): boolean {
  const pod = podLabels(ep.labels);
  const ns = { ...(nsLabels ?? {}), [LABEL_NAMESPACE_NAME]: ep.namespace };
  return p.spec.selectors.some((s) => (!s.podSelector || labelsMatch(s.podSelector, pod)) && (!s.namespaceSelector || labelsMatch(s.namespaceSelector, ns)));
}

/**
 * Entries of every policy with a gateway (status), sorted; a (source, destination) two policies claim goes to the
 * first policy by name, as the map can hold one.
 */
export function egressEntries(
  policies: readonly EgressGatewayPolicyResource[],
  endpoints: readonly EgressEndpoint[],
  namespaces: ReadonlyMap<string, Record<string, string>>,
): EgressEntry[] {
  const out = new Map<string, EgressEntry>();
  for (const p of [...policies].sort((a, b) => a.spec.name.localeCompare(b.spec.name))) {
    const { gatewayIP, egressIP } = p.status;
    if (!gatewayIP || !egressIP) continue;
    for (const ep of endpoints) {
      if (!policySelects(p, ep, namespaces.get(ep.namespace))) continue;
      const put = (destination: string, gw: string): void => {
        const k = `${ep.ip} ${destination}`;
        if (!out.has(k)) out.set(k, { source: ep.ip, destination, egressIP, gatewayIP: gw, policy: p.spec.name });
      };
      for (const d of p.spec.excludedCIDRs) put(d, EXCLUDED_GATEWAY);
      for (const d of p.spec.destinationCIDRs) put(d, gatewayIP);
    }
  }
  return [...out.values()].sort((a, b) => (a.source === b.source ? a.destination.localeCompare(b.destination) : a.source.localeCompare(b.source)));
}
