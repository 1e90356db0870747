// Explicit backends of a service without a selector: the EndpointSlice resource, in the shape of Kubernetes'
// discovery.k8s.io/v1 EndpointSlice (addressType, endpoints[].addresses, conditions.ready, ports[], the label
// kubernetes.io/service-name naming its service), stored as kind "EndpointSlice" named "<namespace>.<name>".
// A service with a selector takes its backends from the endpoints it selects; one without, from its slices.
import { isDnsLabel, labelKeyProblem, labelValueProblem } from '../policy/index.js';
import { isIPv4 } from '../util/ip.js';
import type { Backend } from './backends.js';
import { LbError } from './errors.js';
import type { ServicePort, ServiceProtocol, ServiceSpec } from './service.js';

/** The label that ties a slice to its service (Kubernetes' discovery.k8s.io/v1 LabelServiceName). */
export const SLICE_SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Kubernetes' LabelManagedBy; slices `lab service endpoints` writes carry MANAGED_BY_LAB. */
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY_LAB = 'lab.tendril.io';

export interface EndpointConditions {
  /** Absent: ready (as Kubernetes reads a nil ready condition). */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface SliceEndpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  /** The node the endpoint runs on, when it is one (internalTrafficPolicy / externalTrafficPolicy Local). */
  nodeName?: string;
}

export interface SlicePort {
  /** The service port's name ("" or absent for an unnamed single port). */
  name?: string;
  protocol: ServiceProtocol;
  port: number;
}

export interface EndpointSliceSpec {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  addressType: 'IPv4';
  endpoints: SliceEndpoint[];
  ports: SlicePort[];
}

export function endpointSliceResourceName(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

function fail(where: string, what: string): never {
  throw new LbError('TENDRIL_ERR_ENDPOINT_SLICE_INVALID', `Invalid EndpointSlice ${where}: ${what}`);
}

const isPort = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;

/** Checks a slice as a user or the store gives it (defaults: protocol TCP); names the slice and the field. */
export function validateEndpointSlice(input: unknown): EndpointSliceSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) fail('', 'expected an object');
  const o = input as Record<string, unknown>;
  const ns = o['namespace'];
  const name = o['name'];
  if (typeof ns !== 'string' || !isDnsLabel(ns)) fail('', `namespace ${JSON.stringify(ns)} is not a DNS label`);
  if (typeof name !== 'string' || !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name)) fail(`in namespace "${ns}"`, `name ${JSON.stringify(name)} is not a DNS subdomain`);
  const where = `"${ns}/${name}"`;
  for (const k of Object.keys(o)) if (!['namespace', 'name', 'labels', 'addressType', 'endpoints', 'ports'].includes(k)) fail(where, `unknown field "${k}"`);
  const rawLabels = o['labels'];
  if (typeof rawLabels !== 'object' || rawLabels === null || Array.isArray(rawLabels)) fail(where, `labels: expected an object with "${SLICE_SERVICE_NAME_LABEL}"`);
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawLabels as Record<string, unknown>)) {
    const kp = labelKeyProblem(k);
    if (kp) fail(where, `labels: ${kp}`);
    if (typeof v !== 'string' || labelValueProblem(v)) fail(where, `labels "${k}": value ${JSON.stringify(v)} is not a label value`);
    labels[k] = v;
  }
  const svc = labels[SLICE_SERVICE_NAME_LABEL];
  if (svc === undefined || !isDnsLabel(svc)) fail(where, `labels: "${SLICE_SERVICE_NAME_LABEL}" must name the service (a DNS label)`);
  const addressType = o['addressType'] ?? 'IPv4';
  if (addressType !== 'IPv4') fail(where, `addressType ${JSON.stringify(addressType)} is not supported (IPv4 only)`);
  const rawEps = o['endpoints'] ?? [];
  if (!Array.isArray(rawEps)) fail(where, 'endpoints: expected a list');
  const endpoints: SliceEndpoint[] = rawEps.map((raw: unknown, i): SliceEndpoint => {
    const at = `endpoints[${i}]`;
    if (typeof raw !== 'object' || raw === null) fail(where, `${at}: expected an object`);
    const e = raw as Record<string, unknown>;
    const addrs = e['addresses'];
    if (!Array.isArray(addrs) || addrs.length === 0 || !addrs.every((a) => typeof a === 'string' && isIPv4(a))) fail(where, `${at}.addresses: expected at least one IPv4 address`);
    const out: SliceEndpoint = { addresses: [...(addrs as string[])] };
    const c = e['conditions'];
    if (c !== undefined) {
      if (typeof c !== 'object' || c === null) fail(where, `${at}.conditions: expected an object`);
      const cond: EndpointConditions = {};
      for (const k of ['ready', 'serving', 'terminating'] as const) {
        const v = (c as Record<string, unknown>)[k];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'boolean') fail(where, `${at}.conditions.${k}: expected true or false`);
        cond[k] = v;
      }
      out.conditions = cond;
    }
    if (e['nodeName'] !== undefined) {
      if (typeof e['nodeName'] !== 'string') fail(where, `${at}.nodeName: expected a string`);
      out.nodeName = e['nodeName'];
    }
    return out;
  });
  const rawPorts = o['ports'] ?? [];
  if (!Array.isArray(rawPorts)) fail(where, 'ports: expected a list');
  const ports: SlicePort[] = rawPorts.map((raw: unknown, i): SlicePort => {
    const at = `ports[${i}]`;
    if (typeof raw !== 'object' || raw === null) fail(where, `${at}: expected an object`);
    const p = raw as Record<string, unknown>;
    if (!isPort(p['port'])) fail(where, `${at}.port ${JSON.stringify(p['port'])} is not a port number 1-65535`);
    const protocol = p['protocol'] ?? 'TCP';
    if (protocol !== 'TCP' && protocol !== 'UDP') fail(where, `${at}.protocol ${JSON.stringify(protocol)} is not TCP or UDP`);
    const out: SlicePort = { protocol, port: p['port'] };
    if (p['name'] !== undefined && p['name'] !== '') {
      if (typeof p['name'] !== 'string' || !isDnsLabel(p['name'])) fail(where, `${at}.name ${JSON.stringify(p['name'])} is not a DNS label`);
      out.name = p['name'];
    }
    return out;
  });
  return { namespace: ns, name, labels, addressType: 'IPv4', endpoints, ports };
}

/**
 * Backends of one port of a service from its EndpointSlices (a service without a selector; in Kubernetes mode every
 * service): the addresses of the slices of its namespace labelled with its name, at the slice port of the same name
 * (unnamed: the service's unnamed port) and protocol, several slices merged, as kube-proxy reads EndpointSlices.
 * Which endpoints: the ready ones (a nil ready condition reads as ready); when none is, the terminating ones still
 * serving (kube-proxy's fallback since Kubernetes 1.26, so that a service whose every pod is being replaced keeps
 * answering). Sorted and deduplicated as backendsFor()'s.
 */
export function sliceBackends(svc: Pick<ServiceSpec, 'namespace' | 'name'>, port: ServicePort, slices: Iterable<EndpointSliceSpec>): Backend[] {
  const ready = new Map<string, Backend>();
  const terminating = new Map<string, Backend>();
  for (const s of slices) {
    if (s.namespace !== svc.namespace || s.labels[SLICE_SERVICE_NAME_LABEL] !== svc.name) continue;
    const sp = s.ports.find((p) => (p.name ?? '') === (port.name ?? '') && p.protocol === port.protocol);
    if (!sp) continue;
    for (const e of s.endpoints) {
      const c = e.conditions ?? {};
      const into = c.ready !== false ? ready : c.terminating === true && (c.serving ?? false) ? terminating : undefined;
      if (!into) continue;
      for (const ip of e.addresses) into.set(`${ip}:${sp.port}`, { ip, port: sp.port, protocol: port.protocol, node: e.nodeName ?? '' });
    }
  }
  const seen = ready.size > 0 ? ready : terminating;
  return [...seen.values()].sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
}
