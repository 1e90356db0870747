// Backends of a service: the endpoints its selector picks in its namespace, at the port each service port targets.
import type { NamedPort } from '../store/index.js';
import { parseLabel } from '../policy/index.js';
import type { ServicePort, ServiceSpec } from './service.js';

/** What backend derivation needs to know of an endpoint (from the Endpoint resource and its identity). */
export interface EndpointView {
  ip: string;
  node: string;
  namespace: string;
  /** Security labels of its identity ("k8s:app=web", …). */
  labels: readonly string[];
  namedPorts: readonly NamedPort[];
}

export interface Backend {
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  node: string;
}

/** Whether the service's selector picks the endpoint: same namespace, every selector label present (k8s source). */
export function selects(svc: Pick<ServiceSpec, 'namespace' | 'selector'>, ep: EndpointView): boolean {
  if (ep.namespace !== svc.namespace) return false;
  const entries = Object.entries(svc.selector);
  if (entries.length === 0) return false;
  return entries.every(([k, v]) =>
    ep.labels.some((l) => {
      const p = parseLabel(l);
      return p.source === 'k8s' && p.key === k && p.value === v;
    }),
  );
}

/**
 * Backends of one service port, sorted by address: a numeric targetPort applies to every selected endpoint, a
 * named one only to those declaring a container port of that name and protocol (at its number).
 */
export function backendsFor(svc: ServiceSpec, port: ServicePort, endpoints: Iterable<EndpointView>): Backend[] {
  const out: Backend[] = [];
  for (const ep of endpoints) {
    if (!selects(svc, ep)) continue;
    let target: number | undefined;
    if (typeof port.targetPort === 'number') target = port.targetPort;
    else target = ep.namedPorts.find((n) => n.name === port.targetPort && n.protocol === port.protocol)?.port;
    if (target === undefined) continue;
    out.push({ ip: ep.ip, port: target, protocol: port.protocol, node: ep.node });
  }
  return out.sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
}
