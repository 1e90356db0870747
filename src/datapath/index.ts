// Public surface of the node datapath.
export { NodeDatapath, HOST_DEV, NET_DEV, VXLAN_DEV, VXLAN_PORT, TUNNEL_OVERHEAD } from './node.js';
export type { Attachment, NodeDatapathConfig, DatapathEndpoint, HostDevice, IpcacheEntry, DropMetric } from './node.js';
export type { EndpointPolicyState, PolicyMapEntry, PolicyMapEntryStats } from './policy.js';
export type { CtEntry } from './ct.js';
export { CT_GC_MIN_INTERVAL_MS, ctGcIntervalMs } from './ct.js';
export type { MasqDatapathConfig, NatEntry } from './nat.js';
export type { RemoteNode, RoutingMode } from './remote-nodes.js';
export type { EndpointInfo } from './maps.js';
export { IDENTITY_HEALTH, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD, CT_TIMEOUTS_DEFAULT, dropReasonText } from './maps.js';
export { DatapathError } from './errors.js';
export { decodeEvent, ktimeToDate, EVENT_FILES, POLICY_MATCH_TYPES } from './events.js';
export { OBS_POINTS } from './event-types.js';
export type { DatapathEvent, DropEvent, EventBase, ObsPoint, PolicyVerdictEvent, TraceEvent, TraceReason } from './event-types.js';
export type { EventReaderOptions, EventStats, EventWatch } from './event-reader.js';
export type { DatapathErrorCode } from './errors.js';
export { ensureNamedNetns, interfaceIndex, interfaceName } from './host.js';
export {
  createPodInterface,
  wirePodInterface,
  removePodInterface,
  removeStrayPodInterfaces,
  checkPodInterface,
  openPodNetns,
  assertPodNetns,
  isOwnNetns,
  type PodInterface,
  type PodInterfaceSpec,
  type PodInterfaceCheck,
} from './pod-interface.js';
// Raw frames out of a device of this node (gratuitous ARP of the L2 announcer).
export { sendFrame } from '../kernel/socket/index.js';
export { SockLb, removeSockLbLinks, sockLinkDir } from './sock-lb.js';
export type { SockBackend, SockLbConfig, SockTermResult } from './sock-lb.js';
