// Public surface of the node datapath.
export { NodeDatapath, HOST_DEV, NET_DEV } from './node.js';
export type { Attachment, NodeDatapathConfig, DatapathEndpoint, HostDevice } from './node.js';
export type { EndpointInfo } from './maps.js';
export { ensureNamedNetns, interfaceIndex } from "./host.js";
