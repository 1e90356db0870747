// Integration (issue 12): L7 HTTP policy through the node proxy on a 3-node lab (tunnel routing): ingress and
// egress HTTP rules, same-node and cross-node, 403s on the same connection, BPF drops for peers the L3 rule does not
// allow, and the proxy failing closed and recovering. Root; the lab is the test's own and is removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { netnsPath } from '../src/lab/paths.js';
import type { StatusView } from '../src/agent/api.js';

const LAB = `l7${process.pid % 10000}`;
const DEADLINE_MS = 30_000;
let tmpDir = '';

function curl(pod: string, url: string, extra: string[] = []): Promise<string> {
  const p = loadLab(LAB).pods.find((x) => x.name === pod);
  assert.ok(p, pod);
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${netnsPath(p.netns)}`, '--', 'curl', '-s', '--max-time', '2', '-w', '\n%{http_code}', ...extra, url], (_err, stdout) => resolve(stdout.trim()));
  });
}

/** The status code of each URL fetched over one keep-alive connection ("000" = no answer). */
async function codes(pod: string, urls: string[], extra: string[] = []): Promise<string[]> {
  const p = loadLab(LAB).pods.find((x) => x.name === pod)!;
  return new Promise((resolve) => {
    const args = ['-s', '--max-time', '3', ...extra];
    for (const u of urls) args.push('-o', '/dev/null', '-w', '%{http_code}\n', u);
    execFile('nsenter', [`--net=${netnsPath(p.netns)}`, '--', 'curl', ...args], (_err, stdout) => {
      const got = stdout.trim().split('\n').filter(Boolean);
      resolve(urls.map((_u, i) => got[i] ?? '000'));
    });
  });
}

function ipOf(pod: string): string {
  return loadLab(LAB).pods.find((x) => x.name === pod)!.ip;
}

async function eventually(what: string, f: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + DEADLINE_MS;
  while (!(await f())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${DEADLINE_MS} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function apply(name: string, yaml: string): Promise<string[]> {
  const file = path.join(tmpDir, `${name}.yaml`);
  fs.writeFileSync(file, yaml);
  return (await labPolicyApply(LAB, [file])).map((a) => a.resource);
}

async function remove(resources: string[]): Promise<void> {
  for (const r of resources) await labPolicyDelete(LAB, r);
}

function agent(node: string): ApiClient {
  return new ApiClient(loadLab(LAB).nodes.find((x) => x.name === node)!.socket);
}

const INGRESS = `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: web-l7, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEndpoints: [{ matchLabels: { role: client } }]
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules:
            http:
              - { method: GET, path: "/public(/.*)?" }
              - { method: POST, path: /submit, headers: ["X-Token"] }
`;

describe('L7 HTTP policy on a 3-node lab', { timeout: 300_000 }, () => {
  before(async () => {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-'));
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 3, routing: 'tunnel' });
    const nodes = loadLab(LAB).nodes.map((n) => n.name);
    await podAdd(LAB, 'web', { node: nodes[1]!, labels: { app: 'web' }, serve: [80] });
    await podAdd(LAB, 'near', { node: nodes[1]!, labels: { role: 'client' } });
    await podAdd(LAB, 'far', { node: nodes[0]!, labels: { role: 'client' } });
    await podAdd(LAB, 'stranger', { node: nodes[2]!, labels: { role: 'other' } });
  });
  after(async () => {
    await labDown(LAB);
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  });

  test('ingress HTTP rules on the server: /public allowed, /private 403 from the same client, same node and cross node', async () => {
    const res = await apply('ingress', INGRESS);
    const web = `http://${ipOf('web')}`;
    for (const client of ['near', 'far']) {
      await eventually(`${client}: /private denied by the proxy`, async () => (await curl(client, `${web}/private`)).endsWith('403'));
      assert.match(await curl(client, `${web}/private`), /^Access denied\n403$/);
      const ok = await curl(client, `${web}/public`);
      assert.match(ok, /GET \/public HTTP\/1\.1/);
      assert.ok(ok.endsWith('200'), ok);
      assert.match(ok, new RegExp(`RemoteAddr: ${ipOf(client).replace(/\./g, '\\.')}:`), 'the server sees the client address');
      assert.deepEqual(await codes(client, [`${web}/public`, `${web}/private`, `${web}/public/x`, `${web}/nope`]), ['200', '403', '200', '403'], 'keep-alive mixing allowed and denied');
      assert.equal((await curl(client, `${web}/public`, ['-X', 'DELETE'])).slice(-3), '403', 'method rule');
      assert.equal((await curl(client, `${web}/submit`, ['-X', 'POST', '-d', 'x'])).slice(-3), '403', 'header rule: without X-Token');
      assert.equal((await curl(client, `${web}/submit`, ['-X', 'POST', '-d', 'x', '-H', 'X-Token: 1'])).slice(-3), '200', 'header rule: with X-Token');
    }
    // Not allowed at L3: dropped in BPF, never a 403.
    assert.equal((await curl('stranger', `${web}/public`)).slice(-3), '000');
    const st = await agent(loadLab(LAB).pods.find((p) => p.name === 'web')!.node).get<StatusView>('/v1/healthz');
    assert.ok(st.proxy && st.proxy.running && st.proxy.redirects >= 1, JSON.stringify(st.proxy));
    await remove(res);
  });

  test('egress HTTP rules on the client; the proxy killed is restarted and new connections work again', async () => {
    const res = await apply(
      'egress',
      `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: far-l7, namespace: default }
spec:
  endpointSelector: { matchLabels: { role: client } }
  egress:
    - toEndpoints: [{ matchLabels: { app: web } }]
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules: { http: [{ method: GET, path: /public }] }
`,
    );
    const web = `http://${ipOf('web')}`;
    await eventually('far: /private denied by its own node proxy', async () => (await curl('far', `${web}/private`)).endsWith('403'));
    assert.ok((await curl('far', `${web}/public`)).endsWith('200'));
    const node = loadLab(LAB).pods.find((p) => p.name === 'far')!.node;
    const before = (await agent(node).get<StatusView>('/v1/healthz')).proxy!;
    assert.ok(before.pid !== null && before.running, JSON.stringify(before));
    process.kill(before.pid, 'SIGKILL');
    await eventually('the proxy restarted', async () => {
      const p = (await agent(node).get<StatusView>('/v1/healthz')).proxy!;
      return p.running && p.pid !== before.pid && p.restarts === before.restarts + 1;
    });
    await eventually('far: /public works again', async () => (await curl('far', `${web}/public`)).endsWith('200'));
    assert.ok((await curl('far', `${web}/private`)).endsWith('403'));
    await remove(res);
  });
});
