// Coded errors of observe/: invalid filters and requests, unreachable flow servers, server start failures.

export type ObserveErrorCode =
  | 'TENDRIL_ERR_OBSERVE_INVALID'
  | 'TENDRIL_ERR_OBSERVE_UNREACHABLE'
  | 'TENDRIL_ERR_OBSERVE_SERVER';

export class ObserveError extends Error {
  readonly code: ObserveErrorCode;
  constructor(code: ObserveErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ObserveError';
    this.code = code;
  }
}

export function invalid(message: string): ObserveError {
  return new ObserveError('TENDRIL_ERR_OBSERVE_INVALID', message);
}
