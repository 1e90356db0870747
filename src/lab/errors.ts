// Coded errors of the lab.
export type LabErrorCode =
  | 'TENDRIL_ERR_LAB_EXISTS'
  | 'TENDRIL_ERR_LAB_NOT_FOUND'
  | 'TENDRIL_ERR_LAB_INVALID'
  | 'TENDRIL_ERR_LAB_NODE_NOT_FOUND'
  | 'TENDRIL_ERR_LAB_POD_EXISTS'
  | 'TENDRIL_ERR_LAB_POD_NOT_FOUND'
  | 'TENDRIL_ERR_LAB_AGENT'
  | 'TENDRIL_ERR_LAB_CNI'
  | 'TENDRIL_ERR_LAB_K8S'
  | 'TENDRIL_ERR_PERMISSION';

export class LabError extends Error {
  readonly code: LabErrorCode;
  constructor(code: LabErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'LabError';
    this.code = code;
  }
}
