// Unit tests of the host-side interface name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostIfName } from './names.js';

test('hostIfName() is "lxc" + 12 hex of sha256("<containerId>:<ifname>")', () => {
  // printf 'abc123:eth0' | sha256sum -> c69fce2d24302fe50f43...
  assert.equal(hostIfName('abc123', 'eth0'), 'lxcc69fce2d2430');
});

test('hostIfName() fits IFNAMSIZ and differs per interface of one container', () => {
  const a = hostIfName('3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755', 'eth0');
  const b = hostIfName('3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755', 'net1');
  assert.equal(a.length, 15);
  assert.notEqual(a, b);
});
