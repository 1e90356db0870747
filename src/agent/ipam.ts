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
  cidr: string;
  allocations: Allocation[];
}

export class NodeIpam {
  readonly cidr: Cidr;
  private readonly journal: RecordJournal<Holder> | undefined;
  private readonly byIp = new Map<number, Holder>();
  /** Where the next search starts: addresses are handed out round-robin so a released one is not reused at once. */
  private cursor: number;

  /** `file` undefined keeps allocations in memory only (tests). */
  constructor(cidr: string, file?: string) {
    this.cidr = parseCidr(cidr);
    if (this.cidr.bits > 30) {
      throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Pod CIDR "${cidr}" is too small: need at least a /30`);
    }
    this.cursor = this.cidr.base + 1;
    if (file) {
      this.journal = new RecordJournal<Holder>(file, () => ({ cidr: formatCidr(this.cidr), allocations: this.list() }) satisfies IpamFile);
      this.load(file, this.journal);
    }
  }

  private load(file: string, journal: RecordJournal<Holder>): void {
    const saved = journal.load((snapshot) => {
      const f = snapshot as IpamFile;
      if (f.cidr !== formatCidr(this.cidr)) {
        throw new AgentError(
          'TENDRIL_ERR_STATE',
          `IPAM state ${file} is for pod CIDR ${f.cidr}, but this node now has ${formatCidr(this.cidr)}: ` +
            'remove the state file only if no pod still uses an old address',
        );
      }
      return decodeAllocations(f);
    });
    for (const [ipText, h] of saved) {
      const ip = parseIPv4(ipText);
      this.byIp.set(ip, h);
      if (ip >= this.cursor) this.cursor = ip + 1;
    }
  }

  /** Persists the change of one address (its holder, or its release). */
  private saved(ip: number): number {
    const h = this.byIp.get(ip);
    if (h) this.journal?.put(formatIPv4(ip), h);
    else this.journal?.delete(formatIPv4(ip));
    return ip;
  }

  private first(): number {
    return this.cidr.base + 1;
  }

  private last(): number {
    return this.cidr.base + cidrSize(this.cidr) - 2;
  }

  /** Number of usable addresses (network and broadcast excluded). */
  get capacity(): number {
    return cidrSize(this.cidr) - 2;
  }

  get used(): number {
    return this.byIp.size;
  }

  get free(): number {
    return this.capacity - this.used;
  }

  /** Allocates the next free address for `owner` (and the CNI attachment it is for, if any). */
  allocateNext(owner: string, attachment?: AttachmentRef): string {
    const n = this.capacity;
    for (let i = 0; i < n; i++) {
      let ip = this.cursor + i;
      if (ip > this.last()) ip = this.first() + ((ip - this.first()) % n);
      if (!this.byIp.has(ip)) {
        this.byIp.set(ip, holder(owner, attachment));
        this.cursor = ip + 1 > this.last() ? this.first() : ip + 1;
        return formatIPv4(this.saved(ip));
      }
    }
    throw new AgentError(
      'TENDRIL_ERR_IPAM_EXHAUSTED',
      `Cannot allocate an address for "${owner}": pod CIDR ${formatCidr(this.cidr)} is exhausted (${this.used}/${n} in use)`,
    );
  }

  /**
   * Allocates a specific address (the router's, a static pod address). Re-allocating to the same owner and
   * attachment is a no-op; to anyone else it is a conflict (a pod of the same name but another container too).
   */
  allocate(ipText: string, owner: string, attachment?: AttachmentRef): string {
    const ip = parseIPv4(ipText);
    if (!cidrContains(this.cidr, ip) || ip < this.first() || ip > this.last()) {
      throw new AgentError(
        'TENDRIL_ERR_IPAM_OUT_OF_RANGE',
        `Cannot allocate ${ipText}: not a usable address of pod CIDR ${formatCidr(this.cidr)}`,
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
    if (released.length > 0) this.journal?.compact();
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
