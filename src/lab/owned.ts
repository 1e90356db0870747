// What a lab made, and nothing else: every namespace is recorded before it is created and every process as soon as
// it is started, so `lab down` removes exactly those — never another lab's, never a process that merely mentions
// the lab's directory.
import fs from 'node:fs';
import { labPaths } from './paths.js';
import { processStart } from './procs.js';

export type Owned = { kind: 'netns'; name: string } | { kind: 'pid'; pid: number; start: string };

function record(lab: string, entry: Owned): void {
  const p = labPaths(lab);
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  // One short line per append (O_APPEND): concurrent lab commands never interleave within an entry.
  fs.appendFileSync(p.ownedFile, JSON.stringify(entry) + '\n', { mode: 0o600 });
}

/** Call before creating namespace @name (or before starting what creates it). */
export function ownNetns(lab: string, name: string): void {
  record(lab, { kind: 'netns', name });
}

/** Call right after starting @pid; its start time tells it apart from a later process reusing the number. */
export function ownPid(lab: string, pid: number): number {
  const start = processStart(pid);
  if (start !== undefined) record(lab, { kind: 'pid', pid, start });
  return pid;
}

/** Everything the lab recorded, oldest first, each once (its last record kept). */
export function ownedBy(lab: string): Owned[] {
  let text = '';
  try {
    text = fs.readFileSync(labPaths(lab).ownedFile, 'utf8');
  } catch {
    return [];
  }
  const seen = new Map<string, Owned>();
  for (const line of text.split('\n')) {
    let e: Owned;
    try {
      e = JSON.parse(line) as Owned;
    } catch {
      continue; // empty last line, or a line cut short by a crash
    }
    const key = e.kind === 'netns' ? `netns ${e.name}` : `pid ${e.pid} ${e.start}`;
    seen.delete(key);
    seen.set(key, e);
  }
  return [...seen.values()];
}

/** Recorded processes that still run as the very process recorded. */
export function ownedPids(lab: string): number[] {
  return ownedBy(lab).flatMap((e) => (e.kind === 'pid' && processStart(e.pid) === e.start ? [e.pid] : []));
}

export function hasLedger(lab: string): boolean {
  return fs.existsSync(labPaths(lab).ownedFile);
}
