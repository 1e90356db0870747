// Unit tests of the follower's output tally (no privileges: no process is started).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowTally, probePort } from './follower.js';

const flow = (port: number) => `{"flow":{"l4":{"UDP":{"source_port":1234,"destination_port":${port}}}},"node_name":"ctr"}\n`;

test('FlowTally counts flow lines split anywhere across chunks', () => {
  const t = new FlowTally();
  const text = flow(1) + flow(2) + flow(3);
  // Every split point, including inside the "{"flow":" prefix and right at newlines.
  for (let cut = 0; cut <= text.length; cut++) {
    const u = new FlowTally();
    u.push(Buffer.from(text.slice(0, cut)), 1);
    u.push(Buffer.from(text.slice(cut)), 2);
    assert.equal(u.snapshot().flows, 3, `cut at ${cut}`);
    assert.equal(u.snapshot().other, 0);
  }
  t.push(Buffer.from(flow(1).slice(0, 10)), 5);
  assert.deepEqual(t.snapshot(), { flows: 0, lost: 0, other: 0, lastFlowAt: 0 }, 'a partial line is not counted yet');
  t.push(Buffer.from(flow(1).slice(10)), 7);
  assert.deepEqual(t.snapshot(), { flows: 1, lost: 0, other: 0, lastFlowAt: 7 });
});

test('FlowTally sums lost_events by source and counts anything else as other', () => {
  const t = new FlowTally();
  t.push(
    Buffer.from(
      '{"lost_events":{"source":"OBSERVER_EVENTS_QUEUE","num_events_lost":"12"},"node_name":"ctr"}\n' +
        flow(9) +
        '{"lost_events":{"source":"OBSERVER_EVENTS_QUEUE","num_events_lost":"3"}}\n' +
        '{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":5}}\n' +
        'not json\n\n' +
        '{"lost_events":broken\n',
    ),
  );
  const s = t.snapshot();
  assert.equal(s.flows, 1);
  assert.equal(s.lost, 20);
  assert.equal(s.other, 2, 'the unparsable lost_events line and "not json"; empty lines are ignored');
  assert.deepEqual([...t.lostBySource], [
    ['OBSERVER_EVENTS_QUEUE', 15],
    ['PERF_EVENT_RING_BUFFER', 5],
  ]);
});

test('FlowTally.watch() resolves on a later flow line containing the needle, and only then', async () => {
  const t = new FlowTally();
  t.push(Buffer.from(flow(40001)));
  let hit = false;
  const w = t.watch('"destination_port":40001}').then(() => (hit = true));
  await Promise.resolve();
  assert.equal(hit, false, 'a flow before watch() does not count');
  t.push(Buffer.from(flow(40002) + flow(400011)));
  await Promise.resolve();
  assert.equal(hit, false, 'port 400011 does not match port 40001 (the needle ends with "}")');
  t.push(Buffer.from(flow(40001)));
  await w;
  assert.equal(hit, true);
});

test('probePort() stays in the bench range and differs between attempts', () => {
  const ports = new Set(Array.from({ length: 50 }, (_, i) => probePort(i)));
  assert.equal(ports.size, 50);
  for (const p of ports) assert.ok(p >= 40000 && p < 60000, String(p));
});
