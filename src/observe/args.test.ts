import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQuery, DEFAULT_LAST, parseTimeArg } from './args.js';

const NOW = Date.UTC(2025, 7, 6, 7, 0, 0);
const NOW_NS = BigInt(NOW) * 1_000_000n;

test('parseTimeArg() takes durations before now, RFC 3339 and StampMilli', () => {
  assert.equal(parseTimeArg('5m', NOW), NOW_NS - 300_000_000_000n);
  assert.equal(parseTimeArg('1h30m', NOW), NOW_NS - 5_400_000_000_000n);
  assert.equal(parseTimeArg('1.5s', NOW), NOW_NS - 1_500_000_000n);
  assert.equal(parseTimeArg('2025-08-06T06:50:26.228123456Z'), 1_754_463_026_228_123_456n);
  assert.equal(parseTimeArg('2025-08-06T08:50:26+02:00'), 1_754_463_026_000_000_000n);
  const stamp = parseTimeArg('Aug  6 06:50:26.228', NOW);
  const d = new Date(Number(stamp / 1_000_000n));
  assert.deepEqual([d.getMonth(), d.getDate(), d.getHours(), d.getMinutes(), d.getMilliseconds()], [7, 6, 6, 50, 228]);
  assert.throws(() => parseTimeArg('yesterday'), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('buildQuery() uses hubble observe\'s defaults for the count', () => {
  assert.equal(buildQuery({ filters: [] }).number, DEFAULT_LAST);
  assert.equal(buildQuery({ filters: [], follow: true }).number, undefined, 'follow alone: only new flows');
  assert.equal(buildQuery({ filters: [], last: 5, follow: true }).number, 5);
  assert.equal(buildQuery({ filters: [], since: '5m' }, NOW).number, undefined);
  assert.equal(buildQuery({ filters: [], since: '5m' }, NOW).since, NOW_NS - 300_000_000_000n);
  assert.deepEqual({ ...buildQuery({ filters: [], first: 3 }), whitelist: undefined, blacklist: undefined }, { first: true, number: 3, follow: false, whitelist: undefined, blacklist: undefined });
  assert.equal(buildQuery({ filters: [], all: true }).number, Number.MAX_SAFE_INTEGER);
  assert.throws(() => buildQuery({ filters: [], first: 3, follow: true }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.throws(() => buildQuery({ filters: [], first: 3, last: 2 }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.throws(() => buildQuery({ filters: [], last: 0 }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('buildQuery() keeps flag order for --not and lets --namespace qualify pod names', () => {
  const q = buildQuery({ filters: [{ flag: 'protocol', value: 'tcp' }, { flag: 'not' }, { flag: 'port', value: '22' }] });
  assert.deepEqual(q.whitelist, [{ protocol: ['tcp'] }]);
  assert.deepEqual(q.blacklist, [{ source_port: ['22'] }, { destination_port: ['22'] }]);
  const ns = buildQuery({ filters: [{ flag: 'pod', value: 'coredns' }, { flag: 'namespace', value: 'kube-system' }] });
  assert.deepEqual(ns.whitelist, [{ source_pod: ['kube-system/coredns'] }, { destination_pod: ['kube-system/coredns'] }]);
  const onlyNs = buildQuery({ filters: [{ flag: 'namespace', value: 'kube-system' }] });
  assert.deepEqual(onlyNs.whitelist, [{ source_pod: ['kube-system/'] }, { destination_pod: ['kube-system/'] }]);
  assert.throws(() => buildQuery({ filters: [{ flag: 'ip', value: 'nope' }] }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});
