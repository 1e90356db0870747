// Unit tests of the services phase's report and its kube-proxy baseline (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { iptablesBaseline, lbReport, type LbResult } from './lb.js';

test('the baseline: one service per filler plus the bench service (two ports, one address) in the middle', () => {
  const b = iptablesBaseline(10, ['172.20.0.2', '172.20.0.3', '172.20.0.4', '172.20.0.5'], '172.20.0.9');
  const portal = b.text.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES '));
  assert.equal(portal.length, 12);
  assert.equal(b.position, 5);
  assert.equal(b.vip, '10.200.0.6');
  assert.equal(portal.filter((l) => l.includes(`-d ${b.vip}/32`)).length, 2);
  assert.equal(b.text.split('\n').filter((l) => l.includes('--to-destination 172.20.0.9:')).length, 2);
  // nat: 3 hooks + 4 masq rules, per filler 2 + 4*3, per bench port 2 + 3, KUBE-NODEPORTS; filter: 12.
  assert.equal(b.rules, 3 + 4 + 9 * 14 + 2 * 5 + 1 + 12);
});

test('the report: medians per target, ratios to the same run\'s baselines, change-latency percentiles', () => {
  const s = (target: string, round: number, rrTps: number, crrTps: number) => ({ target, round, rrTps, rrP50us: 1e6 / rrTps, crrTps });
  const r: LbResult = {
    samples: [
      s('direct', 1, 1000, 500), s('direct', 2, 1000, 500), s('clusterip-1', 1, 990, 490), s('clusterip-1', 2, 970, 480),
      s('direct-10k', 1, 1000, 500), s('clusterip-10k', 1, 980, 480), s('clusterip-10k-b', 1, 980, 480), s('iptables-10k', 1, 700, 160),
    ],
    services: 10_000, fillS: 12.5, changeMs: [5, 7, 9, 11, 200], changeAt: 1000, iptablesRules: 140_000, iptablesBackend: 'iptables v1.8.9 (nf_tables)',
  };
  const text = lbReport(r, { secs: 3, rounds: 2 }).join('\n');
  assert.match(text, /ClusterIP \/ backend IP, 1 service: TCP_RR 0\.980×, TCP_CRR 0\.970×/);
  assert.match(text, /Tendril \/ iptables: TCP_RR 1\.400×, TCP_CRR 3\.000×/);
  assert.match(text, /p50 9 ms, p99 200 ms, max 200 ms/);
  assert.match(text, /\| kube-proxy iptables, 10000 services \(140000 nat \+ filter rules\) \| 700 \|/);
});
