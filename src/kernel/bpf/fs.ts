// bpffs housekeeping: mount it when missing, remove pin trees.
import fs from 'node:fs';
import { KernelError } from '../errors.js';
import { mount } from '../native/libc.js';

export const BPF_FS_MAGIC = 0xcafe4a11;
export const DEFAULT_BPFFS = '/sys/fs/bpf';

/** True when `path` exists and lies on a bpf filesystem. */
export function isBpffs(path: string): boolean {
  try {
    return fs.statfsSync(path).type >>> 0 === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** Mounts a bpffs at `path` unless one is there already (pins need one; some systems boot without it). */
export function ensureBpffs(path: string = DEFAULT_BPFFS): void {
  if (isBpffs(path)) return;
  fs.mkdirSync(path, { recursive: true });
  try {
    mount('bpf', path, 'bpf', 0);
  } catch (err) {
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot mount bpffs at "${path}": ${(err as Error).message}`, {
      ...(err instanceof KernelError && err.errno !== undefined ? { errno: err.errno } : {}),
      cause: err,
    });
  }
}

/**
 * Unlinks every pin under `dir` and the directory itself; nothing to do when it is gone. Refuses paths
 * outside a bpffs so a wrong argument cannot delete ordinary files.
 */
export function removePinned(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (!isBpffs(dir)) {
    throw new KernelError('TENDRIL_ERR_BPF', `Cannot remove pins under "${dir}": not on a bpf filesystem`);
  }
  // Unlinking a pin drops only that reference; objects still in use (attached, open) live on.
  fs.rmSync(dir, { recursive: true, force: true });
}
