// Reachability table for Kubernetes NetworkPolicy, after the upstream docs and e2e model (x,y,z x a,b,c).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicyObject } from './parse.js';
import { expectedMatrix, POD_LIST, Scenario, type TestPod } from './testing.js';
import type { Policy } from './types.js';

function knp(name: string, namespace: string, spec: unknown): Policy {
  return parsePolicyObject({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec });
}

const ALL = (): boolean => true;
const nsOf = (p: TestPod): string => p.namespace;
const podOf = (p: TestPod): string => p.name.split('/')[1]!;

test('no policy: every pod reaches every pod; nothing enforced, no entries', () => {
  const s = new Scenario([]);
  assert.deepEqual(s.matrix(80), expectedMatrix(ALL));
  for (const p of POD_LIST) {
    assert.deepEqual(s.policy(p.name), { ingress: { enforced: false, defaultDeny: false }, egress: { enforced: false, defaultDeny: false }, entries: [] });
  }
});

test('deny-all ingress (podSelector {}, policyTypes [Ingress]) isolates every pod of x; egress stays open; host still allowed', () => {
  const s = new Scenario([knp('deny-all', 'x', { podSelector: {}, policyTypes: ['Ingress'] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((_f, t) => nsOf(t) !== 'x'));
  assert.equal(s.reach('x/a', 'y/a', 80), true);
  assert.equal(s.reach('host', 'x/a', 80), true, 'allow-localhost');
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
  assert.deepEqual(s.policy('x/a').ingress, { enforced: true, defaultDeny: true });
  assert.deepEqual(s.policy('x/a').egress, { enforced: false, defaultDeny: false });
  // The only entry is the local-host allow.
  assert.deepEqual(
    s.policy('x/a').entries.map((e) => [e.direction, e.identity, e.protocol, e.deny, e.derivedFrom]),
    [['ingress', 1, 0, false, ['reserved:allow-localhost']]],
  );
});

test('deny-all ingress written with no policyTypes and no ingress (Ingress is always implied)', () => {
  const s = new Scenario([knp('deny-all', 'x', { podSelector: {} })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((_f, t) => nsOf(t) !== 'x'));
});

test('allow-all ingress (ingress: [{}]) allows every source incl. world, with one wildcard entry', () => {
  const s = new Scenario([knp('deny-all', 'x', { podSelector: {} }), knp('allow-all', 'x', { podSelector: {}, ingress: [{}] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix(ALL));
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 1234, 'UDP'), true);
  assert.ok(s.policy('x/a').entries.some((e) => e.identity === 0 && e.protocol === 0 && !e.deny));
  assert.deepEqual(s.policy('x/a').entries.find((e) => e.identity === 0)?.derivedFrom, ['NetworkPolicy/x/allow-all']);
});

test('default policyTypes: Ingress only while spec.egress is absent or empty; Egress once it has rules', () => {
  const ingressOnly = new Scenario([knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: {} }] }] })]);
  assert.deepEqual(ingressOnly.policy('x/a').egress, { enforced: false, defaultDeny: false });
  assert.equal(ingressOnly.reach('x/a', 'z/c', 80), true);

  const emptyEgress = new Scenario([knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, egress: [] })]);
  assert.equal(emptyEgress.policy('x/a').egress.enforced, false, 'egress: [] does not imply Egress (K8s defaulting)');

  const withEgress = new Scenario([
    knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, egress: [{ to: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }),
  ]);
  assert.equal(withEgress.policy('x/a').egress.enforced, true);
  assert.equal(withEgress.policy('x/a').ingress.enforced, true, 'Ingress is implied too, with no rules: isolated');
  assert.equal(withEgress.reach('x/a', 'x/b', 80), true);
  assert.equal(withEgress.reach('x/a', 'x/c', 80), false);
  assert.equal(withEgress.reach('x/b', 'x/a', 80), false);
});

test('policyTypes [Egress] only: ingress rules in the document are ignored, ingress stays open', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: {}, policyTypes: ['Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] })]);
  assert.equal(s.policy('x/a').ingress.enforced, false);
  assert.equal(s.reach('y/c', 'x/a', 80), true);
  // Egress isolated: nothing at all, not even to the host.
  assert.equal(s.reach('x/a', 'host', 80), false);
  assert.equal(s.reach('x/a', 'y/a', 53, 'UDP'), false);
});

test('egress deny-all in x: x pods reach nobody; others still reach x', () => {
  const s = new Scenario([knp('deny-egress', 'x', { podSelector: {}, policyTypes: ['Egress'] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f) => nsOf(f) !== 'x'));
  assert.equal(s.reach('x/a', 'ip:8.8.8.8', 443), false);
  assert.deepEqual(s.policy('x/a').entries, []);
});

test('empty vs absent from/ports: [] and absent both mean "all"', () => {
  for (const rule of [{}, { from: [] }, { ports: [] }, { from: [], ports: [] }]) {
    const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [rule] })]);
    assert.deepEqual(s.matrix(80), expectedMatrix(ALL), JSON.stringify(rule));
    assert.equal(s.reach('ip:1.2.3.4', 'x/b', 9999, 'SCTP'), true, JSON.stringify(rule));
  }
  // from given, ports absent: those peers on every port and protocol.
  const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] })]);
  assert.equal(s.reach('x/b', 'x/a', 5000, 'UDP'), true);
  assert.equal(s.reach('x/c', 'x/a', 5000, 'UDP'), false);
  // ports given, from absent: every source on those ports only.
  const p = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] })]);
  assert.equal(p.reach('z/c', 'x/a', 80), true);
  assert.equal(p.reach('ip:8.8.8.8', 'x/a', 80), true);
  assert.equal(p.reach('z/c', 'x/a', 81), false);
  assert.equal(p.reach('z/c', 'x/a', 80, 'UDP'), false, 'protocol defaults to TCP');
});

test('podSelector-only peer: pods of the policy namespace only', () => {
  const s = new Scenario([
    knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }),
  ]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name === 'x/b'));
});

test('podSelector {} peer: every pod of the namespace, no other namespace, no world', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: {} }] }] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || nsOf(f) === 'x'));
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
});

test('namespaceSelector-only peer: every pod of matching namespaces', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || nsOf(f) === 'y'));
  // kubernetes.io/metadata.name is a namespace label like any other.
  const m = new Scenario([
    knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'z' } } }] }] }),
  ]);
  assert.deepEqual(m.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || nsOf(f) === 'z'));
});

test('namespaceSelector {}: pods of every namespace, never host-as-peer or world', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix(ALL));
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
  assert.equal(s.reach('ip:10.1.2.3', 'x/a', 80), false);
  const ids = new Set(s.policy('x/a').entries.filter((e) => !e.derivedFrom.includes('reserved:allow-localhost')).map((e) => e.identity));
  assert.deepEqual([...ids].sort(), POD_LIST.map((p) => p.identity).sort());
});

test('namespaceSelector AND podSelector in one peer vs the same selectors as two peers (OR)', () => {
  const and = new Scenario([
    knp('p', 'x', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: 'b' } } }] }],
    }),
  ]);
  assert.deepEqual(and.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name === 'y/b'));
  const or = new Scenario([
    knp('p', 'x', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }, { podSelector: { matchLabels: { pod: 'b' } } }] }],
    }),
  ]);
  assert.deepEqual(or.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || nsOf(f) === 'y' || f.name === 'x/b'));
});

test('matchExpressions In / NotIn / Exists / DoesNotExist on pod and namespace labels', () => {
  const cases: [unknown, (f: TestPod) => boolean][] = [
    [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] } }, (f) => nsOf(f) === 'x' && podOf(f) !== 'a'],
    [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['b'] }] } }, (f) => nsOf(f) === 'x' && podOf(f) !== 'b'],
    [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'Exists' }] } }, (f) => nsOf(f) === 'x'],
    [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'DoesNotExist' }] } }, () => false],
    [{ podSelector: { matchExpressions: [{ key: 'missing', operator: 'NotIn', values: ['v'] }] } }, (f) => nsOf(f) === 'x'],
    [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }, (f) => nsOf(f) !== 'x'],
    [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y', 'z'] }] }, podSelector: { matchLabels: { pod: 'c' } } }, (f) => nsOf(f) !== 'x' && podOf(f) === 'c'],
  ];
  for (const [peer, from] of cases) {
    const s = new Scenario([knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [peer] }] })]);
    assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || from(f)), JSON.stringify(peer));
  }
});

test('ipBlock matches every address in the block, pods included (Kubernetes), minus its excepts; world iff the block covers it', () => {
  // Pods are 10.244.<ns>.<10 + pod>: x/* in 10.244.0.0/24, y/* in 10.244.1.0/24, z/* in 10.244.2.0/24.
  const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16', '10.244.1.0/24'] } }] }] })]);
  assert.equal(s.reach('ip:10.2.3.4', 'x/a', 80), true);
  assert.equal(s.reach('ip:10.1.3.4', 'x/a', 80), false, 'except');
  assert.equal(s.reach('ip:192.168.0.9', 'x/a', 80), false);
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
  assert.equal(s.reach('host', 'x/a', 80), true, 'the node (allow-localhost)');
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => nsOf(t) !== 'x' || nsOf(f) !== 'y'), 'pods inside the block are matched, those of the except are not');
  const world = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }] }] })]);
  assert.equal(world.reach('ip:8.8.8.8', 'x/a', 80), true);
  assert.equal(world.reach('ip:192.168.0.1', 'x/a', 80), true);
  assert.equal(world.reach('ip:10.200.0.1', 'x/a', 80), false);
  assert.equal(world.reach('ip:10.1.0.1', 'x/a', 80), false, 'inside the except');
  assert.deepEqual(world.matrix(80), expectedMatrix((_f, t) => nsOf(t) !== 'x'), 'every pod is inside the except');
  // Egress to an ipBlock.
  const eg = new Scenario([knp('p', 'x', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '192.168.0.0/16' } }], ports: [{ port: 443 }] }] })]);
  assert.equal(eg.reach('x/a', 'ip:192.168.0.7', 443), true);
  assert.equal(eg.reach('x/a', 'ip:192.168.0.7', 80), false);
  assert.equal(eg.reach('x/a', 'ip:10.0.0.1', 443), false);
  assert.equal(eg.reach('x/a', 'y/a', 443), false);
});

test('e2e ipBlock cases: egress to one pod by /32; a block around a pod minus that pod; the same policy updated in place', () => {
  const yb = POD_LIST.find((p) => p.name === 'y/b')!;
  const egress = (ipBlock: unknown, extra: unknown[] = []): ReturnType<typeof knp> =>
    knp('allow-client-a-via-cidr-egress-rule', 'x', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock }, ...extra] }] });
  // "should allow egress access to server in CIDR block": only y/b, by its /32.
  const one = new Scenario([egress({ cidr: `${yb.ip}/32` })]);
  assert.deepEqual(one.matrix(80), expectedMatrix((f, t) => f.name !== 'x/a' || t.name === 'y/b'));
  // "should enforce except clause while egress access to server in CIDR block": y/b's /24 minus y/b.
  const except = new Scenario([egress({ cidr: `${yb.ip.replace(/\.\d+$/, '.0')}/24`, except: [`${yb.ip}/32`] })]);
  assert.deepEqual(except.matrix(80), expectedMatrix((f, t) => f.name !== 'x/a' || (nsOf(t) === 'y' && t.name !== 'y/b')));
  // "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed": the update adds y/b's /32.
  const both = new Scenario([egress({ cidr: `${yb.ip.replace(/\.\d+$/, '.0')}/24`, except: [`${yb.ip}/32`] }, [{ ipBlock: { cidr: `${yb.ip}/32` } }])]);
  assert.deepEqual(both.matrix(80), expectedMatrix((f, t) => f.name !== 'x/a' || nsOf(t) === 'y'));
});

test('named ports: ingress resolves against the destination pod, egress per destination identity', () => {
  const ing = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 'serve-81-tcp' }, { port: 'serve-80-udp', protocol: 'UDP' }] }] })]);
  assert.equal(ing.reach('y/a', 'x/a', 81), true);
  assert.equal(ing.reach('y/a', 'x/a', 80), false);
  assert.equal(ing.reach('y/a', 'x/a', 80, 'UDP'), true);
  assert.equal(ing.reach('y/a', 'x/a', 81, 'UDP'), false);
  // A name with the wrong protocol resolves to nothing (protocol defaults to TCP).
  const wrong = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 'serve-80-udp' }] }] })]);
  assert.equal(wrong.reach('y/a', 'x/a', 80, 'UDP'), false);
  assert.equal(wrong.reach('y/a', 'x/a', 80, 'TCP'), false);
  const unknown = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 'no-such-port' }] }] })]);
  assert.deepEqual(unknown.matrix(80), expectedMatrix((_f, t) => nsOf(t) !== 'x'));

  const eg = new Scenario([
    knp('p', 'x', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 'serve-81-tcp' }] }] }),
  ]);
  assert.equal(eg.reach('x/a', 'y/b', 81), true);
  assert.equal(eg.reach('x/a', 'y/b', 80), false);
  assert.equal(eg.reach('x/a', 'z/b', 81), false);
  const entries = eg.policy('x/a').entries.filter((e) => e.direction === 'egress');
  assert.deepEqual(new Set(entries.map((e) => `${e.protocol}/${e.port}/${e.portPrefixLen}`)), new Set(['6/81/16']));
  assert.equal(entries.length, 3, 'one entry per destination identity');
});

test('egress named port towards "any" resolves to every port with that name in the cluster', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'serve-80-sctp', protocol: 'SCTP' }] }] })]);
  assert.equal(s.reach('x/a', 'z/c', 80, 'SCTP'), true);
  assert.equal(s.reach('x/a', 'z/c', 81, 'SCTP'), false);
  assert.deepEqual(
    s.policy('x/a').entries.map((e) => [e.identity, e.protocol, e.port, e.portPrefixLen]),
    [[0, 132, 80, 16]],
  );
});

test('port ranges (endPort): aligned 80-95 is one block; unaligned 79-1026 is exact at both ends', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 95 }] }] })]);
  assert.deepEqual(
    s.policy('x/a').entries.filter((e) => e.identity === 0).map((e) => [e.protocol, e.port, e.portPrefixLen]),
    [[6, 80, 12]],
  );
  const u = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 79, endPort: 1026 }] }] })]);
  for (const [port, ok] of [[78, false], [79, true], [80, true], [511, true], [512, true], [1000, true], [1025, true], [1026, true], [1027, false], [2048, false]] as const) {
    assert.equal(u.reach('y/a', 'x/a', port), ok, `port ${port}`);
  }
  assert.equal(u.reach('y/a', 'x/a', 500, 'UDP'), false);
  const full = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 1, endPort: 65535, protocol: 'UDP' }] }] })]);
  assert.equal(full.reach('y/a', 'x/a', 65535, 'UDP'), true);
  assert.equal(full.reach('y/a', 'x/a', 1, 'UDP'), true);
  assert.equal(full.reach('y/a', 'x/a', 1, 'TCP'), false);
});

test('protocols UDP and SCTP, and a port with a protocol but no number (every port of it)', () => {
  const s = new Scenario([knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 80, protocol: 'UDP' }, { protocol: 'SCTP' }] }] })]);
  assert.equal(s.reach('y/a', 'x/a', 80, 'UDP'), true);
  assert.equal(s.reach('y/a', 'x/a', 80, 'TCP'), false);
  assert.equal(s.reach('y/a', 'x/a', 81, 'UDP'), false);
  assert.equal(s.reach('y/a', 'x/a', 81, 'SCTP'), true);
  assert.equal(s.reach('y/a', 'x/a', 9, 'SCTP'), true);
});

test('multiple policies selecting a pod are a union; derivedFrom names every contributor', () => {
  const s = new Scenario([
    knp('from-b', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
    knp('from-y', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 80 }, { port: 81 }] }] }),
    knp('b-again', 'x', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
  ]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => nsOf(t) !== 'x' || f.name === 'x/b' || (t.name === 'x/a' && nsOf(f) === 'y')));
  assert.deepEqual(s.matrix(81), expectedMatrix((f, t) => nsOf(t) !== 'x' || (t.name === 'x/a' && nsOf(f) === 'y')));
  const xb = POD_LIST.find((p) => p.name === 'x/b')!.identity;
  const e = s.policy('x/a').entries.find((x) => x.identity === xb && x.port === 80);
  assert.deepEqual(e?.derivedFrom, ['NetworkPolicy/x/b-again', 'NetworkPolicy/x/from-b']);
});

test('a policy only selects pods of its own namespace', () => {
  const s = new Scenario([knp('deny', 'y', { podSelector: { matchLabels: { pod: 'a' } } })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((_f, t) => t.name !== 'y/a'));
});

test('both directions enforced: egress of the source and ingress of the destination must both allow', () => {
  const s = new Scenario([
    knp('a-out', 'x', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }),
    knp('b-in', 'x', { podSelector: { matchLabels: { pod: 'b' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }] }] }),
  ]);
  assert.equal(s.reach('x/a', 'x/b', 80), false, 'egress allows, ingress does not');
  assert.equal(s.reach('x/c', 'x/b', 80), true);
  assert.equal(s.reach('x/a', 'x/c', 80), false);
});
