// Integration (issue #10): services load-balanced in BPF on a 3-node lab, tunnel and native routing. A ClusterIP
// from a same-node and a remote client spreads over every backend and a connection stays on one; UDP; a named
// targetPort; NodePort from pods on every node IP; a deleted backend leaves; a service without backends refuses at once; a policy selecting the
// backends applies through the ClusterIP; ClientIP session affinity. Root; each lab is the test's own and is
// removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execCapture, labDown, labUp, loadLab, podAdd, podDel, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { labServiceAdd, labServiceDel, labServiceList } from '../src/lab/services.js';
import { ApiClient } from '../src/util/api-client.js';
import type { ServiceListEntry } from '../src/lb/index.js';

const DEADLINE_MS = 30_000;

/* Runs in a pod: n requests, each on a new connection (tcp), one keep-alive connection (hold) or new UDP sockets. */
const CLIENT = `
const http = require('http'), dgram = require('dgram');
let inp = ''; process.stdin.on('data', (d) => (inp += d)).on('end', async () => {
  const o = JSON.parse(inp); const agent = new http.Agent({ keepAlive: true, maxSockets: 1 }); const out = [];
  const tcp = (a) => new Promise((res) => {
    const t0 = Date.now();
    const req = http.get({ host: o.ip, port: o.port, path: '/', agent: a, timeout: o.timeout }, (r) => {
      let b = ''; r.on('data', (d) => (b += d)).on('end', () => res({ ok: true, name: (/Hostname: (\\S+)/.exec(b) || [])[1], sport: req.socket && req.socket.localPort, ms: Date.now() - t0 }));
    });
    req.on('timeout', () => { req.destroy(); res({ ok: false, error: 'timeout', ms: Date.now() - t0 }); });
    req.on('error', (e) => res({ ok: false, error: e.code || e.message, ms: Date.now() - t0 }));
  });
  const udp = () => new Promise((res) => {
    const s = dgram.createSocket('udp4'); const t0 = Date.now();
    const send = () => s.send('hi', o.port, o.ip); const iv = setInterval(send, 150);
    const done = (v) => { clearInterval(iv); clearTimeout(tm); s.close(); res({ ...v, ms: Date.now() - t0 }); };
    const tm = setTimeout(() => done({ ok: false, error: 'timeout' }), o.timeout);
    s.on('message', (m) => done({ ok: true, name: m.toString().split(':')[0] }));
    s.on('error', (e) => done({ ok: false, error: e.code || e.message }));
    send();
  });
  for (let i = 0; i < o.n; i++) out.push(o.mode === 'udp' ? await udp() : await tcp(o.mode === 'hold' ? agent : false));
  agent.destroy(); process.stdout.write(JSON.stringify(out));
});`;

interface Answer {
  ok: boolean;
  name?: string;
  error?: string;
  sport?: number;
  ms: number;
}

function request(from: LabPod, ip: string, port: number, n: number, mode: 'tcp' | 'hold' | 'udp' = 'tcp', timeout = 1500): Answer[] {
  const r = execCapture(from.netns, [process.execPath, '-e', CLIENT], 120_000, JSON.stringify({ ip, port, n, mode, timeout }));
  assert.equal(r.status, 0, `client in ${from.name} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Answer[];
}

async function until<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const deadline = Date.now() + DEADLINE_MS;
  let last: T;
  for (;;) {
    last = await fn();
    if (ok(last)) return last;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${DEADLINE_MS} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const names = (a: Answer[]): Set<string> => new Set(a.filter((x) => x.ok).map((x) => x.name!));

for (const routing of ['tunnel', 'native'] as RoutingMode[]) {
  describe(`services on a 3-node lab (${routing} routing)`, { concurrency: 1 }, () => {
    const lab = `lb${routing[0]}${process.pid}`;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-lb-lab-'));
    const pods: Record<string, LabPod> = {};

    before(async () => {
      assert.equal(process.getuid?.(), 0, 'test/lb-lab.test.ts needs root');
      const st = await labUp({ name: lab, nodes: 3, routing });
      const [ctr, w1, w2] = st.nodes.map((n) => n.name);
      const web = (name: string, node: string) => podAdd(lab, name, { node: node!, namespace: 'shop', labels: { app: 'web' }, serve: [8080, 5353], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
      pods['web-0'] = await web('web-0', ctr!);
      pods['web-1'] = await web('web-1', w1!);
      pods['web-2'] = await web('web-2', w2!);
      pods['client'] = await podAdd(lab, 'client', { node: ctr!, namespace: 'shop', labels: { role: 'client' } });
      pods['remote'] = await podAdd(lab, 'remote', { node: w2!, namespace: 'shop', labels: { role: 'allowed' } });
    });

    after(async () => {
      await labDown(lab).catch(() => undefined);
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    test('a ClusterIP spreads same-node and remote clients over every backend and keeps a connection on one', async () => {
      const s = await labServiceAdd(lab, 'web', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP' });
      assert.match(s.clusterIP!, /^10\.(9[6-9]|10[0-9]|11[01])\./, 'from the default service CIDR 10.96.0.0/12');
      for (const from of [pods['client']!, pods['remote']!]) {
        const got = request(from, s.clusterIP!, 80, 40);
        assert.ok(got.every((a) => a.ok), `${from.name}: every request answered: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']), `${from.name} reached every backend`);
        const held = request(from, s.clusterIP!, 80, 20, 'hold');
        assert.equal(new Set(held.map((a) => a.sport)).size, 1, 'one connection');
        assert.equal(names(held).size, 1, `${from.name}: one connection, one backend: ${JSON.stringify([...names(held)])}`);
      }
      const list = (await labServiceList(lab)).find((x) => x.name === 'web');
      assert.equal(list?.clusterIP, s.clusterIP);
    });

    test('a UDP service and a named targetPort reach the backends', async () => {
      const u = await labServiceAdd(lab, 'dns', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 53, targetPort: 5353, protocol: 'UDP' }], type: 'ClusterIP' });
      const got = request(pods['client']!, u.clusterIP!, 53, 30, 'udp');
      assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
      assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']));
      const named = await labServiceAdd(lab, 'named', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 8000, targetPort: 'http', protocol: 'TCP' }], type: 'ClusterIP' });
      const r = request(pods['remote']!, named.clusterIP!, 8000, 20);
      assert.ok(r.every((a) => a.ok), JSON.stringify(r.filter((a) => !a.ok)));
      assert.equal(names(r).size, 3);
    });

    test('a service without backends refuses a connection at once (ICMP port unreachable), not after a timeout', async () => {
      const e = await labServiceAdd(lab, 'empty', { namespace: 'shop', selector: { app: 'nothing' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP' });
      const got = request(pods['client']!, e.clusterIP!, 80, 3, 'tcp', 5000);
      for (const a of got) assert.equal(a.error, 'ECONNREFUSED', JSON.stringify(a));
    });

    test('ClientIP session affinity keeps every connection of a client on one backend', async () => {
      const a = await labServiceAdd(lab, 'sticky', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP', sessionAffinity: 'ClientIP' });
      const got = request(pods['client']!, a.clusterIP!, 80, 20);
      assert.ok(got.every((x) => x.ok), JSON.stringify(got.filter((x) => !x.ok)));
      assert.equal(names(got).size, 1, JSON.stringify([...names(got)]));
    });

    test('a policy selecting the backends applies to traffic through the ClusterIP', async () => {
      const s = (await labServiceList(lab)).find((x) => x.name === 'web')!;
      const file = path.join(tmp, 'web-ingress.yaml');
      fs.writeFileSync(file, 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web-from-allowed\n  namespace: shop\nspec:\n  podSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          role: allowed\n    ports:\n    - port: 8080\n');
      await labPolicyApply(lab, [file]);
      try {
        const denied = request(pods['client']!, s.clusterIP!, 80, 3, 'tcp', 800);
        for (const a of denied) assert.equal(a.error, 'timeout', `role=client is not allowed: ${JSON.stringify(a)}`);
        const allowed = request(pods['remote']!, s.clusterIP!, 80, 10);
        assert.ok(allowed.every((a) => a.ok), JSON.stringify(allowed.filter((a) => !a.ok)));
      } finally {
        await labPolicyDelete(lab, 'shop/web-from-allowed');
      }
    });

    test('a NodePort answers from pods on every node\'s IP, over every backend', async () => {
      const s = await labServiceAdd(lab, 'np', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'NodePort' });
      const nodePort = s.ports[0]!.nodePort!;
      assert.ok(nodePort >= 30000 && nodePort <= 32767);
      for (const n of loadLab(lab).nodes) {
        const got = request(pods['client']!, n.ip, nodePort, 30);
        assert.ok(got.every((a) => a.ok), `${n.name} ${n.ip}:${nodePort}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']), `${n.name}`);
      }
      await labServiceDel(lab, 'shop/np');
    });

    test('a deleted backend pod leaves the service', async () => {
      const s = (await labServiceList(lab)).find((x) => x.name === 'web')!;
      const t0 = Date.now();
      await podDel(lab, 'shop/web-2');
      const nodes = loadLab(lab).nodes;
      const gone = await until(
        'every node drops web-2 from the service',
        async () => Promise.all(nodes.map((n) => new ApiClient(n.socket).get<ServiceListEntry[]>('/v1/service'))),
        (lists) => lists.every((l) => l.find((e) => e.frontend === `${s.clusterIP}:80/TCP`)?.backends.length === 2),
      );
      const ms = Date.now() - t0;
      assert.ok(gone);
      process.stdout.write(`# backend removal reached every node's maps ${ms} ms after the pod delete started\n`);
      const got = request(pods['client']!, s.clusterIP!, 80, 30);
      assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
      assert.deepEqual(names(got), new Set(['web-0', 'web-1']));
      await labServiceDel(lab, 'shop/empty');
      assert.equal((await labServiceList(lab)).some((x) => x.name === 'empty'), false);
    });
  });
}
