// Coded CNI errors: the spec's well-known codes, rendered as the error JSON a runtime reads on stdout.

/** Spec versions this plugin speaks, oldest first; the last one is what we answer in when nothing else is known. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = '1.1.0';

/**
 * CNI error codes: the spec's well-known ones (0-99; 8 for a bad netns is this project's choice) and Tendril's
 * plugin-specific ones (100+, which the spec leaves to plugins):
 *
 * - 100 POOL_EXHAUSTED: the node's pod CIDR has no free address (a retry helps only after pods are deleted).
 * - 101 NO_POOL: the address asked for is not in any pool of this node (static IP outside the node's pod CIDR).
 * - 102 ADDRESS_IN_USE: the static address asked for is allocated to another container.
 * - 103 SANDBOX_TAKEN: the sandbox already has a Tendril attachment or another network's default route; Tendril
 *   gives a sandbox exactly one interface (a second CNI_IFNAME is refused, not wired half-way).
 *
 * Transient conditions (agent unreachable or not ready, cluster store unavailable) are always 11; STATUS
 * answers 50 when an ADD could not be served and 51 when existing pods may have limited connectivity too.
 */
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
  LIMITED_CONNECTIVITY: 51,
  POOL_EXHAUSTED: 100,
  NO_POOL: 101,
  ADDRESS_IN_USE: 102,
  SANDBOX_TAKEN: 103,
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

/**
 * CNI codes of coded errors by their `code`: the datapath's and the store's, and the IPAM errors a CniBackend
 * throws (part of the backend contract, so that the agent need not know CNI codes).
 */
const CODE_OF: Record<string, CniCodeValue> = {
  TENDRIL_ERR_IPAM_EXHAUSTED: CniCode.POOL_EXHAUSTED,
  TENDRIL_ERR_IPAM_OUT_OF_RANGE: CniCode.NO_POOL,
  TENDRIL_ERR_IPAM_CONFLICT: CniCode.ADDRESS_IN_USE,
  TENDRIL_ERR_DATAPATH_NETNS: CniCode.INVALID_NETNS,
  TENDRIL_ERR_DATAPATH_SANDBOX_TAKEN: CniCode.SANDBOX_TAKEN,
  // The cluster store is away: the runtime retries later, whichever path noticed it.
  TENDRIL_ERR_STORE_UNAVAILABLE: CniCode.TRY_AGAIN_LATER,
  TENDRIL_ERR_NOT_READY: CniCode.TRY_AGAIN_LATER,
};

/**
 * Any thrown value as a CniError: coded errors the CNI knows keep their meaning (a datapath netns error is 8,
 * the store being away is 11), everything else is an internal failure (999) carrying its message.
 */
export function asCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const known = CODE_OF[String((err as { code?: unknown } | null)?.code)];
  return new CniError(known ?? CniCode.INTERNAL, message, { cause: err });
}
