// Coded errors of the node datapath (kernel failures stay KernelErrors and pass through unchanged).

export type DatapathErrorCode =
  /** A configuration value or a remote node given to the datapath is invalid. */
  | 'TENDRIL_ERR_DATAPATH_CONFIG'
  /** A method that needs the loaded datapath was called before start(). */
  | 'TENDRIL_ERR_DATAPATH_NOT_STARTED'
  /** The datapath's state file cannot be read or parsed. */
  | 'TENDRIL_ERR_DATAPATH_STATE';

export class DatapathError extends Error {
  readonly code: DatapathErrorCode;

  constructor(code: DatapathErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DatapathError';
    this.code = code;
  }
}
