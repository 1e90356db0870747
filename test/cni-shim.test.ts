// Integration test (root): bin/tendril-cni run as a runtime runs it, against a real CniHandler wiring real namespaces.
//
// The agent side runs as a child process of this file inside a node namespace of our own
// (`ip netns exec tdlt-<pid>-cninode node <this file>` with TDLT_CNI_SERVE set), exactly where the lab
// runs an agent; host-side veth ends therefore never appear in the machine's root namespace.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CniHandler, serveCni, hostIfName } from '../src/cni/index.js';
import { MemoryBackend } from '../src/cni/testing.js';
import { NodeIpam } from '../src/agent/ipam.js';

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), '..', '..');
const SHIM = path.join(ROOT, 'bin', 'tendril-cni');
const ROUTER = '10.77.0.1';
const MTU = 1400;

// ---------------------------------------------------------------------------------------------------------
// Agent side (child process, inside the node namespace)
// ---------------------------------------------------------------------------------------------------------

/** The seam the agent implements, in memory, with a switch to make the next createEndpoint fail. */

function serve(socketPath: string): void {
  const backend = new MemoryBackend({ cidr: '10.77.0.0/24', ipam: new NodeIpam('10.77.0.0/24'), mtu: MTU });
  const handler = new CniHandler(backend);
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/v1/cni') {
      void serveCni(handler, req, res);
    } else if (req.url === '/test/state') {
      const state = { ips: [...backend.ips.keys()].filter((ip) => backend.ips.get(ip) !== 'filler'), endpoints: backend.listEndpoints() };
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(state));
    } else if (req.url === '/test/fail-next-endpoint') {
      backend.failNextEndpoint = true;
      res.writeHead(204).end();
    } else if (req.url?.startsWith('/test/set?')) {
      // Test switches: ready=0|1, limited=0|1, exhaust=1 (fill the pool), exhaust=0 (give it back),
      // allocate=<cid> (an address for <cid>/eth0 without an endpoint, as an ADD killed half-way leaves it),
      // steal=<ip> (hand a pod's address to someone else).
      const q = new URL(req.url, 'http://x').searchParams;
      const out: string[] = [];
      if (q.has('ready')) backend.ready = q.get('ready') === '1';
      if (q.has('limited')) backend.limited = q.get('limited') === '1';
      if (q.get('exhaust') === '1') while (backend.pool().free > 0) backend.ipam.allocateNext('filler');
      if (q.get('exhaust') === '0') for (const a of backend.ipam.list()) if (a.owner === 'filler') backend.ipam.release(a.ip);
      const cid = q.get('allocate');
      if (cid) out.push(backend.ipam.allocateNext(`default/${cid}`, { containerId: cid, ifname: 'eth0' }));
      const steal = q.get('steal');
      if (steal) {
        backend.ipam.release(steal);
        backend.ipam.allocate(steal, 'default/thief', { containerId: 'thief', ifname: 'eth0' });
      }
      res.writeHead(200).end(JSON.stringify(out));
    } else {
      res.writeHead(404).end();
    }
  });
  server.listen(socketPath, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

// ---------------------------------------------------------------------------------------------------------
// Test side
// ---------------------------------------------------------------------------------------------------------

const PREFIX = `tdlt-${process.pid}`;
const NODE_NS = `${PREFIX}-cninode`;
const POD_NS = `${PREFIX}-cni`;
const POD2_NS = `${PREFIX}-cni2`;
const nsPath = (name: string): string => `/var/run/netns/${name}`;

interface ShimRun {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runShim(env: Record<string, string>, stdin: string): ShimRun {
  const t0 = performance.now();
  const r = spawnSync(SHIM, [], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, input: stdin, encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms };
}

function json(text: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`shim printed no JSON: ${JSON.stringify(text)}`);
  }
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

interface IpLink {
  ifname: string;
  address: string;
  flags: string[];
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  scope?: string;
}

function links(ns: string): IpLink[] {
  return JSON.parse(ip('-n', ns, '-j', 'addr', 'show')) as IpLink[];
}
function routes(ns: string): IpRoute[] {
  return JSON.parse(ip('-n', ns, '-j', 'route', 'show')) as IpRoute[];
}
function lxcLinks(): string[] {
  return links(NODE_NS)
    .map((l) => l.ifname)
    .filter((n) => n.startsWith('lxc'));
}

function delNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
}

/** Our environment minus the test runner's marker, so the agent child runs as a plain program. */
function childEnv(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  delete e['NODE_TEST_CONTEXT'];
  return e;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function fmt(ms: number): string {
  return `${ms.toFixed(2)} ms`;
}

function registerTests(): void {
  let tmp = '';
  let sock = '';
  let agent: ChildProcess | undefined;
  const servers: net.Server[] = [];

  const conf = (cniVersion: string, extra: Record<string, unknown> = {}): string =>
    JSON.stringify({ cniVersion, name: 'tendril', type: 'tendril-cni', 'agent-socket': sock, ...extra });
  const env = (command: string, containerId: string, netns: string, over: Record<string, string> = {}): Record<string, string> => ({
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    ...over,
  });
  async function agentState(): Promise<{ ips: string[]; endpoints: { containerId: string }[] }> {
    return JSON.parse(await agentGet('/test/state')) as { ips: string[]; endpoints: { containerId: string }[] };
  }
  function agentGet(p: string): Promise<string> {
    return new Promise((resolve, reject) => {
      http
        .get({ socketPath: sock, path: p }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
  }
  /** A unix-socket server of the test's own, for transport cases (in the test's namespace; no network). */
  function rawServer(name: string, onConn: (s: net.Socket) => void): Promise<string> {
    const p = path.join(tmp, name);
    const srv = net.createServer(onConn);
    servers.push(srv);
    return new Promise((resolve) => srv.listen(p, () => resolve(p)));
  }

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/cni-shim.test.ts needs root (network namespaces)');
    execFileSync('make', ['-s', '-C', path.join(ROOT, 'cni-shim')], { stdio: 'inherit' });
    assert.ok(fs.existsSync(SHIM), `${SHIM} was not built`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-cni-`));
    sock = path.join(tmp, 'tendril.sock');
    for (const ns of [NODE_NS, POD_NS, POD2_NS]) ip('netns', 'add', ns);
    agent = spawn('ip', ['netns', 'exec', NODE_NS, process.execPath, HERE], {
      env: { ...childEnv(), TDLT_CNI_SERVE: sock },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('agent child did not start within 10 s')), 10_000);
      agent!.once('exit', (code) => reject(new Error(`agent child exited early with ${code}`)));
      agent!.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  });

  after(async () => {
    for (const s of servers) s.close();
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (agent.exitCode === null) agent.kill('SIGKILL');
    }
    for (const ns of [POD2_NS, POD_NS, NODE_NS]) delNetns(ns);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('tendril-cni VERSION answers without an agent, in the caller\'s cniVersion', () => {
    const supportedVersions = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
    for (const [stdin, want] of [
      ['{"cniVersion":"1.0.0"}', '1.0.0'],
      ['{"cniVersion":"0.4.0","name":"x"}', '0.4.0'],
      ['{"cniVersion":"9.9.9"}', '1.1.0'],
      ['', '1.1.0'],
    ] as const) {
      const r = runShim({ CNI_COMMAND: 'VERSION', TENDRIL_AGENT_SOCKET: path.join(tmp, 'nobody.sock') }, stdin);
      assert.equal(r.status, 0);
      assert.deepEqual(json(r.stdout), { cniVersion: want, supportedVersions }, `stdin ${stdin}`);
    }
  });

  test('tendril-cni STATUS with no agent on the socket is code 50 (cannot serve ADDs), not 11', () => {
    const missing = path.join(tmp, 'missing.sock');
    const r = runShim({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, JSON.stringify({ cniVersion: '1.1.0', name: 'n', type: 't', 'agent-socket': missing }));
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), { cniVersion: '1.1.0', code: 50, msg: 'Tendril agent is not reachable', details: `connect ${missing}: No such file or directory` });
  });

  test('tendril-cni: a broken, empty or non-object config is code 6 and a bad agent-socket 7, never 11', () => {
    const missing = path.join(tmp, 'missing.sock');
    for (const stdin of ['', '   ', 'not json', '[1,2]', '"x"', '{"cniVersion":"1.0.0",', '{"a":1} {"b":2}']) {
      const r = runShim({ ...env('ADD', 'c-broken', nsPath(POD_NS)), TENDRIL_AGENT_SOCKET: missing }, stdin);
      assert.equal(r.status, 1, `stdin ${JSON.stringify(stdin)}`);
      const e = json(r.stdout);
      assert.equal(e['code'], 6, `stdin ${JSON.stringify(stdin)}: ${r.stdout}`);
      assert.equal(e['msg'], 'decoding failure: network config on stdin is not a JSON object');
    }
    for (const bad of [42, '', null]) {
      const r = runShim(env('DEL', 'c-broken', ''), JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', 'agent-socket': bad }));
      assert.equal(r.status, 1);
      assert.deepEqual(json(r.stdout), {
        cniVersion: '1.0.0',
        code: 7,
        msg: 'invalid network config: "agent-socket" must be a non-empty string',
        details: "it names the Tendril agent's unix socket",
      });
    }
  });

  test('tendril-cni with no agent on the socket: code 11 in the config version, exit 1', () => {
    const missing = path.join(tmp, 'missing.sock');
    const r = runShim(env('ADD', 'c-missing', nsPath(POD_NS)), JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 't', 'agent-socket': missing }));
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), {
      cniVersion: '0.4.0',
      code: 11,
      msg: 'Tendril agent is not reachable',
      details: `connect ${missing}: No such file or directory`,
    });
  });

  test('tendril-cni takes the socket from TENDRIL_AGENT_SOCKET when the config has none', () => {
    const missing = path.join(tmp, 'env.sock');
    const r = runShim({ ...env('DEL', 'c-env', ''), TENDRIL_AGENT_SOCKET: missing }, '{"cniVersion":"1.0.0","name":"n","type":"t"}');
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), {
      cniVersion: '1.0.0',
      code: 11,
      msg: 'Tendril agent is not reachable',
      details: `connect ${missing}: No such file or directory`,
    });
  });

  test('tendril-cni forwards env as percent-encoded headers and stdin verbatim; passes the exit code through', async () => {
    let seen: http.IncomingHttpHeaders = {};
    let seenBody = '';
    const p = path.join(tmp, 'echo.sock');
    const srv = http.createServer((req, res) => {
      seen = req.headers;
      req.setEncoding('utf8');
      req.on('data', (c: string) => (seenBody += c));
      req.on('end', () => {
        res.setHeader('X-Cni-Exit-Code', '7');
        // Two writes without Content-Length: Node answers chunked, which the shim must decode.
        res.write('{"code":');
        res.end('7}');
      });
    });
    await new Promise<void>((r) => srv.listen(p, r));
    try {
      const body = JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', 'agent-socket': p, note: 'ünï\n' });
      const r = await new Promise<ShimRun>((resolve) => {
        // Async spawn: this process serves the echo server meanwhile.
        const child = spawn(SHIM, [], {
          env: { PATH: '/usr/bin:/bin', ...env('ADD', 'c-echo', '/var/run/netns/a b%c'), CNI_ARGS: 'A=1%;B=x\ny;C=ü' },
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.on('exit', (status) => resolve({ status, stdout: out, stderr: '', ms: 0 }));
        child.stdin.end(body);
      });
      assert.equal(r.status, 7);
      assert.equal(r.stdout, '{"code":7}');
      assert.equal(seenBody, body);
      assert.equal(seen['x-cni-command'], 'ADD');
      assert.equal(seen['x-cni-netns'], '/var/run/netns/a b%25c');
      assert.equal(decodeURIComponent(seen['x-cni-args'] as string), 'A=1%;B=x\ny;C=ü');
      assert.equal(seen['x-cni-path'], '/opt/cni/bin');
      assert.equal(seen['content-length'], String(Buffer.byteLength(body)));
      assert.equal(seen['connection'], 'close');
    } finally {
      srv.close();
    }
  });

  test('tendril-cni moves a 2 MB config and a 3 MB answer intact (buffers grow mid-read)', async () => {
    const p = path.join(tmp, 'big.sock');
    const answer = JSON.stringify({ pad: 'x'.repeat(3_000_000) });
    let got = 0;
    const srv = http.createServer((req, res) => {
      req.on('data', (c: Buffer) => (got += c.length));
      req.on('end', () => res.writeHead(200, { 'X-Cni-Exit-Code': '0' }).end(answer));
    });
    await new Promise<void>((r) => srv.listen(p, r));
    try {
      const body = JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', pad: 'y'.repeat(2_000_000), 'agent-socket': p });
      const r = await spawnAsync(env('ADD', 'c-big', nsPath(POD_NS)), body);
      assert.equal(r.status, 0);
      assert.equal(got, Buffer.byteLength(body));
      assert.equal(r.stdout.length, answer.length);
      assert.equal(r.stdout, answer);
    } finally {
      srv.close();
    }
  });

  test('tendril-cni: an answer without X-Cni-Exit-Code is code 11', async () => {
    const p = await rawServer('noheader.sock', (s) => {
      s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'));
    });
    const r = await spawnAsync(env('ADD', 'c-nh', nsPath(POD_NS)), JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', 'agent-socket': p }));
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), {
      cniVersion: '1.0.0',
      code: 11,
      msg: 'Tendril agent is not reachable',
      details: `${p}: HTTP 200 without X-Cni-Exit-Code`,
    });
  });

  test('tendril-cni gives up after TENDRIL_CNI_TIMEOUT_MS when the agent does not answer', async () => {
    const p = await rawServer('silent.sock', () => undefined);
    const t0 = performance.now();
    const r = await spawnAsync(
      { ...env('ADD', 'c-slow', nsPath(POD_NS)), TENDRIL_CNI_TIMEOUT_MS: '300' },
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', 'agent-socket': p }),
    );
    const ms = performance.now() - t0;
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), { cniVersion: '1.0.0', code: 11, msg: 'Tendril agent did not answer in time', details: 'no answer within 300 ms' });
    assert.ok(ms >= 290 && ms < 3000, `took ${ms} ms`);
  });

  for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
    test(`ADD, CHECK, DEL, DEL through the shim wire the pod netns (cniVersion ${v})`, async () => {
      const cid = `ctr-${v.replaceAll('.', '')}`;
      const host = hostIfName(cid, 'eth0');
      const add = runShim(env('ADD', cid, nsPath(POD_NS)), conf(v));
      assert.equal(add.status, 0, add.stdout);
      const result = json(add.stdout);
      assert.equal(result['cniVersion'], v);
      const ips = result['ips'] as { address: string; gateway: string; interface: number; version?: string }[];
      const ifs = result['interfaces'] as { name: string; mac: string; sandbox?: string }[];
      assert.equal(ips.length, 1);
      const podIp = ips[0]!.address.replace('/32', '');
      assert.match(ips[0]!.address, /^10\.77\.0\.\d+\/32$/);
      assert.equal(ips[0]!.gateway, ROUTER);
      assert.equal(ips[0]!.interface, 1);
      assert.equal(ips[0]!.version, v.startsWith('0.') ? '4' : undefined);
      assert.deepEqual(result['routes'], [{ dst: '0.0.0.0/0', gw: ROUTER }]);
      assert.equal(ifs[0]!.name, host);
      assert.equal(ifs[1]!.name, 'eth0');
      assert.equal(ifs[1]!.sandbox, nsPath(POD_NS));

      // What the pod sees: eth0 up with its /32, lo up, the router as a link route and the default gateway.
      const podLinks = links(POD_NS);
      const eth0 = podLinks.find((l) => l.ifname === 'eth0');
      assert.ok(eth0, 'eth0 exists in the pod netns');
      assert.ok(eth0.flags.includes('UP'));
      assert.equal(eth0.mtu, MTU);
      assert.equal(eth0.address, ifs[1]!.mac);
      assert.ok(/^.[26ae]:/.test(eth0.address), `pod MAC ${eth0.address} is locally administered`);
      assert.deepEqual(
        eth0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
        [`${podIp}/32`],
      );
      assert.ok(podLinks.find((l) => l.ifname === 'lo')?.flags.includes('UP'), 'lo is up');
      const rt = routes(POD_NS);
      assert.ok(rt.some((r) => r.dst === 'default' && r.gateway === ROUTER && r.dev === 'eth0'), JSON.stringify(rt));
      assert.ok(rt.some((r) => r.dst === ROUTER && r.scope === 'link' && r.dev === 'eth0'), JSON.stringify(rt));
      // What the node sees: the lxc end, up, with the MAC the result reports.
      const hostLink = links(NODE_NS).find((l) => l.ifname === host);
      assert.ok(hostLink, `${host} exists in the node netns`);
      assert.ok(hostLink.flags.includes('UP'));
      assert.equal(hostLink.address, ifs[0]!.mac);
      assert.equal(hostLink.mtu, MTU);
      assert.deepEqual((await agentState()).ips, [podIp]);

      if (v !== '0.3.0' && v !== '0.3.1') {
        const check = runShim(env('CHECK', cid, nsPath(POD_NS)), conf(v, { prevResult: result }));
        assert.equal(check.status, 0, check.stdout);
        assert.equal(check.stdout, '');
      }

      const del = runShim(env('DEL', cid, nsPath(POD_NS)), conf(v, { prevResult: result }));
      assert.equal(del.status, 0, del.stdout);
      assert.equal(del.stdout, '');
      assert.equal(links(POD_NS).find((l) => l.ifname === 'eth0'), undefined, 'eth0 is gone');
      assert.deepEqual(lxcLinks(), []);
      assert.deepEqual(await agentState(), { ips: [], endpoints: [] });

      const again = runShim(env('DEL', cid, nsPath(POD_NS)), conf(v));
      assert.equal(again.status, 0, again.stdout);
    });
  }

  test('ADD replaces a host veth left behind by an interrupted ADD of the same attachment', () => {
    const host = hostIfName('ctr-stale-veth', 'eth0');
    ip('-n', NODE_NS, 'link', 'add', host, 'type', 'veth', 'peer', 'name', `${PREFIX.slice(-6)}p`);
    const add = runShim(env('ADD', 'ctr-stale-veth', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(add.status, 0, add.stdout);
    assert.deepEqual(lxcLinks(), [host]);
    assert.ok(links(POD_NS).some((l) => l.ifname === 'eth0'));
    assert.equal(runShim(env('DEL', 'ctr-stale-veth', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.deepEqual(lxcLinks(), []);
  });

  test('CHECK reports what is missing in the pod netns', () => {
    const add = runShim(env('ADD', 'ctr-check', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(add.status, 0, add.stdout);
    ip('-n', POD_NS, 'route', 'del', 'default');
    const check = runShim(env('CHECK', 'ctr-check', nsPath(POD_NS)), conf('1.1.0', { prevResult: json(add.stdout) }));
    assert.equal(check.status, 1);
    const err = json(check.stdout);
    assert.equal(err['code'], 999);
    assert.match(String(err['msg']), /CHECK failed for "eth0" in ".*": default route via 10\.77\.0\.1 dev eth0 is missing/);
    assert.equal(runShim(env('DEL', 'ctr-check', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.deepEqual(lxcLinks(), []);
  });

  test('DEL after the pod netns was deleted succeeds and frees everything', async () => {
    const add = runShim(env('ADD', 'ctr-gone', nsPath(POD2_NS)), conf('1.0.0'));
    assert.equal(add.status, 0, add.stdout);
    ip('netns', 'del', POD2_NS);
    const del = runShim(env('DEL', 'ctr-gone', nsPath(POD2_NS)), conf('1.0.0'));
    assert.equal(del.status, 0, del.stdout);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
    assert.deepEqual(lxcLinks(), []);
    ip('netns', 'add', POD2_NS);
  });

  test('ADD with a netns path that does not exist: code 8 naming the path, nothing left behind', async () => {
    const bad = nsPath(`${PREFIX}-nope`);
    const r = runShim(env('ADD', 'ctr-bad', bad), conf('1.0.0'));
    assert.equal(r.status, 1);
    const err = json(r.stdout);
    assert.equal(err['code'], 8);
    assert.match(String(err['msg']), new RegExp(`"${bad}": No such file or directory`));
    assert.deepEqual(lxcLinks(), []);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test('a failed ADD unwinds its undo list: no IP, no veth, no endpoint', async () => {
    await agentGet('/test/fail-next-endpoint');
    const r = runShim(env('ADD', 'ctr-undo', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(r.status, 1);
    assert.deepEqual(json(r.stdout), { cniVersion: '1.1.0', code: 999, msg: 'endpoint store refused the endpoint (injected)' });
    assert.equal(links(POD_NS).find((l) => l.ifname === 'eth0'), undefined, 'eth0 was removed');
    assert.deepEqual(lxcLinks(), []);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test('malformed JSON is code 6, a config without cniVersion is code 7', () => {
    const r6 = runShim({ ...env('ADD', 'ctr-json', nsPath(POD_NS)), TENDRIL_AGENT_SOCKET: sock }, '{"cniVersion": "1.0.0", "name": ');
    assert.equal(r6.status, 1);
    const e6 = json(r6.stdout);
    assert.equal(e6['code'], 6);
    assert.match(String(e6['msg']), /^decoding failure: network config on stdin is not a JSON object/);
    const r7 = runShim(env('ADD', 'ctr-nover', nsPath(POD_NS)), JSON.stringify({ name: 'tendril', type: 'tendril-cni', 'agent-socket': sock }));
    assert.equal(r7.status, 1);
    assert.deepEqual(json(r7.stdout), { cniVersion: '1.1.0', code: 7, msg: 'invalid network config: "cniVersion" is missing' });
    assert.deepEqual(lxcLinks(), []);
  });

  test('STATUS is ready; GC removes the attachments not listed as valid', async () => {
    const st = runShim({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0'));
    assert.equal(st.status, 0, st.stdout);
    assert.equal(runShim(env('ADD', 'ctr-keep', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.equal(runShim(env('ADD', 'ctr-stale', nsPath(POD2_NS)), conf('1.1.0')).status, 0);
    assert.equal(lxcLinks().length, 2);
    const gc = runShim(
      { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' },
      conf('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: 'ctr-keep', ifname: 'eth0' }] }),
    );
    assert.equal(gc.status, 0, gc.stdout);
    assert.deepEqual(lxcLinks(), [hostIfName('ctr-keep', 'eth0')]);
    assert.equal(links(POD2_NS).find((l) => l.ifname === 'eth0'), undefined);
    assert.deepEqual((await agentState()).endpoints.map((e) => e.containerId), ['ctr-keep']);
    assert.equal(runShim(env('DEL', 'ctr-keep', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  const set = (q: string): Promise<string[]> => agentGet(`/test/set?${q}`).then((t) => JSON.parse(t) as string[]);
  const errOf = (r: ShimRun): { code: unknown; msg: string } => {
    assert.equal(r.status, 1, r.stdout);
    const e = json(r.stdout);
    return { code: e['code'], msg: String(e['msg']) };
  };
  const podIpOf = (r: ShimRun): string => (json(r.stdout)['ips'] as { address: string }[])[0]!.address.replace('/32', '');

  test('STATUS: 0 only when an ADD would succeed; 50 when not ready or the pool is exhausted, 51 when pods are limited', async () => {
    const status = (): ShimRun => runShim({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0'));
    try {
      assert.equal(status().status, 0);
      await set('exhaust=1');
      const e = errOf(status());
      assert.deepEqual(e, { code: 50, msg: "Tendril cannot add pods: the node's pod address pool is exhausted" });
      // What STATUS promised: an ADD now fails, with the documented plugin code (not 999).
      const add = errOf(runShim(env('ADD', 'ctr-full', nsPath(POD_NS)), conf('1.1.0')));
      assert.equal(add.code, 100);
      assert.match(add.msg, /pod CIDR 10\.77\.0\.0\/24 is exhausted \(254\/254 in use\)/);
      assert.deepEqual(lxcLinks(), []);
      await set('exhaust=0');
      await set('ready=0');
      assert.equal(errOf(status()).code, 50);
      await set('limited=1');
      assert.equal(errOf(status()).code, 51);
      await set('ready=1');
      assert.equal(errOf(status()).code, 51, 'ready but existing pods limited is still 51');
      await set('limited=0');
      assert.equal(status().status, 0);
    } finally {
      await set('exhaust=0&ready=1&limited=0');
    }
  });

  test('static addresses (args.cni.ips, runtimeConfig.ips, CNI_ARGS IP=) are honoured when free and in the pool', async () => {
    const a = runShim(env('ADD', 'ctr-static-a', nsPath(POD_NS)), conf('1.1.0', { args: { cni: { ips: ['10.77.0.200/24'] } } }));
    assert.equal(a.status, 0, a.stdout);
    assert.equal(podIpOf(a), '10.77.0.200');
    assert.ok(links(POD_NS).find((l) => l.ifname === 'eth0')?.addr_info?.some((x) => x.local === '10.77.0.200' && x.prefixlen === 32));
    // Another container asking for the same address: refused, never shared.
    const taken = errOf(runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS), { CNI_ARGS: 'IgnoreUnknown=1;IP=10.77.0.200' }), conf('1.1.0')));
    assert.equal(taken.code, 102);
    assert.match(taken.msg, /Cannot allocate 10\.77\.0\.200 to "ctr-static-b": already owned by "ctr-static-a"/);
    const router = errOf(runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS), { CNI_ARGS: 'IP=10.77.0.1' }), conf('1.1.0')));
    assert.equal(router.code, 102, 'the router address is taken too');
    const outside = errOf(runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS)), conf('1.1.0', { runtimeConfig: { ips: ['10.78.0.5'] } })));
    assert.equal(outside.code, 101);
    assert.match(outside.msg, /Cannot allocate 10\.78\.0\.5: not a usable address of pod CIDR 10\.77\.0\.0\/24/);
    const v6 = errOf(runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS)), conf('1.1.0', { args: { cni: { ips: ['fd00::5'] } } })));
    assert.deepEqual(v6, { code: 7, msg: 'invalid network config: "args.cni.ips" asks for "fd00::5": the cluster is IPv4-only' });
    const two = errOf(runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS), { CNI_ARGS: 'IP=10.77.0.201' }), conf('1.1.0', { args: { cni: { ips: ['10.77.0.202'] } } })));
    assert.equal(two.code, 7);
    assert.deepEqual(links(POD2_NS).filter((l) => l.ifname !== 'lo'), [], 'refused ADDs touched nothing');
    assert.deepEqual((await agentState()).ips, ['10.77.0.200']);
    const b = runShim(env('ADD', 'ctr-static-b', nsPath(POD2_NS), { CNI_ARGS: 'IgnoreUnknown=1;IP=10.77.0.201' }), conf('1.1.0'));
    assert.equal(b.status, 0, b.stdout);
    assert.equal(podIpOf(b), '10.77.0.201');
    for (const [cid, ns] of [['ctr-static-a', POD_NS], ['ctr-static-b', POD2_NS]] as const) assert.equal(runShim(env('DEL', cid, nsPath(ns)), conf('1.1.0')).status, 0);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test('CHECK fails once the address is no longer allocated to the container', async () => {
    const add = runShim(env('ADD', 'ctr-stolen', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(add.status, 0, add.stdout);
    const prev = conf('1.1.0', { prevResult: json(add.stdout) });
    assert.equal(runShim(env('CHECK', 'ctr-stolen', nsPath(POD_NS)), prev).status, 0);
    const ip = podIpOf(add);
    await set(`steal=${ip}`);
    const e = errOf(runShim(env('CHECK', 'ctr-stolen', nsPath(POD_NS)), prev));
    assert.deepEqual(e, { code: 999, msg: `CHECK failed for container "ctr-stolen": ${ip} is no longer allocated to it` });
    assert.equal(runShim(env('DEL', 'ctr-stolen', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    // The thief's allocation is its own; DEL of ctr-stolen gave back only what was ctr-stolen's.
    assert.deepEqual((await agentState()).ips, [ip]);
    assert.equal(runShim(env('DEL', 'thief', ''), conf('1.1.0')).status, 0);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test("CNI_NETNS naming the agent's own namespace: ADD refused with 8 before anything, DEL never deletes node interfaces", async () => {
    ip('-n', NODE_NS, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer');
    try {
      const before = links(NODE_NS).map((l) => l.ifname).sort();
      for (const own of [nsPath(NODE_NS), `/proc/${agent!.pid}/ns/net`]) {
        const e = errOf(runShim(env('ADD', 'ctr-node', own), conf('1.1.0')));
        assert.equal(e.code, 8);
        assert.match(e.msg, /is the node's own namespace, not a pod's/);
        assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
        const del = runShim(env('DEL', 'ctr-node', own), conf('1.1.0'));
        assert.equal(del.status, 0, del.stdout);
      }
      assert.deepEqual(links(NODE_NS).map((l) => l.ifname).sort(), before, 'the node kept every interface, eth0 included');
    } finally {
      ip('-n', NODE_NS, 'link', 'del', 'eth0');
    }
  });

  test('a second attachment in the same sandbox is refused with 103; its DEL removes nothing of the first', async () => {
    const add = runShim(env('ADD', 'ctr-multi', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(add.status, 0, add.stdout);
    const ip0 = podIpOf(add);
    const routesBefore = routes(POD_NS);
    const second = errOf(runShim(env('ADD', 'ctr-multi', nsPath(POD_NS), { CNI_IFNAME: 'net1' }), conf('1.1.0')));
    assert.equal(second.code, 103);
    assert.match(second.msg, /Cannot add "net1" to container "ctr-multi": it already has the Tendril interface "eth0"/);
    // Another container ID on the same namespace (a runtime's mistake, or another network owning it).
    const foreign = errOf(runShim(env('ADD', 'ctr-intruder', nsPath(POD_NS), { CNI_IFNAME: 'net1' }), conf('1.1.0')));
    assert.equal(foreign.code, 103);
    assert.match(foreign.msg, /already has a default route via 10\.77\.0\.1 dev eth0, so another attachment owns it/);
    const sameName = errOf(runShim(env('ADD', 'ctr-intruder2', nsPath(POD_NS)), conf('1.1.0')));
    assert.equal(sameName.code, 103);
    assert.match(sameName.msg, /the namespace already has a link of that name/);
    // The runtime DELs what failed: only the refused attachment, which holds nothing (its DEL must not take
    // the eth0 it found there).
    for (const cid of ['ctr-multi', 'ctr-intruder']) assert.equal(runShim(env('DEL', cid, nsPath(POD_NS), { CNI_IFNAME: 'net1' }), conf('1.1.0')).status, 0);
    assert.equal(runShim(env('DEL', 'ctr-intruder2', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.deepEqual(routes(POD_NS), routesBefore);
    assert.deepEqual(lxcLinks(), [hostIfName('ctr-multi', 'eth0')]);
    assert.deepEqual((await agentState()).ips, [ip0]);
    assert.equal(runShim(env('CHECK', 'ctr-multi', nsPath(POD_NS)), conf('1.1.0', { prevResult: json(add.stdout) })).status, 0);
    assert.equal(runShim(env('DEL', 'ctr-multi', nsPath(POD_NS)), conf('1.1.0')).status, 0);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test('DEL releases by container ID what an ADD killed half-way left: the address and the host veth', async () => {
    const [leaked] = await set('allocate=ctr-killed');
    const host = hostIfName('ctr-killed', 'eth0');
    ip('-n', NODE_NS, 'link', 'add', host, 'type', 'veth', 'peer', 'name', `${PREFIX.slice(-6)}k`);
    assert.deepEqual((await agentState()).ips, [leaked]);
    const del = runShim(env('DEL', 'ctr-killed', nsPath(POD_NS)), conf('1.1.0'));
    assert.equal(del.status, 0, del.stdout);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
    assert.deepEqual(lxcLinks(), []);
    // GC gives back the same remains when the runtime never sends that DEL.
    const [leaked2] = await set('allocate=ctr-killed2');
    assert.deepEqual((await agentState()).ips, [leaked2]);
    const gc = runShim({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0', { 'cni.dev/valid-attachments': [] }));
    assert.equal(gc.status, 0, gc.stdout);
    assert.deepEqual(await agentState(), { ips: [], endpoints: [] });
  });

  test('shim overhead: VERSION exec and ADD/DEL round trips', (t: TestContext) => {
    const N = 20;
    const base: number[] = [];
    const version: number[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      spawnSync('/bin/true');
      base.push(performance.now() - t0);
      version.push(runShim({ CNI_COMMAND: 'VERSION' }, '').ms);
    }
    const statuses: number[] = [];
    for (let i = 0; i < N; i++) {
      const st = runShim({ CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0'));
      assert.equal(st.status, 0, st.stdout);
      statuses.push(st.ms);
    }
    const adds: number[] = [];
    const dels: number[] = [];
    for (let i = 0; i < 10; i++) {
      const a = runShim(env('ADD', `ctr-bench-${i}`, nsPath(POD_NS)), conf('1.1.0'));
      assert.equal(a.status, 0, a.stdout);
      adds.push(a.ms);
      const d = runShim(env('DEL', `ctr-bench-${i}`, nsPath(POD_NS)), conf('1.1.0'));
      assert.equal(d.status, 0, d.stdout);
      dels.push(d.ms);
    }
    t.diagnostic(`spawnSync(/bin/true) median ${fmt(median(base))} (baseline of the measuring method)`);
    t.diagnostic(`tendril-cni VERSION median ${fmt(median(version))} over ${N} runs`);
    t.diagnostic(`tendril-cni STATUS round trip (shim + agent HTTP, no kernel work) median ${fmt(median(statuses))}`);
    t.diagnostic(`tendril-cni ADD round trip median ${fmt(median(adds))}, max ${fmt(Math.max(...adds))}`);
    t.diagnostic(`tendril-cni DEL round trip median ${fmt(median(dels))}, max ${fmt(Math.max(...dels))}`);
    // Loose bound: the point of the shim is that it costs nothing like a Node start (150-250 ms).
    assert.ok(median(version) < 50, `VERSION median ${median(version)} ms`);
  });

  function spawnAsync(e: Record<string, string>, stdin: string): Promise<ShimRun> {
    return new Promise((resolve) => {
      const child = spawn(SHIM, [], { env: { PATH: '/usr/bin:/bin', ...e } });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (status) => resolve({ status, stdout: out, stderr: '', ms: 0 }));
      child.stdin.end(stdin);
    });
  }
}

const serveSocket = process.env['TDLT_CNI_SERVE'];
if (serveSocket) serve(serveSocket);
else registerTests();
