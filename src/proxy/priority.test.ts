// The proxy's priority setter on a real process: every thread of it takes the nice value (a lower priority needs
// no privilege, so the unit test lowers it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { setProcessNice } from './priority.js';

/** The nice value of each thread of pid (field 19 of /proc/PID/task/TID/stat). */
function nices(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

test('setProcessNice sets every thread of a process, not only its main thread', async () => {
  // A Node process has several threads (V8 platform workers) from its start.
  const child = spawn(process.execPath, ['-e', 'process.stdout.write("up"); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('error', reject);
    });
    const before = nices(child.pid!);
    assert.ok(before.length > 1, `expected several threads, got ${before.length}`);
    const set = setProcessNice(child.pid!, 7);
    assert.equal(set, before.length);
    assert.deepEqual(nices(child.pid!), before.map(() => 7));
  } finally {
    child.kill();
  }
});

test('setProcessNice throws for a process that does not exist', () => {
  assert.throws(() => setProcessNice(2 ** 22 + 1, 5), /ESRCH|no such process/i);
});
