// Lab processes: start detached inside a namespace (nsenter), find them by their arguments, stop them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { netnsPath } from './paths.js';

/** Starts `argv` inside netns `ns` (network namespace only: bpffs and /var/run stay shared), detached. */
export function spawnInNetns(ns: string, argv: string[], logFile: string): number {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const fd = fs.openSync(logFile, 'a');
  try {
    const child = spawn('nsenter', [`--net=${netnsPath(ns)}`, '--', ...argv], {
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

/** PIDs of processes whose command line mentions `needle` (e.g. the lab's directory). */
export function findProcesses(needle: string): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmd.some((a) => a.includes(needle))) out.push(Number(entry));
    } catch {
      // exited meanwhile
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
