// The local store server beyond the shared contract: replaced data dir => resync, socket handling, HTTP API errors.
// In-process server on unix sockets in a temp dir; no root needed.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LocalStoreClient, LocalStoreServer, StoreError, type WatchEvent } from '../src/store/index.js';
import { until } from './lib/proc.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-lstore-`));

/** One request; `chunked` streams the body without a content-length. */
function raw(socketPath: string, method: string, p: string, body?: string, chunked = false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: p, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('error', reject);
    if (chunked && body) {
      req.write(body);
      req.end();
    } else req.end(body);
  });
}

function rawChunked(socketPath: string, method: string, p: string, body: string): Promise<{ status: number; body: string }> {
  return raw(socketPath, method, p, body, true);
}

describe('local store server', { timeout: 120_000 }, () => {
  const servers: LocalStoreServer[] = [];
  const clients: LocalStoreClient[] = [];
  after(async () => {
    for (const c of clients) await c.close();
    for (const s of servers) await s.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const server = (dataDir: string, opts: { keepaliveMs?: number } = {}): LocalStoreServer => {
    const s = new LocalStoreServer({ dataDir, ...opts });
    servers.push(s);
    return s;
  };
  const client = (socket: string): LocalStoreClient => {
    const c = new LocalStoreClient({ socket }, { maxBackoffMs: 100 });
    clients.push(c);
    return c;
  };

  test('the socket is root-only and url names it', async () => {
    const sock = path.join(tmp, 'perm.sock');
    const s = server(path.join(tmp, 'perm'));
    await s.listen({ socket: sock });
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    assert.equal(s.url, `local+unix://${sock}`);
    await s.close();
    assert.ok(!fs.existsSync(sock), 'close() removes the socket file');
  });

  test('listen() refuses a socket a live server answers on, but replaces a stale socket file', async () => {
    const sock = path.join(tmp, 'busy.sock');
    const a = server(path.join(tmp, 'busy-a'));
    await a.listen({ socket: sock });
    const b = server(path.join(tmp, 'busy-b'));
    await assert.rejects(b.listen({ socket: sock }), (err: unknown) => err instanceof StoreError && err.code === 'TENDRIL_ERR_STORE_UNAVAILABLE' && /another server is listening/.test(err.message));
    await a.close();
    // A stale socket file, as a crashed server leaves behind: closing a unix server unlinks the path it bound, so
    // the socket is moved to @sock first and stays there, dead, once its server is closed.
    const stale = net.createServer();
    await new Promise<void>((r) => stale.listen(`${sock}.tmp`, r));
    fs.renameSync(`${sock}.tmp`, sock);
    await new Promise<void>((r) => stale.close(() => r()));
    assert.ok(fs.lstatSync(sock).isSocket());
    await b.listen({ socket: sock });
    const c = client(sock);
    assert.equal((await c.ping()).ok, true);
    await b.close();
  });

  test('a second server on the same data dir is refused', async () => {
    const dir = path.join(tmp, 'locked');
    const a = server(dir);
    await a.listen({ socket: path.join(tmp, 'locked-a.sock') });
    const b = server(dir);
    await assert.rejects(b.listen({ socket: path.join(tmp, 'locked-b.sock') }), (err: unknown) => err instanceof StoreError && /in use by process/.test(err.message));
    await a.close();
  });

  test('a watch open across a restart onto a wiped data dir gets onResync (the store was replaced)', async () => {
    const dir = path.join(tmp, 'wiped');
    const sock = path.join(tmp, 'wiped.sock');
    const a = server(dir, { keepaliveMs: 200 });
    await a.listen({ socket: sock });
    const c = client(sock);
    for (let i = 0; i < 3; i++) await c.put('Node', `n${i}`, { i });
    const { revision } = await c.list('Node');
    const events: WatchEvent<unknown>[] = [];
    let resync: string | undefined;
    c.watch('Node', { fromRevision: revision, onEvent: (e) => events.push(e), onResync: (r) => (resync = r) });
    await c.put('Node', 'n9', {});
    await until('event', () => events.length === 1);
    await a.close();
    fs.rmSync(dir, { recursive: true });
    const b = server(dir, { keepaliveMs: 200 });
    await b.listen({ socket: sock });
    // Enough writes that the new store's revision passes the watch's: only the store id tells them apart.
    const writer = client(sock);
    for (let i = 0; i < 6; i++) await writer.put('Node', `m${i}`, {});
    await until('onResync', () => resync !== undefined);
    assert.match(resync ?? '', /replaced|lost/);
    assert.equal(events.length, 1);
  });

  test('the HTTP API answers coded JSON errors', async () => {
    const sock = path.join(tmp, 'api.sock');
    const s = server(path.join(tmp, 'api'));
    await s.listen({ socket: sock });
    const bad = await raw(sock, 'PUT', '/v1/resources/Node/a', '{not json');
    assert.equal(bad.status, 400);
    assert.equal((JSON.parse(bad.body) as { error: { code: string } }).error.code, 'TENDRIL_ERR_STORE_INVALID');
    const kind = await raw(sock, 'GET', '/v1/resources/Pod');
    assert.equal(kind.status, 400);
    assert.match(kind.body, /Unknown resource kind \\"Pod\\"/);
    const route = await raw(sock, 'POST', '/v2/x');
    assert.equal(route.status, 404);
    const big = await raw(sock, 'PUT', '/v1/resources/Node/a', JSON.stringify({ value: 'x'.repeat(2 * 1024 * 1024) }));
    assert.equal(big.status, 413);
    assert.equal((JSON.parse(big.body) as { error: { code: string } }).error.code, 'TENDRIL_ERR_STORE_TOO_LARGE');
    assert.match(big.body, /exceeds the store's limit of 1572864 bytes/);
    // Streamed (no content-length): refused once it passes the limit, and the server serves on.
    const streamed = await rawChunked(sock, 'PUT', '/v1/resources/Node/a', JSON.stringify({ value: 'y'.repeat(2 * 1024 * 1024) }));
    assert.equal(streamed.status, 413);
    assert.equal((JSON.parse(streamed.body) as { error: { code: string } }).error.code, 'TENDRIL_ERR_STORE_TOO_LARGE');
    assert.equal((await raw(sock, 'PUT', '/v1/resources/Node/fits', JSON.stringify({ value: 'fits' }))).status, 200);
    const missing = await raw(sock, 'GET', '/v1/resources/Node/nope');
    assert.equal(missing.status, 404);
    assert.equal((JSON.parse(missing.body) as { error: { code: string } }).error.code, 'TENDRIL_ERR_STORE_NOT_FOUND');
    const conflict = await raw(sock, 'PUT', '/v1/resources/Node/a', JSON.stringify({ value: 1, expectedRevision: 7 }));
    assert.equal(conflict.status, 409);
    assert.deepEqual(JSON.parse(conflict.body), {
      error: { code: 'TENDRIL_ERR_STORE_CONFLICT', message: 'Cannot put Node "a": expected revision 7, but it does not exist', currentRevision: 0 },
    });
    await s.close();
  });
});
