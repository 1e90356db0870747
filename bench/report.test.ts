// Unit tests of the bench's tables and target verdicts (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cniTable, dpRows, dpTable, targetVerdicts, verdict, type CniRow, type DpSample } from './report.js';

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

test('targetVerdicts() checks ADD p50 sequential and ADD p99 at concurrency against ptp', () => {
  const ms = (v: number) => Array.from({ length: 100 }, () => v);
  const cni: CniRow[] = [
    { plugin: 'ptp', pods: 100, conc: 1, op: 'ADD', ms: ms(16), failures: 0, wallMs: 1600 },
    { plugin: 'tendril', pods: 100, conc: 1, op: 'ADD', ms: ms(6), failures: 0, wallMs: 600 },
    { plugin: 'ptp', pods: 200, conc: 8, op: 'ADD', ms: ms(90), failures: 0, wallMs: 2000 },
    { plugin: 'tendril', pods: 200, conc: 8, op: 'ADD', ms: ms(120), failures: 0, wallMs: 3000 },
  ];
  const v = targetVerdicts([], cni, 100, 200, 8);
  assert.deepEqual(v.map((x) => x.met), [true, false]);
  assert.match(v[1]!.text, /ADD p99 vs ptp \(200 pods, concurrency 8\): 120\.00 ms vs 90\.00 ms = 1\.33x/);
  assert.match(cniTable(cni), /\| tendril \| 200 \| 8 \| ADD \| 120\.00 \| 120\.00 \| 120\.00 \| 120\.00 \| 120\.00 \| 0 \| 66\.7 \|/);
});
