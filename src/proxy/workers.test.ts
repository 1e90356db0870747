import { test } from 'node:test';
import assert from 'node:assert/strict';
import { proxyWorkers } from './workers.js';
import { extraProxyFlags } from './supervisor.js';

test('proxyWorkers: one loop unless TENDRIL_PROXY_WORKERS asks for more, never more than the CPUs', () => {
  assert.equal(proxyWorkers({}, 8), 1);
  assert.equal(proxyWorkers({ TENDRIL_PROXY_WORKERS: '2' }, 8), 2);
  assert.equal(proxyWorkers({ TENDRIL_PROXY_WORKERS: '6' }, 2), 2);
  assert.equal(proxyWorkers({ TENDRIL_PROXY_WORKERS: '0' }, 4), 1);
  assert.equal(proxyWorkers({ TENDRIL_PROXY_WORKERS: 'x' }, 4), 1);
  assert.equal(proxyWorkers({ TENDRIL_PROXY_WORKERS: '1.5' }, 4), 1);
});

test('extraProxyFlags: space-separated flags from TENDRIL_PROXY_NODE_FLAGS', () => {
  assert.deepEqual(extraProxyFlags({}), []);
  assert.deepEqual(extraProxyFlags({ TENDRIL_PROXY_NODE_FLAGS: '  --cpu-prof   --cpu-prof-dir=/tmp/x ' }), ['--cpu-prof', '--cpu-prof-dir=/tmp/x']);
});
