// Coded errors of masquerading: its flags, the ip-masq-agent file, the node's own port range and iptables.

export type NatErrorCode =
  /** A masquerading flag is invalid. */
  | 'TENDRIL_ERR_NAT_CONFIG'
  /** The ip-masq-agent config file cannot be read or parsed (the previous set stays in force). */
  | 'TENDRIL_ERR_IPMASQ_CONFIG'
  /** The iptables fallback cannot be installed or removed. */
  | 'TENDRIL_ERR_NAT_IPTABLES';

export class NatError extends Error {
  readonly code: NatErrorCode;

  constructor(code: NatErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NatError';
    this.code = code;
  }
}
