// Unit tests of the cluster-pool allocator: no overlap, grace on release, exhaustion, state round-trips, flag checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterPool, validatePoolConfig } from './cluster-pool.js';
import { OperatorError } from './errors.js';
import { cidrContains, cidrSize, parseCidr } from '../util/ip.js';

const T0 = Date.parse('2025-01-01T00:00:00.000Z');

/** Deterministic PRNG (mulberry32) so a failing sequence can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function expectCode(code: string, re?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof OperatorError, `expected OperatorError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (re) assert.match(err.message, re);
    return true;
  };
}

test('assign() hands out the lowest free /24 and is idempotent per node', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/8', maskSize: 24 });
  assert.equal(p.capacity, 65536);
  assert.deepEqual(p.assign('ctr', T0), { cidr: '10.0.0.0/24', source: 'new' });
  assert.deepEqual(p.assign('w1', T0), { cidr: '10.0.1.0/24', source: 'new' });
  assert.deepEqual(p.assign('ctr', T0), { cidr: '10.0.0.0/24', source: 'existing' });
  assert.equal(p.cidrOf('w1'), '10.0.1.0/24');
  assert.equal(p.cidrOf('nope'), undefined);
  // A hole left by a node whose grace has passed is reused first.
  p.release('ctr', T0, 0);
  assert.deepEqual(p.assign('w2', T0), { cidr: '10.0.0.0/24', source: 'new' });
});

test('assign() never returns overlapping CIDRs over random join/leave sequences', () => {
  const seen = { new: 0, returned: 0, exhausted: 0 };
  for (let seed = 1; seed <= 30; seed++) {
    const rand = rng(seed);
    const maskSize = 26 + Math.floor(rand() * 5); // /26../30 in a /24: 4..64 CIDRs, so exhaustion happens too
    const p = ClusterPool.create({ cidr: '172.16.5.0/24', maskSize });
    const pool = parseCidr('172.16.5.0/24');
    const live = new Map<string, string>();
    const gone = new Map<string, string>(); // node -> CIDR it left, while possibly still held
    let now = T0;
    for (let step = 0; step < 300; step++) {
      now += Math.floor(rand() * 50);
      const r = rand();
      const node = `n${Math.floor(rand() * 80)}`;
      if (r < 0.55) {
        try {
          const { cidr, source } = p.assign(node, now);
          if (live.has(node)) assert.equal(cidr, live.get(node), `seed ${seed}: node ${node} changed CIDR`);
          if (source === 'new' || source === 'returned') seen[source]++;
          if (source === 'returned') assert.equal(cidr, gone.get(node), `seed ${seed}: ${node} came back to another CIDR`);
          live.set(node, cidr);
          gone.delete(node);
        } catch (err) {
          assert.ok(err instanceof OperatorError && err.code === 'TENDRIL_ERR_IPAM_EXHAUSTED', String(err));
          assert.equal(p.usage(now).free, 0, `seed ${seed}: exhausted with free CIDRs`);
          seen.exhausted++;
        }
      } else if (r < 0.9) {
        const [cidr] = p.release(node, now, Math.floor(rand() * 300));
        assert.equal(cidr, live.get(node));
        if (cidr) gone.set(node, cidr);
        live.delete(node);
      } else {
        p.expire(now);
      }
      // Invariants: live CIDRs are pool subnets of the mask, pairwise disjoint, and disjoint from held ones.
      const state = p.toState();
      const cidrs = [...live.values()];
      assert.deepEqual(Object.fromEntries([...live].map(([n, c]) => [n, [c]])), state.assigned, `seed ${seed} step ${step}: state disagrees`);
      const parsed = cidrs.map((c) => ({ c, ...parseCidr(c) })).sort((a, b) => a.base - b.base);
      for (const x of parsed) {
        assert.equal(x.bits, maskSize);
        assert.ok(cidrContains(pool, x.base), `seed ${seed}: ${x.c} is outside the pool`);
      }
      // Sorted by start, ranges are disjoint when each ends before its successor starts.
      for (let i = 0; i + 1 < parsed.length; i++) {
        const [a, b] = [parsed[i]!, parsed[i + 1]!];
        assert.ok(a.base + cidrSize(a) <= b.base, `seed ${seed}: ${a.c} overlaps ${b.c}`);
      }
      for (const [c, h] of Object.entries(state.releasing)) {
        if (Date.parse(h.until) > now) assert.ok(!cidrs.includes(c), `seed ${seed}: held ${c} was handed out`);
      }
    }
  }
  // The sequences must have exercised every path, or the invariants above prove little.
  assert.ok(seen.new > 0 && seen.returned > 0 && seen.exhausted > 0, JSON.stringify(seen));
});

test('release() holds the CIDR until the grace period ends, then expire() frees it', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/29', maskSize: 30 });
  p.assign('a', T0);
  p.assign('b', T0);
  assert.deepEqual(p.release('a', T0, 30_000), ['10.0.0.0/30']);
  assert.deepEqual(p.release('a', T0, 30_000), [], 'a second release is a no-op');
  assert.deepEqual(p.toState().releasing, { '10.0.0.0/30': { node: 'a', until: '2025-01-01T00:00:30.000Z' } });
  assert.equal(p.nextExpiry(), T0 + 30_000);
  // Within the grace nobody else gets it: c is refused, the pool being full.
  assert.throws(() => p.assign('c', T0 + 29_999), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED'));
  assert.deepEqual(p.expire(T0 + 29_999), []);
  assert.deepEqual(p.expire(T0 + 30_000), [{ cidr: '10.0.0.0/30', node: 'a' }]);
  assert.equal(p.nextExpiry(), undefined);
  assert.deepEqual(p.assign('c', T0 + 30_000), { cidr: '10.0.0.0/30', source: 'new' });
});

test('assign() treats a held CIDR whose time has passed as free even before expire()', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/30', maskSize: 30 });
  p.assign('a', T0);
  p.release('a', T0, 1000);
  assert.throws(() => p.assign('b', T0 + 999), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED'));
  assert.deepEqual(p.assign('b', T0 + 1000), { cidr: '10.0.0.0/30', source: 'new' });
  assert.deepEqual(p.toState().releasing, {});
});

test('a node that comes back within the grace period gets its old CIDR back', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/16', maskSize: 24 });
  p.assign('a', T0);
  p.assign('b', T0);
  p.release('a', T0, 10_000);
  assert.deepEqual(p.assign('c', T0 + 1), { cidr: '10.0.2.0/24', source: 'new' });
  assert.deepEqual(p.assign('a', T0 + 5000), { cidr: '10.0.0.0/24', source: 'returned' });
  assert.deepEqual(p.toState().releasing, {});
});

test('assign() adopts a CIDR the node already carries when it is free, and ignores it otherwise', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/16', maskSize: 24 });
  assert.deepEqual(p.assign('a', T0, '10.0.7.0/24'), { cidr: '10.0.7.0/24', source: 'adopted' });
  // Taken by a, outside the pool, wrong mask, not aligned: b gets the lowest free instead.
  assert.deepEqual(p.assign('b', T0, '10.0.7.0/24'), { cidr: '10.0.0.0/24', source: 'new' });
  assert.deepEqual(p.assign('c', T0, '10.1.0.0/24'), { cidr: '10.0.1.0/24', source: 'new' });
  assert.deepEqual(p.assign('d', T0, '10.0.8.0/25'), { cidr: '10.0.2.0/24', source: 'new' });
  assert.deepEqual(p.assign('e', T0, '10.0.9.128/24'), { cidr: '10.0.3.0/24', source: 'new' });
  // Held for another departed node: not adoptable before its time.
  p.release('a', T0, 1000);
  assert.deepEqual(p.assign('f', T0 + 10, '10.0.7.0/24'), { cidr: '10.0.4.0/24', source: 'new' });
});

test('assign() on an exhausted pool throws TENDRIL_ERR_IPAM_EXHAUSTED naming the pool and the holders', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/29', maskSize: 30 });
  p.assign('ctr', T0);
  p.assign('w1', T0);
  assert.throws(
    () => p.assign('w2', T0),
    expectCode('TENDRIL_ERR_IPAM_EXHAUSTED', /^cluster pool 10\.0\.0\.0\/29 with mask \/30 is exhausted: 2\/2 CIDRs assigned \(ctr, w1\)$/),
  );
  p.release('w1', T0, 5000);
  assert.throws(
    () => p.assign('w2', T0),
    expectCode(
      'TENDRIL_ERR_IPAM_EXHAUSTED',
      /^cluster pool 10\.0\.0\.0\/29 with mask \/30 is exhausted: 1\/2 CIDRs assigned \(ctr\), 1 held for departed nodes \(w1 until 2025-01-01T00:00:05\.000Z\)$/,
    ),
  );
  assert.deepEqual(p.usage(T0), { total: 2, assigned: 1, releasing: 1, free: 0 });
});

test('the exhaustion message abbreviates long node lists', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/26', maskSize: 30 });
  for (let i = 0; i < 16; i++) p.assign(`n${i}`, T0);
  assert.throws(() => p.assign('x', T0), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED', /16\/16 CIDRs assigned \(n0, n1, n2, n3, n4, n5, n6, n7, … 8 more\)$/));
});

test('toState()/fromState() round-trip through JSON keeps every assignment and hold (restart)', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/8', maskSize: 24 });
  for (const n of ['ctr', 'w1', 'w2', 'w3']) p.assign(n, T0);
  p.release('w1', T0, 30_000);
  p.release('w3', T0, 0);
  const json = JSON.stringify(p.toState());
  const q = ClusterPool.fromState(JSON.parse(json));
  assert.deepEqual(q.toState(), p.toState());
  assert.equal(JSON.stringify(q.toState()), json);
  // The restarted allocator behaves as the old one would: w1's CIDR stays held, w3's hole is reused, w1 comes back.
  assert.deepEqual(q.assign('w4', T0 + 1), { cidr: '10.0.3.0/24', source: 'new' });
  assert.deepEqual(q.assign('w5', T0 + 1), { cidr: '10.0.4.0/24', source: 'new' });
  assert.deepEqual(q.assign('w1', T0 + 2), { cidr: '10.0.1.0/24', source: 'returned' });
  assert.deepEqual(q.assign('ctr', T0 + 3), { cidr: '10.0.0.0/24', source: 'existing' });
});

test('fromState() refuses malformed or overlapping state', () => {
  const ok = { cidr: '10.0.0.0/16', maskSize: 24, assigned: {}, releasing: {} };
  const cases: Array<[unknown, RegExp]> = [
    [null, /expected an object, got null/],
    [{ ...ok, cidr: 7 }, /"cidrs" must be a non-empty list of CIDR strings/],
    [{ ...ok, cidr: undefined, cidrs: [] }, /"cidrs" must be a non-empty list/],
    [{ ...ok, cidr: undefined, cidrs: ['10.0.0.0/16', '10.0.128.0/17'] }, /overlaps 10\.0\.0\.0\/16/],
    [{ ...ok, assigned: { a: [] } }, /assigned\["a"\] must be a list of CIDR strings/],
    [{ ...ok, assigned: { a: ['10.0.0.0/24', '10.0.0.0/24'] } }, /"10\.0\.0\.0\/24" is also assigned to node "a"/],
    [{ ...ok, cidr: '10.0.0.1/16' }, /host bits are set/],
    [{ ...ok, maskSize: 8 }, /does not fit/],
    [{ ...ok, assigned: { a: '10.1.0.0/24' } }, /assigned\["a"\] "10\.1\.0\.0\/24" is not a \/24 inside 10\.0\.0\.0\/16/],
    [{ ...ok, assigned: { a: '10.0.0.0/25' } }, /is not a \/24/],
    [{ ...ok, assigned: { a: '10.0.0.0/24', b: '10.0.0.0/24' } }, /assigned\["b"\] "10\.0\.0\.0\/24" is also assigned to node "a"/],
    [{ ...ok, assigned: { a: 5 } }, /must be a list of CIDR strings/],
    [{ ...ok, assigned: { a: '10.0.0.0/24' }, releasing: { '10.0.0.0/24': { node: 'b', until: '2025-01-01T00:00:00Z' } } }, /also assigned to node "a"/],
    [{ ...ok, releasing: { '10.0.0.0/24': { node: 'b', until: 'soon' } } }, /until "soon" is not an ISO time/],
    [{ ...ok, releasing: { '10.0.0.0/24': 'b' } }, /must be \{node, until\}/],
  ];
  for (const [state, re] of cases) {
    assert.throws(() => ClusterPool.fromState(state), expectCode('TENDRIL_ERR_STATE', /^Invalid cluster pool state: /), JSON.stringify(state));
    assert.throws(() => ClusterPool.fromState(state), (err: unknown) => re.test((err as Error).message), JSON.stringify(state));
  }
  // Missing maps are tolerated (an empty pool written by hand).
  assert.equal(ClusterPool.fromState({ cidr: '10.0.0.0/16', maskSize: 24 }).capacity, 256);
});

test('validatePoolConfig() applies the defaults and names the flag in every refusal', () => {
  assert.deepEqual(validatePoolConfig({}), { cidrs: ['10.0.0.0/8'], maskSize: 24 });
  assert.deepEqual(validatePoolConfig({ cidr: ' 172.20.0.0/16 ', maskSize: '26' }), { cidrs: ['172.20.0.0/16'], maskSize: 26 });
  assert.deepEqual(validatePoolConfig({ cidr: '10.0.0.0/24', maskSize: 24 }), { cidrs: ['10.0.0.0/24'], maskSize: 24 });
  assert.deepEqual(validatePoolConfig({ cidrs: ['10.0.0.0/24', '10.9.0.0/16'], maskSize: 26 }), { cidrs: ['10.0.0.0/24', '10.9.0.0/16'], maskSize: 26 });
  const cases: Array<[{ cidr?: string; cidrs?: string[]; maskSize?: string | number }, RegExp]> = [
    [{ cidrs: ['10.0.0.0/16', '10.0.4.0/24'] }, /^Invalid --cluster-pool-ipv4-cidr "10\.0\.4\.0\/24": overlaps 10\.0\.0\.0\/16 \(cluster CIDRs must not overlap\)$/],
    [{ cidrs: ['10.0.0.0/16', '10.1.0.0/25'], maskSize: 24 }, /^Invalid --cluster-pool-ipv4-mask-size 24: a \/24 node CIDR does not fit in --cluster-pool-ipv4-cidr 10\.1\.0\.0\/25/],
    [{ cidr: '10.0.0/8' }, /^Invalid --cluster-pool-ipv4-cidr "10\.0\.0\/8": expected an IPv4 CIDR such as 10\.0\.0\.0\/8$/],
    [{ cidr: 'fd00::/8' }, /^Invalid --cluster-pool-ipv4-cidr "fd00::\/8"/],
    [{ cidr: '10.0.0.300/8' }, /^Invalid --cluster-pool-ipv4-cidr "10\.0\.0\.300\/8": .*"300" is not a number 0-255/],
    [{ cidr: '10.0.0.0/33' }, /^Invalid --cluster-pool-ipv4-cidr "10\.0\.0\.0\/33": prefix length 33 is above 32$/],
    [{ cidr: '10.1.0.0/8' }, /^Invalid --cluster-pool-ipv4-cidr "10\.1\.0\.0\/8": host bits are set \(the network would be 10\.0\.0\.0\/8\)$/],
    [{ maskSize: 'x' }, /^Invalid --cluster-pool-ipv4-mask-size "x": expected a prefix length such as 24$/],
    [{ maskSize: 24.5 }, /^Invalid --cluster-pool-ipv4-mask-size "24\.5"/],
    [{ maskSize: 31 }, /^Invalid --cluster-pool-ipv4-mask-size 31: node CIDRs must be \/30 or larger/],
    [{ cidr: '10.0.0.0/16', maskSize: 8 }, /^Invalid --cluster-pool-ipv4-mask-size 8: a \/8 node CIDR does not fit in --cluster-pool-ipv4-cidr 10\.0\.0\.0\/16 \(the mask size must be at least 16\)$/],
  ];
  for (const [input, re] of cases) {
    assert.throws(() => validatePoolConfig(input), expectCode('TENDRIL_ERR_INVALID_CONFIG', re), JSON.stringify(input));
  }
});

test('several cluster CIDRs: carved in flag order, every node CIDR inside one of them, never twice', () => {
  const p = ClusterPool.create({ cidrs: ['10.0.0.0/23', '192.168.50.0/24'], maskSize: 24 });
  assert.equal(p.capacity, 3);
  assert.deepEqual(p.assign('a', T0), { cidr: '10.0.0.0/24', source: 'new' });
  assert.deepEqual(p.assign('b', T0), { cidr: '10.0.1.0/24', source: 'new' });
  assert.deepEqual(p.assign('c', T0), { cidr: '192.168.50.0/24', source: 'new' });
  assert.throws(() => p.assign('d', T0), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED', /^cluster pool 10\.0\.0\.0\/23, 192\.168\.50\.0\/24 with mask \/24 is exhausted: 3\/3/));
  assert.ok(p.holds('192.168.50.0/24') && !p.holds('192.168.51.0/24'));
});

test('grow() gives a node more CIDRs, handBack() frees an extra at once, release() holds them all', () => {
  const p = ClusterPool.create({ cidr: '10.0.0.0/26', maskSize: 28 });
  p.assign('a', T0);
  p.assign('b', T0);
  assert.deepEqual(p.grow('a', 2, T0), [{ cidr: '10.0.0.32/28', source: 'new' }]);
  assert.deepEqual(p.grow('a', 2, T0), [], 'growing to what it has is a no-op');
  assert.deepEqual(p.cidrsOf('a'), ['10.0.0.0/28', '10.0.0.32/28']);
  assert.equal(p.cidrOf('a'), '10.0.0.0/28', 'the first stays the primary');
  // One left: a asks for two more, gets one and keeps it; the next grow throws.
  assert.deepEqual(p.grow('a', 4, T0), [{ cidr: '10.0.0.48/28', source: 'new' }]);
  assert.throws(() => p.grow('a', 4, T0), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED'));
  assert.throws(() => p.grow('b', 2, T0), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED'));
  // Hand-back: only an extra the node holds; the primary never.
  assert.equal(p.handBack('a', '10.0.0.0/28'), false);
  assert.equal(p.handBack('b', '10.0.0.32/28'), false);
  assert.equal(p.handBack('a', '10.0.0.32/28'), true);
  assert.equal(p.handBack('a', '10.0.0.32/28'), false, 'twice is a no-op');
  assert.deepEqual(p.grow('b', 2, T0), [{ cidr: '10.0.0.32/28', source: 'new' }]);
  // A departing node's CIDRs are all held, and all come back with it.
  assert.deepEqual(p.release('a', T0, 1000), ['10.0.0.0/28', '10.0.0.48/28']);
  assert.throws(() => p.assign('c', T0 + 999), expectCode('TENDRIL_ERR_IPAM_EXHAUSTED'));
  assert.deepEqual(p.assign('a', T0 + 10), { cidr: '10.0.0.0/28', source: 'returned' });
  assert.deepEqual(p.cidrsOf('a'), ['10.0.0.0/28', '10.0.0.48/28']);
  const q = ClusterPool.fromState(JSON.parse(JSON.stringify(p.toState())));
  assert.deepEqual(q.toState(), p.toState(), 'multi-CIDR state round-trips');
});

test('grow()/handBack() over random sequences never hand a CIDR to two nodes, also across restarts', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const rand = rng(seed);
    let p = ClusterPool.create({ cidrs: ['172.16.5.0/25', '172.16.9.0/26'], maskSize: 29 });
    let now = T0;
    for (let step = 0; step < 400; step++) {
      now += Math.floor(rand() * 40);
      const node = `n${Math.floor(rand() * 12)}`;
      const r = rand();
      try {
        if (r < 0.4) p.grow(node, 1 + Math.floor(rand() * 4), now);
        else if (r < 0.6) {
          const extras = p.cidrsOf(node).slice(1);
          if (extras.length > 0) assert.ok(p.handBack(node, extras[Math.floor(rand() * extras.length)]!));
        } else if (r < 0.75) p.release(node, now, Math.floor(rand() * 200));
        else if (r < 0.85) p.expire(now);
        else p = ClusterPool.fromState(JSON.parse(JSON.stringify(p.toState()))); // an operator restart
      } catch (err) {
        assert.ok(err instanceof OperatorError && err.code === 'TENDRIL_ERR_IPAM_EXHAUSTED', String(err));
        assert.equal(p.usage(now).free, 0, `seed ${seed}: exhausted with free CIDRs`);
      }
      const st = p.toState();
      const all = Object.values(st.assigned).flat();
      assert.equal(new Set(all).size, all.length, `seed ${seed} step ${step}: a CIDR is held twice`);
      for (const [c, h] of Object.entries(st.releasing)) if (Date.parse(h.until) > now) assert.ok(!all.includes(c), `seed ${seed}: held ${c} handed out`);
      for (const c of all) assert.ok(p.holds(c));
    }
  }
});

test('fromState() reads the one-CIDR state of earlier versions; withConfig() adds cluster CIDRs, refuses to drop used ones', () => {
  const old = { cidr: '10.0.0.0/16', maskSize: 24, assigned: { a: '10.0.0.0/24', b: '10.0.1.0/24' }, releasing: {} };
  const p = ClusterPool.fromState(old);
  assert.deepEqual(p.toState(), { cidrs: ['10.0.0.0/16'], maskSize: 24, assigned: { a: ['10.0.0.0/24'], b: ['10.0.1.0/24'] }, releasing: {} });
  const wider = p.withConfig({ cidrs: ['10.0.0.0/16', '10.5.0.0/16'], maskSize: 24 });
  assert.ok(wider instanceof ClusterPool);
  assert.deepEqual(wider.cidrsOf('b'), ['10.0.1.0/24']);
  assert.equal(wider.capacity, 512);
  assert.deepEqual(p.withConfig({ cidrs: ['10.5.0.0/16'], maskSize: 24 }), { problem: 'node "a" holds 10.0.0.0/24, outside 10.5.0.0/16' });
  assert.deepEqual(p.withConfig({ cidrs: ['10.0.0.0/16'], maskSize: 25 }), { problem: 'mask /24 differs' });
});
