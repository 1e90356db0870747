// `tendril monitor` (cilium-dbg monitor): the event record sent over the socket, its filters, and the one-line,
// -v, -vv (layer dissection) and JSON renderings of trace, drop and policy-verdict events.
import { connectionSummary, dissect, layerLines } from './dissect.js';
import { bpfFileName } from './flow.js';
import { dropReasonText, reservedIdentityName } from './model.js';
import type { DatapathEvent, EventBase, ObsPoint, TraceReason } from './types.js';
import { invalid } from './errors.js';

/** A datapath event as JSON: bigint as decimal text, packet bytes as base64, plus what the agent knows about it. */
export interface MonitorEvent extends Omit<EventBase, 'ktimeNs' | 'data'> {
  /** "l7": an access-log record of the node proxy (monitor-l7.ts), not a datapath event. */
  type: DatapathEvent['type'] | 'l7';
  ktimeNs: string;
  data: string;
  obsPoint?: ObsPoint;
  reason?: TraceReason | number;
  line?: number;
  file?: string;
  direction?: 'ingress' | 'egress';
  action?: 'allow' | 'deny' | 'audit';
  match?: string;
  proto?: number;
  dport?: number;
  /** Name of ifindex on the node, when known. */
  ifname?: string;
  node?: string;
}

export function toMonitorEvent(ev: DatapathEvent, extra: { ifname?: string | undefined; node?: string | undefined } = {}): MonitorEvent {
  const m: MonitorEvent = {
    type: ev.type,
    cpu: ev.cpu,
    ktimeNs: ev.ktimeNs.toString(),
    source: ev.source,
    hash: ev.hash,
    origLen: ev.origLen,
    capLen: ev.capLen,
    ifindex: ev.ifindex,
    srcIdentity: ev.srcIdentity,
    dstIdentity: ev.dstIdentity,
    dstId: ev.dstId,
    data: Buffer.from(ev.data).toString('base64'),
  };
  switch (ev.type) {
    case 'trace':
      m.obsPoint = ev.obsPoint;
      m.reason = ev.reason;
      break;
    case 'drop':
      m.reason = ev.reason;
      m.line = ev.line;
      m.file = ev.file;
      break;
    case 'policy-verdict':
      m.direction = ev.direction;
      m.action = ev.action;
      m.match = ev.match;
      m.proto = ev.proto;
      m.dport = ev.dport;
      break;
  }
  if (extra.ifname) m.ifname = extra.ifname;
  if (extra.node) m.node = extra.node;
  return m;
}

/** Back to a DatapathEvent (throws TENDRIL_ERR_OBSERVE_INVALID on a record that is not one). */
export function fromMonitorEvent(m: MonitorEvent): DatapathEvent {
  const base = {
    cpu: m.cpu,
    ktimeNs: BigInt(m.ktimeNs),
    source: m.source,
    hash: m.hash,
    origLen: m.origLen,
    capLen: m.capLen,
    ifindex: m.ifindex,
    srcIdentity: m.srcIdentity,
    dstIdentity: m.dstIdentity,
    dstId: m.dstId,
    data: Buffer.from(m.data, 'base64'),
  };
  switch (m.type) {
    case 'trace':
      return { ...base, type: 'trace', obsPoint: m.obsPoint ?? 'to-endpoint', reason: (m.reason as TraceReason | undefined) ?? 'unknown' };
    case 'drop':
      return { ...base, type: 'drop', reason: Number(m.reason ?? 0), line: m.line ?? 0, file: m.file ?? '' };
    case 'policy-verdict':
      return { ...base, type: 'policy-verdict', direction: m.direction ?? 'ingress', action: m.action ?? 'allow', match: m.match ?? 'none', proto: m.proto ?? 0, dport: m.dport ?? 0 };
    default:
      throw invalid(`Invalid monitor event type "${String((m as { type: unknown }).type)}"`);
  }
}

export interface MonitorFilter {
  /** "trace", "drop", "policy-verdict" (other cilium types are accepted and never match). */
  types?: string[];
  relatedTo?: number[];
  from?: number[];
  to?: number[];
}

export const MONITOR_TYPES = ['drop', 'debug', 'capture', 'trace', 'l7', 'agent', 'policy-verdict', 'trace-sock'];

export function validateMonitorFilter(f: MonitorFilter): void {
  for (const t of f.types ?? []) if (!MONITOR_TYPES.includes(t)) throw invalid(`Invalid event type "${t}": expected one of ${MONITOR_TYPES.join(', ')}`);
}

/** cilium monitor's filters: --type, --related-to (source or destination endpoint), --from, --to. */
export function monitorMatches(ev: DatapathEvent, f: MonitorFilter): boolean {
  if (f.types && f.types.length > 0 && !f.types.includes(ev.type)) return false;
  if (f.relatedTo && f.relatedTo.length > 0 && !f.relatedTo.includes(ev.source) && !f.relatedTo.includes(ev.dstId)) return false;
  if (f.from && f.from.length > 0 && !f.from.includes(ev.source)) return false;
  if (f.to && f.to.length > 0 && !f.to.includes(ev.dstId)) return false;
  return true;
}

/** First lines of `monitor`, as cilium-dbg prints them. */
export function monitorHeader(numCpus: number, ringBytes = 0): string {
  const mem = ringBytes > 0 ? ` with ${Math.max(1, Math.round(ringBytes / 4096))}x4096 of shared memory` : '';
  return `Listening for events on ${numCpus} CPUs${mem}\nPress Ctrl-C to quit\n`;
}

export interface MonitorFormatOptions {
  /** 0 = one line per event, 1 = -v (verbose header line), 2 = -vv (layer dissection too). */
  verbosity?: number;
  /** -n: identities as numbers, not reserved names. */
  numeric?: boolean;
  /** -j: one JSON object per line. */
  json?: boolean;
  /** Name of the event's ifindex, when known. */
  ifname?: string | undefined;
}

export const MONITOR_SEPARATOR = '-'.repeat(78);

function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16);
}

function identity(id: number, numeric: boolean): string {
  if (numeric) return String(id);
  return (id !== 0 ? reservedIdentityName(id) : undefined) ?? String(id);
}

function cpuPrefix(cpu: number): string {
  return `CPU ${String(cpu).padStart(2, '0')}:`;
}

/** "-> endpoint 1234", "<- endpoint 7", "-> stack", "<- overlay", … */
export function traceSummary(obs: ObsPoint, source: number, dstId: number): string {
  switch (obs) {
    case 'to-endpoint':
      return `-> endpoint ${dstId}`;
    case 'to-proxy':
      return dstId !== 0 ? `-> proxy port ${dstId}` : '-> proxy';
    case 'from-endpoint':
      return `<- endpoint ${source}`;
    default: {
      const [dir, where] = obs.split('-', 2) as [string, string];
      return `${dir === 'to' ? '->' : '<-'} ${where}`;
    }
  }
}

/** Renders one event; the result ends with a newline. */
export function formatMonitorEvent(ev: DatapathEvent, opts: MonitorFormatOptions = {}): string {
  if (opts.json) return JSON.stringify(monitorJson(ev, opts)) + '\n';
  const numeric = opts.numeric ?? false;
  const verbosity = opts.verbosity ?? 0;
  const d = dissect(ev.data);
  const conn = connectionSummary(d);
  const ifname = opts.ifname ?? String(ev.ifindex);
  const origIp = d.ipv4?.src ?? '0.0.0.0';
  const ids = `identity ${identity(ev.srcIdentity, numeric)}->${identity(ev.dstIdentity, numeric)}`;

  if (verbosity === 0 || ev.type === 'policy-verdict') {
    switch (ev.type) {
      case 'trace':
        return `${traceSummary(ev.obsPoint, ev.source, ev.dstId)} flow ${hex(ev.hash)} , ${ids} state ${ev.reason} ifindex ${ifname} orig-ip ${origIp}: ${conn}\n`;
      case 'drop':
        return `xx drop (${dropReasonText(ev.reason)}) flow ${hex(ev.hash)} to endpoint ${ev.dstId}, ifindex ${ev.ifindex}, file ${bpfFileName(ev.file)}:${ev.line}, , ${ids}: ${conn}\n`;
      case 'policy-verdict': {
        const remote = ev.direction === 'ingress' ? ev.srcIdentity : ev.dstIdentity;
        const line =
          `Policy verdict log: flow ${hex(ev.hash)} local EP ID ${ev.source}, remote ID ${identity(remote, numeric)}, proto ${ev.proto}, ` +
          `${ev.direction}, action ${ev.action}, auth: disabled, match ${ev.match}, ${conn}\n`;
        return verbosity === 0 ? line : withDissection(`${cpuPrefix(ev.cpu)} ${line}`, ev, verbosity);
      }
    }
  }
  let header: string;
  const identityPart = ev.srcIdentity !== 0 || ev.dstIdentity !== 0 ? `, , ${ids}` : '';
  if (ev.type === 'trace') {
    header =
      `${cpuPrefix(ev.cpu)} MARK ${hex(ev.hash)} FROM ${ev.source} ${ev.obsPoint}: ${ev.origLen} bytes (${ev.capLen} captured), state ${ev.reason}` +
      (ev.ifindex !== 0 ? `, interface ${ifname}` : '') +
      identityPart +
      `, orig-ip ${origIp}` +
      (ev.dstId !== 0 ? `, to endpoint ${ev.dstId}` : '') +
      '\n';
  } else {
    header =
      `${cpuPrefix(ev.cpu)} MARK ${hex(ev.hash)} FROM ${ev.source} DROP: ${ev.origLen} bytes, reason ${dropReasonText(ev.reason)}` +
      identityPart +
      (ev.dstId !== 0 ? `, to endpoint ${ev.dstId}` : '') +
      '\n';
  }
  return withDissection(header, ev, verbosity);
}

/** -vv: a separator, the layers, then the header line (the order the seed's console shows). */
function withDissection(header: string, ev: DatapathEvent, verbosity: number): string {
  if (verbosity < 2) return header;
  const layers = ev.capLen > 0 ? layerLines(ev.data) : [];
  return [MONITOR_SEPARATOR, ...layers].join('\n') + '\n' + header;
}

interface DissectSummary {
  ethernet?: string;
  ipv4?: string;
  tcp?: string;
  udp?: string;
  icmpv4?: string;
  arp?: string;
  l2?: { src: string; dst: string };
  l3?: { src: string; dst: string };
  l4?: { src: string; dst: string };
}

function dissectSummary(data: Uint8Array): DissectSummary | undefined {
  if (data.byteLength === 0) return undefined;
  const d = dissect(data);
  const lines = layerLines(data);
  const find = (name: string): string | undefined => lines.find((l) => l.startsWith(name + '\t'));
  const s: DissectSummary = {};
  const set = (k: 'ethernet' | 'ipv4' | 'tcp' | 'udp' | 'icmpv4' | 'arp', name: string): void => {
    const v = find(name);
    if (v) s[k] = v;
  };
  set('ethernet', 'Ethernet');
  set('arp', 'ARP');
  set('ipv4', 'IPv4');
  set('tcp', 'TCP');
  set('udp', 'UDP');
  set('icmpv4', 'ICMPv4');
  if (d.ethernet) s.l2 = { src: d.ethernet.src, dst: d.ethernet.dst };
  if (d.ipv4) s.l3 = { src: d.ipv4.src, dst: d.ipv4.dst };
  const p = d.tcp ?? d.udp;
  if (p) s.l4 = { src: String(p.srcPort), dst: String(p.dstPort) };
  return s;
}

/** The JSON object of `monitor -j` (cilium's TraceNotifyVerbose / DropNotifyVerbose / PolicyVerdictNotify shapes). */
export function monitorJson(ev: DatapathEvent, opts: MonitorFormatOptions = {}): Record<string, unknown> {
  const summary = dissectSummary(ev.data);
  const common = { cpu: cpuPrefix(ev.cpu), type: ev.type, mark: hex(ev.hash) };
  switch (ev.type) {
    case 'trace':
      return {
        ...common,
        ifindex: opts.ifname ?? String(ev.ifindex),
        state: ev.reason,
        observationPoint: ev.obsPoint,
        traceSummary: traceSummary(ev.obsPoint, ev.source, ev.dstId),
        source: ev.source,
        bytes: ev.origLen,
        srcLabel: ev.srcIdentity,
        dstLabel: ev.dstIdentity,
        dstID: ev.dstId,
        ...(summary ? { summary } : {}),
      };
    case 'drop':
      return {
        ...common,
        reason: dropReasonText(ev.reason),
        source: ev.source,
        bytes: ev.origLen,
        srcLabel: ev.srcIdentity,
        dstLabel: ev.dstIdentity,
        dstID: ev.dstId,
        Line: ev.line,
        File: bpfFileName(ev.file),
        ExtError: 0,
        Ifindex: ev.ifindex,
        ...(summary ? { summary } : {}),
      };
    case 'policy-verdict':
      return {
        ...common,
        source: ev.source,
        bytes: ev.origLen,
        srcLabel: ev.srcIdentity,
        dstLabel: ev.dstIdentity,
        direction: ev.direction,
        action: ev.action,
        match: ev.match,
        proto: ev.proto,
        dport: ev.dport,
        ...(summary ? { summary } : {}),
      };
  }
}
