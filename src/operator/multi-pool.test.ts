// Multi-pool IPAM in the operator, over a real local store (unix socket in a temporary directory): per-pool
// allocation, no CIDR handed out twice (also across operator restarts), exhaustion, conflicting pools, delete-in-use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { POD_IP_POOL_KIND, withLocalStore, type NodeSpec, type PodIPPoolResource, type Store } from '../store/index.js';
import { OperatorError } from './errors.js';
import { Operator } from './operator.js';
import { deletePool, putPool, validatePodIPPool } from './multi-pool.js';

const silent = pino({ level: 'silent' });
const CLUSTER = ['10.0.0.0/16'];

const withStore = (fn: (store: Store) => Promise<void>): Promise<void> => withLocalStore('multipool', fn);

function operator(store: Store): Operator {
  return new Operator({ store, ipam: 'multi-pool', pool: { cidrs: CLUSTER, maskSize: 24 }, graceMs: 0, log: silent });
}

/** A node as its agent writes it: asking `asks` CIDRs of each pool. */
async function node(store: Store, name: string, asks: Record<string, number>): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const cur = await store.get<NodeSpec>('Node', name);
    const v: NodeSpec = cur?.value ?? { name, addresses: ['192.0.2.1'], podCIDRs: [] };
    const pools = { ...(v.ipam?.pools ?? {}) };
    for (const [p, n] of Object.entries(asks)) pools[p] = { requested: n, allocated: pools[p]?.allocated ?? [] };
    try {
      await store.put('Node', name, { ...v, ipam: { pools } }, { expectedRevision: cur?.revision ?? 0 });
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_CONFLICT') throw err;
    }
  }
  throw new Error('node write kept conflicting');
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function grant(store: Store, name: string, pool: string, count: number): Promise<NodeSpec> {
  return until(`${name} to hold ${count} CIDR(s) of ${pool}`, async () => {
    const v = (await store.get<NodeSpec>('Node', name))?.value;
    return v && (v.ipam?.pools[pool]?.allocated.length ?? 0) >= count ? v : undefined;
  });
}

test('pool validation: overlaps with the cluster CIDRs and other pools are refused with the clash named', () => {
  const others = [{ name: 'default', cidrs: CLUSTER }, { name: 'blue', cidrs: ['10.10.0.0/16'] }];
  assert.deepEqual(validatePodIPPool('red', { cidrs: ['10.20.0.0/16'], maskSize: 26 }, others), { cidrs: ['10.20.0.0/16'], maskSize: 26 });
  assert.throws(() => validatePodIPPool('red', { cidrs: ['10.0.128.0/17'], maskSize: 24 }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_CONFLICT' && /cluster CIDR 10\.0\.0\.0\/16/.test(e.message));
  assert.throws(() => validatePodIPPool('red', { cidrs: ['10.0.0.0/8'], maskSize: 24 }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_CONFLICT');
  assert.throws(() => validatePodIPPool('red', { cidrs: ['10.10.4.0/24'], maskSize: 26 }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_CONFLICT' && /pool "blue"/.test(e.message));
  assert.throws(() => validatePodIPPool('red', { cidrs: ['10.20.0.1/16'], maskSize: 24 }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_INVALID_POOL' && /host bits/.test(e.message));
  assert.throws(() => validatePodIPPool('red', { cidrs: ['10.20.0.0/24'], maskSize: 20 }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_INVALID_POOL');
  assert.throws(() => validatePodIPPool('red', { cidrs: [] }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_INVALID_POOL');
  assert.throws(() => validatePodIPPool('default', { cidrs: ['10.30.0.0/16'] }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_INVALID_POOL');
  assert.throws(() => validatePodIPPool('Bad_Name', { cidrs: ['10.30.0.0/16'] }, others), (e: OperatorError) => e.code === 'TENDRIL_ERR_INVALID_POOL');
});

test('nodes get chunks of each pool they ask for, never one CIDR twice, also across an operator restart', async () => {
  await withStore(async (store) => {
    await putPool(store, 'blue', { cidrs: ['10.10.0.0/24'], maskSize: 26 }, CLUSTER);
    await assert.rejects(putPool(store, 'green', { cidrs: ['10.10.0.128/25'], maskSize: 26 }, CLUSTER), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_CONFLICT');
    let op = operator(store);
    await op.start();
    try {
      await node(store, 'n1', { default: 1, blue: 1 });
      await node(store, 'n2', { default: 1 });
      const n1 = await grant(store, 'n1', 'blue', 1);
      const n2 = await grant(store, 'n2', 'default', 1);
      assert.deepEqual(n1.ipam!.pools['blue']!.allocated, ['10.10.0.0/26']);
      assert.equal(n1.podCIDRs[0], n1.ipam!.pools['default']!.allocated[0], 'the default pool stays the primary');
      assert.ok(n1.podCIDRs.includes('10.10.0.0/26'), 'podCIDRs list every pool (routes and ipcache follow them)');
      assert.equal(n2.ipam!.pools['blue'], undefined, 'a node that asks nothing of a pool gets nothing of it');
      await op.stop();
      // A new operator over the same store continues from the stored allocator: the next chunk is new.
      op = operator(store);
      await op.start();
      await node(store, 'n2', { blue: 1 });
      await node(store, 'n1', { blue: 2 });
      const n2b = await grant(store, 'n2', 'blue', 1);
      const n1b = await grant(store, 'n1', 'blue', 2);
      const all = [...n1b.ipam!.pools['blue']!.allocated, ...n2b.ipam!.pools['blue']!.allocated];
      assert.equal(new Set(all).size, 3, `no blue CIDR twice: ${all.join(' ')}`);
      assert.ok(all.every((c) => c.startsWith('10.10.0.') && c.endsWith('/26')));
      const blue = op.status().pools!.find((p) => p.name === 'blue')!;
      assert.equal(blue.assigned, 3);
      assert.equal(blue.free, 1);
    } finally {
      await op.stop();
    }
  });
});

test('exhaustion of one pool is reported for it and leaves the others serving; delete while in use is refused', async () => {
  await withStore(async (store) => {
    await putPool(store, 'tiny', { cidrs: ['10.40.0.0/26'], maskSize: 26 }, CLUSTER);
    await putPool(store, 'spare', { cidrs: ['10.50.0.0/24'], maskSize: 26 }, CLUSTER);
    const op = operator(store);
    await op.start();
    try {
      await node(store, 'n1', { default: 1, tiny: 1 });
      await grant(store, 'n1', 'tiny', 1);
      await node(store, 'n2', { default: 1, tiny: 1, spare: 1 });
      await grant(store, 'n2', 'spare', 1);
      const tiny = await until('tiny to be exhausted', async () => op.status().pools?.find((p) => p.name === 'tiny' && p.exhausted !== null));
      assert.deepEqual(tiny.exhausted!.waiting, ['n2']);
      assert.match(tiny.exhausted!.message, /pool "tiny" 10\.40\.0\.0\/26 with mask \/26 is exhausted/);
      assert.equal((await store.get<NodeSpec>('Node', 'n2'))!.value.ipam!.pools['tiny']!.allocated.length, 0);

      await assert.rejects(deletePool(store, 'tiny', (await store.list<unknown>('Node')).items), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_IN_USE' && /n1 \(10\.40\.0\.0\/26\)/.test(e.message));
      await assert.rejects(deletePool(store, 'nope', []), (e: OperatorError) => e.code === 'TENDRIL_ERR_POOL_NOT_FOUND');
      // n1 gives all of tiny back: n2, waiting, gets it.
      // (the operator may write n1 meanwhile: a revision conflict is read again, as an agent would)
      await until('n1 to hand tiny back', async () => {
        const cur = (await store.get<NodeSpec>('Node', 'n1'))!;
        try {
          await store.put('Node', 'n1', { ...cur.value, ipam: { pools: { ...cur.value.ipam!.pools, tiny: { requested: 0, release: ['10.40.0.0/26'], allocated: ['10.40.0.0/26'] } } } }, { expectedRevision: cur.revision });
          return true;
        } catch (e) {
          if ((e as { code?: string }).code === 'TENDRIL_ERR_STORE_CONFLICT') return undefined;
          throw e;
        }
      });
      const n2 = await grant(store, 'n2', 'tiny', 1);
      assert.deepEqual(n2.ipam!.pools['tiny']!.allocated, ['10.40.0.0/26']);
      const n1 = (await store.get<NodeSpec>('Node', 'n1'))!.value;
      assert.deepEqual(n1.ipam!.pools['tiny']!.allocated, []);
      assert.ok(!n1.podCIDRs.includes('10.40.0.0/26'));
      // An unused pool can go.
      await node(store, 'n1', {});
      await putPool(store, 'unused', { cidrs: ['10.60.0.0/24'] }, CLUSTER);
      assert.deepEqual(await deletePool(store, 'unused', (await store.list<unknown>('Node')).items), { deleted: 'unused' });
    } finally {
      await op.stop();
    }
  });
});

test('pools of earlier versions (IPAMState "pod-ip-pool.NAME") become kind PodIPPool at operator start, allocations kept', async () => {
  await withStore(async (store) => {
    // As an earlier operator left them: the pool spec and its allocator state, with n1 holding a chunk.
    await store.put('IPAMState', 'pod-ip-pool.blue', { cidrs: ['10.10.0.0/24'], maskSize: 26 });
    await store.put('IPAMState', 'pool.blue', { cidrs: ['10.10.0.0/24'], maskSize: 26, assigned: { n1: ['10.10.0.0/26'] }, releasing: {} });
    // An interrupted migration: both copies; the new kind wins.
    await store.put('IPAMState', 'pod-ip-pool.red', { cidrs: ['10.20.0.0/24'], maskSize: 26 });
    await store.put(POD_IP_POOL_KIND, 'red', { spec: { ipv4: { cidrs: ['10.20.0.0/24', '10.21.0.0/24'], maskSize: 26 } } });
    const op = operator(store);
    await op.start();
    try {
      const ipam = (await store.list<unknown>('IPAMState')).items.map((r) => r.name);
      assert.deepEqual(ipam.filter((n) => n.startsWith('pod-ip-pool.')), [], 'the old pool objects are gone');
      assert.ok(ipam.includes('pool.blue'), 'the allocator state stays');
      const blue = (await store.get<PodIPPoolResource>(POD_IP_POOL_KIND, 'blue'))!.value;
      assert.deepEqual(blue.spec, { ipv4: { cidrs: ['10.10.0.0/24'], maskSize: 26 } });
      assert.deepEqual((await store.get<PodIPPoolResource>(POD_IP_POOL_KIND, 'red'))!.value.spec.ipv4.cidrs, ['10.20.0.0/24', '10.21.0.0/24']);
      await node(store, 'n1', { default: 1, blue: 2 });
      const n1 = await grant(store, 'n1', 'blue', 2);
      assert.deepEqual(n1.ipam!.pools['blue']!.allocated, ['10.10.0.0/26', '10.10.0.64/26'], 'the migrated pool continues from its allocator state');
    } finally {
      await op.stop();
    }
  });
});

test('a PodIPPool written to the store directly (kubectl apply) is watched; the operator writes its status', async () => {
  await withStore(async (store) => {
    const op = operator(store);
    await op.start();
    try {
      await node(store, 'n1', { default: 1, green: 1 });
      await store.put(POD_IP_POOL_KIND, 'green', { spec: { ipv4: { cidrs: ['10.70.0.0/24'], maskSize: 25 } } });
      const n1 = await grant(store, 'n1', 'green', 1);
      assert.deepEqual(n1.ipam!.pools['green'], { requested: 1, allocated: ['10.70.0.0/25'] }, 'the Node shows requested and allocated per pool');
      const st = await until('green\'s status', async () => {
        const s = (await store.get<PodIPPoolResource>(POD_IP_POOL_KIND, 'green'))?.value.status;
        return s?.chunks?.assigned === 1 ? s : undefined;
      });
      assert.deepEqual(st, { chunks: { total: 2, assigned: 1, free: 1 }, nodes: { n1: ['10.70.0.0/25'] } });
      // One overlapping the cluster CIDR (no API to refuse it): unused, and its status says why.
      await store.put(POD_IP_POOL_KIND, 'bad', { spec: { ipv4: { cidrs: ['10.0.5.0/24'], maskSize: 26 } } });
      const bad = await until('bad\'s problem', async () => (await store.get<PodIPPoolResource>(POD_IP_POOL_KIND, 'bad'))?.value.status?.problem);
      assert.match(bad, /overlaps the cluster CIDR 10\.0\.0\.0\/16/);
    } finally {
      await op.stop();
    }
  });
});

test('a pool deleted from the store while in use (kubectl delete) leaves the nodes their chunks until handed back', async () => {
  await withStore(async (store) => {
    const op = operator(store);
    await op.start();
    try {
      await store.put(POD_IP_POOL_KIND, 'gone', { spec: { ipv4: { cidrs: ['10.80.0.0/24'], maskSize: 26 } } });
      await node(store, 'n1', { default: 1, gone: 1 });
      await grant(store, 'n1', 'gone', 1);
      await store.delete(POD_IP_POOL_KIND, 'gone');
      const view = await until('the deleted pool to be reported', async () => op.status().pools?.find((p) => p.name === 'gone' && p.problem !== null));
      assert.match(view.problem!, /deleted while in use/);
      const n1 = (await store.get<NodeSpec>('Node', 'n1'))!.value;
      assert.deepEqual(n1.ipam!.pools['gone']!.allocated, ['10.80.0.0/26'], 'running pods keep their chunk');
      assert.ok(n1.podCIDRs.includes('10.80.0.0/26'));
      // Handed back: the chunk and the allocator state go.
      const cur = (await store.get<NodeSpec>('Node', 'n1'))!;
      await store.put('Node', 'n1', { ...cur.value, ipam: { pools: { ...cur.value.ipam!.pools, gone: { requested: 0, release: ['10.80.0.0/26'], allocated: ['10.80.0.0/26'] } } } }, { expectedRevision: cur.revision });
      await until('the allocator state of the deleted pool to go', async () => ((await store.get('IPAMState', 'pool.gone')) === undefined ? true : undefined));
      const after = await until('n1 to lose the chunk', async () => {
        const v = (await store.get<NodeSpec>('Node', 'n1'))!.value;
        return v.podCIDRs.includes('10.80.0.0/26') ? undefined : v;
      });
      assert.equal(after.ipam!.pools['gone']?.allocated.length ?? 0, 0);
    } finally {
      await op.stop();
    }
  });
});
