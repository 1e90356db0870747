// Coded errors of Kubernetes mode (connection, CRD installation, configuration).
export type K8sErrorCode = 'TENDRIL_ERR_K8S_CONFIG' | 'TENDRIL_ERR_K8S_UNAVAILABLE' | 'TENDRIL_ERR_K8S_CRD';

export class K8sError extends Error {
  readonly code: K8sErrorCode;
  constructor(code: K8sErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'K8sError';
    this.code = code;
  }
}

/** The HTTP status of a client-node ApiException (or undefined for a transport error). */
export function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The apiserver's own message (Status.message) of an ApiException, else the error's message. */
export function messageOf(err: unknown): string {
  const body = (err as { body?: unknown } | undefined)?.body;
  if (typeof body === 'string') {
    try {
      const m = (JSON.parse(body) as { message?: unknown }).message;
      if (typeof m === 'string') return m;
    } catch {
      /* not JSON */
    }
  }
  const m = (body as { message?: unknown } | undefined)?.message;
  return typeof m === 'string' ? m : (err as Error).message;
}
