// HTTP rules of L7 policies: validation of `rules.http[]`, their canonical order and merge, and request matching.
import type { HttpHeaderMatch, HttpRule } from './types.js';

/** Reports an invalid field and never returns (the parser's Checker.fail). */
export type Fail = (field: string, reason: string) => never;

const HTTP_RULE_FIELDS = ['method', 'path', 'host', 'headers'];
/** Real CiliumNetworkPolicy fields Tendril does not implement. */
const HTTP_RULE_UNSUPPORTED = ['headerMatches'];
/** RFC 9110 token: what a header name may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The anchored RegExp of an extended regular expression (whole-string match), or what is wrong with it. JS syntax
 * is a superset of ERE/RE2 in some places; lookaround and backreferences are refused so a rule means the same here
 * as under Cilium (RE2 has neither).
 */
export function httpRegexProblem(source: string): string | undefined {
  if (/\(\?<?[=!]/.test(source)) return `${JSON.stringify(source)} uses lookaround, which extended regular expressions do not have`;
  if (/(^|[^\\])(\\\\)*\\[1-9]/.test(source)) return `${JSON.stringify(source)} uses a backreference, which extended regular expressions do not have`;
  try {
    new RegExp(`^(?:${source})$`);
  } catch (err) {
    return `${JSON.stringify(source)} is not a valid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`;
  }
  return undefined;
}

function regexField(fail: Fail, o: Record<string, unknown>, key: string, path: string): string | null {
  const x = o[key];
  if (x === undefined || x === null) return null;
  if (typeof x !== 'string') fail(`${path}.${key}`, `must be a string (an extended regular expression), got ${typeof x}`);
  if (x === '') fail(`${path}.${key}`, 'must not be empty (leave the field out to match any)');
  const problem = httpRegexProblem(x);
  if (problem !== undefined) fail(`${path}.${key}`, problem);
  return x;
}

/** `headers: ["X-Token", "X-Env: prod"]`: presence, or an exact value (leading/trailing blanks of the value trimmed). */
function parseHeader(fail: Fail, x: unknown, path: string): HttpHeaderMatch {
  if (typeof x !== 'string') fail(path, `must be a string ("Name" or "Name: value"), got ${x === null ? 'null' : typeof x}`);
  const colon = x.indexOf(':');
  const name = (colon < 0 ? x : x.slice(0, colon)).trim();
  if (!TOKEN.test(name)) fail(path, `${JSON.stringify(name)} is not a valid header name`);
  return { name: name.toLowerCase(), value: colon < 0 ? null : x.slice(colon + 1).trim() };
}

/** Validates `rules.http` (a non-empty list) into canonical HTTP rules, sorted and unique. */
export function parseHttpRules(fail: Fail, x: unknown, path: string): HttpRule[] {
  if (!Array.isArray(x)) fail(path, 'must be a list of HTTP rules');
  if (x.length === 0) fail(path, 'required (at least one rule; [{}] allows every request through the proxy)');
  const rules = x.map((r, i): HttpRule => {
    const p = `${path}[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) fail(p, 'must be an object');
    const o = r as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (HTTP_RULE_UNSUPPORTED.includes(k)) fail(`${p}.${k}`, 'is not supported by Tendril');
      if (!HTTP_RULE_FIELDS.includes(k)) fail(`${p}.${k}`, `unknown field (one of ${HTTP_RULE_FIELDS.join(', ')})`);
    }
    let headers: HttpHeaderMatch[] = [];
    if (o.headers !== undefined && o.headers !== null) {
      if (!Array.isArray(o.headers)) fail(`${p}.headers`, 'must be a list of "Name" or "Name: value" strings');
      headers = o.headers.map((h, j) => parseHeader(fail, h, `${p}.headers[${j}]`));
    }
    return { method: regexField(fail, o, 'method', p), path: regexField(fail, o, 'path', p), host: regexField(fail, o, 'host', p), headers: canonicalHeaders(headers) };
  });
  return mergeHttpRules(rules);
}

function canonicalHeaders(h: HttpHeaderMatch[]): HttpHeaderMatch[] {
  const seen = new Map<string, HttpHeaderMatch>();
  for (const x of h) seen.set(`${x.name}\n${x.value ?? ''}\n${x.value === null ? 0 : 1}`, x);
  return [...seen.values()].sort((a, b) => cmp(a.name, b.name) || cmp(a.value ?? '', b.value ?? '') || Number(a.value !== null) - Number(b.value !== null));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Stable identity of a rule (for merging). */
export function httpRuleKey(r: HttpRule): string {
  return JSON.stringify([r.method, r.path, r.host, r.headers.map((h) => [h.name, h.value])]);
}

/** The union of rule lists (any rule allows), sorted and unique. */
export function mergeHttpRules(...lists: readonly (readonly HttpRule[])[]): HttpRule[] {
  const byKey = new Map<string, HttpRule>();
  for (const l of lists) for (const r of l) byKey.set(httpRuleKey(r), r);
  return [...byKey.entries()].sort(([a], [b]) => cmp(a, b)).map(([, r]) => r);
}

/** One request as the proxy sees it. Header names lower-case; a repeated header lists every value. */
export interface HttpRequestView {
  method: string;
  /** The request target's path (with its query, as Cilium/Envoy match `:path`). */
  path: string;
  /** The Host header (or authority), '' when absent. */
  host: string;
  headers: ReadonlyMap<string, readonly string[]>;
}

/** A compiled rule list: whether a request is allowed, and by which rule. */
export class HttpMatcher {
  private readonly compiled: { rule: HttpRule; method: RegExp | null; path: RegExp | null; host: RegExp | null }[];

  constructor(readonly rules: readonly HttpRule[]) {
    const re = (s: string | null, flags = ''): RegExp | null => (s === null ? null : new RegExp(`^(?:${s})$`, flags));
    // Host names are case-insensitive; methods and paths are not.
    this.compiled = rules.map((rule) => ({ rule, method: re(rule.method), path: re(rule.path), host: re(rule.host, 'i') }));
  }

  /** The first rule allowing the request, or undefined (denied). */
  match(req: HttpRequestView): HttpRule | undefined {
    for (const c of this.compiled) {
      if (c.method !== null && !c.method.test(req.method)) continue;
      if (c.path !== null && !c.path.test(req.path)) continue;
      if (c.host !== null && !c.host.test(req.host)) continue;
      if (!c.rule.headers.every((h) => headerHolds(h, req.headers.get(h.name)))) continue;
      return c.rule;
    }
    return undefined;
  }
}

function headerHolds(h: HttpHeaderMatch, values: readonly string[] | undefined): boolean {
  if (values === undefined || values.length === 0) return false;
  return h.value === null || values.some((v) => v.trim() === h.value);
}
