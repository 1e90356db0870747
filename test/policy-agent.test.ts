// Integration (issue #4): policy as a node's user meets it through the CLI — node-local import, invalid input
// rejected whole with the field named and nothing in force disturbed, enforcement kept across an agent restart,
// cluster-wide apply refused the same way, identities shared cluster-wide. Root; the lab is the test's own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, restartAgent } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { REPO_ROOT } from '../src/lab/paths.js';

const LAB = `pa${process.pid % 100000}`;
const BIN = path.join(REPO_ROOT, 'bin/tendril');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-policy-agent-'));

function tendril(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ['--lab', LAB, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function file(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

function pod(name: string): { netns: string; ip: string } {
  const p = loadLab(LAB).pods.find((x) => x.name === name);
  assert.ok(p, `pod ${name}`);
  return p;
}

/** HTTP from pod @from to pod @to: true when answered (a policy drop times out). */
function http(from: string, to: string): boolean {
  return execCapture(pod(from).netns, ['curl', '-s', '-m', '1', '-o', '/dev/null', `http://${pod(to).ip}/`]).status === 0;
}

function ping(from: string, to: string): boolean {
  return execCapture(pod(from).netns, ['ping', '-n', '-q', '-c', '1', '-W', '1', pod(to).ip]).status === 0;
}

/** One generous deadline for a condition on a loaded machine: the lab's agents enforce within it, or the test fails. */
const DEADLINE_MS = 20_000;

/** Polls @probe until it returns @want (a denial is a probe timing out, so each try takes a second or two). */
async function eventually(what: string, probe: () => boolean, want: boolean): Promise<void> {
  const end = Date.now() + DEADLINE_MS;
  while (probe() !== want) {
    if (Date.now() > end) assert.fail(`${what}: still ${want ? 'denied' : 'allowed'} after ${DEADLINE_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Reachability of HTTP pairs, each polled until it is as expected. */
async function expectHttp(cases: Array<[string, string, boolean]>): Promise<void> {
  for (const [from, to, want] of cases) await eventually(`${from} -> ${to} HTTP`, () => http(from, to), want);
}

/** `lab policy apply` of one YAML text (through the operator; returns once every node has it). */
async function apply(name: string, yaml: string): Promise<void> {
  await labPolicyApply(LAB, [file(`${name}.yaml`, yaml)]);
}

const netpol = (name: string, spec: string): string =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: default\nspec:\n${spec.replace(/^/gm, '  ')}\n`;

/** The /24 around an address ("10.201.0.0/24"). */
const net24 = (ip: string): string => `${ip.split('.').slice(0, 3).join('.')}.0/24`;

const ALLOW_CLIENT = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server-from-client
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: server
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: client
`;

const BROKEN_SECOND = `${ALLOW_CLIENT.replace('server-from-client', 'also-other')}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: broken
  namespace: default
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.0.0/40
`;

describe('policy through the node CLI', { timeout: 240_000 }, () => {
  before(async () => {
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 2 });
    await podAdd(LAB, 'server', { node: 'ctr', labels: { app: 'server' }, serve: 80 });
    await podAdd(LAB, 'client', { node: 'w1', labels: { app: 'client' } });
    await podAdd(LAB, 'other', { node: 'ctr', labels: { app: 'other' } });
  });
  after(async () => {
    await labDown(LAB);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the same labels get the same identity on every node; identity list and ip list show it', async () => {
    await podAdd(LAB, 'client2', { node: 'ctr', labels: { app: 'client' } });
    const ids = await Promise.all(
      ['ctr', 'w1'].map(async (node) => {
        const eps = await new ApiClient(loadLab(LAB).nodes.find((n) => n.name === node)!.socket).get<Array<{ status: { identity: { id: number; labels: string[] } } }>>('/v1/endpoint');
        return eps.find((e) => e.status.identity.labels.includes('k8s:app=client'))!.status.identity.id;
      }),
    );
    assert.equal(ids[0], ids[1], 'client on w1 and client2 on ctr share one identity');
    assert.ok(ids[0]! >= 256 && ids[0]! <= 65535);
    const list = tendril(['--node', 'ctr', 'identity', 'list']);
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${ids[0]}\\s+k8s:app=client$`, 'm'));
    const ips = tendril(['--node', 'ctr', 'ip', 'list']);
    assert.match(ips.stdout, new RegExp(`^${pod('client').ip.replace(/\./g, '\\.')}/32\\s+${ids[0]}\\s+cluster-endpoint`, 'm'), ips.stdout);
    await podDel(LAB, 'client2');
  });

  test('policy import enforces before it returns; an invalid file is rejected whole, naming the field, and changes nothing', async () => {
    await expectHttp([['other', 'server', true]]);
    const ok = tendril(['--node', 'ctr', 'policy', 'import', file('allow.yaml', ALLOW_CLIENT)]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /Imported NetworkPolicy\/default\/server-from-client; 1 endpoint\(s\) regenerated/);
    assert.ok(!http('other', 'server'), 'other is denied right after import returns');
    await expectHttp([['client', 'server', true]]);

    const bad = tendril(['--node', 'ctr', 'policy', 'import', file('bad.yaml', BROKEN_SECOND)]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr/);
    assert.match(bad.stderr, /TENDRIL_ERR_POLICY_INVALID/);
    const get = tendril(['--node', 'ctr', 'policy', 'get', '-o', 'table']);
    assert.doesNotMatch(get.stdout, /also-other/, 'the valid document of the rejected file was not imported either');
    assert.match(get.stdout, /server-from-client/);
    assert.ok(!http('other', 'server'), 'what was in force still is');
    await expectHttp([['client', 'server', true]]);

    const missing = tendril(['--node', 'ctr', 'policy', 'delete', 'nope']);
    assert.match(missing.stderr, /Policy "nope" not found/);
  });

  test('endpoint list and bpf policy get show enforcement and the entries with counters', () => {
    const eps = tendril(['--node', 'ctr', 'endpoint', 'list']);
    assert.match(eps.stdout, /Enabled\s+Disabled\s+\d+\s+k8s:app=server/);
    const ep = JSON.parse(tendril(['--node', 'ctr', 'endpoint', 'list', '-o', 'json']).stdout) as Array<{ id: number; status: { labels: { 'security-relevant': string[] } } }>;
    const id = ep.find((e) => e.status.labels['security-relevant'].includes('k8s:app=server'))!.id;
    const pol = JSON.parse(tendril(['--node', 'ctr', 'bpf', 'policy', 'get', String(id), '-o', 'json']).stdout) as {
      ingress: boolean;
      entries: Array<{ direction: string; identity: number; deny: boolean; packets: number; labels: string[]; derivedFrom: string[] }>;
    };
    assert.equal(pol.ingress, true);
    const fromClient = pol.entries.find((e) => e.labels.includes('k8s:app=client'));
    assert.ok(fromClient && !fromClient.deny && fromClient.direction === 'ingress', JSON.stringify(pol.entries));
    assert.ok(fromClient.packets > 0, 'the allowed requests were counted');
    assert.deepEqual(fromClient.derivedFrom, ['NetworkPolicy/default/server-from-client']);
    const text = tendril(['--node', 'ctr', 'bpf', 'policy', 'get', String(id)]).stdout;
    assert.match(text, /^Allow\s+Ingress\s+\d+\s+k8s:app=client\s+ANY\s+\d+\s+\d+\s+NetworkPolicy\/default\/server-from-client$/m);
  });

  test('the policy stays in force after an agent restart; deleting it opens the endpoint again', async () => {
    await restartAgent(LAB, 'ctr');
    assert.ok(!http('other', 'server'), 'still denied after the restart');
    await expectHttp([['client', 'server', true]]);
    const del = tendril(['--node', 'ctr', 'policy', 'delete', 'server-from-client']);
    assert.equal(del.status, 0, del.stderr);
    await expectHttp([['other', 'server', true]]);
  });

  test('lab policy apply: an invalid document is refused by the cluster and nothing is stored', () => {
    const bad = tendril(['lab', 'policy', 'apply', file('bad-cluster.yaml', BROKEN_SECOND)]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /ipBlock\.cidr.*10\.0\.0\.0\/40/);
    const pol = tendril(['--node', 'w1', 'policy', 'get', '-o', 'table']);
    assert.doesNotMatch(pol.stdout, /also-other/);
    const unknown = tendril(['lab', 'policy', 'apply', file('typo.yaml', ALLOW_CLIENT.replace('podSelector:\n    matchLabels', 'podSelecter:\n    matchLabels'))]);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /podSelecter/);
  });

  test('conntrack: bpf ct list shows the flows, flush empties the tables', async () => {
    await expectHttp([['client', 'server', true]]);
    const ct = tendril(['--node', 'ctr', 'bpf', 'ct', 'list', 'global']);
    assert.match(ct.stdout, new RegExp(`^TCP IN ${pod('client').ip.replace(/\./g, '\\.')}:\\d+ -> ${pod('server').ip.replace(/\./g, '\\.')}:80 expires=\\d+`, 'm'), ct.stdout);
    const flush = tendril(['--node', 'ctr', 'bpf', 'ct', 'flush', 'global']);
    assert.match(flush.stdout, /Flushed \d+ entries/);
    assert.doesNotMatch(tendril(['--node', 'ctr', 'bpf', 'ct', 'list', 'global']).stdout, /:80 expires/);
    assert.match(tendril(['--node', 'ctr', 'bpf', 'ct', 'list', 'local']).stderr, /Unknown conntrack table "local"/);
  });

  test('NetworkPolicy ipBlock matches pod IPs (e2e model): egress to a pod by /32, its /24 minus it, the policy updated in place, a pod created inside the block', async (t) => {
    await podAdd(LAB, 'web2', { node: 'ctr', labels: { app: 'web2' }, serve: 80 });
    const server = pod('server').ip;
    const policy = (to: string): string => netpol('client-egress-cidr', `podSelector: {matchLabels: {app: client}}
policyTypes: [Egress]
egress:
  - to:
${to}`);
    try {
      // "should allow egress access to server in CIDR block": client (w1) -> server (ctr) by the server's /32.
      await apply('ipblock-one', policy(`      - ipBlock: {cidr: ${server}/32}`));
      await expectHttp([['client', 'server', true], ['client', 'web2', false]]);
      // "should enforce except clause": the server's /24 minus the server, same policy updated in place.
      await apply('ipblock-except', policy(`      - ipBlock: {cidr: ${net24(server)}, except: [${server}/32]}`));
      await expectHttp([['client', 'web2', true], ['client', 'server', false]]);
      // "an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed": the update adds the /32 as its own peer.
      await apply('ipblock-both', policy(`      - ipBlock: {cidr: ${net24(server)}, except: [${server}/32]}
      - ipBlock: {cidr: ${server}/32}`));
      await expectHttp([['client', 'web2', true], ['client', 'server', true]]);
      // A pod created inside the block is reachable (matched by address: nothing to recompile); other nodes' pods are not.
      await podAdd(LAB, 'late', { node: 'ctr', labels: { app: 'late' }, serve: 80 });
      const added = Date.now();
      await expectHttp([['client', 'late', true]]);
      t.diagnostic(`a pod created inside the block answered the other node's client ${Date.now() - added} ms after its ADD returned`);
      await podAdd(LAB, 'far', { node: 'w1', labels: { app: 'far' }, serve: 80 });
      await expectHttp([['client', 'far', false]]);
    } finally {
      await labPolicyDelete(LAB, 'client-egress-cidr');
    }
    await expectHttp([['client', 'far', true]]);
  });

  test('NetworkPolicy ipBlock ingress matches a remote pod (ipcache identity of a pod on another node); TendrilNetworkPolicy fromCIDR does not', async () => {
    const client = pod('client').ip;
    await apply('ipblock-ingress', netpol('server-from-cidr', `podSelector: {matchLabels: {app: server}}
ingress:
  - from:
      - ipBlock: {cidr: ${client}/32}`));
    try {
      await expectHttp([['client', 'server', true], ['far', 'server', false], ['other', 'server', false]]);
    } finally {
      await labPolicyDelete(LAB, 'server-from-cidr');
    }
    await apply('tnp-cidr', `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: {name: server-from-cidr-tnp, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
    - fromCIDR: [${client}/32]
`);
    try {
      // Cilium's meaning: a CIDR peer is outside the cluster, the pod keeps its own identity.
      await expectHttp([['client', 'server', false]]);
      const ips = tendril(['--node', 'ctr', 'ip', 'list']);
      assert.match(ips.stdout, new RegExp(`^${client.replace(/\./g, '\\.')}/32\\s+\\d+\\s+cluster-endpoint`, 'm'), 'the pod address keeps its pod identity');
    } finally {
      await labPolicyDelete(LAB, 'server-from-cidr-tnp');
    }
    await expectHttp([['client', 'server', true]]);
  });

  test('icmps, service accounts and a TendrilClusterwideNetworkPolicy through lab policy apply', async () => {
    await podAdd(LAB, 'bot', { node: 'w1', labels: { app: 'bot' }, serviceAccount: 'robot' });
    await podAdd(LAB, 'elsewhere', { node: 'ctr', namespace: 'other-ns', labels: { app: 'server' }, serve: 80 });
    const eps = tendril(['--node', 'w1', 'endpoint', 'list']);
    assert.match(eps.stdout, /k8s:io\.cilium\.k8s\.policy\.serviceaccount=robot/);
    assert.match(eps.stdout, /k8s:io\.cilium\.k8s\.policy\.serviceaccount=default/);
    await apply('ccnp', `apiVersion: tendril.io/v2
kind: TendrilClusterwideNetworkPolicy
metadata: {name: servers-from-robots}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
    - fromEndpoints:
        - matchLabels: {io.cilium.k8s.policy.serviceaccount: robot}
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
    - fromEndpoints:
        - matchLabels: {app: client}
      icmps:
        - fields: [{type: EchoRequest}]
`);
    try {
      const get = tendril(['--node', 'ctr', 'policy', 'get', '-o', 'table']);
      assert.match(get.stdout, /^<clusterwide>\s+servers-from-robots\s+TendrilClusterwideNetworkPolicy\s+cluster$/m, get.stdout);
      // Both servers (default and other-ns) are selected; the robot reaches them over HTTP, the client by ping only.
      await expectHttp([['bot', 'server', true], ['bot', 'elsewhere', true], ['client', 'server', false], ['client', 'elsewhere', false]]);
      await eventually('client pings server (echo request allowed)', () => ping('client', 'server'), true);
      await eventually('bot pings server (no ICMP rule for it)', () => ping('bot', 'server'), false);
      const ep = (JSON.parse(tendril(['--node', 'ctr', 'endpoint', 'list', '-o', 'json']).stdout) as Array<{ id: number; status: { labels: { 'security-relevant': string[] } } }>).find(
        (e) => e.status.labels['security-relevant'].includes('k8s:app=server') && e.status.labels['security-relevant'].includes('k8s:io.kubernetes.pod.namespace=default'),
      )!;
      const text = tendril(['--node', 'ctr', 'bpf', 'policy', 'get', String(ep.id)]).stdout;
      assert.match(text, /^Allow\s+Ingress\s+\d+\s+k8s:app=client\s+8\/ICMP\s+\d+\s+\d+\s+TendrilClusterwideNetworkPolicy\/servers-from-robots$/m, text);
    } finally {
      await labPolicyDelete(LAB, 'servers-from-robots');
    }
    await expectHttp([['client', 'server', true]]);
  });
});
