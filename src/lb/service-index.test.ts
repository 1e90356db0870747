// Unit tests of the service index of flows (serviceByAddr: ClusterIPs and LoadBalancer IPs) and of the LB IPs a node
// may not announce (externalTrafficPolicy Local without a local backend).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { frontendsOf, lbIpsWithoutLocalBackend, serviceIndex, validateService } from './index.js';

const web = validateService({ namespace: 'shop', name: 'web', type: 'LoadBalancer', clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }, { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }] });
const np = validateService({ namespace: 'shop', name: 'np', type: 'NodePort', clusterIP: '10.96.0.11', ports: [{ port: 81, nodePort: 30081 }] });

test('serviceIndex() names the service of a LoadBalancer IP at each service port, as of its ClusterIP', () => {
  const idx = serviceIndex([web, np], (s) => (s.name === 'web' ? ['192.168.10.240'] : ['192.168.10.250']));
  assert.deepEqual(idx.get('10.96.0.10:80/TCP'), { name: 'web', namespace: 'shop' });
  assert.deepEqual(idx.get('192.168.10.240:80/TCP'), { name: 'web', namespace: 'shop' });
  assert.deepEqual(idx.get('192.168.10.240:53/UDP'), { name: 'web', namespace: 'shop' });
  assert.equal(idx.get('192.168.10.240:53/TCP'), undefined, 'TCP at a UDP port');
  assert.equal(idx.get('192.168.10.240:30080/TCP'), undefined, 'the node port is not a port of the LB IP');
  assert.equal(idx.get('192.168.10.250:81/TCP'), undefined, 'a NodePort service has no LB IP even when a status says so');
  assert.deepEqual(idx.get('10.96.0.11:81/TCP'), { name: 'np', namespace: 'shop' });
});

test('lbIpsWithoutLocalBackend(): an externalTrafficPolicy Local LB IP is announceable only by a node with a backend of it', () => {
  const local = validateService({ namespace: 'shop', name: 'web', type: 'LoadBalancer', clusterIP: '10.96.0.10', selector: { app: 'web' }, externalTrafficPolicy: 'Local', ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] });
  const cluster = validateService({ namespace: 'shop', name: 'api', type: 'LoadBalancer', clusterIP: '10.96.0.12', selector: { app: 'api' }, ports: [{ port: 80, nodePort: 30082 }] });
  const eps = [
    { ip: '10.200.1.5', node: 'n2', namespace: 'shop', labels: ['k8s:app=web'], namedPorts: [] },
    { ip: '10.200.1.6', node: 'n2', namespace: 'shop', labels: ['k8s:app=api'], namedPorts: [] },
  ];
  const ips = (s: { name: string }): string[] => (s.name === 'web' ? ['192.168.10.240'] : ['192.168.10.241']);
  assert.deepEqual([...lbIpsWithoutLocalBackend(frontendsOf([local, cluster], eps, 'n1', ips))], ['192.168.10.240'], 'n1: no web backend; api is Cluster');
  assert.deepEqual([...lbIpsWithoutLocalBackend(frontendsOf([local, cluster], eps, 'n2', ips))], [], 'n2 has the backend');
  // n2 loses its last local backend: it may not announce any more.
  assert.deepEqual([...lbIpsWithoutLocalBackend(frontendsOf([local, cluster], eps.slice(1), 'n2', ips))], ['192.168.10.240']);
});
