// Masquerading (issue 9): flags, the ip-masq-agent file and its watcher, the node's own ports, the iptables fallback.
export { DEFAULT_IPMASQ_CONFIG_PATH, DEFAULT_PORT_RANGE, masqConfig, masqMode, type MasqConfig } from './config.js';
export { NatError, type NatErrorCode } from './errors.js';
export { DEFAULT_NON_MASQ_CIDRS, LINK_LOCAL_CIDR, IpMasqWatcher, effectiveNonMasqCidrs, parseIpMasqConfig, readIpMasqConfig, type IpMasqFile, type IpMasqState } from './ipmasq.js';
export { ephemeralRangeFor, keepEphemeralOutOf } from './ports.js';
export { MASQ_CHAIN, installIptablesMasq, masqRules, removeIptablesMasq } from './iptables.js';
export { Masquerade, type MasqDatapath, type MasqStatus } from './masquerade.js';
