// Unit tests of the Operator against an in-memory Store double (conflicts, failures and resyncs injected at will).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeleteOptions, Kind, PutOptions, Resource, Store, WatchEvent, WatchHandle, WatchOptions } from '../store/index.js';
import { ClusterPool } from './cluster-pool.js';
import { OperatorError } from './errors.js';
import { CLUSTER_POOL_STATE, Operator } from './operator.js';

const silent = pino({ level: 'silent' });

class ConflictError extends Error {
  readonly code = 'TENDRIL_ERR_STORE_CONFLICT';
}
class UnavailableError extends Error {
  readonly code = 'TENDRIL_ERR_STORE_UNAVAILABLE';
}

/** The Store contract in memory: store-wide revisions, expectedRevision checks, watches delivered asynchronously. */
class MemoryStore implements Store {
  readonly description = 'memory';
  private rev = 0;
  private readonly data = new Map<string, Resource<unknown>>();
  private readonly history: WatchEvent<unknown>[] = [];
  private readonly watchers = new Set<{ kind: Kind; opts: WatchOptions }>();
  /** Runs before each put is applied (may write, to simulate a racing writer, or throw). */
  beforePut: ((kind: Kind, name: string) => void) | undefined;
  /** When set, every call fails as if the store were unreachable. */
  down = false;
  puts = 0;

  private key(kind: Kind, name: string): string {
    return `${kind}/${name}`;
  }
  private check(): void {
    if (this.down) throw new UnavailableError('store unreachable (injected)');
  }

  async get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined> {
    this.check();
    const r = this.data.get(this.key(kind, name));
    return r ? (structuredClone(r) as Resource<T>) : undefined;
  }
  async list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    this.check();
    const items = [...this.data.values()].filter((r) => r.kind === kind).map((r) => structuredClone(r) as Resource<T>);
    return { items, revision: this.rev };
  }
  async put<T>(kind: Kind, name: string, value: T, opts: PutOptions = {}): Promise<Resource<T>> {
    this.check();
    this.beforePut?.(kind, name); // a hook's own writes use putNow and do not re-enter it
    return this.putNow(kind, name, value, opts);
  }
  putNow<T>(kind: Kind, name: string, value: T, opts: PutOptions = {}): Resource<T> {
    const cur = this.data.get(this.key(kind, name));
    if (opts.expectedRevision !== undefined && opts.expectedRevision !== (cur?.revision ?? 0)) {
      throw new ConflictError(`conflict on ${kind} "${name}": expected ${opts.expectedRevision}, is ${cur?.revision ?? 0}`);
    }
    this.puts++;
    const res: Resource<unknown> = { kind, name, revision: ++this.rev, value: structuredClone(value) };
    this.data.set(this.key(kind, name), res);
    this.emit({ type: 'put', resource: res });
    return structuredClone(res) as Resource<T>;
  }
  async delete(kind: Kind, name: string, opts: DeleteOptions = {}): Promise<boolean> {
    this.check();
    const cur = this.data.get(this.key(kind, name));
    if (opts.expectedRevision !== undefined && opts.expectedRevision !== (cur?.revision ?? 0)) {
      throw new ConflictError(`conflict on ${kind} "${name}"`);
    }
    if (!cur) return false;
    this.data.delete(this.key(kind, name));
    this.emit({ type: 'delete', kind, name, revision: ++this.rev });
    return true;
  }
  watch(kind: Kind, opts: WatchOptions): WatchHandle {
    const w = { kind, opts };
    this.watchers.add(w);
    for (const ev of this.history) {
      if (kindOf(ev) === kind && revOf(ev) > opts.fromRevision) setImmediate(() => this.watchers.has(w) && opts.onEvent(ev));
    }
    return { close: () => void this.watchers.delete(w) };
  }
  /** Makes every watch of `kind` lose its place, as after a compaction. */
  resyncAll(kind: Kind): void {
    for (const w of [...this.watchers]) {
      if (w.kind !== kind) continue;
      this.watchers.delete(w);
      w.opts.onResync?.('compacted (injected)');
    }
  }
  async ping(): Promise<{ ok: boolean; revision?: number }> {
    return { ok: !this.down, revision: this.rev };
  }
  async close(): Promise<void> {
    this.watchers.clear();
  }
  /** Writes behind the watchers' back (as if their events were lost). */
  silentDelete(kind: Kind, name: string): void {
    this.data.delete(this.key(kind, name));
    this.rev++;
  }
  peek<T>(kind: Kind, name: string): T | undefined {
    return this.data.get(this.key(kind, name))?.value as T | undefined;
  }
  private emit(ev: WatchEvent<unknown>): void {
    this.history.push(ev);
    for (const w of this.watchers) {
      if (w.kind === kindOf(ev)) setImmediate(() => this.watchers.has(w) && w.opts.onEvent(ev));
    }
  }
}

function kindOf(ev: WatchEvent<unknown>): Kind {
  return ev.type === 'put' ? ev.resource.kind : ev.kind;
}
function revOf(ev: WatchEvent<unknown>): number {
  return ev.type === 'put' ? ev.resource.revision : ev.revision;
}

interface NodeValue {
  name: string;
  addresses: string[];
  podCIDRs: string[];
  routerIP?: string;
  ipam?: { pools: Record<string, { requested: number; release?: string[]; allocated: string[] }> };
}

/** What the agent does to grow or shrink: asks for `requested` CIDRs of the default pool, handing back `release`. */
function askFor(store: MemoryStore, name: string, requested: number, release: string[] = []): void {
  const cur = store.peek<NodeValue>('Node', name)!;
  const allocated = cur.ipam?.pools['default']?.allocated ?? [];
  store.putNow<NodeValue>('Node', name, { ...cur, ipam: { pools: { default: { requested, allocated, ...(release.length ? { release } : {}) } } } });
}

function joinNode(store: MemoryStore, name: string, podCIDRs: string[] = []): void {
  store.putNow<NodeValue>('Node', name, { name, addresses: [`192.168.0.${store.puts + 1}`], podCIDRs });
}

function cidrOfNode(store: MemoryStore, name: string): string | undefined {
  return store.peek<NodeValue>('Node', name)?.podCIDRs[0];
}

async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function newOperator(store: Store, over: Partial<{ cidr: string; cidrs: string[]; maskSize: number; graceMs: number; ipam: 'cluster-pool' | 'kubernetes' }> = {}): Operator {
  return new Operator({
    store,
    ...(over.ipam ? { ipam: over.ipam } : {}),
    pool: { cidrs: over.cidrs ?? [over.cidr ?? '10.0.0.0/16'], maskSize: over.maskSize ?? 24 },
    graceMs: over.graceMs ?? 200,
    log: silent,
  });
}

test('Operator gives every node a distinct CIDR, at start and on join, keeping the agent\'s fields', async () => {
  const store = new MemoryStore();
  joinNode(store, 'ctr');
  joinNode(store, 'w1');
  const op = newOperator(store);
  await op.start();
  try {
    assert.equal(cidrOfNode(store, 'ctr'), '10.0.0.0/24');
    assert.equal(cidrOfNode(store, 'w1'), '10.0.1.0/24');
    joinNode(store, 'w2');
    await waitFor('w2 CIDR', () => cidrOfNode(store, 'w2'));
    assert.equal(cidrOfNode(store, 'w2'), '10.0.2.0/24');
    assert.deepEqual(store.peek<NodeValue>('Node', 'w2')?.addresses.length, 1);
    await op.settled();
    const st = op.status();
    assert.equal(st.state, 'running');
    assert.deepEqual(st.assignments, { ctr: ['10.0.0.0/24'], w1: ['10.0.1.0/24'], w2: ['10.0.2.0/24'] });
    assert.deepEqual(st.pool, { cidrs: ['10.0.0.0/16'], maskSize: 24, total: 256, assigned: 3, releasing: 0, free: 253 });
    assert.deepEqual(store.peek(('IPAMState'), CLUSTER_POOL_STATE), {
      cidrs: ['10.0.0.0/16'],
      maskSize: 24,
      assigned: st.assignments,
      releasing: {},
    });
    assert.equal(st.exhausted, null);
    assert.equal(st.lastError, null);
  } finally {
    await op.stop();
  }
  assert.equal(op.status().state, 'stopped');
});

test('Operator retries a Node write that races with the agent\'s own write and keeps both', async () => {
  const store = new MemoryStore();
  const op = newOperator(store);
  await op.start();
  try {
    // The agent publishes its router IP right between the operator's read and its write.
    store.beforePut = (kind, name) => {
      if (kind !== 'Node') return;
      store.beforePut = undefined;
      const cur = store.peek<NodeValue>('Node', name)!;
      store.putNow<NodeValue>('Node', name, { ...cur, routerIP: '10.0.0.1' });
    };
    joinNode(store, 'ctr');
    await waitFor('ctr CIDR', () => cidrOfNode(store, 'ctr'));
    await op.settled();
    assert.equal(store.beforePut, undefined, 'the racing write happened');
    assert.deepEqual(store.peek<NodeValue>('Node', 'ctr')?.podCIDRs, ['10.0.0.0/24']);
    assert.equal(store.peek<NodeValue>('Node', 'ctr')?.routerIP, '10.0.0.1');
  } finally {
    await op.stop();
  }
});

test('two Operators on one store never hand out a CIDR twice (pool writes are revision-checked)', async () => {
  const store = new MemoryStore();
  const a = newOperator(store);
  const b = newOperator(store);
  await Promise.all([a.start(), b.start()]);
  try {
    for (let i = 0; i < 20; i++) joinNode(store, `n${i}`);
    await waitFor('all CIDRs', () => [...Array(20).keys()].every((i) => cidrOfNode(store, `n${i}`)));
    await Promise.all([a.settled(), b.settled()]);
    const cidrs = [...Array(20).keys()].map((i) => cidrOfNode(store, `n${i}`)!);
    assert.equal(new Set(cidrs).size, 20, `duplicates in ${cidrs.join(' ')}`);
    const state = ClusterPool.fromState(store.peek('IPAMState', CLUSTER_POOL_STATE)).toState();
    assert.deepEqual(Object.keys(state.assigned).sort(), [...Array(20).keys()].map((i) => `n${i}`).sort());
    for (let i = 0; i < 20; i++) assert.deepEqual(state.assigned[`n${i}`], [cidrs[i]]);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

test('Operator retries a pool write that loses to another writer', async () => {
  const store = new MemoryStore();
  const op = newOperator(store);
  await op.start();
  try {
    // A second operator assigns x between our read and our write of the pool state.
    store.beforePut = (kind) => {
      if (kind !== 'IPAMState') return;
      store.beforePut = undefined;
      const cur = store.peek('IPAMState', CLUSTER_POOL_STATE);
      const p = ClusterPool.fromState(cur);
      p.assign('x', Date.now());
      const res = [...Array(1)].map(() => store.putNow('IPAMState', CLUSTER_POOL_STATE, p.toState()))[0];
      assert.ok(res);
    };
    joinNode(store, 'y');
    await waitFor('y CIDR', () => cidrOfNode(store, 'y'));
    await op.settled();
    const st = ClusterPool.fromState(store.peek('IPAMState', CLUSTER_POOL_STATE)).toState();
    assert.deepEqual(st.assigned['y'], ['10.0.1.0/24'], 'y got the next CIDR after x');
    // x is not a Node this operator sees, so the next pass treats it as departed and holds its CIDR.
    assert.equal(st.assigned['x'], undefined);
    assert.deepEqual(Object.values(st.releasing).map((r) => r.node), ['x']);
  } finally {
    await op.stop();
  }
});

test('a deleted node\'s CIDR is held for the grace period, then reused; a node back in time gets its own', async () => {
  const store = new MemoryStore();
  joinNode(store, 'a');
  joinNode(store, 'b');
  // A grace no loaded machine outlasts: "held" and "back in time" hold by construction, not by timing.
  let op = newOperator(store, { graceMs: 3_600_000 });
  await op.start();
  try {
    await store.delete('Node', 'a');
    await waitFor('a released', () => op.status().releasing['10.0.0.0/24']);
    joinNode(store, 'c');
    await waitFor('c CIDR', () => cidrOfNode(store, 'c'));
    assert.equal(cidrOfNode(store, 'c'), '10.0.2.0/24', 'a held CIDR is not handed to c');
    // b leaves and comes back within its grace period.
    await store.delete('Node', 'b');
    await waitFor('b released', () => op.status().releasing['10.0.1.0/24']);
    joinNode(store, 'b');
    await waitFor('b back', () => cidrOfNode(store, 'b'));
    assert.equal(cidrOfNode(store, 'b'), '10.0.1.0/24');
    await op.stop();
    // With a short grace, c's hold expires by timer (no event needed) and the next node gets its CIDR.
    op = newOperator(store, { graceMs: 300 });
    await op.start();
    await store.delete('Node', 'c');
    await waitFor('c expired', () => op.status().assignments['c'] === undefined && op.status().releasing['10.0.2.0/24'] === undefined);
    assert.equal(op.status().pool.free, 256 - 2, 'b assigned, a still held');
    joinNode(store, 'd');
    await waitFor('d CIDR', () => cidrOfNode(store, 'd'));
    assert.equal(cidrOfNode(store, 'd'), '10.0.2.0/24');
  } finally {
    await op.stop();
  }
});

test('exhaustion is reported in status and a released CIDR goes to the waiting node after its grace', async () => {
  const store = new MemoryStore();
  joinNode(store, 'ctr');
  joinNode(store, 'w1');
  joinNode(store, 'w2');
  const op = newOperator(store, { cidr: '10.9.0.0/29', maskSize: 30, graceMs: 150 });
  await op.start();
  try {
    const st = op.status();
    assert.deepEqual(st.assignments, { ctr: ['10.9.0.0/30'], w1: ['10.9.0.4/30'] });
    assert.equal(cidrOfNode(store, 'w2'), undefined, 'w2 stays without CIDR');
    assert.ok(st.exhausted);
    assert.deepEqual(st.exhausted.waiting, ['w2']);
    assert.equal(st.exhausted.message, 'cluster pool 10.9.0.0/29 with mask /30 is exhausted: 2/2 CIDRs assigned (ctr, w1)');
    assert.equal(st.lastError, null, 'exhaustion is not a reconcile failure');
    await store.delete('Node', 'w1');
    await waitFor('w1 held', () => op.status().releasing['10.9.0.4/30']);
    assert.match(op.status().exhausted?.message ?? '', /1\/2 CIDRs assigned \(ctr\), 1 held for departed nodes \(w1 until /);
    await waitFor('w2 CIDR', () => cidrOfNode(store, 'w2'));
    assert.equal(cidrOfNode(store, 'w2'), '10.9.0.4/30');
    await op.settled();
    assert.equal(op.status().exhausted, null);
  } finally {
    await op.stop();
  }
});

test('Operator refuses to start on a pool stored with other flags, or on malformed pool state', async () => {
  const store = new MemoryStore();
  joinNode(store, 'ctr');
  const first = newOperator(store);
  await first.start();
  await first.stop();
  for (const over of [{ cidr: '10.1.0.0/16' }, { maskSize: 26 }]) {
    const op = newOperator(store, over);
    await assert.rejects(op.start(), (err: unknown) => {
      assert.ok(err instanceof OperatorError);
      assert.equal(err.code, 'TENDRIL_ERR_POOL_MISMATCH');
      assert.match(err.message, /^Cannot use cluster pool .* the store already holds pool 10\.0\.0\.0\/16 with mask \/24 for 1 node\(s\) and .*; re-carving/);
      return true;
    });
    assert.equal(op.status().state, 'stopped');
  }
  assert.deepEqual(store.peek<NodeValue>('Node', 'ctr')?.podCIDRs, ['10.0.0.0/24'], 'nothing was re-carved');

  store.putNow('IPAMState', CLUSTER_POOL_STATE, { cidr: '10.0.0.0/16', maskSize: 24, assigned: { a: 'nope' } });
  await assert.rejects(newOperator(store).start(), (err: unknown) => {
    assert.ok(err instanceof OperatorError);
    assert.equal(err.code, 'TENDRIL_ERR_STATE');
    assert.match(err.message, /^Cannot use IPAMState "cluster-pool" from the store: Invalid cluster pool state: assigned\["a"\] "nope"/);
    return true;
  });
});

test('Operator restart keeps every assignment and adopts node CIDRs when the pool state was lost', async () => {
  const store = new MemoryStore();
  for (const n of ['a', 'b', 'c']) joinNode(store, n);
  let op = newOperator(store);
  await op.start();
  const before = op.status().assignments;
  await op.stop();
  await store.delete('Node', 'a'); // while no operator runs
  joinNode(store, 'd');
  op = newOperator(store);
  await op.start();
  try {
    const st = op.status();
    assert.deepEqual(st.assignments['b'], before['b']);
    assert.deepEqual(st.assignments['c'], before['c']);
    assert.deepEqual(st.assignments['d'], ['10.0.3.0/24'], 'a\'s CIDR is held, d gets a new one');
    assert.deepEqual(Object.keys(st.releasing), before['a']);
  } finally {
    await op.stop();
  }
  // Pool state gone (deleted by hand): nodes keep the CIDRs they carry.
  store.silentDelete('IPAMState', CLUSTER_POOL_STATE);
  joinNode(store, 'e');
  op = newOperator(store);
  await op.start();
  try {
    const st = op.status();
    assert.deepEqual(st.assignments['b'], ['10.0.1.0/24']);
    assert.deepEqual(st.assignments['d'], ['10.0.3.0/24']);
    assert.deepEqual(st.assignments['e'], ['10.0.0.0/24'], 'the lowest CIDR nobody carries');
  } finally {
    await op.stop();
  }
});

test('Operator records store failures in status and recovers by itself', async () => {
  const store = new MemoryStore();
  const op = newOperator(store);
  await op.start();
  try {
    store.down = true;
    joinNode(store, 'a');
    await waitFor('error recorded', () => op.status().lastError);
    assert.equal(op.status().lastError?.code, 'TENDRIL_ERR_STORE_UNAVAILABLE');
    store.down = false;
    await waitFor('a CIDR after recovery', () => cidrOfNode(store, 'a'), 3000);
    await op.settled();
    assert.equal(op.status().lastError, null);
  } finally {
    await op.stop();
  }
});

test('Operator re-lists on a watch resync and reconciles what it missed', async () => {
  const store = new MemoryStore();
  joinNode(store, 'a');
  joinNode(store, 'b');
  const op = newOperator(store, { graceMs: 10_000 });
  await op.start();
  try {
    store.silentDelete('Node', 'a'); // the watch never hears of it
    store.resyncAll('Node');
    await waitFor('a released', () => op.status().releasing['10.0.0.0/24']);
    assert.deepEqual(op.status().assignments, { b: ['10.0.1.0/24'] });
    joinNode(store, 'c'); // and the new watch works
    await waitFor('c CIDR', () => cidrOfNode(store, 'c'));
  } finally {
    await op.stop();
  }
});

test('Operator constructor validates the pool and the grace', () => {
  const store = new MemoryStore();
  assert.throws(() => new Operator({ store, pool: { cidr: '10.0.0.0/33', maskSize: 24 }, log: silent }), /--cluster-pool-ipv4-cidr/);
  assert.throws(() => new Operator({ store, pool: { cidr: '10.0.0.0/8', maskSize: 24 }, graceMs: -1, log: silent }), /grace -1 ms/);
});

test('a node asking for more CIDRs grows, hands an empty extra back, and no CIDR is ever given twice', async () => {
  const store = new MemoryStore();
  joinNode(store, 'a');
  joinNode(store, 'b');
  let op = newOperator(store, { cidrs: ['10.0.0.0/26', '10.7.0.0/27'], maskSize: 27 });
  await op.start();
  try {
    assert.deepEqual(op.status().assignments, { a: ['10.0.0.0/27'], b: ['10.0.0.32/27'] });
    askFor(store, 'a', 2);
    await waitFor('a grown', () => store.peek<NodeValue>('Node', 'a')!.podCIDRs.length === 2);
    const a = store.peek<NodeValue>('Node', 'a')!;
    assert.deepEqual(a.podCIDRs, ['10.0.0.0/27', '10.7.0.0/27'], 'the second cluster CIDR serves once the first is used up');
    assert.deepEqual(a.ipam?.pools['default'], { requested: 2, allocated: ['10.0.0.0/27', '10.7.0.0/27'] });
    // b wants more too: the pool is exhausted, b waits and keeps what it has.
    askFor(store, 'b', 2);
    await waitFor('b waits', () => op.status().exhausted?.waiting.includes('b'));
    assert.deepEqual(store.peek<NodeValue>('Node', 'b')!.podCIDRs, ['10.0.0.32/27']);
    await op.stop();
    // An operator restart changes nothing and a hand-back serves the waiting node.
    op = newOperator(store, { cidrs: ['10.0.0.0/26', '10.7.0.0/27'], maskSize: 27 });
    await op.start();
    assert.deepEqual(op.status().assignments, { a: ['10.0.0.0/27', '10.7.0.0/27'], b: ['10.0.0.32/27'] });
    askFor(store, 'a', 1, ['10.7.0.0/27']);
    await waitFor('b grown', () => store.peek<NodeValue>('Node', 'b')!.podCIDRs.length === 2);
    assert.deepEqual(store.peek<NodeValue>('Node', 'b')!.podCIDRs, ['10.0.0.32/27', '10.7.0.0/27']);
    await waitFor('a shrunk', () => store.peek<NodeValue>('Node', 'a')!.podCIDRs.length === 1);
    assert.deepEqual(store.peek<NodeValue>('Node', 'a')!.ipam?.pools['default'], { requested: 1, allocated: ['10.0.0.0/27'] }, 'the handled hand-back is dropped');
    await op.settled();
    assert.equal(op.status().exhausted, null);
  } finally {
    await op.stop();
  }
});

test('Operator accepts added cluster CIDRs on restart and refuses dropping one in use', async () => {
  const store = new MemoryStore();
  joinNode(store, 'a');
  let op = newOperator(store, { cidrs: ['10.0.0.0/24'], maskSize: 24 });
  await op.start();
  await op.stop();
  op = newOperator(store, { cidrs: ['10.0.0.0/24', '10.1.0.0/24'], maskSize: 24 });
  await op.start();
  try {
    joinNode(store, 'b');
    await waitFor('b CIDR', () => cidrOfNode(store, 'b'));
    assert.equal(cidrOfNode(store, 'b'), '10.1.0.0/24');
  } finally {
    await op.stop();
  }
  await assert.rejects(newOperator(store, { cidrs: ['10.1.0.0/24'], maskSize: 24 }).start(), /TENDRIL_ERR_POOL_MISMATCH|node "a" holds 10\.0\.0\.0\/24, outside 10\.1\.0\.0\/24/);
});

test('--ipam kubernetes: the operator allocates nothing and leaves given CIDRs alone', async () => {
  const store = new MemoryStore();
  joinNode(store, 'a', ['10.44.0.0/24']);
  joinNode(store, 'b');
  const op = newOperator(store, { ipam: 'kubernetes' });
  await op.start();
  try {
    joinNode(store, 'c');
    await new Promise((r) => setTimeout(r, 50));
    await op.settled();
    assert.equal(op.status().ipam, 'kubernetes');
    assert.deepEqual(store.peek<NodeValue>('Node', 'a')!.podCIDRs, ['10.44.0.0/24']);
    assert.deepEqual(store.peek<NodeValue>('Node', 'b')!.podCIDRs, []);
    assert.equal(store.peek('IPAMState', CLUSTER_POOL_STATE), undefined);
  } finally {
    await op.stop();
  }
});
