// Endpoint manager: the endpoints of this node, persisted, wired into the datapath, re-adopted after a restart.
import { AgentError } from './errors.js';
import { RecordJournal, readRecords } from './state-file.js';
import type { EndpointDatapath } from './seams.js';
import type { NamedPort } from '../store/types.js';
import type { Logger } from '../util/log.js';

export type EndpointState = 'ready' | 'restoring' | 'disconnecting';

export interface Endpoint {
  id: number;
  /** 'pod' for CNI-created endpoints, 'health' for the node's health endpoint. */
  kind: 'pod' | 'health';
  containerId: string;
  /** Interface name inside the container (CNI_IFNAME). */
  ifname: string;
  hostIfName: string;
  hostIfindex: number;
  hostMac: string;
  podMac: string;
  ip: string;
  netnsPath: string;
  namespace: string;
  podName: string;
  /** Pod labels (k8s source). */
  labels: Record<string, string>;
  /** Kubernetes service account (a security label); absent in records of earlier versions. */
  serviceAccount?: string;
  /** Declared container ports (what named ports in policies resolve against). */
  namedPorts: NamedPort[];
  /** Security labels the identity is derived from. */
  securityLabels: string[];
  identity: number;
  state: EndpointState;
  created: string;
}

export type EndpointRequest = Omit<Endpoint, 'id' | 'state' | 'created'> & { id?: number };

const MAX_ID = 4095;

export class EndpointManager {
  private readonly eps = new Map<number, Endpoint>();
  /** By IPv4 address: the flow server looks endpoints up per datapath event. */
  private readonly byIp = new Map<string, Endpoint>();
  /** endpoints.json (all endpoints) and its journal of changes since. */
  private readonly journal: RecordJournal<Endpoint>;
  private readonly dp: EndpointDatapath;
  private readonly log: Logger;

  constructor(dp: EndpointDatapath, file: string, log: Logger) {
    this.dp = dp;
    this.journal = new RecordJournal<Endpoint>(file, () => this.list());
    this.log = log;
  }

  /**
   * Re-adopts the endpoints of an earlier run: those whose host-side interface still exists are re-wired
   * (maps re-written, pinned links switched to the new program); the rest are dropped and returned.
   */
  restore(ifindexOf: (name: string) => number | undefined): Endpoint[] {
    const saved = this.journal.load(decodeEndpoints).values();
    const gone: Endpoint[] = [];
    for (const saved1 of saved) {
      // Records of an older agent lack fields added since.
      const ep: Endpoint = { ...saved1, namedPorts: saved1.namedPorts ?? [] };
      const ifindex = ifindexOf(ep.hostIfName);
      if (ifindex === undefined || ifindex !== ep.hostIfindex) {
        this.log.info({ endpoint: ep.id, interface: ep.hostIfName }, 'endpoint interface gone while the agent was down; removing it');
        this.dp.removeEndpoint(ep);
        gone.push(ep);
        continue;
      }
      this.dp.restoreEndpoint(ep);
      this.put({ ...ep, state: 'ready' });
    }
    this.journal.compact();
    this.log.info({ restored: this.eps.size, removed: gone.length }, 'endpoints restored');
    return gone;
  }

  private put(ep: Endpoint): void {
    this.eps.set(ep.id, ep);
    this.byIp.set(ep.ip, ep);
  }

  private drop(ep: Endpoint): void {
    this.eps.delete(ep.id);
    if (this.byIp.get(ep.ip) === ep) this.byIp.delete(ep.ip);
  }

  findByIp(ip: string): Endpoint | undefined {
    return this.byIp.get(ip);
  }

  /** Persists the change of one endpoint (its record, or its removal). */
  private save(id: number): void {
    const ep = this.eps.get(id);
    if (ep) this.journal.put(String(id), ep);
    else this.journal.delete(String(id));
  }

  private nextId(): number {
    for (let id = 1; id <= MAX_ID; id++) if (!this.eps.has(id)) return id;
    throw new AgentError('TENDRIL_ERR_ENDPOINT_CONFLICT', `Cannot create endpoint: all ${MAX_ID} endpoint IDs are in use`);
  }

  /** `clock` (a CNI call's) is charged 'datapath' for the maps and attach, 'persist' for the state file. */
  async create(req: EndpointRequest, clock?: { lap(phase: string): void }): Promise<Endpoint> {
    if (req.id !== undefined && this.eps.has(req.id)) {
      throw new AgentError('TENDRIL_ERR_ENDPOINT_CONFLICT', `Cannot create endpoint ${req.id}: the ID is in use`);
    }
    for (const ep of this.eps.values()) {
      if (ep.ip === req.ip) {
        throw new AgentError('TENDRIL_ERR_ENDPOINT_CONFLICT', `Cannot create endpoint for ${req.ip}: endpoint ${ep.id} has that address`);
      }
      if (ep.containerId === req.containerId && ep.ifname === req.ifname) {
        throw new AgentError(
          'TENDRIL_ERR_ENDPOINT_CONFLICT',
          `Cannot create endpoint for container ${req.containerId.slice(0, 12)} interface "${req.ifname}": endpoint ${ep.id} exists`,
        );
      }
    }
    const ep: Endpoint = { ...req, id: req.id ?? this.nextId(), state: 'ready', created: new Date().toISOString() };
    // Claimed before the attach so a concurrent create sees the ID, address and container taken.
    this.put(ep);
    try {
      await this.dp.addEndpointAsync(ep);
      clock?.lap('datapath');
      this.save(ep.id);
      clock?.lap('persist');
    } catch (err) {
      this.drop(ep);
      this.dp.removeEndpoint(ep);
      throw err;
    }
    this.log.info({ endpoint: ep.id, ip: ep.ip, interface: ep.hostIfName, pod: `${ep.namespace}/${ep.podName}` }, 'endpoint created');
    return ep;
  }

  delete(id: number): Endpoint {
    const ep = this.eps.get(id);
    if (!ep) throw new AgentError('TENDRIL_ERR_ENDPOINT_NOT_FOUND', `Endpoint ${id} not found`);
    this.dp.removeEndpoint(ep);
    this.drop(ep);
    this.save(id);
    this.log.info({ endpoint: id, ip: ep.ip }, 'endpoint deleted');
    return ep;
  }

  /** Changes an endpoint's labels and identity (the caller rewrites the datapath's copy). */
  update(id: number, change: Pick<Endpoint, 'labels' | 'securityLabels' | 'identity'>): Endpoint {
    const cur = this.eps.get(id);
    if (!cur) throw new AgentError('TENDRIL_ERR_ENDPOINT_NOT_FOUND', `Endpoint ${id} not found`);
    const next: Endpoint = { ...cur, ...change };
    this.put(next);
    this.save(id);
    return next;
  }

  get(id: number): Endpoint | undefined {
    return this.eps.get(id);
  }

  /** Resolves Cilium-style references: `42`, `container-id:ID`, `ipv4:IP`, `pod-name:NS/NAME`. */
  resolve(ref: string): Endpoint | undefined {
    if (/^\d+$/.test(ref)) return this.eps.get(Number(ref));
    const i = ref.indexOf(':');
    if (i < 0) return undefined;
    const kind = ref.slice(0, i);
    const val = ref.slice(i + 1);
    for (const ep of this.eps.values()) {
      if (kind === 'container-id' && ep.containerId === val) return ep;
      if (kind === 'ipv4' && ep.ip === val) return ep;
      if (kind === 'pod-name' && `${ep.namespace}/${ep.podName}` === val) return ep;
    }
    return undefined;
  }

  findByContainer(containerId: string, ifname: string): Endpoint | undefined {
    for (const ep of this.eps.values()) if (ep.containerId === containerId && ep.ifname === ifname) return ep;
    return undefined;
  }

  list(): Endpoint[] {
    return [...this.eps.values()].sort((a, b) => a.id - b.id);
  }
}

function decodeEndpoints(snapshot: unknown): Array<[string, Endpoint]> {
  return (snapshot as Endpoint[]).map((e) => [String(e.id), e]);
}

/** The endpoints saved in a state dir's endpoints file (snapshot and journal), for readers outside the manager. */
export function savedEndpoints(file: string): Endpoint[] {
  return [...readRecords(file, decodeEndpoints).values()];
}
