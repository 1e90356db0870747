// Integration (issue 12): L7 HTTP policy through the node proxy on a 3-node lab, tunnel and native routing: ingress
// and egress HTTP rules, same-node and cross-node, method and header rules, two policies merged, an L4 allow
// cancelling L7, 403s on the same connection, BPF drops for peers the L3 rule does not allow, the proxy failing
// closed and recovering, L7 flows in the node's Observer, to-proxy monitor traces and --proxy-port.
// Root; each lab is the test's own and is removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { externalAdd, externalDel } from '../src/lab/outside.js';
import { REPO_ROOT, netnsPath } from '../src/lab/paths.js';
import { MonitorClient, ObserverClient, formatL7Monitor, formatMonitorEvent, fromMonitorEvent, observerSocketFor, type Flow, type FlowFilter } from '../src/observe/index.js';
import type { StatusView } from '../src/agent/api.js';

const BIN = path.join(REPO_ROOT, 'bin/tendril');
let LAB = '';
const DEADLINE_MS = 30_000;
const EXTERNAL_IP = '192.168.10.200';
let tmpDir = '';

/** curl in a pod's namespace, or in an external host's. */
function curl(from: string, url: string, extra: string[] = []): Promise<string> {
  const lab = loadLab(LAB);
  const netns = lab.pods.find((x) => x.name === from)?.netns ?? lab.externals?.find((x) => x.name === from)?.netns;
  assert.ok(netns, from);
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${netnsPath(netns)}`, '--', 'curl', '-s', '--max-time', '2', '-w', '\n%{http_code}', ...extra, url], (_err, stdout) => resolve(stdout.trim()));
  });
}

/** The status code of each URL fetched over one keep-alive connection ("000" = no answer). */
async function codes(from: string, urls: string[], extra: string[] = []): Promise<string[]> {
  const lab = loadLab(LAB);
  const netns = lab.pods.find((x) => x.name === from)?.netns ?? lab.externals!.find((x) => x.name === from)!.netns;
  return new Promise((resolve) => {
    const args = ['-s', '--max-time', '3', ...extra];
    for (const u of urls) args.push('-o', '/dev/null', '-w', '%{http_code}\n', u);
    execFile('nsenter', [`--net=${netnsPath(netns)}`, '--', 'curl', ...args], (_err, stdout) => {
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

async function flows(node: string, whitelist: FlowFilter[]): Promise<Flow[]> {
  const client = new ObserverClient(observerSocketFor(loadLab(LAB).nodes.find((n) => n.name === node)!.socket));
  try {
    const out = await client.collectFlows({ number: 4095, whitelist }, 10_000);
    return out.flatMap((r) => (r.kind === 'flow' ? [r.flow] : []));
  } finally {
    client.close();
  }
}

function nodeOf(pod: string): string {
  return loadLab(LAB).pods.find((p) => p.name === pod)!.node;
}

async function identityOf(pod: string): Promise<number> {
  const eps = await agent(nodeOf(pod)).get<Array<{ status: { identity: { id: number }; networking: { addressing: Array<{ ipv4: string }> } } }>>('/v1/endpoint');
  return eps.find((e) => e.status.networking.addressing[0]?.ipv4 === ipOf(pod))!.status.identity.id;
}

function labSuite(routing: 'tunnel' | 'native', proxyPort: number | undefined): void {
describe(`L7 HTTP policy on a 3-node lab (${routing} routing${proxyPort ? `, --proxy-port ${proxyPort}` : ''})`, { timeout: 420_000 }, () => {
  const name = `l7${routing[0]}${process.pid % 10000}`;
  before(async () => {
    LAB = name;
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-'));
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 3, routing, ...(proxyPort ? { proxyPort } : {}) });
    const nodes = loadLab(LAB).nodes.map((n) => n.name);
    await podAdd(LAB, 'web', { node: nodes[1]!, labels: { app: 'web' }, serve: [80] });
    await podAdd(LAB, 'near', { node: nodes[1]!, labels: { role: 'client' } });
    await podAdd(LAB, 'far', { node: nodes[0]!, labels: { role: 'client' } });
    await podAdd(LAB, 'stranger', { node: nodes[2]!, labels: { role: 'other' } });
  });
  after(async () => {
    await labDown(name);
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
    // Not allowed at L3: dropped in BPF, never a 403, never seen by the proxy.
    const webNode = nodeOf('web');
    assert.equal((await curl('stranger', `${web}/public`)).slice(-3), '000');
    await eventually('the stranger dropped by policy in BPF', async () =>
      (await flows(webNode, [{ source_ip: [ipOf('stranger')], verdict: ['DROPPED'], drop_reason_desc: ['POLICY_DENIED'] }])).length > 0);
    const st = await agent(webNode).get<StatusView>('/v1/healthz');
    assert.ok(st.proxy && st.proxy.running && st.proxy.redirects >= 1, JSON.stringify(st.proxy));
    assert.equal(st.proxy.port, proxyPort ?? 15080);
    assert.equal((await flows(webNode, [{ event_type: [{ type: 129 }], source_ip: [ipOf('stranger')] }])).length, 0, 'the proxy never saw the stranger');
    await eventually('status counts the requests (allowed and denied)', async () => {
      const s = (await agent(webNode).get<StatusView>('/v1/healthz')).proxy?.stats;
      return s !== null && s !== undefined && s.forwarded >= 6 && s.denied >= 6;
    });
    await remove(res);
  });

  test('the outside routed to a pod\'s own address (no NAT): HTTP rules for world hold, the pod and the client keep their addresses', async () => {
    // Before: in tunnel mode the stack forwarded such a packet (no socket can be assigned at tc egress, drop 179),
    // and the pod's reply left masqueraded to the node's address.
    const res = await apply('world-l7', `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: web-world-l7, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEntities: [world]
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules:
            http: [{ method: GET, path: /healthz }]
`);
    const lab = loadLab(LAB);
    const webNode = lab.nodes.find((n) => n.name === nodeOf('web'))!;
    const ext = await externalAdd(LAB, 'ext', { ip: EXTERNAL_IP });
    // The outside's router for the pod CIDR is the pod's node, as with the seed's route-back.
    const r = spawnSync('ip', ['-n', ext.netns, 'route', 'replace', webNode.podCidr, 'via', webNode.ip], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const web = `http://${ipOf('web')}`;
    await eventually('ext: /private denied by the proxy', async () => (await curl('ext', `${web}/private`)).endsWith('403'));
    assert.match(await curl('ext', `${web}/private`), /^Access denied\n403$/);
    const ok = await curl('ext', `${web}/healthz`);
    assert.ok(ok.endsWith('200'), ok);
    assert.match(ok, new RegExp(`RemoteAddr: ${EXTERNAL_IP.replace(/\./g, '\\.')}:`), 'the server sees the client address');
    assert.deepEqual(await codes('ext', [`${web}/healthz`, `${web}/private`, `${web}/healthz`]), ['200', '403', '200'], 'keep-alive mixing allowed and denied');
    await eventually('an L7 flow of the outside\'s request, from identity world', async () =>
      (await flows(webNode.name, [{ event_type: [{ type: 129 }], source_ip: [EXTERNAL_IP], http_path: ['^/healthz$'] }])).some((f) => f.source?.identity === 2 && f.verdict === 'FORWARDED'));
    await remove(res);
    // Without an L7 rule the same path is plain forwarding, and the reply still carries the pod's address.
    await eventually('ext: /private answered by the pod itself', async () => (await curl('ext', `${web}/private`)).endsWith('200'));
    await externalDel(LAB, 'ext');
  });

  test('L7 flows: one per request and response in the node\'s Observer, with identities, http fields, latency; server-side HTTP filters', async () => {
    const res = await apply('ingress', INGRESS);
    const web = `http://${ipOf('web')}`;
    const tag = `flowcheck${process.pid}`;
    await eventually('far: /private denied by the proxy', async () => (await curl('far', `${web}/private/${tag}`)).endsWith('403'));
    assert.ok((await curl('far', `${web}/public/${tag}`, ['-H', 'X-Trace: abc'])).endsWith('200'));
    const webNode = nodeOf('web');
    const [farId, webId] = [await identityOf('far'), await identityOf('web')];
    const mine: FlowFilter = { event_type: [{ type: 129 }], http_path: [tag] };
    let got: Flow[] = [];
    await eventually('the L7 flows of both requests', async () => (got = await flows(webNode, [mine])).length >= 4);
    const allowedReq = got.find((f) => f.l7?.type === 'REQUEST' && f.l7.http?.url?.includes('/public/'))!;
    const allowedRes = got.find((f) => f.l7?.type === 'RESPONSE' && f.l7.http?.url?.includes('/public/'))!;
    const deniedReq = [...got].reverse().find((f) => f.l7?.type === 'REQUEST' && f.l7.http?.url?.includes('/private/'))!;
    const deniedRes = [...got].reverse().find((f) => f.l7?.type === 'RESPONSE' && f.l7.http?.url?.includes('/private/'))!;
    for (const f of [allowedReq, allowedRes, deniedReq, deniedRes]) {
      assert.ok(f, JSON.stringify(got));
      assert.equal(f.Type, 'L7');
      assert.deepEqual(f.event_type, { type: 129 });
      assert.equal(f.traffic_direction, 'INGRESS');
      assert.equal(f.node_name, webNode);
    }
    assert.equal(allowedReq.verdict, 'FORWARDED');
    assert.equal(allowedReq.is_reply, false);
    assert.equal(allowedReq.IP?.source, ipOf('far'));
    assert.equal(allowedReq.IP?.destination, ipOf('web'));
    assert.equal(allowedReq.l4?.TCP?.destination_port, 80);
    assert.equal(allowedReq.source?.identity, farId);
    assert.equal(allowedReq.source?.pod_name, 'far');
    assert.equal(allowedReq.destination?.identity, webId);
    assert.equal(allowedReq.destination?.pod_name, 'web');
    assert.equal(allowedReq.l7?.http?.method, 'GET');
    assert.equal(allowedReq.l7?.http?.protocol, 'HTTP/1.1');
    assert.equal(allowedReq.l7?.http?.url, `http://${ipOf('web')}/public/${tag}`);
    assert.ok(allowedReq.l7?.http?.headers?.some((h) => h.key === 'x-trace' && h.value === 'abc'), JSON.stringify(allowedReq.l7));
    assert.equal(allowedReq.Summary, `HTTP/1.1 GET http://${ipOf('web')}/public/${tag}`);
    assert.equal(allowedRes.verdict, 'FORWARDED');
    assert.equal(allowedRes.is_reply, true);
    assert.equal(allowedRes.IP?.source, ipOf('web'));
    assert.equal(allowedRes.source?.identity, webId);
    assert.equal(allowedRes.l7?.http?.code, 200);
    assert.ok((allowedRes.l7?.latency_ns ?? 0) > 0, JSON.stringify(allowedRes.l7));
    assert.match(allowedRes.Summary ?? '', new RegExp(`^HTTP/1\\.1 200 \\d+ms \\(GET http://[0-9.]+/public/${tag}\\)$`));
    assert.equal(deniedReq.verdict, 'DROPPED');
    assert.equal(deniedRes.verdict, 'DROPPED');
    assert.equal(deniedRes.l7?.http?.code, 403);
    // Server-side HTTP filters (the gRPC FlowFilter fields).
    const only = async (f: FlowFilter): Promise<Flow[]> => flows(webNode, [{ ...mine, ...f }]);
    assert.ok((await only({ http_status_code: ['4+'] })).every((f) => f.l7?.http?.code === 403));
    assert.ok((await only({ http_status_code: ['4+'] })).length >= 1);
    assert.ok((await only({ http_status_code: ['200'] })).every((f) => f.l7?.type === 'RESPONSE' && f.l7.http?.code === 200));
    assert.equal((await only({ http_method: ['POST'] })).length, 0);
    assert.ok((await only({ http_path: ['^/private/'] })).every((f) => f.l7?.http?.url?.includes('/private/')));
    // The CLI, through the lab's relay, prints them as hubble observe does.
    const out = spawnSync(BIN, ['--lab', LAB, 'observe', '--type', 'l7', '--http-path', tag, '--last', '100'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stdout, new RegExp(`default/far:\\d+ \\(ID:${farId}\\) -> default/web:80 \\(ID:${webId}\\) http-request FORWARDED \\(HTTP/1\\.1 GET http://[0-9.]+/public/${tag}\\)`));
    assert.match(out.stdout, new RegExp(`default/far:\\d+ \\(ID:${farId}\\) <- default/web:80 \\(ID:${webId}\\) http-response FORWARDED \\(HTTP/1\\.1 200 \\d+ms \\(GET http://[0-9.]+/public/${tag}\\)\\)`));
    const denied = spawnSync(BIN, ['--lab', LAB, 'observe', '--type', 'l7', '--http-status', '4+', '--http-path', tag, '--last', '100'], { encoding: 'utf8', timeout: 30_000 });
    assert.match(denied.stdout, /http-response DROPPED \(HTTP\/1\.1 403 \d+ms \(GET http:\/\/[0-9.]+\/private\//);
    assert.doesNotMatch(denied.stdout, /FORWARDED/);
    console.log(`# observe --type l7 (${routing}):\n${out.stdout}# --http-status 4+:\n${denied.stdout}`);
    await remove(res);
  });

  test('monitor shows the redirect to the proxy as "-> proxy port N"', async () => {
    const res = await apply('ingress', INGRESS);
    const web = `http://${ipOf('web')}`;
    await eventually('near: /private denied by the proxy', async () => (await curl('near', `${web}/private`)).endsWith('403'));
    const node = loadLab(LAB).nodes.find((n) => n.name === nodeOf('web'))!;
    const mon = new MonitorClient(observerSocketFor(node.socket));
    const lines: string[] = [];
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    const h = mon.events({ types: ['trace'] }, (ev) => {
      if (ev) lines.push(formatMonitorEvent(fromMonitorEvent(ev)));
    }, () => subscribed());
    try {
      await ready;
      const port = proxyPort ?? 15080;
      await eventually('a to-proxy trace', async () => {
        await curl('near', `${web}/public`);
        return lines.some((l) => l.includes(`-> proxy port ${port}`));
      });
      console.log(`# monitor (${routing}): ${lines.find((l) => l.includes('-> proxy port'))!.trim()}`);
    } finally {
      h.cancel();
      mon.close();
    }
    await remove(res);
  });

  test('monitor --type l7 shows an access-log line per request and response (Cilium\'s LogRecordNotify)', async () => {
    const res = await apply('ingress', INGRESS);
    const web = `http://${ipOf('web')}`;
    await eventually('near: /private denied by the proxy', async () => (await curl('near', `${web}/private`)).endsWith('403'));
    const node = loadLab(LAB).nodes.find((n) => n.name === nodeOf('web'))!;
    const mon = new MonitorClient(observerSocketFor(node.socket));
    const lines: string[] = [];
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    const h = mon.events({ types: ['l7'] }, (ev) => {
      if (ev) lines.push(formatL7Monitor(ev) ?? `not an l7 event: ${ev.type}`);
    }, () => subscribed());
    try {
      await ready;
      const tag = `mon${process.pid}`;
      await eventually('access-log lines for an allowed and a denied request', async () => {
        await curl('near', `${web}/public/${tag}`);
        await curl('near', `${web}/private/${tag}`);
        return lines.some((l) => l.includes(`/private/${tag} => 403`)) && lines.some((l) => l.includes(`/public/${tag} => 200`));
      });
      assert.ok(lines.every((l) => !l.startsWith('not an l7 event')), lines.join(''));
      const mine = lines.filter((l) => l.includes(tag));
      assert.ok(mine.some((l) => new RegExp(`^-> Request http from \\d+ \\(\\[[^\\]]*role=client[^\\]]*\\]\\) to \\d+ \\(\\[[^\\]]*app=web[^\\]]*\\]\\), identity \\d+->\\d+, verdict Forwarded GET http://[0-9.]+/public/${tag} => 0$`).test(l.trim())), mine.join(''));
      assert.ok(mine.some((l) => new RegExp(`^-> Response http to \\d+ .* from \\d+ .*, verdict Forwarded GET http://[0-9.]+/public/${tag} => 200$`).test(l.trim())), mine.join(''));
      assert.ok(mine.some((l) => new RegExp(`^-> Request http from .*, verdict Denied GET http://[0-9.]+/private/${tag} => 0$`).test(l.trim())), mine.join(''));
      assert.ok(mine.some((l) => new RegExp(`^-> Response http .*, verdict Denied GET http://[0-9.]+/private/${tag} => 403$`).test(l.trim())), mine.join(''));
      console.log(`# monitor --type l7 (${routing}):\n${mine.join('')}`);
    } finally {
      h.cancel();
      mon.close();
    }
    await remove(res);
  });

  test('two policies merge (any rule allows); an L4-only allow for the same peer and port cancels L7', async () => {
    const a = await apply('ingress', INGRESS);
    const b = await apply(
      'second',
      `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: web-l7-extra, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEndpoints: [{ matchLabels: { role: client } }]
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules: { http: [{ method: GET, path: /extra }] }
`,
    );
    const web = `http://${ipOf('web')}`;
    await eventually('both policies merged', async () => (await codes('far', [`${web}/extra`])).join() === '200');
    assert.deepEqual(await codes('far', [`${web}/public`, `${web}/extra`, `${web}/private`]), ['200', '200', '403']);
    const c = await apply(
      'l4',
      `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: web-l4, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEndpoints: [{ matchLabels: { role: client } }]
      toPorts: [{ ports: [{ port: "80", protocol: TCP }] }]
`,
    );
    await eventually('the L4 allow cancels L7', async () => (await codes('far', [`${web}/private`])).join() === '200');
    assert.deepEqual(await codes('near', [`${web}/private`, `${web}/anything`]), ['200', '200']);
    await remove(c);
    await eventually('L7 again without the L4 allow', async () => (await codes('far', [`${web}/private`])).join() === '403');
    await remove([...a, ...b]);
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
    // While the proxy does not serve, the L7 port fails: nothing bypasses it to the pod (a stopped process keeps
    // its listener, so this window is deterministic; after the kill the datapath finds no socket and drops).
    process.kill(before.pid, 'SIGSTOP');
    assert.equal((await curl('far', `${web}/public`)).slice(-3), '000', 'no answer while the proxy is stopped');
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
}

labSuite('tunnel', 15123);
labSuite('native', undefined);
