// Reachability table for TendrilNetworkPolicy (CiliumNetworkPolicy semantics), deny rules and enforcement modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicyObject } from './parse.js';
import { expectedMatrix, POD_LIST, Scenario, type TestPod } from './testing.js';
import type { Policy } from './types.js';

function tnp(name: string, namespace: string, spec: unknown): Policy {
  return parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name, namespace }, spec });
}

function tnpSpecs(name: string, namespace: string, specs: unknown[]): Policy {
  return parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name, namespace }, specs });
}

const ALL = (): boolean => true;
const nsOf = (p: TestPod): string => p.namespace;
const A = { matchLabels: { pod: 'a' } };

test('Tendril ingress: [{}] puts the endpoint under policy and allows nothing (Cilium default-deny idiom)', () => {
  const s = new Scenario([tnp('deny', 'x', { endpointSelector: A, ingress: [{}] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((_f, t) => t.name !== 'x/a'));
  assert.deepEqual(s.policy('x/a').ingress, { enforced: true, defaultDeny: true });
  assert.equal(s.reach('host', 'x/a', 80), true, 'allow-localhost');
});

test('Tendril ingress: [] or absent does not put the direction under policy', () => {
  for (const spec of [{ endpointSelector: A, ingress: [] }, { endpointSelector: A }]) {
    const s = new Scenario([tnp('p', 'x', spec)]);
    assert.equal(s.policy('x/a').ingress.enforced, false, JSON.stringify(spec));
    assert.deepEqual(s.matrix(80), expectedMatrix(ALL));
  }
});

test('Tendril rule with toPorts and no peer applies to every peer (L4-only), incl. world', () => {
  const s = new Scenario([tnp('l4', 'x', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] })]);
  assert.equal(s.reach('z/c', 'x/a', 80), true);
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), true);
  assert.equal(s.reach('z/c', 'x/a', 81), false);
  assert.equal(s.reach('z/c', 'x/a', 80, 'UDP'), false);
});

test('Tendril fromEndpoints [{}] = every endpoint of the policy namespace; naming the namespace label crosses namespaces', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{}] }] })]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || nsOf(f) === 'x'));
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
  const cross = new Scenario([
    tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'y', 'any:pod': 'b' } }] }] }),
  ]);
  assert.deepEqual(cross.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name === 'y/b'));
  const allNs = new Scenario([
    tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{ matchExpressions: [{ key: 'io.kubernetes.pod.namespace', operator: 'Exists' }] }] }] }),
  ]);
  assert.deepEqual(allNs.matrix(80), expectedMatrix(ALL));
  assert.equal(allNs.reach('ip:8.8.8.8', 'x/a', 80), false);
});

test('Tendril selector keys: k8s:app, any:app and bare app all match the k8s label; reserved:x does not', () => {
  for (const key of ['pod', 'k8s:pod', 'any:pod']) {
    const s = new Scenario([tnp('p', 'x', { endpointSelector: { matchLabels: { [key]: 'a' } }, ingress: [{ fromEndpoints: [{ matchLabels: { [key]: 'b' } }] }] })]);
    assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name === 'x/b'), key);
  }
  const r = new Scenario([tnp('p', 'x', { endpointSelector: { matchLabels: { 'reserved:pod': 'a' } }, ingress: [{}] })]);
  assert.deepEqual(r.matrix(80), expectedMatrix(ALL));
});

test('Tendril fromEndpoints naming reserved:host selects the host identity', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: A, egress: [{ toEndpoints: [{ matchLabels: { 'reserved:host': '' } }] }] })]);
  assert.equal(s.reach('x/a', 'host', 10250), true);
  assert.equal(s.reach('x/a', 'x/b', 80), false);
});

test('entities: world (2 and every CIDR identity), cluster, host, all, none', () => {
  const world = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEntities: ['world'] }] })]);
  assert.equal(world.reach('ip:8.8.8.8', 'x/a', 80), true);
  assert.equal(world.reach('ip:10.1.1.1', 'x/a', 80), true);
  assert.equal(world.reach('ip:192.168.0.1', 'x/a', 80), true);
  assert.equal(world.reach('y/b', 'x/a', 80), false);

  const cluster = new Scenario([tnp('p', 'x', { endpointSelector: A, egress: [{ toEntities: ['cluster'] }] })]);
  assert.deepEqual(cluster.matrix(80), expectedMatrix(ALL));
  assert.equal(cluster.reach('x/a', 'host', 80), true);
  assert.equal(cluster.reach('x/a', 'ip:8.8.8.8', 80), false);
  const ids = new Set(cluster.policy('x/a').entries.filter((e) => e.direction === 'egress').map((e) => e.identity));
  for (const id of [1, 3, 4, 5, 6]) assert.ok(ids.has(id), `cluster includes reserved ${id}`);
  assert.ok(!ids.has(2));

  const host = new Scenario([tnp('p', 'x', { endpointSelector: A, egress: [{ toEntities: ['host'] }] })]);
  assert.equal(host.reach('x/a', 'host', 80), true);
  assert.equal(host.reach('x/a', 'x/b', 80), false);

  const all = new Scenario([tnp('p', 'x', { endpointSelector: A, egress: [{ toEntities: ['all'] }] })]);
  assert.equal(all.reach('x/a', 'ip:8.8.8.8', 443), true);
  assert.deepEqual(all.policy('x/a').entries.filter((e) => e.direction === 'egress').map((e) => e.identity), [0]);

  const none = new Scenario([tnp('p', 'x', { endpointSelector: A, egress: [{ toEntities: ['none'], toPorts: [{ ports: [{ port: 80 }] }] }] })]);
  assert.equal(none.reach('x/a', 'x/b', 80), false, 'none selects nothing, even with toPorts');
});

test('fromCIDR and fromCIDRSet with except', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }] }, { fromCIDR: ['192.168.0.0/24'] }] })]);
  assert.equal(s.reach('ip:10.9.9.9', 'x/a', 80), true);
  assert.equal(s.reach('ip:10.1.9.9', 'x/a', 80), false);
  assert.equal(s.reach('ip:192.168.0.3', 'x/a', 80), true);
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), false);
  assert.equal(s.reach('x/b', 'x/a', 80), false);
});

test('toPorts protocol ANY (the default) covers TCP, UDP and SCTP on that port only', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{}], toPorts: [{ ports: [{ port: '80' }] }] }] })]);
  for (const proto of ['TCP', 'UDP', 'SCTP'] as const) {
    assert.equal(s.reach('x/b', 'x/a', 80, proto), true, proto);
    assert.equal(s.reach('x/b', 'x/a', 81, proto), false, proto);
  }
  const any = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{}], toPorts: [{ ports: [{ port: '0', protocol: 'ANY' }] }] }] })]);
  assert.equal(any.reach('x/b', 'x/a', 4242, 'UDP'), true, 'port 0 = every port');
  const range = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: 8000, endPort: 8191, protocol: 'TCP' }] }] }] })]);
  assert.equal(range.reach('y/c', 'x/a', 8191), true);
  assert.equal(range.reach('y/c', 'x/a', 8192), false);
});

test('Tendril named port (ANY protocol) resolves to the container port of that name', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: 'serve-81-udp' }] }] }] })]);
  assert.equal(s.reach('y/a', 'x/a', 81, 'UDP'), true);
  assert.equal(s.reach('y/a', 'x/a', 81, 'TCP'), false);
});

test('ingressDeny beats allow: same identity, wildcard identity, narrower and wider ports', () => {
  const xb = { matchLabels: { pod: 'b' } };
  // Same identity, deny narrower than allow: only the denied port closes.
  const narrow = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [xb] }], ingressDeny: [{ fromEndpoints: [xb], toPorts: [{ ports: [{ port: 80, protocol: 'TCP' }] }] }] })]);
  assert.equal(narrow.reach('x/b', 'x/a', 80), false);
  assert.equal(narrow.reach('x/b', 'x/a', 81), true);
  assert.equal(narrow.reach('x/b', 'x/a', 80, 'UDP'), true);
  // Same identity, deny wider than allow: the allow entry is removed (the LPM would prefer it otherwise).
  const wide = new Scenario([
    tnp('p', 'x', {
      endpointSelector: A,
      ingress: [{ fromEndpoints: [xb], toPorts: [{ ports: [{ port: 80, protocol: 'TCP' }] }] }],
      ingressDeny: [{ fromEndpoints: [xb], toPorts: [{ ports: [{ port: 64, endPort: 127, protocol: 'TCP' }] }] }],
    }),
  ]);
  assert.equal(wide.reach('x/b', 'x/a', 80), false);
  const xbId = POD_LIST.find((p) => p.name === 'x/b')!.identity;
  assert.ok(!wide.policy('x/a').entries.some((e) => e.identity === xbId && !e.deny), 'covered allow removed');

  // Deny on the wildcard identity beats an allow of a specific identity.
  const wildDeny = new Scenario([
    tnp('p', 'x', {
      endpointSelector: A,
      ingress: [{ fromEndpoints: [xb] }],
      ingressDeny: [{ toPorts: [{ ports: [{ port: 81, protocol: 'TCP' }] }] }],
    }),
  ]);
  assert.equal(wildDeny.reach('x/b', 'x/a', 80), true);
  assert.equal(wildDeny.reach('x/b', 'x/a', 81), false);

  // Deny of a specific identity, allow for everyone: only that identity is cut off.
  const idDeny = new Scenario([tnp('p', 'x', { endpointSelector: A, ingress: [{ fromEntities: ['all'] }], ingressDeny: [{ fromEndpoints: [xb] }] })]);
  assert.deepEqual(idDeny.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name !== 'x/b'));
  assert.equal(idDeny.reach('ip:8.8.8.8', 'x/a', 80), true);

  // Deny everything from world while allowing 443 from everyone: world loses 443 too.
  const world = new Scenario([
    tnp('p', 'x', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: 443, protocol: 'TCP' }] }] }], ingressDeny: [{ fromEntities: ['world'] }] }),
  ]);
  assert.equal(world.reach('ip:8.8.8.8', 'x/a', 443), false);
  assert.equal(world.reach('ip:10.1.0.1', 'x/a', 443), false);
  assert.equal(world.reach('y/a', 'x/a', 443), true);

  // A deny in one policy beats an allow in another; a deny on the host beats allow-localhost.
  const split = new Scenario([
    tnp('allow', 'x', { endpointSelector: {}, ingress: [{ fromEntities: ['cluster'] }] }),
    tnp('deny', 'x', { endpointSelector: A, ingressDeny: [{ fromEntities: ['host'] }, { fromEndpoints: [{ matchLabels: { 'io.kubernetes.pod.namespace': 'y' } }] }] }),
  ]);
  assert.equal(split.reach('host', 'x/a', 80), false);
  assert.equal(split.reach('host', 'x/b', 80), true);
  assert.equal(split.reach('y/a', 'x/a', 80), false);
  assert.equal(split.reach('z/a', 'x/a', 80), true);
});

test('egressDeny beats egress allow and a K8s NetworkPolicy allow', () => {
  const s = new Scenario([
    parsePolicyObject({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'allow-egress', namespace: 'x' },
      spec: { podSelector: {}, policyTypes: ['Egress'], egress: [{}] },
    }),
    tnp('deny', 'x', { endpointSelector: A, egressDeny: [{ toCIDR: ['10.0.0.0/8'] }, { toEndpoints: [{ matchLabels: { pod: 'c' } }], toPorts: [{ ports: [{ port: 81 }] }] }] }),
  ]);
  assert.equal(s.reach('x/a', 'ip:8.8.8.8', 443), true);
  assert.equal(s.reach('x/a', 'ip:10.2.0.1', 443), false);
  assert.equal(s.reach('x/a', 'ip:10.1.0.1', 443), false, 'a more specific CIDR identity inside the denied block');
  assert.equal(s.reach('x/a', 'x/c', 80), true);
  assert.equal(s.reach('x/a', 'x/c', 81), false);
  assert.equal(s.reach('x/a', 'x/c', 81, 'UDP'), false);
  assert.equal(s.reach('x/b', 'x/c', 81), true);
});

test('enableDefaultDeny false: only the denies apply, everything else still passes', () => {
  const s = new Scenario([
    tnp('deny-only', 'x', { endpointSelector: A, enableDefaultDeny: { ingress: false }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }] }] }),
  ]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name !== 'x/b'));
  assert.equal(s.reach('ip:8.8.8.8', 'x/a', 80), true);
  assert.deepEqual(s.policy('x/a').ingress, { enforced: true, defaultDeny: false });
  const allowAll = s.policy('x/a').entries.find((e) => e.identity === 0);
  assert.deepEqual(allowAll?.derivedFrom, ['TendrilNetworkPolicy/x/deny-only']);

  // With an allow-only non-default-deny policy nothing is restricted.
  const allowOnly = new Scenario([tnp('a', 'x', { endpointSelector: A, enableDefaultDeny: { ingress: false, egress: false }, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }] }] })]);
  assert.deepEqual(allowOnly.matrix(80), expectedMatrix(ALL));

  // Another policy with default deny wins the default.
  const both = new Scenario([
    tnp('a', 'x', { endpointSelector: A, enableDefaultDeny: { ingress: false }, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }] }] }),
    tnp('b', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'c' } }] }] }),
  ]);
  assert.deepEqual(both.matrix(80), expectedMatrix((f, t) => t.name !== 'x/a' || f.name === 'x/b' || f.name === 'x/c'));
  assert.ok(!both.policy('x/a').entries.some((e) => e.identity === 0));
});

test('specs: each entry has its own endpointSelector', () => {
  const s = new Scenario([
    tnpSpecs('two', 'x', [
      { endpointSelector: A, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }] }] },
      { endpointSelector: { matchLabels: { pod: 'b' } }, egress: [{ toEndpoints: [{ matchLabels: { pod: 'a' } }] }] },
    ]),
  ]);
  assert.equal(s.reach('x/b', 'x/a', 80), true);
  assert.equal(s.reach('x/c', 'x/a', 80), false);
  assert.equal(s.reach('x/b', 'x/c', 80), false);
  assert.equal(s.policy('x/b').ingress.enforced, false);
  assert.equal(s.policy('x/a').egress.enforced, false);
});

test('mode always: every endpoint enforced both ways with no policy (only the host may reach in)', () => {
  const s = new Scenario([], 'always');
  assert.deepEqual(s.matrix(80), []);
  assert.equal(s.reach('host', 'x/a', 80), true);
  assert.equal(s.reach('x/a', 'host', 80), false);
  const allow = new Scenario([tnp('p', 'x', { endpointSelector: {}, egress: [{ toEntities: ['cluster'] }], ingress: [{ fromEntities: ['cluster'] }] })], 'always');
  assert.deepEqual(allow.matrix(80), expectedMatrix((f, t) => nsOf(f) === 'x' && nsOf(t) === 'x'));
});

test('mode never: nothing enforced and no entries, whatever the policies say', () => {
  const s = new Scenario([tnp('p', 'x', { endpointSelector: {}, ingress: [{}], ingressDeny: [{ fromEntities: ['all'] }] })], 'never');
  assert.deepEqual(s.matrix(80), expectedMatrix(ALL));
  for (const p of POD_LIST) assert.deepEqual(s.policy(p.name).entries, []);
});

const icmp = (type: number, code = 0): number => (type << 8) | code;

test('Tendril icmps: the listed types (by number or name, optionally one code) pass, every other ICMP type and L4 is isolated', () => {
  const s = new Scenario([
    tnp('ping', 'x', {
      endpointSelector: A,
      ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'y' } }], icmps: [{ fields: [{ type: 8, family: 'IPv4' }, { type: 'DestinationUnreachable', code: 4 }] }] }],
    }),
  ]);
  assert.equal(s.reach('y/b', 'x/a', icmp(8), 'ICMP'), true, 'echo request from y');
  assert.equal(s.reach('y/b', 'x/a', icmp(8, 1), 'ICMP'), true, 'a type without code matches every code');
  assert.equal(s.reach('y/b', 'x/a', icmp(3, 4), 'ICMP'), true, 'type 3 code 4');
  assert.equal(s.reach('y/b', 'x/a', icmp(3, 3), 'ICMP'), false, 'type 3, another code');
  assert.equal(s.reach('y/b', 'x/a', icmp(13), 'ICMP'), false, 'timestamp: another type');
  assert.equal(s.reach('z/b', 'x/a', icmp(8), 'ICMP'), false, 'not from z');
  assert.equal(s.reach('y/b', 'x/a', 80), false, 'an ICMP rule allows no TCP');
  // Egress; and an L4 rule isolates every ICMP type.
  const eg = new Scenario([
    tnp('out', 'x', { endpointSelector: A, egress: [{ icmps: [{ fields: [{ type: 'EchoRequest' }] }] }, { toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] }),
  ]);
  assert.equal(eg.reach('x/a', 'z/c', icmp(8), 'ICMP'), true, 'L4-only ICMP rule: every peer');
  assert.equal(eg.reach('x/a', 'ip:8.8.8.8', icmp(8), 'ICMP'), true);
  assert.equal(eg.reach('x/a', 'z/c', icmp(0), 'ICMP'), false, 'echo reply as a new flow');
  assert.equal(eg.reach('x/a', 'z/c', 80), true);
  const l4 = new Scenario([tnp('l4', 'x', { endpointSelector: A, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }] })]);
  assert.equal(l4.reach('y/a', 'x/a', icmp(8), 'ICMP'), false, 'a port rule isolates ICMP');
  const l3 = new Scenario([tnp('l3', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{}] }] })]);
  assert.equal(l3.reach('x/b', 'x/a', icmp(8), 'ICMP'), true, 'an L3-only rule allows every protocol');
  // ingressDeny of one type over an L3 allow.
  const deny = new Scenario([tnp('d', 'x', { endpointSelector: A, ingress: [{ fromEndpoints: [{}] }], ingressDeny: [{ icmps: [{ fields: [{ type: 8 }] }] }] })]);
  assert.equal(deny.reach('x/b', 'x/a', icmp(8), 'ICMP'), false);
  assert.equal(deny.reach('x/b', 'x/a', icmp(13), 'ICMP'), true);
  assert.equal(deny.reach('x/b', 'x/a', 80), true);
});

test('Tendril toCIDR keeps Cilium\'s meaning: addresses outside the cluster, never pod IPs (unlike a NetworkPolicy ipBlock)', () => {
  const s = new Scenario([tnp('cidr', 'x', { endpointSelector: A, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }] }] })]);
  assert.equal(s.reach('ip:10.2.3.4', 'x/a', 80), true);
  assert.equal(s.reach('ip:10.1.3.4', 'x/a', 80), false);
  assert.deepEqual(s.matrix(80), expectedMatrix((_f, t) => t.name !== 'x/a'), 'pods (10.244.x.y) are not matched');
});

function ccnp(name: string, spec: unknown, metadata: Record<string, unknown> = {}): Policy {
  return parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilClusterwideNetworkPolicy', metadata: { name, ...metadata }, spec });
}

test('TendrilClusterwideNetworkPolicy: no namespace; endpointSelector and fromEndpoints span every namespace', () => {
  const p = ccnp('b-from-c', { endpointSelector: { matchLabels: { pod: 'b' } }, ingress: [{ fromEndpoints: [{ matchLabels: { pod: 'c' } }] }] });
  assert.equal(p.namespace, '');
  const s = new Scenario([p]);
  assert.deepEqual(s.matrix(80), expectedMatrix((f, t) => t.labels[0] !== 'k8s:pod=b' || f.labels[0] === 'k8s:pod=c'));
  assert.deepEqual(s.policy('z/b').entries.find((e) => e.identity !== 1)?.derivedFrom, ['TendrilClusterwideNetworkPolicy/b-from-c']);
  // A namespace label in a selector still narrows it.
  const y = new Scenario([ccnp('y-only', { endpointSelector: { matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'y' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'y' } }] }] })]);
  assert.deepEqual(y.matrix(80), expectedMatrix((f, t) => nsOf(t) !== 'y' || nsOf(f) === 'y'));
  assert.throws(() => ccnp('n', { endpointSelector: {} }, { namespace: 'x' }), /metadata\.namespace: a TendrilClusterwideNetworkPolicy is cluster-scoped and has no namespace/);
});
