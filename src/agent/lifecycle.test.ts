// Unit test (no privileges): an agent waiting for a cluster store that refuses every connection (no pod CIDR, so
// no datapath) retries in the background, answers its health API at once from local state, and stop() cancels
// every retry timer. The store resets connections at once, so no call is ever in flight: what timers remain after
// stop() are retries.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Agent } from './agent.js';
import { agentConfig } from './config.js';
import { HealthClient, observerSocketFor, type HealthAnswer } from '../observe/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-life-`));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

function get(socket: string, p: string): Promise<{ status: number; body: unknown; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: socket, path: p }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), ms: performance.now() - t0 }));
      })
      .on('error', reject);
  });
}

async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('an agent without its store answers health from local state, retries, and stop() leaves no timer behind', async () => {
  const storeSocket = path.join(tmp, 'no-store.sock');
  const refusing = net.createServer((c) => c.destroy());
  await new Promise<void>((r) => refusing.listen(storeSocket, r));
  const base = timers();
  const socket = path.join(tmp, 'agent.sock');
  const cfg = agentConfig({ nodeName: 'n1', store: `local+unix://${storeSocket}`, socket, stateDir: path.join(tmp, 'state'), cniConfDir: path.join(tmp, 'net.d') });
  const agent = new Agent(cfg, pino({ level: 'silent' }));
  await agent.start();
  let stopped = false;
  try {
    await until('the agent sees the store away', async () => {
      const r = await get(socket, '/v1/healthz');
      const b = r.body as { ready: boolean; store: { ok: boolean; error: string | null } };
      return r.status === 200 && b.ready === false && b.store.ok === false && /no-store\.sock/.test(b.store.error ?? '');
    });
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) samples.push((await get(socket, '/v1/healthz')).ms);
    samples.sort((a, b) => a - b);
    assert.ok(samples[5]! < 100, `healthz median ${samples[5]} ms without a store`);
    // The flow server is up with the API, and its health service says the node does not serve yet.
    const health = new HealthClient(observerSocketFor(socket));
    const seen: HealthAnswer[] = [];
    const watch = health.watch('hubble.server.Observer', (st) => seen.push(st));
    try {
      assert.equal(await health.check(), 'NOT_SERVING');
      assert.equal(await health.check(''), 'NOT_SERVING');
      const hz = (await get(socket, '/v1/healthz')).body as { hubble: { serving: boolean } | null };
      assert.equal(hz.hubble?.serving, false);
      await until('the watch hears the current status', () => seen.length === 1);
    } finally {
      watch.cancel();
      health.close();
    }
    await until('retry timers armed', () => timers() > base);
    await agent.stop();
    stopped = true;
    const left = timers() - base;
    assert.ok(left <= 0, `${left} timers left right after stop()`);
  } finally {
    if (!stopped) await agent.stop();
    await new Promise<void>((r) => refusing.close(() => r()));
  }
});
