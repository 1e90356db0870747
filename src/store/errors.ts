// Coded errors of the cluster state store, shared by every backend so callers handle one set of codes.

export type StoreErrorCode =
  /** An expectedRevision did not match the stored revision (optimistic concurrency lost a race). */
  | 'TENDRIL_ERR_STORE_CONFLICT'
  /** The store could not be reached (server down, connection refused or reset, timeout). */
  | 'TENDRIL_ERR_STORE_UNAVAILABLE'
  /** The caller asked for something malformed: unknown kind, bad name, bad URL, value not JSON. */
  | 'TENDRIL_ERR_STORE_INVALID'
  /** A request body over the store's limit (the local store answers 413, as etcd refuses big requests). */
  | 'TENDRIL_ERR_STORE_TOO_LARGE'
  /** The resource does not exist (used on the wire; get() returns undefined instead of throwing it). */
  | 'TENDRIL_ERR_STORE_NOT_FOUND'
  /** The local store's files on disk cannot be read back (not a torn last write, which is repaired). */
  | 'TENDRIL_ERR_STORE_CORRUPT'
  /** The server failed or answered something this client does not understand. */
  | 'TENDRIL_ERR_STORE_INTERNAL';

export const STORE_ERROR_CODES: readonly StoreErrorCode[] = [
  'TENDRIL_ERR_STORE_CONFLICT',
  'TENDRIL_ERR_STORE_UNAVAILABLE',
  'TENDRIL_ERR_STORE_INVALID',
  'TENDRIL_ERR_STORE_TOO_LARGE',
  'TENDRIL_ERR_STORE_NOT_FOUND',
  'TENDRIL_ERR_STORE_CORRUPT',
  'TENDRIL_ERR_STORE_INTERNAL',
];

const HTTP_STATUS: Record<StoreErrorCode, number> = {
  TENDRIL_ERR_STORE_CONFLICT: 409,
  TENDRIL_ERR_STORE_UNAVAILABLE: 503,
  TENDRIL_ERR_STORE_INVALID: 400,
  TENDRIL_ERR_STORE_TOO_LARGE: 413,
  TENDRIL_ERR_STORE_NOT_FOUND: 404,
  TENDRIL_ERR_STORE_CORRUPT: 500,
  TENDRIL_ERR_STORE_INTERNAL: 500,
};

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  /** On CONFLICT: the resource's revision at the time of the failed write (0 = it does not exist). */
  readonly currentRevision: number | undefined;

  constructor(code: StoreErrorCode, message: string, opts: { cause?: unknown; currentRevision?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StoreError';
    this.code = code;
    this.currentRevision = opts.currentRevision;
  }

  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }
}

export function isStoreErrorCode(code: unknown): code is StoreErrorCode {
  return typeof code === 'string' && (STORE_ERROR_CODES as readonly string[]).includes(code);
}

/** A short text for any thrown value, for messages that wrap a cause. */
export function describeCause(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
