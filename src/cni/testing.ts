// An in-memory CniBackend (the seam the agent implements) for the CNI tests: records calls and can fail on demand.
// Addresses come from the IPAM the test passes in (the agent's NodeIpam); endpoints are kept in memory. The
// kernel work in tests using it is real.
import type { CniBackend, EndpointRef, EndpointRequest, IpRequest } from './plugin.js';

/** What the backend needs of an IPAM: the agent's NodeIpam has this shape. */
export interface AddressPool {
  readonly free: number;
  allocateNext(owner: string, attachment?: { containerId: string; ifname: string }): string;
  allocate(ip: string, owner: string, attachment?: { containerId: string; ifname: string }): string;
  release(ip: string, attachment?: { containerId: string; ifname: string }): boolean;
  findByAttachment(containerId: string, ifname: string): string[];
  attachments(): { ip: string; containerId: string; ifname: string }[];
  list(): { ip: string; owner: string; containerId?: string; ifname?: string }[];
}

export interface MemoryBackendOptions {
  /** The node's pod CIDR, e.g. "10.9.0.0/24", and its IPAM; the router is its first address. */
  cidr: string;
  ipam: AddressPool;
  mtu?: number;
  /** netns path prefix of endpoints made by seed() (a namespace that no longer exists). */
  goneNetns?: string;
}

export class MemoryBackend implements CniBackend {
  ready = true;
  /** STATUS: existing pods may have limited connectivity. */
  limited = false;
  readonly endpoints = new Map<number, EndpointRequest & { id: number }>();
  /** allocateIP / releaseIP / deleteEndpoint calls, in order. */
  readonly calls: string[] = [];
  failNextEndpoint = false;
  readonly ipam: AddressPool;
  private nextId = 1;
  private readonly cidr: string;
  private readonly routerIP: string;
  private readonly mtu: number;
  private readonly goneNetns: string;

  constructor(o: MemoryBackendOptions) {
    this.cidr = o.cidr;
    this.ipam = o.ipam;
    this.routerIP = this.ipam.list().find((a) => a.owner === 'router')?.ip ?? this.ipam.allocateNext('router');
    this.mtu = o.mtu ?? 1500;
    this.goneNetns = o.goneNetns ?? '/var/run/netns/does-not-exist';
  }

  /** Pod addresses (the router's left out) and their owners. */
  get ips(): Map<string, string> {
    return new Map(this.ipam.list().filter((a) => a.owner !== 'router').map((a) => [a.ip, a.owner]));
  }

  status(): { ready: boolean; reason?: string; limited?: boolean } {
    const limited = this.limited ? { limited: true, reason: 'cluster store unreachable (injected)' } : {};
    return this.ready ? { ready: true, ...limited } : { ready: false, reason: 'IPAM not initialised', ...limited };
  }
  netConfig(): { routerIP: string; mtu: number } {
    return { routerIP: this.routerIP, mtu: this.mtu };
  }
  pool(): { cidr: string; free: number } {
    return { cidr: this.cidr, free: this.ipam.free };
  }
  async allocateIP(r: IpRequest): Promise<string> {
    this.calls.push(`allocateIP ${r.owner}${r.ip ? ` ${r.ip}` : ''}`);
    const att = { containerId: r.containerId, ifname: r.ifname };
    return r.ip === undefined ? this.ipam.allocateNext(r.owner, att) : this.ipam.allocate(r.ip, r.owner, att);
  }
  async releaseIP(ip: string, attachment?: { containerId: string; ifname: string }): Promise<void> {
    this.calls.push(`releaseIP ${ip}`);
    this.ipam.release(ip, attachment);
  }
  attachmentIPs(containerId: string, ifname: string): string[] {
    return this.ipam.findByAttachment(containerId, ifname);
  }
  listAttachmentIPs(): { ip: string; containerId: string; ifname: string }[] {
    return this.ipam.attachments();
  }
  async createEndpoint(r: EndpointRequest): Promise<{ id: number }> {
    if (this.failNextEndpoint) {
      this.failNextEndpoint = false;
      throw new Error('endpoint store refused the endpoint (injected)');
    }
    const id = this.nextId++;
    this.endpoints.set(id, { ...r, id });
    return { id };
  }
  findEndpoint(containerId: string, ifname: string): EndpointRef | undefined {
    for (const e of this.endpoints.values()) {
      if (e.containerId === containerId && e.ifname === ifname) {
        return { id: e.id, ip: e.ip, hostIfName: e.hostIfName, netnsPath: e.netnsPath };
      }
    }
    return undefined;
  }
  async deleteEndpoint(id: number): Promise<void> {
    this.calls.push(`deleteEndpoint ${id}`);
    this.endpoints.delete(id);
  }
  listEndpoints(): { id: number; containerId: string; ifname: string; ip: string }[] {
    return [...this.endpoints.values()].map((e) => ({ id: e.id, containerId: e.containerId, ifname: e.ifname, ip: e.ip }));
  }

  /** An endpoint as a previous ADD would have left it, in a netns that has disappeared since. */
  seed(containerId: string, ifname = 'eth0'): number {
    const ip = this.ipam.allocateNext(containerId, { containerId, ifname });
    const id = this.nextId++;
    this.endpoints.set(id, {
      id,
      containerId,
      ifname,
      podIfName: ifname,
      hostIfName: `lxc-${containerId}`.slice(0, 15),
      hostIfindex: 0,
      hostMac: '02:00:00:00:00:01',
      podMac: '02:00:00:00:00:02',
      ip,
      netnsPath: `${this.goneNetns}-${containerId}`,
    });
    return id;
  }
}
