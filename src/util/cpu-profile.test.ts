import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuProfile, profileHotspots } from './cpu-profile.js';

function spinForTheProfile(ms: number): number {
  const until = performance.now() + ms;
  let n = 0;
  while (performance.now() < until) n++;
  return n;
}

test('cpuProfile samples the process; profileHotspots charges the busy function its self time', async () => {
  const taking = cpuProfile('400', '1000');
  await assert.rejects(cpuProfile('100', null), { status: 409 });
  await new Promise((r) => setTimeout(r, 50));
  spinForTheProfile(250);
  const profile = (await taking) as Parameters<typeof profileHotspots>[0];
  const hot = profileHotspots(profile, 5);
  const spin = hot.find((h) => h.fn.startsWith('spinForTheProfile '));
  assert.ok(spin, JSON.stringify(hot));
  assert.ok(spin.ms >= 150, JSON.stringify(spin));
});

test('cpuProfile refuses bad durations and intervals', async () => {
  for (const [ms, iv] of [['0', null], ['abc', null], ['999999', null], ['100', '5']] as const) {
    await assert.rejects(cpuProfile(ms, iv), { status: 400, code: 'TENDRIL_ERR_INVALID_REQUEST' });
  }
});
