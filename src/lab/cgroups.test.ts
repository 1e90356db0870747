// Unit tests of how lab processes are started in their namespace's cgroup (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupOfNetns, inNetnsArgv } from './cgroups.js';

test('a namespace without a registered cgroup runs its command with plain nsenter', () => {
  const ns = `tdl-unit-${process.pid}-none`;
  assert.equal(cgroupOfNetns(ns), undefined);
  assert.deepEqual(inNetnsArgv('/var/run/netns/x', ns, ['curl', '-s', 'a b']), ['nsenter', ['--net=/var/run/netns/x', '--', 'curl', '-s', 'a b']]);
});
