// Unit tests of the masquerade phase's table and verdicts (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MASQ_PTP, MASQ_ROUTED, MASQ_TENDRIL, masqRows, masqTable, masqVerdicts, type MasqSample } from './masq-report.js';

function sample(round: number, scenario: string, gbps: number, tps: number, crr: number): MasqSample {
  const m = <T>(value: T) => ({ value, foreignPct: 0, attempts: 1 });
  return { round, scenario, gbps: m(gbps), rr: m({ tps, p50us: 1e6 / tps, p99us: 2e6 / tps }), crr: m(crr) };
}

test('masqRows() takes medians per scenario in routed, ptp, tendril order', () => {
  const rows = masqRows([sample(1, MASQ_TENDRIL, 10, 1000, 500), sample(2, MASQ_TENDRIL, 30, 3000, 700), sample(3, MASQ_TENDRIL, 20, 2000, 600), sample(1, MASQ_ROUTED, 40, 4000, 800)]);
  assert.deepEqual(rows.map((r) => [r.scenario, r.n, r.gbps, r.rr.tps, r.crr]), [
    [MASQ_ROUTED, 1, 40, 4000, 800],
    [MASQ_TENDRIL, 3, 20, 2000, 600],
  ]);
});

test('masqTable() shows ratios to ptp+iptables and to routed; verdicts hold the issue targets', () => {
  const rows = masqRows([sample(1, MASQ_ROUTED, 20, 2000, 1000), sample(1, MASQ_PTP, 10, 1000, 500), sample(1, MASQ_TENDRIL, 15, 1900, 900)]);
  const t = masqTable(rows).split('\n');
  assert.equal(t[4], `| ${MASQ_TENDRIL} | 15.00 | 1900 | 526.3 / 1052.6 | 900 | 1.50 / 1.90 / 1.80 | 0.75 / 0.95 / 0.90 |`);
  const v = masqVerdicts(rows);
  assert.deepEqual(v.map((x) => x.met), [true, true, true, true, false]);
  assert.match(v[4]!.text, /^- NOT MET: pod -> external TCP_CRR, BPF masquerade vs routed/);
  assert.deepEqual(masqVerdicts([]), []);
});
