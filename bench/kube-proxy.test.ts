import { test } from 'node:test';
import assert from 'node:assert/strict';

import { kpChain, kpProbability, kpVip, kubeProxyRules, restoreChunks } from './kube-proxy.js';

test('chain names are kube-proxy\'s shape: prefix and 16 base32 characters, stable per key, distinct per key', () => {
  const a = kpChain('KUBE-SVC-', 'bench/s1:80/tcp');
  assert.match(a, /^KUBE-SVC-[A-Z2-7]{16}$/);
  assert.equal(kpChain('KUBE-SVC-', 'bench/s1:80/tcp'), a);
  assert.notEqual(kpChain('KUBE-SVC-', 'bench/s2:80/tcp'), a);
});

test('backend i of n is picked with probability 1/(n-i); the last takes the rest', () => {
  assert.deepEqual([0, 1, 2].map((i) => Number(kpProbability(i, 4))), [0.25, 1 / 3, 0.5].map((p) => Number(p.toFixed(10))));
  const text = kubeProxyRules([{ name: 'ns/s:80', vip: '10.200.0.1', port: 80, backends: [1, 2, 3, 4].map((h) => ({ ip: `172.20.0.${h}`, port: 8080 })) }]);
  const svc = kpChain('KUBE-SVC-', 'ns/s:80/tcp');
  const jumps = text.split('\n').filter((l) => l.startsWith(`-A ${svc} `) && /-j KUBE-SEP-/.test(l));
  assert.equal(jumps.length, 4);
  assert.deepEqual(jumps.map((l) => /--probability ([\d.]+)/.exec(l)?.[1] ?? 'rest'), ['0.2500000000', '0.3333333333', '0.5000000000', 'rest']);
});

test('one KUBE-SERVICES rule per service, in order, to its own KUBE-SVC chain; every chain declared once; DNAT per backend', () => {
  const services = [0, 1, 2].map((i) => ({ name: `ns/s${i}:80`, vip: kpVip('10.200', i), port: 80, backends: [{ ip: '172.20.0.9', port: 8080 }] }));
  const text = kubeProxyRules(services);
  const lines = text.split('\n');
  assert.equal(lines[0], '*nat');
  assert.equal(lines.at(-2), 'COMMIT');
  const nat = lines.slice(0, lines.indexOf('*filter'));
  const portal = nat.filter((l) => l.startsWith('-A KUBE-SERVICES '));
  assert.deepEqual(portal.map((l) => /-d ([\d.]+)\/32/.exec(l)?.[1]), ['10.200.0.1', '10.200.0.2', '10.200.0.3', undefined]);
  assert.match(portal.at(-1)!, /--dst-type LOCAL -j KUBE-NODEPORTS$/, 'KUBE-NODEPORTS is the last rule of KUBE-SERVICES');
  assert.ok(lines.includes('-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'), 'the filter table\'s hooks');
  const declared = nat.filter((l) => l.startsWith(':')).map((l) => l.split(' ')[0]!.slice(1));
  assert.equal(new Set(declared).size, declared.length);
  for (const l of nat.filter((x) => x.startsWith('-A '))) assert.ok(declared.includes(l.split(' ')[1]!) || ['PREROUTING', 'OUTPUT', 'POSTROUTING'].includes(l.split(' ')[1]!), l);
  assert.equal(lines.filter((l) => l.includes('-j DNAT --to-destination 172.20.0.9:8080')).length, 3);
  assert.ok(lines.includes('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully'));
});

test('service addresses skip .0 and .255 and stay in the /16', () => {
  assert.deepEqual([0, 253, 254, 10_000].map((i) => kpVip('10.200', i)), ['10.200.0.1', '10.200.0.254', '10.200.1.1', '10.200.39.95']);
  assert.throws(() => kpVip('10.200', 254 * 256), RangeError);
});

test('restoreChunks() keeps every line in order, declarations of a table before its rules, each piece a whole table', () => {
  const services = Array.from({ length: 50 }, (_, i) => ({ name: `ns/s${i}:80`, vip: kpVip('10.200', i), port: 80, backends: [{ ip: '172.20.0.9', port: 8080 }] }));
  const text = kubeProxyRules(services);
  const pieces = restoreChunks(text, 7);
  assert.ok(pieces.length > 10);
  for (const p of pieces) {
    const l = p.split('\n');
    assert.match(l[0]!, /^\*(nat|filter)$/);
    assert.equal(l.at(-2), 'COMMIT');
  }
  const body = (t: string): string[] => t.split('\n').filter((x) => x.startsWith(':') || x.startsWith('-A '));
  const all = pieces.flatMap(body);
  assert.deepEqual([...all].sort(), [...body(text)].sort());
  assert.deepEqual(all.filter((x) => x.startsWith('-A ')), body(text).filter((x) => x.startsWith('-A ')), 'rules keep their order');
  const firstRule = all.findIndex((x) => x.startsWith('-A '));
  const lastNatDecl = pieces.map((p) => p.startsWith('*nat') && p.includes('\n:')).lastIndexOf(true);
  const firstNatRule = pieces.findIndex((p) => p.startsWith('*nat') && p.includes('\n-A '));
  assert.ok(firstRule > 0 && lastNatDecl < firstNatRule);
});
