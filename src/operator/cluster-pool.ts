// Cluster-pool IPAM (pure, no I/O): carves the cluster CIDR into per-node pod CIDRs over a ClusterPoolState.
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
  /** Canonical pool CIDR, e.g. "10.0.0.0/8". */
  cidr: string;
  /** Prefix length of each node's CIDR, e.g. 24. */
  maskSize: number;
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

/**
 * Validates the pool flags. Errors name the flag (`--cluster-pool-cidr`, `--cluster-pool-mask-size`) and the value.
 * A CIDR with host bits set is refused rather than silently truncated: "10.1.0.0/8" is more likely a typo than 10/8.
 */
export function validatePoolConfig(input: { cidr?: string | undefined; maskSize?: string | number | undefined }): ClusterPoolConfig {
  return checkPoolConfig(input, 'TENDRIL_ERR_INVALID_CONFIG', '--cluster-pool-cidr', '--cluster-pool-mask-size');
}

function checkPoolConfig(
  input: { cidr?: string | undefined; maskSize?: string | number | undefined },
  code: OperatorErrorCode,
  cidrName: string,
  maskName: string,
): ClusterPoolConfig {
  const cidrText = input.cidr ?? DEFAULT_CLUSTER_POOL_CIDR;
  const fail = (msg: string): never => {
    throw new OperatorError(code, msg);
  };
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidrText.trim());
  if (!m) return fail(`Invalid ${cidrName} "${cidrText}": expected an IPv4 CIDR such as ${DEFAULT_CLUSTER_POOL_CIDR}`);
  let addr: number;
  try {
    addr = parseIPv4(m[1]!);
  } catch (err) {
    return fail(`Invalid ${cidrName} "${cidrText}": ${(err as Error).message}`);
  }
  const bits = Number(m[2]);
  if (bits > 32) return fail(`Invalid ${cidrName} "${cidrText}": prefix length ${bits} is above 32`);
  const pool: Cidr = { base: (addr & maskBits(bits)) >>> 0, bits };
  if (pool.base !== addr) {
    return fail(`Invalid ${cidrName} "${cidrText}": host bits are set (the network would be ${formatCidr(pool)})`);
  }

  const rawMask = input.maskSize ?? DEFAULT_CLUSTER_POOL_MASK_SIZE;
  const maskText = String(rawMask).trim();
  if (!/^\d{1,2}$/.test(maskText)) {
    return fail(`Invalid ${maskName} "${String(rawMask)}": expected a prefix length such as ${DEFAULT_CLUSTER_POOL_MASK_SIZE}`);
  }
  const maskSize = Number(maskText);
  if (maskSize > MAX_CLUSTER_POOL_MASK_SIZE) {
    return fail(
      `Invalid ${maskName} ${maskSize}: node CIDRs must be /${MAX_CLUSTER_POOL_MASK_SIZE} or larger ` +
        `(a node needs a network, a router and a broadcast address besides its pods)`,
    );
  }
  if (maskSize < bits) {
    return fail(
      `Invalid ${maskName} ${maskSize}: a /${maskSize} node CIDR does not fit in ${cidrName} ${formatCidr(pool)} ` +
        `(the mask size must be at least ${bits})`,
    );
  }
  return { cidr: formatCidr(pool), maskSize };
}

function maskBits(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * The allocator. Holds a private copy of the state; `toState()` returns a JSON-safe snapshot to store.
 * Time is passed in (ms since the epoch) so the allocator stays deterministic.
 */
export class ClusterPool {
  readonly cidr: string;
  readonly maskSize: number;
  private readonly pool: Cidr;
  /** Addresses per node CIDR. */
  private readonly step: number;
  /** Number of node CIDRs. */
  readonly capacity: number;
  /** node -> CIDR base. */
  private readonly byNode = new Map<string, number>();
  /** CIDR base -> node, for assigned CIDRs. */
  private readonly byBase = new Map<number, string>();
  /** CIDR base -> departed node and the time (ms) after which the CIDR is free. */
  private readonly releasing = new Map<number, { node: string; until: number }>();

  private constructor(cfg: ClusterPoolConfig) {
    this.cidr = cfg.cidr;
    this.maskSize = cfg.maskSize;
    const [addr, bits] = cfg.cidr.split('/') as [string, string];
    this.pool = { base: parseIPv4(addr), bits: Number(bits) };
    this.step = 2 ** (32 - cfg.maskSize);
    this.capacity = 2 ** (cfg.maskSize - this.pool.bits);
  }

  /** A pool with nothing assigned. */
  static create(cfg: ClusterPoolConfig): ClusterPool {
    return new ClusterPool(validatePoolConfig(cfg));
  }

  /** Rebuilds the allocator from stored state (anything JSON gave back), refusing malformed or overlapping entries. */
  static fromState(value: unknown): ClusterPool {
    const bad = (msg: string): never => {
      throw new OperatorError('TENDRIL_ERR_STATE', `Invalid cluster pool state: ${msg}`);
    };
    if (!isRecord(value)) return bad(`expected an object, got ${describe(value)}`);
    if (typeof value['cidr'] !== 'string') return bad(`"cidr" must be a string, got ${describe(value['cidr'])}`);
    if (typeof value['maskSize'] !== 'number') return bad(`"maskSize" must be a number, got ${describe(value['maskSize'])}`);
    let cfg: ClusterPoolConfig;
    try {
      cfg = checkPoolConfig({ cidr: value['cidr'], maskSize: value['maskSize'] }, 'TENDRIL_ERR_STATE', '"cidr"', '"maskSize"');
    } catch (err) {
      return bad((err as Error).message.replace(/^Invalid /, ''));
    }
    const p = new ClusterPool(cfg);

    const assigned = value['assigned'] ?? {};
    if (!isRecord(assigned)) return bad(`"assigned" must be an object, got ${describe(assigned)}`);
    for (const [node, cidr] of Object.entries(assigned)) {
      const where = `assigned[${JSON.stringify(node)}]`;
      if (typeof cidr !== 'string') return bad(`${where} must be a CIDR string, got ${describe(cidr)}`);
      const base = p.baseOf(cidr);
      if (base === undefined) return bad(`${where} "${cidr}" is not a /${p.maskSize} inside ${p.cidr}`);
      const other = p.byBase.get(base);
      if (other !== undefined) return bad(`${where} "${cidr}" is also assigned to node "${other}"`);
      p.byNode.set(node, base);
      p.byBase.set(base, node);
    }

    const releasing = value['releasing'] ?? {};
    if (!isRecord(releasing)) return bad(`"releasing" must be an object, got ${describe(releasing)}`);
    for (const [cidr, entry] of Object.entries(releasing)) {
      const where = `releasing[${JSON.stringify(cidr)}]`;
      const base = p.baseOf(cidr);
      if (base === undefined) return bad(`${where}: "${cidr}" is not a /${p.maskSize} inside ${p.cidr}`);
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

  /** The node's CIDR, if it has one. */
  cidrOf(node: string): string | undefined {
    const base = this.byNode.get(node);
    return base === undefined ? undefined : this.format(base);
  }

  /** node -> CIDR of every assigned node, ordered by CIDR. */
  assignments(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [base, node] of [...this.byBase].sort((a, b) => a[0] - b[0])) out.set(node, this.format(base));
    return out;
  }

  /**
   * Gives `node` a CIDR: the one it has; else the one it left behind, if not yet handed out; else `preferred` (the
   * CIDR the node already carries) when it is a free CIDR of this pool; else the lowest free one. A CIDR held for
   * another departed node is never handed out before its time. Throws TENDRIL_ERR_IPAM_EXHAUSTED when none is free.
   */
  assign(node: string, now: number, preferred?: string): { cidr: string; source: AssignSource } {
    const have = this.byNode.get(node);
    if (have !== undefined) return { cidr: this.format(have), source: 'existing' };

    let lowestLeft: number | undefined;
    for (const [base, r] of this.releasing) {
      if (r.node === node && (lowestLeft === undefined || base < lowestLeft)) lowestLeft = base;
    }
    if (lowestLeft !== undefined) return { cidr: this.take(node, lowestLeft), source: 'returned' };

    if (preferred !== undefined) {
      const base = this.baseOf(preferred);
      if (base !== undefined && this.isFree(base, now)) return { cidr: this.take(node, base), source: 'adopted' };
    }

    for (let i = 0; i < this.capacity; i++) {
      const base = this.pool.base + i * this.step;
      if (this.isFree(base, now)) return { cidr: this.take(node, base), source: 'new' };
    }
    throw new OperatorError('TENDRIL_ERR_IPAM_EXHAUSTED', this.exhaustedMessage(now));
  }

  /**
   * The node left: its CIDR is held for it until now+graceMs (a node that comes back in time gets it again), then
   * expire() frees it. Returns the released CIDR, or undefined if the node had none.
   */
  release(node: string, now: number, graceMs: number): string | undefined {
    const base = this.byNode.get(node);
    if (base === undefined) return undefined;
    this.byNode.delete(node);
    this.byBase.delete(base);
    if (graceMs > 0) this.releasing.set(base, { node, until: now + graceMs });
    return this.format(base);
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

  /** JSON-safe snapshot with a stable order (assigned by CIDR, releasing by CIDR). */
  toState(): ClusterPoolState {
    const assigned: Record<string, string> = {};
    for (const [node, cidr] of this.assignments()) assigned[node] = cidr;
    const releasing: ClusterPoolState['releasing'] = {};
    for (const [base, r] of [...this.releasing].sort((a, b) => a[0] - b[0])) {
      releasing[this.format(base)] = { node: r.node, until: new Date(r.until).toISOString() };
    }
    return { cidr: this.cidr, maskSize: this.maskSize, assigned, releasing };
  }

  private take(node: string, base: number): string {
    this.releasing.delete(base);
    this.byNode.set(node, base);
    this.byBase.set(base, node);
    return this.format(base);
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
    if (addr < this.pool.base || addr - this.pool.base >= this.capacity * this.step) return undefined;
    if ((addr - this.pool.base) % this.step !== 0) return undefined;
    return addr;
  }

  private format(base: number): string {
    return `${formatIPv4(base)}/${this.maskSize}`;
  }

  private exhaustedMessage(now: number): string {
    const names = [...this.assignments().keys()];
    let msg =
      `cluster pool ${this.cidr} with mask /${this.maskSize} is exhausted: ` +
      `${names.length}/${this.capacity} CIDRs assigned (${abbreviate(names)})`;
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
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  return typeof v;
}
