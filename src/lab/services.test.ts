// Unit tests of `lab service add --port` parsing and the service tables of the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServicePort } from './services.js';
import { formatBpfLbList, formatServiceList } from '../cli/service-cmd.js';

test('parseServicePort() reads PORT[:TARGET][/PROTO][,NAME] with a numeric or named target', () => {
  assert.deepEqual(parseServicePort('80:8080/TCP,http'), { port: 80, targetPort: 8080, protocol: 'TCP', name: 'http' });
  assert.deepEqual(parseServicePort('53/udp'), { port: 53, targetPort: 53, protocol: 'UDP' });
  assert.deepEqual(parseServicePort('80:web'), { port: 80, targetPort: 'web', protocol: 'TCP' });
  for (const bad of ['', 'http', '80:/TCP', '80/SCTP', '80:8080/TCP,']) {
    assert.throws(() => parseServicePort(bad), /Invalid --port .*expected PORT\[:TARGETPORT\]/, bad);
  }
});

test('formatServiceList() prints one row per frontend and one line per backend, as cilium-dbg service list', () => {
  const text = formatServiceList([{ id: 1, frontend: '10.96.0.10:80/TCP', service: 'shop/web', type: 'ClusterIP', backends: ['10.0.0.2:8080/TCP', '10.0.0.3:8080/TCP'] }]);
  assert.deepEqual(text.split('\n'), [
    'ID   Frontend            Service Type   Backend',
    '1    10.96.0.10:80/TCP   ClusterIP      1 => 10.0.0.2:8080/TCP (active)',
    '                                        2 => 10.0.0.3:8080/TCP (active)',
    '',
  ]);
  assert.match(formatBpfLbList([{ id: 4, frontend: '0.0.0.0:30080/TCP', service: 'shop/web', type: 'NodePort', backends: ['10.0.0.2:8080/TCP'] }]), /0\.0\.0\.0:30080\/TCP\s+0\.0\.0\.0:0 \(4\) \(0\) \[NodePort\]\n\s+10\.0\.0\.2:8080\/TCP \(4\) \(1\)/);
});

test('formatServiceList() and formatBpfLbList() show a LoadBalancer frontend\'s source ranges', () => {
  const e = { id: 3, frontend: '192.168.10.240:80/TCP', service: 'shop/web', type: 'LoadBalancer', backends: ['10.0.0.2:8080/TCP'], sourceRanges: ['10.99.0.0/16', '192.168.10.192/28'] };
  assert.deepEqual(formatServiceList([e]).split('\n'), [
    'ID   Frontend                Service Type   Backend',
    '3    192.168.10.240:80/TCP   LoadBalancer   1 => 10.0.0.2:8080/TCP (active)',
    '                                            (source ranges: 10.99.0.0/16, 192.168.10.192/28)',
    '',
  ]);
  assert.match(formatBpfLbList([e]), /\[LoadBalancer, source ranges\]\n\s+10\.0\.0\.2:8080\/TCP \(3\) \(1\)\n\s+source range 10\.99\.0\.0\/16 \(3\)\n\s+source range 192\.168\.10\.192\/28 \(3\)\n$/);
});
