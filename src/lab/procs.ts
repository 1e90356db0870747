// Lab processes: start detached inside a namespace (nsenter), find what runs inside a namespace, stop them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { netnsPath } from './paths.js';
import { inNetnsArgv } from './cgroups.js';

/** Starts `argv` inside netns `ns` (network namespace only: bpffs and /var/run stay shared), detached. */
export function spawnInNetns(ns: string, argv: string[], logFile: string): number {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const fd = fs.openSync(logFile, 'a');
  try {
    const [cmd, args] = inNetnsArgv(netnsPath(ns), ns, argv);
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    child.unref();
    if (child.pid === undefined) throw new Error(`Cannot start ${argv[0]} in netns ${ns}`);
    return child.pid;
  } finally {
    fs.closeSync(fd);
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The kernel's start time of @pid (clock ticks since boot, /proc/<pid>/stat field 22); undefined once it is gone. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may itself contain spaces or parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The inode of a named network namespace (as /proc/<pid>/ns/net shows it), or undefined if it is none. */
export function netnsInode(ns: string): number | undefined {
  try {
    const st = fs.statSync(netnsPath(ns));
    return st.dev === fs.statSync('/proc/self/ns/net').dev ? st.ino : undefined;
  } catch {
    return undefined;
  }
}

/** PIDs of every process (but this one) whose network namespace is one of @inodes: what runs inside them. */
export function processesInNetns(inodes: Iterable<number>): number[] {
  const want = new Set(inodes);
  if (want.size === 0) return [];
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const m = /^net:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${entry}/ns/net`));
      if (m && want.has(Number(m[1]))) out.push(Number(entry));
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return out;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when all are gone. */
export async function stopProcesses(pids: number[], graceMs = 3000): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
  for (const pid of pids.filter(alive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const hard = Date.now() + 2000;
  while (pids.some(alive) && Date.now() < hard) await sleep(20);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Ends @pids and every process running inside the named namespaces (a daemon started with `lab exec`, a server's
 * children), again until none is left, since one may fork while the others stop. Returns how many it ended.
 */
export async function stopProcessesIn(namespaces: string[], pids: number[] = []): Promise<number> {
  const inodes = namespaces.map(netnsInode).filter((i): i is number => i !== undefined);
  const ended = new Set<number>();
  let batch = [...new Set([...pids.filter(alive), ...processesInNetns(inodes)])];
  for (let round = 0; round < 5 && batch.length > 0; round++) {
    await stopProcesses(batch);
    for (const pid of batch) ended.add(pid);
    batch = processesInNetns(inodes);
  }
  return ended.size;
}
