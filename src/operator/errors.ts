// Coded errors of the operator: pool exhaustion, bad flags, stored state that does not fit the flags.

export type OperatorErrorCode =
  /** No free CIDR left in the cluster pool. */
  | 'TENDRIL_ERR_IPAM_EXHAUSTED'
  /** A flag or option has an invalid value. */
  | 'TENDRIL_ERR_INVALID_CONFIG'
  /** The pool stored in the cluster differs from the flags (re-carving would re-number running nodes). */
  | 'TENDRIL_ERR_POOL_MISMATCH'
  /** Stored allocator state is malformed or inconsistent. */
  | 'TENDRIL_ERR_STATE';

export class OperatorError extends Error {
  readonly code: OperatorErrorCode;
  constructor(code: OperatorErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OperatorError';
    this.code = code;
  }
}
