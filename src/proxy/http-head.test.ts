// The fast path's HTTP/1.x head parser and chunked scanner; bad input through the fast engine → 400/431.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { HttpMatcher } from '../policy/index.js';
import { ChunkedScanner, HttpParseError, MAX_HEAD_BYTES, headEnd, parseRequestHead, parseResponseHead, responseFraming } from './http-head.js';
import { HttpFastEngine } from './fast-engine.js';

function req(text: string): ReturnType<typeof parseRequestHead> {
  const b = Buffer.from(text, 'latin1');
  const n = headEnd(b);
  assert.ok(n > 0, 'complete head');
  return parseRequestHead(b, n);
}

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HttpParseError, String(err));
    return err.status;
  }
  return 0;
}

test('parseRequestHead: request line, headers (names as sent, lower-case map), framing, keep-alive', () => {
  const h = req('POST /a/b?q=1 HTTP/1.1\r\nHost: svc:80\r\nX-Tag: one\r\nx-tag:  two \r\nContent-Length: 12\r\n\r\nbody...');
  assert.equal(h.method, 'POST');
  assert.equal(h.target, '/a/b?q=1');
  assert.equal(h.minor, 1);
  assert.deepEqual(h.raw, ['Host', 'svc:80', 'X-Tag', 'one', 'x-tag', 'two', 'Content-Length', '12']);
  assert.deepEqual(h.headers.get('x-tag'), ['one', 'two']);
  assert.deepEqual(h.framing, { kind: 'length', length: 12 });
  assert.equal(h.keepAlive, true);
  assert.equal(h.upgrade, false);
  assert.deepEqual(req('GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n').framing, { kind: 'chunked' });
  assert.deepEqual(req('GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n').framing, { kind: 'none' });
  assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').keepAlive, false);
  assert.equal(req('GET / HTTP/1.0\r\n\r\n').keepAlive, false);
  assert.equal(req('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive, true);
  assert.equal(req('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n').upgrade, true);
  assert.equal(req('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n').expectContinue, true);
  assert.equal(headEnd(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n')), -1, 'incomplete');
});

test('parseRequestHead: bad input is refused with 400 (501 for an unknown transfer coding)', () => {
  const bad = [
    'GET /\r\nHost: a\r\n\r\n',
    'GET / HTTP/2.0\r\nHost: a\r\n\r\n',
    'GET  / HTTP/1.1\r\nHost: a\r\n\r\n',
    'G(T / HTTP/1.1\r\nHost: a\r\n\r\n',
    'GET / HTTP/1.1\r\n\r\n', // 1.1 without Host
    'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n',
    'GET / HTTP/1.1\r\nHost : a\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n',
    'NoColonLine\r\n\r\n',
  ];
  for (const b of bad) assert.equal(status(() => req(b)), 400, JSON.stringify(b));
  assert.equal(status(() => req('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n')), 501);
  // Equal repeated lengths are one length.
  assert.deepEqual(req('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n').framing, { kind: 'length', length: 3 });
});

test('headEnd: a head longer than the limit is refused with 431, complete or not', () => {
  const long = `GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`;
  assert.equal(status(() => headEnd(Buffer.from(long))), 431);
  assert.equal(status(() => headEnd(Buffer.from(`${long}\r\n\r\n`))), 431);
  assert.ok(headEnd(Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(MAX_HEAD_BYTES - 100)}\r\n\r\n`)) > 0);
});

test('responses: status, framing by request method and status', () => {
  const r = (t: string): ReturnType<typeof parseResponseHead> => {
    const b = Buffer.from(t);
    return parseResponseHead(b, headEnd(b));
  };
  const ok = r('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n');
  assert.equal(ok.status, 200);
  assert.deepEqual(responseFraming(ok, 'GET'), { kind: 'length', length: 5 });
  assert.deepEqual(responseFraming(ok, 'HEAD'), { kind: 'none' });
  assert.deepEqual(responseFraming(r('HTTP/1.1 204 No Content\r\n\r\n'), 'GET'), { kind: 'none' });
  assert.deepEqual(responseFraming(r('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), 'GET'), { kind: 'chunked' });
  assert.deepEqual(responseFraming(r('HTTP/1.0 200 OK\r\n\r\n'), 'GET'), { kind: 'close' });
  assert.equal(r('HTTP/1.1 200\r\nConnection: close\r\n\r\n').keepAlive, false);
  assert.equal(status(() => r('HTTP/1.1 2000 OK\r\n\r\n')), 400);
});

test('ChunkedScanner: finds the end across any split of the bytes, trailers included; bad framing throws', () => {
  const body = Buffer.from('3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n');
  const after = Buffer.from('GET /next');
  const all = Buffer.concat([body, after]);
  for (let cut = 0; cut <= all.length; cut++) {
    const s = new ChunkedScanner();
    const n1 = s.scan(all.subarray(0, cut));
    const n2 = s.done ? 0 : s.scan(all.subarray(cut));
    assert.ok(s.done, `cut ${cut}`);
    assert.equal(n1 + n2, body.length, `cut ${cut}`);
  }
  for (const bad of ['x\r\n', '3\r\nabcd\r\n', '3\nabc\r\n', `${'f'.repeat(13)}\r\n`]) {
    assert.equal(status(() => new ChunkedScanner().scan(Buffer.from(bad))), 400, JSON.stringify(bad));
  }
});

// Through the engine: what a client gets for bad input, and that a good connection is unaffected.
let upstream: http.Server;
let front: net.Server;
let engine: HttpFastEngine;
let frontPort = 0;

before(async () => {
  upstream = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as net.AddressInfo).port;
  const rules = new HttpMatcher([{ method: 'GET', path: '/.*', host: null, headers: [] }]);
  engine = new HttpFastEngine({ policyFor: () => ({ matchers: [rules], srcIdentity: 1, dstIdentity: 2, connect: () => net.connect(upPort, '127.0.0.1') }) });
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

/** Sends raw bytes, returns all the proxy answered until it closed (or the deadline). */
function exchange(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(frontPort, '127.0.0.1', () => s.write(bytes));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.setTimeout(10_000, () => {
      s.destroy();
      resolve(`${got}[timeout]`);
    });
  });
}

test('HttpFastEngine: bad request → 400 and close; huge head → 431; a good request on the same connection first is answered', async () => {
  assert.match(await exchange('GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request\r\n.*Connection: close/s);
  assert.match(await exchange(`GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(MAX_HEAD_BYTES + 10)}`), /^HTTP\/1\.1 431 /);
  const both = await exchange('GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\nHost: a\r\n\r\n');
  assert.match(both, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nokHTTP\/1\.1 400 Bad Request\r\n/);
  const errors = engine.stats.errors;
  assert.ok(errors >= 3, `errors counted: ${errors}`);
  // Half-closed after a request: answered, then closed.
  assert.match(await exchange('GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 OK\r\n[\s\S]*ok$/);
});
