// Coded errors of the agent: API handlers map them to HTTP statuses, the CNI handler to CNI codes.

export type AgentErrorCode =
  | 'TENDRIL_ERR_IPAM_EXHAUSTED'
  | 'TENDRIL_ERR_IPAM_CONFLICT'
  | 'TENDRIL_ERR_IPAM_OUT_OF_RANGE'
  | 'TENDRIL_ERR_ENDPOINT_NOT_FOUND'
  | 'TENDRIL_ERR_ENDPOINT_CONFLICT'
  | 'TENDRIL_ERR_INVALID_REQUEST'
  | 'TENDRIL_ERR_NOT_READY'
  /** The cluster store does not answer: the change needs it (a new identity, a policy recompiled against it). */
  | 'TENDRIL_ERR_STORE_UNAVAILABLE'
  | 'TENDRIL_ERR_POLICY_INVALID'
  | 'TENDRIL_ERR_POLICY_NOT_FOUND'
  | 'TENDRIL_ERR_STATE'
  /** --ipam kubernetes: the Node resource got no pod CIDR within the wait. */
  | 'TENDRIL_ERR_NO_POD_CIDR';

const HTTP_STATUS: Record<AgentErrorCode, number> = {
  TENDRIL_ERR_IPAM_EXHAUSTED: 507,
  TENDRIL_ERR_IPAM_CONFLICT: 409,
  TENDRIL_ERR_IPAM_OUT_OF_RANGE: 400,
  TENDRIL_ERR_ENDPOINT_NOT_FOUND: 404,
  TENDRIL_ERR_ENDPOINT_CONFLICT: 409,
  TENDRIL_ERR_INVALID_REQUEST: 400,
  TENDRIL_ERR_NOT_READY: 503,
  TENDRIL_ERR_STORE_UNAVAILABLE: 503,
  TENDRIL_ERR_POLICY_INVALID: 400,
  TENDRIL_ERR_POLICY_NOT_FOUND: 404,
  TENDRIL_ERR_STATE: 500,
  TENDRIL_ERR_NO_POD_CIDR: 503,
};

export class AgentError extends Error {
  readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.code = code;
  }
  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }
}
