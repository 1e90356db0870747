// Integration (issue #10): NodePort from outside the cluster on a 3-node lab, tunnel and native routing. The lab's
// external host reaches a NodePort on every node's IP: with externalTrafficPolicy Cluster over every backend, a
// local backend seeing the external host's address, a remote one the node's (SNAT); with Local only the node's own
// backends answer, seeing the external host's address, and a node without one refuses at once (ICMP). UDP, a named
// targetPort, internalTrafficPolicy Local for ClusterIP from pods, and a node reaching another node's NodePort. Root; each lab is the test's own and is removed in
// after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execCapture, labDown, labUp, loadLab, podAdd, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { externalAdd, outsideNetns } from '../src/lab/outside.js';
import { labServiceAdd, labServiceDel } from '../src/lab/services.js';
import { formatIPv4, parseCidr } from '../src/util/ip.js';

/* n requests from wherever it runs, each on a new TCP connection or a new UDP socket: who answered, whom it saw. */
const CLIENT = `
const http = require('http'), dgram = require('dgram');
let inp = ''; process.stdin.on('data', (d) => (inp += d)).on('end', async () => {
  const o = JSON.parse(inp); const out = [];
  const tcp = () => new Promise((res) => {
    const req = http.get({ host: o.ip, port: o.port, path: '/', agent: false, timeout: o.timeout }, (r) => {
      let b = ''; r.on('data', (d) => (b += d)).on('end', () => res({ ok: true, name: (/Hostname: (\\S+)/.exec(b) || [])[1], seen: (/RemoteAddr: ([\\d.]+)/.exec(b) || [])[1] }));
    });
    req.on('timeout', () => { req.destroy(); res({ ok: false, error: 'timeout' }); });
    req.on('error', (e) => res({ ok: false, error: e.code || e.message }));
  });
  const udp = () => new Promise((res) => {
    const s = dgram.createSocket('udp4');
    const send = () => s.send('hi', o.port, o.ip); const iv = setInterval(send, 150);
    const done = (v) => { clearInterval(iv); clearTimeout(tm); s.close(); res(v); };
    const tm = setTimeout(() => done({ ok: false, error: 'timeout' }), o.timeout);
    s.on('message', (m) => { const t = m.toString(); done({ ok: true, name: t.split(':')[0], seen: (/RemoteAddr: ([\\d.]+)/.exec(t) || [])[1] }); });
    s.on('error', (e) => done({ ok: false, error: e.code || e.message }));
    send();
  });
  for (let i = 0; i < o.n; i++) out.push(o.udp ? await udp() : await tcp());
  process.stdout.write(JSON.stringify(out));
});`;

interface Answer {
  ok: boolean;
  name?: string;
  seen?: string;
  error?: string;
}

function request(netns: string, ip: string, port: number, n: number, o: { udp?: boolean; timeout?: number } = {}): Answer[] {
  const r = execCapture(netns, [process.execPath, '-e', CLIENT], 120_000, JSON.stringify({ ip, port, n, udp: o.udp ?? false, timeout: o.timeout ?? 2000 }));
  assert.equal(r.status, 0, `client in ${netns} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Answer[];
}

const names = (a: Answer[]): Set<string> => new Set(a.filter((x) => x.ok).map((x) => x.name!));

for (const routing of ['tunnel', 'native'] as RoutingMode[]) {
  describe(`NodePort from outside on a 3-node lab (${routing} routing)`, { concurrency: 1, timeout: 600_000 }, () => {
    const lab = `np${routing[0]}${process.pid}`;
    const pods: Record<string, LabPod> = {};
    /** Backend pod name -> node name. */
    const home: Record<string, string> = {};
    let extNs = '';
    let extIp = '';

    before(async () => {
      assert.equal(process.getuid?.(), 0, 'test/lb-nodeport-lab.test.ts needs root');
      const st = await labUp({ name: lab, nodes: 3, routing });
      const [ctr, w1, w2] = st.nodes.map((n) => n.name);
      const web = async (name: string, node: string, labels: Record<string, string>): Promise<void> => {
        pods[name] = await podAdd(lab, name, { node, namespace: 'edge', labels, serve: [8080, 5353], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
        home[name] = node;
      };
      await web('web-0', ctr!, { app: 'web', tier: 'local' });
      await web('web-1', w1!, { app: 'web', tier: 'local' });
      await web('web-2', w2!, { app: 'web' });
      const u = parseCidr(st.underlayCidr);
      extIp = formatIPv4((u.base + 2 ** (32 - u.bits) - 6) >>> 0);
      await externalAdd(lab, 'client', { ip: extIp });
      extNs = outsideNetns(loadLab(lab), 'client');
    });

    after(async () => {
      await labDown(lab).catch(() => undefined);
    });

    test('externalTrafficPolicy Cluster: every node\'s IP answers over every backend; a local one sees the external host, a remote one the node', async () => {
      const s = await labServiceAdd(lab, 'np-cluster', { namespace: 'edge', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http', protocol: 'TCP' }], type: 'NodePort' });
      const nodePort = s.ports[0]!.nodePort!;
      for (const n of loadLab(lab).nodes) {
        const got = request(extNs, n.ip, nodePort, 30);
        assert.ok(got.every((a) => a.ok), `${n.name} ${n.ip}:${nodePort}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']), n.name);
        for (const a of got) {
          const want = home[a.name!] === n.name ? extIp : n.ip;
          assert.equal(a.seen, want, `${a.name} (on ${home[a.name!]}) via ${n.name}: source seen ${a.seen}, want ${want}`);
        }
      }
    });

    test('externalTrafficPolicy Local: only the node\'s own backend answers and sees the external host; a node without one refuses at once', async () => {
      const s = await labServiceAdd(lab, 'np-local', { namespace: 'edge', selector: { tier: 'local' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'NodePort', externalTrafficPolicy: 'Local' });
      const nodePort = s.ports[0]!.nodePort!;
      const [ctr, w1, w2] = loadLab(lab).nodes;
      for (const [n, pod] of [[ctr!, 'web-0'], [w1!, 'web-1']] as const) {
        const got = request(extNs, n.ip, nodePort, 15);
        assert.ok(got.every((a) => a.ok), `${n.name}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set([pod]), n.name);
        for (const a of got) assert.equal(a.seen, extIp, `${n.name}: the client's address is kept`);
      }
      const none = request(extNs, w2!.ip, nodePort, 3, { timeout: 5000 });
      for (const a of none) assert.equal(a.error, 'ECONNREFUSED', `${w2!.name} has no local backend: ${JSON.stringify(a)}`);
      // Pods still reach every backend through the node port (internal traffic is not bound to the node).
      const client = await podAdd(lab, 'inside', { node: w2!.name, namespace: 'edge', labels: { role: 'client' } });
      const inside = request(client.netns, w2!.ip, nodePort, 20);
      assert.ok(inside.every((a) => a.ok), JSON.stringify(inside.filter((a) => !a.ok)));
      assert.deepEqual(names(inside), new Set(['web-0', 'web-1']));
      await labServiceDel(lab, 'edge/np-local');
    });

    test('a UDP NodePort answers the external host on every node', async () => {
      const s = await labServiceAdd(lab, 'np-udp', { namespace: 'edge', selector: { app: 'web' }, ports: [{ port: 53, targetPort: 5353, protocol: 'UDP' }], type: 'NodePort' });
      const nodePort = s.ports[0]!.nodePort!;
      for (const n of loadLab(lab).nodes) {
        const got = request(extNs, n.ip, nodePort, 30, { udp: true });
        assert.ok(got.every((a) => a.ok), `${n.name}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']), n.name);
        for (const a of got) assert.equal(a.seen, home[a.name!] === n.name ? extIp : n.ip, `${a.name} via ${n.name}`);
      }
      await labServiceDel(lab, 'edge/np-udp');
    });

    test('internalTrafficPolicy Local: pods reach only their own node\'s backends through the ClusterIP', async () => {
      const s = await labServiceAdd(lab, 'itp', { namespace: 'edge', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP', internalTrafficPolicy: 'Local' });
      const [ctr, , w2] = loadLab(lab).nodes;
      const here = await podAdd(lab, 'itp-client', { node: ctr!.name, namespace: 'edge', labels: { role: 'client' } });
      const there = await podAdd(lab, 'itp-remote', { node: w2!.name, namespace: 'edge', labels: { role: 'client' } });
      for (const [from, want] of [[here, 'web-0'], [there, 'web-2']] as const) {
        const got = request(from.netns, s.clusterIP!, 80, 15);
        assert.ok(got.every((a) => a.ok), `${from.name}: ${JSON.stringify(got.filter((a) => !a.ok))}`);
        assert.deepEqual(names(got), new Set([want]), from.name);
      }
      await labServiceDel(lab, 'edge/itp');
    });

    test('a node reaches another node\'s NodePort; the backend sees the node (local) or the node it went through (remote)', async () => {
      const [ctr, , w2] = loadLab(lab).nodes;
      const svc = await labServiceAdd(lab, 'np-node', { namespace: 'edge', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'NodePort' });
      const got = request(w2!.netns, ctr!.ip, svc.ports[0]!.nodePort!, 30);
      assert.ok(got.every((a) => a.ok), JSON.stringify(got.filter((a) => !a.ok)));
      assert.deepEqual(names(got), new Set(['web-0', 'web-1', 'web-2']));
      for (const a of got) assert.equal(a.seen, home[a.name!] === ctr!.name ? w2!.ip : ctr!.ip, `${a.name} via ${ctr!.name}`);
    });
  });
}
