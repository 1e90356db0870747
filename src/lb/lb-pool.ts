// The TendrilLoadBalancerIPPool resource (Cilium's CiliumLoadBalancerIPPool in the fields Tendril uses), its
// validation, and the label selector it picks services with. Stored as kind "LoadBalancerIPPool" named by the pool.
import { isDnsLabel, labelKeyProblem, labelValueProblem } from '../policy/index.js';
import { cidrSize, isIPv4, parseCidr, parseIPv4 } from '../util/ip.js';
import { LbError } from './errors.js';
import type { ServiceSpec } from './service.js';

/** Annotation: the LoadBalancer IPs a service asks for (comma-separated). */
export const LBIPAM_IPS_ANNOTATION = 'lbipam.tendril.io/ips';
/** Annotation: services with the same key may share an IP when their ports do not clash. */
export const LBIPAM_SHARING_KEY_ANNOTATION = 'lbipam.tendril.io/sharing-key';
/** Implicit labels a serviceSelector may use (as Cilium's io.kubernetes.service.*). */
export const SERVICE_NAMESPACE_LABEL = 'io.kubernetes.service.namespace';
export const SERVICE_NAME_LABEL = 'io.kubernetes.service.name';

export interface LbPoolBlock {
  cidr?: string;
  start?: string;
  stop?: string;
}

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: SelectorOperator; values?: string[] }>;
}

export interface LbPoolCondition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface LbPoolSpec {
  blocks: LbPoolBlock[];
  /** Absent: every LoadBalancer service. */
  serviceSelector?: LabelSelector;
  /** With a cidr block: hand out its network and broadcast addresses too (default false). */
  allowFirstLastIPs: boolean;
  /** A disabled pool hands out nothing new; what it gave stays. */
  disabled: boolean;
}

/** The stored value: the user's spec, and the status the operator writes. */
export interface LbPoolResource {
  spec: LbPoolSpec;
  status?: { conditions: LbPoolCondition[]; available: number; used: number };
}

/** An inclusive range of IPv4 addresses (numbers). */
export interface IpRange {
  first: number;
  last: number;
}

function fail(pool: string, what: string): never {
  throw new LbError('TENDRIL_ERR_LB_POOL_INVALID', `Invalid LoadBalancer IP pool ${JSON.stringify(pool)}: ${what}`);
}

export function validateLbPoolName(name: unknown): string {
  if (typeof name !== 'string' || !isDnsLabel(name)) fail(String(name), 'the name is not a DNS label (lower-case letters, digits, "-", at most 63)');
  return name;
}

/** Checks a pool spec as a user gives it and fills in defaults; throws TENDRIL_ERR_LB_POOL_INVALID naming the field. */
export function validateLbPool(name: string, input: unknown): LbPoolSpec {
  validateLbPoolName(name);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) fail(name, 'expected an object');
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['blocks', 'serviceSelector', 'allowFirstLastIPs', 'disabled'].includes(k)) fail(name, `unknown field "${k}"`);
  const rawBlocks = o['blocks'];
  if (!Array.isArray(rawBlocks) || rawBlocks.length === 0) fail(name, 'blocks: expected at least one block (cidr, or start and stop)');
  const blocks = rawBlocks.map((raw: unknown, i): LbPoolBlock => {
    const at = `blocks[${i}]`;
    if (typeof raw !== 'object' || raw === null) fail(name, `${at}: expected an object`);
    const b = raw as Record<string, unknown>;
    for (const k of Object.keys(b)) if (!['cidr', 'start', 'stop'].includes(k)) fail(name, `${at}: unknown field "${k}"`);
    if (b['cidr'] !== undefined) {
      if (b['start'] !== undefined || b['stop'] !== undefined) fail(name, `${at}: give either cidr or start/stop, not both`);
      try {
        parseCidr(String(b['cidr']));
      } catch (err) {
        fail(name, `${at}.cidr ${JSON.stringify(b['cidr'])}: ${(err as Error).message}`);
      }
      if (typeof b['cidr'] !== 'string' || !b['cidr'].includes('/')) fail(name, `${at}.cidr ${JSON.stringify(b['cidr'])} is no IPv4 CIDR`);
      return { cidr: b['cidr'] };
    }
    const start = b['start'];
    if (typeof start !== 'string' || !isIPv4(start)) fail(name, `${at}.start ${JSON.stringify(start)} is not an IPv4 address (a block needs cidr, or start)`);
    const stop = b['stop'] ?? start;
    if (typeof stop !== 'string' || !isIPv4(stop)) fail(name, `${at}.stop ${JSON.stringify(stop)} is not an IPv4 address`);
    if (parseIPv4(stop) < parseIPv4(start)) fail(name, `${at}: stop ${stop} is below start ${start}`);
    return { start, stop };
  });
  const spec: LbPoolSpec = { blocks, allowFirstLastIPs: false, disabled: false };
  for (const f of ['allowFirstLastIPs', 'disabled'] as const) {
    const v = o[f];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') fail(name, `${f} ${JSON.stringify(v)} is not true or false`);
    spec[f] = v;
  }
  if (o['serviceSelector'] !== undefined) spec.serviceSelector = validateSelector(name, o['serviceSelector']);
  return spec;
}

function validateSelector(pool: string, raw: unknown): LabelSelector {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(pool, 'serviceSelector: expected {matchLabels, matchExpressions}');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['matchLabels', 'matchExpressions'].includes(k)) fail(pool, `serviceSelector: unknown field "${k}"`);
  const sel: LabelSelector = {};
  if (o['matchLabels'] !== undefined) {
    const ml = o['matchLabels'];
    if (typeof ml !== 'object' || ml === null || Array.isArray(ml)) fail(pool, 'serviceSelector.matchLabels: expected an object of label key: value');
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(ml as Record<string, unknown>)) {
      const kp = labelKeyProblem(k);
      if (kp) fail(pool, `serviceSelector.matchLabels: ${kp}`);
      if (typeof v !== 'string' || labelValueProblem(v)) fail(pool, `serviceSelector.matchLabels "${k}": ${typeof v === 'string' ? labelValueProblem(v) : `${JSON.stringify(v)} is not a string`}`);
      out[k] = v;
    }
    sel.matchLabels = out;
  }
  if (o['matchExpressions'] !== undefined) {
    const me = o['matchExpressions'];
    if (!Array.isArray(me)) fail(pool, 'serviceSelector.matchExpressions: expected a list');
    sel.matchExpressions = me.map((e: unknown, i) => {
      const at = `serviceSelector.matchExpressions[${i}]`;
      if (typeof e !== 'object' || e === null) fail(pool, `${at}: expected {key, operator, values}`);
      const x = e as Record<string, unknown>;
      const key = x['key'];
      if (typeof key !== 'string' || labelKeyProblem(key)) fail(pool, `${at}.key ${JSON.stringify(key)} is not a label key`);
      const op = x['operator'];
      if (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist') fail(pool, `${at}.operator ${JSON.stringify(op)} is not one of In, NotIn, Exists, DoesNotExist`);
      const values = x['values'];
      if (op === 'In' || op === 'NotIn') {
        if (!Array.isArray(values) || values.length === 0 || !values.every((v) => typeof v === 'string')) fail(pool, `${at}.values: ${op} needs a non-empty list of strings`);
        return { key, operator: op, values: values as string[] };
      }
      if (values !== undefined && (!Array.isArray(values) || values.length > 0)) fail(pool, `${at}.values: ${op} takes no values`);
      return { key, operator: op };
    });
  }
  return sel;
}

/** The labels a pool's selector sees on a service: its own, and its namespace and name. */
export function serviceSelectorLabels(s: Pick<ServiceSpec, 'namespace' | 'name' | 'labels'>): Record<string, string> {
  return { ...(s.labels ?? {}), [SERVICE_NAMESPACE_LABEL]: s.namespace, [SERVICE_NAME_LABEL]: s.name };
}

export function selectorMatches(sel: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (!sel) return true;
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const v = labels[e.key];
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
    if (e.operator === 'In' && (v === undefined || !e.values!.includes(v))) return false;
    if (e.operator === 'NotIn' && v !== undefined && e.values!.includes(v)) return false;
  }
  return true;
}

/** The addresses a pool hands out, block by block (a cidr's first and last only with allowFirstLastIPs). */
export function poolRanges(spec: LbPoolSpec): IpRange[] {
  return spec.blocks.map((b) => {
    if (b.cidr !== undefined) {
      const c = parseCidr(b.cidr);
      const size = cidrSize(c);
      const first = c.base;
      const last = c.base + size - 1;
      // A /31 or /32 has no network and broadcast address to skip.
      if (spec.allowFirstLastIPs || size <= 2) return { first, last };
      return { first: first + 1, last: last - 1 };
    }
    return { first: parseIPv4(b.start!), last: parseIPv4(b.stop ?? b.start!) };
  });
}

/** The whole address space of a pool's blocks (network and broadcast included): what overlap is judged on. */
export function poolSpan(spec: LbPoolSpec): IpRange[] {
  return spec.blocks.map((b) => {
    if (b.cidr !== undefined) {
      const c = parseCidr(b.cidr);
      return { first: c.base, last: c.base + cidrSize(c) - 1 };
    }
    return { first: parseIPv4(b.start!), last: parseIPv4(b.stop ?? b.start!) };
  });
}

export function rangesOverlap(a: readonly IpRange[], b: readonly IpRange[]): boolean {
  return a.some((x) => b.some((y) => x.first <= y.last && y.first <= x.last));
}

/** Condition type of a service's LoadBalancer IP request (as Cilium's io.cilium/lb-ipam-request-satisfied). */
export const LB_REQUEST_SATISFIED = 'tendril.io/lb-ipam-request-satisfied';

/**
 * ServiceStatus resource, named as its Service ("<namespace>.<name>"), written by the operator: the LoadBalancer
 * IPs it got (Kubernetes' status.loadBalancer.ingress) and why it has none.
 */
export interface ServiceStatusSpec {
  loadBalancer: { ingress: string[] };
  conditions: LbPoolCondition[];
}

/** IPAMState "lb-ip.<ip>": who holds a LoadBalancer IP (several services only with one sharing key). */
export interface LbIpClaim {
  owners: Array<{ service: string; ports: string[] }>;
  sharingKey?: string;
}

export const LB_IP_CLAIM_PREFIX = 'lb-ip.';
