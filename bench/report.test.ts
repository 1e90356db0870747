// Unit tests of the bench's tables and target verdicts (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XNODE_ORDER, cniConcTable, cniTable, dpRows, dpTable, targetVerdicts, verdict, xnodeTable, xnodeVerdicts, type CniRow, type DpSample } from './report.js';

function sample(round: number, scenario: string, gbps: number, tps: number, tps1 = tps * 5): DpSample {
  const m = <T>(value: T) => ({ value, foreignPct: 0, attempts: 1 });
  return {
    round,
    scenario,
    gbps: m(gbps),
    rr: m({ tps, p50us: 1e6 / tps, p99us: 2e6 / tps }),
    rr1: m({ tps: tps1, p50us: 1e6 / tps1, p99us: 2e6 / tps1 }),
  };
}

test('dpRows() takes the median of every round per scenario, in the given order, skipping absent ones', () => {
  const s = [sample(1, 'veth', 10, 1000), sample(2, 'veth', 30, 3000), sample(3, 'veth', 20, 2000), sample(1, 'ptp', 5, 500)];
  const rows = dpRows(s, ['veth', 'bridge', 'ptp']);
  assert.deepEqual(rows.map((r) => [r.scenario, r.n, r.gbps, r.rr.tps]), [
    ['veth', 3, 20, 2000],
    ['ptp', 1, 5, 500],
  ]);
});

test('dpTable() prints the issue columns with ratios to veth and ptp', () => {
  const rows = dpRows([sample(1, 'veth', 20, 2000), sample(1, 'ptp', 10, 1000), sample(1, 'tendril', 19, 2200)], ['veth', 'ptp', 'tendril']);
  const t = dpTable(rows).split('\n');
  assert.equal(t[0], '| scenario | Gbit/s | RR trans/s | RR p50/p99 µs | ratio vs veth (stream / RR) | ratio vs ptp (stream / RR) |');
  assert.equal(t[4], '| tendril | 19.00 | 2200 | 454.5 / 909.1 | 0.95 / 1.10 | 1.90 / 2.20 |');
});

test('verdict() says MET or by how much a >= target is missed', () => {
  assert.match(verdict('x', 19, 20, 'Gbit/s', '>=', 0.95).text, /^- MET: x: 19\.00 Gbit\/s vs 20\.00 Gbit\/s = 0\.95x/);
  const miss = verdict('x', 17, 20, 'Gbit/s', '>=', 0.95);
  assert.equal(miss.met, false);
  assert.match(miss.text, /NOT MET: .* = 0\.85x \(target >= 0\.95x\): short by 0\.10x \(10\.5 % below target; needs 2\.00 Gbit\/s more\)/);
});

test('verdict() says by how much a <= target is exceeded, and NaN is NOT EVALUATED', () => {
  const miss = verdict('add', 12, 20, 'ms', '<=', 0.5);
  assert.match(miss.text, /NOT MET: add: 12\.00 ms vs 20\.00 ms = 0\.60x \(target <= 0\.50x\): over by 0\.10x \(20\.0 % above target; 2\.00 ms too slow\)/);
  assert.equal(verdict('add', 9, 20, 'ms', '<=', 0.5).met, true);
  const none = verdict('add', NaN, 20, 'ms', '<=', 0.5);
  assert.equal(none.met, false);
  assert.match(none.text, /^- NOT EVALUATED/);
});

test('targetVerdicts() checks ADD p50 sequential, ADD p50 and p99 at concurrency against ptp', () => {
  const ms = (v: number) => Array.from({ length: 100 }, () => v);
  const cni: CniRow[] = [
    { plugin: 'ptp', pods: 100, conc: 1, op: 'ADD', ms: ms(16), failures: 0, wallMs: 1600 },
    { plugin: 'tendril', pods: 100, conc: 1, op: 'ADD', ms: ms(6), failures: 0, wallMs: 600 },
    { plugin: 'ptp', pods: 200, conc: 8, op: 'ADD', ms: ms(90), failures: 0, wallMs: 2000 },
    { plugin: 'tendril', pods: 200, conc: 8, op: 'ADD', ms: ms(120), failures: 0, wallMs: 3000 },
  ];
  const v = targetVerdicts([], cni, 100, 200, 8);
  assert.deepEqual(v.map((x) => x.met), [true, false, false]);
  assert.match(v[1]!.text, /ADD p50 vs ptp \(200 pods, concurrency 8\): 120\.00 ms vs 90\.00 ms = 1\.33x/);
  assert.match(v[2]!.text, /ADD p99 vs ptp \(200 pods, concurrency 8\): 120\.00 ms vs 90\.00 ms = 1\.33x/);
  const t = cniConcTable(cni, 200, 8).split('\n');
  assert.deepEqual(t.slice(2), ['| ptp | 90.00 | 1.00 | 90.00 | 1.00 |', '| tendril | 120.00 | 1.33 | 120.00 | 1.33 |']);
  assert.match(cniTable(cni), /\| tendril \| 200 \| 8 \| ADD \| 120\.00 \| 120\.00 \| 120\.00 \| 120\.00 \| 120\.00 \| 0 \| 66\.7 \|/);
});

test('xnodeTable() holds each Tendril mode against its matching baseline: tunnel vs xvxlan, native vs xroute', () => {
  const rows = dpRows(
    [sample(1, 'tendril-native', 9, 900, 4000), sample(1, 'xroute', 10, 1000, 5000), sample(1, 'tendril-tunnel', 8, 1100, 3000), sample(1, 'xvxlan', 4, 1000, 3000)],
    XNODE_ORDER,
  );
  const t = xnodeTable(rows).split('\n');
  assert.equal(t[0], '| scenario | Gbit/s | RR trans/s | RR p50/p99 µs | RR 1-CPU trans/s | RR 1-CPU p50/p99 µs | ratio vs matching baseline (stream / RR / RR 1-CPU) |');
  assert.deepEqual(t.slice(2).map((l) => l.split(' | ')[0]), ['| xvxlan', '| tendril-tunnel', '| xroute', '| tendril-native']);
  assert.equal(t[2], '| xvxlan | 4.00 | 1000 | 1000.0 / 2000.0 | 3000 | 333.3 / 666.7 | baseline |');
  assert.equal(t[3], '| tendril-tunnel | 8.00 | 1100 | 909.1 / 1818.2 | 3000 | 333.3 / 666.7 | 2.00 / 1.10 / 1.00 vs xvxlan |');
  assert.equal(t[5], '| tendril-native | 9.00 | 900 | 1111.1 / 2222.2 | 4000 | 250.0 / 500.0 | 0.90 / 0.90 / 0.80 vs xroute |');
});

test('xnodeVerdicts() checks stream, RR and RR 1-CPU >= 0.95x per mode; a missing side is NOT EVALUATED', () => {
  const rows = dpRows([sample(1, 'tendril-native', 9.6, 900, 4000), sample(1, 'xroute', 10, 1000, 5000), sample(1, 'xvxlan', 4, 1000)], XNODE_ORDER);
  const v = xnodeVerdicts(rows);
  assert.deepEqual(
    v.map((x) => [x.what, x.met]),
    [
      ['cross-node tendril-tunnel TCP throughput vs xvxlan', false],
      ['cross-node tendril-tunnel request/response rate vs xvxlan', false],
      ['cross-node tendril-tunnel request/response rate on one CPU vs xvxlan', false],
      ['cross-node tendril-native TCP throughput vs xroute', true],
      ['cross-node tendril-native request/response rate vs xroute', false],
      ['cross-node tendril-native request/response rate on one CPU vs xroute', false],
    ],
  );
  assert.match(v[0]!.text, /^- NOT EVALUATED: cross-node tendril-tunnel TCP throughput vs xvxlan: n\/a Gbit\/s vs 4\.00 Gbit\/s/);
  assert.match(v[3]!.text, /^- MET: .* 9\.60 Gbit\/s vs 10\.00 Gbit\/s = 0\.96x \(target >= 0\.95x\)/);
  assert.match(v[5]!.text, /NOT MET: .* 4000 trans\/s vs 5000 trans\/s = 0\.80x .* short by 0\.15x/);
  assert.deepEqual(xnodeVerdicts([]), []);
});
