import { test } from 'node:test';
import assert from 'node:assert/strict';
import { l7Report, type L7Sample } from './l7.js';

const r = (rps: number, p50ms: number, p99ms: number, errors = 0) => ({ mode: '', requests: 1, errors, secs: 1, rps, p50ms, p99ms });

test('l7Report(): medians, L7/L4 ratios and the targets', () => {
  const samples: L7Sample[] = [];
  for (const round of [1, 2, 3]) {
    samples.push({ policy: 'l4', test: 'keepalive', round, result: r(10_000 + round, 0.5, 1) });
    samples.push({ policy: 'l7', test: 'keepalive', round, result: r(6_000, 1, 2) });
    samples.push({ policy: 'l4', test: 'close', round, result: r(4_000, 1, 2) });
    samples.push({ policy: 'l7', test: 'close', round, result: r(1_000, 4, 8) });
    samples.push({ policy: 'l4', test: 'rate', round, result: r(1000, 0.3, 0.8) });
    samples.push({ policy: 'l7', test: 'rate', round, result: r(1000, 0.6, round === 2 ? 9 : 1.5, 1) });
  }
  const text = l7Report(samples, { secs: 5, rounds: 3 }).join('\n');
  assert.match(text, /\| keep-alive, req\/s \| 10002 \| 6000 \| 0\.60x \| >= 0\.5x: met \|/);
  assert.match(text, /\| one connection per request, req\/s \| 4000 \| 1000 \| 0\.25x \| >= 0\.35x: NOT met \|/);
  assert.match(text, /\| 1000 req\/s offered: p99, ms \| 0\.80 \| 1\.50 \| \+0\.70 ms \| <= 1 ms added: met \|/);
  assert.match(text, /- 3 failed request\(s\)/);
});

test('l7Report(): an L7 p99 below the L4 one reads as a negative difference, not "+-"', () => {
  const samples: L7Sample[] = [];
  for (const round of [1, 2, 3]) {
    for (const t of ['keepalive', 'close'] as const) {
      samples.push({ policy: 'l4', test: t, round, result: r(1000, 1, 2) });
      samples.push({ policy: 'l7', test: t, round, result: r(900, 1, 2) });
    }
    samples.push({ policy: 'l4', test: 'rate', round, result: r(1000, 0.5, 3) });
    samples.push({ policy: 'l7', test: 'rate', round, result: r(1000, 0.6, 1.5) });
  }
  const text = l7Report(samples, { secs: 5, rounds: 3 }).join('\n');
  assert.match(text, /\| 1000 req\/s offered: p99, ms \| 3\.00 \| 1\.50 \| -1\.50 ms \|/);
  assert.doesNotMatch(text, /\+-/);
});

test('l7Report(): CPU per request by process and the flows each node made per request', () => {
  const samples: L7Sample[] = [];
  for (const round of [1, 2, 3]) {
    for (const t of ['keepalive', 'close', 'rate'] as const) {
      samples.push({ policy: 'l4', test: t, round, result: r(1000, 1, 2), cpu: { client: 60, 'server agent': 2 }, flows: { client: 0, server: t === 'close' ? 4 : 0 } });
      samples.push({ policy: 'l7', test: t, round, result: r(900, 1, 2), cpu: { client: 70, 'server agent': 7, proxy: 90 }, flows: { client: 0, server: t === 'close' ? 9 + round : 2 } });
    }
  }
  const text = l7Report(samples, { secs: 5, rounds: 3 }).join('\n');
  assert.match(text, /\| proxy \| - \| 90 \| - \| 90 \|/);
  assert.match(text, /\| sum \| 62 \| 167 \| 62 \| 167 \|/);
  assert.match(text, /\| flows per request, server node \| 0\.0 \| 2\.0 \| 4\.0 \| 11\.0 \|/);
});
