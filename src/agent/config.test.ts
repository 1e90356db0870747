// agentConfig()'s store call timeout: the default follows the store (etcd answers fast, an apiserver less so), the
// flag overrides it, and a malformed value is refused naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentConfig } from './config.js';

test('agentConfig(): --store-call-timeout defaults to 1500 ms with a store, 5 s in Kubernetes mode, and is validated', () => {
  assert.equal(agentConfig({ nodeName: 'n1', store: 'local+unix:///nonexistent.sock' }).storeCallTimeoutMs, 1500);
  assert.equal(agentConfig({ nodeName: 'n1', k8sKubeconfig: '/nonexistent/kubeconfig' }).storeCallTimeoutMs, 5000);
  assert.equal(agentConfig({ nodeName: 'n1', store: 'local+unix:///nonexistent.sock', storeCallTimeout: '3s' }).storeCallTimeoutMs, 3000);
  assert.throws(
    () => agentConfig({ nodeName: 'n1', store: 'local+unix:///nonexistent.sock', storeCallTimeout: 'never' }),
    (err: Error & { code?: string }) => err.code === 'TENDRIL_ERR_INVALID_REQUEST' && /^Invalid --store-call-timeout "never"/.test(err.message),
  );
});
