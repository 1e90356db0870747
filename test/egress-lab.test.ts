// Integration: egress gateway (issue #11) on a three-node lab, tunnel and native routing, with an external host (192.168.10.200)
// routing a far network 10.0.0.0/16. A TendrilEgressGatewayPolicy selects the pods labelled app=egress for the
// external host and the far network except 10.0.2.0/24, gateway node w2, no egressIP given (the operator allocates
// one from the lab's --egress-ip-pool). The servers answer with the source address they saw.
// Root; every namespace is the test's own (run-unique lab name) and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execCapture, labDown, labNodeDel, labUp, loadLab, podAdd, restartAgent, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { externalAdd, networkAdd } from '../src/lab/outside.js';
import { labEgressApply, labEgressDel, labEgressList, labEgressPool } from '../src/lab/egress.js';
import { egressPolicyYaml, type EgressPolicyFixture } from '../src/lab/egress-fixtures.js';
import { ApiClient } from '../src/util/api-client.js';
import type { EgressKey, EgressValue } from '../src/egress/index.js';
import { until } from './lib/proc.js';

const EXT_IP = '192.168.10.200';
const FAR_IP = '10.0.1.10';
const FAR_EXCLUDED_IP = '10.0.2.10';

function httpFrom(ns: string, ip: string, port = 80): string {
  return execCapture(ns, ['curl', '-s', '--max-time', '10', `http://${ip}:${port}/`]).stdout;
}

/** The source address the external host saw, or undefined when the request did not make it within 2 s. */
function seenFrom(ns: string, ip: string): string | undefined {
  return remoteAddr(execCapture(ns, ['curl', '-s', '--max-time', '2', `http://${ip}:80/`]).stdout);
}

function udpFrom(ns: string, ip: string, port = 80): string {
  const js =
    `const s = require('dgram').createSocket('udp4'); s.on('message', (m) => { process.stdout.write(m); process.exit(0); }); ` +
    `const send = () => s.send('hello', ${port}, '${ip}'); send(); setInterval(send, 300); setTimeout(() => process.exit(1), 10000);`;
  return execCapture(ns, [process.execPath, '-e', js]).stdout;
}

function remoteAddr(answer: string): string | undefined {
  return /RemoteAddr: ([\d.]+):\d+/.exec(answer)?.[1];
}

/** The suite's policy: app=egress pods to the external host and the far network except 10.0.2.0/24, gateway w2. */
const POLICY = (name: string, o: Partial<EgressPolicyFixture> = {}): string =>
  egressPolicyYaml({ name, app: 'egress', destinations: [`${EXT_IP}/32`, '10.0.0.0/16'], excluded: ['10.0.2.0/24'], gateways: ['w2'], ...o });

function suite(routing: RoutingMode): void {
  describe(`egress gateway: three nodes, ${routing} routing, an external host and a far network`, { timeout: 600_000 }, () => {
    const LAB = `eg${process.pid % 100000}${routing[0]}`;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-egress-'));
    let a1: LabPod; // app=egress on ctr
    let a2: LabPod; // app=egress on w1
    let a3: LabPod; // app=egress on w2, the gateway itself
    let b1: LabPod; // app=other on ctr
    let egressIP = '';

    before(async () => {
      await labDown(LAB);
      await labUp({ name: LAB, nodes: 3, routing });
      await externalAdd(LAB, 'router', { ip: EXT_IP, serve: [80] });
      await networkAdd(LAB, 'far', { cidr: '10.0.0.0/16', via: 'router', hosts: [FAR_IP, FAR_EXCLUDED_IP], serve: [80] });
      a1 = await podAdd(LAB, 'a1', { node: 'ctr', labels: { app: 'egress' } });
      a2 = await podAdd(LAB, 'a2', { node: 'w1', labels: { app: 'egress' } });
      a3 = await podAdd(LAB, 'a3', { node: 'w2', labels: { app: 'egress' } });
      b1 = await podAdd(LAB, 'b1', { node: 'ctr', labels: { app: 'other' } });
    });
    after(async () => {
      await labDown(LAB);
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    const node = (name: string) => loadLab(LAB).nodes.find((n) => n.name === name)!;

    test('before any policy every pod is masqueraded to its own node IP', () => {
      assert.equal(remoteAddr(httpFrom(a1.netns, EXT_IP)), node('ctr').ip);
      assert.equal(remoteAddr(httpFrom(a2.netns, EXT_IP)), node('w1').ip);
    });

    test('lab egress-gateway apply: the operator picks w2 and allocates an egress IP from the pool', async () => {
      const file = path.join(tmp, 'egress.yaml');
      fs.writeFileSync(file, POLICY('egress-a'));
      const [p] = await labEgressApply(LAB, file);
      assert.ok(p);
      assert.equal(p.status.problem, undefined);
      assert.equal(p.status.gatewayNode, 'w2');
      assert.equal(p.status.gatewayIP, node('w2').ip);
      const pool = labEgressPool(loadLab(LAB).underlayCidr);
      assert.equal(pool, '192.168.10.240/28');
      assert.equal(p.status.egressIP, '192.168.10.241');
      egressIP = p.status.egressIP!;
      // Applying it again keeps the address (never another one for the same policy).
      const [again] = await labEgressApply(LAB, file);
      assert.equal(again!.status.egressIP, egressIP);
    });

    test('the gateway holds the egress IP on its native device, no other node does', () => {
      assert.match(execCapture(node('w2').netns, ['ip', '-4', 'addr', 'show', 'dev', 'eth0']).stdout, new RegExp(`inet ${egressIP.replace(/\./g, '\\.')}/32 `));
      for (const n of ['ctr', 'w1']) assert.doesNotMatch(execCapture(node(n).netns, ['ip', '-4', 'addr']).stdout, new RegExp(`inet ${egressIP.replace(/\./g, '\\.')}/`), n);
    });

    test('every node\'s tendril_egress_gw_policy_v4 holds the selected pods only, with the excluded CIDR', async () => {
      for (const n of loadLab(LAB).nodes) {
        const rows = await new ApiClient(n.socket).get<Array<EgressKey & EgressValue>>('/v1/map/egress');
        const sources = [...new Set(rows.map((r) => r.source))].sort();
        assert.deepEqual(sources, [a1.ip, a2.ip, a3.ip].sort(), n.name);
        assert.ok(rows.some((r) => r.source === a1.ip && r.destination === '10.0.2.0/24' && r.gatewayIP === '0.0.0.1'), n.name);
        assert.ok(rows.some((r) => r.source === a1.ip && r.destination === `${EXT_IP}/32` && r.gatewayIP === node('w2').ip && r.egressIP === egressIP), n.name);
        assert.ok(!rows.some((r) => r.source === b1.ip), n.name);
      }
    });

    test('the external host sees the egress IP for the selected pods (TCP and UDP, from every node)', () => {
      for (const p of [a1, a2, a3]) {
        assert.equal(remoteAddr(httpFrom(p.netns, EXT_IP)), egressIP, p.name);
        assert.match(udpFrom(p.netns, EXT_IP), new RegExp(`^router: hello \\(RemoteAddr: ${egressIP.replace(/\./g, '\\.')}:`), p.name);
      }
      assert.equal(remoteAddr(httpFrom(a1.netns, FAR_IP)), egressIP);
    });

    test('other pods keep being masqueraded to their own node IP', () => {
      assert.equal(remoteAddr(httpFrom(b1.netns, EXT_IP)), node('ctr').ip);
      assert.match(udpFrom(b1.netns, EXT_IP), new RegExp(`^router: hello \\(RemoteAddr: ${node('ctr').ip.replace(/\./g, '\\.')}:`));
    });

    test('excludedCIDRs are honoured: the selected pods reach them masqueraded to their own node IP', () => {
      assert.equal(remoteAddr(httpFrom(a1.netns, FAR_EXCLUDED_IP)), node('ctr').ip);
      assert.equal(remoteAddr(httpFrom(a2.netns, FAR_EXCLUDED_IP)), node('w1').ip);
    });

    test('a policy that is invalid is refused with a clear error, and the stored one keeps working', async () => {
      const bad = path.join(tmp, 'bad.yaml');
      fs.writeFileSync(bad, POLICY('egress-a', { destinations: [`${EXT_IP}/32`, '10.0.0.0/33'] }));
      await assert.rejects(labEgressApply(LAB, bad), /TendrilEgressGatewayPolicy "egress-a": spec\.destinationCIDRs\[1\]/);
      assert.equal(remoteAddr(httpFrom(a1.netns, EXT_IP)), egressIP);
    });

    test('a second policy with no egressIP gets another address of the pool', async () => {
      const file = path.join(tmp, 'egress-b.yaml');
      fs.writeFileSync(file, POLICY('egress-b', { app: 'nobody' }));
      const [p] = await labEgressApply(LAB, file);
      assert.equal(p!.status.egressIP, '192.168.10.242');
      const all = await labEgressList(LAB);
      assert.deepEqual(all.map((x) => x.status.egressIP).sort(), ['192.168.10.241', '192.168.10.242']);
      await labEgressDel(LAB, 'egress-b');
    });

    test('removing the policy restores normal masquerading and the gateway drops the egress IP', async () => {
      await labEgressDel(LAB, 'egress-a');
      await until('the gateway to drop the egress IP', () => !execCapture(node('w2').netns, ['ip', '-4', 'addr']).stdout.includes(`inet ${egressIP}/`), 30_000);
      assert.equal(remoteAddr(httpFrom(a1.netns, EXT_IP)), node('ctr').ip);
      assert.equal(remoteAddr(httpFrom(a2.netns, EXT_IP)), node('w1').ip);
      assert.equal(remoteAddr(httpFrom(a3.netns, EXT_IP)), node('w2').ip);
      for (const n of loadLab(LAB).nodes) assert.deepEqual(await new ApiClient(n.socket).get<unknown[]>('/v1/map/egress'), [], n.name);
    });

    test('failover: the gateway\'s agent killed, then its node deleted: the egress IP moves to the next node the selector picks and the external host sees it again', async (t) => {
      const file = path.join(tmp, 'egress-f.yaml');
      fs.writeFileSync(file, POLICY('egress-f', { gateways: ['w1', 'w2'] }));
      const [p] = await labEgressApply(LAB, file);
      assert.equal(p!.status.gatewayNode, 'w1', 'the first selected node by name');
      const ip = p!.status.egressIP!;
      await until('a1 to leave through w1 as the egress IP', () => seenFrom(a1.netns, EXT_IP) === ip, 60_000);
      const gateway = async (): Promise<string | undefined> => (await labEgressList(LAB)).find((x) => x.spec.name === 'egress-f')?.status.gatewayNode;
      const holds = (n: string): boolean => execCapture(node(n).netns, ['ip', '-4', 'addr', 'show', 'dev', 'eth0']).stdout.includes(`inet ${ip}/32 `);

      // The agent of the gateway dies (its node, datapath and address stay): its lease runs out.
      const t0 = Date.now();
      process.kill(node('w1').pid, 'SIGKILL');
      await until('the operator to move egress-f to w2', async () => (await gateway()) === 'w2', 90_000);
      const moved = Date.now() - t0;
      await until('the external host to see the egress IP from a1 again, through w2', () => holds('w2') && seenFrom(a1.netns, EXT_IP) === ip, 90_000);
      const killed = Date.now() - t0;
      // The agent back: the gateway stays on w2, and w1 gives the address up.
      await restartAgent(LAB, 'w1');
      await until('w1 to drop the egress IP', () => !holds('w1'), 60_000);
      assert.equal(await gateway(), 'w2', 'a node coming back takes nothing over');
      assert.equal(seenFrom(a1.netns, EXT_IP), ip);

      // The gateway node goes away (lab node del) while the agent of a1's node (ctr) is down: the gateway moves to w1
      // at once, but ctr's datapath keeps the map it had, which sends a1's traffic to w2, gone.
      process.kill(node('ctr').pid, 'SIGKILL');
      const t1 = Date.now();
      await labNodeDel(LAB, 'w2');
      await until('the egress IP to move to w1', async () => (await gateway()) === 'w1' && holds('w1'), 90_000);
      await until('a2 (on w1, now the gateway) to leave as the egress IP', () => seenFrom(a2.netns, EXT_IP) === ip, 90_000);
      const deleted = Date.now() - t1;
      assert.notEqual(seenFrom(a1.netns, EXT_IP), ip, 'a1\'s node, its agent down, still sends to the old gateway');
      // ctr's agent back: it reports ready only once its map points at the new gateway, and a1 leaves through w1 again.
      await restartAgent(LAB, 'ctr');
      const rows = await new ApiClient(node('ctr').socket).get<Array<EgressKey & EgressValue>>('/v1/map/egress');
      const a1Row = rows.find((r) => r.source === a1.ip && r.destination === `${EXT_IP}/32`);
      assert.equal(a1Row?.gatewayIP, node('w1').ip, 'ctr\'s map points at the new gateway as soon as its agent is ready');
      await until('the external host to see the egress IP from a1 again, through w1', () => seenFrom(a1.netns, EXT_IP) === ip, 90_000);
      assert.equal(seenFrom(b1.netns, EXT_IP), node('ctr').ip, 'unselected pods are not affected');
      t.diagnostic(`failover (${routing}): agent killed -> status moved ${moved} ms, external host sees the egress IP again ${killed} ms (node lease 5 s); node deleted -> ${deleted} ms`);
    });
  });
}

suite('tunnel');
suite('native');
