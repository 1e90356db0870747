// Public surface of the CNI component: the handler the agent mounts at POST /v1/cni and its backend seam.
export { CniHandler, type CniBackend, type CniResponse, type EndpointRequest, type EndpointRef } from './plugin.js';
export { serveCni } from './http.js';
export { CniError, CniCode, SUPPORTED_VERSIONS, LATEST_VERSION, type CniVersion } from './errors.js';
export { parseCniCall, type CniCall, type CniCommand, type NetConf } from './parse.js';
export { hostIfName } from './names.js';
export { formatResult, podResult, type CniResult } from './result.js';
export { tendrilConflist, CONFLIST_NAME, PLUGIN_TYPE, type ConflistOptions } from './conflist.js';
export type { IpRequest } from './plugin.js';
export { PhaseClock, CniTimings, clockFromShim, SHIM_START_HEADER, type CniTimingsView, type Lap } from './timings.js';
