// Coded CNI errors: the spec's well-known codes, rendered as the error JSON a runtime reads on stdout.

/** Spec versions this plugin speaks, oldest first; the last one is what we answer in when nothing else is known. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = '1.1.0';

/** CNI error codes (spec "Well-known Error Codes"; 8 for a bad netns is this project's choice). */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  INVALID_NETNS: 8,
  TRY_AGAIN_LATER: 11,
  NOT_AVAILABLE: 50,
  INTERNAL: 999,
} as const;
export type CniCodeValue = (typeof CniCode)[keyof typeof CniCode];

/** The spec's error object; `code` is the CNI code printed to the runtime, not a TENDRIL_ERR_* string. */
export class CniError extends Error {
  readonly code: CniCodeValue;
  readonly details: string | undefined;

  constructor(code: CniCodeValue, msg: string, opts: { details?: string; cause?: unknown } = {}) {
    super(msg, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CniError';
    this.code = code;
    this.details = opts.details;
  }

  /** Error JSON in the caller's spec version (JSON.stringify passes a key here; anything unknown means latest). */
  toJSON(cniVersion?: string): { cniVersion: string; code: number; msg: string; details?: string } {
    const version = isSupportedVersion(cniVersion) ? cniVersion : LATEST_VERSION;
    const out: { cniVersion: string; code: number; msg: string; details?: string } = {
      cniVersion: version,
      code: this.code,
      msg: this.message,
    };
    if (this.details !== undefined && this.details !== '') out.details = this.details;
    return out;
  }
}

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Orders two supported versions: negative when a is older than b. */
export function compareVersions(a: CniVersion, b: CniVersion): number {
  return SUPPORTED_VERSIONS.indexOf(a) - SUPPORTED_VERSIONS.indexOf(b);
}

/** Any thrown value as a CniError: non-CniErrors are internal failures (999) carrying their message. */
export function asCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CniError(CniCode.INTERNAL, message, { cause: err });
}
