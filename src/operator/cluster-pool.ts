// Cluster-pool IPAM (pure, no I/O): carves one or more cluster CIDRs into per-node pod CIDRs over a ClusterPoolState.
// A node holds one CIDR or more (its first is its primary; more come when it asks to grow) and hands extras back.
import type { ClusterPoolState } from '../store/index.js';
import { formatCidr, formatIPv4, parseIPv4, type Cidr } from '../util/ip.js';
import { OperatorError, type OperatorErrorCode } from './errors.js';

export const DEFAULT_CLUSTER_POOL_CIDR = '10.0.0.0/8';
export const DEFAULT_CLUSTER_POOL_MASK_SIZE = 24;
/** A node CIDR needs a network, a router and a broadcast address besides its pods: /30 is the smallest. */
export const MAX_CLUSTER_POOL_MASK_SIZE = 30;
/** How many node names an exhaustion message lists before it abbreviates. */
const MAX_NAMES_IN_MESSAGE = 8;

export interface ClusterPoolConfig {
  /** Canonical cluster CIDRs, e.g. ["10.0.0.0/8"], in the order node CIDRs are carved from them. */
  cidrs: string[];
  /** Prefix length of each node's CIDR, e.g. 24. */
  maskSize: number;
}

/** Raw pool input: `cidr` (one) or `cidrs` (several; both may be given and are joined). */
export interface PoolConfigInput {
  cidr?: string | undefined;
  cidrs?: readonly string[] | undefined;
  maskSize?: string | number | undefined;
}

/** How assign() found a node's CIDR. */
export type AssignSource =
  /** The node already had it. */
  | 'existing'
  /** The node left and came back before its CIDR was handed to anyone else. */
  | 'returned'
  /** The node already carried this CIDR (e.g. the pool state was lost) and it was free. */
  | 'adopted'
  /** The lowest free CIDR. */
  | 'new';

export interface PoolUsage {
  /** Number of node CIDRs the pool holds. */
  total: number;
  assigned: number;
  /** Held for departed nodes until their grace period ends. */
  releasing: number;
  free: number;
}

/** Names of the flags (or stored fields) an error talks about. */
interface FieldNames {
  cidr: string;
  mask: string;
}
const FLAG_NAMES: FieldNames = { cidr: '--cluster-pool-ipv4-cidr', mask: '--cluster-pool-ipv4-mask-size' };

/**
 * Validates the pool flags. Errors name the flag and the value. A CIDR with host bits set is refused rather than
 * silently truncated ("10.1.0.0/8" is more likely a typo than 10/8), and so are overlapping cluster CIDRs.
 */
export function validatePoolConfig(input: PoolConfigInput): ClusterPoolConfig {
  return checkPoolConfig(input, 'TENDRIL_ERR_INVALID_CONFIG', FLAG_NAMES);
}

export function checkPoolConfig(input: PoolConfigInput, code: OperatorErrorCode, names: FieldNames): ClusterPoolConfig {
  const fail = (msg: string): never => {
    throw new OperatorError(code, msg);
  };
  const texts = [...(input.cidr !== undefined ? [input.cidr] : []), ...(input.cidrs ?? [])];
  if (texts.length === 0) texts.push(DEFAULT_CLUSTER_POOL_CIDR);
  const cidrs: Cidr[] = [];
  for (const cidrText of texts) {
    const c = parseStrictCidr(cidrText, (why) => fail(`Invalid ${names.cidr} "${cidrText}": ${why}`));
    const clash = cidrs.find((o) => overlaps(o, c));
    if (clash) {
      return fail(`Invalid ${names.cidr} "${cidrText}": overlaps ${formatCidr(clash)} (cluster CIDRs must not overlap)`);
    }
    cidrs.push(c);
  }

  const rawMask = input.maskSize ?? DEFAULT_CLUSTER_POOL_MASK_SIZE;
  const maskText = String(rawMask).trim();
  if (!/^\d{1,2}$/.test(maskText)) {
    return fail(`Invalid ${names.mask} "${String(rawMask)}": expected a prefix length such as ${DEFAULT_CLUSTER_POOL_MASK_SIZE}`);
  }
  const maskSize = Number(maskText);
  if (maskSize > MAX_CLUSTER_POOL_MASK_SIZE) {
    return fail(
      `Invalid ${names.mask} ${maskSize}: node CIDRs must be /${MAX_CLUSTER_POOL_MASK_SIZE} or larger ` +
        `(a node needs a network, a router and a broadcast address besides its pods)`,
    );
  }
  for (const c of cidrs) {
    if (maskSize < c.bits) {
      return fail(
        `Invalid ${names.mask} ${maskSize}: a /${maskSize} node CIDR does not fit in ${names.cidr} ${formatCidr(c)} ` +
          `(the mask size must be at least ${c.bits})`,
      );
    }
  }
  return { cidrs: cidrs.map(formatCidr), maskSize };
}

/** An IPv4 CIDR in canonical form (host bits clear); `fail` gets the reason otherwise. */
export function parseStrictCidr(text: string, fail: (why: string) => never): Cidr {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text.trim());
  if (!m) return fail(`expected an IPv4 CIDR such as ${DEFAULT_CLUSTER_POOL_CIDR}`);
  let addr: number;
  try {
    addr = parseIPv4(m[1]!);
  } catch (err) {
    return fail((err as Error).message);
  }
  const bits = Number(m[2]);
  if (bits > 32) return fail(`prefix length ${bits} is above 32`);
  const c: Cidr = { base: (addr & maskBits(bits)) >>> 0, bits };
  if (c.base !== addr) return fail(`host bits are set (the network would be ${formatCidr(c)})`);
  return c;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const bits = Math.min(a.bits, b.bits);
  return (a.base & maskBits(bits)) >>> 0 === (b.base & maskBits(bits)) >>> 0;
}

function maskBits(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * The allocator. Holds a private copy of the state; `toState()` returns a JSON-safe snapshot to store.
 * Time is passed in (ms since the epoch) so the allocator stays deterministic.
 */
export class ClusterPool {
  readonly cidrs: readonly string[];
  readonly maskSize: number;
  private readonly pools: Cidr[];
  /** Addresses per node CIDR. */
  private readonly step: number;
  /** Number of node CIDRs over every cluster CIDR. */
  readonly capacity: number;
  /** What exhaustion messages call this pool ("cluster pool", "pool blue"). */
  private readonly label: string;
  /** node -> CIDR bases, in the order they were given (the first is the node's primary). */
  private readonly byNode = new Map<string, number[]>();
  /** CIDR base -> node, for assigned CIDRs. */
  private readonly byBase = new Map<number, string>();
  /** CIDR base -> departed node and the time (ms) after which the CIDR is free. */
  private readonly releasing = new Map<number, { node: string; until: number }>();

  private constructor(cfg: ClusterPoolConfig, label: string) {
    this.cidrs = [...cfg.cidrs];
    this.maskSize = cfg.maskSize;
    this.label = label;
    this.pools = cfg.cidrs.map((c) => {
      const [addr, bits] = c.split('/') as [string, string];
      return { base: parseIPv4(addr), bits: Number(bits) };
    });
    this.step = 2 ** (32 - cfg.maskSize);
    this.capacity = this.pools.reduce((n, p) => n + 2 ** (cfg.maskSize - p.bits), 0);
  }

  /** A pool with nothing assigned (`label` names it in messages). */
  static create(cfg: PoolConfigInput, label = 'cluster pool'): ClusterPool {
    return new ClusterPool(validatePoolConfig(cfg), label);
  }

  /**
   * Rebuilds the allocator from stored state (anything JSON gave back), refusing malformed or overlapping entries.
   * Reads the one-CIDR form of earlier versions too ({cidr, assigned: {node: "cidr"}}).
   */
  static fromState(value: unknown, label = 'cluster pool'): ClusterPool {
    const bad = (msg: string): never => {
      throw new OperatorError('TENDRIL_ERR_STATE', `Invalid ${label} state: ${msg}`);
    };
    if (!isRecord(value)) return bad(`expected an object, got ${describe(value)}`);
    const cidrsIn = value['cidrs'] ?? (value['cidr'] === undefined ? undefined : [value['cidr']]);
    if (!Array.isArray(cidrsIn) || cidrsIn.length === 0 || !cidrsIn.every((c) => typeof c === 'string')) {
      return bad(`"cidrs" must be a non-empty list of CIDR strings, got ${describe(cidrsIn)}`);
    }
    if (typeof value['maskSize'] !== 'number') return bad(`"maskSize" must be a number, got ${describe(value['maskSize'])}`);
    let cfg: ClusterPoolConfig;
    try {
      cfg = checkPoolConfig({ cidrs: cidrsIn as string[], maskSize: value['maskSize'] }, 'TENDRIL_ERR_STATE', { cidr: '"cidrs"', mask: '"maskSize"' });
    } catch (err) {
      return bad((err as Error).message.replace(/^Invalid /, ''));
    }
    const p = new ClusterPool(cfg, label);

    const assigned = value['assigned'] ?? {};
    if (!isRecord(assigned)) return bad(`"assigned" must be an object, got ${describe(assigned)}`);
    for (const [node, held] of Object.entries(assigned)) {
      const where = `assigned[${JSON.stringify(node)}]`;
      const list = typeof held === 'string' ? [held] : held;
      if (!Array.isArray(list) || list.length === 0) return bad(`${where} must be a list of CIDR strings, got ${describe(held)}`);
      for (const cidr of list) {
        if (typeof cidr !== 'string') return bad(`${where} must be a list of CIDR strings, got ${describe(cidr)} in it`);
        const base = p.baseOf(cidr);
        if (base === undefined) return bad(`${where} "${cidr}" is not a /${p.maskSize} inside ${p.cidrs.join(', ')}`);
        const other = p.byBase.get(base);
        if (other !== undefined) return bad(`${where} "${cidr}" is also assigned to node "${other}"`);
        p.byBase.set(base, node);
        p.byNode.set(node, [...(p.byNode.get(node) ?? []), base]);
      }
    }

    const releasing = value['releasing'] ?? {};
    if (!isRecord(releasing)) return bad(`"releasing" must be an object, got ${describe(releasing)}`);
    for (const [cidr, entry] of Object.entries(releasing)) {
      const where = `releasing[${JSON.stringify(cidr)}]`;
      const base = p.baseOf(cidr);
      if (base === undefined) return bad(`${where}: "${cidr}" is not a /${p.maskSize} inside ${p.cidrs.join(', ')}`);
      const owner = p.byBase.get(base);
      if (owner !== undefined) return bad(`${where}: "${cidr}" is also assigned to node "${owner}"`);
      if (!isRecord(entry) || typeof entry['node'] !== 'string' || typeof entry['until'] !== 'string') {
        return bad(`${where} must be {node, until}, got ${describe(entry)}`);
      }
      const until = Date.parse(entry['until']);
      if (Number.isNaN(until)) return bad(`${where}.until "${entry['until']}" is not an ISO time`);
      p.releasing.set(base, { node: entry['node'], until });
    }
    return p;
  }

  /**
   * The same assignments over other flags (cluster CIDRs added, or the order changed): refuses when a CIDR in use
   * (assigned or held) would fall outside them or the mask size differs, since that would re-number running nodes.
   */
  withConfig(cfg: ClusterPoolConfig): ClusterPool | { problem: string } {
    if (cfg.maskSize !== this.maskSize) return { problem: `mask /${this.maskSize} differs` };
    const next = new ClusterPool(cfg, this.label);
    for (const [node, bases] of this.byNode) {
      for (const base of bases) {
        if (next.baseOf(this.format(base)) === undefined) return { problem: `node "${node}" holds ${this.format(base)}, outside ${cfg.cidrs.join(', ')}` };
        next.byBase.set(base, node);
      }
      next.byNode.set(node, [...bases]);
    }
    for (const [base, r] of this.releasing) {
      if (next.baseOf(this.format(base)) === undefined) return { problem: `${this.format(base)} (held for "${r.node}") is outside ${cfg.cidrs.join(', ')}` };
      next.releasing.set(base, { ...r });
    }
    return next;
  }

  /** The node's primary CIDR, if it has one. */
  cidrOf(node: string): string | undefined {
    const bases = this.byNode.get(node);
    return bases === undefined ? undefined : this.format(bases[0]!);
  }

  /** Every CIDR of the node, primary first. */
  cidrsOf(node: string): string[] {
    return (this.byNode.get(node) ?? []).map((b) => this.format(b));
  }

  /** node -> CIDRs of every assigned node, ordered by primary CIDR. */
  assignments(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [node, bases] of [...this.byNode].sort((a, b) => a[1][0]! - b[1][0]!)) out.set(node, bases.map((b) => this.format(b)));
    return out;
  }

  /** Whether `cidr` (text) is one of this pool's node CIDRs (assigned or not). */
  holds(cidr: string): boolean {
    return this.baseOf(cidr) !== undefined;
  }

  /**
   * Gives `node` its primary CIDR: the one it has; else the one it left behind, if not yet handed out; else one of
   * `preferred` (CIDRs the node already carries) when free; else the lowest free one. A CIDR held for another
   * departed node is never handed out before its time. Throws TENDRIL_ERR_IPAM_EXHAUSTED when none is free.
   */
  assign(node: string, now: number, preferred?: string | readonly string[]): { cidr: string; source: AssignSource } {
    const have = this.byNode.get(node);
    if (have !== undefined) return { cidr: this.format(have[0]!), source: 'existing' };
    const [first] = this.grow(node, 1, now, typeof preferred === 'string' ? [preferred] : (preferred ?? []));
    return first!;
  }

  /**
   * Makes `node` hold at least `count` CIDRs (returned CIDRs left behind by it first, then `preferred` ones that are
   * free, then the lowest free). Returns what was added. Throws TENDRIL_ERR_IPAM_EXHAUSTED when the pool cannot give
   * the first missing one; a partial grow keeps what it added (the next call tries again).
   */
  grow(node: string, count: number, now: number, preferred: readonly string[] = []): Array<{ cidr: string; source: AssignSource }> {
    const added: Array<{ cidr: string; source: AssignSource }> = [];
    const held = (): number => this.byNode.get(node)?.length ?? 0;
    // Everything the node left behind comes back with it (its pods may still use those addresses).
    for (const [base, r] of [...this.releasing].sort((a, b) => a[0] - b[0])) {
      if (r.node === node) added.push({ cidr: this.take(node, base), source: 'returned' });
    }
    for (const text of preferred) {
      const base = this.baseOf(text);
      if (base !== undefined && this.isFree(base, now)) added.push({ cidr: this.take(node, base), source: 'adopted' });
    }
    while (held() < count) {
      const base = this.lowestFree(now);
      if (base === undefined) {
        if (added.length > 0) return added;
        throw new OperatorError('TENDRIL_ERR_IPAM_EXHAUSTED', this.exhaustedMessage(now));
      }
      added.push({ cidr: this.take(node, base), source: 'new' });
    }
    return added;
  }

  /**
   * The node hands back one of its extra CIDRs (it has no address in use there): free at once. The primary is
   * never handed back this way (it goes with the node). Returns false when the node does not hold it as an extra.
   */
  handBack(node: string, cidr: string): boolean {
    const base = this.baseOf(cidr);
    const bases = this.byNode.get(node);
    if (base === undefined || !bases || bases.length < 2 || bases[0] === base || !bases.includes(base)) return false;
    this.byNode.set(node, bases.filter((b) => b !== base));
    this.byBase.delete(base);
    return true;
  }

  /**
   * The node left: its CIDRs are held for it until now+graceMs (a node that comes back in time gets them again),
   * then expire() frees them. Returns the released CIDRs (empty if the node had none).
   */
  release(node: string, now: number, graceMs: number): string[] {
    const bases = this.byNode.get(node);
    if (bases === undefined) return [];
    this.byNode.delete(node);
    for (const base of bases) {
      this.byBase.delete(base);
      if (graceMs > 0) this.releasing.set(base, { node, until: now + graceMs });
    }
    return bases.map((b) => this.format(b));
  }

  /** Frees every CIDR whose grace period has ended (until <= now). Returns what was freed. */
  expire(now: number): Array<{ cidr: string; node: string }> {
    const freed: Array<{ cidr: string; node: string }> = [];
    for (const [base, r] of [...this.releasing].sort((a, b) => a[0] - b[0])) {
      if (r.until <= now) {
        this.releasing.delete(base);
        freed.push({ cidr: this.format(base), node: r.node });
      }
    }
    return freed;
  }

  /** When the next held CIDR becomes free (ms), if any is held. */
  nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const r of this.releasing.values()) if (next === undefined || r.until < next) next = r.until;
    return next;
  }

  usage(now: number): PoolUsage {
    let releasing = 0;
    for (const r of this.releasing.values()) if (r.until > now) releasing++;
    const assigned = this.byBase.size;
    return { total: this.capacity, assigned, releasing, free: this.capacity - assigned - releasing };
  }

  /** JSON-safe snapshot with a stable order (assigned by primary CIDR, releasing by CIDR). */
  toState(): ClusterPoolState {
    const assigned: Record<string, string[]> = {};
    for (const [node, cidrs] of this.assignments()) assigned[node] = cidrs;
    const releasing: ClusterPoolState['releasing'] = {};
    for (const [base, r] of [...this.releasing].sort((a, b) => a[0] - b[0])) {
      releasing[this.format(base)] = { node: r.node, until: new Date(r.until).toISOString() };
    }
    return { cidrs: [...this.cidrs], maskSize: this.maskSize, assigned, releasing };
  }

  private take(node: string, base: number): string {
    this.releasing.delete(base);
    this.byNode.set(node, [...(this.byNode.get(node) ?? []), base]);
    this.byBase.set(base, node);
    return this.format(base);
  }

  private lowestFree(now: number): number | undefined {
    for (const pool of this.pools) {
      const n = 2 ** (this.maskSize - pool.bits);
      for (let i = 0; i < n; i++) {
        const base = pool.base + i * this.step;
        if (this.isFree(base, now)) return base;
      }
    }
    return undefined;
  }

  private isFree(base: number, now: number): boolean {
    if (this.byBase.has(base)) return false;
    const r = this.releasing.get(base);
    return r === undefined || r.until <= now;
  }

  /** Base of `text` when it is exactly one of this pool's node CIDRs (canonical form), else undefined. */
  private baseOf(text: string): number | undefined {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text);
    if (!m || Number(m[2]) !== this.maskSize) return undefined;
    let addr: number;
    try {
      addr = parseIPv4(m[1]!);
    } catch {
      return undefined;
    }
    for (const pool of this.pools) {
      const size = 2 ** (32 - pool.bits);
      if (addr >= pool.base && addr - pool.base < size && (addr - pool.base) % this.step === 0) return addr;
    }
    return undefined;
  }

  private format(base: number): string {
    return `${formatIPv4(base)}/${this.maskSize}`;
  }

  private exhaustedMessage(now: number): string {
    const names = [...this.assignments().keys()];
    let msg =
      `${this.label} ${this.cidrs.join(', ')} with mask /${this.maskSize} is exhausted: ` +
      `${this.byBase.size}/${this.capacity} CIDRs assigned (${abbreviate(names)})`;
    const held = [...this.releasing].filter(([, r]) => r.until > now).sort((a, b) => a[1].until - b[1].until);
    if (held.length > 0) {
      const items = held.map(([, r]) => `${r.node} until ${new Date(r.until).toISOString()}`);
      msg += `, ${held.length} held for departed nodes (${abbreviate(items)})`;
    }
    return msg;
  }
}

function abbreviate(items: string[]): string {
  if (items.length <= MAX_NAMES_IN_MESSAGE) return items.join(', ');
  return `${items.slice(0, MAX_NAMES_IN_MESSAGE).join(', ')}, … ${items.length - MAX_NAMES_IN_MESSAGE} more`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  return typeof v;
}
