// The proxy's diagnostic trace through the real engine on loopback: off without TENDRIL_PROXY_TRACE; with it, each
// request's judged and answered times under its x-seq id, and the GC pauses of the process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { HttpMatcher } from '../policy/index.js';
import { HttpFastEngine } from './fast-engine.js';
import { traceFromEnv, type TraceEvent } from './trace.js';

test('no trace unless TENDRIL_PROXY_TRACE names a file', () => {
  assert.equal(traceFromEnv({}), undefined);
});

test('the trace records each request judged and answered, keyed by x-seq, and GC pauses', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-trace-'));
  const file = path.join(dir, 'proxy.trace');
  const upstream = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as net.AddressInfo).port;
  const trace = traceFromEnv({ TENDRIL_PROXY_TRACE: file })!;
  const rules = new HttpMatcher([{ method: 'GET', path: '/public', host: null, headers: [] }]);
  const engine = new HttpFastEngine({ policyFor: () => ({ matchers: [rules], srcIdentity: 1, dstIdentity: 2, connect: () => net.connect(upPort, '127.0.0.1') }), trace });
  const front = net.createServer((s) => engine.handle(s));
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const port = (front.address() as net.AddressInfo).port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (const seq of ['7', '8']) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/public', agent, headers: { 'x-seq': seq } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
      assert.equal(status, 200);
    }
    (globalThis as { gc?: () => void }).gc?.();
    // Garbage for at least one scavenge, observed as a GC pause.
    let keep = 0;
    for (let i = 0; i < 200_000; i++) keep += [i, String(i)].length;
    assert.ok(keep > 0);
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    agent.destroy();
    engine.close();
    trace.stop();
    front.close();
    upstream.close();
  }
  const events = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as TraceEvent);
  fs.rmSync(dir, { recursive: true, force: true });
  for (const seq of ['7', '8']) {
    const req = events.find((e) => e[0] === 'req' && e[1] === seq);
    const resp = events.find((e) => e[0] === 'resp' && e[1] === seq);
    assert.ok(req && resp, `request ${seq} judged and answered in the trace`);
    assert.ok((resp[2] as number) > (req[2] as number), 'answered after judged');
  }
  const gc = events.filter((e) => e[0] === 'gc');
  assert.ok(gc.length > 0, 'GC pauses traced');
  assert.ok(gc.every((e) => (e[2] as number) >= 0));
});
