// `tendril policy get -o table`: clusterwide policies are marked, columns stay aligned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPolicyTable } from './policy-cmd.js';

test('a clusterwide policy shows <clusterwide> as its namespace, aligned with namespaced ones', () => {
  const text = formatPolicyTable([
    { namespace: 'default', name: 'allow-web', kind: 'NetworkPolicy', source: 'cluster' },
    { namespace: '', name: 'deny-all', kind: 'TendrilClusterwideNetworkPolicy', source: 'local' },
  ]);
  assert.deepEqual(text.split('\n'), [
    'NAMESPACE       NAME        KIND                              SOURCE',
    'default         allow-web   NetworkPolicy                     cluster',
    '<clusterwide>   deny-all    TendrilClusterwideNetworkPolicy   local',
    '',
  ]);
});
