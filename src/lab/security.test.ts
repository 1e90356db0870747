// Unit tests of the lab's label and port syntax (kubectl's KEY=VALUE / KEY-, NAME=PORT/PROTO).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLabelChanges } from './security.js';
import { parseNamedPorts } from '../cli/lab-cmd.js';

test('parseLabelChanges(): KEY=VALUE sets (empty value allowed), KEY- removes, anything else is an error', () => {
  assert.deepEqual(parseLabelChanges(['app=web', 'tier-', 'empty=']), { app: 'web', tier: null, empty: '' });
  assert.throws(() => parseLabelChanges(['novalue']), /Invalid label change "novalue": expected KEY=VALUE to set or KEY- to remove/);
  assert.throws(() => parseLabelChanges([]), /No label change given/);
});

test('parseNamedPorts(): NAME=PORT[/PROTO], TCP by default, Kubernetes port-name rules', () => {
  assert.deepEqual(parseNamedPorts(['http=80', 'dns=53/udp', 'sctp-x=9/SCTP']), [
    { name: 'http', port: 80, protocol: 'TCP' },
    { name: 'dns', port: 53, protocol: 'UDP' },
    { name: 'sctp-x', port: 9, protocol: 'SCTP' },
  ]);
  for (const bad of ['http', 'http=0', 'http=70000', 'http=80/ICMP', '80=80', 'a-very-long-port-name=1', '-x=1']) {
    assert.throws(() => parseNamedPorts([bad]), /Invalid --port/, bad);
  }
});
