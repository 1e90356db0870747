// Integration (issue #10, LB IPAM and L2 announcements) on a 3-node lab (tunnel and native routing) with an external host on the
// underlay: a LoadBalancer service gets an IP of a TendrilLoadBalancerIPPool; pods reach it; exactly one node holds
// its lease and answers ARP for it in BPF, so the external host's neighbour table shows that node's MAC, and its GETs to
// LBIP:80 reach every backend (externalTrafficPolicy Cluster: remote ones see that node's IP; Local: only its own); when that
// node is removed another one takes the lease, answers, and its gratuitous ARP moves the external host's neighbour entry
// at once; a service without a selector reaches the external host through explicit backends (EndpointSlice);
// loadBalancerSourceRanges drop the external host (and a pod) outside them; an exhausted pool leaves a service pending with a reason.
// Root; the lab is the test's own and is removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execCapture, labDown, labNodeDel, labUp, loadLab, podAdd, podDel, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { externalAdd } from '../src/lab/outside.js';
import { labLbPoolAdd, labLbPoolList, labServiceStatuses } from '../src/lab/lb-pools.js';
import { labServiceAdd, labServiceDel, labServiceEndpoints } from '../src/lab/services.js';
import { ApiClient } from '../src/util/api-client.js';
import type { L2AnnouncementView } from '../src/l2/index.js';
import type { ServiceListEntry } from '../src/lb/index.js';

const DEADLINE_MS = 30_000;
const EXT_IP = '192.168.10.200';
const POOL_START = '192.168.10.240';
const POOL_STOP = '192.168.10.241';

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

/* An HTTP GET from a namespace (pod or external host): the backend's name, or the error. */
const GET = `
const http = require('http'); const [ip, port, t] = process.argv.slice(1);
const req = http.get({ host: ip, port: Number(port), path: '/', timeout: Number(t) }, (r) => { let b = ''; r.on('data', (d) => (b += d)).on('end', () => { process.stdout.write((/Hostname: (\\S+)/.exec(b) || [])[1] || 'answered'); }); });
req.on('timeout', () => { req.destroy(); process.stdout.write('error:timeout'); });
req.on('error', (e) => process.stdout.write('error:' + (e.code || e.message)));`;

function get(netns: string, ip: string, port: number, timeoutMs = 1000): string {
  const r = execCapture(netns, [process.execPath, '-e', GET, ip, String(port), String(timeoutMs)], 30_000);
  return r.stdout.trim();
}

/* An HTTP GET: the backend's name and the source address it saw ("error:..." as name when none answered). */
const GET_SEEN = GET.replace("process.stdout.write((/Hostname: (\\S+)/.exec(b) || [])[1] || 'answered');", "process.stdout.write(((/Hostname: (\\S+)/.exec(b) || [])[1] || 'answered') + ' ' + ((/RemoteAddr: ([\\d.]+)/.exec(b) || [])[1] || '?'));");

function getSeen(netns: string, ip: string, port: number, timeoutMs = 2000): { name: string; seen: string } {
  const r = execCapture(netns, [process.execPath, '-e', GET_SEEN, ip, String(port), String(timeoutMs)], 30_000);
  const [name = '', seen = ''] = r.stdout.trim().split(' ');
  return { name, seen };
}

function neighbour(netns: string, ip: string): { mac: string | null; state: string } {
  const r = execCapture(netns, ['ip', '-j', 'neigh', 'show', ip]);
  const e = (JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string; state?: string[] }>)[0];
  return { mac: e?.lladdr ?? null, state: (e?.state ?? []).join(',') };
}

function macOf(netns: string, dev: string): string {
  const r = execCapture(netns, ['ip', '-j', 'link', 'show', dev]);
  return (JSON.parse(r.stdout) as Array<{ address: string }>)[0]!.address;
}

for (const routing of ['tunnel', 'native'] as RoutingMode[]) describe(`LB IPAM and L2 announcements on a 3-node lab (${routing})`, { concurrency: 1, timeout: 600_000 }, () => {
  const lab = `l2${routing[0]}${process.pid % 100000}`;
  const pods: Record<string, LabPod> = {};
  let extNetns = '';
  let lbIp = '';
  let holder = '';

  const l2Views = async (): Promise<Record<string, L2AnnouncementView[]>> => {
    const out: Record<string, L2AnnouncementView[]> = {};
    for (const n of loadLab(lab).nodes) out[n.name] = await new ApiClient(n.socket).get<L2AnnouncementView[]>('/v1/l2', 2000).catch(() => []);
    return out;
  };
  const announcers = (v: Record<string, L2AnnouncementView[]>, ip: string): string[] => Object.entries(v).filter(([, l]) => l.some((e) => e.ip === ip && e.announcedHere)).map(([n]) => n);

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/lb-l2-lab.test.ts needs root');
    assert.notEqual(GET_SEEN, GET, 'the GET that reports the source seen');
    await labDown(lab).catch(() => undefined);
    const st = await labUp({ name: lab, nodes: 3, routing });
    const [ctr, w1, w2] = st.nodes.map((n) => n.name);
    extNetns = (await externalAdd(lab, 'outside', { ip: EXT_IP, serve: [8080] })).netns;
    for (const [name, node] of [['web-0', ctr], ['web-1', w1], ['web-2', w2]] as const) {
      pods[name] = await podAdd(lab, name, { node: node!, namespace: 'shop', labels: { app: 'web' }, serve: [8080] });
    }
    pods['client'] = await podAdd(lab, 'client', { node: ctr!, namespace: 'shop', labels: { role: 'client' } });
  });

  after(async () => {
    await labDown(lab).catch(() => undefined);
  });

  test('a LoadBalancer service gets an IP of the pool that selects it, and pods reach the service by it', async () => {
    await labLbPoolAdd(lab, 'lan', { cidrs: [], start: POOL_START, stop: POOL_STOP, selector: { exposed: 'yes' } });
    await labServiceAdd(lab, 'web', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'LoadBalancer', labels: { exposed: 'yes' } });
    const st = await until('the service has a LoadBalancer IP', () => labServiceStatuses(lab), (m) => (m.get('shop/web')?.loadBalancer.ingress.length ?? 0) > 0);
    lbIp = st.get('shop/web')!.loadBalancer.ingress[0]!;
    assert.ok([POOL_START, POOL_STOP].includes(lbIp), lbIp);
    const seen = new Set<string>();
    await until('the client pod reaches every backend through the LoadBalancer IP', () => {
      seen.add(get(pods['client']!.netns, lbIp, 80));
      return seen;
    }, (s) => ['web-0', 'web-1', 'web-2'].every((n) => s.has(n)));
    const pool = (await labLbPoolList(lab)).find((p) => p.name === 'lan')!;
    assert.equal(pool.status?.used, 1);
    assert.equal(pool.status?.available, 1);
  });

  test('exactly one node answers ARP for the LoadBalancer IP: the external host resolves it to that node\'s MAC', async () => {
    const v = await until('one node announces the IP', l2Views, (x) => announcers(x, lbIp).length === 1 && Object.values(x).every((l) => l.some((e) => e.ip === lbIp && e.holder !== null)));
    holder = announcers(v, lbIp)[0]!;
    for (const [node, list] of Object.entries(v)) assert.equal(list.find((e) => e.ip === lbIp)?.holder, holder, `${node} sees the same lease holder`);
    const mac = macOf(loadLab(lab).nodes.find((n) => n.name === holder)!.netns, 'eth0');
    // Any packet to the IP makes the external host resolve it (the reply to the TCP attempt itself is not asserted here).
    const n = await until('the external host resolves the LoadBalancer IP', () => {
      get(extNetns, lbIp, 80, 300);
      return neighbour(extNetns, lbIp);
    }, (x) => x.mac !== null && !x.state.includes('FAILED') && !x.state.includes('INCOMPLETE'));
    assert.equal(n.mac, mac, `the announcing node ${holder}'s eth0 MAC`);
  });

  test('the external host GETs LBIP:80: each backend reached, source IP as the policy says (Cluster: SNAT for remote backends; Local: only the announcing node\'s own)', async () => {
    const st = loadLab(lab);
    const via = st.nodes.find((n) => n.name === holder)!;
    const webs = ['web-0', 'web-1', 'web-2'];
    const seen = new Map<string, string>();
    await until('the external host reaches every backend through the LoadBalancer IP', () => {
      const a = getSeen(extNetns, lbIp, 80);
      if (webs.includes(a.name)) seen.set(a.name, a.seen);
      return [...seen.keys()];
    }, (s) => webs.every((n) => s.includes(n)));
    for (const [name, addr] of seen) {
      const want = pods[name]!.node === holder ? EXT_IP : via.ip;
      assert.equal(addr, want, `${name} (on ${pods[name]!.node}) through ${holder}: source seen ${addr}, want ${want}`);
    }
    const own = webs.find((n) => pods[n]!.node === holder)!;
    const svc = { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' as const }], type: 'LoadBalancer' as const, labels: { exposed: 'yes' } };
    await labServiceAdd(lab, 'web', { ...svc, externalTrafficPolicy: 'Local' });
    try {
      // Every backend answered before: eight answers in a row from the announcing node's own backend mean Local holds.
      let run: Array<{ name: string; seen: string }> = [];
      run = await until('with externalTrafficPolicy Local only the announcing node\'s own backend answers', () => {
        const a = getSeen(extNetns, lbIp, 80);
        run = a.name === own ? [...run, a] : [];
        return run;
      }, (r) => r.length >= 8);
      for (const a of run) assert.equal(a.seen, EXT_IP, `${own}: the external host's address is kept`);
    } finally {
      await labServiceAdd(lab, 'web', { ...svc, externalTrafficPolicy: 'Cluster' });
    }
  });

  test('loadBalancerSourceRanges: the external host outside the ranges is dropped in BPF (reason 177), inside them it is served; service list shows them', async () => {
    const st = loadLab(lab);
    const via = st.nodes.find((n) => n.name === holder)!;
    const api = new ApiClient(via.socket);
    const svc = { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' as const }], type: 'LoadBalancer' as const, labels: { exposed: 'yes' } };
    const lbRanges = async (): Promise<string[] | null> => (await api.get<ServiceListEntry[]>('/v1/service', 2000)).find((e) => e.frontend === `${lbIp}:80/TCP`)?.sourceRanges ?? null;
    const drops177 = async (): Promise<number> => (await api.get<Array<{ reason: number; direction: string; packets: number }>>('/v1/map/metrics', 2000)).filter((m) => m.reason === 177).reduce((n, m) => n + m.packets, 0);
    try {
      const stored = await labServiceAdd(lab, 'web', { ...svc, loadBalancerSourceRanges: ['10.99.0.0/16'] });
      assert.deepEqual(stored.loadBalancerSourceRanges, ['10.99.0.0/16']);
      await until('the announcing node\'s LoadBalancer frontend has the range', lbRanges, (r) => r?.join() === '10.99.0.0/16');
      const before = await drops177();
      // Dropped, not answered: the connection attempt times out (destroying it then reports ECONNRESET too).
      for (let i = 0; i < 3; i++) assert.match(get(extNetns, lbIp, 80, 1000), /^error:timeout/, `${EXT_IP} is outside 10.99.0.0/16: dropped, not answered`);
      const after = await until('the drops are counted with their own reason', drops177, (n) => n > before);
      assert.ok(after > before);
      // Pods are restricted too (as kube-proxy's firewall chain does; Cilium lets in-cluster clients by): a pod
      // outside the ranges is dropped, the ClusterIP stays open to it.
      assert.match(get(pods['client']!.netns, lbIp, 80, 1000), /^error:timeout/, 'a pod outside the ranges does not reach the LoadBalancer IP');
      await labServiceAdd(lab, 'web', { ...svc, loadBalancerSourceRanges: ['10.99.0.0/16', '192.168.10.192/28'] });
      await until('the external host inside 192.168.10.192/28 is served', () => get(extNetns, lbIp, 80, 1000), (x) => x.startsWith('web-'));
      assert.deepEqual(await lbRanges(), ['10.99.0.0/16', '192.168.10.192/28']);
    } finally {
      await labServiceAdd(lab, 'web', svc);
    }
    await until('without ranges the frontend has none', lbRanges, (r) => r === null);
  });

  test('a service without a selector gets explicit backends (EndpointSlice): a ClusterIP whose backend is the external host answers from a pod', async () => {
    const s = await labServiceAdd(lab, 'ext', { namespace: 'shop', selector: {}, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'ClusterIP' });
    try {
      // No selector, no slice: no backends, answered at once (ICMP port unreachable), not a timeout.
      assert.match(get(pods['client']!.netns, s.clusterIP!, 80, 5000), /^error:(ECONNREFUSED|EHOSTUNREACH)/);
      const slices = await labServiceEndpoints(lab, 'shop/ext', [{ ip: EXT_IP, port: 8080 }]);
      assert.deepEqual(slices.map((x) => [x.labels['kubernetes.io/service-name'], x.addressType, x.endpoints.map((e) => e.addresses.join()), x.ports.map((p) => p.port)]), [['ext', 'IPv4', [EXT_IP], [8080]]]);
      for (const n of loadLab(lab).nodes) {
        const e = (await new ApiClient(n.socket).get<ServiceListEntry[]>('/v1/service', 2000)).find((x) => x.frontend === `${s.clusterIP}:80/TCP`);
        assert.deepEqual(e?.backends, [`${EXT_IP}:8080/TCP`], `${n.name} load-balances to the external host`);
      }
      const got = await until('the client pod reaches the external host through the ClusterIP', () => get(pods['client']!.netns, s.clusterIP!, 80, 2000), (x) => !x.startsWith('error'));
      assert.equal(got, 'outside', 'the external host\'s server answered');
      // Emptied: no backends again.
      await labServiceEndpoints(lab, 'shop/ext', []);
      assert.match(get(pods['client']!.netns, s.clusterIP!, 80, 5000), /^error:(ECONNREFUSED|EHOSTUNREACH)/);
    } finally {
      await labServiceDel(lab, 'shop/ext');
    }
  });

  test('externalTrafficPolicy Local: only the node with the service\'s backend announces its IP; the announcement follows the backend', async () => {
    await podAdd(lab, 'solo-0', { node: 'w1', namespace: 'shop', labels: { app: 'solo' }, serve: [8080] });
    await labServiceAdd(lab, 'solo', { namespace: 'shop', selector: { app: 'solo' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], type: 'LoadBalancer', externalTrafficPolicy: 'Local', labels: { exposed: 'yes' } });
    try {
      const st = await until('the Local service has a LoadBalancer IP', () => labServiceStatuses(lab), (m) => (m.get('shop/solo')?.loadBalancer.ingress.length ?? 0) > 0);
      const ip = st.get('shop/solo')!.loadBalancer.ingress[0]!;
      assert.notEqual(ip, lbIp);
      const v = await until('w1, the node of its only backend, announces it', l2Views, (x) => announcers(x, ip).join() === 'w1' && Object.values(x).every((l) => l.some((e) => e.ip === ip && e.holder === 'w1')));
      for (const [node, list] of Object.entries(v)) assert.equal(list.find((e) => e.ip === ip)?.holder, 'w1', node);
      // The backend moves to w2: w1 loses its last local backend and hands the lease back, w2 takes it.
      await podAdd(lab, 'solo-1', { node: 'w2', namespace: 'shop', labels: { app: 'solo' }, serve: [8080] });
      await podDel(lab, 'shop/solo-0');
      await until('w2 announces it instead', l2Views, (x) => announcers(x, ip).join() === 'w2' && Object.values(x).every((l) => l.some((e) => e.ip === ip && e.holder === 'w2')));
    } finally {
      await labServiceDel(lab, 'shop/solo');
      await podDel(lab, 'shop/solo-1').catch(() => undefined);
      await podDel(lab, 'shop/solo-0').catch(() => undefined);
    }
  });

  test('the announcement moves to another node when the announcing node is removed', async () => {
    const t0 = Date.now();
    await labNodeDel(lab, holder);
    const v = await until('another node announces the IP', l2Views, (x) => announcers(x, lbIp).length === 1);
    const next = announcers(v, lbIp)[0]!;
    const ms = Date.now() - t0;
    assert.notEqual(next, holder);
    process.stdout.write(`# L2 announcement of ${lbIp} moved from ${holder} to ${next} in ${ms} ms (node removal included)\n`);
    const mac = macOf(loadLab(lab).nodes.find((n) => n.name === next)!.netns, 'eth0');
    // Gratuitous ARP of the node that took over: the external host's entry (the old node's MAC, from the tests
    // above) moves to the new MAC while the external host sends nothing (no resolution of its own, no expiry).
    const n = await until('the external host\'s entry moves to the new node by gratuitous ARP, without traffic', () => neighbour(extNetns, lbIp), (x) => x.mac === mac);
    assert.equal(n.mac, mac, `the new announcing node ${next}'s eth0 MAC`);
    process.stdout.write(`# the external host's neighbour entry for ${lbIp} moved to ${next}'s MAC ${mac} by gratuitous ARP (state ${n.state}) ${Date.now() - t0} ms after the node removal began\n`);
    const seen = await until('pods still reach the service by its LoadBalancer IP', () => get(pods['client']?.node !== holder ? pods['client']!.netns : pods['web-1']!.netns, lbIp, 80), (x) => !x.startsWith('error'));
    assert.ok(seen.startsWith('web-'), seen);
  });

  test('when the announcing node\'s agent dies, its answers expire with the lease and another node answers', async () => {
    const v0 = await until('one node announces the IP', l2Views, (x) => announcers(x, lbIp).length === 1);
    const dead = announcers(v0, lbIp)[0]!;
    const n = loadLab(lab).nodes.find((x) => x.name === dead)!;
    const t0 = Date.now();
    process.kill(n.pid, 'SIGKILL'); // the agent this lab started (no hand-back: the lease must run out)
    const v = await until('another node announces the IP', l2Views, (x) => announcers(x, lbIp).some((a) => a !== dead));
    const next = announcers(v, lbIp).find((a) => a !== dead)!;
    process.stdout.write(`# after ${dead}'s agent was killed, ${next} took the lease of ${lbIp} in ${Date.now() - t0} ms\n`);
    const mac = macOf(loadLab(lab).nodes.find((x) => x.name === next)!.netns, 'eth0');
    await until('the external host\'s entry moves to the node that took over by gratuitous ARP', () => neighbour(extNetns, lbIp), (x) => x.mac === mac);
    // The external host resolves the IP afresh: only the node that took over answers (the dead agent's entry expired).
    execCapture(extNetns, ['ip', 'neigh', 'flush', 'to', lbIp]);
    const got = await until('the external host resolves the IP to the node that took over', () => {
      get(extNetns, lbIp, 80, 300);
      return neighbour(extNetns, lbIp);
    }, (x) => x.mac !== null && !x.state.includes('FAILED') && !x.state.includes('INCOMPLETE'));
    assert.equal(got.mac, mac, `only ${next} answers (the dead agent's entry expired)`);
  });

  test('an exhausted pool leaves a LoadBalancer service pending with the reason', async () => {
    await labServiceAdd(lab, 'second', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 81, targetPort: 8080, protocol: 'TCP' }], type: 'LoadBalancer', labels: { exposed: 'yes' } });
    await labServiceAdd(lab, 'third', { namespace: 'shop', selector: { app: 'web' }, ports: [{ port: 82, targetPort: 8080, protocol: 'TCP' }], type: 'LoadBalancer', labels: { exposed: 'yes' } });
    const st = await until('both are decided', () => labServiceStatuses(lab), (m) => m.has('shop/second') && m.has('shop/third') && [m.get('shop/second')!, m.get('shop/third')!].some((s) => s.loadBalancer.ingress.length === 0));
    const [got, pending] = [st.get('shop/second')!, st.get('shop/third')!].sort((a, b) => b.loadBalancer.ingress.length - a.loadBalancer.ingress.length);
    assert.deepEqual(got!.loadBalancer.ingress.length, 1);
    assert.notEqual(got!.loadBalancer.ingress[0], lbIp, 'no IP handed out twice');
    assert.equal(pending!.loadBalancer.ingress.length, 0);
    assert.equal(pending!.conditions[0]!.reason, 'out_of_ips');
    assert.match(pending!.conditions[0]!.message, /Every IP of the pools selecting service "shop\/(second|third)" \("lan"\) is in use/);
  });
});
