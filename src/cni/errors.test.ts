// Unit tests of the CNI error JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asCniError, CniError } from './errors.js';

test('CniError.toJSON() is the spec error object in the given version', () => {
  const e = new CniError(7, 'invalid network config: "cniVersion" is missing', { details: 'stdin' });
  assert.deepEqual(e.toJSON('0.4.0'), { cniVersion: '0.4.0', code: 7, msg: 'invalid network config: "cniVersion" is missing', details: 'stdin' });
});

test('CniError.toJSON() falls back to 1.1.0 for unknown versions and omits empty details', () => {
  const e = new CniError(6, 'decoding failure');
  assert.deepEqual(e.toJSON('9.9.9'), { cniVersion: '1.1.0', code: 6, msg: 'decoding failure' });
  // JSON.stringify passes the property key ("") to toJSON
  assert.deepEqual(JSON.parse(JSON.stringify(e)), { cniVersion: '1.1.0', code: 6, msg: 'decoding failure' });
});

test('asCniError() turns any other throw into code 999 with its message', () => {
  const e = asCniError(new TypeError('boom'));
  assert.equal(e.code, 999);
  assert.equal(e.message, 'boom');
  assert.ok(e.cause instanceof TypeError);
});

test('asCniError() keeps the meaning of coded errors: IPAM 100-102, datapath netns 8, sandbox 103, store away 11', () => {
  const coded = (code: string): Error => Object.assign(new Error(code), { code });
  assert.equal(asCniError(coded('TENDRIL_ERR_IPAM_EXHAUSTED')).code, 100);
  assert.equal(asCniError(coded('TENDRIL_ERR_IPAM_OUT_OF_RANGE')).code, 101);
  assert.equal(asCniError(coded('TENDRIL_ERR_IPAM_CONFLICT')).code, 102);
  assert.equal(asCniError(coded('TENDRIL_ERR_DATAPATH_SANDBOX_TAKEN')).code, 103);
  assert.equal(asCniError(coded('TENDRIL_ERR_DATAPATH_NETNS')).code, 8);
  assert.equal(asCniError(coded('TENDRIL_ERR_STORE_UNAVAILABLE')).code, 11);
  assert.equal(asCniError(coded('TENDRIL_ERR_NOT_READY')).code, 11);
  assert.equal(asCniError(coded('TENDRIL_ERR_SOMETHING_ELSE')).code, 999);
});
