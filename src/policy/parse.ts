// Parses and strictly validates NetworkPolicy / TendrilNetworkPolicy documents into normalized policies.
import { parseAllDocuments } from 'yaml';
import { formatCidr, parseCidr, type Cidr } from '../util/ip.js';
import { PolicyError } from './errors.js';
import { LABEL_NAMESPACE_LABELS_PREFIX, LABEL_POD_NAMESPACE } from './identity.js';
import { parseHttpRules } from './http.js';
import { ICMP_TYPE_NAMES } from './ports.js';
import type {
  HttpRule,
  Direction,
  Entity,
  LabelRequirement,
  Peer,
  Policy,
  PolicyKind,
  PolicyRule,
  PolicySpec,
  PortMatch,
  PortProtocol,
  Selector,
  SelectorOperator,
} from './types.js';

export const API_VERSION: Record<PolicyKind, string> = {
  NetworkPolicy: 'networking.k8s.io/v1',
  TendrilNetworkPolicy: 'tendril.io/v2',
  TendrilClusterwideNetworkPolicy: 'tendril.io/v2',
};

const KINDS: readonly PolicyKind[] = ['NetworkPolicy', 'TendrilNetworkPolicy', 'TendrilClusterwideNetworkPolicy'];
const LIST_KINDS = ['List', 'NetworkPolicyList', 'TendrilNetworkPolicyList', 'TendrilClusterwideNetworkPolicyList'];
/** The cluster-scoped kind: no namespace, its selectors span every namespace (CiliumClusterwideNetworkPolicy). */
export const CLUSTERWIDE_KIND: PolicyKind = 'TendrilClusterwideNetworkPolicy';
export const ENTITIES: readonly Entity[] = [
  'all',
  'world',
  'cluster',
  'host',
  'remote-node',
  'health',
  'init',
  'unmanaged',
  'none',
];
/** Label sources a TendrilNetworkPolicy selector key may carry ("k8s:app"); a bare key means any source. */
const SELECTOR_SOURCES = ['k8s', 'any', 'reserved'];

/** Stable key of a policy, kind-qualified so that a NetworkPolicy and a TendrilNetworkPolicy of the same
 *  name never collide: "NetworkPolicy/x/deny-all", "TendrilNetworkPolicy/x/deny-all"; a cluster-wide one has no
 *  namespace: "TendrilClusterwideNetworkPolicy/deny-all". */
export function policyKey(p: Pick<Policy, 'kind' | 'namespace' | 'name'>): string {
  return p.namespace === '' ? `${p.kind}/${p.name}` : `${p.kind}/${p.namespace}/${p.name}`;
}

// ---------------------------------------------------------------------------------------------------------
// Validation context: knows what document it is checking so every failure names document, field and reason.

class Checker {
  what = 'policy document';
  constructor(readonly doc: string | undefined) {}

  fail(field: string, reason: string): never {
    const where = this.doc === undefined ? '' : ` (${this.doc})`;
    const message = `Invalid ${this.what}${where}: ${field === '' ? '' : `${field}: `}${reason}`;
    throw new PolicyError(message, field, reason, { doc: this.doc });
  }
}

type Obj = Record<string, unknown>;

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'a list';
  switch (typeof x) {
    case 'string':
      return `the string ${JSON.stringify(x)}`;
    case 'number':
      return `the number ${x}`;
    case 'boolean':
      return `the boolean ${x}`;
    case 'object':
      return 'an object';
    default:
      return typeof x;
  }
}

function isObj(x: unknown): x is Obj {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function obj(c: Checker, x: unknown, path: string): Obj {
  if (x === undefined) c.fail(path, 'required');
  if (!isObj(x)) c.fail(path, `must be an object, got ${describe(x)}`);
  return x;
}

function list(c: Checker, x: unknown, path: string): unknown[] {
  if (!Array.isArray(x)) c.fail(path, `must be a list, got ${describe(x)}`);
  return x;
}

/** An optional list: absent or null -> undefined. */
function optList(c: Checker, o: Obj, key: string, path: string): unknown[] | undefined {
  const x = o[key];
  return x === undefined || x === null ? undefined : list(c, x, join(path, key));
}

function str(c: Checker, x: unknown, path: string): string {
  if (x === undefined) c.fail(path, 'required');
  if (typeof x !== 'string') c.fail(path, `must be a string, got ${describe(x)}`);
  return x;
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** Rejects every key not in `allowed` (a typo must never silently widen a policy); `unsupported` names
 *  real upstream fields Tendril does not implement, so the message says so instead of "unknown". */
function keys(c: Checker, o: Obj, path: string, allowed: readonly string[], unsupported: readonly string[] = []): void {
  for (const k of Object.keys(o)) {
    if (allowed.includes(k)) continue;
    if (unsupported.includes(k)) c.fail(join(path, k), 'is not supported by Tendril');
    const near = allowed.find((a) => a.toLowerCase() === k.toLowerCase() || editDistance(a, k) <= 2);
    c.fail(join(path, k), `unknown field${near === undefined ? '' : ` (did you mean "${near}"?)`}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Kubernetes name and label syntax.

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

function checkDnsLabel(c: Checker, s: string, path: string): void {
  if (s.length > 63 || !DNS_LABEL.test(s)) {
    c.fail(path, `${JSON.stringify(s)} is not a valid name (lower-case letters, digits and '-', at most 63)`);
  }
}

function checkDnsSubdomain(c: Checker, s: string, path: string): void {
  if (s.length > 253 || !DNS_SUBDOMAIN.test(s)) {
    c.fail(path, `${JSON.stringify(s)} is not a valid name (lower-case letters, digits, '-' and '.', at most 253)`);
  }
}

/** Kubernetes label key: [prefix/]name. What is wrong with it, or undefined. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) {
    return `label key ${JSON.stringify(key)} has an invalid prefix ${JSON.stringify(prefix)}`;
  }
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    return `${JSON.stringify(key)} is not a valid label key (name part: letters, digits, '-', '_', '.', at most 63, alphanumeric at both ends)`;
  }
  return undefined;
}

/** Kubernetes label value (empty allowed). What is wrong with it, or undefined. */
export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63 || !LABEL_VALUE.test(value)) {
    return `${JSON.stringify(value)} is not a valid label value (letters, digits, '-', '_', '.', at most 63)`;
  }
  return undefined;
}

/** A namespace name (a DNS label). */
export function isDnsLabel(s: string): boolean {
  return s.length <= 63 && DNS_LABEL.test(s);
}

function checkLabelValue(c: Checker, v: unknown, path: string): string {
  const s = str(c, v, path);
  const problem = labelValueProblem(s);
  if (problem) c.fail(path, problem);
  return s;
}

function checkPortName(c: Checker, s: string, path: string): void {
  if (s.length > 15 || !PORT_NAME.test(s) || s.includes('--') || !/[a-z]/.test(s)) {
    c.fail(path, `${JSON.stringify(s)} is not a valid port number or port name (a name is at most 15 lower-case letters, digits and '-', with at least one letter)`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Selectors.

/** How selector keys are read: K8s selectors hold plain label keys (source k8s); namespace selectors target
 *  namespace labels; Tendril keys may carry a source ("k8s:app", "any:app", "reserved:host"; bare = any). */
type KeyStyle = 'k8s' | 'k8s-namespace' | 'tendril';

function selectorKey(c: Checker, raw: string, path: string, style: KeyStyle): { source: string | null; key: string } {
  let source: string | null = 'k8s';
  let key = raw;
  if (style === 'tendril') {
    source = null;
    const colon = raw.indexOf(':');
    if (colon >= 0) {
      const s = raw.slice(0, colon);
      if (!SELECTOR_SOURCES.includes(s)) {
        c.fail(path, `label source ${JSON.stringify(s)} in key ${JSON.stringify(raw)} is not one of ${SELECTOR_SOURCES.join(', ')}`);
      }
      source = s === 'any' ? null : s;
      key = raw.slice(colon + 1);
    }
  }
  const problem = labelKeyProblem(key);
  if (problem !== undefined) c.fail(path, problem);
  if (style === 'k8s-namespace') key = LABEL_NAMESPACE_LABELS_PREFIX + key;
  return { source, key };
}

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

function parseSelector(c: Checker, x: unknown, path: string, style: KeyStyle): Selector {
  const o = obj(c, x, path);
  keys(c, o, path, ['matchLabels', 'matchExpressions']);
  const requirements: LabelRequirement[] = [];
  if (o.matchLabels !== undefined && o.matchLabels !== null) {
    const ml = obj(c, o.matchLabels, join(path, 'matchLabels'));
    for (const [k, v] of Object.entries(ml)) {
      const p = `${join(path, 'matchLabels')}.${k}`;
      const { source, key } = selectorKey(c, k, p, style);
      requirements.push({ source, key, operator: 'In', values: [checkLabelValue(c, v, p)] });
    }
  }
  const exprs = optList(c, o, 'matchExpressions', path);
  exprs?.forEach((e, i) => {
    const p = `${join(path, 'matchExpressions')}[${i}]`;
    const eo = obj(c, e, p);
    keys(c, eo, p, ['key', 'operator', 'values']);
    const { source, key } = selectorKey(c, str(c, eo.key, join(p, 'key')), join(p, 'key'), style);
    const op = str(c, eo.operator, join(p, 'operator'));
    if (!(OPERATORS as readonly string[]).includes(op)) {
      c.fail(join(p, 'operator'), `${JSON.stringify(op)} is not one of ${OPERATORS.join(', ')}`);
    }
    const operator = op as SelectorOperator;
    const raw = eo.values === undefined || eo.values === null ? [] : list(c, eo.values, join(p, 'values'));
    const values = raw.map((v, j) => checkLabelValue(c, v, `${join(p, 'values')}[${j}]`));
    if ((operator === 'In' || operator === 'NotIn') && values.length === 0) {
      c.fail(join(p, 'values'), `required (at least one value) for operator ${operator}`);
    }
    if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) {
      c.fail(join(p, 'values'), `must be empty for operator ${operator}`);
    }
    requirements.push({ source, key, operator, values: [...new Set(values)].sort() });
  });
  return { requirements };
}

function constrainsNamespace(s: Selector): boolean {
  return s.requirements.some((r) => r.key === LABEL_POD_NAMESPACE && r.source !== 'reserved');
}

function namesReserved(s: Selector): boolean {
  return s.requirements.some((r) => r.source === 'reserved');
}

// ---------------------------------------------------------------------------------------------------------
// CIDRs and ports.

function parseCidrText(c: Checker, x: unknown, path: string, allowBareIp: boolean): Cidr {
  const s = str(c, x, path);
  if (s.includes(':')) c.fail(path, `${JSON.stringify(s)}: IPv6 is not supported`);
  const text = allowBareIp && !s.includes('/') ? `${s}/32` : s;
  try {
    return parseCidr(text);
  } catch {
    return c.fail(path, `${JSON.stringify(s)} is not a valid IPv4 CIDR`);
  }
}

function cidrInside(inner: Cidr, outer: Cidr): boolean {
  if (inner.bits < outer.bits) return false;
  const shift = 32 - outer.bits;
  return outer.bits === 0 || inner.base >>> shift === outer.base >>> shift;
}

/** path: the peer object (for except); cidrKey: its cidr field, or null when path is the CIDR string itself.
 *  type: Kubernetes' ipBlock (every address) or Cilium's CIDR (outside the cluster). */
function cidrPeer(c: Checker, cidrX: unknown, exceptX: unknown, path: string, cidrKey: string | null, allowBareIp: boolean, type: 'cidr' | 'ipBlock' = 'cidr'): Peer {
  const cidr = parseCidrText(c, cidrX, cidrKey === null ? path : join(path, cidrKey), allowBareIp);
  const exceptList = exceptX === undefined || exceptX === null ? [] : list(c, exceptX, join(path, 'except'));
  const except = exceptList.map((e, i) => {
    const p = `${join(path, 'except')}[${i}]`;
    const ex = parseCidrText(c, e, p, allowBareIp);
    if (!cidrInside(ex, cidr) || ex.bits === cidr.bits) {
      c.fail(p, `${formatCidr(ex)} is not inside cidr ${formatCidr(cidr)}`);
    }
    return formatCidr(ex);
  });
  return { type, cidr: formatCidr(cidr), except: [...new Set(except)].sort() };
}

function parseProtocol(c: Checker, x: unknown, path: string, allowAny: boolean): PortProtocol {
  const s = str(c, x, path);
  const allowed = allowAny ? ['TCP', 'UDP', 'SCTP', 'ANY'] : ['TCP', 'UDP', 'SCTP'];
  if (!allowed.includes(s)) c.fail(path, `${JSON.stringify(s)} is not one of ${allowed.join(', ')}`);
  return s as PortProtocol;
}

function checkPortNumber(c: Checker, n: number, path: string, min: number): void {
  if (!Number.isInteger(n) || n < min || n > 65535) c.fail(path, `${n} is out of range (${min}-65535)`);
}

/** One K8s NetworkPolicyPort {protocol (default TCP), port (number or name), endPort}. */
function parseK8sPort(c: Checker, x: unknown, path: string): PortMatch {
  const o = obj(c, x, path);
  keys(c, o, path, ['protocol', 'port', 'endPort']);
  const protocol = o.protocol === undefined || o.protocol === null ? 'TCP' : parseProtocol(c, o.protocol, join(path, 'protocol'), false);
  return portMatch(c, o, path, protocol, false);
}

/** Shared port/endPort logic. Tendril accepts numeric strings ("80") and port 0 (= every port). */
function portMatch(c: Checker, o: Obj, path: string, protocol: PortProtocol, tendril: boolean): PortMatch {
  const portPath = join(path, 'port');
  const endPath = join(path, 'endPort');
  let port: number | string | undefined;
  if (o.port !== undefined && o.port !== null) {
    if (typeof o.port === 'number') port = o.port;
    else if (typeof o.port === 'string') port = tendril && /^\d+$/.test(o.port) ? Number(o.port) : o.port;
    else c.fail(portPath, `must be a port number or name, got ${describe(o.port)}`);
  }
  const hasEnd = o.endPort !== undefined && o.endPort !== null;
  if (typeof port === 'string') {
    checkPortName(c, port, portPath);
    if (hasEnd) c.fail(endPath, `cannot be used with the named port ${JSON.stringify(port)}`);
    return { kind: 'named', protocol, name: port };
  }
  if (port === undefined) {
    if (hasEnd) c.fail(endPath, 'requires a numeric port');
    return { kind: 'all', protocol };
  }
  checkPortNumber(c, port, portPath, tendril ? 0 : 1);
  if (!hasEnd) return port === 0 ? { kind: 'all', protocol } : { kind: 'range', protocol, from: port, to: port };
  if (typeof o.endPort !== 'number') c.fail(endPath, `must be a number, got ${describe(o.endPort)}`);
  const end = o.endPort;
  if (port === 0) c.fail(endPath, 'requires a non-zero port');
  checkPortNumber(c, end, endPath, 1);
  if (end < port) c.fail(endPath, `${end} is lower than port ${port}`);
  return { kind: 'range', protocol, from: port, to: end };
}

// ---------------------------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy.

function parseK8sPeer(c: Checker, x: unknown, path: string, namespace: string): Peer {
  const o = obj(c, x, path);
  keys(c, o, path, ['podSelector', 'namespaceSelector', 'ipBlock']);
  const has = (k: string): boolean => o[k] !== undefined && o[k] !== null;
  if (has('ipBlock')) {
    if (has('podSelector') || has('namespaceSelector')) {
      c.fail(path, 'ipBlock cannot be combined with podSelector or namespaceSelector in one peer');
    }
    const p = join(path, 'ipBlock');
    const ib = obj(c, o.ipBlock, p);
    keys(c, ib, p, ['cidr', 'except']);
    return cidrPeer(c, ib.cidr, ib.except, p, 'cidr', false, 'ipBlock');
  }
  if (!has('podSelector') && !has('namespaceSelector')) {
    c.fail(path, 'must specify podSelector, namespaceSelector or ipBlock');
  }
  const selector = has('podSelector') ? parseSelector(c, o.podSelector, join(path, 'podSelector'), 'k8s') : { requirements: [] };
  const namespaceSelector = has('namespaceSelector')
    ? parseSelector(c, o.namespaceSelector, join(path, 'namespaceSelector'), 'k8s-namespace')
    : null;
  // podSelector alone: pods of the policy's namespace; with a namespaceSelector: pods of matching namespaces.
  return { type: 'endpoints', selector, namespace: namespaceSelector === null ? namespace : null, namespaceSelector, includeReserved: false };
}

function parseK8sRule(c: Checker, x: unknown, path: string, direction: Direction, namespace: string): PolicyRule {
  const peerKey = direction === 'ingress' ? 'from' : 'to';
  const o = obj(c, x, path);
  keys(c, o, path, [peerKey, 'ports']);
  const peersRaw = optList(c, o, peerKey, path) ?? [];
  const portsRaw = optList(c, o, 'ports', path) ?? [];
  // Absent or empty from/to: every source/destination (incl. world and host).
  const peers: Peer[] =
    peersRaw.length === 0 ? [{ type: 'any' }] : peersRaw.map((p, i) => parseK8sPeer(c, p, `${join(path, peerKey)}[${i}]`, namespace));
  const ports = portsRaw.map((p, i) => parseK8sPort(c, p, `${join(path, 'ports')}[${i}]`));
  return { direction, deny: false, peers, ports };
}

function parseK8sSpec(c: Checker, x: unknown, namespace: string): PolicySpec {
  const s = obj(c, x, 'spec');
  keys(c, s, 'spec', ['podSelector', 'ingress', 'egress', 'policyTypes']);
  if (s.podSelector === undefined || s.podSelector === null) {
    c.fail('spec.podSelector', 'required (use {} to select every pod of the namespace)');
  }
  const endpointSelector = parseSelector(c, s.podSelector, 'spec.podSelector', 'k8s');
  const ingress = optList(c, s, 'ingress', 'spec');
  const egress = optList(c, s, 'egress', 'spec');
  const typesRaw = optList(c, s, 'policyTypes', 'spec') ?? [];
  const types = new Set<string>();
  typesRaw.forEach((t, i) => {
    const p = `spec.policyTypes[${i}]`;
    const v = str(c, t, p);
    if (v !== 'Ingress' && v !== 'Egress') c.fail(p, `${JSON.stringify(v)} is not one of Ingress, Egress`);
    if (types.has(v)) c.fail(p, `${JSON.stringify(v)} is listed twice`);
    types.add(v);
  });
  // Kubernetes defaulting: Ingress always, Egress iff there are egress rules (a non-empty list).
  if (types.size === 0) {
    types.add('Ingress');
    if (egress !== undefined && egress.length > 0) types.add('Egress');
  }
  // Rules are validated even for a direction policyTypes leaves out, but only listed directions apply.
  const ingressRules = (ingress ?? []).map((r, i) => parseK8sRule(c, r, `spec.ingress[${i}]`, 'ingress', namespace));
  const egressRules = (egress ?? []).map((r, i) => parseK8sRule(c, r, `spec.egress[${i}]`, 'egress', namespace));
  const hasIngress = types.has('Ingress');
  const hasEgress = types.has('Egress');
  return {
    endpointSelector,
    enforces: { ingress: hasIngress, egress: hasEgress },
    defaultDeny: { ingress: hasIngress, egress: hasEgress },
    rules: [...(hasIngress ? ingressRules : []), ...(hasEgress ? egressRules : [])],
  };
}

// ---------------------------------------------------------------------------------------------------------
// TendrilNetworkPolicy (CiliumNetworkPolicy semantics).

const TENDRIL_RULE_UNSUPPORTED = ['nodeSelector', 'log'];
const TENDRIL_PEER_UNSUPPORTED = [
  'fromRequires',
  'toRequires',
  'fromNodes',
  'toNodes',
  'fromGroups',
  'toGroups',
  'toServices',
  'toFQDNs',
  'authentication',
];
const TENDRIL_PORTRULE_UNSUPPORTED = ['listener', 'originatingTLS', 'terminatingTLS', 'serverNames'];
/** L7 protocols of CiliumNetworkPolicy `rules` other than HTTP. */
const TENDRIL_L7_UNSUPPORTED = ['kafka', 'dns', 'l7proto', 'l7'];

/** The ports of a rule's toPorts: L4-only ones, and groups of ports with the HTTP rules that filter them. */
interface TendrilPorts {
  l4: PortMatch[];
  l7: { ports: PortMatch[]; http: HttpRule[] }[];
}

function parseTendrilPorts(c: Checker, x: unknown, path: string, deny: boolean): TendrilPorts {
  const out: TendrilPorts = { l4: [], l7: [] };
  list(c, x, path).forEach((pr, i) => {
    const p = `${path}[${i}]`;
    const o = obj(c, pr, p);
    keys(c, o, p, ['ports', 'rules'], TENDRIL_PORTRULE_UNSUPPORTED);
    const ports = optList(c, o, 'ports', p) ?? [];
    if (ports.length === 0) c.fail(join(p, 'ports'), 'required (at least one port)');
    let http: HttpRule[] | undefined;
    if (o.rules !== undefined && o.rules !== null) {
      const rp = join(p, 'rules');
      // As Cilium: a deny cannot depend on what the proxy sees (the datapath drops before any proxy).
      if (deny) c.fail(rp, 'L7 rules cannot be used in a deny rule');
      const ro = obj(c, o.rules, rp);
      keys(c, ro, rp, ['http'], TENDRIL_L7_UNSUPPORTED);
      if (ro.http === undefined || ro.http === null) c.fail(join(rp, 'http'), 'required (the HTTP rules of the port)');
      http = parseHttpRules((f, r) => c.fail(f, r), ro.http, join(rp, 'http'));
    }
    const matches = ports.map((pp, j) => {
      const q = `${join(p, 'ports')}[${j}]`;
      const po = obj(c, pp, q);
      keys(c, po, q, ['port', 'endPort', 'protocol']);
      const protocol = po.protocol === undefined || po.protocol === null ? 'ANY' : parseProtocol(c, po.protocol, join(q, 'protocol'), true);
      if (http === undefined) return portMatch(c, po, q, protocol, true);
      // HTTP runs over TCP: ANY means TCP here; one port each, as the proxy serves ports, not ranges.
      if (protocol !== 'TCP' && protocol !== 'ANY') c.fail(join(q, 'protocol'), `HTTP rules need TCP, got ${protocol}`);
      const m = portMatch(c, po, q, 'TCP', true);
      if (m.kind === 'all') c.fail(join(q, 'port'), 'HTTP rules need a port (not 0 or absent)');
      if (m.kind === 'range' && m.from !== m.to) c.fail(join(q, 'endPort'), 'HTTP rules need a single port, not a range');
      return m;
    });
    if (http === undefined) out.l4.push(...matches);
    else out.l7.push({ ports: matches, http });
  });
  return out;
}

/** `icmps: [{fields: [{type, family, code}]}]`: type a number (0-255) or one of Cilium's names, family IPv4 (the
 *  default; IPv6 is not supported), code (Tendril) one code of the type. */
function parseIcmps(c: Checker, x: unknown, path: string): PortMatch[] {
  const out: PortMatch[] = [];
  list(c, x, path).forEach((r, i) => {
    const p = `${path}[${i}]`;
    const o = obj(c, r, p);
    keys(c, o, p, ['fields']);
    const fields = optList(c, o, 'fields', p) ?? [];
    if (fields.length === 0) c.fail(join(p, 'fields'), 'required (at least one ICMP type)');
    fields.forEach((f, j) => {
      const q = `${join(p, 'fields')}[${j}]`;
      const fo = obj(c, f, q);
      keys(c, fo, q, ['type', 'family', 'code']);
      if (fo.family !== undefined && fo.family !== null) {
        const family = str(c, fo.family, join(q, 'family'));
        if (family === 'IPv6') c.fail(join(q, 'family'), 'IPv6 is not supported');
        if (family !== 'IPv4') c.fail(join(q, 'family'), `${JSON.stringify(family)} is not one of IPv4, IPv6`);
      }
      const t = fo.type;
      let type: number;
      if (t === undefined || t === null) c.fail(join(q, 'type'), 'required');
      if (typeof t === 'number' || (typeof t === 'string' && /^\d+$/.test(t))) {
        type = Number(t);
        if (!Number.isInteger(type) || type > 255) c.fail(join(q, 'type'), `${type} is out of range (0-255)`);
      } else if (typeof t === 'string') {
        const n = ICMP_TYPE_NAMES[t];
        if (n === undefined) c.fail(join(q, 'type'), `unknown ICMP type ${JSON.stringify(t)} (a number 0-255 or one of ${Object.keys(ICMP_TYPE_NAMES).join(', ')})`);
        type = n;
      } else {
        c.fail(join(q, 'type'), `must be an ICMP type number or name, got ${describe(t)}`);
      }
      let code: number | null = null;
      if (fo.code !== undefined && fo.code !== null) {
        if (typeof fo.code !== 'number' || !Number.isInteger(fo.code) || fo.code < 0 || fo.code > 255) {
          c.fail(join(q, 'code'), `must be an ICMP code 0-255, got ${describe(fo.code)}`);
        }
        code = fo.code;
      }
      out.push({ kind: 'icmp', type, code });
    });
  });
  return out;
}

function parseEntities(c: Checker, x: unknown, path: string): Peer[] {
  return list(c, x, path).map((e, i) => {
    const p = `${path}[${i}]`;
    const s = str(c, e, p);
    if (!(ENTITIES as readonly string[]).includes(s)) c.fail(p, `unknown entity ${JSON.stringify(s)} (one of ${ENTITIES.join(', ')})`);
    return { type: 'entity', entity: s as Entity };
  });
}

function parseEndpointsPeer(c: Checker, x: unknown, path: string, namespace: string): Peer {
  const selector = parseSelector(c, x, path, 'tendril');
  // Cilium: a namespaced policy's endpoint selector only sees its own namespace unless it names the namespace
  // label itself. Naming a reserved: label targets reserved identities, which have no namespace.
  const reserved = namesReserved(selector);
  // A cluster-wide policy ('' namespace) selects peers of every namespace.
  const restrict = !constrainsNamespace(selector) && !reserved && namespace !== '';
  return { type: 'endpoints', selector, namespace: restrict ? namespace : null, namespaceSelector: null, includeReserved: reserved };
}

/** One Tendril rule; a rule with L7 ports yields one PolicyRule per HTTP port group besides its L4 ports (peers x
 *  (ports1 + ports2) = peers x ports1 + peers x ports2). */
function parseTendrilRule(c: Checker, x: unknown, path: string, direction: Direction, deny: boolean, namespace: string): PolicyRule[] {
  const pre = direction === 'ingress' ? 'from' : 'to';
  const fEndpoints = `${pre}Endpoints`;
  const fEntities = `${pre}Entities`;
  const fCidr = `${pre}CIDR`;
  const fCidrSet = `${pre}CIDRSet`;
  const o = obj(c, x, path);
  keys(c, o, path, [fEndpoints, fEntities, fCidr, fCidrSet, 'toPorts', 'icmps'], TENDRIL_PEER_UNSUPPORTED);
  const peers: Peer[] = [];
  optList(c, o, fEndpoints, path)?.forEach((s, i) => peers.push(parseEndpointsPeer(c, s, `${join(path, fEndpoints)}[${i}]`, namespace)));
  const entities = optList(c, o, fEntities, path);
  if (entities !== undefined) peers.push(...parseEntities(c, entities, join(path, fEntities)));
  optList(c, o, fCidr, path)?.forEach((s, i) => peers.push(cidrPeer(c, s, undefined, `${join(path, fCidr)}[${i}]`, null, true)));
  optList(c, o, fCidrSet, path)?.forEach((s, i) => {
    const p = `${join(path, fCidrSet)}[${i}]`;
    const so = obj(c, s, p);
    keys(c, so, p, ['cidr', 'except'], ['cidrGroupRef', 'cidrGroupSelector']);
    peers.push(cidrPeer(c, so.cidr, so.except, p, 'cidr', true));
  });
  const tp = o.toPorts === undefined || o.toPorts === null ? { l4: [], l7: [] } : parseTendrilPorts(c, o.toPorts, join(path, 'toPorts'), deny);
  const ports = tp.l4;
  if (o.icmps !== undefined && o.icmps !== null) {
    // As Cilium: one rule names ports or ICMP types, not both (an OR of the two would read as an AND).
    if (ports.length > 0 || tp.l7.length > 0) c.fail(join(path, 'icmps'), 'cannot be used with toPorts in the same rule (write a separate rule for the ports)');
    ports.push(...parseIcmps(c, o.icmps, join(path, 'icmps')));
  }
  // Cilium: a rule that names ports (or ICMP types) but no peer applies to every peer ("L4-only"); a rule with neither
  // (`ingress: [{}]`) allows nothing — it only puts the endpoint under policy.
  const anyPeerField = [fEndpoints, fEntities, fCidr, fCidrSet].some((k) => o[k] !== undefined && o[k] !== null && (o[k] as unknown[]).length > 0);
  if (!anyPeerField && (ports.length > 0 || tp.l7.length > 0)) peers.push({ type: 'any' });
  const l7 = tp.l7.map((g): PolicyRule => ({ direction, deny, peers, ports: g.ports, http: g.http }));
  // Only L7 port groups: no L4 rule (an empty port list would mean every port).
  return tp.l7.length > 0 && ports.length === 0 ? l7 : [{ direction, deny, peers, ports }, ...l7];
}

function parseTendrilSpec(c: Checker, x: unknown, path: string, namespace: string): PolicySpec {
  const s = obj(c, x, path);
  keys(c, s, path, ['endpointSelector', 'ingress', 'ingressDeny', 'egress', 'egressDeny', 'enableDefaultDeny', 'description', 'labels'], TENDRIL_RULE_UNSUPPORTED);
  if (s.endpointSelector === undefined || s.endpointSelector === null) {
    c.fail(join(path, 'endpointSelector'), 'required (use {} to select every endpoint of the namespace)');
  }
  const endpointSelector = parseSelector(c, s.endpointSelector, join(path, 'endpointSelector'), 'tendril');
  if (s.description !== undefined && s.description !== null) str(c, s.description, join(path, 'description'));
  optList(c, s, 'labels', path)?.forEach((l, i) => {
    const p = `${join(path, 'labels')}[${i}]`;
    const lo = obj(c, l, p);
    keys(c, lo, p, ['key', 'value', 'source']);
    str(c, lo.key, join(p, 'key'));
    if (lo.value !== undefined) str(c, lo.value, join(p, 'value'));
    if (lo.source !== undefined) str(c, lo.source, join(p, 'source'));
  });
  const sections: [string, Direction, boolean][] = [
    ['ingress', 'ingress', false],
    ['ingressDeny', 'ingress', true],
    ['egress', 'egress', false],
    ['egressDeny', 'egress', true],
  ];
  const rules: PolicyRule[] = [];
  const present = { ingress: false, egress: false };
  for (const [key, direction, deny] of sections) {
    const items = optList(c, s, key, path) ?? [];
    // Cilium: a direction is under policy iff its allow or deny list is non-empty.
    if (items.length > 0) present[direction] = true;
    items.forEach((r, i) => rules.push(...parseTendrilRule(c, r, `${join(path, key)}[${i}]`, direction, deny, namespace)));
  }
  const defaultDeny = { ...present };
  if (s.enableDefaultDeny !== undefined && s.enableDefaultDeny !== null) {
    const p = join(path, 'enableDefaultDeny');
    const ed = obj(c, s.enableDefaultDeny, p);
    keys(c, ed, p, ['ingress', 'egress']);
    for (const d of ['ingress', 'egress'] as const) {
      const v = ed[d];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'boolean') c.fail(join(p, d), `must be true or false, got ${describe(v)}`);
      defaultDeny[d] = present[d] && v;
    }
  }
  return { endpointSelector, enforces: present, defaultDeny, rules };
}

// ---------------------------------------------------------------------------------------------------------
// Documents.

const OBJECT_META = [
  'name',
  'namespace',
  'labels',
  'annotations',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'managedFields',
  'finalizers',
  'ownerReferences',
  'generateName',
  'selfLink',
];

/** Validates one policy object (already decoded from YAML/JSON). Throws PolicyError. */
export function parsePolicyObject(input: unknown, origin?: string): Policy {
  const c = new Checker(origin);
  const o = obj(c, input, '');
  const kindRaw = str(c, o.kind, 'kind');
  if (!(KINDS as readonly string[]).includes(kindRaw)) c.fail('kind', `${JSON.stringify(kindRaw)} is not one of ${KINDS.join(', ')}`);
  const kind = kindRaw as PolicyKind;
  c.what = kind;
  const meta = obj(c, o.metadata, 'metadata');
  keys(c, meta, 'metadata', OBJECT_META);
  const name = str(c, meta.name, 'metadata.name');
  checkDnsSubdomain(c, name, 'metadata.name');
  const clusterwide = kind === CLUSTERWIDE_KIND;
  const hasNamespace = meta.namespace !== undefined && meta.namespace !== null;
  // A namespace on a cluster-wide policy is refused rather than ignored: it may have been meant as a limit.
  if (clusterwide && hasNamespace) c.fail('metadata.namespace', `a ${kind} is cluster-scoped and has no namespace (use a TendrilNetworkPolicy for one namespace)`);
  const namespace = clusterwide ? '' : hasNamespace ? str(c, meta.namespace, 'metadata.namespace') : 'default';
  if (!clusterwide) checkDnsLabel(c, namespace, 'metadata.namespace');
  c.what = clusterwide ? `${kind} "${name}"` : `${kind} "${namespace}/${name}"`;
  const apiVersion = str(c, o.apiVersion, 'apiVersion');
  if (apiVersion !== API_VERSION[kind]) c.fail('apiVersion', `${JSON.stringify(apiVersion)} is not ${API_VERSION[kind]}`);
  if (meta.labels !== undefined && meta.labels !== null) {
    for (const [k, v] of Object.entries(obj(c, meta.labels, 'metadata.labels'))) {
      const problem = labelKeyProblem(k);
      if (problem !== undefined) c.fail(`metadata.labels.${k}`, problem);
      checkLabelValue(c, v, `metadata.labels.${k}`);
    }
  }
  if (meta.annotations !== undefined && meta.annotations !== null) {
    for (const [k, v] of Object.entries(obj(c, meta.annotations, 'metadata.annotations'))) str(c, v, `metadata.annotations.${k}`);
  }
  let specs: PolicySpec[];
  if (kind === 'NetworkPolicy') {
    keys(c, o, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
    specs = [parseK8sSpec(c, o.spec, namespace)];
  } else {
    keys(c, o, '', ['apiVersion', 'kind', 'metadata', 'spec', 'specs', 'status']);
    specs = [];
    const hasSpec = o.spec !== undefined && o.spec !== null;
    if (hasSpec) specs.push(parseTendrilSpec(c, o.spec, 'spec', namespace));
    const more = optList(c, o, 'specs', '');
    more?.forEach((s, i) => specs.push(parseTendrilSpec(c, s, `specs[${i}]`, namespace)));
    if (specs.length === 0) c.fail('spec', 'required (spec or a non-empty specs)');
  }
  return { kind, namespace, name, specs, source: input };
}

/** Parses one or more policy documents: YAML (multi-document with ---) or JSON; a document may be a policy,
 *  a list of policies or {kind: List, items}. All-or-nothing: the first invalid document throws a PolicyError
 *  naming the document, the field and the reason; nothing is returned. */
export function parsePolicies(text: string, origin?: string): Policy[] {
  const base = origin ?? 'input';
  const docs = parseAllDocuments(text, { prettyErrors: false });
  const out: Policy[] = [];
  const seen = new Map<string, string>();
  const add = (x: unknown, doc: string): void => {
    const p = parsePolicyObject(x, doc);
    const key = policyKey(p);
    const first = seen.get(key);
    if (first !== undefined) {
      new Checker(doc).fail('metadata.name', `${p.kind} "${p.namespace === '' ? '' : `${p.namespace}/`}${p.name}" is also defined in ${first}`);
    }
    seen.set(key, doc);
    out.push(p);
  };
  const docList = Array.isArray(docs) ? docs : [];
  docList.forEach((d, i) => {
    const docName = `${base} document ${i + 1}`;
    const err = d.errors[0];
    if (err !== undefined) {
      throw new PolicyError(`Invalid policy document (${docName}): cannot parse: ${err.message}`, '', `cannot parse: ${err.message}`, {
        doc: docName,
        cause: err,
      });
    }
    const value: unknown = d.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return; // empty document (e.g. trailing ---)
    if (Array.isArray(value)) {
      value.forEach((item, j) => add(item, `${docName} [${j}]`));
    } else if (isObj(value) && typeof value.kind === 'string' && LIST_KINDS.includes(value.kind)) {
      const c = new Checker(docName);
      c.what = value.kind;
      keys(c, value, '', ['apiVersion', 'kind', 'metadata', 'items']);
      list(c, value.items, 'items').forEach((item, j) => add(item, `${docName} items[${j}]`));
    } else {
      add(value, docName);
    }
  });
  return out;
}
