// Process helpers of the bench: run a command (optionally inside a namespace), start servers we can stop by pid.
import { spawn, spawnSync } from 'node:child_process';
import { netnsPath } from '../src/lab/paths.js';
import { inNetnsArgv } from '../src/lab/cgroups.js';

export class BenchError extends Error {
  readonly code = 'TENDRIL_ERR_BENCH';
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BenchError';
  }
}

export interface Done {
  status: number;
  stdout: string;
  stderr: string;
}

/** argv prefixed so that it runs inside network namespace `ns` (nsenter execs: the pid stays the command's). */
export function inNs(ns: string, argv: string[]): string[] {
  // In a lab with socket LB, a namespace's processes run in its cgroup (src/lab/cgroups.ts); elsewhere plain nsenter.
  const [cmd, args] = inNetnsArgv(netnsPath(ns), ns, argv);
  return [cmd, ...args];
}

function describe(argv: string[]): string {
  return argv.map((a) => (/^[\w./:=@,+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Runs a short command to completion; throws with its stderr when it fails. */
export function run(argv: string[], o: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; allowFail?: boolean } = {}): Done {
  const [cmd, ...args] = argv;
  if (!cmd) throw new BenchError('Nothing to run');
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    timeout: o.timeoutMs ?? 60_000,
    ...(o.input !== undefined ? { input: o.input } : {}),
    ...(o.env !== undefined ? { env: o.env } : {}),
  });
  const done: Done = { status: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  if (r.error) throw new BenchError(`Cannot run ${describe(argv)}: ${r.error.message}`, { cause: r.error });
  if (done.status !== 0 && !o.allowFail) {
    throw new BenchError(`Command failed (exit ${done.status}): ${describe(argv)}: ${(done.stderr || done.stdout).trim()}`);
  }
  return done;
}

/** Every child started by start() that has not exited: the cleanup path kills exactly these. */
const live = new Map<number, string>();

export interface Started {
  pid: number;
  /** Resolves when the process exits (never rejects). */
  exited: Promise<Done>;
}

/**
 * Starts a long-running command without blocking the event loop (signals stay deliverable meanwhile).
 * `onStdout`: stdout goes there chunk by chunk instead of being kept (a follower prints more than memory holds).
 */
export function start(argv: string[], o: { env?: NodeJS.ProcessEnv; onStdout?: (chunk: Buffer) => void } = {}): Started {
  const [cmd, ...args] = argv;
  if (!cmd) throw new BenchError('Nothing to start');
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(o.env !== undefined ? { env: o.env } : {}) });
  if (child.pid === undefined) throw new BenchError(`Cannot start ${describe(argv)}`);
  const pid = child.pid;
  live.set(pid, describe(argv));
  let stdout = '';
  let stderr = '';
  const onStdout = o.onStdout;
  if (onStdout) child.stdout.on('data', (d: Buffer) => onStdout(d));
  else child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<Done>((resolve) => {
    child.on('error', (err) => {
      live.delete(pid);
      resolve({ status: 127, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code, signal) => {
      live.delete(pid);
      resolve({ status: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
  return { pid, exited };
}

/** Runs a command to completion asynchronously; throws on failure or after timeoutMs (the command is killed). */
export async function runAsync(argv: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Done> {
  const p = start(argv, o);
  const timer = setTimeout(() => kill(p.pid), o.timeoutMs);
  const done = await p.exited;
  clearTimeout(timer);
  if (done.status !== 0) {
    throw new BenchError(`Command failed (exit ${done.status}): ${describe(argv)}: ${(done.stderr || done.stdout).trim()}`);
  }
  return done;
}

export function kill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Kills every child still running (cleanup after a failure or a signal). */
export function killAll(): void {
  for (const pid of live.keys()) kill(pid);
  live.clear();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
