// Public surface of the policy language: parse/validate NetworkPolicy and TendrilNetworkPolicy, compile to map entries.
export { PolicyError, type PolicyErrorCode } from './errors.js';
export {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  IDENTITY_UNMANAGED,
  IDENTITY_HEALTH,
  IDENTITY_INIT,
  IDENTITY_REMOTE_NODE,
  IDENTITY_MIN_CLUSTER,
  LABEL_POD_NAMESPACE,
  LABEL_NAMESPACE_NAME,
  LABEL_NAMESPACE_LABELS_PREFIX,
  reservedIdentities,
  reservedIdentityName,
  parseLabel,
} from './identity.js';
export { API_VERSION, CLUSTERWIDE_KIND, ENTITIES, isDnsLabel, labelKeyProblem, labelValueProblem, parsePolicies, parsePolicyObject, policyKey } from './parse.js';
export {
  PROTO_ANY,
  PROTO_ICMP,
  ICMP_TYPE_NAMES,
  PROTO_TCP,
  PROTO_UDP,
  PROTO_SCTP,
  describeEntry,
  portRangeBlocks,
  protocolName,
  type EntryDescription,
  type PortBlock,
} from './ports.js';
export { HttpMatcher, httpRegexProblem, httpRuleKey, mergeHttpRules, type HttpRequestView } from './http.js';
export { PolicyCompiler, DERIVED_ALLOW_LOCALHOST, compareEntries } from './compiler.js';
export type * from './types.js';
