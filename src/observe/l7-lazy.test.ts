// The observer keeps the node proxy's records compact and builds their Hubble flows only when read: no work per
// record beyond storing it while nobody follows, the same flows as l7Flow() once GetFlows asks (over a real socket).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ObserverClient } from './client.js';
import { l7Flow, type HttpAccessRecord } from './l7.js';
import { ObserverServer } from './server.js';
import { fakeContext } from './testing.js';

const T = Date.UTC(2025, 7, 6, 6, 50, 26, 228);
const conn = { srcIp: '172.20.2.179', srcPort: 43210, dstIp: '172.20.2.71', dstPort: 80 };
const record = (i: number, c = conn): HttpAccessRecord => ({
  time: T + i,
  type: i % 2 ? 'RESPONSE' : 'REQUEST',
  verdict: 'FORWARDED',
  direction: 'INGRESS',
  conn: c,
  srcIdentity: 47080,
  dstIdentity: 47081,
  method: 'GET',
  url: `http://server/public/${i}`,
  protocol: 'HTTP/1.1',
  code: i % 2 ? 200 : 0,
  rawHeaders: i % 2 ? ['Content-Length', '2'] : ['Host', 'server', 'Cookie', 'a=b'],
  latencyNs: i % 2 ? 1_000_000 : 0,
});

/** A context that counts what building flows costs: UUIDs made and endpoint lookups. */
function counting(): { ctx: ReturnType<typeof fakeContext>; uuids: () => number; lookups: () => number; forget: (ip: string) => void } {
  const base = fakeContext();
  let uuids = 0;
  let lookups = 0;
  const gone = new Set<string>();
  const ctx = {
    ...base,
    uuid: () => (uuids++, base.uuid!()),
    endpointByIp: (ip: string) => (lookups++, gone.has(ip) ? undefined : base.endpointByIp(ip)),
  };
  return { ctx, uuids: () => uuids, lookups: () => lookups, forget: (ip) => gone.add(ip) };
}

test('L7 records with nobody reading: stored and counted, no flow built; endpoints looked up once per connection', () => {
  const c = counting();
  const srv = new ObserverServer({ nodeName: 'n1', socketPath: '/nonexistent/unused.sock', context: c.ctx });
  const shared = { ...conn };
  for (let i = 0; i < 200; i++) srv.ingestL7(record(i, shared));
  assert.equal(c.uuids(), 0);
  assert.equal(c.lookups(), 2); // client and server side, for the one connection object
  assert.equal(srv.status().num_flows, 200);
  assert.equal(srv.status().seen_flows, 200);
});

test('a lazily built L7 flow equals l7Flow() of its record, is built once and shows the pods as they were at ingest', () => {
  const c = counting();
  const srv = new ObserverServer({ nodeName: 'n1', socketPath: '/nonexistent/unused.sock', context: c.ctx });
  const e = srv.ingestL7(record(1));
  c.forget('172.20.2.71'); // the server pod goes before anyone reads the flow
  const f = e.flow;
  assert.equal(e.flow, f);
  assert.equal(c.uuids(), 1);
  const want = l7Flow(record(1), fakeContext());
  assert.deepEqual(f, want);
  assert.equal(f.source?.pod_name, 'netshoot-pod');
  assert.deepEqual(f.l7?.http?.headers, [{ key: 'content-length', value: '2' }]);
  // Raw request headers: names lower-cased, credentials redacted, as with paired headers.
  assert.deepEqual(srv.ingestL7(record(0)).flow.l7?.http?.headers, [{ key: 'host', value: 'server' }, { key: 'cookie', value: 'HUBBLE_REDACTED' }]);
});

test('GetFlows over the socket returns the lazily kept L7 flows, filtered, in order', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-lazy-'));
  const c = counting();
  const srv = new ObserverServer({ nodeName: 'n1', socketPath: path.join(dir, 'o.sock'), context: c.ctx });
  await srv.start();
  const client = new ObserverClient(srv.socketPath);
  try {
    for (let i = 0; i < 10; i++) srv.ingestL7(record(i));
    assert.equal(c.uuids(), 0);
    const got = await client.collectFlows({ number: 100, whitelist: [{ http_status_code: ['200'] }] }, 10_000);
    const flows = got.filter((r) => r.kind === 'flow').map((r) => (r.kind === 'flow' ? r.flow : undefined)!);
    assert.deepEqual(
      flows.map((f) => f.l7?.http?.url),
      [1, 3, 5, 7, 9].map((i) => `http://server/public/${i}`),
    );
    assert.equal(flows[0]!.Summary, 'HTTP/1.1 200 1ms (GET http://server/public/1)');
  } finally {
    client.close();
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
