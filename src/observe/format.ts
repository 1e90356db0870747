// `hubble observe` output: compact lines, dict blocks, an aligned table and JSON (GetFlowsResponse objects).
import { dropReasonText, MSG_DROP, MSG_POLICY_VERDICT, MSG_TRACE, policyMatchName, reservedIdentityName, timeToNs, type Flow } from './model.js';
import { OBS_POINTS } from './types.js';

export type OutputFormat = 'compact' | 'dict' | 'table' | 'json' | 'jsonpb';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['compact', 'dict', 'table', 'json', 'jsonpb'];

export interface FormatOptions {
  /** Print the node name (`--print-node-name`). */
  nodeName?: boolean;
  /** Format times in UTC instead of the local time zone. */
  utc?: boolean;
  /** Show pod names instead of IPs where known (default true, as Hubble). */
  ipTranslation?: boolean;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Go's time.StampMilli, "Jan _2 15:04:05.000"; "N/A" for a missing or invalid time. */
export function formatStampMilli(time: string | undefined, utc = false): string {
  const ns = time === undefined ? undefined : timeToNs(time);
  if (ns === undefined) return 'N/A';
  const ms = Number(ns / 1_000_000n);
  const d = new Date(ms);
  const [mon, day, h, m, s] = utc
    ? [d.getUTCMonth(), d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getMonth(), d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  const two = (n: number): string => String(n).padStart(2, '0');
  const milli = String(((ms % 1000) + 1000) % 1000).padStart(3, '0');
  return `${MONTHS[mon]} ${String(day).padStart(2, ' ')} ${two(h)}:${two(m)}:${two(s)}.${milli}`;
}

function ports(f: Flow): [string, string] {
  const l4 = f.l4;
  const p = l4?.TCP ?? l4?.UDP ?? l4?.SCTP;
  if (!p) return ['', ''];
  return [String(p.source_port ?? 0), String(p.destination_port ?? 0)];
}

function hostname(ip: string, port: string, ns: string | undefined, pod: string | undefined, translate: boolean, svc?: { name?: string; namespace?: string }): string {
  let host = ip;
  if (translate && pod) host = ns ? `${ns}/${pod}` : pod;
  // As Hubble's printer: no pod, but a service frontend: "namespace/service".
  else if (translate && svc?.name) host = svc.namespace ? `${svc.namespace}/${svc.name}` : svc.name;
  if (port !== '' && port !== '0') return ip.includes(':') && host === ip ? `[${host}]:${port}` : `${host}:${port}`;
  return host;
}

/** Source and destination as Hubble prints them: "ns/pod:port", else the IP (or the MACs of a non-IP frame). */
export function hostNames(f: Flow, opts: FormatOptions = {}): [string, string] {
  if (!f.IP) {
    if (f.ethernet) return [f.ethernet.source ?? '', f.ethernet.destination ?? ''];
    return ['', ''];
  }
  const translate = opts.ipTranslation ?? true;
  const [sp, dp] = ports(f);
  return [
    hostname(f.IP.source ?? '', sp, f.source?.namespace, f.source?.pod_name, translate, f.source_service),
    hostname(f.IP.destination ?? '', dp, f.destination?.namespace, f.destination?.pod_name, translate, f.destination_service),
  ];
}

/** "(ID:1234)", or "(world)" / "(host)" / "(remote-node)" … for reserved identities. */
export function identityText(id: number | undefined): string {
  const n = id ?? 0;
  const reserved = n !== 0 ? reservedIdentityName(n) : undefined;
  return reserved ? `(${reserved})` : `(ID:${n})`;
}

/** The TYPE column: observation point, drop reason, or "policy-verdict:L3-L4 INGRESS". */
export function flowTypeText(f: Flow): string {
  // Hubble: "<l7 protocol>-<record type>", e.g. http-request, http-response.
  if (f.l7) return `${f.l7.http ? 'http' : 'l7'}-${(f.l7.type ?? 'UNKNOWN_L7_TYPE').toLowerCase()}`;
  const sub = f.event_type.sub_type ?? 0;
  switch (f.event_type.type) {
    case MSG_TRACE:
      return OBS_POINTS[sub] ?? 'unknown trace point';
    case MSG_DROP:
      return dropReasonText(sub);
    case MSG_POLICY_VERDICT:
      return `policy-verdict:${policyMatchName(f.policy_match_type ?? 0)} ${f.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN'}`;
    default:
      return 'UNKNOWN';
  }
}

/** The VERDICT column; policy verdicts read ALLOWED / DENIED / AUDITED. */
export function verdictText(f: Flow): string {
  if (f.event_type.type === MSG_POLICY_VERDICT) {
    if (f.verdict === 'FORWARDED' || f.verdict === 'REDIRECTED') return 'ALLOWED';
    if (f.verdict === 'DROPPED' || f.verdict === 'ERROR') return 'DENIED';
    if (f.verdict === 'AUDIT') return 'AUDITED';
  }
  return f.verdict;
}

/** `Aug  6 06:50:26.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)` */
export function compactLine(f: Flow, opts: FormatOptions = {}): string {
  let [src, dst] = hostNames(f, opts);
  let [srcId, dstId] = [identityText(f.source?.identity), identityText(f.destination?.identity)];
  let arrow = '->';
  if (f.is_reply === undefined) arrow = '<>';
  else if (f.is_reply) {
    [src, dst] = [dst, src];
    [srcId, dstId] = [dstId, srcId];
    arrow = '<-';
  }
  const node = opts.nodeName ? ` [${f.node_name ?? ''}]` : '';
  return `${formatStampMilli(f.time, opts.utc)}${node}: ${src} ${srcId} ${arrow} ${dst} ${dstId} ${flowTypeText(f)} ${verdictText(f)} (${f.Summary ?? ''})`;
}

export const DICT_SEPARATOR = '------------';

/** One `-o dict` block (without the separator Hubble prints between blocks). */
export function dictBlock(f: Flow, opts: FormatOptions = {}): string {
  const [src, dst] = hostNames(f, opts);
  const lines = [`  TIMESTAMP: ${formatStampMilli(f.time, opts.utc)}`];
  if (opts.nodeName) lines.push(`       NODE: ${f.node_name ?? ''}`);
  lines.push(`     SOURCE: ${src}`, `DESTINATION: ${dst}`, `       TYPE: ${flowTypeText(f)}`, `    VERDICT: ${verdictText(f)}`, `    SUMMARY: ${f.Summary ?? ''}`);
  return lines.join('\n');
}

/** Cells of one `-o table` row, in header order. */
export function tableRow(f: Flow, opts: FormatOptions = {}): string[] {
  const [src, dst] = hostNames(f, opts);
  const row = [formatStampMilli(f.time, opts.utc)];
  if (opts.nodeName) row.push(f.node_name ?? '');
  row.push(src, dst, flowTypeText(f), verdictText(f), f.Summary ?? '');
  return row;
}

export function tableHeader(opts: FormatOptions = {}): string[] {
  return opts.nodeName ? ['TIMESTAMP', 'NODE', 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'] : ['TIMESTAMP', 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'];
}

/** Aligns rows like Go's tabwriter with padding 3 (the last column is not padded). */
export function alignRows(rows: string[][], padding = 3): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + padding))).join('').trimEnd()).join('\n') + (rows.length ? '\n' : '');
}

/** Flow keys in flow.proto declaration order, so JSON reads like Hubble's. */
const FLOW_KEY_ORDER = [
  'time', 'uuid', 'verdict', 'drop_reason', 'ethernet', 'IP', 'l4', 'source', 'destination', 'Type', 'node_name',
  'source_names', 'destination_names', 'l7', 'event_type', 'source_service', 'destination_service', 'traffic_direction', 'policy_match_type', 'trace_observation_point',
  'trace_reason', 'file', 'drop_reason_desc', 'is_reply', 'interface', 'Summary',
];

export function orderFlowKeys(f: Flow): Flow {
  const src = f as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of FLOW_KEY_ORDER) if (src[k] !== undefined) out[k] = src[k];
  for (const [k, v] of Object.entries(src)) if (!(k in out) && v !== undefined) out[k] = v;
  return out as unknown as Flow;
}

/** `-o json`: the whole GetFlowsResponse as one line, as `hubble observe -o jsonpb` prints it. */
export function jsonLine(f: Flow): string {
  const flow = orderFlowKeys(f) as unknown as Record<string, unknown>;
  // protojson prints uint64 as a string.
  if (f.l7?.latency_ns !== undefined) flow['l7'] = { ...f.l7, latency_ns: String(f.l7.latency_ns) };
  const res: Record<string, unknown> = { flow };
  if (f.node_name) res['node_name'] = f.node_name;
  res['time'] = f.time;
  return JSON.stringify(res);
}

/** Formats flows for non-streaming output (table needs all rows to align). */
export function formatFlows(flows: Flow[], format: OutputFormat, opts: FormatOptions = {}): string {
  switch (format) {
    case 'compact':
      return flows.map((f) => compactLine(f, opts) + '\n').join('');
    case 'dict':
      return flows.map((f) => dictBlock(f, opts) + '\n').join(DICT_SEPARATOR + '\n');
    case 'table':
      return flows.length === 0 ? '' : alignRows([tableHeader(opts), ...flows.map((f) => tableRow(f, opts))]);
    case 'json':
    case 'jsonpb':
      return flows.map((f) => jsonLine(f) + '\n').join('');
  }
}
