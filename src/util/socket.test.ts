// claimSocketPath: a live server's socket is never taken, a dead one's is, and a non-socket is left alone.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ApiServer } from './api.js';
import { ApiClient } from './api-client.js';
import { SocketClaimError, claimSocketPath, socketAnswers } from './socket.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-sock-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const log = pino({ level: 'silent' });

test('a second server refuses a live server\'s socket, and the first keeps serving', async () => {
  const socket = path.join(dir, 'live.sock');
  const first = new ApiServer(log).route('GET', '/v1/who', () => ({ who: 'first' }));
  await first.listen(socket);
  try {
    const second = new ApiServer(log).route('GET', '/v1/who', () => ({ who: 'second' }));
    await assert.rejects(second.listen(socket), (err: unknown) => err instanceof SocketClaimError && err.code === 'TENDRIL_ERR_SOCKET_IN_USE' && err.problem === 'in-use' && /another server is listening there/.test(err.message));
    assert.deepEqual(await new ApiClient(socket).get('/v1/who'), { who: 'first' });
  } finally {
    await first.close();
  }
});

test('the socket of a server killed with SIGKILL is stale and is claimed', async () => {
  const socket = path.join(dir, 'stale.sock');
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(socket)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  assert.ok(fs.lstatSync(socket).isSocket(), 'the dead server left its socket file');
  assert.equal(await socketAnswers(socket), false);
  const server = new ApiServer(log).route('GET', '/v1/who', () => ({ who: 'new' }));
  await server.listen(socket);
  try {
    assert.deepEqual(await new ApiClient(socket).get('/v1/who'), { who: 'new' });
  } finally {
    await server.close();
  }
});

test('a path that is no socket is refused and kept', async () => {
  const file = path.join(dir, 'plain');
  fs.writeFileSync(file, 'data');
  await assert.rejects(claimSocketPath(file), (err: unknown) => err instanceof SocketClaimError && err.problem === 'not-a-socket');
  assert.equal(fs.readFileSync(file, 'utf8'), 'data');
});

test('a missing directory is created root-only', async () => {
  const socket = path.join(dir, 'sub', 'x.sock');
  await claimSocketPath(socket);
  assert.equal(fs.statSync(path.dirname(socket)).mode & 0o777, 0o700);
});
