// Hubble's FlowFilter semantics (AND across fields, OR within a field and across filters, whitelist minus
// blacklist) and the builder that turns `tendril observe` flags into filters the way `hubble observe` does.
import { parseCidr, parseIPv4, cidrContains } from '../util/ip.js';
import { invalid } from './errors.js';
import { DROP_REASON_ENUM, MSG_DROP, MSG_POLICY_VERDICT, MSG_TRACE, RESERVED_IDENTITIES, VERDICTS, type Flow, type IPVersion, type TCPFlags, type TrafficDirection, type Verdict } from './model.js';
import { OBS_POINTS } from './types.js';

/** flow.FlowFilter with proto field names; every field optional. */
export interface FlowFilter {
  uuid?: string[];
  source_ip?: string[];
  source_pod?: string[];
  source_fqdn?: string[];
  source_label?: string[];
  source_service?: string[];
  destination_ip?: string[];
  destination_pod?: string[];
  destination_fqdn?: string[];
  destination_label?: string[];
  destination_service?: string[];
  traffic_direction?: TrafficDirection[];
  verdict?: Verdict[];
  drop_reason_desc?: string[];
  interface?: Array<{ index?: number; name?: string }>;
  event_type?: Array<{ type?: number; match_sub_type?: boolean; sub_type?: number }>;
  http_status_code?: string[];
  protocol?: string[];
  source_port?: string[];
  destination_port?: string[];
  reply?: boolean[];
  dns_query?: string[];
  source_identity?: number[];
  destination_identity?: number[];
  http_method?: string[];
  http_path?: string[];
  tcp_flags?: TCPFlags[];
  node_name?: string[];
  ip_version?: IPVersion[];
}

export type FlowPredicate = (flow: Flow) => boolean;

type Side = 'source' | 'destination';

/** Compiles one filter; throws TENDRIL_ERR_OBSERVE_INVALID for values that cannot match anything sensibly. */
export function compileFilter(f: FlowFilter): FlowPredicate {
  const checks: FlowPredicate[] = [];
  const has = <T>(a: T[] | undefined): a is T[] => a !== undefined && a.length > 0;

  if (has(f.uuid)) {
    const set = new Set(f.uuid);
    checks.push((fl) => set.has(fl.uuid));
  }
  for (const side of ['source', 'destination'] as const) {
    const ips = f[`${side}_ip`];
    if (has(ips)) checks.push(ipMatcher(ips, side));
    const pods = f[`${side}_pod`];
    if (has(pods)) checks.push(podMatcher(pods, side));
    const labels = f[`${side}_label`];
    if (has(labels)) {
      const sels = labels.map(parseSelector);
      checks.push((fl) => sels.some((s) => s(fl[side]?.labels ?? [])));
    }
    const ids = f[`${side}_identity`];
    if (has(ids)) checks.push((fl) => ids.includes(fl[side]?.identity ?? 0));
    const ports = f[`${side}_port`];
    if (has(ports)) checks.push(portMatcher(ports, side));
    // Tendril has no DNS names or services on flows yet: such a filter matches nothing.
    if (has(f[`${side}_fqdn`]) || has(f[`${side}_service`])) checks.push(() => false);
  }
  if (has(f.http_status_code)) checks.push(httpStatusMatcher(f.http_status_code));
  if (has(f.http_method)) {
    const ms = f.http_method.map((m) => m.toUpperCase());
    checks.push((fl) => fl.l7?.http !== undefined && ms.includes((fl.l7.http.method ?? '').toUpperCase()));
  }
  if (has(f.http_path)) checks.push(httpPathMatcher(f.http_path));
  // Tendril has no DNS visibility: such a filter matches nothing.
  if (has(f.dns_query)) checks.push(() => false);
  if (has(f.traffic_direction)) {
    const dirs = f.traffic_direction;
    checks.push((fl) => dirs.includes(fl.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN'));
  }
  if (has(f.verdict)) {
    const vs = f.verdict;
    checks.push((fl) => vs.includes(fl.verdict));
  }
  if (has(f.drop_reason_desc)) {
    const rs = f.drop_reason_desc;
    checks.push((fl) => fl.drop_reason_desc !== undefined && rs.includes(fl.drop_reason_desc));
  }
  if (has(f.interface)) {
    const ifs = f.interface;
    checks.push((fl) =>
      ifs.some((i) => (i.index === undefined || i.index === 0 || i.index === fl.interface?.index) && (!i.name || i.name === fl.interface?.name)),
    );
  }
  if (has(f.event_type)) {
    const ets = f.event_type;
    checks.push((fl) => ets.some((e) => (e.type ?? 0) === fl.event_type.type && (!e.match_sub_type || (e.sub_type ?? 0) === (fl.event_type.sub_type ?? 0))));
  }
  if (has(f.protocol)) checks.push(protocolMatcher(f.protocol));
  if (has(f.reply)) {
    const rs = f.reply;
    checks.push((fl) => fl.is_reply !== undefined && rs.includes(fl.is_reply));
  }
  if (has(f.tcp_flags)) {
    const sets = f.tcp_flags;
    checks.push((fl) => {
      const flags = fl.l4?.TCP?.flags;
      if (!flags) return false;
      return sets.some((want) => Object.entries(want).every(([k, v]) => v !== true || flags[k as keyof TCPFlags] === true));
    });
  }
  if (has(f.node_name)) {
    const res = f.node_name.map(nodePattern);
    checks.push((fl) => res.some((re) => re.test(fl.node_name ?? '')));
  }
  if (has(f.ip_version)) {
    const vs = f.ip_version;
    checks.push((fl) => vs.includes(fl.IP?.ipVersion ?? 'IP_NOT_USED'));
  }
  return (fl) => checks.every((c) => c(fl));
}

/** A flow passes if it matches any whitelist filter (or there is none) and no blacklist filter. */
export function compileFilters(whitelist: FlowFilter[] = [], blacklist: FlowFilter[] = []): FlowPredicate {
  const white = whitelist.map(compileFilter);
  const black = blacklist.map(compileFilter);
  return (fl) => (white.length === 0 || white.some((w) => w(fl))) && !black.some((b) => b(fl));
}

/** Whether some filter is given and every one of them reads only these fields (of FlowFilter). */
export function filtersOnly(whitelist: readonly FlowFilter[], blacklist: readonly FlowFilter[], fields: ReadonlySet<string>): boolean {
  let any = false;
  for (const f of [...whitelist, ...blacklist]) {
    for (const k in f) {
      const v = (f as Record<string, unknown>)[k];
      if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
      if (!fields.has(k)) return false;
      any = true;
    }
  }
  return any;
}

function ipMatcher(values: string[], side: Side): FlowPredicate {
  const exact = new Set<string>();
  const cidrs: Array<ReturnType<typeof parseCidr>> = [];
  for (const v of values) {
    if (v.includes('/')) {
      try {
        cidrs.push(parseCidr(v));
      } catch (err) {
        throw invalid(`Invalid IP filter "${v}": ${(err as Error).message}`);
      }
    } else {
      if (!v.includes(':')) {
        try {
          parseIPv4(v);
        } catch (err) {
          throw invalid(`Invalid IP filter "${v}": ${(err as Error).message}`);
        }
      }
      exact.add(v);
    }
  }
  return (fl) => {
    const ip = fl.IP?.[side];
    if (!ip) return false;
    if (exact.has(ip)) return true;
    if (cidrs.length === 0 || ip.includes(':')) return false;
    const n = parseIPv4(ip);
    return cidrs.some((c) => cidrContains(c, n));
  };
}

/** "ns/pod-prefix", "ns/" (whole namespace) or "pod-prefix" (any namespace). */
function podMatcher(values: string[], side: Side): FlowPredicate {
  const pats = values.map((v) => {
    if (v === '') throw invalid('Invalid pod filter "": expected [namespace/]pod-name-prefix');
    const i = v.indexOf('/');
    return i < 0 ? { ns: undefined, prefix: v } : { ns: v.slice(0, i), prefix: v.slice(i + 1) };
  });
  return (fl) => {
    const ep = fl[side];
    if (!ep) return false;
    return pats.some((p) => {
      if (p.ns !== undefined && p.ns !== (ep.namespace ?? '')) return false;
      if (p.prefix === '') return p.ns !== undefined && p.ns !== '';
      return (ep.pod_name ?? '').startsWith(p.prefix);
    });
  };
}

function portMatcher(values: string[], side: Side): FlowPredicate {
  const ports = values.map((v) => {
    if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw invalid(`Invalid port filter "${v}": expected a number 0-65535`);
    return Number(v);
  });
  const key = side === 'source' ? 'source_port' : 'destination_port';
  return (fl) => {
    const l4 = fl.l4;
    const p = l4?.TCP?.[key] ?? l4?.UDP?.[key] ?? l4?.SCTP?.[key];
    return p !== undefined && ports.includes(p);
  };
}

/** Hubble's http_status_code: "200" (a code) or "4+", "40+" (a prefix); only responses have a code. */
function httpStatusMatcher(values: string[]): FlowPredicate {
  const full: number[] = [];
  const prefixes: string[] = [];
  for (const v of values) {
    if (/^\d{3}$/.test(v)) full.push(Number(v));
    else if (/^\d{1,2}\+$/.test(v)) prefixes.push(v.slice(0, -1));
    else throw invalid(`Invalid HTTP status code filter "${v}": expected a code like 200 or a prefix like 4+ or 40+`);
  }
  return (fl) => {
    const code = fl.l7?.http?.code ?? 0;
    if (code === 0) return false;
    return full.includes(code) || prefixes.some((p) => String(code).startsWith(p));
  };
}

/** Hubble's http_path: regular expressions (unanchored) over the path of the request's URL. */
function httpPathMatcher(values: string[]): FlowPredicate {
  const res = values.map((v) => {
    try {
      return new RegExp(v);
    } catch (err) {
      throw invalid(`Invalid HTTP path filter "${v}": ${(err as Error).message}`);
    }
  });
  return (fl) => {
    const url = fl.l7?.http?.url;
    if (url === undefined) return false;
    const path = urlPath(url);
    return res.some((re) => re.test(path));
  };
}

/** The path of a request URL ("http://host/a/b?q" → "/a/b"; a bare "/a?q" → "/a"). */
export function urlPath(url: string): string {
  let rest = url;
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(rest);
  if (scheme) rest = rest.slice(scheme[0].length);
  const end = rest.search(/[?#]/);
  const path = end < 0 ? rest : rest.slice(0, end);
  return path === '' ? '/' : path;
}

const L4_PROTOCOLS = ['tcp', 'udp', 'sctp', 'icmp', 'icmpv4', 'icmpv6'];
const L7_PROTOCOLS = ['http', 'dns', 'kafka'];

function protocolMatcher(values: string[]): FlowPredicate {
  const want = values.map((v) => {
    const p = v.toLowerCase();
    if (!L4_PROTOCOLS.includes(p) && !L7_PROTOCOLS.includes(p)) {
      throw invalid(`Invalid protocol filter "${v}": expected one of ${[...L4_PROTOCOLS, ...L7_PROTOCOLS].join(', ')}`);
    }
    return p;
  });
  return (fl) => {
    if (fl.l7?.http !== undefined && want.includes('http')) return true;
    const l4 = fl.l4;
    if (!l4) return false;
    const kinds: string[] = [];
    if (l4.TCP) kinds.push('tcp');
    if (l4.UDP) kinds.push('udp');
    if (l4.SCTP) kinds.push('sctp');
    if (l4.ICMPv4) kinds.push('icmp', 'icmpv4');
    if (l4.ICMPv6) kinds.push('icmp', 'icmpv6');
    return want.some((w) => kinds.includes(w));
  };
}

/** Node name patterns as Hubble's: "*" wildcards; a "cluster/" part is accepted and ignored (one cluster). */
function nodePattern(p: string): RegExp {
  const name = p.includes('/') ? p.slice(p.indexOf('/') + 1) || '*' : p;
  const re = name
    .split('*')
    .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${re}$`);
}

interface ParsedLabel {
  source: string;
  key: string;
  value: string;
}

/** "k8s:app=curl" → {source k8s, key app, value curl}; "reserved:host" → {source reserved, key host, value ""}. */
export function parseLabel(label: string): ParsedLabel {
  const eq = label.indexOf('=');
  const kv = eq < 0 ? label : label.slice(0, eq);
  const value = eq < 0 ? '' : label.slice(eq + 1);
  const colon = kv.indexOf(':');
  return colon < 0 ? { source: 'any', key: kv, value } : { source: kv.slice(0, colon), key: kv.slice(colon + 1), value };
}

type LabelSelector = (labels: string[]) => boolean;

/**
 * Kubernetes label selector syntax over flow labels: "app=curl,tier!=db", "app in (a,b)", "!app", "k8s:app".
 * A key without a source ("app") matches any source, as Hubble's "any:" default.
 */
export function parseSelector(text: string): LabelSelector {
  const reqs = splitRequirements(text).map((r) => parseRequirement(r, text));
  if (reqs.length === 0) throw invalid(`Invalid label selector "${text}": empty`);
  return (labels) => {
    const parsed = labels.map(parseLabel);
    return reqs.every((r) => r(parsed));
  };
}

function splitRequirements(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out.filter((s) => s !== '');
}

function parseRequirement(r: string, whole: string): (labels: ParsedLabel[]) => boolean {
  const keyMatches = (sel: ParsedLabel, l: ParsedLabel): boolean => sel.key === l.key && (sel.source === 'any' || sel.source === l.source);
  let m = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(r);
  if (m) {
    const sel = parseLabel(m[1]!);
    const values = m[3]!.split(',').map((s) => s.trim());
    const notin = m[2] === 'notin';
    return (labels) => {
      const hit = labels.some((l) => keyMatches(sel, l) && values.includes(l.value));
      return notin ? !hit : hit;
    };
  }
  m = /^!\s*([^=!\s]+)$/.exec(r);
  if (m) {
    const sel = parseLabel(m[1]!);
    return (labels) => !labels.some((l) => keyMatches(sel, l));
  }
  m = /^([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)$/.exec(r);
  if (m) {
    const sel = parseLabel(m[1]!);
    const value = m[3]!;
    if (m[2] === '!=') return (labels) => !labels.some((l) => keyMatches(sel, l) && l.value === value);
    return (labels) => labels.some((l) => keyMatches(sel, l) && l.value === value);
  }
  m = /^([^=!\s()]+)$/.exec(r);
  if (m) {
    const sel = parseLabel(m[1]!);
    // "k8s:app=curl" was split above; a bare key means "has this label".
    return (labels) => labels.some((l) => keyMatches(sel, l));
  }
  throw invalid(`Invalid label selector "${whole}": cannot parse "${r}"`);
}

// ---------------------------------------------------------------------------------------------------------------
// CLI flags → filters

/** Monitor event types by name, with the sub-type names a `--type type:sub` may use. */
export const EVENT_TYPES: Record<string, number> = {
  drop: MSG_DROP,
  debug: 2,
  capture: 3,
  trace: MSG_TRACE,
  'policy-verdict': MSG_POLICY_VERDICT,
  'trace-sock': 7,
  l7: 129,
  agent: 130,
};

/** Which flags exist and how each fills the left (source side) and right (destination side) filters. */
const EITHER = ['pod', 'ip', 'label', 'port', 'identity', 'namespace', 'fqdn', 'service'] as const;
const FROM = ['from-pod', 'from-ip', 'from-label', 'from-port', 'from-identity', 'from-namespace', 'from-fqdn', 'from-service'] as const;
const TO = ['to-pod', 'to-ip', 'to-label', 'to-port', 'to-identity', 'to-namespace', 'to-fqdn', 'to-service'] as const;
const NEUTRAL = ['verdict', 'type', 'protocol', 'node-name', 'traffic-direction', 'tcp-flags', 'drop-reason-desc', 'interface', 'ip-version', 'uuid', 'http-status', 'http-method', 'http-path'] as const;
export const FILTER_FLAGS: readonly string[] = [...EITHER, ...FROM, ...TO, ...NEUTRAL];

interface Pair {
  left: FlowFilter;
  right: FlowFilter;
  /** Whether an either-side flag was used (then both left and right are needed). */
  split: boolean;
  used: boolean;
}

function newPair(): Pair {
  return { left: {}, right: {}, split: false, used: false };
}

/**
 * Builds whitelist and blacklist the way `hubble observe` does: a flag for either side (`--pod x`) puts
 * source_pod into the left filter and destination_pod into the right one (flows from OR to x); `--from-*`,
 * `--to-*` and neutral flags go into both. `--not` sends the next filter flag to the blacklist.
 */
export class FilterBuilder {
  private readonly white = newPair();
  private readonly black = newPair();
  private negateNext = false;

  /** @param defaultNamespace namespace for pod names given without one (Hubble uses "default"). */
  constructor(private readonly defaultNamespace = 'default') {}

  not(): void {
    this.negateNext = true;
  }

  apply(flag: string, value: string): void {
    const pair = this.negateNext ? this.black : this.white;
    this.negateNext = false;
    pair.used = true;
    const [kind, field] = splitFlag(flag);
    const values = this.convert(field, value);
    const add = (f: FlowFilter, side: Side | undefined): void => {
      for (const [k, v] of Object.entries(values(side))) {
        const cur = (f as Record<string, unknown[]>)[k] ?? [];
        (f as Record<string, unknown[]>)[k] = [...cur, ...(v as unknown[])];
      }
    };
    switch (kind) {
      case 'either':
        pair.split = true;
        add(pair.left, 'source');
        add(pair.right, 'destination');
        break;
      case 'from':
        add(pair.left, 'source');
        add(pair.right, 'source');
        break;
      case 'to':
        add(pair.left, 'destination');
        add(pair.right, 'destination');
        break;
      case 'neutral':
        add(pair.left, undefined);
        add(pair.right, undefined);
        break;
    }
  }

  build(): { whitelist: FlowFilter[]; blacklist: FlowFilter[] } {
    const out = (p: Pair): FlowFilter[] => (!p.used ? [] : p.split ? [p.left, p.right] : [p.left]);
    const result = { whitelist: out(this.white), blacklist: out(this.black) };
    // Compile once so a bad value fails here, before any request is sent.
    compileFilters(result.whitelist, result.blacklist);
    return result;
  }

  /** Turns one flag value into filter fields for a side. */
  private convert(field: string, value: string): (side: Side | undefined) => FlowFilter {
    const s = (side: Side | undefined): Side => side ?? 'source';
    switch (field) {
      case 'pod': {
        const v = value.includes('/') ? value : `${this.defaultNamespace}/${value}`;
        return (side) => ({ [`${s(side)}_pod`]: [v] });
      }
      case 'namespace':
        return (side) => ({ [`${s(side)}_pod`]: [`${value}/`] });
      case 'ip':
        return (side) => ({ [`${s(side)}_ip`]: [value] });
      case 'label':
        return (side) => ({ [`${s(side)}_label`]: [value] });
      case 'port':
        return (side) => ({ [`${s(side)}_port`]: [value] });
      case 'fqdn':
        return (side) => ({ [`${s(side)}_fqdn`]: [value] });
      case 'service':
        return (side) => ({ [`${s(side)}_service`]: [value] });
      case 'identity': {
        const id = parseIdentity(value);
        return (side) => ({ [`${s(side)}_identity`]: [id] });
      }
      case 'verdict': {
        const v = value.toUpperCase() as Verdict;
        if (!VERDICTS.includes(v)) throw invalid(`Invalid verdict "${value}": expected one of ${VERDICTS.slice(1).join(', ')}`);
        return () => ({ verdict: [v] });
      }
      case 'type': {
        const et = parseEventType(value);
        return () => ({ event_type: [et] });
      }
      case 'protocol':
        return () => ({ protocol: [value.toLowerCase()] });
      case 'node-name':
        return () => ({ node_name: [value] });
      case 'traffic-direction': {
        const d = value.toUpperCase();
        if (d !== 'INGRESS' && d !== 'EGRESS') throw invalid(`Invalid traffic direction "${value}": expected ingress or egress`);
        return () => ({ traffic_direction: [d] });
      }
      case 'tcp-flags': {
        const flags: TCPFlags = {};
        for (const f of value.split(',')) {
          const name = f.trim().toUpperCase();
          if (!['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].includes(name)) throw invalid(`Invalid TCP flag "${f}" in "${value}"`);
          flags[name as keyof TCPFlags] = true;
        }
        return () => ({ tcp_flags: [flags] });
      }
      case 'drop-reason-desc': {
        const name = value.toUpperCase();
        if (!Object.values(DROP_REASON_ENUM).includes(name)) throw invalid(`Invalid drop reason "${value}": expected a name like POLICY_DENIED`);
        return () => ({ drop_reason_desc: [name] });
      }
      case 'interface': {
        const iface = /^\d+$/.test(value) ? { index: Number(value) } : { name: value };
        return () => ({ interface: [iface] });
      }
      case 'ip-version': {
        const v = value === '4' || value.toLowerCase() === 'ipv4' ? 'IPv4' : value === '6' || value.toLowerCase() === 'ipv6' ? 'IPv6' : undefined;
        if (!v) throw invalid(`Invalid IP version "${value}": expected 4 or 6`);
        return () => ({ ip_version: [v] });
      }
      case 'uuid':
        return () => ({ uuid: [value] });
      case 'http-status':
        return () => ({ http_status_code: [value] });
      case 'http-method':
        return () => ({ http_method: [value] });
      case 'http-path':
        return () => ({ http_path: [value] });
      default:
        throw invalid(`Unknown filter flag "--${field}"`);
    }
  }
}

function splitFlag(flag: string): ['either' | 'from' | 'to' | 'neutral', string] {
  if ((EITHER as readonly string[]).includes(flag)) return ['either', flag];
  if ((FROM as readonly string[]).includes(flag)) return ['from', flag.slice(5)];
  if ((TO as readonly string[]).includes(flag)) return ['to', flag.slice(3)];
  if ((NEUTRAL as readonly string[]).includes(flag)) return ['neutral', flag];
  throw invalid(`Unknown filter flag "--${flag}"`);
}

/** A numeric identity or a reserved identity's name ("world", "reserved:host"). */
export function parseIdentity(value: string): number {
  if (/^\d+$/.test(value)) return Number(value);
  const name = value.startsWith('reserved:') ? value.slice(9) : value;
  for (const [id, n] of Object.entries(RESERVED_IDENTITIES)) if (n === name) return Number(id);
  throw invalid(`Invalid identity "${value}": expected a number or a reserved name (host, world, health, remote-node, …)`);
}

/** "trace", "trace:to-endpoint", "drop", "drop:133", "policy-verdict". */
export function parseEventType(value: string): { type: number; match_sub_type?: boolean; sub_type?: number } {
  const [name, sub] = value.split(':', 2) as [string, string | undefined];
  const type = EVENT_TYPES[name.toLowerCase()];
  if (type === undefined) throw invalid(`Invalid event type "${value}": expected one of ${Object.keys(EVENT_TYPES).join(', ')}`);
  if (sub === undefined || sub === '') return { type };
  let subType: number;
  if (/^\d+$/.test(sub)) subType = Number(sub);
  else if (type === MSG_TRACE && (OBS_POINTS as readonly string[]).includes(sub)) subType = (OBS_POINTS as readonly string[]).indexOf(sub);
  else throw invalid(`Invalid event sub-type "${sub}" in "${value}"`);
  return { type, match_sub_type: true, sub_type: subType };
}
