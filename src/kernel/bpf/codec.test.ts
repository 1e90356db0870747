// Unit tests of the map key/value codecs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { array, be16, be32, bytes, i32, structCodec, u16, u32, u64, u8 } from './codec.js';

test('integer codecs round-trip in their byte order', () => {
  assert.deepEqual([...u32.encode(0x01020304)], [4, 3, 2, 1]);
  assert.deepEqual([...be32.encode(0x01020304)], [1, 2, 3, 4]);
  assert.deepEqual([...be16.encode(0x1f90)], [0x1f, 0x90]);
  assert.equal(u16.decode(u16.encode(65535)), 65535);
  assert.equal(u8.decode(Buffer.from([200])), 200);
  assert.equal(i32.decode(i32.encode(-5)), -5);
  assert.equal(u64.decode(u64.encode(0xfedcba9876543210n)), 0xfedcba9876543210n);
});

test('integer codecs reject out-of-range and short input', () => {
  assert.throws(() => u32.encode(-1), RangeError);
  assert.throws(() => u32.encode(2 ** 32), RangeError);
  assert.throws(() => u8.encode(1.5), RangeError);
  assert.throws(() => u64.encode(-1n), RangeError);
  assert.throws(() => u32.decode(Buffer.alloc(3)), RangeError);
});

test('bytes() and array() keep their fixed length', () => {
  const mac = bytes(6);
  assert.deepEqual(mac.decode(mac.encode(Buffer.from([1, 2, 3, 4, 5, 6]))), Buffer.from([1, 2, 3, 4, 5, 6]));
  assert.throws(() => mac.encode(Buffer.alloc(5)), RangeError);
  const a = array(u16, 3);
  assert.equal(a.size, 6);
  assert.deepEqual(a.decode(a.encode([1, 2, 3])), [1, 2, 3]);
  assert.throws(() => a.encode([1, 2]), RangeError);
});

test('structCodec() encodes fields at their offsets with zeroed padding', () => {
  const c = structCodec<{ ip: number; port: number; proto: number }>(12, {
    ip: [0, be32],
    port: [4, be16],
    proto: [8, u8],
  });
  const b = c.encode({ ip: 0x0a000001, port: 80, proto: 6 });
  assert.deepEqual([...b], [10, 0, 0, 1, 0, 80, 0, 0, 6, 0, 0, 0]);
  assert.deepEqual(c.decode(b), { ip: 0x0a000001, port: 80, proto: 6 });
  assert.deepEqual(c.layout, [
    { name: 'ip', offset: 0, size: 4 },
    { name: 'port', offset: 4, size: 2 },
    { name: 'proto', offset: 8, size: 1 },
  ]);
});

test('structCodec() rejects overlapping and out-of-bounds fields', () => {
  assert.throws(() => structCodec<{ a: number; b: number }>(8, { a: [0, u32], b: [2, u32] }), /overlaps/);
  assert.throws(() => structCodec<{ a: number }>(4, { a: [2, u32] }), /outside/);
});
