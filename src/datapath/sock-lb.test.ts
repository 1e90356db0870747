// Unit tests of the socket LB's guards (no privileges: statfs only).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { SockLb } from './sock-lb.js';
import { isCgroup2, isCgroupRoot } from '../kernel/bpf/index.js';

const base = { objDir: '/nonexistent', bpfRoot: '/nonexistent', nodeIP: '192.168.10.100' };

test('a directory that is no cgroup v2 is refused, with a coded error', () => {
  assert.throws(() => new SockLb({ ...base, cgroup: '/tmp' }), (e: Error & { code?: string }) => e.code === 'TENDRIL_ERR_DATAPATH_CONFIG' && /not a cgroup v2 directory/.test(e.message));
});

test('the root of the cgroup v2 hierarchy is refused (never the machine\'s root cgroup)', (t) => {
  const root = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => fs.existsSync(d) && isCgroup2(d));
  if (!root) {
    assert.fail('no cgroup v2 hierarchy on this machine: the guard cannot be tested');
  }
  t.diagnostic(`cgroup2 root: ${root}`);
  assert.equal(isCgroupRoot(root), true);
  assert.throws(() => new SockLb({ ...base, cgroup: root }), (e: Error & { code?: string }) => e.code === 'TENDRIL_ERR_DATAPATH_CONFIG' && /root of its cgroup hierarchy/.test(e.message));
});
