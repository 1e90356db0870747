// Coded errors of the native boundary. kernel/ never logs: it throws these.
import os from 'node:os';

export type KernelErrorCode =
  | 'TENDRIL_ERR_SYSCALL'
  | 'TENDRIL_ERR_NETLINK'
  | 'TENDRIL_ERR_NETNS'
  | 'TENDRIL_ERR_BPF'
  | 'TENDRIL_ERR_BPF_VERIFIER'
  | 'TENDRIL_ERR_BPF_KEY_NOT_EXIST'
  | 'TENDRIL_ERR_NOT_SUPPORTED'
  | 'TENDRIL_ERR_ELF';

/** Name of an errno value, e.g. 17 -> "EEXIST". */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return name;
  }
  return `errno ${errno}`;
}

/** Human text of an errno value, e.g. 17 -> "File exists (EEXIST)". */
export function errnoText(errno: number): string {
  const name = errnoName(errno);
  const text = ERRNO_TEXT[name];
  return text ? `${text} (${name})` : name;
}

const ERRNO_TEXT: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  ESRCH: 'No such process',
  EINTR: 'Interrupted system call',
  EIO: 'Input/output error',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EFAULT: 'Bad address',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  ERANGE: 'Numerical result out of range',
  E2BIG: 'Argument list too long',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  ENETUNREACH: 'Network is unreachable',
  ENOTCONN: 'Transport endpoint is not connected',
  ENOBUFS: 'No buffer space available',
  ENOSYS: 'Function not implemented',
};

export class KernelError extends Error {
  readonly code: KernelErrorCode;
  /** errno of the failed call, when there was one. */
  readonly errno: number | undefined;

  constructor(code: KernelErrorCode, message: string, opts: { errno?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KernelError';
    this.code = code;
    this.errno = opts.errno;
  }

  /** True when the failed call reported errno `name` (e.g. "ENOENT"). */
  is(name: string): boolean {
    return this.errno !== undefined && errnoName(this.errno) === name;
  }
}

/** The verifier refused a program; `log` holds the verifier's output. */
export class VerifierError extends KernelError {
  readonly log: string;
  constructor(message: string, log: string, opts: { errno?: number; cause?: unknown } = {}) {
    super('TENDRIL_ERR_BPF_VERIFIER', `${message}\n${lastLines(log, 30)}`, opts);
    this.name = 'VerifierError';
    this.log = log;
  }
}

function lastLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}
