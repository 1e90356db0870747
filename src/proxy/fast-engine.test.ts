// The proxy's engine against a real upstream on loopback: verdicts, keep-alive, pipelining, bodies, 100-continue, upgrades.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { HttpMatcher } from '../policy/index.js';
import { HttpFastEngine } from './fast-engine.js';
import type { HttpFlowRecord } from './types.js';

let upstream: http.Server;
let front: net.Server;
let engine: HttpFastEngine;
let upstreamPort = 0;
let frontPort = 0;
const flows: HttpFlowRecord[] = [];
const upstreamConns = new Set<string>();

const rules = new HttpMatcher([
  { method: 'GET', path: '/public(/.*)?', host: null, headers: [] },
  { method: 'POST', path: '/upload', host: null, headers: [] },
  { method: 'GET', path: '/ws', host: null, headers: [{ name: 'x-allow-upgrade', value: null }] },
]);

function request(agent: http.Agent, method: string, path: string, body?: Buffer | string[], headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: frontPort, method, path, agent, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    if (Array.isArray(body)) for (const part of body) req.write(part); // no content-length: chunked
    else if (body !== undefined) req.write(body);
    req.end();
  });
}

// (The Node-http engine these tests also ran is gone: the fast engine passed all of them.)
for (const [name, Engine] of [['fast', HttpFastEngine]] as const) {
  describe(`engine ${name}`, () => {
    before(async () => {
      upstream = http.createServer((req, res) => {
        upstreamConns.add(`${req.socket.remotePort}`);
        let n = 0;
        req.on('data', (d: Buffer) => (n += d.length));
        req.on('end', () => {
          res.setHeader('x-upstream', 'yes');
          res.end(`${req.method} ${req.url} ${n} te=${req.headers['transfer-encoding'] ?? '-'} agent=${req.headers['user-agent'] ?? '-'}`);
        });
      });
      upstream.on('upgrade', (_req, socket: net.Socket) => {
        socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
        socket.pipe(socket);
      });
      await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
      upstreamPort = (upstream.address() as net.AddressInfo).port;
      engine = new Engine({
        policyFor: () => ({ matchers: [rules], srcIdentity: 1001, dstIdentity: 1002, connect: () => net.connect(upstreamPort, '127.0.0.1') }),
        onFlow: (r) => flows.push(r),
      });
      front = net.createServer((s) => engine.handle(s));
      await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
      frontPort = (front.address() as net.AddressInfo).port;
    });

    after(() => {
      engine.close();
      front.close();
      upstream.closeAllConnections();
      upstream.close();
    });

    test('allowed requests go upstream, denied get 403 "Access denied" on the same kept-alive connection', async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const ports = new Set<number>();
      agent.on('free', (s: net.Socket) => ports.add(s.localPort ?? 0));
      const a = await request(agent, 'GET', '/public', undefined, { 'User-Agent': 'Tester/1' });
      assert.equal(a.status, 200);
      assert.equal(a.body, 'GET /public 0 te=- agent=Tester/1');
      assert.equal(a.headers['x-upstream'], 'yes');
      const d = await request(agent, 'GET', '/private');
      assert.equal(d.status, 403);
      assert.equal(d.body, 'Access denied');
      const m = await request(agent, 'DELETE', '/public');
      assert.equal(m.status, 403, 'method rule');
      const b = await request(agent, 'GET', '/public/again');
      assert.equal(b.status, 200);
      assert.equal(ports.size, 1, 'one client connection throughout');
      agent.destroy();
      const reqs = flows.filter((f) => f.type === 'REQUEST');
      assert.deepEqual(reqs.slice(-4).map((f) => [f.method, f.verdict]), [['GET', 'FORWARDED'], ['GET', 'DROPPED'], ['DELETE', 'DROPPED'], ['GET', 'FORWARDED']]);
      const resp = flows.filter((f) => f.type === 'RESPONSE').slice(-4);
      assert.deepEqual(resp.map((f) => f.code), [200, 403, 403, 200]);
      assert.ok(resp.every((f) => f.latencyNs > 0 && f.protocol === 'HTTP/1.1' && f.srcIdentity === 1001 && f.dstIdentity === 1002));
      assert.match(reqs.at(-1)!.url, /^http:\/\/127\.0\.0\.1:\d+\/public\/again$/);
    });

    test('pipelined requests are answered in order, denied ones in their place', async () => {
      const s = net.connect(frontPort, '127.0.0.1');
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (got += d));
      s.write('GET /public/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\nGET /public/3 HTTP/1.1\r\nHost: a\r\n\r\n');
      const end = Date.now() + 10_000;
      while ((got.match(/HTTP\/1\.1 \d{3}/g) ?? []).length < 3 || !got.includes('GET /public/3')) {
        if (Date.now() > end) assert.fail(`not answered: ${got}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      s.destroy();
      const statuses = (got.match(/HTTP\/1\.1 (\d{3})/g) ?? []).map((x) => x.slice(9));
      assert.deepEqual(statuses, ['200', '403', '200']);
      assert.ok(got.indexOf('GET /public/1') < got.indexOf('Access denied') && got.indexOf('Access denied') < got.indexOf('GET /public/3'));
    });

    test('chunked and large bodies pass unchanged; Expect: 100-continue is relayed', async () => {
      const agent = new http.Agent({ keepAlive: true });
      const chunked = await request(agent, 'POST', '/upload', ['abc', 'defg', 'h']);
      assert.equal(chunked.body, 'POST /upload 8 te=chunked agent=-');
      const big = Buffer.alloc(4 * 1024 * 1024, 0x61);
      const large = await request(agent, 'POST', '/upload', big, { 'content-length': String(big.length) });
      assert.equal(large.body, `POST /upload ${big.length} te=- agent=-`);
      // 100-continue: the body is sent only after the 100 the proxy relays from the server.
      const r = await new Promise<string>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: frontPort, method: 'POST', path: '/upload', agent, headers: { expect: '100-continue', 'content-length': '5' } }, (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(`${res.statusCode} ${b}`));
        });
        req.on('continue', () => req.end('hello'));
        req.on('error', reject);
      });
      assert.equal(r, '200 POST /upload 5 te=- agent=-');
      // Denied with Expect: 403 without waiting for a body.
      const denied = await new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: frontPort, method: 'POST', path: '/other', agent, headers: { expect: '100-continue', 'content-length': '5' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('continue', () => req.end('hello'));
        req.on('error', reject);
      });
      assert.equal(denied, 403);
      agent.destroy();
    });

    test('an upgrade is refused unless a rule allows it', async () => {
      const upgrade = (headers: Record<string, string>): Promise<string> =>
        new Promise((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port: frontPort, path: '/ws', headers: { connection: 'Upgrade', upgrade: 'echo', ...headers } });
          req.on('upgrade', (_res, socket) => {
            socket.write('ping');
            socket.once('data', (d: Buffer) => {
              socket.destroy();
              resolve(`101 ${d.toString()}`);
            });
          });
          req.on('response', (res) => {
            let b = '';
            res.on('data', (d: Buffer) => (b += d.toString()));
            res.on('end', () => resolve(`${res.statusCode} ${b}`));
          });
          req.on('error', reject);
          req.end();
        });
      assert.equal(await upgrade({}), '403 Access denied');
      assert.equal(await upgrade({ 'x-allow-upgrade': '1' }), '101 ping');
    });
  });
}
