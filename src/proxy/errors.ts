// Coded errors of the node's L7 proxy.
export type ProxyErrorCode = 'TENDRIL_ERR_PROXY_START' | 'TENDRIL_ERR_PROXY_CONFIG';

export class ProxyError extends Error {
  readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProxyError';
    this.code = code;
  }
}
