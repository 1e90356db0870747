// TendrilEgressGatewayPolicy (Cilium's CiliumEgressGatewayPolicy shape): the document, its validation, and the
// label-selector matching of pods, namespaces and nodes.
import { isIPv4, parseCidr, formatCidr } from '../util/ip.js';
import { EgressError } from './errors.js';

export const EGRESS_POLICY_KIND = 'TendrilEgressGatewayPolicy';
export const EGRESS_API_VERSION = 'tendril.io/v2';

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }>;
}

export interface EgressSelector {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
}

export interface EgressGatewaySpec {
  nodeSelector: LabelSelector;
  /** Given: used as is. Omitted: the operator allocates one from --egress-ip-pool. */
  egressIP?: string;
  /** The gateway's device the egress IP is put on (default: the agent's native device). */
  interface?: string;
}

export interface EgressGatewayPolicySpec {
  name: string;
  selectors: EgressSelector[];
  destinationCIDRs: string[];
  excludedCIDRs: string[];
  egressGateway: EgressGatewaySpec;
}

/** What the operator decided: the gateway node and the egress IP. Absent: no healthy node matches yet. */
export interface EgressGatewayPolicyStatus {
  gatewayNode?: string;
  gatewayIP?: string;
  egressIP?: string;
  /** Why there is no gateway (no node matches, pool exhausted). */
  problem?: string;
}

/** Value of the store's EgressGatewayPolicy resource (named by the policy), written by the operator only. */
export interface EgressGatewayPolicyResource {
  spec: EgressGatewayPolicySpec;
  status: EgressGatewayPolicyStatus;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const OPS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;

function fail(name: string, path: string, why: string): never {
  throw new EgressError('TENDRIL_ERR_EGRESS_POLICY_INVALID', `Invalid ${EGRESS_POLICY_KIND} ${JSON.stringify(name)}: ${path}: ${why}`);
}

function selector(name: string, path: string, v: unknown): LabelSelector {
  if (!isObj(v)) fail(name, path, 'expected an object with matchLabels and/or matchExpressions');
  const out: LabelSelector = {};
  for (const k of Object.keys(v)) if (k !== 'matchLabels' && k !== 'matchExpressions') fail(name, `${path}.${k}`, 'unknown field');
  if (v['matchLabels'] !== undefined) {
    const ml = v['matchLabels'];
    if (!isObj(ml)) fail(name, `${path}.matchLabels`, 'expected an object of label: value');
    const labels: Record<string, string> = {};
    for (const [k, x] of Object.entries(ml)) {
      if (typeof x !== 'string') fail(name, `${path}.matchLabels.${k}`, `expected a string, not ${JSON.stringify(x)}`);
      labels[k] = x;
    }
    out.matchLabels = labels;
  }
  if (v['matchExpressions'] !== undefined) {
    const me = v['matchExpressions'];
    if (!Array.isArray(me)) fail(name, `${path}.matchExpressions`, 'expected a list');
    out.matchExpressions = me.map((e: unknown, i) => {
      const p = `${path}.matchExpressions[${i}]`;
      if (!isObj(e) || typeof e['key'] !== 'string' || e['key'] === '') fail(name, p, 'expected {key, operator, values}');
      const op = e['operator'];
      if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) fail(name, `${p}.operator`, `${JSON.stringify(op)} is not one of ${OPS.join(', ')}`);
      const values = e['values'] ?? [];
      if (!Array.isArray(values) || values.some((x) => typeof x !== 'string')) fail(name, `${p}.values`, 'expected a list of strings');
      if ((op === 'In' || op === 'NotIn') && values.length === 0) fail(name, `${p}.values`, `operator ${op} needs at least one value`);
      if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) fail(name, `${p}.values`, `operator ${op} takes no values`);
      return { key: e['key'], operator: op as (typeof OPS)[number], ...(values.length ? { values: values as string[] } : {}) };
    });
  }
  return out;
}

function cidrs(name: string, path: string, v: unknown, required: boolean): string[] {
  if (v === undefined && !required) return [];
  if (!Array.isArray(v) || (required && v.length === 0)) fail(name, path, required ? 'expected a non-empty list of IPv4 CIDRs' : 'expected a list of IPv4 CIDRs');
  return v.map((c: unknown, i) => {
    if (typeof c !== 'string' || !/^\d+\.\d+\.\d+\.\d+\/\d{1,2}$/.test(c)) fail(name, `${path}[${i}]`, `${JSON.stringify(c)} is no IPv4 CIDR (e.g. 192.168.10.0/24)`);
    try {
      return formatCidr(parseCidr(c));
    } catch (err) {
      fail(name, `${path}[${i}]`, `${JSON.stringify(c)}: ${(err as Error).message}`);
    }
  });
}

/**
 * Validates one TendrilEgressGatewayPolicy document ({apiVersion, kind, metadata: {name}, spec}) or its bare form
 * ({name, selectors, …}). Every problem is a TENDRIL_ERR_EGRESS_POLICY_INVALID naming the field.
 */
export function parseEgressPolicy(doc: unknown): EgressGatewayPolicySpec {
  if (!isObj(doc)) fail('?', '(document)', 'expected an object');
  let name: unknown;
  let spec: Record<string, unknown>;
  if (doc['kind'] !== undefined || doc['spec'] !== undefined) {
    if (doc['kind'] !== EGRESS_POLICY_KIND) fail(String((isObj(doc['metadata']) && doc['metadata']['name']) || '?'), 'kind', `expected ${JSON.stringify(EGRESS_POLICY_KIND)}, not ${JSON.stringify(doc['kind'])}`);
    name = isObj(doc['metadata']) ? doc['metadata']['name'] : undefined;
    if (!isObj(doc['spec'])) fail(String(name ?? '?'), 'spec', 'expected an object');
    spec = doc['spec'];
  } else {
    name = doc['name'];
    spec = doc;
  }
  if (typeof name !== 'string' || !NAME.test(name)) fail(String(name ?? '?'), 'metadata.name', `${JSON.stringify(name)} is no DNS subdomain name`);
  const n = name;
  for (const k of Object.keys(spec)) {
    if (!['name', 'selectors', 'destinationCIDRs', 'excludedCIDRs', 'egressGateway'].includes(k)) fail(n, `spec.${k}`, 'unknown field');
  }
  const sel = spec['selectors'];
  if (!Array.isArray(sel) || sel.length === 0) fail(n, 'spec.selectors', 'expected a non-empty list of {podSelector, namespaceSelector}');
  const selectors = sel.map((s: unknown, i): EgressSelector => {
    const p = `spec.selectors[${i}]`;
    if (!isObj(s)) fail(n, p, 'expected {podSelector, namespaceSelector}');
    for (const k of Object.keys(s)) if (k !== 'podSelector' && k !== 'namespaceSelector') fail(n, `${p}.${k}`, 'unknown field');
    if (s['podSelector'] === undefined && s['namespaceSelector'] === undefined) fail(n, p, 'needs a podSelector or a namespaceSelector');
    return {
      ...(s['podSelector'] !== undefined ? { podSelector: selector(n, `${p}.podSelector`, s['podSelector']) } : {}),
      ...(s['namespaceSelector'] !== undefined ? { namespaceSelector: selector(n, `${p}.namespaceSelector`, s['namespaceSelector']) } : {}),
    };
  });
  const destinationCIDRs = cidrs(n, 'spec.destinationCIDRs', spec['destinationCIDRs'], true);
  const excludedCIDRs = cidrs(n, 'spec.excludedCIDRs', spec['excludedCIDRs'], false);
  const gw = spec['egressGateway'];
  if (!isObj(gw)) fail(n, 'spec.egressGateway', 'expected {nodeSelector, egressIP?, interface?}');
  for (const k of Object.keys(gw)) if (!['nodeSelector', 'egressIP', 'interface'].includes(k)) fail(n, `spec.egressGateway.${k}`, 'unknown field');
  if (gw['nodeSelector'] === undefined) fail(n, 'spec.egressGateway.nodeSelector', 'required (which nodes may be the gateway)');
  const egressGateway: EgressGatewaySpec = { nodeSelector: selector(n, 'spec.egressGateway.nodeSelector', gw['nodeSelector']) };
  if (gw['egressIP'] !== undefined) {
    if (typeof gw['egressIP'] !== 'string' || !isIPv4(gw['egressIP'])) fail(n, 'spec.egressGateway.egressIP', `${JSON.stringify(gw['egressIP'])} is no IPv4 address`);
    egressGateway.egressIP = gw['egressIP'];
  }
  if (gw['interface'] !== undefined) {
    if (typeof gw['interface'] !== 'string' || !/^[A-Za-z0-9_.@-]{1,15}$/.test(gw['interface'])) fail(n, 'spec.egressGateway.interface', `${JSON.stringify(gw['interface'])} is no interface name`);
    egressGateway.interface = gw['interface'];
  }
  return { name: n, selectors, destinationCIDRs, excludedCIDRs, egressGateway };
}

/** Kubernetes label-selector semantics over a plain label map (an empty selector selects everything). */
export function labelsMatch(s: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of s.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const val = labels[e.key];
    const inValues = has && val !== undefined && (e.values ?? []).includes(val);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}
