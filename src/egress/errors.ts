// Coded errors of the egress gateway component.
export type EgressErrorCode =
  | 'TENDRIL_ERR_EGRESS_POLICY_INVALID'
  | 'TENDRIL_ERR_EGRESS_POLICY_NOT_FOUND'
  | 'TENDRIL_ERR_EGRESS_IP_EXHAUSTED'
  | 'TENDRIL_ERR_EGRESS_IP_TAKEN'
  | 'TENDRIL_ERR_EGRESS_POOL_INVALID';

export class EgressError extends Error {
  readonly code: EgressErrorCode;
  constructor(code: EgressErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EgressError';
    this.code = code;
  }
}
