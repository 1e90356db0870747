// Unit tests of the socket LB's guards and pin housekeeping (no privileges: statfs and a temporary directory only).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SockLb, removeSockLbLinks, sockLinkDir } from './sock-lb.js';
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

test('removeSockLbLinks() removes the pins of an earlier run under <bpfRoot>/sock-lb and says which; nothing there is no error', () => {
  const bpfRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sock-lb-'));
  try {
    assert.deepEqual(removeSockLbLinks(bpfRoot), []);
    const dir = sockLinkDir(bpfRoot);
    assert.equal(dir, path.join(bpfRoot, 'sock-lb'));
    fs.mkdirSync(dir);
    for (const n of ['tendril_sock4_connect', 'tendril_sock4_sendmsg']) fs.writeFileSync(path.join(dir, n), '');
    assert.deepEqual(removeSockLbLinks(bpfRoot).sort(), [path.join(dir, 'tendril_sock4_connect'), path.join(dir, 'tendril_sock4_sendmsg')]);
    assert.equal(fs.existsSync(dir), false);
    assert.ok(fs.existsSync(bpfRoot), 'the node\'s other pins stay');
  } finally {
    fs.rmSync(bpfRoot, { recursive: true, force: true });
  }
});
