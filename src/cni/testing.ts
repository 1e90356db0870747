// An in-memory CniBackend (the seam the agent implements) for the CNI tests: records calls and can fail on demand.
// It stands in for the agent's IPAM and endpoints only; the kernel work in tests using it is real.
import type { CniBackend, EndpointRef, EndpointRequest } from './plugin.js';

export interface MemoryBackendOptions {
  /** First three octets of the addresses handed out (default "10.9.0"); the router is .1. */
  subnet?: string;
  mtu?: number;
  /** netns path prefix of endpoints made by seed() (a namespace that no longer exists). */
  goneNetns?: string;
}

export class MemoryBackend implements CniBackend {
  ready = true;
  readonly ips = new Map<string, string>(); // ip -> owner
  readonly endpoints = new Map<number, EndpointRequest & { id: number }>();
  /** allocateIP / releaseIP / deleteEndpoint calls, in order. */
  readonly calls: string[] = [];
  failAllocate = false;
  failNextEndpoint = false;
  private nextIp = 2;
  private nextId = 1;
  private readonly subnet: string;
  private readonly mtu: number;
  private readonly goneNetns: string;

  constructor(o: MemoryBackendOptions = {}) {
    this.subnet = o.subnet ?? '10.9.0';
    this.mtu = o.mtu ?? 1500;
    this.goneNetns = o.goneNetns ?? '/var/run/netns/does-not-exist';
  }

  status(): { ready: boolean; reason?: string } {
    return this.ready ? { ready: true } : { ready: false, reason: 'IPAM not initialised' };
  }
  netConfig(): { routerIP: string; mtu: number } {
    return { routerIP: `${this.subnet}.1`, mtu: this.mtu };
  }
  async allocateIP(owner: string): Promise<string> {
    this.calls.push(`allocateIP ${owner}`);
    if (this.failAllocate) throw new Error(`pool ${this.subnet}.0/24 is exhausted`);
    const ip = `${this.subnet}.${this.nextIp++}`;
    this.ips.set(ip, owner);
    return ip;
  }
  async releaseIP(ip: string): Promise<void> {
    this.calls.push(`releaseIP ${ip}`);
    this.ips.delete(ip);
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
    const ip = `${this.subnet}.${this.nextIp++}`;
    this.ips.set(ip, containerId);
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
