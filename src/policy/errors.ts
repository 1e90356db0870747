// Coded error of the policy language: an invalid policy document, naming the document, the field and the reason.

export type PolicyErrorCode = 'TENDRIL_ERR_POLICY_INVALID';

export class PolicyError extends Error {
  readonly code: PolicyErrorCode = 'TENDRIL_ERR_POLICY_INVALID';
  /** JSON-path-like location inside the document, e.g. "spec.ingress[0].from[1].ipBlock.cidr" ("" = the document itself). */
  readonly field: string;
  /** Which document: file name and document number / list item, when known. */
  readonly doc?: string;
  /** The reason alone, without document or field ("79 is lower than port 80"). */
  readonly reason: string;

  constructor(message: string, field: string, reason: string, opts: { doc?: string | undefined; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PolicyError';
    this.field = field;
    this.reason = reason;
    if (opts.doc !== undefined) this.doc = opts.doc;
  }
}
