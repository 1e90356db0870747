// Unit tests of the ADD result and its conversion to each supported spec version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SUPPORTED_VERSIONS } from './errors.js';
import { formatResult, parseResult, podResult } from './result.js';

const POD = podResult({
  hostIfName: 'lxcc69fce2d2430',
  hostMac: '02:00:00:00:00:01',
  podIfName: 'eth0',
  podMac: '02:00:00:00:00:02',
  netnsPath: '/var/run/netns/pod1',
  ip: '10.0.1.7',
  routerIP: '10.0.1.1',
  mtu: 1450,
});

test('formatResult() 1.1.0: host and pod interfaces, /32 with the router as gateway, default route, pod mtu', () => {
  assert.deepEqual(formatResult(POD, '1.1.0'), {
    cniVersion: '1.1.0',
    interfaces: [
      { name: 'lxcc69fce2d2430', mac: '02:00:00:00:00:01' },
      { name: 'eth0', mac: '02:00:00:00:00:02', sandbox: '/var/run/netns/pod1', mtu: 1450 },
    ],
    ips: [{ address: '10.0.1.7/32', gateway: '10.0.1.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.0.1.1' }],
    dns: {},
  });
});

test('formatResult() 1.0.0 has no interface mtu and no ips version', () => {
  const r = formatResult(POD, '1.0.0');
  assert.equal(r['cniVersion'], '1.0.0');
  assert.deepEqual(r['interfaces'], [
    { name: 'lxcc69fce2d2430', mac: '02:00:00:00:00:01' },
    { name: 'eth0', mac: '02:00:00:00:00:02', sandbox: '/var/run/netns/pod1' },
  ]);
  assert.deepEqual(r['ips'], [{ address: '10.0.1.7/32', gateway: '10.0.1.1', interface: 1 }]);
});

for (const v of ['0.3.0', '0.3.1', '0.4.0'] as const) {
  test(`formatResult() ${v} carries "version": "4" in ips`, () => {
    const r = formatResult(POD, v);
    assert.equal(r['cniVersion'], v);
    assert.deepEqual(r['ips'], [{ version: '4', address: '10.0.1.7/32', gateway: '10.0.1.1', interface: 1 }]);
    assert.deepEqual(r['routes'], [{ dst: '0.0.0.0/0', gw: '10.0.1.1' }]);
  });
}

test('parseResult() reads back what formatResult() wrote, for every version', () => {
  for (const v of SUPPORTED_VERSIONS) {
    const back = parseResult(JSON.parse(JSON.stringify(formatResult(POD, v))) as Record<string, unknown>);
    assert.deepEqual(back.ips, POD.ips, v);
    assert.deepEqual(back.routes, POD.routes, v);
    assert.equal(back.interfaces[1]?.sandbox, '/var/run/netns/pod1', v);
  }
});

test('parseResult() rejects a malformed prevResult with code 7', () => {
  assert.throws(() => parseResult({ ips: [{ gateway: '10.0.0.1' }] }), { code: 7, message: /"prevResult" ips\[0\] needs a string "address"/ });
  assert.throws(() => parseResult({ interfaces: {} }), { code: 7, message: /"interfaces" must be an array/ });
});
