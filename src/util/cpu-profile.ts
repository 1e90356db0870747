// GET /v1/debug/cpu-profile?ms=N: a V8 CPU profile of the process over the next N ms (the .cpuprofile JSON that
// Chrome DevTools and speedscope open), as Cilium's agent serves pprof: where the event loop's time goes, e.g.
// during a burst of CNI ADDs. A sample taken while the thread waits in a system call (a netlink request blocked on
// RTNL) is charged to the JavaScript function that made the call. One profile at a time.
import { Session } from 'node:inspector/promises';
import { HttpError } from './api.js';

export const MAX_PROFILE_MS = 120_000;
let running = false;

export async function cpuProfile(msText: string | null, intervalUsText: string | null): Promise<unknown> {
  const ms = Number(msText ?? '5000');
  const intervalUs = Number(intervalUsText ?? '1000');
  if (!Number.isInteger(ms) || ms < 1 || ms > MAX_PROFILE_MS) throw new HttpError(400, `Invalid ms "${msText}": expected 1-${MAX_PROFILE_MS}`, 'TENDRIL_ERR_INVALID_REQUEST');
  if (!Number.isInteger(intervalUs) || intervalUs < 100 || intervalUs > 100_000) throw new HttpError(400, `Invalid interval-us "${intervalUsText}": expected 100-100000`, 'TENDRIL_ERR_INVALID_REQUEST');
  if (running) throw new HttpError(409, 'A CPU profile is already being taken: try again when it is done', 'TENDRIL_ERR_BUSY');
  running = true;
  const session = new Session();
  try {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: intervalUs });
    await session.post('Profiler.start');
    await new Promise((r) => setTimeout(r, ms));
    const { profile } = await session.post('Profiler.stop');
    return profile;
  } finally {
    session.disconnect();
    running = false;
  }
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/**
 * Time (ms) per function ("name file:line") of a profile, by inclusive time (the function or anything it called was
 * running, or it waited in a system call), largest first, with self time: the quick look a report needs.
 */
export function profileHotspots(profile: { nodes: ProfileNode[]; samples?: number[]; timeDeltas?: number[] }, top = 20): Array<{ fn: string; ms: number; selfMs: number }> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode): string => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
  };
  const total = new Map<string, number>();
  const self = new Map<string, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const ms = (deltas[i + 1] ?? deltas[i] ?? 0) / 1000;
    let n = byId.get(samples[i]!);
    if (!n) continue;
    self.set(keyOf(n), (self.get(keyOf(n)) ?? 0) + ms);
    const seen = new Set<string>();
    while (n) {
      const k = keyOf(n);
      if (!seen.has(k)) {
        seen.add(k);
        total.set(k, (total.get(k) ?? 0) + ms);
      }
      const up = parent.get(n.id);
      n = up === undefined ? undefined : byId.get(up);
    }
  }
  return [...total]
    .filter(([k]) => !k.startsWith('(root)'))
    .map(([fn, ms]) => ({ fn, ms: Math.round(ms), selfMs: Math.round(self.get(fn) ?? 0) }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, top);
}
