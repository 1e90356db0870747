// Process helpers of the privileged tests: run a command, start a server and wait until it says it is ready.
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; never rejects (a failure is a non-zero code). */
export function exec(argv: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** `argv` run inside a named network namespace. */
export function inNs(ns: string, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `cond` every 20 ms until it holds; fails once `ms` (one generous deadline, not a bound on how fast things
 * should be) has passed. Resolves with how long it took, for diagnostics.
 */
export async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
  return Date.now() - t0;
}

/** Every process startProcess() started and that still runs (stop them in after()). */
export const children = new Set<ChildProcess>();

/** Starts a long-running process and resolves once `ready` matches its stdout or stderr. */
export function startProcess(argv: string[], ready: RegExp): Promise<{ proc: ChildProcess; out: () => string }> {
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} not ready after 30 s: ${text}`)), 30_000);
    const onData = (d: Buffer): void => {
      text += d.toString();
      if (ready.test(text)) {
        clearTimeout(timer);
        resolve({ proc, out: () => text });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')} exited with ${String(code)} before it was ready: ${text}`));
    });
  });
}

export function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGINT');
    setTimeout(() => proc.kill('SIGKILL'), 2000).unref();
  });
}

/**
 * Polls `fn` every 100 ms until it gives a value (anything but undefined or false) and resolves with it; fails once
 * `ms` (one generous deadline) has passed.
 */
export async function untilValue<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}
