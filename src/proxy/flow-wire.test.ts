import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FlowBatcher, decodeFlows, decodeRecords, toRecord, type RawFlow } from './flow-wire.js';

const conn = { srcIp: '10.0.1.5', srcPort: 40000, dstIp: '10.0.2.7', dstPort: 80 };
const req: RawFlow = {
  time: 1_700_000_000_123.5,
  type: 'REQUEST',
  verdict: 'FORWARDED',
  conn,
  direction: 'EGRESS',
  srcIdentity: 300,
  dstIdentity: 301,
  method: 'GET',
  url: 'http://web/public',
  protocol: 'HTTP/1.1',
  code: 0,
  rawHeaders: ['Host', 'web', 'X-Token', 'a'],
  latencyNs: 0,
};

test('a batch decodes to every record in order, the connection named once, header names lower-cased', () => {
  const b = new FlowBatcher();
  b.add(req);
  b.add({ ...req, type: 'RESPONSE', verdict: 'DROPPED', code: 403, rawHeaders: ['content-type', 'text/plain'], latencyNs: 1234 });
  const other = { ...conn, srcPort: 40001 };
  b.add({ ...req, conn: other, verdict: 'ERROR', direction: undefined });
  assert.equal(b.size, 3);
  const batch = b.take();
  assert.equal(b.size, 0);
  assert.equal(batch.conns.length, 8);
  const [a, r, c] = decodeFlows(structuredClone(batch));
  assert.deepEqual(a, { time: req.time, type: 'REQUEST', verdict: 'FORWARDED', conn, direction: 'EGRESS', srcIdentity: 300, dstIdentity: 301, method: 'GET', url: 'http://web/public', protocol: 'HTTP/1.1', code: 0, headers: [{ key: 'host', value: 'web' }, { key: 'x-token', value: 'a' }], latencyNs: 0 });
  assert.equal(r!.type, 'RESPONSE');
  assert.equal(r!.verdict, 'DROPPED');
  assert.equal(r!.code, 403);
  assert.equal(r!.latencyNs, 1234);
  assert.deepEqual(r!.conn, conn);
  assert.equal(c!.verdict, 'ERROR');
  assert.equal('direction' in c!, false);
  assert.deepEqual(c!.conn, other);
  assert.deepEqual(toRecord(req), a);
});

test('a malformed batch is an error, not half-decoded records', () => {
  assert.throws(() => decodeFlows({ conns: [], rows: [1, 2, 3] }), /malformed/);
  assert.throws(() => decodeFlows({ conns: [], rows: [0, 0, 0, 1, 2, 'GET', 'u', 'HTTP/1.1', 0, [], 0] }), /malformed/);
  assert.throws(() => decodeFlows(null as never), /malformed/);
});

test('decodeRecords(): the agent path keeps the raw header list and one conn object per connection of a batch', () => {
  const b = new FlowBatcher();
  b.add(req);
  b.add({ ...req, type: 'RESPONSE', code: 200, rawHeaders: ['Content-Length', '2'] });
  const [a, r] = decodeRecords(structuredClone(b.take()));
  assert.deepEqual(a!.rawHeaders, ['Host', 'web', 'X-Token', 'a']);
  assert.deepEqual(r!.rawHeaders, ['Content-Length', '2']);
  assert.equal(a!.conn, r!.conn);
  assert.equal('headers' in a!, false);
  assert.throws(() => decodeRecords({ conns: [], rows: [1] }), /malformed/);
});
