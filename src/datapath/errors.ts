// Coded errors of the node datapath (kernel failures stay KernelErrors and pass through unchanged).

export type DatapathErrorCode =
  /** A configuration value or a remote node given to the datapath is invalid. */
  | 'TENDRIL_ERR_DATAPATH_CONFIG'
  /** A method that needs the loaded datapath was called before start(). */
  | 'TENDRIL_ERR_DATAPATH_NOT_STARTED'
  /** The datapath's state file cannot be read or parsed. */
  | 'TENDRIL_ERR_DATAPATH_STATE'
  /** A pod's network namespace cannot be opened, or is the node's own. */
  | 'TENDRIL_ERR_DATAPATH_NETNS'
  /** The pod's namespace already holds what a pod interface needs (its name, a default route): another attachment. */
  | 'TENDRIL_ERR_DATAPATH_SANDBOX_TAKEN'
  /** A pod interface is not as it was wired (CHECK), or vanished while being wired. */
  | 'TENDRIL_ERR_DATAPATH_POD_INTERFACE';

export class DatapathError extends Error {
  readonly code: DatapathErrorCode;

  constructor(code: DatapathErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DatapathError';
    this.code = code;
  }
}
