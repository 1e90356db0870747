// Node-local IPAM: hands out addresses of the node's pod CIDR and persists every allocation,
// so an agent restart never gives an address out twice.
import { AgentError } from './errors.js';
import { RecordJournal, readRecords } from './state-file.js';
import { type Cidr, cidrContains, cidrSize, formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../util/ip.js';

export interface Allocation {
  ip: string;
  owner: string;
  /** The CNI attachment the address was allocated for (absent for the router, health and API allocations). */
  containerId?: string;
  ifname?: string;
}

/** The CNI attachment an address is for: CNI_CONTAINERID and CNI_IFNAME. */
export interface AttachmentRef {
  containerId: string;
  ifname: string;
}

type Holder = Omit<Allocation, 'ip'>;

interface IpamFile {
  /** The node's primary pod CIDR (router and health addresses live there). */
  cidr: string;
  /** Further CIDRs the node grew into, in the order they came. */
  extra?: string[];
  /** Extra CIDRs no longer allocated from (handed back or taken away), kept until their last address is released. */
  draining?: string[];
  allocations: Allocation[];
}

/** Use of one pod CIDR of the node. */
export interface CidrUsage {
  cidr: string;
  used: number;
  capacity: number;
  /** No new address comes from it (handed back, or no longer the node's); it goes once empty. */
  draining: boolean;
}

interface Range {
  cidr: Cidr;
  text: string;
  /** Where the next search starts: addresses are handed out round-robin so a released one is not reused at once. */
  cursor: number;
  draining: boolean;
}

/**
 * The node's addresses over one pod CIDR or more: the primary (given at construction) and extras the node grew
 * into. New addresses come from the first CIDR (in order) with room that is not draining.
 */
export class NodeIpam {
  /** The primary pod CIDR. */
  readonly cidr: Cidr;
  private readonly journal: RecordJournal<Holder> | undefined;
  private readonly byIp = new Map<number, Holder>();
  private readonly ranges: Range[] = [];

  /** `file` undefined keeps allocations in memory only (tests). */
  constructor(cidr: string, file?: string) {
    this.cidr = parseCidr(cidr);
    this.ranges.push(this.range(this.cidr));
    if (file) {
      this.journal = new RecordJournal<Holder>(file, () => this.snapshot());
      this.load(file, this.journal);
    }
  }

  private range(c: Cidr): Range {
    if (c.bits > 30) {
      throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Pod CIDR "${formatCidr(c)}" is too small: need at least a /30`);
    }
    return { cidr: c, text: formatCidr(c), cursor: c.base + 1, draining: false };
  }

  private load(file: string, journal: RecordJournal<Holder>): void {
    // The snapshot holds the CIDRs (a change of them rewrites it); the journal only allocations.
    const saved = journal.load((snapshot) => {
      const f = snapshot as IpamFile;
      if (f.cidr !== formatCidr(this.cidr)) {
        throw new AgentError(
          'TENDRIL_ERR_STATE',
          `IPAM state ${file} is for pod CIDR ${f.cidr}, but this node now has ${formatCidr(this.cidr)}: ` +
            'remove the state file only if no pod still uses an old address',
        );
      }
      for (const text of f.extra ?? []) this.ranges.push(this.range(parseCidr(text)));
      for (const r of this.ranges) r.draining = (f.draining ?? []).includes(r.text);
      return decodeAllocations(f);
    });
    for (const [ipText, h] of saved) {
      const ip = parseIPv4(ipText);
      const r = this.rangeOf(ip);
      if (!r) throw new AgentError('TENDRIL_ERR_STATE', `IPAM state ${file} holds ${ipText}, outside the node's pod CIDRs ${this.cidrs().join(', ')}`);
      this.byIp.set(ip, h);
      if (ip >= r.cursor) r.cursor = ip + 1;
    }
  }

  private snapshot(): IpamFile {
    const extra = this.ranges.slice(1);
    const out: IpamFile = { cidr: formatCidr(this.cidr), allocations: this.list() };
    if (extra.length > 0) out.extra = extra.map((r) => r.text);
    const draining = this.ranges.filter((r) => r.draining).map((r) => r.text);
    if (draining.length > 0) out.draining = draining;
    return out;
  }

  /** Persists a change of the CIDRs (or of many allocations at once): a new snapshot. */
  private save(): void {
    this.journal?.compact();
  }

  /** Persists the change of one address (its holder, or its release): one journal line. */
  private saved(ip: number): number {
    const h = this.byIp.get(ip);
    if (h) this.journal?.put(formatIPv4(ip), h);
    else this.journal?.delete(formatIPv4(ip));
    return ip;
  }

  private rangeOf(ip: number): Range | undefined {
    return this.ranges.find((r) => cidrContains(r.cidr, ip));
  }

  /** Every pod CIDR of the node, primary first. */
  cidrs(): string[] {
    return this.ranges.map((r) => r.text);
  }

  /** Use of every pod CIDR, primary first. */
  usage(): CidrUsage[] {
    const used = new Map<Range, number>();
    for (const ip of this.byIp.keys()) {
      const r = this.rangeOf(ip);
      if (r) used.set(r, (used.get(r) ?? 0) + 1);
    }
    return this.ranges.map((r) => ({ cidr: r.text, used: used.get(r) ?? 0, capacity: cidrSize(r.cidr) - 2, draining: r.draining }));
  }

  /** Adds a pod CIDR the node was given (no-op when it has it; a draining one is used again). */
  addCidr(text: string): void {
    const c = parseCidr(text);
    const have = this.ranges.find((r) => r.text === formatCidr(c));
    if (have) {
      if (have.draining) {
        have.draining = false;
        this.save();
      }
      return;
    }
    const clash = this.ranges.find((r) => cidrContains(r.cidr, c.base) || cidrContains(c, r.cidr.base));
    if (clash) throw new AgentError('TENDRIL_ERR_IPAM_CONFLICT', `Cannot add pod CIDR ${formatCidr(c)}: it overlaps ${clash.text} of this node`);
    this.ranges.push(this.range(c));
    this.save();
  }

  /**
   * Stops allocating from a CIDR. An extra one is removed at once when empty (returns true), else when its last
   * address is released (see drained()); the primary is never removed (the router and health addresses live there).
   */
  drain(text: string): boolean {
    const i = this.ranges.findIndex((r) => r.text === text);
    if (i < 0) return true;
    this.ranges[i]!.draining = true;
    const empty = i > 0 && this.usage()[i]!.used === 0;
    if (empty) this.ranges.splice(i, 1);
    this.save();
    return empty;
  }

  /** Removes draining CIDRs that have become empty; returns them. */
  drained(): string[] {
    const u = this.usage();
    const gone = this.ranges.filter((r, i) => i > 0 && r.draining && u[i]!.used === 0).map((r) => r.text);
    if (gone.length === 0) return [];
    for (const text of gone) this.ranges.splice(this.ranges.findIndex((r) => r.text === text), 1);
    this.save();
    return gone;
  }

  /** Number of usable addresses (network and broadcast excluded) over every CIDR. */
  get capacity(): number {
    return this.ranges.reduce((n, r) => n + cidrSize(r.cidr) - 2, 0);
  }

  get used(): number {
    return this.byIp.size;
  }

  /** Addresses new allocations can still get (draining CIDRs excluded). */
  get free(): number {
    return this.usage().reduce((n, u) => n + (u.draining ? 0 : u.capacity - u.used), 0);
  }

  /**
   * Allocates the next free address for `owner` (and the CNI attachment it is for, if any); with `only`, from those
   * CIDRs of the node alone (one IP pool's, --ipam multi-pool).
   */
  allocateNext(owner: string, attachment?: AttachmentRef, only?: readonly string[]): string {
    for (const r of this.ranges) {
      if (r.draining || (only !== undefined && !only.includes(r.text))) continue;
      const first = r.cidr.base + 1;
      const last = r.cidr.base + cidrSize(r.cidr) - 2;
      const n = last - first + 1;
      for (let i = 0; i < n; i++) {
        let ip = r.cursor + i;
        if (ip > last) ip = first + ((ip - first) % n);
        if (!this.byIp.has(ip)) {
          this.byIp.set(ip, holder(owner, attachment));
          r.cursor = ip + 1 > last ? first : ip + 1;
          return formatIPv4(this.saved(ip));
        }
      }
    }
    throw new AgentError(
      'TENDRIL_ERR_IPAM_EXHAUSTED',
      only === undefined
        ? `Cannot allocate an address for "${owner}": pod CIDR ${this.cidrs().join(', ')} is exhausted (${this.used}/${this.capacity} in use)`
        : `Cannot allocate an address for "${owner}": pod CIDR(s) ${only.join(', ') || '(none yet)'} of its pool are exhausted`,
    );
  }

  /**
   * Allocates a specific address (the router's, a static pod address). Re-allocating to the same owner and
   * attachment is a no-op; to anyone else it is a conflict (a pod of the same name but another container too).
   */
  allocate(ipText: string, owner: string, attachment?: AttachmentRef): string {
    const ip = parseIPv4(ipText);
    const r = this.rangeOf(ip);
    if (!r || ip <= r.cidr.base || ip >= r.cidr.base + cidrSize(r.cidr) - 1) {
      throw new AgentError(
        'TENDRIL_ERR_IPAM_OUT_OF_RANGE',
        `Cannot allocate ${ipText}: not a usable address of pod CIDR ${this.cidrs().join(', ')}`,
      );
    }
    const current = this.byIp.get(ip);
    if (current !== undefined) {
      if (current.owner === owner && current.containerId === attachment?.containerId && current.ifname === attachment?.ifname) return ipText;
      const by = current.containerId === undefined ? '' : ` (container ${current.containerId.slice(0, 12)} ${current.ifname})`;
      throw new AgentError('TENDRIL_ERR_IPAM_CONFLICT', `Cannot allocate ${ipText} to "${owner}": already owned by "${current.owner}"${by}`);
    }
    this.byIp.set(ip, holder(owner, attachment));
    this.saved(ip);
    return ipText;
  }

  /**
   * Releases an address; false when it was not allocated. With `attachment`, an address allocated to another
   * attachment since is left alone (false): a DEL gives back only what is still its own.
   */
  release(ipText: string, attachment?: AttachmentRef): boolean {
    const ip = parseIPv4(ipText);
    const h = this.byIp.get(ip);
    if (h === undefined) return false;
    if (attachment && h.containerId !== undefined && (h.containerId !== attachment.containerId || h.ifname !== attachment.ifname)) return false;
    this.byIp.delete(ip);
    this.saved(ip);
    return true;
  }

  ownerOf(ipText: string): string | undefined {
    return this.byIp.get(parseIPv4(ipText))?.owner;
  }

  /** The allocation of an address, if any. */
  get(ipText: string): Allocation | undefined {
    const h = this.byIp.get(parseIPv4(ipText));
    return h && { ip: ipText, ...h };
  }

  /** First address owned by `owner`, if any. */
  findByOwner(owner: string): string | undefined {
    for (const [ip, h] of this.byIp) if (h.owner === owner) return formatIPv4(ip);
    return undefined;
  }

  /** Addresses allocated for a CNI attachment, whatever state its ADD reached. */
  findByAttachment(containerId: string, ifname: string): string[] {
    const out: string[] = [];
    for (const [ip, h] of this.byIp) if (h.containerId === containerId && h.ifname === ifname) out.push(formatIPv4(ip));
    return out;
  }

  /** Every address allocated for a CNI attachment, with the attachment. */
  attachments(): (AttachmentRef & { ip: string })[] {
    return this.list().flatMap((a) => (a.containerId !== undefined && a.ifname !== undefined ? [{ ip: a.ip, containerId: a.containerId, ifname: a.ifname }] : []));
  }

  /** Releases every allocation `keep` rejects (one save); returns what was released. */
  releaseUnless(keep: (a: Allocation) => boolean): Allocation[] {
    const released = this.list().filter((a) => !keep(a));
    for (const a of released) this.byIp.delete(parseIPv4(a.ip));
    if (released.length > 0) this.save();
    return released;
  }

  list(): Allocation[] {
    return [...this.byIp.entries()].sort((a, b) => a[0] - b[0]).map(([ip, h]) => ({ ip: formatIPv4(ip), ...h }));
  }
}

function decodeAllocations(f: IpamFile): Array<[string, Holder]> {
  return f.allocations.map((a) => [a.ip, holder(a.owner, a.containerId !== undefined && a.ifname !== undefined ? { containerId: a.containerId, ifname: a.ifname } : undefined)]);
}

/** The allocations saved in an IPAM state file (snapshot and journal), for readers outside the agent (tests). */
export function savedAllocations(file: string): Allocation[] {
  return [...readRecords(file, (f) => decodeAllocations(f as IpamFile))].map(([ip, h]) => ({ ip, ...h }));
}

function holder(owner: string, attachment: AttachmentRef | undefined): Holder {
  return attachment ? { owner, containerId: attachment.containerId, ifname: attachment.ifname } : { owner };
}
