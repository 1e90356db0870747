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
