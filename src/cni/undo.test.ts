// Unit tests of the undo list that unwinds a failed ADD.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UndoList } from './undo.js';

test('UndoList.unwind() runs steps newest first and continues past a failing step', async () => {
  const ran: string[] = [];
  const undo = new UndoList();
  undo.push('ip', () => void ran.push('ip'));
  undo.push('veth', () => {
    ran.push('veth');
    throw new Error('busy');
  });
  undo.push('endpoint', async () => void ran.push('endpoint'));
  const failures = await undo.unwind();
  assert.deepEqual(ran, ['endpoint', 'veth', 'ip']);
  assert.equal(failures.length, 1);
  assert.equal(failures[0]?.what, 'veth');
  assert.equal(undo.size, 0);
});

test('UndoList.commit() keeps everything: a later unwind does nothing', async () => {
  let ran = false;
  const undo = new UndoList();
  undo.push('ip', () => void (ran = true));
  undo.commit();
  assert.deepEqual(await undo.unwind(), []);
  assert.equal(ran, false);
});
