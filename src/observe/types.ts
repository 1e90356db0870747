// The datapath's events as observe/ sees them: defined by the datapath (src/datapath/event-types.ts). Imported from
// that leaf rather than datapath/index.ts, which would load the kernel bindings into the CLI and the relay.
export { OBS_POINTS } from '../datapath/event-types.js';
export type { DatapathEvent, DropEvent, EventBase, ObsPoint, PolicyVerdictEvent, TraceEvent, TraceReason } from '../datapath/event-types.js';
