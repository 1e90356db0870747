// The lab CLI's argument checks: refused clearly, before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCount, parseLabels } from './lab-cmd.js';

test('--label takes KEY=VALUE (KEY= is an empty value); a bare KEY is refused, as kubectl refuses it', () => {
  assert.deepEqual(parseLabels(['app=web', 'tier=', 'x=a=b']), { app: 'web', tier: '', x: 'a=b' });
  assert.throws(() => parseLabels(['app']), { code: 'TENDRIL_ERR_LAB_INVALID', message: /Invalid label "app": expected KEY=VALUE \(KEY= for an empty value\)/ });
  assert.throws(() => parseLabels(['=v']), { code: 'TENDRIL_ERR_LAB_INVALID', message: /Invalid label "=v"/ });
});

test('--nodes is a whole number in range, never NaN', () => {
  assert.equal(parseCount('3', '--nodes', 1, 32), 3);
  for (const bad of ['abc', '', '2.5', '-1', '0', '33', '1e1', '0x2']) {
    assert.throws(() => parseCount(bad, '--nodes', 1, 32), { code: 'TENDRIL_ERR_LAB_INVALID', message: new RegExp(`Invalid --nodes "${bad.replace('.', '\\.')}": expected a whole number from 1 to 32`) }, bad);
  }
});
