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
  // nat: 3 hooks + 4 masq rules, per filler 2 + 4*3, per bench port 2 + 3, KUBE-NODEPORTS; filter: 15.
  assert.equal(b.rules, 3 + 4 + 9 * 14 + 2 * 5 + 1 + 15);
  // kube-proxy's default: only sources outside the cluster CIDR are masqueraded, on another /16.
  const d = iptablesBaseline(10, ['10.213.0.200'], '10.213.0.9', { clusterCidr: '10.213.0.0/24' }, '10.201');
  const masq = d.text.split('\n').filter((l) => / -j KUBE-MARK-MASQ$/.test(l) && l.startsWith('-A KUBE-SVC-'));
  assert.equal(masq.length, 11);
  assert.ok(masq.every((l) => l.includes(' ! -s 10.213.0.0/24 ')), masq[0]);
  assert.equal(d.vip, '10.201.0.6');
  assert.equal(iptablesBaseline(10, ['10.213.0.200'], '10.213.0.9', 'none').text.split('\n').filter((l) => l.startsWith('-A KUBE-SVC-') && l.endsWith('-j KUBE-MARK-MASQ')).length, 0);
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
  assert.match(text, /Tendril \/ iptables in front of Tendril: TCP_RR 1\.400×, TCP_CRR 3\.000×/);
  assert.match(text, /p50 9 ms, p99 200 ms, max 200 ms/);
  assert.match(text, /backend IP 10000 services \/ 1 service \(no translation at all\): TCP_RR 1\.000×, TCP_CRR 1\.000×/);
  assert.match(text, /\| kube-proxy iptables \(--masquerade-all\) in front of Tendril's datapath, 10000 services \| 700 \|/);
  assert.doesNotMatch(text, /Tendril \/ kube-proxy \+ ptp|\| kube-proxy iptables \+ ptp/, 'no ptp rows without their samples');
  const withKp = lbReport({ ...r, samples: [...r.samples, s('kp-iptables-10k', 1, 800, 200), s('kp-direct-10k', 1, 900, 400)] }, { secs: 3, rounds: 2 }).join('\n');
  assert.match(withKp, /Tendril \/ kube-proxy \+ ptp: TCP_RR 1\.225×, TCP_CRR 2\.400× \(target TCP_CRR ≥ 2×\)/);
  assert.match(withKp, /kube-proxy \+ ptp: ClusterIP \/ backend IP TCP_CRR 0\.500×/);
});
