// How each store kind lives in Kubernetes: Tendril's own kinds as tendril.io CRDs, Namespace and Policy as the
// core resources (watched, not copied). Pure mapping, no I/O.
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Kind } from '../store/types.js';
import { API_VERSION } from './crds.js';
import type { ServicePort, ServiceSpec } from '../lb/service.js';
import { parseEgressPolicy, EGRESS_POLICY_KIND } from '../egress/policy.js';
import { validateEndpointSlice, type EndpointSliceSpec } from '../lb/endpoint-slice.js';

/** One Kubernetes resource type a store kind is read from. */
export interface Source {
  apiVersion: string;
  kind: string;
  /** Collection path over every namespace, what the informer lists and watches. */
  path: string;
  namespaced: boolean;
}

export interface ObjectRef {
  source: Source;
  name: string;
  namespace?: string;
}

export interface Binding {
  sources: Source[];
  /** The store name and value of an object, or undefined for an object the store does not show. */
  toStore(obj: KubernetesObject & Record<string, unknown>, source: Source): { name: string; value: unknown } | undefined;
  /** Which object a store name is. */
  ref(name: string): ObjectRef;
  /** The object body for a store value (without resourceVersion); 'labels' = a Namespace, whose labels are patched. */
  toObject(ref: ObjectRef, value: unknown): KubernetesObject & Record<string, unknown>;
}

const crd = (kind: string, plural: string, namespaced = false): Source => ({
  apiVersion: API_VERSION,
  kind,
  path: `/apis/${API_VERSION}/${plural}`,
  namespaced,
});

export const SOURCES = {
  node: crd('TendrilNode', 'tendrilnodes'),
  ipam: crd('TendrilIPAMState', 'tendrilipamstates'),
  identity: crd('TendrilIdentity', 'tendrilidentities'),
  endpoint: crd('TendrilEndpoint', 'tendrilendpoints'),
  tnp: crd('TendrilNetworkPolicy', 'tendrilnetworkpolicies', true),
  tcnp: crd('TendrilClusterwideNetworkPolicy', 'tendrilclusterwidenetworkpolicies'),
  lbPool: crd('TendrilLoadBalancerIPPool', 'tendrilloadbalancerippools'),
  serviceStatus: crd('TendrilServiceStatus', 'tendrilservicestatuses'),
  l2Lease: crd('TendrilL2Lease', 'tendrill2leases'),
  egress: crd('TendrilEgressGatewayPolicy', 'tendrilegressgatewaypolicies'),
  podIPPool: crd('TendrilPodIPPool', 'tendrilpodippools'),
  nodeLease: crd('TendrilNodeLease', 'tendrilnodeleases'),
  namespace: { apiVersion: 'v1', kind: 'Namespace', path: '/api/v1/namespaces', namespaced: false } as Source,
  netpol: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', path: '/apis/networking.k8s.io/v1/networkpolicies', namespaced: true } as Source,
  pod: { apiVersion: 'v1', kind: 'Pod', path: '/api/v1/pods', namespaced: true } as Source,
  service: { apiVersion: 'v1', kind: 'Service', path: '/api/v1/services', namespaced: true } as Source,
  endpointSlice: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', path: '/apis/discovery.k8s.io/v1/endpointslices', namespaced: true } as Source,
};

/**
 * A discovery.k8s.io/v1 EndpointSlice as the store's (src/lb/endpoint-slice.ts: the same fields), or undefined for
 * one the LB cannot use (IPv6, FQDN, no service-name label).
 */
export function endpointSliceFromObject(obj: KubernetesObject & Record<string, unknown>): EndpointSliceSpec | undefined {
  const m = obj.metadata ?? {};
  const endpoints = ((obj['endpoints'] ?? []) as Array<Record<string, unknown>>).map((e) => ({
    addresses: e['addresses'],
    ...(e['conditions'] !== undefined ? { conditions: e['conditions'] } : {}),
    ...(typeof e['nodeName'] === 'string' ? { nodeName: e['nodeName'] } : {}),
  }));
  const ports = ((obj['ports'] ?? []) as Array<Record<string, unknown>>).filter((p) => typeof p['port'] === 'number').map((p) => ({ port: p['port'], protocol: p['protocol'] ?? 'TCP', ...(typeof p['name'] === 'string' && p['name'] !== '' ? { name: p['name'] } : {}) }));
  try {
    return validateEndpointSlice({ namespace: m.namespace, name: m.name, labels: { ...(m.labels ?? {}) }, addressType: obj['addressType'], endpoints, ports });
  } catch {
    return undefined;
  }
}

/** A CRD kind whose spec is the store value, named as in the store (or through rename/unrename). */
function specBinding(source: Source, rename: (storeName: string) => string = (n) => n, unrename: (obj: KubernetesObject, spec: unknown) => string = (o) => o.metadata!.name!): Binding {
  return {
    sources: [source],
    toStore: (obj) => (obj['spec'] === undefined ? undefined : { name: unrename(obj, obj['spec']), value: obj['spec'] }),
    ref: (name) => ({ source, name: rename(name) }),
    toObject: (ref, value) => ({ apiVersion: source.apiVersion, kind: source.kind, metadata: { name: ref.name }, spec: value }),
  };
}

/**
 * A CRD kind whose store value is {spec, status} (LoadBalancerIPPool, EgressGatewayPolicy): both live on the object
 * (the CRDs have no status subresource, so one replace writes both, as the store's put does). normalize turns what
 * a user applied (CRD defaults filled in by the apiserver) into the store's spec; it returns undefined for an object
 * the store does not show (one the kind's own validator refuses).
 */
function specStatusBinding(source: Source, normalize: (obj: KubernetesObject & Record<string, unknown>) => unknown, specOut: (spec: unknown) => unknown = (s) => s, statusDefault?: unknown): Binding {
  return {
    sources: [source],
    toStore: (obj) => {
      if (obj['spec'] === undefined) return undefined;
      const spec = normalize(obj);
      if (spec === undefined) return undefined;
      const value: Record<string, unknown> = { spec };
      const status = obj['status'] ?? statusDefault;
      if (status !== undefined) value['status'] = status;
      return { name: obj.metadata!.name!, value };
    },
    ref: (name) => ({ source, name }),
    toObject: (ref, value) => {
      const v = value as { spec: unknown; status?: unknown };
      return { apiVersion: source.apiVersion, kind: source.kind, metadata: { name: ref.name }, spec: specOut(v.spec), ...(v.status !== undefined ? { status: v.status } : {}) };
    },
  };
}

/** A TendrilEgressGatewayPolicy as the store keeps it: validated (src/egress), named by metadata.name. */
function egressSpec(obj: KubernetesObject & Record<string, unknown>): unknown {
  try {
    return parseEgressPolicy({ apiVersion: API_VERSION, kind: EGRESS_POLICY_KIND, metadata: { name: obj.metadata!.name }, spec: obj['spec'] });
  } catch {
    return undefined;
  }
}

/** A Namespace's ipam.tendril.io/ annotations, as NamespaceSpec.annotations (absent when it has none). */
function namespaceAnnotations(obj: KubernetesObject): { annotations?: Record<string, string> } {
  const a = Object.fromEntries(Object.entries(obj.metadata?.annotations ?? {}).filter(([k]) => k.startsWith('ipam.tendril.io/')));
  return Object.keys(a).length > 0 ? { annotations: a } : {};
}

/** Endpoint "<node>:<id>" is a Kubernetes name only as "<node>.<id>" (":" is not allowed); the spec says which. */
export function endpointObjectName(storeName: string): string {
  const i = storeName.lastIndexOf(':');
  return i < 0 ? storeName : `${storeName.slice(0, i)}.${storeName.slice(i + 1)}`;
}

const POLICY_SOURCES: Record<string, Source> = {
  NetworkPolicy: SOURCES.netpol,
  TendrilNetworkPolicy: SOURCES.tnp,
  TendrilClusterwideNetworkPolicy: SOURCES.tcnp,
};

/** The policy document the agent parses: what was applied, without the server's bookkeeping. */
function policyDocument(obj: KubernetesObject & Record<string, unknown>, source: Source): Record<string, unknown> {
  const m = obj.metadata ?? {};
  const metadata: Record<string, unknown> = { name: m.name };
  if (source.namespaced) metadata['namespace'] = m.namespace;
  if (m.labels && Object.keys(m.labels).length > 0) metadata['labels'] = m.labels;
  const doc: Record<string, unknown> = { apiVersion: source.apiVersion, kind: source.kind, metadata };
  if (obj['spec'] !== undefined) doc['spec'] = obj['spec'];
  if (obj['specs'] !== undefined) doc['specs'] = obj['specs'];
  return doc;
}

/**
 * A core Service as the store's Service (src/lb's ServiceSpec), ClusterIP as the apiserver allocated it. Headless
 * services (clusterIP None) and ExternalName ones have no frontend, so the store does not show them.
 */
export function serviceFromObject(obj: KubernetesObject & Record<string, unknown>): ServiceSpec | undefined {
  const spec = (obj['spec'] ?? {}) as Record<string, unknown>;
  const type = spec['type'] ?? 'ClusterIP';
  const clusterIP = spec['clusterIP'];
  if (type === 'ExternalName' || typeof clusterIP !== 'string' || clusterIP === '' || clusterIP === 'None') return undefined;
  const ports = ((spec['ports'] ?? []) as Array<Record<string, unknown>>).map((p) => {
    const out: ServicePort = { protocol: p['protocol'] === 'UDP' ? 'UDP' : 'TCP', port: p['port'] as number, targetPort: (p['targetPort'] as number | string | undefined) ?? (p['port'] as number) };
    if (typeof p['name'] === 'string' && p['name'] !== '') out.name = p['name'];
    if (typeof p['nodePort'] === 'number') out.nodePort = p['nodePort'];
    return out;
  });
  const affinity = ((spec['sessionAffinityConfig'] ?? {}) as { clientIP?: { timeoutSeconds?: number } }).clientIP?.timeoutSeconds;
  const out: ServiceSpec = {
    namespace: obj.metadata!.namespace!,
    name: obj.metadata!.name!,
    type: type as ServiceSpec['type'],
    clusterIP,
    ports,
    selector: { ...((spec['selector'] ?? {}) as Record<string, string>) },
    sessionAffinity: spec['sessionAffinity'] === 'ClientIP' ? 'ClientIP' : 'None',
    externalTrafficPolicy: spec['externalTrafficPolicy'] === 'Local' ? 'Local' : 'Cluster',
    internalTrafficPolicy: spec['internalTrafficPolicy'] === 'Local' ? 'Local' : 'Cluster',
  };
  if (out.sessionAffinity === 'ClientIP' && typeof affinity === 'number') out.sessionAffinityTimeoutSeconds = affinity;
  const ranges = spec['loadBalancerSourceRanges'];
  if (Array.isArray(ranges) && ranges.length > 0) out.loadBalancerSourceRanges = ranges.filter((r): r is string => typeof r === 'string');
  // What LB IPAM selects and reads (pool serviceSelector, lbipam.tendril.io/* annotations); the apiserver's own
  // bookkeeping annotations (kubectl.kubernetes.io/last-applied-configuration) are not the service's.
  const labels = obj.metadata?.labels;
  if (labels && Object.keys(labels).length > 0) out.labels = { ...labels };
  const annotations = Object.fromEntries(Object.entries(obj.metadata?.annotations ?? {}).filter(([k]) => !k.startsWith('kubectl.kubernetes.io/')));
  if (Object.keys(annotations).length > 0) out.annotations = annotations;
  return out;
}

function serviceToObject(ref: ObjectRef, s: ServiceSpec): KubernetesObject & Record<string, unknown> {
  const spec: Record<string, unknown> = {
    type: s.type,
    ports: s.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), protocol: p.protocol, port: p.port, targetPort: p.targetPort, ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}) })),
    selector: s.selector,
    sessionAffinity: s.sessionAffinity,
    internalTrafficPolicy: s.internalTrafficPolicy,
  };
  if (s.clusterIP) spec['clusterIP'] = s.clusterIP;
  if (s.type !== 'ClusterIP') spec['externalTrafficPolicy'] = s.externalTrafficPolicy;
  if (s.sessionAffinity === 'ClientIP' && s.sessionAffinityTimeoutSeconds !== undefined) spec['sessionAffinityConfig'] = { clientIP: { timeoutSeconds: s.sessionAffinityTimeoutSeconds } };
  if (s.loadBalancerSourceRanges?.length) spec['loadBalancerSourceRanges'] = s.loadBalancerSourceRanges;
  const metadata: Record<string, unknown> = { name: ref.name, ...(ref.namespace !== undefined ? { namespace: ref.namespace } : {}) };
  if (s.labels) metadata['labels'] = s.labels;
  if (s.annotations) metadata['annotations'] = s.annotations;
  return { apiVersion: 'v1', kind: 'Service', metadata, spec } as KubernetesObject & Record<string, unknown>;
}

/** Kinds added to the store later have no binding until one is written here (the store refuses them, coded). */
export const BINDINGS: Partial<Record<Kind, Binding>> = {
  Node: specBinding(SOURCES.node),
  IPAMState: specBinding(SOURCES.ipam),
  Identity: specBinding(SOURCES.identity),
  Endpoint: specBinding(SOURCES.endpoint, endpointObjectName, (o, spec) => {
    const s = spec as { node?: unknown; id?: unknown };
    return typeof s.node === 'string' && typeof s.id === 'number' ? `${s.node}:${s.id}` : o.metadata!.name!;
  }),
  LoadBalancerIPPool: specStatusBinding(SOURCES.lbPool, (o) => o['spec']),
  // Multi-pool IPAM's pools; the CRD schema checks the shape, the operator the CIDRs (overlaps, mask fit).
  PodIPPool: specStatusBinding(SOURCES.podIPPool, (o) => o['spec']),
  // The spec's name is metadata.name in Kubernetes (the CRD schema has no spec.name; it would be pruned).
  EgressGatewayPolicy: specStatusBinding(SOURCES.egress, egressSpec, (spec) => {
    const { name: _name, ...rest } = spec as { name?: string };
    return rest;
  }, {}),
  // Written by the operator only; named "<namespace>.<name>" as the store names its Service (cluster-scoped, so the
  // name with its dot is a valid object name and no namespace has to exist for it).
  ServiceStatus: specBinding(SOURCES.serviceStatus),
  // Named by the LoadBalancer IP; a tendril.io kind rather than coordination.k8s.io Lease: the store's value keeps
  // millisecond durations and needs no namespace, and the store's optimistic revisions apply to it as to any kind.
  L2Lease: specBinding(SOURCES.l2Lease),
  // Renewed every second by each agent (a tendril.io kind: kube-node-lease's Leases are the kubelets').
  NodeLease: specBinding(SOURCES.nodeLease),
  Namespace: {
    sources: [SOURCES.namespace],
    // Labels, and the annotations the agent reads (ipam.tendril.io/ip-pool: the IP pool of the namespace's pods).
    toStore: (obj) => ({ name: obj.metadata!.name!, value: { labels: { ...(obj.metadata?.labels ?? {}) }, ...namespaceAnnotations(obj) } }),
    ref: (name) => ({ source: SOURCES.namespace, name }),
    toObject: (ref, value) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ref.name, labels: (value as { labels: Record<string, string> }).labels } }),
  },
  // Services are the core resource: the apiserver allocates ClusterIPs and node ports; the agents' LB follows them.
  Service: {
    sources: [SOURCES.service],
    toStore: (obj) => {
      const s = serviceFromObject(obj);
      return s ? { name: `${s.namespace}.${s.name}`, value: s } : undefined;
    },
    ref: (name) => {
      const i = name.indexOf('.');
      if (i <= 0) throw new Error(`Service resource "${name}" is not <namespace>.<name>`);
      return { source: SOURCES.service, namespace: name.slice(0, i), name: name.slice(i + 1) };
    },
    toObject: (ref, value) => serviceToObject(ref, value as ServiceSpec),
  },
  // Every Service's backends in Kubernetes mode (the agent's ServiceManager with backendsFromSlices): the core
  // discovery.k8s.io/v1 EndpointSlices, the endpoint-slice controller's for services with a selector and hand-made ones
  // for those without, named "<namespace>.<name>" as the store names them (the agent's RBAC lists and watches them).
  EndpointSlice: {
    sources: [SOURCES.endpointSlice],
    toStore: (obj) => {
      const s = endpointSliceFromObject(obj);
      return s ? { name: `${s.namespace}.${s.name}`, value: s } : undefined;
    },
    ref: (name) => {
      const i = name.indexOf('.');
      if (i <= 0) throw new Error(`EndpointSlice resource "${name}" is not <namespace>.<name>`);
      return { source: SOURCES.endpointSlice, namespace: name.slice(0, i), name: name.slice(i + 1) };
    },
    toObject: (ref, value) => {
      const s = value as EndpointSliceSpec;
      return { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: ref.name, ...(ref.namespace !== undefined ? { namespace: ref.namespace } : {}), labels: s.labels }, addressType: s.addressType, endpoints: s.endpoints, ports: s.ports } as KubernetesObject & Record<string, unknown>;
    },
  },
  Policy: {
    sources: [SOURCES.netpol, SOURCES.tnp, SOURCES.tcnp],
    toStore: (obj, source) => {
      const m = obj.metadata ?? {};
      return { name: `${source.kind}.${source.namespaced ? m.namespace : ''}.${m.name}`, value: { document: policyDocument(obj, source) } };
    },
    ref: (name) => {
      const [kind = '', namespace = '', ...rest] = name.split('.');
      const source = POLICY_SOURCES[kind];
      if (!source) throw new Error(`Policy resource "${name}" is not <kind>.<namespace>.<name> of a known kind`);
      return { source, name: rest.join('.'), ...(source.namespaced ? { namespace } : {}) };
    },
    toObject: (ref, value) => {
      const doc = (value as { document: Record<string, unknown> }).document;
      const meta = (doc['metadata'] ?? {}) as Record<string, unknown>;
      return { ...doc, apiVersion: ref.source.apiVersion, kind: ref.source.kind, metadata: { ...meta, name: ref.name, ...(ref.namespace !== undefined ? { namespace: ref.namespace } : {}) } } as KubernetesObject & Record<string, unknown>;
    },
  },
};
