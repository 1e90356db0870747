// Tests of the bench's native tools: cnirun against a fake plugin, rr inside a private network namespace.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/lab/paths.js';

const TOOLS = path.join(REPO_ROOT, 'build/bench');
let dir = '';

before(() => {
  const m = spawnSync('make', ['-s', '-C', path.join(REPO_ROOT, 'bench')], { encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tdlb-tools-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('cnirun passes CNI env + stdin like a runtime, runs CONC at once and times each exec', () => {
  const plugin = path.join(dir, 'fake-plugin');
  // Prints what it was given, then takes 100 ms; pod 2 fails with exit 7.
  fs.writeFileSync(
    plugin,
    '#!/bin/sh\nprintf "%s|%s|%s|%s|%s|%s|" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"\ncat\nsleep 0.1\n[ "$CNI_CONTAINERID" = c2 ] && exit 7\nexit 0\n',
    { mode: 0o755 },
  );
  const jobs = Array.from({ length: 8 }, (_, i) => {
    fs.writeFileSync(path.join(dir, `${i}.in`), `{"pod":${i}}`);
    return [`c${i}`, `/var/run/netns/p${i}`, path.join(dir, `${i}.in`), path.join(dir, `${i}.out`), i === 0 ? '' : `K8S_POD_NAME=p${i}`].join('\t');
  });
  fs.writeFileSync(path.join(dir, 'jobs'), jobs.join('\n') + '\n');
  const t0 = performance.now();
  const r = spawnSync(path.join(TOOLS, 'cnirun'), ['-m', 'ADD', '-x', plugin, '-c', '4', '-e', 'PATH=/usr/bin:/bin', '-e', 'CNI_PATH=/opt/x', path.join(dir, 'jobs')], {
    encoding: 'utf8',
  });
  const wall = performance.now() - t0;
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => l.split('\t').map(Number));
  assert.equal(lines.length, 8);
  assert.deepEqual(lines.map((l) => l[0]).sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  for (const [idx, us, code] of lines) {
    assert.equal(code, idx === 2 ? 7 : 0, `exit status of job ${idx}`);
    assert.ok(us! >= 100_000 && us! < 1_000_000, `job ${idx} took ${us} µs`);
  }
  // 8 jobs of 100 ms at concurrency 4: two waves, not eight.
  assert.ok(wall < 700, `wall ${wall} ms`);
  assert.equal(fs.readFileSync(path.join(dir, '0.out'), 'utf8'), 'ADD|c0|/var/run/netns/p0|eth0||/opt/x|{"pod":0}');
  assert.equal(fs.readFileSync(path.join(dir, '3.out'), 'utf8'), 'ADD|c3|/var/run/netns/p3|eth0|K8S_POD_NAME=p3|/opt/x|{"pod":3}');
});

test('cnirun rejects a bad job file and missing arguments', () => {
  fs.writeFileSync(path.join(dir, 'bad'), 'only\ttwo\n');
  const bad = spawnSync(path.join(TOOLS, 'cnirun'), ['-m', 'ADD', '-x', '/bin/true', path.join(dir, 'bad')], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /needs at least 4 tab-separated fields/);
  assert.equal(spawnSync(path.join(TOOLS, 'cnirun'), ['-m', 'ADD'], { encoding: 'utf8' }).status, 2);
});

test('rr measures request/response over loopback of a private network namespace', () => {
  // unshare -rn: a fresh user + network namespace with only lo (down), so nothing touches the host's network.
  const script = `ip link set lo up && { ${TOOLS}/rr -s -1 -p 5599 -T 20 & } && ${TOOLS}/rr -c 127.0.0.1 -p 5599 -t 1 && wait`;
  const r = spawnSync('unshare', ['-rn', 'sh', '-c', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, number>;
  for (const k of ['transactions', 'seconds', 'tps', 'mean_us', 'p50_us', 'p90_us', 'p99_us', 'max_us']) assert.equal(typeof j[k], 'number', k);
  assert.ok(j['transactions']! > 100, `transactions ${j['transactions']}`);
  assert.ok(j['p50_us']! <= j['p90_us']! && j['p90_us']! <= j['p99_us']! && j['p99_us']! <= j['max_us']! + 0.1);
  // "seconds" is printed with 3 decimals: at ~50 k/s its rounding alone moves transactions/seconds by up to ~25.
  const derived = j['transactions']! / j['seconds']!;
  assert.ok(Math.abs(j['tps']! - derived) <= Math.max(1, derived * 1e-3), `tps ${j['tps']} vs ${derived}`);
});

test('rr client fails clearly when nothing listens', () => {
  const r = spawnSync('unshare', ['-rn', 'sh', '-c', `ip link set lo up && ${TOOLS}/rr -c 127.0.0.1 -p 5598 -t 1`], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot connect to 127\.0\.0\.1:5598: Connection refused/);
});

test('rr -C opens one connection per transaction, -r paces them, -w serves several clients at once', () => {
  // A client holding one connection and a paced connect-per-transaction client against a 2-worker server (one
  // worker would serve only the first), then the client side's TIME_WAIT sockets: one per -C connection.
  const script =
    `set -e; ip link set lo up; sysctl -qw net.ipv4.tcp_tw_reuse=1; ${TOOLS}/rr -s -w 2 -p 5597 -T 20 & S=$!; ` +
    `${TOOLS}/rr -c 127.0.0.1 -p 5597 -t 1 > a.json & A=$!; ${TOOLS}/rr -c 127.0.0.1 -p 5597 -t 1 -C -r 200 > b.json; wait $A; ` +
    `cat a.json b.json; ss -Htan state time-wait | wc -l; ${TOOLS}/rr -c 127.0.0.1 -p 5597 -t 1 -C; kill $S`;
  const r = spawnSync('unshare', ['-rn', 'sh', '-c', script], { encoding: 'utf8', timeout: 30_000, cwd: dir });
  assert.equal(r.status, 0, r.stderr);
  const [a, b, tw, free] = r.stdout.trim().split('\n').map((l) => (l.startsWith('{') ? (JSON.parse(l) as Record<string, number>) : Number(l)));
  assert.ok(typeof a === 'object' && a['transactions']! > 100, `persistent client alongside: ${JSON.stringify(a)}`);
  // 200/s for 1 s on a fixed schedule: 200 starts, none after the end.
  assert.ok(typeof b === 'object' && b['transactions']! >= 190 && b['transactions']! <= 200, `paced: ${JSON.stringify(b)}`);
  assert.ok(typeof tw === 'number' && tw >= b['transactions']!, `TIME_WAIT sockets ${tw}: every transaction had its own connection`);
  assert.ok(typeof free === 'object' && free['tps']! > 1000, `unpaced connect-per-transaction: ${JSON.stringify(free)}`);
});

test('rr rejects -w with -1 and a negative rate', () => {
  assert.equal(spawnSync(path.join(TOOLS, 'rr'), ['-s', '-1', '-w', '2'], { encoding: 'utf8' }).status, 2);
  assert.equal(spawnSync(path.join(TOOLS, 'rr'), ['-c', '127.0.0.1', '-r', '-5'], { encoding: 'utf8' }).status, 2);
});
