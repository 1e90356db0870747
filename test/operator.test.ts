// Integration test: the operator against a real LocalStoreServer (temp dir, unix socket), agents as separate clients.
//
// Needs no privileges and touches no network interface: everything is unix sockets under a temp dir of our own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LocalStoreClient, LocalStoreServer, openStore, type NodeSpec, type Store } from '../src/store/index.js';
import { CLUSTER_POOL_STATE, Operator, OperatorError, runOperator, type OperatorStatusResponse } from '../src/operator/index.js';

const silent = pino({ level: 'silent' });
let root = '';
let seq = 0;
let addr = 0;

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-op-`));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** A fresh directory per cluster, so each test has its own store data and sockets. */
function clusterDir(): string {
  const d = path.join(root, `c${++seq}`);
  fs.mkdirSync(d);
  return d;
}

interface Cluster {
  server: LocalStoreServer;
  /** The operator's own client. */
  opStore: Store;
  /** Another client, standing for the agents. */
  agents: Store;
  close(): Promise<void>;
}

async function startCluster(dir: string): Promise<Cluster> {
  const socket = path.join(dir, 'store.sock');
  const server = new LocalStoreServer({ dataDir: path.join(dir, 'data') });
  await server.listen({ socket });
  const opStore = new LocalStoreClient({ socket });
  const agents = new LocalStoreClient({ socket });
  return {
    server,
    opStore,
    agents,
    close: async () => {
      await agents.close();
      await opStore.close();
      await server.close();
    },
  };
}

function operator(store: Store, pool: { cidr: string; maskSize: number }, graceMs = 300): Operator {
  return new Operator({ store, pool, graceMs, log: silent });
}

async function join(store: Store, name: string): Promise<void> {
  await store.put<NodeSpec>('Node', name, { name, addresses: [`192.168.50.${(++addr % 250) + 1}`], podCIDRs: [] });
}

async function podCIDRs(store: Store, name: string): Promise<string[] | undefined> {
  return (await store.get<NodeSpec>('Node', name))?.value.podCIDRs;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function cidrOf(store: Store, name: string): Promise<string> {
  return waitFor(`a pod CIDR on node ${name}`, async () => (await podCIDRs(store, name))?.[0]);
}

function getStatus(socket: string): Promise<{ status: number; body: OperatorStatusResponse }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: '/v1/status' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as OperatorStatusResponse }));
    });
    req.on('error', reject);
  });
}

test('nodes that join without a CIDR each get a distinct /24 of the pool', async () => {
  const c = await startCluster(clusterDir());
  const op = operator(c.opStore, { cidr: '10.0.0.0/8', maskSize: 24 });
  try {
    await join(c.agents, 'ctr');
    await op.start();
    for (const n of ['w1', 'w2', 'w3']) await join(c.agents, n);
    const cidrs = await Promise.all(['ctr', 'w1', 'w2', 'w3'].map((n) => cidrOf(c.agents, n)));
    assert.deepEqual(cidrs, ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24', '10.0.3.0/24']);
    // The agent's own fields survive the operator's write.
    assert.equal((await c.agents.get<NodeSpec>('Node', 'w1'))?.value.addresses.length, 1);
    const state = await c.agents.get<{ assigned: Record<string, string[]> }>('IPAMState', CLUSTER_POOL_STATE);
    assert.deepEqual(state?.value.assigned, { ctr: ['10.0.0.0/24'], w1: ['10.0.1.0/24'], w2: ['10.0.2.0/24'], w3: ['10.0.3.0/24'] });
  } finally {
    await op.stop();
    await c.close();
  }
});

test('a deleted node\'s CIDR is reserved for the grace period, then reused', async () => {
  const c = await startCluster(clusterDir());
  const pool = { cidr: '10.1.0.0/16', maskSize: 24 };
  // A grace no loaded machine outlasts, so that "not handed out within the grace" holds by construction.
  let op = operator(c.opStore, pool, 3_600_000);
  try {
    await op.start();
    for (const n of ['a', 'b']) await join(c.agents, n);
    assert.equal(await cidrOf(c.agents, 'a'), '10.1.0.0/24');
    assert.equal(await cidrOf(c.agents, 'b'), '10.1.1.0/24');
    await c.agents.delete('Node', 'a');
    await waitFor('a held', () => op.status().releasing['10.1.0.0/24']);
    await join(c.agents, 'c');
    assert.equal(await cidrOf(c.agents, 'c'), '10.1.2.0/24', 'the held CIDR is not handed out within the grace');
    await op.stop();
    // A short grace: b's CIDR is freed by the timer, no earlier than the grace, and reused (a's is still held).
    op = operator(c.opStore, pool, 300);
    await op.start();
    const deletedAt = Date.now();
    await c.agents.delete('Node', 'b');
    await waitFor('b freed', () => op.status().assignments['b'] === undefined && op.status().releasing['10.1.1.0/24'] === undefined);
    assert.ok(Date.now() - deletedAt >= 300, 'freed no earlier than the grace');
    await join(c.agents, 'd');
    assert.equal(await cidrOf(c.agents, 'd'), '10.1.1.0/24', 'the freed CIDR is reused');
  } finally {
    await op.stop();
    await c.close();
  }
});

test('exhaustion of a tiny pool is reported in status; a later release lets the waiting node get a CIDR', async () => {
  const c = await startCluster(clusterDir());
  const op = operator(c.opStore, { cidr: '10.2.0.0/29', maskSize: 30 }, 300);
  try {
    await op.start();
    await join(c.agents, 'ctr');
    await cidrOf(c.agents, 'ctr');
    await join(c.agents, 'w1');
    await cidrOf(c.agents, 'w1');
    await join(c.agents, 'w2');
    const ex = await waitFor('exhaustion in status', () => op.status().exhausted);
    assert.deepEqual(ex.waiting, ['w2']);
    assert.equal(ex.message, 'cluster pool 10.2.0.0/29 with mask /30 is exhausted: 2/2 CIDRs assigned (ctr, w1)');
    assert.deepEqual(await podCIDRs(c.agents, 'w2'), [], 'the waiting node stays without CIDR');
    assert.deepEqual(op.status().pool, { cidrs: ['10.2.0.0/29'], maskSize: 30, total: 2, assigned: 2, releasing: 0, free: 0 });
    await c.agents.delete('Node', 'w1');
    assert.equal(await cidrOf(c.agents, 'w2'), '10.2.0.4/30');
    await waitFor('exhaustion cleared', () => op.status().exhausted === null);
  } finally {
    await op.stop();
    await c.close();
  }
});

test('operator restart (and store restart) keeps every assignment without re-carving', async () => {
  const dir = clusterDir();
  const pool = { cidr: '10.3.0.0/16', maskSize: 24 };
  let c = await startCluster(dir);
  // A grace that outlasts the restart below however slow the machine is: the hold must still be there after it.
  let op = operator(c.opStore, pool, 60_000);
  const names = ['n1', 'n2', 'n3', 'n4'];
  let before: string[];
  let stateRev: number | undefined;
  try {
    await op.start();
    for (const n of names) await join(c.agents, n);
    before = await Promise.all(names.map((n) => cidrOf(c.agents, n)));
    await c.agents.delete('Node', 'n2');
    await waitFor('n2 held', () => Object.keys(op.status().releasing).length === 1);
    await op.settled();
    stateRev = (await c.agents.get('IPAMState', CLUSTER_POOL_STATE))?.revision;
  } finally {
    await op.stop();
    await c.close();
  }
  // Everything restarts from the data dir.
  c = await startCluster(dir);
  op = operator(c.opStore, pool, 60_000);
  try {
    await op.start();
    const st = op.status();
    assert.deepEqual(st.assignments, { n1: [before[0]], n3: [before[2]], n4: [before[3]] });
    assert.deepEqual(Object.keys(st.releasing), [before[1]], 'the departed node\'s CIDR is still held');
    assert.equal((await c.agents.get('IPAMState', CLUSTER_POOL_STATE))?.revision, stateRev, 'pool state was not rewritten');
    for (const [i, n] of names.entries()) if (n !== 'n2') assert.deepEqual(await podCIDRs(c.agents, n), [before[i]]);
    await join(c.agents, 'n5');
    assert.equal(await cidrOf(c.agents, 'n5'), '10.3.4.0/24');
  } finally {
    await op.stop();
    await c.close();
  }
});

test('a pool flag that differs from the stored pool refuses to start and changes nothing', async () => {
  const dir = clusterDir();
  const c = await startCluster(dir);
  try {
    const first = operator(c.opStore, { cidr: '10.4.0.0/16', maskSize: 24 });
    await first.start();
    await join(c.agents, 'ctr');
    await cidrOf(c.agents, 'ctr');
    await first.stop();
    const revBefore = (await c.agents.ping()).revision;
    for (const pool of [{ cidr: '10.5.0.0/16', maskSize: 24 }, { cidr: '10.4.0.0/16', maskSize: 25 }]) {
      const op = operator(c.opStore, pool);
      await assert.rejects(op.start(), (err: unknown) => {
        assert.ok(err instanceof OperatorError);
        assert.equal(err.code, 'TENDRIL_ERR_POOL_MISMATCH');
        assert.match(err.message, /the store already holds pool 10\.4\.0\.0\/16 with mask \/24 for 1 node\(s\) and .*; re-carving would re-number running nodes/);
        return true;
      });
    }
    assert.equal((await c.agents.ping()).revision, revBefore, 'no write happened');
    assert.deepEqual(await podCIDRs(c.agents, 'ctr'), ['10.4.0.0/24']);
  } finally {
    await c.close();
  }
});

test('two operators on one store never hand out a CIDR twice', async () => {
  const dir = clusterDir();
  const c = await startCluster(dir);
  const pool = { cidr: '10.6.0.0/16', maskSize: 24 };
  const a = operator(c.opStore, pool);
  const other = new LocalStoreClient({ socket: path.join(dir, 'store.sock') });
  const b = operator(other, pool);
  try {
    await Promise.all([a.start(), b.start()]);
    const names = [...Array(12).keys()].map((i) => `m${i}`);
    await Promise.all(names.map((n) => join(c.agents, n)));
    const cidrs = await Promise.all(names.map((n) => cidrOf(c.agents, n)));
    assert.equal(new Set(cidrs).size, names.length, `duplicates: ${cidrs.join(' ')}`);
    await Promise.all([a.settled(), b.settled()]);
    const state = await c.agents.get<{ assigned: Record<string, string[]> }>('IPAMState', CLUSTER_POOL_STATE);
    assert.deepEqual(names.map((n) => state?.value.assigned[n]?.[0]), cidrs);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await other.close();
    await c.close();
  }
});

test('runOperator() hosts the store, serves GET /v1/status, and restarts from --store-data', async () => {
  const dir = clusterDir();
  const flags = {
    clusterPoolCidr: '10.7.0.0/16',
    clusterPoolMaskSize: '24',
    storeListen: `unix://${path.join(dir, 'store.sock')}`,
    storeData: path.join(dir, 'data'),
    nodeCidrGrace: '300ms',
    apiSocket: path.join(dir, 'operator.sock'),
    log: silent,
  };
  let running = await runOperator(flags);
  let agents = openStore(running.storeUrl);
  try {
    assert.equal(running.storeUrl, `local+unix://${path.join(dir, 'store.sock')}`);
    await join(agents, 'ctr');
    await join(agents, 'w1');
    assert.equal(await cidrOf(agents, 'ctr'), '10.7.0.0/24');
    assert.equal(await cidrOf(agents, 'w1'), '10.7.1.0/24');
    await running.operator.settled();
    const { status, body } = await getStatus(flags.apiSocket);
    assert.equal(status, 200);
    assert.equal(body.state, 'running');
    assert.deepEqual(body.assignments, { ctr: ['10.7.0.0/24'], w1: ['10.7.1.0/24'] });
    assert.deepEqual(body.pool, { cidrs: ['10.7.0.0/16'], maskSize: 24, total: 256, assigned: 2, releasing: 0, free: 254 });
    assert.equal(body.graceMs, 300);
    assert.equal(body.exhausted, null);
    assert.match(body.store.description, /^local \(unix:.*store\.sock\)$/);
    assert.equal(body.store.ping.ok, true);
    assert.equal(body.store.hosted?.dataDir, flags.storeData);
    assert.equal(fs.statSync(flags.apiSocket).mode & 0o777, 0o600, 'status socket is root-only');
  } finally {
    await agents.close();
    await running.stop();
  }
  assert.equal(fs.existsSync(flags.apiSocket), false, 'stop() removes the status socket');

  // Same data dir: same assignments.
  running = await runOperator(flags);
  agents = openStore(running.storeUrl);
  try {
    assert.deepEqual(running.operator.status().assignments, { ctr: ['10.7.0.0/24'], w1: ['10.7.1.0/24'] });
    assert.deepEqual(await podCIDRs(agents, 'w1'), ['10.7.1.0/24']);
  } finally {
    await agents.close();
    await running.stop();
  }

  // A different pool over the same data: refused, and everything it started is undone.
  await assert.rejects(runOperator({ ...flags, clusterPoolCidr: '10.8.0.0/16' }), (err: unknown) => {
    assert.ok(err instanceof OperatorError);
    assert.equal(err.code, 'TENDRIL_ERR_POOL_MISMATCH');
    return true;
  });
  assert.equal(fs.existsSync(path.join(dir, 'store.sock')), false, 'the hosted store was closed again');
  assert.equal(fs.existsSync(flags.apiSocket), false);
});
