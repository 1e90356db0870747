// Unit tests of the Service resource, ClusterIP/NodePort allocation (against the real local store) and backend
// derivation.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalStoreClient, LocalStoreServer } from '../store/index.js';
import { LB_SCOPE_ALL, LB_SCOPE_EXTERNAL, LbError, ServiceAllocator, backendsFor, frontendsOf, validateService, type EndpointView, type ServiceSpec } from './index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-lb-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const svc = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ namespace: 'shop', name: 'web', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }], ...over });

test('validateService() fills in Kubernetes defaults', () => {
  const s = validateService(svc({ sessionAffinity: 'ClientIP' }));
  assert.equal(s.type, 'ClusterIP');
  assert.deepEqual(s.ports, [{ protocol: 'TCP', port: 80, targetPort: 8080 }]);
  assert.equal(s.externalTrafficPolicy, 'Cluster');
  assert.equal(s.internalTrafficPolicy, 'Cluster');
  assert.equal(s.sessionAffinityTimeoutSeconds, 10800);
  assert.equal(validateService(svc({ ports: [{ port: 53, protocol: 'UDP' }] })).ports[0]!.targetPort, 53);
});

test('validateService() says which field of which service is wrong', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [svc({ type: 'External' }), /"shop\/web": type "External" is not one of ClusterIP, NodePort, LoadBalancer/],
    [svc({ ports: [] }), /ports: expected at least one port/],
    [svc({ ports: [{ port: 0 }] }), /ports\[0\]\.port 0 is not a port number/],
    [svc({ ports: [{ port: 80, protocol: 'SCTP' }] }), /ports\[0\]\.protocol "SCTP"/],
    [svc({ ports: [{ port: 80, targetPort: 'Not_A_Name' }] }), /targetPort "Not_A_Name" is neither a port number nor a container port name/],
    [svc({ ports: [{ port: 80, name: 'a' }, { port: 81 }] }), /ports\[1\]\.name: required when a service has more than one port/],
    [svc({ ports: [{ port: 80, nodePort: 30080 }] }), /a ClusterIP service has no node ports/],
    [svc({ type: 'NodePort', ports: [{ port: 80, nodePort: 80 }] }), /nodePort 80 is outside the node port range 30000-32767/],
    [svc({ selector: { app: 7 } }), /selector "app": value 7 is not a string/],
    [svc({ sessionAffinityTimeoutSeconds: 10 }), /only with sessionAffinity ClientIP/],
    [svc({ name: 'Web' }), /name "Web" is not a DNS label/],
    [svc({ clusterIP: '10.96.0.300' }), /clusterIP "10.96.0.300" is not an IPv4 address/],
    [svc({ extra: 1 }), /unknown field "extra"/],
  ];
  for (const [input, re] of cases) {
    assert.throws(() => validateService(input), (err: unknown) => err instanceof LbError && err.code === 'TENDRIL_ERR_SERVICE_INVALID' && re.test(err.message), String(re));
  }
});

async function withStore(name: string, fn: (open: () => LocalStoreClient) => Promise<void>): Promise<void> {
  const dataDir = path.join(tmp, name);
  const socket = path.join(tmp, `${name}.sock`);
  const server = new LocalStoreServer({ dataDir });
  await server.listen({ socket });
  const clients: LocalStoreClient[] = [];
  try {
    await fn(() => {
      const c = new LocalStoreClient({ socket });
      clients.push(c);
      return c;
    });
  } finally {
    for (const c of clients) await c.close();
    await server.close();
  }
}

test('ServiceAllocator.apply() never hands out a ClusterIP or node port twice, also across allocator restarts and in parallel', async () => {
  await withStore('alloc', async (open) => {
    // A /28: 14 usable addresses, so collisions are certain if claims did not hold.
    const a = new ServiceAllocator(open(), '10.96.0.0/28');
    const b = new ServiceAllocator(open(), '10.96.0.0/28');
    const made = await Promise.all(
      Array.from({ length: 14 }, (_, i) => (i % 2 ? a : b).apply(svc({ name: `s${i}`, type: 'NodePort' }))),
    );
    const ips = made.map((r) => r.value.clusterIP);
    assert.equal(new Set(ips).size, 14, `distinct: ${ips.join(' ')}`);
    for (const ip of ips) assert.match(ip!, /^10\.96\.0\.([1-9]|1[0-4])$/);
    const ports = made.map((r) => r.value.ports[0]!.nodePort!);
    assert.equal(new Set(ports).size, 14);
    for (const p of ports) assert.ok(p >= 30000 && p <= 32767);
    // A fresh allocator (an operator restart) sees the claims: the CIDR is full.
    const c = new ServiceAllocator(open(), '10.96.0.0/28');
    await assert.rejects(c.apply(svc({ name: 'one-more' })), (e: unknown) => e instanceof LbError && e.code === 'TENDRIL_ERR_SERVICE_IP_EXHAUSTED');
    // Re-applying keeps the address and port; deleting frees them.
    const again = await c.apply(svc({ name: 's3', type: 'NodePort' }));
    assert.equal(again.value.clusterIP, ips[3]);
    assert.equal(again.value.ports[0]!.nodePort, ports[3]);
    assert.equal(await c.remove('shop', 's3'), true);
    const reuse = await c.apply(svc({ name: 'one-more' }));
    assert.equal(reuse.value.clusterIP, ips[3]);
    // A taken address or node port is refused by name, and nothing is left claimed by the failed request.
    await assert.rejects(c.apply(svc({ name: 'x', clusterIP: ips[0] })), /clusterIP 10\.96\.0\.\d+: it belongs to service "shop\/s\d+"/);
    await assert.rejects(c.apply(svc({ name: 'x', clusterIP: '10.97.0.1' })), /not a usable address of the service CIDR 10\.96\.0\.0\/28/);
    await c.remove('shop', 'one-more');
    await assert.rejects(c.apply(svc({ name: 'x', type: 'NodePort', ports: [{ port: 80, nodePort: ports[0] }] })), (e: unknown) => e instanceof LbError && e.code === 'TENDRIL_ERR_NODEPORT_TAKEN');
    const free = await c.apply(svc({ name: 'y' }));
    assert.equal(free.value.clusterIP, ips[3], 'the failed request released the address it had claimed');
  });
});

test('backendsFor() picks ready endpoints of the namespace by labels and resolves named target ports', () => {
  const ep = (ip: string, ns: string, labels: string[], namedPorts: EndpointView['namedPorts'] = []): EndpointView => ({ ip, node: 'n1', namespace: ns, labels, namedPorts });
  const eps = [
    ep('10.0.0.3', 'shop', ['k8s:app=web', 'k8s:tier=a'], [{ name: 'http', port: 8080, protocol: 'TCP' }]),
    ep('10.0.0.2', 'shop', ['k8s:app=web'], [{ name: 'http', port: 9090, protocol: 'TCP' }]),
    ep('10.0.0.4', 'other', ['k8s:app=web']),
    ep('10.0.0.5', 'shop', ['k8s:app=db']),
    ep('10.0.0.6', 'shop', ['unspec:app=web']),
  ];
  const s: ServiceSpec = validateService(svc({ ports: [{ port: 80, targetPort: 'http' }] }));
  assert.deepEqual(backendsFor(s, s.ports[0]!, eps).map((b) => `${b.ip}:${b.port}`), ['10.0.0.2:9090', '10.0.0.3:8080']);
  const numeric = validateService(svc({ selector: { app: 'web', tier: 'a' } }));
  assert.deepEqual(backendsFor(numeric, numeric.ports[0]!, eps).map((b) => `${b.ip}:${b.port}`), ['10.0.0.3:8080']);
  const none = validateService(svc({ selector: {} }));
  assert.deepEqual(backendsFor(none, none.ports[0]!, eps), [], 'no selector: no derived backends');
});

test('frontendsOf(): a NodePort with externalTrafficPolicy Local has a second, external-scope entry of the node\'s own backends', () => {
  const eps: EndpointView[] = [
    { ip: '10.200.0.5', node: 'a', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] },
    { ip: '10.200.1.5', node: 'b', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] },
  ];
  const base = validateService(svc({ type: 'NodePort', clusterIP: '10.96.0.9', ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] }));
  const cluster = frontendsOf([base], eps, 'a').filter((f) => f.type === 'NodePort');
  assert.equal(cluster.length, 1);
  assert.equal(cluster[0]!.backends.length, 2);
  assert.equal(cluster[0]!.extLocal, undefined);
  const local = frontendsOf([{ ...base, externalTrafficPolicy: 'Local' }], eps, 'a').filter((f) => f.type === 'NodePort');
  assert.deepEqual(
    local.map((f) => [f.address, f.port, f.scope ?? LB_SCOPE_ALL, f.extLocal ?? false, f.backends.map((b) => b.ip)]),
    [
      ['0.0.0.0', 30080, LB_SCOPE_ALL, true, ['10.200.0.5', '10.200.1.5']],
      ['0.0.0.0', 30080, LB_SCOPE_EXTERNAL, false, ['10.200.0.5']],
    ],
  );
  // A node without a backend of its own: the external entry is empty (ICMP port unreachable from outside).
  assert.deepEqual(frontendsOf([{ ...base, externalTrafficPolicy: 'Local' }], eps, 'c').find((f) => f.scope === LB_SCOPE_EXTERNAL)?.backends, []);
});

test('validateService(): loadBalancerSourceRanges are IPv4 CIDRs, normalized and deduplicated; a bad one is named', () => {
  const s = validateService(svc({ type: 'LoadBalancer', loadBalancerSourceRanges: ['192.168.10.201/28', ' 10.0.0.0/8', '192.168.10.192/28'] }));
  assert.deepEqual(s.loadBalancerSourceRanges, ['192.168.10.192/28', '10.0.0.0/8']);
  assert.equal(validateService(svc({ loadBalancerSourceRanges: [] })).loadBalancerSourceRanges, undefined);
  assert.throws(() => validateService(svc({ loadBalancerSourceRanges: ['10.0.0.0/33'] })), /"shop\/web": loadBalancerSourceRanges\[0\] "10\.0\.0\.0\/33" is not an IPv4 CIDR/);
  assert.throws(() => validateService(svc({ loadBalancerSourceRanges: '10.0.0.0/8' })), /loadBalancerSourceRanges: expected a list of IPv4 CIDRs/);
});

test('frontendsOf(): loadBalancerSourceRanges go to the LoadBalancer IP frontends only (not the ClusterIP nor the node port)', () => {
  const eps: EndpointView[] = [{ ip: '10.200.0.5', node: 'a', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] }];
  const s = validateService(svc({ type: 'LoadBalancer', clusterIP: '10.96.0.9', ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }], loadBalancerSourceRanges: ['192.168.10.192/28'] }));
  const fs = frontendsOf([s], eps, 'a', () => ['192.168.10.240']);
  assert.deepEqual(fs.map((f) => [f.type, f.address, f.sourceRanges ?? null]), [
    ['ClusterIP', '10.96.0.9', null],
    ['NodePort', '0.0.0.0', null],
    ['LoadBalancer', '192.168.10.240', ['192.168.10.192/28']],
  ]);
});
