// Unit tests: nlmsghdr encoding, splitting datagrams, and ack/error parsing including extended ack text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as K from './constants.js';
import { encodeMessage, parseAck, parseMessages } from './message.js';
import { linkDeleteRequest } from './requests.js';

test('encodeMessage() writes nlmsghdr with NLM_F_REQUEST and the sequence number', () => {
  const req = linkDeleteRequest(5);
  const buf = encodeMessage({ ...req, flags: req.flags | K.NLM_F_ACK }, 0x6b08_8a66);
  // `ip link del v2` as captured: len 32, type RTM_DELLINK, flags REQUEST|ACK, seq, pid 0, ifinfomsg index 5
  assert.equal(buf.toString('hex'), '20000000' + '1100' + '0500' + '668a086b' + '00000000' + '00000000050000000000000000000000');
});

test('parseMessages() splits a datagram holding several messages', () => {
  const a = encodeMessage({ type: 16, flags: K.NLM_F_MULTI, body: Buffer.from('0102030405', 'hex') }, 7);
  const done = encodeMessage({ type: K.NLMSG_DONE, flags: K.NLM_F_MULTI, body: Buffer.alloc(4) }, 7);
  const msgs = parseMessages(Buffer.concat([a, done]));
  assert.equal(msgs.length, 2);
  assert.equal(msgs[0]?.type, 16);
  assert.equal(msgs[0]?.payload.toString('hex'), '0102030405');
  assert.equal(msgs[1]?.type, K.NLMSG_DONE);
  assert.equal(msgs[1]?.seq, 7);
});

test('parseMessages() rejects a message longer than the datagram', () => {
  const buf = encodeMessage({ type: 16, flags: 0, body: Buffer.alloc(4) }, 1);
  buf.writeUInt32LE(64, 0);
  assert.throws(() => parseMessages(buf), /Malformed netlink message at offset 0/);
});

// The kernel's answer to `ip route add 10.9.0.0/24 via 10.99.0.1` (request echoed whole, then ext-ack TLVs).
const ENETUNREACH_ANSWER =
  '60000000 0200 0002 e9890b6b eb1a0000' +
  '9bffffff' +
  '2c000000 1800 0506 e9890b6b 00000000 02180000fe0300010000000008000100 0a090000 08000500 0a630001' +
  '20000100 4e657874686f702068617320696e76616c69642067617465776179 00';

test('parseAck() reads errno and extended ack text after an echoed request', () => {
  const [msg] = parseMessages(Buffer.from(ENETUNREACH_ANSWER.replace(/\s+/g, ''), 'hex'));
  assert.ok(msg);
  assert.equal(msg.type, K.NLMSG_ERROR);
  assert.deepEqual(parseAck(msg), { errno: 101, message: 'Nexthop has invalid gateway' });
});

test('parseAck() handles a capped echo (NETLINK_CAP_ACK) with message and offset TLVs', () => {
  const body = Buffer.from(
    'eaffffff' + // -EINVAL
      '2c000000180005060100000000000000' + // only the request's header is echoed
      '0d000100' + Buffer.from('bad attr\0').toString('hex') + '000000' + // NLMSGERR_ATTR_MSG, padded
      '0800020014000000', // NLMSGERR_ATTR_OFFS = 20
    'hex',
  );
  const msg = { type: K.NLMSG_ERROR, flags: K.NLM_F_CAPPED | K.NLM_F_ACK_TLVS, seq: 1, pid: 0, payload: body };
  assert.deepEqual(parseAck(msg), { errno: 22, message: 'bad attr', offset: 20 });
});

test('parseAck() of an ack is errno 0; of a dump DONE reads its int', () => {
  const ack = { type: K.NLMSG_ERROR, flags: K.NLM_F_CAPPED, seq: 1, pid: 0, payload: Buffer.alloc(20) };
  assert.deepEqual(parseAck(ack), { errno: 0 });
  const done = { type: K.NLMSG_DONE, flags: K.NLM_F_MULTI, seq: 1, pid: 0, payload: Buffer.from('f4ffffff', 'hex') };
  assert.deepEqual(parseAck(done), { errno: 12 });
});
