// Unit tests of the pool helpers (selector, usable ranges, overlap) and of LoadBalancer frontends in frontendsOf().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { frontendsOf, poolRanges, poolSpan, rangesOverlap, selectorMatches, serviceSelectorLabels, validateLbPool, validateService } from './index.js';
import { formatIPv4 } from '../util/ip.js';
import { LB_SCOPE_EXTERNAL } from './maps.js';

test('selectorMatches() does matchLabels and every matchExpressions operator, on the service labels plus namespace and name', () => {
  const labels = serviceSelectorLabels({ namespace: 'shop', name: 'web', labels: { tier: 'front', env: 'prod' } });
  assert.equal(selectorMatches(undefined, labels), true);
  assert.equal(selectorMatches({ matchLabels: { tier: 'front' } }, labels), true);
  assert.equal(selectorMatches({ matchLabels: { tier: 'back' } }, labels), false);
  assert.equal(selectorMatches({ matchLabels: { 'io.kubernetes.service.namespace': 'shop' } }, labels), true);
  assert.equal(selectorMatches({ matchExpressions: [{ key: 'env', operator: 'In', values: ['dev', 'prod'] }] }, labels), true);
  assert.equal(selectorMatches({ matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['prod'] }] }, labels), false);
  assert.equal(selectorMatches({ matchExpressions: [{ key: 'gpu', operator: 'DoesNotExist' }] }, labels), true);
  assert.equal(selectorMatches({ matchExpressions: [{ key: 'gpu', operator: 'Exists' }] }, labels), false);
});

test('poolRanges() skips a cidr block\'s first and last address unless allowFirstLastIPs; start/stop are inclusive', () => {
  const fmt = (r: { first: number; last: number }[]): string[] => r.map((x) => `${formatIPv4(x.first)}-${formatIPv4(x.last)}`);
  assert.deepEqual(fmt(poolRanges(validateLbPool('p', { blocks: [{ cidr: '10.1.0.0/29' }, { start: '10.2.0.5', stop: '10.2.0.6' }] }))), ['10.1.0.1-10.1.0.6', '10.2.0.5-10.2.0.6']);
  assert.deepEqual(fmt(poolRanges(validateLbPool('p', { blocks: [{ cidr: '10.1.0.0/29' }], allowFirstLastIPs: true }))), ['10.1.0.0-10.1.0.7']);
  assert.deepEqual(fmt(poolRanges(validateLbPool('p', { blocks: [{ cidr: '10.1.0.4/32' }] }))), ['10.1.0.4-10.1.0.4']);
  const a = poolSpan(validateLbPool('a', { blocks: [{ cidr: '10.1.0.0/29' }] }));
  assert.equal(rangesOverlap(a, poolSpan(validateLbPool('b', { blocks: [{ start: '10.1.0.7' }] }))), true, 'the broadcast address counts for overlap');
  assert.equal(rangesOverlap(a, poolSpan(validateLbPool('c', { blocks: [{ start: '10.1.0.8' }] }))), false);
});

test('frontendsOf() adds a LoadBalancer frontend per LB IP at the service port, with the ClusterIP frontend\'s backends', () => {
  const s = validateService({ namespace: 'shop', name: 'web', type: 'LoadBalancer', clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] });
  const eps = [{ ip: '10.200.0.5', node: 'n1', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] }];
  const f = frontendsOf([s], eps, 'n1', () => ['192.168.10.240']);
  const lb = f.find((x) => x.type === 'LoadBalancer');
  assert.ok(lb, JSON.stringify(f));
  assert.equal(lb.address, '192.168.10.240');
  assert.equal(lb.port, 80);
  assert.deepEqual(lb.backends, f.find((x) => x.type === 'ClusterIP')!.backends);
  assert.equal(frontendsOf([s], eps, 'n1').some((x) => x.type === 'LoadBalancer'), false, 'no LB IP yet: no such frontend');
  const np = validateService({ namespace: 'shop', name: 'np', type: 'NodePort', clusterIP: '10.96.0.11', ports: [{ port: 80 }] });
  assert.equal(frontendsOf([np], eps, 'n1', () => ['192.168.10.241']).some((x) => x.type === 'LoadBalancer'), false, 'only LoadBalancer services');
});

test('frontendsOf(): a LoadBalancer IP is served from outside (external); externalTrafficPolicy Local gives it this node\'s backends for outside', () => {
  const eps = [
    { ip: '10.200.0.5', node: 'n1', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] },
    { ip: '10.200.1.5', node: 'n2', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] },
  ];
  const base = { namespace: 'shop', name: 'web', type: 'LoadBalancer', clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] };
  const cluster = frontendsOf([validateService(base)], eps, 'n1', () => ['192.168.10.240']).filter((x) => x.address === '192.168.10.240');
  assert.equal(cluster.length, 1);
  assert.equal(cluster[0]!.external, true);
  assert.equal(cluster[0]!.extLocal, undefined);
  assert.deepEqual(cluster[0]!.backends.map((b) => b.ip).sort(), ['10.200.0.5', '10.200.1.5']);
  const local = frontendsOf([validateService({ ...base, externalTrafficPolicy: 'Local' })], eps, 'n1', () => ['192.168.10.240']).filter((x) => x.address === '192.168.10.240');
  assert.equal(local.length, 2);
  const all = local.find((x) => !x.scope)!;
  const ext = local.find((x) => x.scope === LB_SCOPE_EXTERNAL)!;
  assert.equal(all.extLocal, true);
  assert.equal(all.backends.length, 2, 'pods: every backend');
  assert.deepEqual(ext.backends, [{ ip: '10.200.0.5', port: 8080 }], 'outside: this node\'s only');
});
