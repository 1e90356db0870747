// egressPolicyYaml() writes policies parseEgressPolicy() accepts, with one gateway node or several.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import { parseEgressPolicy } from '../egress/index.js';
import { egressPolicyYaml } from './egress-fixtures.js';

test('egressPolicyYaml(): one gateway by matchLabels, several by matchExpressions In; excluded CIDRs only when given', () => {
  const one = parseEgressPolicy(parse(egressPolicyYaml({ name: 'a', app: 'egress', destinations: ['192.168.10.200/32', '10.0.0.0/16'], excluded: ['10.0.2.0/24'], gateways: ['w2'] })));
  assert.equal(one.name, 'a');
  assert.deepEqual(one.destinationCIDRs, ['192.168.10.200/32', '10.0.0.0/16']);
  assert.deepEqual(one.excludedCIDRs, ['10.0.2.0/24']);
  assert.deepEqual(one.egressGateway.nodeSelector, { matchLabels: { 'kubernetes.io/hostname': 'w2' } });
  assert.deepEqual(one.selectors[0]?.podSelector, { matchLabels: { app: 'egress' } });
  const two = parseEgressPolicy(parse(egressPolicyYaml({ name: 'b', app: 'x', destinations: ['192.168.10.200/32'], gateways: ['w1', 'w2'] })));
  assert.deepEqual(two.egressGateway.nodeSelector, { matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['w1', 'w2'] }] });
  assert.deepEqual(two.excludedCIDRs ?? [], []);
});
