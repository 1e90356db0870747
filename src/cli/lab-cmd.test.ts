// The lab CLI's argument checks: refused clearly, before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseCount, parseLabKubeconfig, parseLabels } from './lab-cmd.js';

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

test('lab up --k8s-kubeconfig takes a readable file (made absolute) and refuses --store etcd beside it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-labcmd-'));
  try {
    const file = path.join(dir, 'kubeconfig');
    fs.writeFileSync(file, 'apiVersion: v1\nkind: Config\n');
    assert.equal(parseLabKubeconfig(path.relative(process.cwd(), file), 'local'), file);
    assert.throws(() => parseLabKubeconfig(file, 'etcd'), { code: 'TENDRIL_ERR_LAB_INVALID', message: /^Cannot use --store etcd with --k8s-kubeconfig: in Kubernetes mode the apiserver is the cluster store/ });
    assert.throws(() => parseLabKubeconfig(path.join(dir, 'nope'), 'local'), { code: 'TENDRIL_ERR_LAB_INVALID', message: /^Invalid --k8s-kubeconfig ".*nope": no such file/ });
    assert.throws(() => parseLabKubeconfig(dir, 'local'), { code: 'TENDRIL_ERR_LAB_INVALID', message: /: not a file/ });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
