import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateService } from '../lb/service.js';
import { BINDINGS, SOURCES, serviceFromObject } from './bindings.js';
import { nodePodCidrs } from './node-cidrs.js';

const svc = (spec: Record<string, unknown>) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', resourceVersion: '7' }, spec });

test('a core Service becomes the store Service the LB takes, ClusterIP as the apiserver allocated it', () => {
  const s = serviceFromObject(svc({ type: 'ClusterIP', clusterIP: '10.96.3.4', clusterIPs: ['10.96.3.4'], selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], sessionAffinity: 'None', internalTrafficPolicy: 'Cluster' }));
  assert.deepEqual(s, { namespace: 'shop', name: 'web', type: 'ClusterIP', clusterIP: '10.96.3.4', ports: [{ protocol: 'TCP', port: 80, targetPort: 8080 }], selector: { app: 'web' }, sessionAffinity: 'None', externalTrafficPolicy: 'Cluster', internalTrafficPolicy: 'Cluster' });
  assert.deepEqual(validateService(s), s, 'valid as src/lb checks services');
  const np = serviceFromObject(svc({ type: 'NodePort', clusterIP: '10.96.3.5', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080, protocol: 'TCP' }], sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }, externalTrafficPolicy: 'Local' }))!;
  assert.deepEqual(np.ports, [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 }]);
  assert.equal(np.sessionAffinityTimeoutSeconds, 60);
  assert.equal(np.externalTrafficPolicy, 'Local');
  assert.equal(serviceFromObject(svc({ clusterIP: 'None', selector: { app: 'web' }, ports: [{ port: 80 }] })), undefined, 'headless: no frontend');
  assert.equal(serviceFromObject(svc({ type: 'ExternalName', externalName: 'x.example' })), undefined);
  assert.equal(serviceFromObject(svc({ ports: [{ port: 80 }] })), undefined, 'not allocated yet');
});

test('the Service binding names <namespace>.<name> and writes back what it read', () => {
  const b = BINDINGS.Service!;
  const obj = svc({ type: 'ClusterIP', clusterIP: '10.96.3.4', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] });
  const r = b.toStore(obj, SOURCES.service)!;
  assert.equal(r.name, 'shop.web');
  const ref = b.ref('shop.web');
  assert.deepEqual([ref.namespace, ref.name], ['shop', 'web']);
  assert.throws(() => b.ref('nodot'));
  const back = b.toObject(ref, r.value);
  assert.equal(serviceFromObject({ ...back, metadata: { ...back.metadata, resourceVersion: '8' } })?.clusterIP, '10.96.3.4');
});

test('a Node\'s pod CIDRs: spec.podCIDRs, else spec.podCIDR', () => {
  assert.deepEqual(nodePodCidrs({ spec: { podCIDR: '10.1.0.0/24', podCIDRs: ['10.1.0.0/24', 'fd00::/64'] } }), ['10.1.0.0/24', 'fd00::/64']);
  assert.deepEqual(nodePodCidrs({ spec: { podCIDR: '10.1.0.0/24' } }), ['10.1.0.0/24']);
  assert.deepEqual(nodePodCidrs({ spec: {} }), []);
  assert.deepEqual(nodePodCidrs({}), []);
});

test('LoadBalancerIPPool and EgressGatewayPolicy: {spec, status} on one object; the egress spec named by metadata.name', () => {
  const pool = BINDINGS.LoadBalancerIPPool!;
  const value = { spec: { blocks: [{ cidr: '10.9.0.0/30' }], allowFirstLastIPs: false, disabled: false }, status: { conditions: [], available: 2, used: 0 } };
  const obj = pool.toObject(pool.ref('a'), value);
  assert.deepEqual([obj.kind, obj.metadata?.name, obj['spec'], obj['status']], ['TendrilLoadBalancerIPPool', 'a', value.spec, value.status]);
  assert.deepEqual(pool.toStore(obj, SOURCES.lbPool), { name: 'a', value });
  assert.deepEqual(pool.toStore({ ...obj, status: undefined }, SOURCES.lbPool), { name: 'a', value: { spec: value.spec } }, 'no status yet');

  const eg = BINDINGS.EgressGatewayPolicy!;
  const spec = { selectors: [{ podSelector: { matchLabels: { app: 'db' } } }], destinationCIDRs: ['198.51.100.0/24'], egressGateway: { nodeSelector: { matchLabels: { gw: 'y' } } } };
  const read = eg.toStore({ apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name: 'p' }, spec }, SOURCES.egress)!;
  assert.equal(read.name, 'p');
  const v = read.value as { spec: { name: string; excludedCIDRs: string[] }; status: unknown };
  assert.deepEqual([v.spec.name, v.spec.excludedCIDRs, v.status], ['p', [], {}], 'validated as src/egress does, status {} until the operator writes one');
  assert.equal((eg.toObject(eg.ref('p'), v)['spec'] as { name?: string }).name, undefined, 'spec.name is not a CRD field');
  assert.equal(eg.toStore({ apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name: 'bad' }, spec: { ...spec, destinationCIDRs: ['x'] } }, SOURCES.egress), undefined, 'one src/egress refuses is not shown');
});

test('ServiceStatus and L2Lease: the value is the spec, named as in the store', () => {
  for (const [kind, name, value] of [['ServiceStatus', 'shop.web', { loadBalancer: { ingress: ['10.9.0.1'] }, conditions: [] }], ['L2Lease', '10.9.0.1', { holder: 'n1', renewTime: '2026-01-01T00:00:00.000Z', leaseDurationMs: 3000 }]] as const) {
    const b = BINDINGS[kind]!;
    const obj = b.toObject(b.ref(name), value);
    assert.equal(obj.metadata?.name, name);
    assert.deepEqual(b.toStore(obj, b.sources[0]!), { name, value });
  }
});

test('a core Service\'s labels and annotations (not kubectl\'s) are the store Service\'s, what LB IPAM selects on', () => {
  const s = serviceFromObject({ ...svc({ type: 'LoadBalancer', clusterIP: '10.96.3.9', selector: { app: 'web' }, ports: [{ port: 80 }] }), metadata: { name: 'web', namespace: 'shop', labels: { exposed: 'yes' }, annotations: { 'lbipam.tendril.io/ips': '10.9.0.1', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } } })!;
  assert.deepEqual([s.labels, s.annotations], [{ exposed: 'yes' }, { 'lbipam.tendril.io/ips': '10.9.0.1' }]);
  assert.deepEqual(validateService(s), s);
  const back = BINDINGS.Service!.toObject(BINDINGS.Service!.ref('shop.web'), s);
  assert.deepEqual([back.metadata?.labels, back.metadata?.annotations], [{ exposed: 'yes' }, { 'lbipam.tendril.io/ips': '10.9.0.1' }]);
});

test('a discovery.k8s.io/v1 EndpointSlice becomes the store EndpointSlice (the LB\'s explicit backends); IPv6 ones are not shown', () => {
  const b = BINDINGS.EndpointSlice!;
  const obj = { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'ext-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'ext' }, resourceVersion: '3' }, addressType: 'IPv4', endpoints: [{ addresses: ['192.168.10.200'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1' }], ports: [{ name: '', port: 8080, protocol: 'TCP' }] };
  const got = b.toStore(obj, SOURCES.endpointSlice)!;
  assert.equal(got.name, 'shop.ext-abc');
  assert.deepEqual(got.value, { namespace: 'shop', name: 'ext-abc', labels: { 'kubernetes.io/service-name': 'ext' }, addressType: 'IPv4', endpoints: [{ addresses: ['192.168.10.200'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1' }], ports: [{ port: 8080, protocol: 'TCP' }] });
  assert.deepEqual(b.ref('shop.ext-abc'), { source: SOURCES.endpointSlice, namespace: 'shop', name: 'ext-abc' });
  assert.equal(b.toStore({ ...obj, addressType: 'IPv6', endpoints: [{ addresses: ['fd00::1'] }] }, SOURCES.endpointSlice), undefined);
  const back = b.toObject(b.ref('shop.ext-abc'), got.value) as Record<string, unknown>;
  assert.deepEqual(b.toStore({ ...back, metadata: { ...(back['metadata'] as object) } } as never, SOURCES.endpointSlice)?.value, got.value, 'written back as read');
});

test('a core Service\'s spec.loadBalancerSourceRanges are the store Service\'s, and written back', () => {
  const s = serviceFromObject(svc({ type: 'LoadBalancer', clusterIP: '10.96.3.6', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30081 }], loadBalancerSourceRanges: ['192.168.10.192/28'] }))!;
  assert.deepEqual(s.loadBalancerSourceRanges, ['192.168.10.192/28']);
  assert.deepEqual(validateService(s).loadBalancerSourceRanges, ['192.168.10.192/28']);
  const b = BINDINGS.Service!;
  assert.deepEqual((b.toObject(b.ref('shop.web'), s) as { spec: { loadBalancerSourceRanges?: string[] } }).spec.loadBalancerSourceRanges, ['192.168.10.192/28']);
});
