// The Service resource (Kubernetes' Service in the fields Tendril uses) and its validation. Stored as kind
// "Service" named "<namespace>.<name>" (both DNS labels, so the dot is unambiguous).
import { isDnsLabel, labelKeyProblem, labelValueProblem } from '../policy/index.js';
import { formatCidr, isIPv4, parseCidr } from '../util/ip.js';
import { LbError } from './errors.js';

export const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer'] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];
export type ServiceProtocol = 'TCP' | 'UDP';
export type TrafficPolicy = 'Cluster' | 'Local';

export const NODEPORT_MIN = 30000;
export const NODEPORT_MAX = 32767;
/** Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_S = 10800;
export const MAX_AFFINITY_TIMEOUT_S = 86400;

export interface ServicePort {
  /** Required when the service has more than one port. */
  name?: string;
  protocol: ServiceProtocol;
  port: number;
  /** A number, or the name of a container port of the backends. */
  targetPort: number | string;
  /** NodePort / LoadBalancer: allocated by the operator when not given. */
  nodePort?: number;
}

export interface ServiceSpec {
  namespace: string;
  name: string;
  type: ServiceType;
  /** Allocated by the operator from the service CIDR when not given. */
  clusterIP?: string;
  ports: ServicePort[];
  /** Pod labels (k8s source) in the service's namespace; empty: no backends derived. */
  selector: Record<string, string>;
  sessionAffinity: 'None' | 'ClientIP';
  /** Seconds; with sessionAffinity ClientIP. */
  sessionAffinityTimeoutSeconds?: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** The service's own labels (what LoadBalancer IP pools select on). */
  labels?: Record<string, string>;
  /** Annotations: lbipam.tendril.io/ips, lbipam.tendril.io/sharing-key. */
  annotations?: Record<string, string>;
  /**
   * Kubernetes' spec.loadBalancerSourceRanges: IPv4 CIDRs (normalized, host bits cleared) that may reach the
   * service's LoadBalancer IPs from outside; other clients are dropped in BPF (DROP_NOT_IN_SRC_RANGE). Absent or
   * empty: any client. Node ports and the ClusterIP are not restricted (as in Cilium).
   */
  loadBalancerSourceRanges?: string[];
}

/** Store name of a service. */
export function serviceResourceName(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

export function serviceKey(s: Pick<ServiceSpec, 'namespace' | 'name'>): string {
  return `${s.namespace}/${s.name}`;
}

function fail(where: string, what: string): never {
  throw new LbError('TENDRIL_ERR_SERVICE_INVALID', `Invalid service ${where}: ${what}`);
}

function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

function oneOf<T extends string>(where: string, field: string, v: unknown, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    fail(where, `${field} ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  }
  return v as T;
}

/**
 * Checks a service as a user or the store gives it and returns it with defaults filled in (type ClusterIP,
 * protocol TCP, targetPort = port, sessionAffinity None, traffic policies Cluster). Throws
 * TENDRIL_ERR_SERVICE_INVALID naming the service and the field.
 */
export function validateService(input: unknown): ServiceSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) fail('', 'expected an object');
  const o = input as Record<string, unknown>;
  const known = new Set(['namespace', 'name', 'type', 'clusterIP', 'ports', 'selector', 'sessionAffinity', 'sessionAffinityTimeoutSeconds', 'externalTrafficPolicy', 'internalTrafficPolicy', 'labels', 'annotations', 'loadBalancerSourceRanges']);
  for (const k of Object.keys(o)) if (!known.has(k)) fail(JSON.stringify(`${String(o['namespace'])}/${String(o['name'])}`), `unknown field "${k}"`);
  const ns = o['namespace'];
  const name = o['name'];
  if (typeof ns !== 'string' || !isDnsLabel(ns)) fail('', `namespace ${JSON.stringify(ns)} is not a DNS label (lower-case letters, digits, "-", at most 63)`);
  if (typeof name !== 'string' || !isDnsLabel(name)) fail(`in namespace "${ns}"`, `name ${JSON.stringify(name)} is not a DNS label (lower-case letters, digits, "-", at most 63)`);
  const where = `"${ns}/${name}"`;
  const type = oneOf(where, 'type', o['type'], SERVICE_TYPES, 'ClusterIP');
  const clusterIP = o['clusterIP'];
  if (clusterIP !== undefined && (typeof clusterIP !== 'string' || !isIPv4(clusterIP))) fail(where, `clusterIP ${JSON.stringify(clusterIP)} is not an IPv4 address`);

  const rawPorts = o['ports'];
  if (!Array.isArray(rawPorts) || rawPorts.length === 0) fail(where, 'ports: expected at least one port');
  const ports: ServicePort[] = rawPorts.map((raw: unknown, i): ServicePort => {
    const at = `ports[${i}]`;
    if (typeof raw !== 'object' || raw === null) fail(where, `${at}: expected an object`);
    const p = raw as Record<string, unknown>;
    for (const k of Object.keys(p)) if (!['name', 'protocol', 'port', 'targetPort', 'nodePort'].includes(k)) fail(where, `${at}: unknown field "${k}"`);
    if (!isPort(p['port'])) fail(where, `${at}.port ${JSON.stringify(p['port'])} is not a port number 1-65535`);
    const protocol = oneOf(where, `${at}.protocol`, p['protocol'], ['TCP', 'UDP'] as const, 'TCP');
    const tp = p['targetPort'] ?? p['port'];
    if (typeof tp === 'number') {
      if (!isPort(tp)) fail(where, `${at}.targetPort ${tp} is not a port number 1-65535`);
    } else if (typeof tp !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(tp) || !/[a-z]/.test(tp)) {
      fail(where, `${at}.targetPort ${JSON.stringify(tp)} is neither a port number nor a container port name (IANA_SVC_NAME: at most 15 lower-case letters, digits, "-")`);
    }
    const port: ServicePort = { protocol, port: p['port'], targetPort: tp };
    if (p['name'] !== undefined) {
      if (typeof p['name'] !== 'string' || !isDnsLabel(p['name'])) fail(where, `${at}.name ${JSON.stringify(p['name'])} is not a DNS label`);
      port.name = p['name'];
    }
    if (p['nodePort'] !== undefined) {
      const np = p['nodePort'];
      if (type === 'ClusterIP') fail(where, `${at}.nodePort: a ClusterIP service has no node ports`);
      if (typeof np !== 'number' || !Number.isInteger(np) || np < NODEPORT_MIN || np > NODEPORT_MAX) {
        fail(where, `${at}.nodePort ${JSON.stringify(np)} is outside the node port range ${NODEPORT_MIN}-${NODEPORT_MAX}`);
      }
      port.nodePort = np;
    }
    return port;
  });
  if (ports.length > 1) {
    const names = new Set<string>();
    ports.forEach((p, i) => {
      if (p.name === undefined) fail(where, `ports[${i}].name: required when a service has more than one port`);
      if (names.has(p.name)) fail(where, `ports[${i}].name "${p.name}" is used twice`);
      names.add(p.name);
    });
  }
  const seen = new Set<string>();
  ports.forEach((p, i) => {
    const k = `${p.port}/${p.protocol}`;
    if (seen.has(k)) fail(where, `ports[${i}]: port ${k} is listed twice`);
    seen.add(k);
  });

  const rawSel = o['selector'] ?? {};
  if (typeof rawSel !== 'object' || rawSel === null || Array.isArray(rawSel)) fail(where, 'selector: expected an object of label key: value');
  const selector: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawSel as Record<string, unknown>)) {
    const kp = labelKeyProblem(k);
    if (kp) fail(where, `selector: ${kp}`);
    if (typeof v !== 'string') fail(where, `selector "${k}": value ${JSON.stringify(v)} is not a string`);
    const vp = labelValueProblem(v);
    if (vp) fail(where, `selector "${k}": ${vp}`);
    selector[k] = v;
  }

  const sessionAffinity = oneOf(where, 'sessionAffinity', o['sessionAffinity'], ['None', 'ClientIP'] as const, 'None');
  const spec: ServiceSpec = {
    namespace: ns,
    name,
    type,
    ports,
    selector,
    sessionAffinity,
    externalTrafficPolicy: oneOf(where, 'externalTrafficPolicy', o['externalTrafficPolicy'], ['Cluster', 'Local'] as const, 'Cluster'),
    internalTrafficPolicy: oneOf(where, 'internalTrafficPolicy', o['internalTrafficPolicy'], ['Cluster', 'Local'] as const, 'Cluster'),
  };
  if (typeof clusterIP === 'string') spec.clusterIP = clusterIP;
  for (const field of ['labels', 'annotations'] as const) {
    const raw = o[field];
    if (raw === undefined) continue;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(where, `${field}: expected an object of key: value`);
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
      const kp = labelKeyProblem(k);
      if (kp) fail(where, `${field}: ${kp}`);
      if (typeof v !== 'string') fail(where, `${field} "${k}": value ${JSON.stringify(v)} is not a string`);
      if (field === 'labels') {
        const vp = labelValueProblem(v);
        if (vp) fail(where, `labels "${k}": ${vp}`);
      }
      out[k] = v;
    }
    spec[field] = out;
  }
  const ranges = o['loadBalancerSourceRanges'];
  if (ranges !== undefined) {
    if (!Array.isArray(ranges)) fail(where, 'loadBalancerSourceRanges: expected a list of IPv4 CIDRs');
    const out: string[] = [];
    ranges.forEach((r: unknown, i) => {
      let c: string | undefined;
      try {
        if (typeof r === 'string') c = formatCidr(parseCidr(r.trim()));
      } catch {
        c = undefined;
      }
      if (c === undefined) fail(where, `loadBalancerSourceRanges[${i}] ${JSON.stringify(r)} is not an IPv4 CIDR (ADDRESS/BITS, e.g. 192.168.10.0/24)`);
      if (!out.includes(c)) out.push(c);
    });
    if (out.length > 0) spec.loadBalancerSourceRanges = out;
  }
  const timeout = o['sessionAffinityTimeoutSeconds'];
  if (timeout !== undefined) {
    if (sessionAffinity !== 'ClientIP') fail(where, 'sessionAffinityTimeoutSeconds: only with sessionAffinity ClientIP');
    if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1 || timeout > MAX_AFFINITY_TIMEOUT_S) {
      fail(where, `sessionAffinityTimeoutSeconds ${JSON.stringify(timeout)} is not an integer 1-${MAX_AFFINITY_TIMEOUT_S}`);
    }
    spec.sessionAffinityTimeoutSeconds = timeout;
  } else if (sessionAffinity === 'ClientIP') {
    spec.sessionAffinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_S;
  }
  return spec;
}
