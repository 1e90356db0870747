// CPU time per request of each process on an L7 bench request's way (client, both agents, the node proxy, the
// server), from /proc/PID/stat ticks taken around a load run: on a small shared box every µs a process spends per
// request is lost throughput, so the bench shows where it goes.
import fs from 'node:fs';

/** The processes the bench follows (a missing one, e.g. no proxy under an L4-only allow, is left out). */
export type CpuRole = 'client' | 'client agent' | 'server agent' | 'proxy' | 'server';
export const CPU_ROLES: readonly CpuRole[] = ['client', 'client agent', 'server agent', 'proxy', 'server'];

const TICK_US = 1e6 / 100; // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).

/** utime + stime of a process (all its threads) in µs; undefined when it is gone. */
export function cpuUs(pid: number): number | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // Fields after the command (which may hold spaces and parentheses): state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_US;
}

/** The node proxy forked by an agent (its child running proxy/main.js), if any. */
export function proxyPidOf(agentPid: number): number | undefined {
  let children: string[];
  try {
    children = fs.readFileSync(`/proc/${agentPid}/task/${agentPid}/children`, 'latin1').trim().split(/\s+/).filter(Boolean);
  } catch {
    return undefined;
  }
  for (const c of children) {
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${c}/cmdline`, 'latin1');
    } catch {
      continue; // gone meanwhile
    }
    if (cmd.includes('proxy/main.js')) return Number(c);
  }
  return undefined;
}

/** CPU µs of each role's process, read now. */
export function cpuSnapshot(pids: Partial<Record<CpuRole, number>>): Partial<Record<CpuRole, number>> {
  const out: Partial<Record<CpuRole, number>> = {};
  for (const [role, pid] of Object.entries(pids) as [CpuRole, number][]) {
    const us = cpuUs(pid);
    if (us !== undefined) out[role] = us;
  }
  return out;
}

/** µs per request of each role between two snapshots (roles in both only). */
export function perRequest(before: Partial<Record<CpuRole, number>>, after: Partial<Record<CpuRole, number>>, requests: number): Partial<Record<CpuRole, number>> {
  const out: Partial<Record<CpuRole, number>> = {};
  if (requests <= 0) return out;
  for (const role of CPU_ROLES) {
    const a = before[role];
    const b = after[role];
    if (a !== undefined && b !== undefined) out[role] = (b - a) / requests;
  }
  return out;
}
