// Unit tests: netlink attribute encoding (padding, nesting) and parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Attrs, align4, attr, attrBe16, attrIPv4, attrMac, attrNested, attrStr, attrU16, attrU32, attrU8 } from './attrs.js';

test('attr() pads to 4 bytes but rta_len excludes the padding', () => {
  assert.equal(attrU8(7, 1).toString('hex'), '0500070001000000');
  assert.equal(attrStr(3, 'eth0').toString('hex'), '0900030065746830' + '00000000');
  assert.equal(attrU16(1, 0x1234).toString('hex'), '0600010034120000');
  assert.equal(attrBe16(15, 8472).toString('hex'), '06000f0021180000');
  assert.equal(attrIPv4(1, '10.1.2.3').toString('hex'), '080001000a010203');
  assert.equal(attrMac(1, '02:00:00:00:00:0a').toString('hex'), '0a00010002000000000a0000');
  assert.equal(align4(5), 8);
  assert.equal(attr(1, Buffer.alloc(0)).toString('hex'), '04000100');
});

test('attrNested() length covers the padded children', () => {
  const n = attrNested(18, attrStr(1, 'veth'), attrU8(2, 1));
  assert.equal(n.toString('hex'), '18001200' + '0900010076657468' + '00000000' + '0500020001000000');
});

test('Attrs.parse() reads typed values, nests, masks NLA_F_NESTED and keeps the first of a type', () => {
  const nested = attrNested(18, attrStr(1, 'bridge'));
  nested.writeUInt16LE(18 | 0x8000, 2);
  const buf = Buffer.concat([attrU32(4, 1500), attrStr(3, 'br0'), nested, attrU32(4, 9000), attrU8(9, 3)]);
  const a = Attrs.parse(buf);
  assert.equal(a.u32(4), 1500);
  assert.equal(a.str(3), 'br0');
  assert.equal(a.nested(18)?.str(1), 'bridge');
  assert.equal(a.u8(9), 3);
  assert.equal(a.u32(99), undefined);
  assert.equal(a.list.length, 5);
});

test('Attrs.parse() rejects an attribute running past the end', () => {
  const buf = attrU32(4, 1);
  buf.writeUInt16LE(12, 0);
  assert.throws(() => Attrs.parse(buf), /Malformed netlink attribute at offset 0/);
});

test('Attrs.mac() and ipv4() format addresses', () => {
  const a = Attrs.parse(Buffer.concat([attrMac(1, '0a:0b:0c:0d:0e:0f'), attrIPv4(2, '192.168.0.1')]));
  assert.equal(a.mac(1), '0a:0b:0c:0d:0e:0f');
  assert.equal(a.ipv4(2), '192.168.0.1');
});
