import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NatSourceCache, type FlowTuple } from './nat-source-cache.js';

const flow = (sport: number): FlowTuple => ({ protocol: 6, src: '10.0.0.5', sport, dst: '192.168.10.200', dport: 80 });

test('NatSourceCache.get() asks once per flow within the TTL, again after it', () => {
  let now = 0;
  let asked = 0;
  const c = new NatSourceCache(() => (asked++, '192.168.10.1'), () => now, 100, 10);
  assert.equal(c.get(flow(1)), '192.168.10.1');
  assert.equal(c.get(flow(1)), '192.168.10.1');
  assert.equal(asked, 1);
  assert.equal(c.get(flow(2)), '192.168.10.1');
  assert.equal(asked, 2);
  now = 150;
  assert.equal(c.get(flow(1)), '192.168.10.1');
  assert.equal(asked, 3);
});

test('NatSourceCache.get() does not remember a flow without translation', () => {
  let answer: string | undefined;
  let asked = 0;
  const c = new NatSourceCache(() => (asked++, answer), () => 0);
  assert.equal(c.get(flow(1)), undefined);
  answer = '192.168.10.1';
  assert.equal(c.get(flow(1)), '192.168.10.1');
  assert.equal(asked, 2);
  assert.equal(c.size, 1);
});

test('NatSourceCache keeps at most max flows, forgetting the oldest, and clear() forgets all', () => {
  const asked: number[] = [];
  const c = new NatSourceCache((t) => (asked.push(t.sport), 'x'), () => 0, 1000, 2);
  c.get(flow(1));
  c.get(flow(2));
  c.get(flow(3));
  assert.equal(c.size, 2);
  c.get(flow(1));
  assert.deepEqual(asked, [1, 2, 3, 1]);
  c.clear();
  assert.equal(c.size, 0);
});
