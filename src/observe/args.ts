// `tendril observe` arguments → a GetFlows query, with hubble observe's defaults (pure, for the CLI and its tests).
import { invalid } from './errors.js';
import { FilterBuilder } from './filter.js';
import type { FlowsQuery } from './codec.js';

/** How many flows `observe` prints when neither a count, a time range nor --follow is given (as Hubble). */
export const DEFAULT_LAST = 20;

const UNITS: Record<string, bigint> = { ns: 1n, us: 1_000n, µs: 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * A --since/--until value → nanoseconds since the epoch: a Go-style duration before now ("30s", "5m", "1h30m"),
 * RFC 3339 ("2025-08-06T06:50:26Z", any fraction) or StampMilli ("Aug  6 06:50:26.228", this year, local time).
 */
export function parseTimeArg(text: string, nowMs = Date.now()): bigint {
  const t = text.trim();
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(t)) {
    let total = 0n;
    for (const m of t.matchAll(/(\d+)(?:\.(\d+))?(ns|us|µs|ms|s|m|h)/g)) {
      const unit = UNITS[m[3]!]!;
      total += BigInt(m[1]!) * unit;
      if (m[2]) total += (BigInt(m[2]) * unit) / 10n ** BigInt(m[2].length);
    }
    return BigInt(nowMs) * 1_000_000n - total;
  }
  const rfc = /^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?$/.exec(t);
  if (rfc) {
    const ms = Date.parse(`${rfc[1]!.replace(' ', 'T')}${rfc[3] ?? 'Z'}`);
    if (!Number.isNaN(ms)) return BigInt(ms) * 1_000_000n + BigInt((rfc[2] ?? '').padEnd(9, '0') || '0');
  }
  const stamp = /^([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?$/.exec(t);
  if (stamp && MONTHS.includes(stamp[1]!)) {
    const d = new Date(nowMs);
    const ms = new Date(d.getFullYear(), MONTHS.indexOf(stamp[1]!), Number(stamp[2]), Number(stamp[3]), Number(stamp[4]), Number(stamp[5])).getTime();
    return BigInt(ms) * 1_000_000n + BigInt((stamp[6] ?? '').padEnd(9, '0') || '0');
  }
  throw invalid(`Invalid time "${text}": expected a duration like 5m or 1h30m, RFC 3339, or "Jan  2 15:04:05.000"`);
}

/** One filter flag as given on the command line, in order (`not` negates the next one). */
export type FilterArg = { flag: 'not' } | { flag: string; value: string };

export interface ObserveArgs {
  filters: FilterArg[];
  last?: number;
  first?: number;
  all?: boolean;
  follow?: boolean;
  since?: string;
  until?: string;
}

function count(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 1) throw invalid(`Invalid --${name} ${v}: expected a positive number`);
  return v;
}

/**
 * Builds the request `hubble observe` would send. With --namespace and pod flags together, the namespace is the
 * namespace of the pods given without one (rather than a filter of its own, which would match the whole namespace).
 */
export function buildQuery(a: ObserveArgs, nowMs = Date.now()): FlowsQuery {
  const last = count('last', a.last);
  const first = count('first', a.first);
  if (last !== undefined && first !== undefined) throw invalid('--last and --first cannot be combined');
  if (first !== undefined && a.follow) throw invalid('--first cannot be combined with --follow');
  if (a.all && (last !== undefined || first !== undefined)) throw invalid('--all cannot be combined with --last or --first');

  const podFlags = a.filters.some((f) => f.flag === 'pod' || f.flag === 'from-pod' || f.flag === 'to-pod');
  const ns = podFlags ? a.filters.find((f): f is { flag: string; value: string } => f.flag === 'namespace' && 'value' in f)?.value : undefined;
  const b = new FilterBuilder(ns ?? 'default');
  for (const f of a.filters) {
    if (f.flag === 'not') b.not();
    else if ('value' in f) {
      if (f.flag === 'namespace' && ns !== undefined) continue;
      b.apply(f.flag, f.value);
    }
  }
  const { whitelist, blacklist } = b.build();

  const q: FlowsQuery = { whitelist, blacklist, follow: a.follow ?? false };
  if (a.since !== undefined) q.since = parseTimeArg(a.since, nowMs);
  if (a.until !== undefined) q.until = parseTimeArg(a.until, nowMs);
  if (first !== undefined) {
    q.first = true;
    q.number = first;
  } else if (last !== undefined) q.number = last;
  else if (a.all) q.number = Number.MAX_SAFE_INTEGER;
  else if (!a.follow && q.since === undefined && q.until === undefined) q.number = DEFAULT_LAST;
  return q;
}
