// Unit tests of EndpointSlices (explicit backends of services without a selector): validation and backend derivation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SLICE_SERVICE_NAME_LABEL, sliceBackends, validateEndpointSlice, frontendsOf, validateService } from './index.js';

const slice = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  namespace: 'shop',
  name: 'ext-1',
  labels: { [SLICE_SERVICE_NAME_LABEL]: 'ext' },
  addressType: 'IPv4',
  endpoints: [{ addresses: ['192.168.10.200'], conditions: { ready: true } }, { addresses: ['10.9.0.1'], conditions: { ready: false } }, { addresses: ['10.9.0.2'] }],
  ports: [{ port: 8080, protocol: 'TCP' }],
  ...over,
});

test('validateEndpointSlice() takes the discovery.k8s.io/v1 shape and names the wrong field', () => {
  const s = validateEndpointSlice(slice({ ports: [{ port: 53, protocol: 'UDP', name: 'dns' }, { port: 8080 }] }));
  assert.deepEqual(s.ports, [{ port: 53, protocol: 'UDP', name: 'dns' }, { port: 8080, protocol: 'TCP' }]);
  const cases: [Record<string, unknown>, RegExp][] = [
    [slice({ labels: {} }), /"shop\/ext-1": labels: "kubernetes.io\/service-name" must name the service/],
    [slice({ addressType: 'IPv6' }), /addressType "IPv6" is not supported/],
    [slice({ endpoints: [{ addresses: ['fd00::1'] }] }), /endpoints\[0\]\.addresses: expected at least one IPv4 address/],
    [slice({ endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: 'yes' } }] }), /endpoints\[0\]\.conditions\.ready: expected true or false/],
    [slice({ ports: [{ port: 0 }] }), /ports\[0\]\.port 0 is not a port number/],
    [slice({ selector: {} }), /unknown field "selector"/],
  ];
  for (const [input, re] of cases) assert.throws(() => validateEndpointSlice(input), (err: Error & { code?: string }) => err.code === 'TENDRIL_ERR_ENDPOINT_SLICE_INVALID' && re.test(err.message), String(re));
});

test('sliceBackends(): ready (or unset) addresses of the service\'s slices in its namespace, at the slice port of the same name and protocol', () => {
  const slices = [
    validateEndpointSlice(slice()),
    validateEndpointSlice(slice({ name: 'ext-2', endpoints: [{ addresses: ['192.168.10.200', '192.168.10.201'] }] })),
    validateEndpointSlice(slice({ name: 'other', labels: { [SLICE_SERVICE_NAME_LABEL]: 'other' } })),
    validateEndpointSlice(slice({ name: 'ext-x', namespace: 'else' })),
    validateEndpointSlice(slice({ name: 'ext-udp', ports: [{ port: 9999, protocol: 'UDP' }] })),
  ];
  const got = sliceBackends({ namespace: 'shop', name: 'ext' }, { port: 80, targetPort: 8080, protocol: 'TCP' }, slices);
  assert.deepEqual(got.map((b) => `${b.ip}:${b.port}`), ['10.9.0.2:8080', '192.168.10.200:8080', '192.168.10.201:8080']);
  assert.deepEqual(sliceBackends({ namespace: 'shop', name: 'ext' }, { name: 'web', port: 80, targetPort: 8080, protocol: 'TCP' }, slices), [], 'a named service port needs a slice port of that name');
});

test('frontendsOf(): a service without a selector takes its slices\' backends; one with a selector ignores slices', () => {
  const slices = [validateEndpointSlice(slice({ endpoints: [{ addresses: ['192.168.10.200'] }] }))];
  const bare = validateService({ namespace: 'shop', name: 'ext', clusterIP: '10.96.0.20', ports: [{ port: 80, targetPort: 8080 }] });
  assert.deepEqual(frontendsOf([bare], [], 'a', () => [], slices).map((f) => f.backends), [[{ ip: '192.168.10.200', port: 8080 }]]);
  const selected = { ...bare, selector: { app: 'web' } };
  assert.deepEqual(frontendsOf([selected], [], 'a', () => [], slices).map((f) => f.backends), [[]]);
});
