import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Flow } from './model.js';
import { formatL7Monitor, l7MonitorEvent, l7MonitorMatches } from './monitor-l7.js';

const client = { ID: 12, identity: 300, labels: ['k8s:role=client'] };
const server = { ID: 34, identity: 301, labels: ['k8s:app=web', 'k8s:io.kubernetes.pod.namespace=default'] };
const request = { verdict: 'FORWARDED', Type: 'L7', traffic_direction: 'INGRESS', source: client, destination: server, l7: { type: 'REQUEST', http: { method: 'GET', url: 'http://10.0.2.7/public', code: 0 } } } as unknown as Flow;
const response = { ...request, verdict: 'DROPPED', traffic_direction: 'EGRESS', source: server, destination: client, l7: { type: 'RESPONSE', http: { method: 'GET', url: 'http://10.0.2.7/private', code: 403 } } } as unknown as Flow;

test('access-log lines as cilium-dbg monitor prints LogRecordNotify: the client first, its identity first', () => {
  assert.equal(formatL7Monitor(l7MonitorEvent(request)), '-> Request http from 12 ([k8s:role=client]) to 34 ([k8s:app=web k8s:io.kubernetes.pod.namespace=default]), identity 300->301, verdict Forwarded GET http://10.0.2.7/public => 0\n');
  assert.equal(formatL7Monitor(l7MonitorEvent(response)), '<- Response http to 12 ([k8s:role=client]) from 34 ([k8s:app=web k8s:io.kubernetes.pod.namespace=default]), identity 300->301, verdict Denied GET http://10.0.2.7/private => 403\n');
  // Through JSON, as the monitor stream carries it.
  assert.equal(formatL7Monitor(JSON.parse(JSON.stringify(l7MonitorEvent(request, 'n1')))), formatL7Monitor(l7MonitorEvent(request)));
});

test('monitor filters: --type, --from, --to, --related-to on endpoint IDs', () => {
  const m = l7MonitorEvent(request);
  assert.equal(l7MonitorMatches(m, {}), true);
  assert.equal(l7MonitorMatches(m, { types: ['l7'] }), true);
  assert.equal(l7MonitorMatches(m, { types: ['trace', 'drop'] }), false);
  assert.equal(l7MonitorMatches(m, { from: [12] }), true);
  assert.equal(l7MonitorMatches(m, { from: [34] }), false);
  assert.equal(l7MonitorMatches(m, { to: [34] }), true);
  assert.equal(l7MonitorMatches(m, { relatedTo: [34] }), true);
  assert.equal(l7MonitorMatches(m, { relatedTo: [99] }), false);
});

test('a datapath event is not rendered as an access-log line', () => {
  assert.equal(formatL7Monitor({ ...l7MonitorEvent(request), type: 'trace' }), undefined);
});
