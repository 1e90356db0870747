// Unit tests of the policy phase's pure parts: the generated policies (through the real parser and compiler), the
// endpoint plan, and its tables and verdicts (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyCompiler, parsePolicies, reservedIdentities } from '../src/policy/index.js';
import {
  BIG_FIRST_PORT,
  BIG_PORTS,
  FIRST_ENDPOINT_ID,
  SINGLE_LABEL,
  bigPolicy,
  endpointPlan,
  endpointRequest,
  policyBpfRoot,
  portPolicy,
  removeBpfRoot,
  spreadPorts,
  vethBatch,
} from './policy.js';
import { POLICY_10K, POLICY_NONE, POLICY_ORDER, dpRows, latencyVerdict, policyLatencyTable, policyTable, policyVerdicts, type ChangeLatency, type DpSample } from './report.js';

const A = 300; // identity of k8s:app=bench-a in namespace default
const B = 301;

function view(id: number, app: string, extra: string[] = []) {
  return { id, namespace: 'default', identity: id, labels: [`k8s:app=${app}`, 'k8s:io.kubernetes.pod.namespace=default', ...extra], namedPorts: [] };
}

function compiler(): PolicyCompiler {
  const c = new PolicyCompiler();
  c.setCluster({
    identities: [...reservedIdentities(), { id: A, labels: view(A, 'bench-a').labels }, { id: B, labels: view(B, 'bench-b').labels }],
    endpoints: [],
  });
  return c;
}

test('spreadPorts() gives every other port and refuses to pass 65535', () => {
  assert.deepEqual(spreadPorts(4, 10), [10, 12, 14, 16]);
  const big = spreadPorts(BIG_PORTS, BIG_FIRST_PORT);
  assert.equal(new Set(big).size, BIG_PORTS);
  assert.equal(big.at(-1), BIG_FIRST_PORT + 2 * (BIG_PORTS - 1));
  assert.throws(() => spreadPorts(30_000, 10_000), RangeError);
  assert.throws(() => spreadPorts(0, 10), RangeError);
});

test('bigPolicy() is a valid TendrilNetworkPolicy whose ports compile to one entry each on the server, the client allowed', () => {
  const doc = bigPolicy({ name: 'bench-10k', namespace: 'default', serverApp: 'bench-b', clientApp: 'bench-a', ports: spreadPorts(BIG_PORTS, BIG_FIRST_PORT) });
  const [p] = parsePolicies(JSON.stringify(doc), 'test');
  assert.ok(p);
  const c = compiler();
  assert.equal(c.selects(p, view(B, 'bench-b')), true);
  assert.equal(c.selects(p, view(A, 'bench-a')), false);
  const out = c.compile(view(B, 'bench-b'), [p]);
  assert.equal(out.ingress.enforced, true);
  const world = out.entries.filter((e) => e.direction === 'ingress' && e.identity === 2);
  assert.equal(world.length, BIG_PORTS, 'no two ports merged into a range block');
  assert.ok(world.every((e) => e.protocol === 6 && e.portPrefixLen === 16 && !e.deny));
  assert.ok(out.entries.some((e) => e.identity === A && e.protocol === 0 && !e.deny), 'the client may use any port');
  assert.ok(out.entries.length >= BIG_PORTS + 1 && out.entries.length <= BIG_PORTS + 3, `${out.entries.length} entries`);
});

test('portPolicy() without labels selects every endpoint of its namespace, with SINGLE_LABEL only that one', () => {
  const c = compiler();
  const [all] = parsePolicies(JSON.stringify(portPolicy('bench-all', 'default', undefined, 20_001)), 'test');
  const [one] = parsePolicies(JSON.stringify(portPolicy('bench-one', 'default', { ...SINGLE_LABEL }, 30_001)), 'test');
  assert.ok(all && one);
  const single = view(A, 'app-0', ['k8s:bench-single=yes']);
  const other = view(B, 'app-1');
  assert.deepEqual([c.selects(all, single), c.selects(all, other), c.selects(one, single), c.selects(one, other)], [true, true, true, false]);
  assert.equal(c.selects(all, { ...other, namespace: 'elsewhere', labels: ['k8s:app=app-1', 'k8s:io.kubernetes.pod.namespace=elsewhere'] }), false);
  const e = c.compile(single, [one]).entries.filter((x) => x.identity === 2);
  assert.deepEqual(e.map((x) => [x.protocol, x.port, x.portPrefixLen]), [[6, 30_001, 16]]);
});

test('endpointPlan() names, MACs and IDs are unique and fit; labels spread over the apps; one endpoint is single', () => {
  const plan = endpointPlan(1000, 50);
  assert.equal(plan.length, 1000);
  for (const k of ['id', 'hostIf', 'peerIf', 'hostMac', 'podMac', 'podName'] as const) assert.equal(new Set(plan.map((e) => e[k])).size, 1000, k);
  assert.ok(plan.every((e) => e.hostIf.length <= 15 && e.peerIf.length <= 15));
  assert.ok(plan.every((e) => /^02(:[0-9a-f]{2}){5}$/.test(e.hostMac) && /^02(:[0-9a-f]{2}){5}$/.test(e.podMac)));
  assert.equal(plan[0]!.id, FIRST_ENDPOINT_ID);
  assert.equal(new Set(plan.map((e) => e.labels['app'])).size, 50);
  assert.deepEqual(plan.filter((e) => e.labels['bench-single'] === 'yes').map((e) => e.id), [FIRST_ENDPOINT_ID]);
  assert.throws(() => endpointPlan(4000, 50), RangeError);
});

test('vethBatch() creates each pair with its MACs and sets both ends up; endpointRequest() is the agent\'s change request', () => {
  const plan = endpointPlan(2, 50);
  assert.equal(
    vethBatch(plan),
    'link add tdh0 address 02:b0:00:00:00:00 type veth peer name tdp0 address 02:b1:00:00:00:00\nlink set tdh0 up\nlink set tdp0 up\n' +
      'link add tdh1 address 02:b0:00:00:00:01 type veth peer name tdp1 address 02:b1:00:00:00:01\nlink set tdh1 up\nlink set tdp1 up\n',
  );
  const r = endpointRequest(plan[1]!, '10.250.0.9', 'bench');
  assert.deepEqual({ ...r, 'container-id': undefined }, {
    addressing: { ipv4: '10.250.0.9' },
    'interface-name': 'tdh1',
    'host-mac': '02:b0:00:00:00:01',
    mac: '02:b1:00:00:00:01',
    'container-id': undefined,
    labels: { app: 'app-1' },
    'k8s-namespace': 'bench',
    'k8s-pod-name': 'ep-1',
  });
  assert.match(String(r['container-id']), /^[0-9a-f]{64}$/);
});

test('removeBpfRoot() refuses anything but a bench directory under the Tendril bpffs root', () => {
  assert.equal(policyBpfRoot(42), '/sys/fs/bpf/tendril/bench-42');
  for (const bad of ['/sys/fs/bpf/tendril', '/sys/fs/bpf/tendril/lab-b1', '/sys/fs/bpf/tendril/bench-42/../x', '/tmp/bench-1']) {
    assert.throws(() => removeBpfRoot(bad), /Refusing to remove/);
  }
});

function sample(round: number, scenario: string, gbps: number, tps: number): DpSample {
  const m = <T>(value: T) => ({ value, foreignPct: 0, attempts: 1 });
  return { round, scenario, gbps: m(gbps), rr: m({ tps, p50us: 100, p99us: 200 }), rr1: m({ tps: tps * 5, p50us: 20, p99us: 40 }) };
}

test('policyTable() shows the entries and the ratio with the policy vs none', () => {
  const rows = dpRows([sample(1, POLICY_NONE, 20, 10_000), sample(1, POLICY_10K, 19.8, 9_900)], POLICY_ORDER);
  const t = policyTable(rows, 10_001).split('\n');
  assert.equal(t.length, 4);
  assert.equal(t[2], '| tendril | 0 | 20.00 | 10000 | 100.0 / 200.0 | 50000 | 20.0 / 40.0 | baseline |');
  assert.equal(t[3], '| tendril-policy-10k | 10001 | 19.80 | 9900 | 100.0 / 200.0 | 49500 | 20.0 / 40.0 | 0.99 / 0.99 / 0.99 |');
});

const lat = (change: string, affected: number, ms: number[]): ChangeLatency => ({ change, endpoints: 1000, affected, ms, regenMs: ms.map((x) => x / 2) });

test('policyLatencyTable() gives nearest-rank p50 / p99 / max of the round trips and of the agent\'s regeneration', () => {
  const ms = Array.from({ length: 100 }, (_, i) => i + 1); // 1..100 ms
  const t = policyLatencyTable([lat('every endpoint', 1000, ms)]).split('\n');
  assert.equal(t[2], '| every endpoint | 1000 | 1000 | 100 | 50.00 / 99.00 / 100.00 | 25.00 / 49.50 / 50.00 |');
});

test('policyVerdicts() holds streams and RRs to 0.98x and every change kind\'s p99 to 50 ms', () => {
  const rows = dpRows([sample(1, POLICY_NONE, 20, 10_000), sample(1, POLICY_10K, 19, 9_900)], POLICY_ORDER);
  const v = policyVerdicts(rows, [lat('every endpoint', 1000, [10, 20, 30]), lat('one endpoint', 1, [60])]);
  assert.deepEqual(v.map((x) => x.met), [false, true, true, true, false]);
  assert.match(v[0]!.text, /^- NOT MET: same-node TCP throughput with 10,000 policy entries .* = 0\.95x \(target >= 0\.98x\)/);
  assert.equal(v[3]!.text, '- MET: policy change to enforcement, every endpoint (1000 of 1000 endpoints), p99: 30.00 ms (target <= 50 ms)');
  assert.equal(v[4]!.text, '- NOT MET: policy change to enforcement, one endpoint (1 of 1000 endpoints), p99: 60.00 ms (target <= 50 ms): over by 10.00 ms (20.0 % above target)');
  assert.deepEqual(policyVerdicts([], []), []);
  assert.match(latencyVerdict('x', NaN, 50).text, /^- NOT EVALUATED: x/);
});
