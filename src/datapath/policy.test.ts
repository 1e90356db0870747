// Unit tests of policy entry encoding and the diff setEndpointPolicy() applies (no kernel).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DatapathError } from './errors.js';
import { diffPolicy, entryFromMap, entryKeyId, normalizeEntry, policyKey, policyValue, type PolicyMapEntry } from './policy.js';

const e = (o: Partial<PolicyMapEntry> = {}): PolicyMapEntry => ({ direction: 'ingress', identity: 1001, protocol: 6, port: 80, portPrefixLen: 16, deny: false, ...o });

test('policyKey() makes prefixlen 56 (any protocol), 64 (protocol only) or 64 + port bits', () => {
  assert.equal(policyKey(7, e({ protocol: 0, portPrefixLen: 0 })).prefixlen, 56);
  assert.equal(policyKey(7, e({ port: 0, portPrefixLen: 0 })).prefixlen, 64);
  assert.equal(policyKey(7, e()).prefixlen, 80);
  assert.deepEqual(policyKey(7, e({ direction: 'egress', port: 8080, portPrefixLen: 13 })), {
    prefixlen: 77, secLabel: 1001, epId: 7, egress: 1, protocol: 6, dport: 8080, pad: 0,
  });
  assert.deepEqual([policyValue(e()).l4PrefixLen, policyValue(e({ protocol: 0, portPrefixLen: 0 })).l4PrefixLen, policyValue(e({ deny: true })).deny], [24, 0, 1]);
});

test('normalizeEntry() clears port bits outside the prefix and refuses what the key cannot hold', () => {
  assert.equal(normalizeEntry(1, e({ port: 8087, portPrefixLen: 13 })).port, 8080);
  assert.equal(normalizeEntry(1, e({ protocol: 0, port: 53, portPrefixLen: 0 })).port, 0);
  for (const bad of [e({ portPrefixLen: 17 }), e({ protocol: 256 }), e({ port: 65536 }), e({ identity: -1 }), e({ protocol: 0, portPrefixLen: 8 })]) {
    assert.throws(() => normalizeEntry(1, bad), (err: unknown) => err instanceof DatapathError && err.code === 'TENDRIL_ERR_DATAPATH_CONFIG');
  }
});

test('entryFromMap() inverts policyKey()/policyValue()', () => {
  for (const x of [e(), e({ protocol: 0, port: 0, portPrefixLen: 0, deny: true }), e({ port: 8080, portPrefixLen: 13, direction: 'egress' }), e({ protocol: 17, port: 0, portPrefixLen: 0 })]) {
    assert.deepEqual(entryFromMap(policyKey(3, x), policyValue(x)), x);
  }
});

test('diffPolicy() adds, changes (deny flipped) and removes by key; duplicates merge with deny winning', () => {
  const cur = new Map([e(), e({ identity: 2 }), e({ identity: 3 })].map((x) => [entryKeyId(x), x]));
  const d = diffPolicy(1, cur, [e(), e({ identity: 2, deny: true }), e({ identity: 4 }), e({ identity: 4, deny: true })]);
  assert.deepEqual(d.add, [e({ identity: 4, deny: true })]);
  assert.deepEqual(d.change, [e({ identity: 2, deny: true })]);
  assert.deepEqual(d.remove, [e({ identity: 3 })]);
  assert.equal(d.next.size, 3);
  const same = diffPolicy(1, d.next, [...d.next.values()]);
  assert.deepEqual([same.add.length, same.change.length, same.remove.length], [0, 0, 0]);
});
