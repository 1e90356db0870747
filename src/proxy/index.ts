// Public surface of the node's L7 proxy: its supervisor (run by the agent), the rule table it takes and its records.
export { ProxySupervisor, type ProxyStatus } from './supervisor.js';
export type { ProxyTable, ProxyEndpointRules, L7Entry } from './rules.js';
export type { HttpFlowRecord, HttpProxyStats } from './types.js';
export type { WireRecord } from './flow-wire.js';
export { DEFAULT_PROXY_PORT } from './marks.js';
export { ProxyError, type ProxyErrorCode } from './errors.js';
