// Integration: --ipam multi-pool on the lab, tunnel and native. Two TendrilPodIPPools besides "default"; pods pick
// one by the annotation ipam.tendril.io/ip-pool, get an address of their node's chunk of it (asked for on demand)
// and reach pods of every pool on both nodes. Overlapping pools and an unknown pool are refused with coded, clear
// errors; a pool in use cannot be deleted, and once its last pod is gone (and the node handed its chunk back) it can.
// Root; every namespace and process is the test's own and removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { labDown, labUp, loadLab, podAdd, podDel } from '../src/lab/lab.js';
import { labPoolAdd, labPoolDel, labPoolList } from '../src/lab/pools.js';
import { labNamespaceSet } from '../src/lab/security.js';
import { CLI_JS } from '../src/lab/paths.js';
import { untilValue as until } from './lib/proc.js';
import { inCidr, nodeRow, ping, type NodeRow } from './lib/lab-pods.js';

const errText = (e: unknown): string => `${String((e as { code?: unknown }).code ?? '')} ${(e as Error).message}`;
const pool = (name: string): Record<string, string> => ({ 'ipam.tendril.io/ip-pool': name });

for (const routing of ['tunnel', 'native'] as const) {
  const LAB = `mp${process.pid % 100000}${routing[0]}`;
  const n = routing === 'tunnel' ? 1 : 2;
  const CLUSTER = `172.2${n + 3}.0.0/24`;
  const BLUE = `10.7${n}.0.0/24`;
  const RED = `10.8${n}.0.0/24`;

  describe(`multi-pool (${routing})`, { timeout: 420_000 }, () => {
    before(async () => {
      await labDown(LAB);
      await labUp({ name: LAB, nodes: 2, routing, podCidr: CLUSTER, ipam: { mode: 'multi-pool', maskSize: 26, handBackGrace: '1s' } });
    });
    after(async () => {
      await labDown(LAB);
    });

    test('pods of two pools and the default get addresses of their node\'s chunks and reach each other across nodes', async () => {
      // A namespace whose annotation picks the pool of its pods (declared first: the agents' watch has time to see it).
      await labNamespaceSet(LAB, 'team', {}, 'add', {}, pool('blue'));
      const blue = await labPoolAdd(LAB, 'blue', [BLUE], 27);
      assert.deepEqual([blue.cidrs, blue.maskSize], [[BLUE], 27]);
      await labPoolAdd(LAB, 'red', [RED], 28);
      await assert.rejects(labPoolAdd(LAB, 'green', [BLUE.replace('.0/24', '.128/25')], 27), (e) => /TENDRIL_ERR_POOL_CONFLICT/.test(errText(e)) && /of pool "blue"/.test(errText(e)));
      await assert.rejects(labPoolAdd(LAB, 'green', ['172.16.0.0/12'], 24), (e) => /TENDRIL_ERR_POOL_CONFLICT/.test(errText(e)) && /cluster CIDR/.test(errText(e)));

      const a = await podAdd(LAB, 'a', { node: 'ctr', annotations: pool('blue') });
      const b = await podAdd(LAB, 'b', { node: 'w1', annotations: pool('blue') });
      const c = await podAdd(LAB, 'c', { node: 'ctr', annotations: pool('red') });
      const d = await podAdd(LAB, 'd', { node: 'w1' });
      const e = await podAdd(LAB, 'e', { node: 'w1', annotations: pool('red') });
      const ctr = (await nodeRow(LAB, 'ctr'))!;
      const w1 = (await nodeRow(LAB, 'w1'))!;
      const chunk = (row: NodeRow, p: string): string[] => row.ipam?.pools[p]?.allocated ?? [];
      assert.equal(chunk(ctr, 'blue').length, 1);
      assert.ok(chunk(ctr, 'blue').every((x) => inCidr(x.split('/')[0]!, BLUE) && x.endsWith('/27')), `ctr blue ${chunk(ctr, 'blue').join()}`);
      assert.notDeepEqual(chunk(ctr, 'blue'), chunk(w1, 'blue'), 'each node its own chunk');
      assert.ok(chunk(ctr, 'blue').some((x) => inCidr(a.ip, x)), `a ${a.ip} in ctr's blue ${chunk(ctr, 'blue').join()}`);
      assert.ok(chunk(w1, 'blue').some((x) => inCidr(b.ip, x)), `b ${b.ip} in w1's blue ${chunk(w1, 'blue').join()}`);
      assert.ok(chunk(ctr, 'red').some((x) => inCidr(c.ip, x)), `c ${c.ip} in ctr's red ${chunk(ctr, 'red').join()}`);
      assert.ok(chunk(w1, 'red').some((x) => inCidr(e.ip, x)), `e ${e.ip} in w1's red ${chunk(w1, 'red').join()}`);
      assert.ok(inCidr(d.ip, CLUSTER) && inCidr(d.ip, w1.podCIDRs[0]!), `d ${d.ip} in w1's default ${w1.podCIDRs[0]}`);
      assert.equal(w1.podCIDRs[0], chunk(w1, 'default')[0]);
      for (const x of [...chunk(ctr, 'blue'), ...chunk(ctr, 'red')]) assert.ok(ctr.podCIDRs.includes(x), `ctr's podCIDRs list ${x}`);

      // Every pool's CIDRs are routed (native) and in the ipcache (tunnel) of the other node.
      for (const [from, to] of [[a, b], [b, a], [a, e], [c, b], [d, a], [d, c], [e, c], [a, c]] as const) {
        await until(`${from.name} (${from.ip}) reaches ${to.name} (${to.ip})`, () => ping(from, to.ip));
      }

      const t = await podAdd(LAB, 't', { node: 'w1', namespace: 'team' });
      assert.ok(chunk((await nodeRow(LAB, 'w1'))!, 'blue').some((x) => inCidr(t.ip, x)), `team/t ${t.ip} (namespace annotation) in w1's blue`);
      await until(`team/t reaches a`, () => ping(t, a.ip));

      const list = spawnSync(process.execPath, [CLI_JS, '--lab', LAB, 'ipam', 'list'], { encoding: 'utf8' });
      assert.equal(list.status, 0, list.stderr);
      for (const x of [...chunk(ctr, 'blue'), ...chunk(w1, 'red')]) assert.match(list.stdout, new RegExp(`(blue|red)\\s+${x.replace(/\./g, '\\.')}`));
      process.stdout.write(`# tendril ipam list (${routing}):\n${list.stdout.replace(/^/gm, '# ')}\n`);
    });

    test('an unknown pool is a clear CNI error naming pool and pod; a pool in use is not deleted, an emptied one is', async () => {
      await assert.rejects(podAdd(LAB, 'lost', { node: 'w1', annotations: pool('nope') }), (e) => /unknown IP pool "nope" for pod default\/lost/.test(errText(e)));
      await assert.rejects(labPoolDel(LAB, 'blue'), (e) => /TENDRIL_ERR_POOL_IN_USE/.test(errText(e)) && /ctr \(/.test(errText(e)));
      await podDel(LAB, 'c');
      await podDel(LAB, 'e');
      // Both nodes hand their red chunk back after the grace (1 s); then the pool can go.
      await until('red deleted once no node holds a chunk of it', async () => {
        try {
          return (await labPoolDel(LAB, 'red')).deleted === 'red';
        } catch (err) {
          if (!/TENDRIL_ERR_POOL_IN_USE/.test(errText(err))) throw err;
          return false;
        }
      });
      // The list is the operator's view as of its last pass (the delete kicks one).
      await until('red gone from the pool list', async () => !(await labPoolList(LAB)).some((p) => p.name === 'red'));
      // The pool state is written before the Node in the operator's pass: the Node follows.
      await until('ctr no longer lists a red CIDR', async () => !(await nodeRow(LAB, 'ctr'))!.podCIDRs.some((x) => inCidr(x.split('/')[0]!, RED)));
      // The other pools are untouched.
      const a = loadLab(LAB).pods.find((p) => p.name === 'a')!;
      const b = loadLab(LAB).pods.find((p) => p.name === 'b')!;
      await until('a still reaches b', () => ping(a, b.ip));
    });
  });
}
