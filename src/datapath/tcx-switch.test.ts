// Unit: threadsIn() decides whether the tcx attach may run on a libuv thread (every thread in the switcher's netns).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Netns } from '../kernel/netns/index.js';
import { threadsIn } from './tcx-switch.js';

/** A fake /proc/self/task: one directory per thread whose ns/net is a hard link to `target` or a file of its own. */
function tasks(dir: string, target: string, own: number[]): string {
  const t = path.join(dir, 'task');
  for (const tid of [1, 2, 3]) {
    fs.mkdirSync(path.join(t, String(tid), 'ns'), { recursive: true });
    const net = path.join(t, String(tid), 'ns', 'net');
    if (own.includes(tid)) fs.writeFileSync(net, 'other namespace');
    else fs.linkSync(target, net);
  }
  return t;
}

test('threadsIn() is true only when every thread\'s ns/net is the namespace itself', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcx-switch-'));
  try {
    const target = path.join(dir, 'ns-file');
    fs.writeFileSync(target, 'the namespace');
    const fd = fs.openSync(target, 'r');
    const ns = { fd } as unknown as Netns;
    try {
      assert.equal(threadsIn(ns, tasks(path.join(dir, 'all'), target, [])), true);
      assert.equal(threadsIn(ns, tasks(path.join(dir, 'one-elsewhere'), target, [2])), false);
      assert.equal(threadsIn(ns, path.join(dir, 'no-such-dir')), false, 'unreadable: the attach stays on the main thread');
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(threadsIn({ fd: 1_000_000 } as unknown as Netns, path.join(dir, 'all', 'task')), false, 'a closed handle');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
