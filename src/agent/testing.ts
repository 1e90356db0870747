// An in-memory datapath (the seams of ./seams.ts) for the agent's unit tests: endpoints, ipcache and policy entries
// kept as the NodeDatapath keeps them in its maps, every call recorded, attaches that can fail or be held.
import type { DatapathEndpoint, EndpointPolicyState, IpcacheEntry, PolicyMapEntry } from '../datapath/index.js';
import { DatapathError } from '../datapath/index.js';
import type { EndpointDatapath, SecurityDatapath } from './seams.js';

/** The ipcache's flag for a prefix reached through a tunnel (IPCACHE_F_HAS_TUNNEL_EP). */
const TUNNELLED = 1;

export interface WiredEndpoint {
  ep: DatapathEndpoint;
  ingressEnforced: boolean;
  egressEnforced: boolean;
  entries: PolicyMapEntry[];
}

export class MemoryDatapath implements EndpointDatapath, SecurityDatapath {
  /** By host interface index, as tendril_lxc_if. */
  readonly wired = new Map<number, WiredEndpoint>();
  readonly ipcache = new Map<string, IpcacheEntry>();
  /** The ipBlock trie: prefix → node-local identity. */
  readonly ipBlocks = new Map<string, number>();
  /** Calls that change something ("add 3", "remove 3", "update 3", "policy 3", "ipcache+ P", "ipcache- P"), in order. */
  readonly calls: string[] = [];
  /** The next attach fails (after the map entries were written, as a failed tcx attach leaves them). */
  failNextAttach = false;
  /** Attaches wait for this before they finish (to catch what happens meanwhile). */
  attachGate: Promise<void> = Promise.resolve();

  async addEndpointAsync(ep: DatapathEndpoint): Promise<void> {
    this.calls.push(`add ${ep.id}`);
    this.write(ep);
    await this.attachGate;
    if (this.failNextAttach) {
      this.failNextAttach = false;
      // The real one passes the kernel's error through (a KernelError, which agent/ does not import).
      throw new Error(`Cannot attach program to "${ep.hostIfName}": injected failure`);
    }
  }

  restoreEndpoint(ep: DatapathEndpoint): void {
    this.calls.push(`restore ${ep.id}`);
    this.write(ep);
  }

  removeEndpoint(ep: Pick<DatapathEndpoint, 'ip' | 'hostIfName' | 'hostIfindex'> & { id?: number }): void {
    this.calls.push(`remove ${ep.id ?? '?'}`);
    const cur = this.wired.get(ep.hostIfindex);
    this.wired.delete(ep.hostIfindex);
    // An address already handed to another endpoint keeps its entry.
    const owner = [...this.wired.values()].find((w) => w.ep.ip === ep.ip);
    const ipc = this.ipcache.get(`${ep.ip}/32`);
    if (!owner && ipc && !(ipc.flags & TUNNELLED) && (cur === undefined || ipc.identity === cur.ep.identity)) this.ipcache.delete(`${ep.ip}/32`);
  }

  updateEndpoint(ep: DatapathEndpoint): void {
    this.calls.push(`update ${ep.id}`);
    const cur = this.wired.get(ep.hostIfindex);
    if (!cur || cur.ep.id !== ep.id) throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot update endpoint ${ep.id} on "${ep.hostIfName}": it is not wired`);
    this.wired.set(ep.hostIfindex, { ...cur, ep: { ...ep } });
    this.ipcache.set(`${ep.ip}/32`, { prefix: `${ep.ip}/32`, identity: ep.identity, flags: 0 });
  }

  setEndpointPolicy(ep: DatapathEndpoint, p: EndpointPolicyState): { added: number; removed: number; changed: number } {
    this.calls.push(`policy ${ep.id}`);
    const cur = this.wired.get(ep.hostIfindex);
    if (!cur || cur.ep.id !== ep.id) throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot set policy of endpoint ${ep.id} on "${ep.hostIfName}": it is not wired`);
    const key = (e: PolicyMapEntry): string => `${e.direction}/${e.identity}/${e.protocol}/${e.port}/${e.portPrefixLen}`;
    const before = new Map(cur.entries.map((e) => [key(e), e]));
    const after = new Map(p.entries.map((e) => [key(e), e]));
    let added = 0;
    let changed = 0;
    for (const [k, e] of after) {
      const old = before.get(k);
      if (!old) added++;
      else if (old.deny !== e.deny) changed++;
    }
    const removed = [...before.keys()].filter((k) => !after.has(k)).length;
    this.wired.set(ep.hostIfindex, { ep: cur.ep, ingressEnforced: p.ingressEnforced, egressEnforced: p.egressEnforced, entries: [...p.entries] });
    return { added, removed, changed };
  }

  ipcacheUpsert(prefix: string, v: { identity: number; tunnelEndpoint?: string }): void {
    this.calls.push(`ipcache+ ${prefix}`);
    const e: IpcacheEntry = { prefix, identity: v.identity, flags: v.tunnelEndpoint !== undefined ? TUNNELLED : 0 };
    if (v.tunnelEndpoint !== undefined) e.tunnelEndpoint = v.tunnelEndpoint;
    this.ipcache.set(prefix, e);
  }

  ipcacheDelete(prefix: string): boolean {
    this.calls.push(`ipcache- ${prefix}`);
    return this.ipcache.delete(prefix);
  }

  dumpIpcache(): IpcacheEntry[] {
    return [...this.ipcache.values()].map((e) => ({ ...e })).sort((a, b) => a.prefix.localeCompare(b.prefix));
  }

  ipBlockSet(prefix: string, identity: number): void {
    this.calls.push(`ipblock+ ${prefix}`);
    this.ipBlocks.set(prefix, identity);
  }

  ipBlockDelete(prefix: string): boolean {
    this.calls.push(`ipblock- ${prefix}`);
    return this.ipBlocks.delete(prefix);
  }

  dumpIpBlocks(): Array<{ prefix: string; identity: number }> {
    return [...this.ipBlocks].map(([prefix, identity]) => ({ prefix, identity })).sort((a, b) => a.prefix.localeCompare(b.prefix));
  }

  /** The endpoint wired with this ID, if any. */
  endpoint(id: number): WiredEndpoint | undefined {
    return [...this.wired.values()].find((w) => w.ep.id === id);
  }

  /** An endpoint's map entries: a new endpoint starts unenforced with none; the same one wired again keeps them. */
  private write(ep: DatapathEndpoint): void {
    const cur = this.wired.get(ep.hostIfindex);
    const same = cur !== undefined && cur.ep.id === ep.id;
    this.wired.set(ep.hostIfindex, same ? { ...cur, ep: { ...ep } } : { ep: { ...ep }, ingressEnforced: false, egressEnforced: false, entries: [] });
    this.ipcache.set(`${ep.ip}/32`, { prefix: `${ep.ip}/32`, identity: ep.identity, flags: 0 });
  }
}
