// The node proxy's CPU priority. It is the serial hop of every L7-policed request: each request wakes it twice
// (the client's bytes, the server's answer), and on a busy node each wake-up waits for a CPU behind the agent's
// control-plane work and the pods' batch work. A lower nice value gives it a larger CFS weight, so it runs soon
// after its socket becomes readable (the tail at 1,000 req/s, bench/l7-tail.ts). The proxy does little per request,
// so the weight costs the others little while it is idle.
import fs from 'node:fs';
import os from 'node:os';

/** The proxy's nice value (the agent runs as root: raising priority needs CAP_SYS_NICE). */
export const PROXY_NICE = -10;

/**
 * Sets the nice value of every thread of a process (Linux's setpriority(PRIO_PROCESS) takes one thread id: the
 * V8 and libuv threads started before the call keep theirs otherwise). Returns how many threads were set; throws
 * the first error when none could be.
 */
export function setProcessNice(pid: number, nice: number): number {
  let tids: number[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    tids = [pid];
  }
  let set = 0;
  let first: unknown;
  for (const tid of tids) {
    try {
      os.setPriority(tid, nice);
      set++;
    } catch (err) {
      first ??= err;
    }
  }
  if (set === 0 && first !== undefined) throw first;
  return set;
}
