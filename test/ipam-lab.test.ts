// Integration: IPAM modes on the lab, end to end. cluster-pool: a node fills its CIDR, asks for another, waits while
// the operator is down (a coded, clear ADD error; existing pods keep working), grows once it is back, other nodes
// route to the new CIDR, and the empty extra goes back after its grace. kubernetes: nodes use the CIDRs the lab
// gives (as kube-controller-manager would), follow a change, and an agent given none refuses to start.
// Node CIDRs are /28 (12 pods next to router and health) so that growth is reached with a dozen pods rather
// than 300. Root; every namespace and process is the test's own and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labNodeAdd, labUp, loadLab, podAdd, podDel, type LabPod } from '../src/lab/lab.js';
import { labNodePodCidrs, labOperatorStart, labOperatorStop } from '../src/lab/ipam.js';
import { CLI_JS, labPaths } from '../src/lab/paths.js';
import { alive } from '../src/lab/procs.js';
import { untilValue as until } from './lib/proc.js';
import { agent, inCidr, nodeRow, ping, type NodeRow } from './lib/lab-pods.js';

async function nodeCidrs(lab: string, node: string, from = node): Promise<string[]> {
  return (await nodeRow(lab, node, from))?.podCIDRs ?? [];
}

for (const routing of ['tunnel', 'native'] as const) {
  const LAB = `ip${process.pid % 100000}${routing[0]}`;

  describe(`cluster-pool growth (${routing})`, { timeout: 420_000 }, () => {
    before(async () => {
      await labDown(LAB);
      await labUp({
        name: LAB,
        nodes: 2,
        routing,
        store: 'etcd',
        podCidr: '172.21.0.0/24',
        ipam: { maskSize: 28, preAllocate: 4, handBackGrace: '2s' },
      });
    });
    after(async () => {
      await labDown(LAB);
    });

    test('a full node waits for the operator with a clear error, grows once it is back, and hands the extra back', async () => {
      const st = loadLab(LAB);
      const [ctr, w1] = st.nodes;
      assert.equal(ctr!.podCidr, '172.21.0.0/28');
      assert.equal(w1!.podCidr, '172.21.0.16/28');
      const far = await podAdd(LAB, 'far', { node: 'w1' });

      await labOperatorStop(LAB);
      // 12 pods fill ctr's /28 (router and health hold two); the one below the watermark asks for more, unanswered.
      const pods: LabPod[] = [];
      for (let i = 0; i < 12; i++) pods.push(await podAdd(LAB, `p${i}`, { node: 'ctr' }));
      for (const p of pods) assert.ok(inCidr(p.ip, '172.21.0.0/28'), `${p.name} ${p.ip}`);
      const ask = await until('ctr asks for a second CIDR', async () => {
        const nodes = await agent(LAB, 'ctr').get<NodeRow[]>('/v1/cluster/nodes');
        const r = nodes.find((n) => n.name === 'ctr')?.ipam?.pools['default'];
        return r && r.requested === 2 ? r : undefined;
      });
      assert.deepEqual(ask.allocated, ['172.21.0.0/28']);

      const t0 = Date.now();
      await assert.rejects(podAdd(LAB, 'late', { node: 'ctr' }), (err: unknown) => {
        assert.match((err as Error).message, /code 100: no IP available: pool exhausted, waiting for the operator \(pod CIDRs 172\.21\.0\.0\/28 14\/14; asked the operator for 2 CIDR/);
        return true;
      });
      assert.ok(Date.now() - t0 < 20_000, 'the ADD fails at once rather than waiting');
      // Pods with addresses keep working, across nodes too.
      assert.ok(ping(pods[0]!, far.ip), 'p0 -> far while the operator is down');
      assert.ok(ping(far, pods[11]!.ip), 'far -> p11 while the operator is down');
      const status = await agent(LAB, 'ctr').get<{ ipam: { pools: { default: { waiting: string | null } } } }>('/v1/healthz');
      assert.match(status.ipam.pools.default.waiting ?? '', /asked for 2 CIDR\(s\), holding 1/);

      // The operator comes back: the next ADD (a runtime's retry) lands in the new CIDR.
      const tUp = Date.now();
      await labOperatorStart(LAB);
      const late = await until('an ADD succeeds after the operator is back', async () => {
        try {
          return await podAdd(LAB, 'late', { node: 'ctr' });
        } catch (err) {
          if (!/code 100/.test((err as Error).message)) throw err;
          return undefined;
        }
      });
      const recoveryMs = Date.now() - tUp;
      const cidrs = await nodeCidrs(LAB, 'ctr');
      assert.equal(cidrs.length, 2, JSON.stringify(cidrs));
      assert.equal(cidrs[0], '172.21.0.0/28');
      assert.ok(inCidr(late.ip, cidrs[1]!), `late ${late.ip} in ${cidrs[1]}`);
      console.log(`${routing}: operator started -> first pod on the new CIDR in ${recoveryMs} ms (operator start-up included)`);
      // Every node routes to it (ipcache/tunnel entries or routes follow every CIDR), old pods are undisturbed.
      await until('w1 knows both CIDRs of ctr', async () => (await nodeCidrs(LAB, 'ctr', 'w1')).length === 2);
      await until('far -> late (new CIDR)', () => ping(far, late.ip));
      assert.ok(ping(late, far.ip), 'late -> far');
      assert.ok(ping(late, pods[0]!.ip), 'late -> p0 on the same node');
      assert.ok(ping(pods[5]!, far.ip), 'p5 -> far after the growth');
      // The CLI shows both CIDRs of ctr with their use.
      const cli = spawnSync(process.execPath, [CLI_JS, '--lab', LAB, 'ipam', 'list', '-o', 'json'], { encoding: 'utf8' });
      assert.equal(cli.status, 0, cli.stderr);
      const rows = (JSON.parse(cli.stdout) as Array<{ cidr: string; node: string; used: number | null }>).filter((r) => r.node === 'ctr');
      assert.deepEqual(rows.map((r) => [r.cidr, r.used]), [['172.21.0.0/28', 14], [cidrs[1], 1]]);

      // Hand-back: with late gone and room again in the primary, the empty extra goes after its 2 s grace.
      await podDel(LAB, 'late');
      for (const p of pods.slice(0, 6)) await podDel(LAB, p.name);
      await until('ctr handed its extra CIDR back', async () => (await nodeCidrs(LAB, 'ctr')).length === 1);
      await until('w1 forgot the extra CIDR', async () => (await nodeCidrs(LAB, 'ctr', 'w1')).length === 1);
      assert.ok(ping(pods[8]!, far.ip), 'p8 -> far after the hand-back');
      const again = await podAdd(LAB, 'again', { node: 'ctr' });
      assert.ok(inCidr(again.ip, '172.21.0.0/28'));
    });
  });
}

describe('kubernetes (host-scope) IPAM', { timeout: 300_000 }, () => {
  const LAB = `ik${process.pid % 100000}`;
  before(async () => {
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 2, podCidr: '172.22.0.0/24', ipam: { mode: 'kubernetes', maskSize: 26, waitTimeout: '3s' } });
  });
  after(async () => {
    await labDown(LAB);
  });

  test('nodes use the given CIDRs, reach each other, and follow a change', async () => {
    const st = loadLab(LAB);
    assert.deepEqual(st.nodes.map((n) => n.podCidr), ['172.22.0.0/26', '172.22.0.64/26']);
    const a = await podAdd(LAB, 'a', { node: 'ctr' });
    const b = await podAdd(LAB, 'b', { node: 'w1' });
    assert.ok(inCidr(a.ip, '172.22.0.0/26') && inCidr(b.ip, '172.22.0.64/26'), `${a.ip} ${b.ip}`);
    // b was just added on w1: ctr learns its endpoint through the store, so the first ping is polled.
    await until('a <-> b across nodes', () => ping(a, b.ip) && ping(b, a.ip));
    // The operator allocates nothing in this mode and says so.
    const op = await new ApiClient(labPaths(LAB).operatorSocket, 'operator').get<{ ipam: string }>('/v1/status');
    assert.equal(op.ipam, 'kubernetes');

    // kube-controller-manager's part changes: ctr is given another CIDR instead; new pods come from it.
    await labNodePodCidrs(LAB, 'ctr', ['172.22.0.128/26']);
    await until('w1 sees the change', async () => (await nodeCidrs(LAB, 'ctr', 'w1')).includes('172.22.0.128/26'));
    const c = await until('a pod from the new CIDR', async () => {
      const p = await podAdd(LAB, `c${Date.now() % 100000}`, { node: 'ctr' });
      if (inCidr(p.ip, '172.22.0.128/26')) return p;
      await podDel(LAB, p.name);
      return undefined;
    });
    await until('b -> c (new CIDR)', () => ping(b, c.ip));
    assert.ok(ping(c, b.ip));
    assert.ok(ping(a, b.ip), 'the pod of the old CIDR keeps working');
  });

  test('an agent given no pod CIDR refuses to start with a clear error', async () => {
    const n = await labNodeAdd(LAB, { name: 'lone', wait: false });
    await until('the agent exits', () => !alive(n.pid), 60_000);
    const log = fs.readFileSync(labPaths(LAB).node('lone').logFile, 'utf8');
    assert.match(log, /Node lone got no pod CIDR within 3s: with --ipam kubernetes the Node resource's podCIDRs are set by the cluster/);
  });
});
