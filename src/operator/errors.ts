// Coded errors of the operator: pool exhaustion, bad flags, stored state that does not fit the flags.

export type OperatorErrorCode =
  /** No free CIDR left in the cluster pool. */
  | 'TENDRIL_ERR_IPAM_EXHAUSTED'
  /** A flag or option has an invalid value. */
  | 'TENDRIL_ERR_INVALID_CONFIG'
  /** The pool stored in the cluster differs from the flags (re-carving would re-number running nodes). */
  | 'TENDRIL_ERR_POOL_MISMATCH'
  /** Stored allocator state is malformed or inconsistent. */
  | 'TENDRIL_ERR_STATE'
  /** A TendrilPodIPPool is malformed (name, CIDRs, mask size). */
  | 'TENDRIL_ERR_INVALID_POOL'
  /** A TendrilPodIPPool overlaps another pool or the cluster CIDRs. */
  | 'TENDRIL_ERR_POOL_CONFLICT'
  /** A TendrilPodIPPool still has CIDRs on nodes (or nodes asking for it) and cannot be deleted. */
  | 'TENDRIL_ERR_POOL_IN_USE'
  /** No TendrilPodIPPool of that name. */
  | 'TENDRIL_ERR_POOL_NOT_FOUND';

export class OperatorError extends Error {
  readonly code: OperatorErrorCode;
  constructor(code: OperatorErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OperatorError';
    this.code = code;
  }
}
