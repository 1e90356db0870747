// Public surface of the egress gateway component: TendrilEgressGatewayPolicy, the operator's allocation of gateways
// and egress IPs, the agent's map and egress-IP keeping.
export { EgressError, type EgressErrorCode } from './errors.js';
export {
  EGRESS_API_VERSION,
  EGRESS_POLICY_KIND,
  labelsMatch,
  parseEgressPolicy,
  type EgressGatewayPolicyResource,
  type EgressGatewayPolicySpec,
  type EgressGatewayPolicyStatus,
  type EgressGatewaySpec,
  type EgressSelector,
  type LabelSelector,
} from './policy.js';
export { EXCLUDED_GATEWAY, egressEntries, podLabels, policySelects, type EgressEndpoint, type EgressEntry } from './entries.js';
export { EGRESS_POOL_STATE, nodeHealthy, nodeLabels, parseEgressPool, planEgress, type EgressPlan, type EgressPoolState } from './alloc.js';
export { EGRESS_IP_MAP, EGRESS_POLICY_MAP, EGRESS_STATE_EMPTY, EGRESS_STATE_MAP, EgressMaps, egressIpCodec, egressKeyCodec, egressValueCodec, type EgressKey, type EgressValue } from './maps.js';
export { EGRESS_STORE_KIND, applyEgressPolicy, deleteEgressPolicy, listEgressPolicies } from './store.js';
export { EgressOperator, type EgressOperatorOptions, type EgressOperatorStatus } from './operator.js';
export { EgressManager, type EgressIpView, type EgressManagerOptions, type EgressStatusView } from './manager.js';
export { registerEgressRoutes } from './routes.js';
