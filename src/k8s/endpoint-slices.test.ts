// Unit tests of Kubernetes mode's service backends: EndpointSlices as the endpoint-slice controller writes them,
// read through the binding and turned into each frontend's backends (every service, with or without a selector).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubernetesObject } from '@kubernetes/client-node';
import { endpointSliceFromObject } from './bindings.js';
import { frontendsOf, LB_SCOPE_EXTERNAL, validateService, type EndpointView } from '../lb/index.js';

type Obj = KubernetesObject & Record<string, unknown>;

/** A slice in the shape kube-controller-manager 1.32 writes (targetRef, zone, hostname, managed-by; endpoints null when empty). */
const kcmSlice = (name: string, service: string, endpoints: Array<Record<string, unknown>> | null, ports: Array<Record<string, unknown>> = [{ name: 'http', port: 8080, protocol: 'TCP' }]): Obj => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: {
    name,
    namespace: 'shop',
    generateName: `${service}-`,
    labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
    ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: service, uid: 'u', controller: true, blockOwnerDeletion: true }],
  },
  addressType: 'IPv4',
  endpoints,
  ports,
});

const ep = (ip: string, node: string, conditions: Record<string, unknown>): Record<string, unknown> => ({
  addresses: [ip],
  conditions,
  nodeName: node,
  targetRef: { kind: 'Pod', namespace: 'shop', name: `pod-${ip}`, uid: ip },
});

const svc = (over: Record<string, unknown> = {}) =>
  validateService({ namespace: 'shop', name: 'web', clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }], ...over });

/** The endpoints the selector matches: with backendsFromSlices they must not be the backends. */
const selected: EndpointView[] = [{ ip: '172.29.9.9', node: 'a', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }] }];

const backends = (slices: Obj[], s = svc(), node = 'a') =>
  frontendsOf([s], selected, node, () => [], slices.map((o) => endpointSliceFromObject(o)!), true);

test('Kubernetes mode: a service with a selector takes the ready endpoints of its slices, several slices merged, not the endpoints its selector matches', () => {
  const slices = [
    kcmSlice('web-abc', 'web', [ep('172.29.0.2', 'a', { ready: true, serving: true, terminating: false }), ep('172.29.0.3', 'b', { ready: false, serving: false, terminating: false })]),
    kcmSlice('web-def', 'web', [ep('172.29.0.4', 'b', { ready: true, serving: true, terminating: false })]),
    kcmSlice('other-x', 'other', [ep('172.29.0.5', 'a', { ready: true })]),
  ];
  const f = backends(slices);
  assert.deepEqual(f.map((x) => x.backends), [[{ ip: '172.29.0.2', port: 8080 }, { ip: '172.29.0.4', port: 8080 }]]);
  // Without backendsFromSlices (store mode): the selector's endpoints as before.
  assert.deepEqual(frontendsOf([svc()], selected, 'a', () => [], slices.map((o) => endpointSliceFromObject(o)!)).map((x) => x.backends), [[{ ip: '172.29.9.9', port: 8080 }]]);
});

test('Kubernetes mode: a slice with no endpoints (null, as the controller writes it) or a deleted slice leaves the service without backends', () => {
  assert.deepEqual(backends([kcmSlice('web-abc', 'web', null)]).map((x) => x.backends), [[]]);
  assert.deepEqual(backends([]).map((x) => x.backends), [[]]);
});

test('Kubernetes mode: terminating endpoints that still serve are used only while no endpoint is ready (kube-proxy\'s fallback)', () => {
  const term = ep('172.29.0.7', 'a', { ready: false, serving: true, terminating: true });
  const gone = ep('172.29.0.8', 'a', { ready: false, serving: false, terminating: true });
  assert.deepEqual(backends([kcmSlice('web-abc', 'web', [term, gone, ep('172.29.0.2', 'a', { ready: true, serving: true, terminating: false })])]).map((x) => x.backends), [[{ ip: '172.29.0.2', port: 8080 }]]);
  assert.deepEqual(backends([kcmSlice('web-abc', 'web', [term, gone])]).map((x) => x.backends), [[{ ip: '172.29.0.7', port: 8080 }]]);
  // A nil ready condition reads as ready (as Kubernetes documents it for consumers).
  assert.deepEqual(backends([kcmSlice('web-abc', 'web', [{ addresses: ['172.29.0.9'] }])]).map((x) => x.backends), [[{ ip: '172.29.0.9', port: 8080 }]]);
});

test('Kubernetes mode: ports by name: each service port takes the slice port of its name (the resolved target port)', () => {
  const s = svc({ ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'metrics', port: 9090, targetPort: 9100 }] });
  const slices = [kcmSlice('web-abc', 'web', [ep('172.29.0.2', 'a', { ready: true })], [{ name: 'metrics', port: 9100, protocol: 'TCP' }, { name: 'http', port: 8080, protocol: 'TCP' }])];
  const f = backends(slices, s);
  assert.deepEqual(f.map((x) => `${x.port}->${x.backends.map((b) => b.port).join(',')}`), ['80->8080', '9090->9100']);
});

test('Kubernetes mode: externalTrafficPolicy Local keeps the endpoints whose nodeName is this node for traffic from outside', () => {
  const s = svc({ type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080 }] });
  const slices = [kcmSlice('web-abc', 'web', [ep('172.29.0.2', 'a', { ready: true }), ep('172.29.0.4', 'b', { ready: true })])];
  const ext = (node: string) => backends(slices, s, node).find((f) => f.type === 'NodePort' && f.scope === LB_SCOPE_EXTERNAL)!.backends;
  assert.deepEqual(ext('a'), [{ ip: '172.29.0.2', port: 8080 }]);
  assert.deepEqual(ext('b'), [{ ip: '172.29.0.4', port: 8080 }]);
  assert.deepEqual(ext('c'), []);
});
