// Coded errors of the service load-balancer.
export type LbErrorCode =
  | 'TENDRIL_ERR_SERVICE_INVALID'
  | 'TENDRIL_ERR_SERVICE_NOT_FOUND'
  | 'TENDRIL_ERR_SERVICE_IP_EXHAUSTED'
  | 'TENDRIL_ERR_SERVICE_IP_TAKEN'
  | 'TENDRIL_ERR_NODEPORT_EXHAUSTED'
  | 'TENDRIL_ERR_NODEPORT_TAKEN'
  | 'TENDRIL_ERR_LB_INVALID'
  | 'TENDRIL_ERR_LB_CONFLICT'
  | 'TENDRIL_ERR_LB_MAP_FULL'
  | 'TENDRIL_ERR_LB_POOL_INVALID'
  | 'TENDRIL_ERR_LB_POOL_NOT_FOUND'
  | 'TENDRIL_ERR_ENDPOINT_SLICE_INVALID'
  | 'TENDRIL_ERR_ENDPOINT_SLICE_NOT_FOUND';

export class LbError extends Error {
  readonly code: LbErrorCode;
  constructor(code: LbErrorCode, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'LbError';
    this.code = code;
  }
}
