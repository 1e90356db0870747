import assert from 'node:assert/strict';
import { test } from 'node:test';
import { agentVerdict, operatorVerdict } from './health-cmd.js';
import type { StatusView } from '../agent/index.js';
import type { OperatorStatusView } from '../operator/api.js';

const agent = (ready: boolean) => ({ ready, endpoints: 2, tendril: { state: ready ? 'Ok' : 'Waiting', message: ready ? '' : 'node n1 has no pod CIDR yet' } }) as unknown as StatusView;
const operator = (ok: boolean, kubernetes?: { leader: boolean; holder: string }) =>
  ({ store: { ping: ok ? { ok } : { ok, error: 'connect ECONNREFUSED' } }, ...(kubernetes ? { kubernetes } : {}) }) as unknown as OperatorStatusView;

test('agent probe: alive whenever the API answers, ready only when the agent says so', () => {
  assert.equal(agentVerdict(agent(false), false).ok, true);
  assert.deepEqual(agentVerdict(agent(false), true), { ok: false, line: 'agent not ready: Waiting node n1 has no pod CIDR yet' });
  assert.equal(agentVerdict(agent(true), true).ok, true);
});

test('operator probe: ready while its store answers, standby replicas included', () => {
  assert.equal(operatorVerdict(operator(false), false).ok, true);
  assert.equal(operatorVerdict(operator(false), true).ok, false);
  assert.match(operatorVerdict(operator(false), true).line, /ECONNREFUSED/);
  assert.equal(operatorVerdict(operator(true, { leader: false, holder: 'op-a' }), true).line, 'operator ready (standby, leader op-a)');
  assert.equal(operatorVerdict(operator(true, { leader: true, holder: 'op-b' }), true).line, 'operator ready (leader)');
});
