import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clockFromShim, CniTimings, PhaseClock } from './timings.js';

/** A clock whose phases are set directly (lap() measures real time, which a unit test cannot pin). */
function clockOf(phases: Record<string, number>): PhaseClock {
  const c = new PhaseClock();
  Object.assign(c.phases, phases);
  return c;
}

test('PhaseClock charges each lap the time since the previous one', async () => {
  const c = new PhaseClock();
  c.lap('a');
  await new Promise((r) => setTimeout(r, 20));
  c.lap('b');
  c.lap('a');
  assert.deepEqual(Object.keys(c.phases), ['a', 'b']);
  assert.ok(c.phases['b']! >= 15, `b = ${c.phases['b']}`);
  assert.ok(c.total() >= c.phases['a']! + c.phases['b']!);
});

test('CniTimings keeps the last calls per verb; a phase a call did not reach counts 0', () => {
  const t = new CniTimings(4);
  for (let i = 1; i <= 6; i++) t.record('ADD', clockOf(i === 6 ? { ipam: 100, late: 7 } : { ipam: i }));
  t.record('DEL', clockOf({ interface: 3 }));
  const [add, del] = t.view();
  assert.equal(add?.verb, 'ADD');
  assert.equal(add?.calls, 4);
  // Window of 4: calls 3, 4, 5 and 6.
  assert.deepEqual(add?.phases.find((p) => p.phase === 'ipam'), { phase: 'ipam', p50: 4, p99: 100, max: 100 });
  assert.deepEqual(add?.phases.find((p) => p.phase === 'late'), { phase: 'late', p50: 0, p99: 7, max: 7 });
  assert.equal(del?.verb, 'DEL');
  assert.equal(del?.phases[0]?.p50, 3);
});

test('clockFromShim charges the time since the shim started to transport; a missing or implausible header gives a fresh clock', () => {
  const now = performance.timeOrigin + performance.now();
  const c = clockFromShim({ 'X-Cni-Shim-Start': String(Math.round((now - 250) * 1000)) }, now);
  assert.ok(c.phases['transport']! >= 249 && c.phases['transport']! < 400, String(c.phases['transport']));
  assert.ok(c.total() >= 249);
  for (const h of [{}, { 'x-cni-shim-start': 'soon' }, { 'x-cni-shim-start': String(Math.round((now + 5000) * 1000)) }, { 'x-cni-shim-start': '1' }]) {
    const f = clockFromShim(h, now);
    assert.deepEqual(f.phases, {}, JSON.stringify(h));
    assert.ok(f.total() < 100);
  }
});

test('CniTimings samples the event-loop delay while calls are in flight: a blocked loop shows', async () => {
  const t = new CniTimings();
  t.begin('ADD');
  await new Promise((r) => setTimeout(r, 30));
  const until = performance.now() + 120;
  while (performance.now() < until); // blocks the loop for 120 ms
  await new Promise((r) => setTimeout(r, 30));
  t.end('ADD');
  t.record('ADD', new PhaseClock());
  const v = t.view()[0]!;
  assert.ok(v['event-loop-delay'], 'sampled');
  assert.ok(v['event-loop-delay'].max >= 90, JSON.stringify(v['event-loop-delay']));
});
