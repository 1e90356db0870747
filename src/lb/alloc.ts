// ClusterIP and NodePort allocation, done by the operator. Every allocated address and node port is a claim
// resource of its own (IPAMState "service-ip.<ip>" / "service-nodeport.<port>") created with expectedRevision 0,
// so the store itself refuses a second owner: no duplicates across concurrent writers or operator restarts.
import { StoreError, type Resource, type Store } from '../store/index.js';
import { cidrContains, cidrSize, formatCidr, formatIPv4, parseCidr, parseIPv4, type Cidr } from '../util/ip.js';
import { LbError } from './errors.js';
import { NODEPORT_MAX, NODEPORT_MIN, serviceKey, serviceResourceName, validateService, type ServiceSpec } from './service.js';

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';
const IP_CLAIM = 'service-ip.';
const PORT_CLAIM = 'service-nodeport.';
const MAX_CONFLICTS = 20;

export interface ServiceClaim {
  /** "namespace/name" of the owner. */
  service: string;
}

function isConflict(err: unknown): boolean {
  return err instanceof StoreError && err.code === 'TENDRIL_ERR_STORE_CONFLICT';
}

export class ServiceAllocator {
  private readonly store: Store;
  readonly cidr: Cidr;
  /** Claims as last seen: name -> owner. Loaded on first use, corrected on every conflict. */
  private claims: Map<string, string> | undefined;
  /** Serializes allocations of this operator. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(store: Store, cidr: string = DEFAULT_SERVICE_CIDR) {
    let c: Cidr;
    try {
      c = parseCidr(cidr);
    } catch (err) {
      throw new LbError('TENDRIL_ERR_LB_INVALID', `Invalid service CIDR ${JSON.stringify(cidr)}: ${(err as Error).message}`);
    }
    if (c.bits > 30) throw new LbError('TENDRIL_ERR_LB_INVALID', `Invalid service CIDR "${cidr}": /${c.bits} leaves no room for services (at most /30)`);
    this.store = store;
    this.cidr = c;
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async loadClaims(): Promise<Map<string, string>> {
    const m = new Map<string, string>();
    for (const r of (await this.store.list<ServiceClaim>('IPAMState')).items) {
      if (r.name.startsWith(IP_CLAIM) || r.name.startsWith(PORT_CLAIM)) m.set(r.name, r.value.service);
    }
    this.claims = m;
    return m;
  }

  /** Claims `name` for `owner`; false when another owner holds it. */
  private async claim(name: string, owner: string): Promise<boolean> {
    const claims = this.claims ?? (await this.loadClaims());
    const held = claims.get(name);
    if (held !== undefined) return held === owner;
    try {
      await this.store.put<ServiceClaim>('IPAMState', name, { service: owner }, { expectedRevision: 0 });
      claims.set(name, owner);
      return true;
    } catch (err) {
      if (!isConflict(err)) throw err;
      const cur = await this.store.get<ServiceClaim>('IPAMState', name);
      if (cur) claims.set(name, cur.value.service);
      return cur?.value.service === owner;
    }
  }

  private async release(name: string, owner: string): Promise<void> {
    const cur = await this.store.get<ServiceClaim>('IPAMState', name);
    if (cur && cur.value.service === owner) {
      await this.store.delete('IPAMState', name, { expectedRevision: cur.revision }).catch((err: unknown) => {
        if (!isConflict(err)) throw err;
      });
    }
    this.claims?.delete(name);
  }

  private async claimFree(prefix: string, first: number, count: number, fmt: (n: number) => string, owner: string): Promise<number | undefined> {
    const claims = this.claims ?? (await this.loadClaims());
    // Random probes first (O(1) while the range is sparse), then one sweep.
    for (let i = 0, tries = 0; i < 64 && tries < MAX_CONFLICTS; i++) {
      const n = first + Math.floor(Math.random() * count);
      if (claims.has(prefix + fmt(n))) continue;
      if (await this.claim(prefix + fmt(n), owner)) return n;
      tries++;
    }
    for (let n = first; n < first + count; n++) {
      if (!claims.has(prefix + fmt(n)) && (await this.claim(prefix + fmt(n), owner))) return n;
    }
    return undefined;
  }

  /**
   * Validates a service, keeps or allocates its ClusterIP and node ports, and stores it. A service stored before
   * keeps what it had unless the request names other values. Nothing is changed when anything fails.
   */
  apply(input: unknown): Promise<Resource<ServiceSpec>> {
    return this.serialize(() => this.applyNow(validateService(input)));
  }

  private async applyNow(spec: ServiceSpec): Promise<Resource<ServiceSpec>> {
    const owner = serviceKey(spec);
    const resName = serviceResourceName(spec.namespace, spec.name);
    const before = (await this.store.get<ServiceSpec>('Service', resName))?.value;
    const taken: string[] = [];
    const undo = async (): Promise<void> => {
      for (const t of taken) await this.release(t, owner).catch(() => undefined);
    };
    try {
      // ClusterIP: requested, kept, or allocated.
      const wanted = spec.clusterIP ?? before?.clusterIP;
      if (wanted !== undefined) {
        const n = parseIPv4(wanted);
        if (!cidrContains(this.cidr, n) || n === this.cidr.base || n === this.cidr.base + cidrSize(this.cidr) - 1) {
          throw new LbError('TENDRIL_ERR_SERVICE_INVALID', `Invalid service "${owner}": clusterIP ${wanted} is not a usable address of the service CIDR ${formatCidr(this.cidr)}`);
        }
        const had = before?.clusterIP === wanted;
        if (!(await this.claim(IP_CLAIM + wanted, owner))) {
          throw new LbError('TENDRIL_ERR_SERVICE_IP_TAKEN', `Cannot give service "${owner}" clusterIP ${wanted}: it belongs to service "${this.claims?.get(IP_CLAIM + wanted) ?? '?'}"`);
        }
        if (!had) taken.push(IP_CLAIM + wanted);
        spec.clusterIP = wanted;
      } else {
        const n = await this.claimFree(IP_CLAIM, this.cidr.base + 1, cidrSize(this.cidr) - 2, formatIPv4, owner);
        if (n === undefined) throw new LbError('TENDRIL_ERR_SERVICE_IP_EXHAUSTED', `Cannot allocate a clusterIP for service "${owner}": the service CIDR ${formatCidr(this.cidr)} is full`);
        spec.clusterIP = formatIPv4(n);
        taken.push(IP_CLAIM + spec.clusterIP);
      }
      // Node ports.
      if (spec.type !== 'ClusterIP') {
        for (const p of spec.ports) {
          const prev = before?.ports.find((q) => q.port === p.port && q.protocol === p.protocol)?.nodePort;
          const want = p.nodePort ?? prev;
          if (want !== undefined) {
            if (!(await this.claim(PORT_CLAIM + want, owner))) {
              throw new LbError('TENDRIL_ERR_NODEPORT_TAKEN', `Cannot give service "${owner}" node port ${want}: it belongs to service "${this.claims?.get(PORT_CLAIM + want) ?? '?'}"`);
            }
            if (prev !== want) taken.push(PORT_CLAIM + want);
            p.nodePort = want;
          } else {
            const n = await this.claimFree(PORT_CLAIM, NODEPORT_MIN, NODEPORT_MAX - NODEPORT_MIN + 1, String, owner);
            if (n === undefined) throw new LbError('TENDRIL_ERR_NODEPORT_EXHAUSTED', `Cannot allocate a node port for service "${owner}": ${NODEPORT_MIN}-${NODEPORT_MAX} are all in use`);
            p.nodePort = n;
            taken.push(PORT_CLAIM + n);
          }
        }
      }
      const stored = await this.store.put<ServiceSpec>('Service', resName, spec);
      // Release what the previous version held and this one does not.
      if (before) {
        const keep = new Set(claimNames(spec));
        for (const c of claimNames(before)) if (!keep.has(c)) await this.release(c, owner);
      }
      return stored;
    } catch (err) {
      await undo();
      throw err;
    }
  }

  /** Deletes a service and releases its ClusterIP and node ports; false when there was none. */
  remove(namespace: string, name: string): Promise<boolean> {
    return this.serialize(async () => {
      const resName = serviceResourceName(namespace, name);
      const cur = await this.store.get<ServiceSpec>('Service', resName);
      if (!cur) return false;
      await this.store.delete('Service', resName);
      for (const c of claimNames(cur.value)) await this.release(c, serviceKey(cur.value));
      return true;
    });
  }
}

function claimNames(s: ServiceSpec): string[] {
  const out: string[] = [];
  if (s.clusterIP) out.push(IP_CLAIM + s.clusterIP);
  for (const p of s.ports) if (p.nodePort !== undefined) out.push(PORT_CLAIM + p.nodePort);
  return out;
}
