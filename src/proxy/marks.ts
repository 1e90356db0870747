// Packet marks shared with bpf/lib/proxy.h.
/** Set by the proxy (SO_MARK) on its upstream connections; the upper 16 bits carry the client's identity. */
export const MARK_MAGIC_FROM_PROXY = 0x0a00;
/** Set by the datapath on packets it assigns to the proxy: selects the local route (ip rule fwmark). */
export const MARK_MAGIC_TO_PROXY = 0x0200;
export const MARK_MAGIC_MASK = 0x0f00;
/** The node proxy's listener port (Cilium allocates from 10000-20000). */
export const DEFAULT_PROXY_PORT = 15080;
