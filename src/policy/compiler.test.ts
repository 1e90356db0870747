// PolicyCompiler unit behaviour: port blocks, describeEntry, selects(), cidrsOf(), caching and scale.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyCompiler } from './compiler.js';
import { IDENTITY_HOST, reservedIdentities } from './identity.js';
import { parsePolicyObject } from './parse.js';
import { describeEntry, portRangeBlocks } from './ports.js';
import { allows, checkInvariants, clusterView, ipBlockIdentities, POD_LIST } from './testing.js';
import type { EndpointView, IdentityInfo, Policy, PolicyEntry } from './types.js';

function knp(name: string, namespace: string, spec: unknown): Policy {
  return parsePolicyObject({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec });
}

test('portRangeBlocks() covers a range exactly with the fewest aligned blocks', () => {
  assert.deepEqual(
    portRangeBlocks(79, 1026).map((b) => `${b.port}/${b.prefixLen}`),
    ['79/16', '80/12', '96/11', '128/9', '256/8', '512/7', '1024/15', '1026/16'],
  );
  assert.deepEqual(portRangeBlocks(80, 80), [{ port: 80, prefixLen: 16 }]);
  assert.deepEqual(portRangeBlocks(0, 65535), [{ port: 0, prefixLen: 0 }]);
  assert.equal(portRangeBlocks(1, 65535).length, 16);
  assert.throws(() => portRangeBlocks(5, 4), RangeError);
  // Property: for random ranges the blocks are disjoint, aligned and their union is the range.
  let seed = 12345;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  for (let i = 0; i < 300; i++) {
    const a = rnd(65536);
    const b = Math.min(65535, a + rnd(i % 2 === 0 ? 70000 : 300));
    let next = a;
    for (const blk of portRangeBlocks(a, b)) {
      const size = 2 ** (16 - blk.prefixLen);
      assert.equal(blk.port, next, `${a}-${b}: contiguous`);
      assert.equal(blk.port % size, 0, `${a}-${b}: aligned`);
      next = blk.port + size;
    }
    assert.equal(next, b + 1, `${a}-${b}: ends at the range end`);
  }
});

test('describeEntry() prints ports like `bpf policy get`', () => {
  const e = (over: Partial<PolicyEntry>): PolicyEntry => ({ direction: 'ingress', identity: 0, protocol: 6, port: 80, portPrefixLen: 16, deny: false, derivedFrom: ['k'], ...over });
  assert.deepEqual(describeEntry(e({})), { direction: 'Ingress', verdict: 'Allow', identity: 'ANY', port: '80/TCP' });
  assert.equal(describeEntry(e({ port: 8000, portPrefixLen: 13 })).port, '8000-8007/TCP');
  assert.equal(describeEntry(e({ port: 0, portPrefixLen: 0, protocol: 17 })).port, 'ANY/UDP');
  assert.equal(describeEntry(e({ port: 0, portPrefixLen: 0, protocol: 0 })).port, 'ANY');
  assert.deepEqual(describeEntry(e({ identity: 1, deny: true, direction: 'egress', protocol: 132 })), { direction: 'Egress', verdict: 'Deny', identity: 'host', port: '80/SCTP' });
  assert.equal(describeEntry(e({ identity: 300 })).identity, '300');
});

test('reservedIdentities() lists Cilium numbering with reserved: labels', () => {
  assert.deepEqual(
    reservedIdentities().map((i) => `${i.id}=${i.labels.join(',')}`),
    ['1=reserved:host', '2=reserved:world', '3=reserved:unmanaged', '4=reserved:health', '5=reserved:init', '6=reserved:remote-node'],
  );
});

test('selects() matches the subject selector within the policy namespace only', () => {
  const c = new PolicyCompiler();
  const p = knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } } });
  const [xa, xb] = [POD_LIST[0]!, POD_LIST[1]!];
  const ya = POD_LIST[3]!;
  assert.equal(c.selects(p, xa), true);
  assert.equal(c.selects(p, xb), false);
  assert.equal(c.selects(p, ya), false);
  assert.equal(c.selects(knp('all', 'y', { podSelector: {} }), ya), true);
});

test('cidrsOf() lists every TendrilNetworkPolicy cidr and except once, sorted, without 0.0.0.0/0; ipBlocksOf() the NetworkPolicy ones, with it', () => {
  const ps = [
    knp('a', 'x', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.9.9.9/8', except: ['10.1.0.0/16'] } }, { ipBlock: { cidr: '0.0.0.0/0', except: ['192.168.0.0/16'] } }] }] }),
    parsePolicyObject({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: 't', namespace: 'x' },
      spec: { endpointSelector: {}, egress: [{ toCIDR: ['10.0.0.0/8', '1.2.3.4', '0.0.0.0/0'] }], egressDeny: [{ toCIDRSet: [{ cidr: '172.16.0.0/12', except: ['172.16.5.0/24'] }] }] },
    }),
  ];
  assert.deepEqual(PolicyCompiler.cidrsOf(ps), ['1.2.3.4/32', '10.0.0.0/8', '172.16.0.0/12', '172.16.5.0/24']);
  assert.deepEqual(PolicyCompiler.ipBlocksOf(ps), ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '192.168.0.0/16']);
});

test('an ipBlock peer compiles to the ipBlock identities inside it and outside its excepts, never to CIDR or pod identities', () => {
  const c = new PolicyCompiler();
  const p = knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }] }] });
  const blocks = ipBlockIdentities([p, knp('q', 'y', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.1.2.0/24' } }, { ipBlock: { cidr: '10.2.0.0/16' } }] }] })]);
  c.setCluster(clusterView(POD_LIST, blocks));
  const idOf = (b: string): number => blocks.find((i) => i.ipBlock === b)!.id;
  const ids = c.compile(POD_LIST[0]!, [p]).entries.filter((e) => e.identity !== IDENTITY_HOST).map((e) => e.identity);
  assert.deepEqual(ids, [idOf('10.0.0.0/8'), idOf('10.2.0.0/16')], '10.1.2.0/24 lies inside the except');
});

test('setCluster() invalidates cached selections: a new identity is picked up by existing policies', () => {
  const c = new PolicyCompiler();
  const p = [knp('p', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'db' } } }] }] })];
  const xa = POD_LIST[0]!;
  c.setCluster(clusterView());
  const before = c.compile(xa, p);
  assert.deepEqual(before.entries.map((e) => e.identity), [1]);
  const view = clusterView();
  view.identities.push({ id: 999, labels: ['k8s:role=db', 'k8s:io.kubernetes.pod.namespace=x'] });
  c.setCluster(view);
  assert.deepEqual(c.compile(xa, p).entries.map((e) => e.identity), [1, 999]);
  // Same answer from the cache on the second compile.
  assert.deepEqual(c.compile(xa, p), c.compile(xa, p));
});

test('compile() shares results between endpoints with the same selection, but not across named ports', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  const ps = [knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 'web' }] }] })];
  const base = POD_LIST[0]!;
  const a: EndpointView = { ...base, namedPorts: [{ name: 'web', port: 8080, protocol: 'TCP' }] };
  const b: EndpointView = { ...base, id: 77, namedPorts: [{ name: 'web', port: 9090, protocol: 'TCP' }] };
  const pa = c.compile(a, ps);
  const pb = c.compile(b, ps);
  assert.deepEqual(pa.entries.filter((e) => e.identity === 0).map((e) => e.port), [8080]);
  assert.deepEqual(pb.entries.filter((e) => e.identity === 0).map((e) => e.port), [9090]);
  // The same selection again: equal result, and the caller owns its entries array.
  const pa2 = c.compile({ ...a, id: 78 }, ps);
  assert.deepEqual(pa2, pa);
  pa2.entries.length = 0;
  assert.notEqual(c.compile(a, ps).entries.length, 0);
});

test('compile() output is deterministic regardless of policy order', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  const ps = [
    knp('p1', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 90 }] }, { from: [{ namespaceSelector: {} }], ports: [{ port: 85 }] }] }),
    knp('p2', 'x', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], egress: [{ to: [{ podSelector: {} }] }] }),
  ];
  const a = c.compile(POD_LIST[0]!, ps);
  const b = c.compile(POD_LIST[0]!, [...ps].reverse());
  assert.deepEqual(a, b);
  checkInvariants('x/a', a);
});

test('compile() scales: 1000 endpoints x 50 policies x 1000 identities', () => {
  const namespaces = Array.from({ length: 10 }, (_, i) => `ns${i}`);
  const identities: IdentityInfo[] = [...reservedIdentities()];
  for (let i = 0; i < 1000; i++) {
    const ns = namespaces[i % 10]!;
    identities.push({ id: 256 + i, labels: [`k8s:app=app${i % 50}`, `k8s:tier=t${i % 3}`, `k8s:io.kubernetes.pod.namespace=${ns}`, `k8s:io.cilium.k8s.namespace.labels.team=team${i % 5}`] });
  }
  for (let i = 0; i < 20; i++) identities.push({ id: 16777217 + i, labels: ['reserved:world'], cidr: `10.${i}.0.0/16` });
  for (const [i, b] of ['10.0.0.0/8', '10.3.0.0/16'].entries()) identities.push({ id: 16777300 + i, labels: [`ipblock:${b}`], ipBlock: b });
  const endpoints: EndpointView[] = identities
    .filter((i) => i.id >= 256 && i.cidr === undefined && i.ipBlock === undefined)
    .map((i, n) => ({
      id: n + 1,
      identity: i.id,
      labels: i.labels,
      namespace: i.labels.find((l) => l.startsWith('k8s:io.kubernetes.pod.namespace='))!.split('=')[1]!,
      namedPorts: [{ name: 'http', port: 8080, protocol: 'TCP' as const }],
    }));
  const policies: Policy[] = [];
  for (let i = 0; i < 50; i++) {
    const ns = namespaces[i % 10]!;
    policies.push(
      knp(`p${i}`, ns, {
        podSelector: { matchLabels: { app: `app${i}` } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [
          { from: [{ podSelector: { matchLabels: { tier: `t${i % 3}` } } }, { namespaceSelector: { matchLabels: { team: `team${i % 5}` } }, podSelector: { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['t0'] }] } }], ports: [{ port: 'http' }, { port: 8000 + i, endPort: 8100 + i }] },
          { from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.3.0.0/16'] } }], ports: [{ port: 443 }] },
        ],
        egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }, { port: 53, protocol: 'UDP' }] }],
      }),
    );
  }
  const c = new PolicyCompiler();
  c.setCluster({ identities, endpoints });
  let entries = 0;
  for (const ep of endpoints) {
    const pol = c.compile(ep, policies);
    entries += pol.entries.length;
    if (ep.id % 97 === 0) checkInvariants(`ep ${ep.id}`, pol);
  }
  assert.ok(entries > 1_000_000, `compiled ${entries} entries`);
  // Spot-check one verdict: app0 pods (ns0) accept 443 from 10.2.x but not from 10.3.x.
  const ep0 = endpoints[0]!;
  const pol = c.compile(ep0, policies);
  assert.equal(allows(pol, 'ingress', 16777217 + 2, 6, 443, 16777300), true);
  assert.equal(allows(pol, 'ingress', 16777217 + 3, 6, 443, 16777301), false);
});

test('compile() exact entries: ranges, deny removal, derivedFrom, allow-localhost', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  const xb = POD_LIST[1]!.identity;
  const ps = [
    knp('web', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 79, endPort: 96 }, { port: 8080, protocol: 'UDP' }] }] }),
    parsePolicyObject({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: 'no-88', namespace: 'x' },
      spec: { endpointSelector: { matchLabels: { pod: 'a' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }], toPorts: [{ ports: [{ port: '88', endPort: 95, protocol: 'TCP' }] }] }] },
    }),
  ];
  const got = c.compile(POD_LIST[0]!, ps);
  assert.deepEqual(got.ingress, { enforced: true, defaultDeny: true });
  assert.deepEqual(got.egress, { enforced: false, defaultDeny: false });
  assert.equal(allows(got, 'ingress', xb, 6, 87), true);
  assert.equal(allows(got, 'ingress', xb, 6, 88), false);
  assert.equal(allows(got, 'ingress', xb, 6, 96), true);
  // A wider deny removes the allows it covers (they would win the LPM otherwise).
  const wide = c.compile(POD_LIST[0]!, [
    ps[0]!,
    parsePolicyObject({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: 'no-64-127', namespace: 'x' },
      spec: { endpointSelector: {}, ingressDeny: [{ fromEndpoints: [{ matchLabels: { pod: 'b' } }], toPorts: [{ ports: [{ port: '64', endPort: 127, protocol: 'TCP' }] }] }] },
    }),
  ]);
  assert.deepEqual(
    wide.entries.filter((e) => e.identity === xb).map((e) => `${e.deny ? 'deny' : 'allow'} ${e.protocol}/${e.port}/${e.portPrefixLen}`),
    ['deny 6/64/10', 'allow 17/8080/16'],
  );
  const W = ['NetworkPolicy/x/web'];
  const D = ['TendrilNetworkPolicy/x/no-88'];
  assert.deepEqual(got.entries, [
    { direction: 'ingress', identity: 1, protocol: 0, port: 0, portPrefixLen: 0, deny: false, derivedFrom: ['reserved:allow-localhost'] },
    { direction: 'ingress', identity: xb, protocol: 6, port: 79, portPrefixLen: 16, deny: false, derivedFrom: W },
    // 80-95 stays allowed as one block; the narrower deny 88-95 inside it wins by longest prefix.
    { direction: 'ingress', identity: xb, protocol: 6, port: 80, portPrefixLen: 12, deny: false, derivedFrom: W },
    { direction: 'ingress', identity: xb, protocol: 6, port: 88, portPrefixLen: 13, deny: true, derivedFrom: D },
    { direction: 'ingress', identity: xb, protocol: 6, port: 96, portPrefixLen: 16, deny: false, derivedFrom: W },
    { direction: 'ingress', identity: xb, protocol: 17, port: 8080, portPrefixLen: 16, deny: false, derivedFrom: W },
  ]);
});

test('Tendril ingressDeny: [{}] alone puts ingress under default deny and denies nothing explicitly', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  const p = parsePolicyObject({ apiVersion: 'tendril.io/v2', kind: 'TendrilNetworkPolicy', metadata: { name: 'd', namespace: 'x' }, spec: { endpointSelector: {}, ingressDeny: [{}] } });
  const got = c.compile(POD_LIST[0]!, [p]);
  assert.deepEqual(got.ingress, { enforced: true, defaultDeny: true });
  assert.deepEqual(got.entries.map((e) => [e.identity, e.deny]), [[1, false]]);
});

test('compile() agrees with a direct rule oracle on random allow/deny port ranges (two-LPM datapath model)', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  let seed = 42;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const protos = ['TCP', 'UDP', 'ANY'] as const;
  const protoNum = { TCP: 6, UDP: 17 } as const;
  const target = POD_LIST[0]!;
  for (let round = 0; round < 40; round++) {
    interface R { deny: boolean; peer: string | null; proto: (typeof protos)[number] | null; from: number; to: number }
    const rules: R[] = [];
    for (let i = 0; i < 1 + rnd(6); i++) {
      const from = 1 + rnd(200);
      const to = Math.min(65535, from + rnd(i % 2 === 0 ? 40 : 300));
      rules.push({ deny: rnd(3) === 0, peer: rnd(3) === 0 ? null : ['a', 'b', 'c'][rnd(3)]!, proto: rnd(5) === 0 ? null : protos[rnd(3)]!, from, to });
    }
    const section = (r: R): unknown => ({
      ...(r.peer === null ? {} : { fromEndpoints: [{ matchLabels: { pod: r.peer } }] }),
      ...(r.proto === null ? (r.peer === null ? { fromEntities: ['all'] } : {}) : { toPorts: [{ ports: [{ port: String(r.from), endPort: r.to, protocol: r.proto }] }] }),
    });
    const policy = parsePolicyObject({
      apiVersion: 'tendril.io/v2',
      kind: 'TendrilNetworkPolicy',
      metadata: { name: `r${round}`, namespace: 'x' },
      spec: { endpointSelector: { matchLabels: { pod: 'a' } }, ingress: [{}, ...rules.filter((r) => !r.deny).map(section)], ingressDeny: rules.filter((r) => r.deny).map(section) },
    });
    const pol = c.compile(target, [policy]);
    checkInvariants(`round ${round}`, pol);
    for (const src of POD_LIST.slice(1, 3)) {
      const pod = src.name.split('/')[1]!;
      for (const proto of ['TCP', 'UDP'] as const) {
        for (let port = 0; port < 400; port++) {
          const hit = (r: R): boolean =>
            (r.peer === null || r.peer === pod) && (r.proto === null || ((r.proto === 'ANY' || r.proto === proto) && port >= r.from && port <= r.to));
          const want = !rules.some((r) => r.deny && hit(r)) && rules.some((r) => !r.deny && hit(r));
          assert.equal(allows(pol, 'ingress', src.identity, protoNum[proto], port), want, `round ${round} ${src.name} ${port}/${proto} ${JSON.stringify(rules)}`);
        }
      }
    }
  }
});

test('icmps compile to protocol 1 entries, type << 8 | code in the port: prefix 8 for a type, 16 for a type and code', () => {
  const c = new PolicyCompiler();
  c.setCluster(clusterView());
  const p = parsePolicyObject({
    apiVersion: 'tendril.io/v2',
    kind: 'TendrilNetworkPolicy',
    metadata: { name: 'i', namespace: 'x' },
    spec: { endpointSelector: {}, egress: [{ icmps: [{ fields: [{ type: 8 }, { type: 3, code: 4 }] }] }] },
  });
  const got = c.compile(POD_LIST[0]!, [p]).entries.map((e) => [e.direction, e.identity, e.protocol, e.port, e.portPrefixLen, describeEntry(e).port]);
  assert.deepEqual(got, [
    ['egress', 0, 1, 0x0304, 16, '3:4/ICMP'],
    ['egress', 0, 1, 0x0800, 8, '8/ICMP'],
  ]);
});
