// The fast engine's idle handling: one sweep for all connections instead of a timer re-armed on every read and
// write. An idle kept-alive connection is closed after the idle time; one waiting for its response is not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { HttpMatcher } from '../policy/index.js';
import { HttpFastEngine } from './fast-engine.js';

const rules = new HttpMatcher([{ method: 'GET', path: '/.*', host: null, headers: [] }]);

function listen(s: net.Server): Promise<number> {
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
}

function closed(s: net.Socket): Promise<void> {
  return new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));
}

test('idle client connections are closed by the sweep; a connection waiting for its response stays', async () => {
  // An upstream that answers /quick at once and /slow only when told to.
  const held: net.Socket[] = [];
  const upstream = net.createServer((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      if (buf.startsWith('GET /quick')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else held.push(s);
      buf = '';
    });
  });
  const upPort = await listen(upstream);
  const engine = new HttpFastEngine(
    { policyFor: () => ({ matchers: [rules], srcIdentity: 1, dstIdentity: 2, connect: () => net.connect(upPort, '127.0.0.1') }) },
    { timeoutMs: 200, sweepMs: 50 },
  );
  const front = net.createServer((s) => engine.handle(s));
  const port = await listen(front);
  const idle = net.connect(port, '127.0.0.1');
  const waiting = net.connect(port, '127.0.0.1');
  try {
    const answered = new Promise<string>((r) => idle.once('data', (d) => r(d.toString('latin1'))));
    idle.write('GET /quick HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await answered, /^HTTP\/1\.1 200 OK/);
    waiting.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    // The answered connection goes idle and is closed by a sweep (no deadline here: the test's own timeout bounds it).
    await closed(idle);
    assert.equal(waiting.destroyed, false, 'a connection with an exchange under way is not idle');
    // Its response comes later, through the same connection.
    const late = new Promise<string>((r) => waiting.once('data', (d) => r(d.toString('latin1'))));
    while (held.length === 0) await new Promise((r) => setTimeout(r, 20));
    held[0]!.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate');
    assert.match(await late, /late$/);
    await closed(waiting);
  } finally {
    idle.destroy();
    waiting.destroy();
    engine.close();
    front.close();
    for (const s of held) s.destroy();
    upstream.close();
  }
});
