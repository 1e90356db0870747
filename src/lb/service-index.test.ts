// Unit tests of the service index of flows (serviceByAddr: ClusterIPs and LoadBalancer IPs) and of the LB IPs a node
// may not announce (externalTrafficPolicy Local without a local backend).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serviceIndex, validateService } from './index.js';

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
