// Public surface of the operator: the Operator component, the cluster-pool allocator, runOperator and the CLI hook.
export { Operator, CLUSTER_POOL_STATE, DEFAULT_NODE_CIDR_GRACE_MS, type OperatorOptions, type OperatorState, type OperatorStatus } from './operator.js';
export {
  ClusterPool,
  validatePoolConfig,
  DEFAULT_CLUSTER_POOL_CIDR,
  DEFAULT_CLUSTER_POOL_MASK_SIZE,
  MAX_CLUSTER_POOL_MASK_SIZE,
  type ClusterPoolConfig,
  type AssignSource,
  type PoolUsage,
} from './cluster-pool.js';
export { OperatorError, type OperatorErrorCode } from './errors.js';
export { operatorConfig, parseDuration, parseListen, DEFAULT_OPERATOR_API_SOCKET, DEFAULT_STORE_DATA, type OperatorConfig, type OperatorFlags, type StoreChoice } from './config.js';
export { runOperator, type RunOperatorOptions, type RunningOperator, type OperatorStatusResponse } from './main.js';
export { registerOperator } from './cli.js';
export type * from './api.js';
