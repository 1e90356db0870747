import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeSpec } from '../store/index.js';
import { EXCLUDED_GATEWAY, egressEntries, egressKeyCodec, egressValueCodec, labelsMatch, parseEgressPolicy, planEgress, type EgressGatewayPolicySpec, type EgressPoolState } from './index.js';

const doc = (spec: Record<string, unknown>, name = 'p1'): unknown => ({ apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name }, spec });
const base = {
  selectors: [{ podSelector: { matchLabels: { app: 'egress' } } }],
  destinationCIDRs: ['192.168.10.200/32', '10.0.0.0/16'],
  excludedCIDRs: ['10.0.2.0/24'],
  egressGateway: { nodeSelector: { matchLabels: { 'kubernetes.io/hostname': 'w2' } } },
};

function node(name: string, ip: string, up = true): NodeSpec {
  return { name, addresses: [ip], podCIDRs: [], ...(up ? { routerIP: '172.20.0.1' } : {}) };
}

function policy(name: string, gw: Record<string, unknown> = {}): EgressGatewayPolicySpec {
  return parseEgressPolicy(doc({ ...base, egressGateway: { ...base.egressGateway, ...gw } }, name));
}

describe('parseEgressPolicy()', () => {
  test('accepts Cilium\'s shape and normalizes CIDRs', () => {
    const p = parseEgressPolicy(doc({ ...base, destinationCIDRs: ['10.0.0.5/16'] }));
    assert.equal(p.name, 'p1');
    assert.deepEqual(p.destinationCIDRs, ['10.0.0.0/16']);
    assert.deepEqual(p.excludedCIDRs, ['10.0.2.0/24']);
    assert.equal(p.egressGateway.egressIP, undefined);
  });

  test('names the field of every problem', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...base, destinationCIDRs: [] }, /spec\.destinationCIDRs: expected a non-empty list/],
      [{ ...base, destinationCIDRs: ['10.0.0.0/33'] }, /spec\.destinationCIDRs\[0\]/],
      [{ ...base, excludedCIDRs: ['nope'] }, /spec\.excludedCIDRs\[0\]: "nope" is no IPv4 CIDR/],
      [{ ...base, selectors: [] }, /spec\.selectors: expected a non-empty list/],
      [{ ...base, selectors: [{}] }, /spec\.selectors\[0\]: needs a podSelector or a namespaceSelector/],
      [{ ...base, selectors: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Maybe' }] } }] }, /operator: "Maybe" is not one of In, NotIn, Exists, DoesNotExist/],
      [{ ...base, egressGateway: {} }, /spec\.egressGateway\.nodeSelector: required/],
      [{ ...base, egressGateway: { ...base.egressGateway, egressIP: '1.2.3' } }, /spec\.egressGateway\.egressIP: "1\.2\.3" is no IPv4 address/],
      [{ ...base, destinationCIDR: ['10.0.0.0/8'] }, /spec\.destinationCIDR: unknown field/],
    ];
    for (const [spec, re] of cases) {
      assert.throws(() => parseEgressPolicy(doc(spec)), (err: Error & { code?: string }) => err.code === 'TENDRIL_ERR_EGRESS_POLICY_INVALID' && re.test(err.message), String(re));
    }
    assert.throws(() => parseEgressPolicy({ kind: 'CiliumEgressGatewayPolicy', metadata: { name: 'x' }, spec: base }), /kind: expected "TendrilEgressGatewayPolicy"/);
    assert.throws(() => parseEgressPolicy(doc(base, 'Bad_Name')), /metadata\.name/);
  });
});

describe('labelsMatch()', () => {
  test('matchLabels and every matchExpressions operator, Kubernetes semantics', () => {
    assert.ok(labelsMatch({}, {}));
    assert.ok(labelsMatch({ matchLabels: { a: '1' } }, { a: '1', b: '2' }));
    assert.ok(!labelsMatch({ matchLabels: { a: '1' } }, { a: '2' }));
    assert.ok(labelsMatch({ matchExpressions: [{ key: 'a', operator: 'In', values: ['1', '2'] }] }, { a: '2' }));
    assert.ok(labelsMatch({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, {}));
    assert.ok(!labelsMatch({ matchExpressions: [{ key: 'a', operator: 'Exists' }] }, { b: '' }));
    assert.ok(labelsMatch({ matchExpressions: [{ key: 'a', operator: 'DoesNotExist' }] }, { b: '' }));
  });
});

describe('egressEntries()', () => {
  const status = { gatewayNode: 'w2', gatewayIP: '192.168.10.102', egressIP: '192.168.10.241' };
  const eps = [
    { ip: '172.20.0.3', namespace: 'default', labels: ['k8s:app=egress'] },
    { ip: '172.20.1.3', namespace: 'prod', labels: ['k8s:app=egress'] },
    { ip: '172.20.0.4', namespace: 'default', labels: ['k8s:app=other'] },
  ];

  test('selected pods get one entry per destination and an excluded entry per excluded CIDR', () => {
    const e = egressEntries([{ spec: policy('p1'), status }], eps, new Map());
    assert.deepEqual(
      e.map((x) => `${x.source} ${x.destination} ${x.gatewayIP}`),
      ['172.20.0.3 10.0.0.0/16 192.168.10.102', '172.20.0.3 10.0.2.0/24 0.0.0.1', '172.20.0.3 192.168.10.200/32 192.168.10.102', '172.20.1.3 10.0.0.0/16 192.168.10.102', '172.20.1.3 10.0.2.0/24 0.0.0.1', '172.20.1.3 192.168.10.200/32 192.168.10.102'],
    );
    assert.equal(EXCLUDED_GATEWAY, '0.0.0.1');
  });

  test('namespaceSelector matches the namespace\'s labels and its name', () => {
    const spec = parseEgressPolicy(doc({ ...base, selectors: [{ namespaceSelector: { matchLabels: { team: 'a' } } }, { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'default' } }, podSelector: { matchLabels: { app: 'other' } } }] }));
    const e = egressEntries([{ spec, status }], eps, new Map([['prod', { team: 'a' }]]));
    assert.deepEqual([...new Set(e.map((x) => x.source))].sort(), ['172.20.0.4', '172.20.1.3']);
  });

  test('a policy without a gateway yet contributes nothing; two policies on one pair: the first by name', () => {
    assert.deepEqual(egressEntries([{ spec: policy('p1'), status: { problem: 'no healthy node' } }], eps, new Map()), []);
    const e = egressEntries([{ spec: policy('zz'), status: { ...status, egressIP: '192.168.10.250' } }, { spec: policy('aa'), status }], eps, new Map());
    assert.ok(e.every((x) => x.policy === 'aa'));
  });
});

describe('planEgress()', () => {
  const nodes = [node('ctr', '192.168.10.100'), node('w1', '192.168.10.101'), node('w2', '192.168.10.102')];
  const pool: EgressPoolState = { cidr: '192.168.10.240/30', assigned: {} };

  test('the gateway is the first healthy matching node by name; none matching is a problem', () => {
    const any = parseEgressPolicy(doc({ ...base, egressGateway: { nodeSelector: { matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['w2', 'w1'] }] } } }));
    assert.equal(planEgress([any], nodes, pool).status.get('p1')!.gatewayNode, 'w1');
    assert.equal(planEgress([any], [node('ctr', '192.168.10.100'), node('w1', '192.168.10.101', false), node('w2', '192.168.10.102')], pool).status.get('p1')!.gatewayNode, 'w2');
    const st = planEgress([policy('p1')], nodes.slice(0, 2), pool).status.get('p1')!;
    assert.equal(st.gatewayIP, undefined);
    assert.match(st.problem!, /no healthy node matches egressGateway\.nodeSelector/);
  });

  test('a gateway stays on its node while that is healthy and selected; failover picks the next, and a node back takes nothing over', () => {
    const any = parseEgressPolicy(doc({ ...base, egressGateway: { nodeSelector: { matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['w2', 'w1'] }] } } }));
    assert.equal(planEgress([any], nodes, pool, new Map([['p1', 'w2']])).status.get('p1')!.gatewayNode, 'w2');
    const failed = planEgress([any], nodes.filter((n) => n.name !== 'w2'), pool, new Map([['p1', 'w2']])).status.get('p1')!;
    assert.deepEqual([failed.gatewayNode, failed.gatewayIP], ['w1', '192.168.10.101']);
    // A current gateway the selector no longer picks is left.
    assert.equal(planEgress([any], nodes, pool, new Map([['p1', 'ctr']])).status.get('p1')!.gatewayNode, 'w1');
  });

  test('allocates from the pool without the network and broadcast addresses, never one address twice; exhaustion is a problem', () => {
    const plan = planEgress([policy('a'), policy('b'), policy('c')], nodes, pool);
    assert.equal(plan.status.get('a')!.egressIP, '192.168.10.241');
    assert.equal(plan.status.get('b')!.egressIP, '192.168.10.242');
    assert.match(plan.status.get('c')!.problem!, /no egress IP left in pool 192\.168\.10\.240\/30/);
    assert.deepEqual(plan.pool!.assigned, { a: '192.168.10.241', b: '192.168.10.242' });
  });

  test('assignments survive a restart (the stored pool state), freed ones are reused, given addresses are reserved', () => {
    const first = planEgress([policy('a'), policy('b')], nodes, pool);
    // "Restart": a new plan from the stored state, policy a deleted, policy c new.
    const second = planEgress([policy('b'), policy('c')], nodes, first.pool);
    assert.equal(second.status.get('b')!.egressIP, '192.168.10.242');
    assert.equal(second.status.get('c')!.egressIP, '192.168.10.241');
    // A given egressIP inside the pool is its policy's; nobody else gets it.
    const third = planEgress([policy('a', { egressIP: '192.168.10.241' }), policy('b')], nodes, { cidr: pool.cidr, assigned: { b: '192.168.10.241' } });
    assert.equal(third.status.get('a')!.egressIP, '192.168.10.241');
    assert.equal(third.status.get('b')!.egressIP, '192.168.10.242');
    const ips = [...third.status.values()].map((s) => s.egressIP).filter(Boolean);
    assert.equal(new Set(ips).size, ips.length);
  });

  test('two policies giving the same egressIP: the second by name is refused; no pool and no egressIP is a problem', () => {
    const plan = planEgress([policy('a', { egressIP: '192.168.10.250' }), policy('b', { egressIP: '192.168.10.250' })], nodes, undefined);
    assert.equal(plan.status.get('a')!.egressIP, '192.168.10.250');
    assert.match(plan.status.get('b')!.problem!, /egress IP 192\.168\.10\.250 is policy "a"'s/);
    assert.match(planEgress([policy('c')], nodes, undefined).status.get('c')!.problem!, /no --egress-ip-pool/);
  });
});

describe('egress map codecs', () => {
  test('key and value round-trip in bpf/lib/egress.h\'s layout', () => {
    const k = egressKeyCodec.encode({ source: '172.20.0.3', destination: '10.0.0.0/16' });
    assert.equal(k.toString('hex'), '30000000' + 'ac140003' + '0a000000');
    assert.deepEqual(egressKeyCodec.decode(k), { source: '172.20.0.3', destination: '10.0.0.0/16' });
    const v = egressValueCodec.encode({ egressIP: '192.168.10.241', gatewayIP: '0.0.0.1' });
    assert.equal(v.toString('hex'), 'c0a80af1' + '00000001');
    assert.deepEqual(egressValueCodec.decode(v), { egressIP: '192.168.10.241', gatewayIP: '0.0.0.1' });
  });
});
