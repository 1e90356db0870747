// Network namespace handles: open, create/delete like `ip netns`, and enter-run-leave on the current thread.
import fs from 'node:fs';
import path from 'node:path';
import * as libc from '../native/libc.js';
import { KernelError, errnoText } from '../errors.js';

export const DEFAULT_NETNS_DIR = '/var/run/netns';
// setns() applies to the calling thread only; JS runs on Node's main thread, so that is the thread we move.
const THREAD_NS = '/proc/thread-self/ns/net';

function wrap(err: unknown, message: string): KernelError {
  // Already explained in this module's terms (e.g. a failed return to the original namespace): keep it.
  if (err instanceof KernelError && err.code === 'TENDRIL_ERR_NETNS') return err;
  const errno = err instanceof KernelError ? err.errno : undefined;
  const detail = errno !== undefined ? errnoText(errno) : err instanceof Error ? err.message : String(err);
  return new KernelError('TENDRIL_ERR_NETNS', `${message}: ${detail}`, {
    ...(errno !== undefined ? { errno } : {}),
    cause: err,
  });
}

function isKernelErrno(err: unknown, ...names: string[]): boolean {
  return err instanceof KernelError && names.some((n) => err.is(n));
}

function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new KernelError('TENDRIL_ERR_NETNS', `Invalid network namespace name "${name}"`);
  }
}

function openNsFd(p: string): number {
  return libc.open(p, libc.O_RDONLY | libc.O_CLOEXEC);
}

export class Netns {
  readonly path: string;
  readonly fd: number;
  private closed = false;

  private constructor(p: string, fd: number) {
    this.path = p;
    this.fd = fd;
  }

  /** Opens a namespace file, e.g. /var/run/netns/X or /proc/<pid>/ns/net. */
  static open(p: string): Netns {
    let fd: number;
    try {
      fd = openNsFd(p);
    } catch (err) {
      throw wrap(err, `Cannot open network namespace "${p}"`);
    }
    // A stale file left by a failed create opens fine but is no namespace; say so now, not at setns time.
    let type = -1;
    try {
      type = libc.ioctl(fd, libc.NS_GET_NSTYPE);
    } catch {
      /* not an nsfs file: ENOTTY */
    }
    if (type !== libc.CLONE_NEWNET) {
      libc.close(fd);
      throw new KernelError('TENDRIL_ERR_NETNS', `Cannot open network namespace "${p}": not a network namespace`);
    }
    return new Netns(p, fd);
  }

  /** The namespace of the calling (main JS) thread. */
  static current(): Netns {
    return Netns.open(THREAD_NS);
  }

  /**
   * Creates a named namespace like `ip netns add`: the directory becomes a shared mount (so the bind
   * mount propagates to other mount namespaces), a new namespace is unshared on this thread and bind-mounted
   * onto dir/name, and the thread returns to its original namespace.
   */
  static create(name: string, dir = DEFAULT_NETNS_DIR): Netns {
    checkName(name);
    const file = path.join(dir, name);
    const what = `Cannot create network namespace "${name}"`;
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw new KernelError('TENDRIL_ERR_NETNS', `${what}: cannot create "${dir}": ${String(err)}`, { cause: err });
    }
    makeSharedMount(dir, what);
    try {
      libc.close(libc.open(file, libc.O_RDONLY | libc.O_CREAT | libc.O_EXCL | libc.O_CLOEXEC, 0));
    } catch (err) {
      throw wrap(err, what);
    }
    let original: number;
    try {
      original = openNsFd(THREAD_NS);
    } catch (err) {
      fs.rmSync(file, { force: true });
      throw wrap(err, what);
    }
    let failure: unknown;
    try {
      libc.unshare(libc.CLONE_NEWNET);
      try {
        libc.mount(THREAD_NS, file, 'none', libc.MS_BIND);
      } finally {
        restore(original);
      }
    } catch (err) {
      failure = err;
    } finally {
      libc.close(original);
    }
    if (failure !== undefined) {
      fs.rmSync(file, { force: true });
      throw wrap(failure, what);
    }
    return Netns.open(file);
  }

  /** Unmounts and removes dir/name; nothing happens when it is already gone. */
  static delete(name: string, dir = DEFAULT_NETNS_DIR): void {
    checkName(name);
    const file = path.join(dir, name);
    try {
      libc.umount2(file, libc.MNT_DETACH);
    } catch (err) {
      // EINVAL: not a mount point (a stale file); ENOENT: gone already.
      if (!isKernelErrno(err, 'EINVAL', 'ENOENT')) throw wrap(err, `Cannot delete network namespace "${name}"`);
    }
    try {
      fs.unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new KernelError('TENDRIL_ERR_NETNS', `Cannot delete network namespace "${name}": ${String(err)}`, {
          cause: err,
        });
      }
    }
  }

  static exists(name: string, dir = DEFAULT_NETNS_DIR): boolean {
    checkName(name);
    return fs.existsSync(path.join(dir, name));
  }

  /**
   * Runs fn inside this namespace on the current thread and always returns to the previous namespace.
   * fn must be synchronous: anything it awaits would resume in whatever namespace the thread is in by then.
   */
  run<T>(fn: () => T): T {
    this.assertOpen();
    let back: number;
    try {
      back = openNsFd(THREAD_NS);
    } catch (err) {
      throw wrap(err, `Cannot enter network namespace "${this.path}"`);
    }
    let result: T;
    try {
      try {
        libc.setns(this.fd, libc.CLONE_NEWNET);
      } catch (err) {
        throw wrap(err, `Cannot enter network namespace "${this.path}"`);
      }
      try {
        result = fn();
      } finally {
        restore(back);
      }
    } finally {
      libc.close(back);
    }
    if (isThenable(result)) {
      // Keep a late rejection from crashing the process; the caller gets the real error now.
      Promise.resolve(result).catch(() => undefined);
      throw new KernelError(
        'TENDRIL_ERR_NETNS',
        `Cannot run a callback in network namespace "${this.path}": it returned a Promise; ` +
          'Netns.run() callbacks must be synchronous (the namespace was left before the Promise settled)',
      );
    }
    return result;
  }

  /** Inode of the namespace: equal inodes mean the same namespace. */
  inode(): number {
    this.assertOpen();
    return fs.fstatSync(this.fd).ino;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw new KernelError('TENDRIL_ERR_NETNS', `Cannot use network namespace "${this.path}": handle closed`);
  }
}

/** Names of the namespaces in dir (empty when dir does not exist). */
export function listNetns(dir = DEFAULT_NETNS_DIR): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new KernelError('TENDRIL_ERR_NETNS', `Cannot list network namespaces in "${dir}": ${String(err)}`, {
      cause: err,
    });
  }
}

/**
 * Returns the thread to namespace fd `back`. If that fails, every later line of JS (the agent's API, its netlink
 * calls, the next pod's setup) would run inside whatever namespace the thread is in, a pod's say: nothing can be
 * trusted any more, so the process says why on stderr and aborts (a supervisor restarts it in the right place).
 */
function restore(back: number): void {
  try {
    libc.setns(back, libc.CLONE_NEWNET);
  } catch (err) {
    abortOutsideNamespace(wrap(err, 'Cannot return to the original network namespace'));
  }
}

function abortOutsideNamespace(err: KernelError): never {
  try {
    fs.writeSync(2, `FATAL ${err.code}: ${err.message}; the thread is left in another network namespace, aborting the process\n`);
  } finally {
    process.abort();
  }
}

/** As iproute2: make dir a shared mount point, bind-mounting it onto itself first if it is no mount point. */
function makeSharedMount(dir: string, what: string): void {
  try {
    libc.mount('', dir, 'none', libc.MS_SHARED | libc.MS_REC);
    return;
  } catch (err) {
    if (!isKernelErrno(err, 'EINVAL')) throw wrap(err, `${what}: cannot make "${dir}" a shared mount`);
  }
  try {
    libc.mount(dir, dir, 'none', libc.MS_BIND | libc.MS_REC);
    libc.mount('', dir, 'none', libc.MS_SHARED | libc.MS_REC);
  } catch (err) {
    throw wrap(err, `${what}: cannot make "${dir}" a shared mount`);
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}
