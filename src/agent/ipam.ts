// Node-local IPAM: hands out addresses of the node's pod CIDR and persists every allocation,
// so an agent restart never gives an address out twice.
import { AgentError } from './errors.js';
import { readJsonFile, writeJsonFile } from './state-file.js';
import { type Cidr, cidrContains, cidrSize, formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../util/ip.js';

export interface Allocation {
  ip: string;
  owner: string;
}

interface IpamFile {
  cidr: string;
  allocations: Allocation[];
}

export class NodeIpam {
  readonly cidr: Cidr;
  private readonly file: string | undefined;
  private readonly byIp = new Map<number, string>();
  /** Where the next search starts: addresses are handed out round-robin so a released one is not reused at once. */
  private cursor: number;

  /** `file` undefined keeps allocations in memory only (tests). */
  constructor(cidr: string, file?: string) {
    this.cidr = parseCidr(cidr);
    if (this.cidr.bits > 30) {
      throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Pod CIDR "${cidr}" is too small: need at least a /30`);
    }
    this.file = file;
    this.cursor = this.cidr.base + 1;
    if (file) this.load(file);
  }

  private load(file: string): void {
    const saved = readJsonFile<IpamFile>(file);
    if (!saved) return;
    if (saved.cidr !== formatCidr(this.cidr)) {
      throw new AgentError(
        'TENDRIL_ERR_STATE',
        `IPAM state ${file} is for pod CIDR ${saved.cidr}, but this node now has ${formatCidr(this.cidr)}: ` +
          'remove the state file only if no pod still uses an old address',
      );
    }
    for (const a of saved.allocations) {
      const ip = parseIPv4(a.ip);
      this.byIp.set(ip, a.owner);
      if (ip >= this.cursor) this.cursor = ip + 1;
    }
  }

  private save(): void {
    if (!this.file) return;
    writeJsonFile(this.file, { cidr: formatCidr(this.cidr), allocations: this.list() } satisfies IpamFile);
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

  /** Allocates the next free address for `owner`. */
  allocateNext(owner: string): string {
    const n = this.capacity;
    for (let i = 0; i < n; i++) {
      let ip = this.cursor + i;
      if (ip > this.last()) ip = this.first() + ((ip - this.first()) % n);
      if (!this.byIp.has(ip)) {
        this.byIp.set(ip, owner);
        this.cursor = ip + 1 > this.last() ? this.first() : ip + 1;
        this.save();
        return formatIPv4(ip);
      }
    }
    throw new AgentError(
      'TENDRIL_ERR_IPAM_EXHAUSTED',
      `Cannot allocate an address for "${owner}": pod CIDR ${formatCidr(this.cidr)} is exhausted (${this.used}/${n} in use)`,
    );
  }

  /** Allocates a specific address (e.g. restoring the router IP). Re-allocating to the same owner is a no-op. */
  allocate(ipText: string, owner: string): string {
    const ip = parseIPv4(ipText);
    if (!cidrContains(this.cidr, ip) || ip < this.first() || ip > this.last()) {
      throw new AgentError(
        'TENDRIL_ERR_IPAM_OUT_OF_RANGE',
        `Cannot allocate ${ipText}: not a usable address of pod CIDR ${formatCidr(this.cidr)}`,
      );
    }
    const current = this.byIp.get(ip);
    if (current !== undefined) {
      if (current === owner) return ipText;
      throw new AgentError('TENDRIL_ERR_IPAM_CONFLICT', `Cannot allocate ${ipText} to "${owner}": already owned by "${current}"`);
    }
    this.byIp.set(ip, owner);
    this.save();
    return ipText;
  }

  /** Releases an address; false when it was not allocated. */
  release(ipText: string): boolean {
    const ip = parseIPv4(ipText);
    if (!this.byIp.delete(ip)) return false;
    this.save();
    return true;
  }

  ownerOf(ipText: string): string | undefined {
    return this.byIp.get(parseIPv4(ipText));
  }

  /** First address owned by `owner`, if any. */
  findByOwner(owner: string): string | undefined {
    for (const [ip, o] of this.byIp) if (o === owner) return formatIPv4(ip);
    return undefined;
  }

  list(): Allocation[] {
    return [...this.byIp.entries()].sort((a, b) => a[0] - b[0]).map(([ip, owner]) => ({ ip: formatIPv4(ip), owner }));
  }
}
