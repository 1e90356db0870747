// Unit tests of the observe phase's tables, verdicts and options (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_RATES, parseRates } from './observe.js';
import {
  OBSERVE_IDLE,
  OBSERVE_ORDER,
  OBSERVE_WATCHED,
  dpRows,
  followSamplesTable,
  generatorSaturated,
  observeTable,
  observeVerdicts,
  rateSummary,
  rateTable,
  undelivered,
  type DpSample,
  type FollowCount,
  type RateLevel,
} from './report.js';

function sample(round: number, scenario: string, gbps: number, tps: number, tps1: number): DpSample {
  const m = <T>(value: T) => ({ value, foreignPct: 0, attempts: 1 });
  return { round, scenario, gbps: m(gbps), rr: m({ tps, p50us: 100, p99us: 200 }), rr1: m({ tps: tps1, p50us: 20, p99us: 40 }) };
}

function level(offered: number, over: Partial<RateLevel> = {}): RateLevel {
  const conns = (offered || 5000) * 10;
  return {
    offered,
    clients: 2,
    secs: 10,
    conns,
    connRate: conns / 10,
    read: conns * 10,
    lost: 0,
    rateLimited: 0,
    skipped: 0,
    seen: conns * 10,
    flows: conns * 10,
    dropped: 0,
    lagS: 0.1,
    agentCpuPct: 30,
    relayCpuPct: 20,
    observeCpuPct: 20,
    boxBusyPct: 50,
    foreignPct: 0,
    ...over,
  };
}

test('parseRates() takes ascending connection rates with "max" last', () => {
  assert.deepEqual(parseRates('100, 500,max'), [100, 500, 0]);
  assert.deepEqual(parseRates('2000'), [2000]);
  assert.throws(() => parseRates('500,100'), /rates must increase/);
  assert.throws(() => parseRates('max,100'), /"max" can only come last/);
  assert.throws(() => parseRates('10,abc'), /Invalid --observe-rates entry "abc"/);
  assert.throws(() => parseRates('0'), /positive integer/);
  assert.deepEqual(parseRates(DEFAULT_RATES.map((r) => r || 'max').join(',')), [...DEFAULT_RATES]);
});

test('observeTable() puts the observed medians against idle and shows what the follower got', () => {
  const rows = dpRows(
    [sample(1, OBSERVE_IDLE, 20, 1000, 50000), sample(1, OBSERVE_WATCHED, 19, 1100, 45000), sample(2, OBSERVE_WATCHED, 21, 900, 47000), sample(2, OBSERVE_IDLE, 20, 1000, 50000)],
    OBSERVE_ORDER,
  );
  const follows: FollowCount[] = [
    { round: 1, test: 'stream', flows: 12, lost: 0 },
    { round: 1, test: 'rr', flows: 8, lost: 1 },
    { round: 1, test: 'rr1', flows: 6, lost: 0 },
    { round: 2, test: 'stream', flows: 14, lost: 0 },
    { round: 2, test: 'rr', flows: 10, lost: 0 },
    { round: 2, test: 'rr1', flows: 8, lost: 2 },
  ];
  const t = observeTable(rows, follows).split('\n');
  assert.equal(t.length, 4);
  assert.match(t[2]!, /^\| tendril-idle \| 20\.00 \| 1000 \| .* \| baseline \| - \| - \|$/);
  assert.match(t[3]!, /^\| tendril-observed \| 20\.00 \| 1000 \| 100\.0 \/ 200\.0 \| 46000 \| .* \| 1\.00 \/ 1\.00 \/ 0\.92 \| 13 \/ 9 \/ 7 \| 3 \|$/);
  assert.match(followSamplesTable(follows), /\| 2 \| rr1 \| 8 \| 2 \|/);
});

test('observeVerdicts() holds stream and both RRs of observed against 0.95x idle', () => {
  const rows = dpRows([sample(1, OBSERVE_IDLE, 20, 1000, 50000), sample(1, OBSERVE_WATCHED, 19.5, 940, 48000)], OBSERVE_ORDER);
  const v = observeVerdicts(rows);
  assert.deepEqual(v.map((x) => [x.met, x.ratio.toFixed(3)]), [
    [true, '0.975'],
    [false, '0.940'],
    [true, '0.960'],
  ]);
  assert.match(v[0]!.text, /^- MET: same-node TCP throughput with `tendril observe -f` running vs idle: 19\.50 Gbit\/s vs 20\.00 Gbit\/s = 0\.97x/);
  assert.match(v[1]!.text, /NOT MET: .* short by 0\.01x/);
  assert.deepEqual(observeVerdicts([]), []);
  const onlyIdle = observeVerdicts(dpRows([sample(1, OBSERVE_IDLE, 20, 1000, 50000)], OBSERVE_ORDER));
  assert.ok(onlyIdle.every((x) => x.text.startsWith('- NOT EVALUATED')));
});

test('rateTable() shows made/decoded/served per second and names the kind of loss', () => {
  const levels = [
    level(100),
    level(1000, { flows: 90_000, dropped: 9_000, seen: 100_000 }),
    level(4000, { read: 300_000, lost: 100_000, seen: 300_000, flows: 5_000, dropped: 290_000, connRate: 3990 }),
    level(0, { connRate: 9000 }),
  ];
  const t = rateTable(levels).split('\n');
  assert.equal(t.length, 6);
  assert.match(t[2]!, /^\| 100 \| 100 \| 1000 \| 10\.0 \| 1000 \| 0 \/ 0 \| 1000 \| 0 \| 0 \| .* \| no loss \|$/);
  assert.match(t[3]!, /\| 1000 \| 1000 \| 10000 \| .* \| 9000 \| 9000 \| 1000 \| .* \| LOSS \(dropped for follower, not delivered\) \|$/);
  assert.match(t[4]!, /^\| 4000 \| 3990 \| 40000 \| 10\.0 \| 30000 \| 100000 \/ 0 \| 500 \| 290000 \| 5000 \| .* \| LOSS \(ring full, dropped for follower, not delivered\) \|$/);
  assert.match(t[5]!, /^\| max \| 9000 \| .* \| no loss; generator at its maximum \|$/);
});

test('undelivered() and generatorSaturated()', () => {
  assert.equal(undelivered(level(100, { seen: 1000, flows: 900, dropped: 50 })), 50);
  assert.equal(undelivered(level(100, { seen: 1000, flows: 1002, dropped: 0 })), 0, 'a flow from before the window is not negative loss');
  assert.equal(generatorSaturated(level(1000, { connRate: 950 })), false);
  assert.equal(generatorSaturated(level(1000, { connRate: 850 })), true);
  assert.equal(generatorSaturated(level(0)), true, '"max" is the generator at its limit by definition');
});

test('rateSummary() gives the agent\'s and the follower\'s loss-free rates and where loss began', () => {
  const s = rateSummary([
    level(100),
    level(500, { flows: 40_000, dropped: 10_000 }),
    level(2000, { lost: 5_000, read: 195_000, seen: 195_000, flows: 1_000, dropped: 194_000 }),
  ]);
  assert.equal(s.length, 2);
  assert.equal(s[0], '- MEASURED: agent decodes without loss at least 5000 events/s (500 conn/s); ring full at 20000 events/s made: 19500/s decoded, 5000 lost in 10 s (2000 conn/s)');
  assert.equal(
    s[1],
    '- MEASURED: served to `observe -f` through the relay without drops at least 1000 flows/s (100 conn/s); drops from 5000 events/s: 4000 flows/s delivered, 10000 dropped, 0 not delivered (500 conn/s)',
  );
  const clean = rateSummary([level(100), level(0, { connRate: 8000 })]);
  assert.match(clean[0]!, /; no loss up to the generator's maximum on this box \(8000 conn\/s\)$/);
  assert.match(clean[1]!, /without drops at least 50000 flows\/s \(8000 conn\/s\)$/);
  assert.deepEqual(rateSummary([]), []);
});
