// The API server's input checks, through a real unix socket: malformed paths and parameters are 400s (the handler
// never runs, nothing is logged as a failure), oversized bodies 413s, and the server keeps serving after each.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ApiServer } from './api.js';
import { ApiClient, ApiClientError, rawRequest } from './api-client.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-api-'));
const socket = path.join(dir, 'api.sock');
const LIMIT = 64 * 1024;
const logged: Array<{ level: number; msg: string }> = [];
const log = pino({ level: 'debug' }, { write: (line: string) => void logged.push(JSON.parse(line) as { level: number; msg: string }) });
const calls: string[] = [];
const api = new ApiServer(log, { maxBodyBytes: LIMIT });
api.route('GET', '/v1/endpoint/{id}', (req) => (calls.push(`get ${req.params['id']}`), { id: req.params['id'] }));
api.route('POST', '/v1/ipam/{ip:ipv4}', (req) => (calls.push(`post ${req.params['ip']}`), { ip: req.params['ip'] }));
api.route('DELETE', '/v1/ipam/{ip:ipv4}', (req) => (calls.push(`del ${req.params['ip']}`), { released: req.params['ip'] }));
api.route('PUT', '/v1/policy', (req) => ({ bytes: req.body.length }));
let release: () => void = () => {};
api.route('GET', '/v1/slow', () => new Promise((resolve) => (release = () => resolve({ late: true }))));

/** A request with the body streamed in chunks, without a content-length (as a chunked upload comes). */
function chunked(bytes: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method: 'PUT', path: '/v1/policy' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const chunk = Buffer.alloc(16 * 1024, 'x');
    for (let sent = 0; sent < bytes; sent += chunk.length) req.write(chunk);
    req.end();
  });
}

describe('ApiServer input checks', () => {
  before(() => api.listen(socket));
  after(async () => {
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('malformed percent-encoding in the path is a 400 naming the segment', async () => {
    const r = await rawRequest(socket, 'GET', '/v1/endpoint/%ZZ');
    assert.equal(r.status, 400);
    const e = JSON.parse(r.body) as { code: string; message: string };
    assert.equal(e.code, 'TENDRIL_ERR_INVALID_REQUEST');
    assert.match(e.message, /percent-encoding.*%ZZ/);
    assert.deepEqual(await new ApiClient(socket).get('/v1/endpoint/pod-name%3Adefault%2Fa'), { id: 'pod-name:default/a' });
  });

  test('a parameter declared ipv4 that is no IPv4 address is a 400 before the handler runs', async () => {
    calls.length = 0;
    for (const [method, ip] of [['POST', '999.1.1.1'], ['DELETE', 'notanip'], ['POST', '10.0.0'], ['DELETE', '10.0.0.1.2']] as const) {
      const r = await rawRequest(socket, method, `/v1/ipam/${ip}`);
      assert.equal(r.status, 400, `${method} ${ip}`);
      const e = JSON.parse(r.body) as { code: string; message: string };
      assert.equal(e.code, 'TENDRIL_ERR_INVALID_REQUEST');
      assert.ok(e.message.includes(`Invalid ip "${ip}"`) && e.message.includes('IPv4 address'), e.message);
    }
    assert.deepEqual(calls, []);
    assert.deepEqual(await new ApiClient(socket).request('POST', '/v1/ipam/10.0.0.5'), { ip: '10.0.0.5' });
    assert.deepEqual(calls, ['post 10.0.0.5']);
  });

  test('a body over the limit is a 413, declared or streamed, and the server serves on', async () => {
    const big = JSON.stringify({ text: 'x'.repeat(LIMIT) });
    const err = await new ApiClient(socket).request('PUT', '/v1/policy', { text: 'x'.repeat(LIMIT) }).then(
      () => assert.fail('accepted an oversized body'),
      (e: unknown) => e as ApiClientError,
    );
    assert.equal(err.status, 413);
    assert.equal(err.code, 'TENDRIL_ERR_BODY_TOO_LARGE');
    assert.match(err.message, new RegExp(`${Buffer.byteLength(big)} bytes exceeds the API's limit of ${LIMIT} bytes`));
    const streamed = await chunked(LIMIT * 4);
    assert.equal(streamed.status, 413);
    assert.equal((JSON.parse(streamed.body) as { code: string }).code, 'TENDRIL_ERR_BODY_TOO_LARGE');
    assert.deepEqual(await new ApiClient(socket).request('PUT', '/v1/policy', { text: 'ok' }), { bytes: JSON.stringify({ text: 'ok' }).length });
    assert.equal((await chunked(LIMIT - 16 * 1024)).status, 200, 'a streamed body within the limit is read whole');
  });

  test('none of the refusals is logged as a failure of the server', () => {
    assert.deepEqual(logged.filter((l) => l.level >= 50), []);
  });

  test('an unknown parameter kind is a programming error at registration', () => {
    assert.throws(() => new ApiServer(log).route('GET', '/v1/x/{id:uuid}', () => ({})), /unknown parameter kind "uuid"/);
  });

  test('a server that answers late is a timeout, not an unreachable server', async () => {
    const e = await new ApiClient(socket).get('/v1/slow', 100).then(
      () => assert.fail('answered before the handler did'),
      (x: unknown) => x as ApiClientError,
    );
    release();
    assert.equal(e.code, 'TENDRIL_ERR_API_TIMEOUT');
    assert.match(e.message, /The agent at .* did not answer GET \/v1\/slow within 100 ms/);
  });

  test('the client names who it could not reach', async () => {
    const e = await new ApiClient(path.join(dir, 'none.sock'), 'operator').get('/v1/status').then(
      () => assert.fail('reached a socket that does not exist'),
      (x: unknown) => x as ApiClientError,
    );
    assert.equal(e.code, 'TENDRIL_ERR_OPERATOR_UNREACHABLE');
    assert.match(e.message, /Cannot reach the operator at .*none\.sock: ENOENT \(is the operator running\?\)/);
  });
});
