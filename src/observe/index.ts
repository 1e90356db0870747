// Public surface of observe/: flows from datapath events, filters, formats, the node flow server, the relay, clients.
import path from 'node:path';

export type { DatapathEvent, TraceEvent, DropEvent, PolicyVerdictEvent, ObsPoint, TraceReason } from './types.js';
export { OBS_POINTS } from './types.js';
export type { Flow, FlowEndpoint, Verdict, TrafficDirection, TCPFlags, Layer4 } from './model.js';
export { dropReasonText, reservedIdentityName, timeToNs, nsToTime } from './model.js';
export { dissect, flowSummary, connectionSummary, layerLines, icmpv4TypeCode, type Dissection } from './dissect.js';
export { toFlow, monotonicClock, normalizeFlow, bpfFileName, type FlowContext, type EndpointInfo } from './flow.js';
export { FlowRing, DEFAULT_MAX_FLOWS } from './ring.js';
export { l7Flow, httpSummary, selectHeaders, type HttpAccessRecord } from './l7.js';
export { formatL7Monitor, l7MonitorEvent, type L7MonitorRecord } from './monitor-l7.js';
export { compileFilter, compileFilters, FilterBuilder, FILTER_FLAGS, parseSelector, parseIdentity, parseEventType, type FlowFilter, type FlowPredicate } from './filter.js';
export {
  compactLine,
  dictBlock,
  tableRow,
  tableHeader,
  alignRows,
  jsonLine,
  formatFlows,
  formatStampMilli,
  flowTypeText,
  verdictText,
  hostNames,
  identityText,
  DICT_SEPARATOR,
  OUTPUT_FORMATS,
  type OutputFormat,
  type FormatOptions,
} from './format.js';
export {
  formatMonitorEvent,
  monitorHeader,
  monitorJson,
  monitorMatches,
  toMonitorEvent,
  fromMonitorEvent,
  MONITOR_TYPES,
  validateMonitorFilter,
  type MonitorEvent,
  type MonitorFilter,
  type MonitorFormatOptions,
} from './monitor-format.js';
export type { FlowsQuery, FlowsResponse, ServerStatus, NodeInfo, NodeStatusEvent, NodeState } from './codec.js';
export { ObserverServer, type ObserverServerOptions } from './server.js';
export { Relay, type RelayOptions, type RelayPeer } from './relay.js';
export { ObserverClient, MonitorClient, HealthClient, type HealthAnswer, type MonitorInfo, type StreamHandle } from './client.js';
export { OBSERVER_HEALTH_SERVICE } from './health.js';
export { buildQuery, parseTimeArg, DEFAULT_LAST, type FilterArg, type ObserveArgs } from './args.js';
export { ObserveError, type ObserveErrorCode } from './errors.js';
export { TENDRIL_VERSION } from './version.js';

/** A node's flow server socket: `observer.sock` next to the agent's API socket. */
export function observerSocketFor(agentSocket: string): string {
  return path.join(path.dirname(agentSocket), 'observer.sock');
}

/** The relay socket of a lab (the lab starts the relay there, next to the operator's socket). */
export function relaySocketIn(labDir: string): string {
  return path.join(labDir, 'relay.sock');
}
