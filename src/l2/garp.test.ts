// Unit tests of the gratuitous ARP frames (test/lb-l2-lab proves a real host's neighbour entry moves on them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ARPOP_REPLY, ARPOP_REQUEST, GARP_FRAME_LEN, garpFrame, garpFrames } from './garp.js';

const MAC = '02:aa:bb:cc:dd:0e';
const macHex = MAC.replaceAll(':', '');

test('garpFrame() builds a broadcast ARP request with sender and target IP the announced one and a zero target MAC', () => {
  const f = garpFrame(ARPOP_REQUEST, '192.168.10.240', MAC);
  assert.equal(f.length, GARP_FRAME_LEN);
  assert.equal(f.subarray(0, 6).toString('hex'), 'ffffffffffff');
  assert.equal(f.subarray(6, 12).toString('hex'), macHex);
  assert.equal(f.readUInt16BE(12), 0x0806);
  assert.equal(f.subarray(14, 20).toString('hex'), '000108000604');
  assert.equal(f.readUInt16BE(20), 1);
  assert.equal(f.subarray(22, 28).toString('hex'), macHex);
  assert.equal(f.subarray(28, 32).toString('hex'), 'c0a80af0');
  assert.equal(f.subarray(32, 38).toString('hex'), '000000000000');
  assert.equal(f.subarray(38, 42).toString('hex'), 'c0a80af0');
});

test('garpFrame() builds a reply whose target MAC is the sender MAC (what Linux requires of a gratuitous reply)', () => {
  const f = garpFrame(ARPOP_REPLY, '10.0.0.1', MAC);
  assert.equal(f.readUInt16BE(20), 2);
  assert.equal(f.subarray(32, 38).toString('hex'), macHex);
  assert.equal(f.subarray(38, 42).toString('hex'), '0a000001');
});

test('garpFrames() sends a request and a reply; a bad MAC is refused', () => {
  assert.deepEqual(garpFrames('10.0.0.1', MAC).map((f) => f.readUInt16BE(20)), [1, 2]);
  assert.throws(() => garpFrame(ARPOP_REQUEST, '10.0.0.1', '02:aa:bb'), /Invalid MAC address "02:aa:bb"/);
});
