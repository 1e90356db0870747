// Public surface of the service load-balancer: the Service resource, ClusterIP/NodePort allocation, backend
// derivation, Maglev, and the writer of the BPF service maps.
export * from './service.js';
export * from './maps.js';
export { LbError, type LbErrorCode } from './errors.js';
export { ServiceAllocator, DEFAULT_SERVICE_CIDR, type ServiceClaim } from './alloc.js';
export { backendsFor, selects, type Backend, type EndpointView } from './backends.js';
export { maglevTable, checkMaglevSize, DEFAULT_MAGLEV_TABLE_SIZE, MAGLEV_TABLE_SIZES } from './maglev.js';
export { LbDatapath, type Frontend, type LbAlgorithm, type LbDatapathOptions, type RemovedBackend } from './datapath.js';
export { registerServiceRoutes } from './routes.js';
export { ServiceManager, frontendsOf, serviceIndex, lbIpsWithoutLocalBackend, type ServiceManagerOptions, type ServiceListEntry } from './manager.js';
export * from './lb-pool.js';
export * from './endpoint-slice.js';
