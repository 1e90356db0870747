// The agent's service load-balancer: watches Services, Endpoints and Identities in the store, derives each
// frontend's backends and keeps the BPF service maps of this node in step (one coalesced pass per burst of changes).
import type { BpfMap } from '../kernel/bpf/index.js';
import { KindCache, startInOrder } from '../store/cache.js';
import type { EndpointSpec, IdentitySpec, Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import { backendsFor as selectedBackends, type EndpointView } from './backends.js';
import { LbDatapath, type Frontend, type LbAlgorithm, type RemovedBackend } from './datapath.js';
import { LB_SCOPE_EXTERNAL } from './maps.js';
import type { ServiceSpec } from './service.js';
import type { ServiceStatusSpec } from './lb-pool.js';
import { sliceBackends, type EndpointSliceSpec } from './endpoint-slice.js';
import type { ServicePort } from './service.js';

export interface ServiceManagerOptions {
  store: Store;
  /** This node's name (internalTrafficPolicy Local keeps only its backends). */
  node: string;
  log: Logger;
  algorithm: LbAlgorithm;
  maglevTableSize: number;
  /**
   * Kubernetes mode: every service's backends come from its EndpointSlices (written by the endpoint-slice controller
   * from pod readiness), not from the endpoints its selector matches; the slices are listed before the first pass.
   */
  backendsFromSlices?: boolean;
  /** Called with the (backend, frontend) pairs a pass ended (a backend left a frontend): socket LB ends their sockets. */
  onBackendsRemoved?: (backends: RemovedBackend[]) => void;
}

const RETRY_MS = 1000;

export interface ServiceListEntry {
  id: number;
  frontend: string;
  service: string;
  type: string;
  backends: string[];
  /** loadBalancerSourceRanges of a LoadBalancer IP frontend, as written to tendril_lb4_source_range. */
  sourceRanges?: string[];
}

/** Frontend address of a node port in the maps: any IP of any node of the cluster. */
export const NODEPORT_ADDRESS = '0.0.0.0';

/** Frontends of the services, with their backends (pure: the agent's and the tests' one derivation). */
export function frontendsOf(services: Iterable<ServiceSpec>, endpoints: readonly EndpointView[], node: string, lbIps: (s: ServiceSpec) => readonly string[] = () => [], slices: readonly EndpointSliceSpec[] = [], backendsFromSlices = false): Frontend[] {
  const out: Frontend[] = [];
  // A service with a selector: the endpoints it selects; without one: its EndpointSlices' addresses (endpoint-slice.ts).
  // backendsFromSlices (Kubernetes mode): every service's from its EndpointSlices, as kube-proxy and Cilium read them.
  const backendsFor = (s: ServiceSpec, p: ServicePort, eps: readonly EndpointView[]) => (backendsFromSlices || Object.keys(s.selector).length === 0 ? sliceBackends(s, p, slices) : selectedBackends(s, p, eps));
  for (const s of services) {
    if (!s.clusterIP) continue;
    for (const p of s.ports) {
      let backends = backendsFor(s, p, endpoints);
      if (s.internalTrafficPolicy === 'Local') backends = backends.filter((b) => b.node === node);
      const f: Frontend = {
        address: s.clusterIP,
        port: p.port,
        protocol: p.protocol,
        service: `${s.namespace}/${s.name}`,
        // As Cilium lists them: the ClusterIP frontend of any service is of type ClusterIP.
        type: 'ClusterIP',
        backends: backends.map((b) => ({ ip: b.ip, port: b.port })),
      };
      if (s.sessionAffinity === 'ClientIP') f.affinityTimeout = s.sessionAffinityTimeoutSeconds ?? 10800;
      out.push(f);
      // NodePort (and LoadBalancer): every node IP at the node port, frontend address 0.0.0.0 in the maps.
      // Pods reach it over the backends of internalTrafficPolicy; traffic from outside with externalTrafficPolicy
      // Local only this node's backends (a second entry, LB_SCOPE_EXTERNAL), with Cluster every backend.
      if (s.type !== 'ClusterIP' && p.nodePort !== undefined) {
        const all = backendsFor(s, p, endpoints).map((b) => ({ ip: b.ip, port: b.port, node: b.node }));
        const np: Frontend = { ...f, address: NODEPORT_ADDRESS, port: p.nodePort, type: 'NodePort', backends: all.map(({ ip, port }) => ({ ip, port })) };
        if (s.externalTrafficPolicy === 'Local') {
          out.push({ ...np, extLocal: true });
          out.push({ ...np, scope: LB_SCOPE_EXTERNAL, backends: all.filter((b) => b.node === node).map(({ ip, port }) => ({ ip, port })) });
        } else {
          out.push(np);
        }
      }
      // LoadBalancer: each IP LB IPAM gave it (its ServiceStatus), at the service port, served to traffic from outside
      // too (external: the native device translates it); its backends as the node port's, with externalTrafficPolicy
      // Local the same LB_SCOPE_EXTERNAL entry of this node's backends.
      if (s.type === 'LoadBalancer') {
        const all = backendsFor(s, p, endpoints).map((b) => ({ ip: b.ip, port: b.port, node: b.node }));
        for (const ip of lbIps(s)) {
          const lb: Frontend = { ...f, address: ip, type: 'LoadBalancer', external: true, backends: all.map(({ ip, port }) => ({ ip, port })) };
          if (s.loadBalancerSourceRanges?.length) lb.sourceRanges = [...s.loadBalancerSourceRanges];
          if (s.externalTrafficPolicy === 'Local') {
            out.push({ ...lb, extLocal: true });
            out.push({ ...lb, scope: LB_SCOPE_EXTERNAL, backends: all.filter((b) => b.node === node).map(({ ip, port }) => ({ ip, port })) });
          } else {
            out.push(lb);
          }
        }
      }
    }
  }
  return out;
}

/**
 * LoadBalancer IPs this node must not announce (L2): those of services with externalTrafficPolicy Local that have
 * no backend on this node at any port (their LB_SCOPE_EXTERNAL entries are all empty), as Cilium announces only from
 * nodes with local endpoints. Traffic drawn to such a node would be dropped (no local backend, no SNAT).
 */
export function lbIpsWithoutLocalBackend(frontends: readonly Frontend[]): Set<string> {
  const local = new Map<string, boolean>();
  for (const f of frontends) {
    if (f.type !== 'LoadBalancer' || f.scope !== LB_SCOPE_EXTERNAL) continue;
    local.set(f.address, (local.get(f.address) ?? false) || f.backends.length > 0);
  }
  return new Set([...local].filter(([, has]) => !has).map(([ip]) => ip));
}

/**
 * The frontend index of serviceByAddr(): "ip:port/PROTO" -> service, for each ClusterIP and each LoadBalancer IP
 * LB IPAM gave a LoadBalancer service (at the service port). Node ports are not in it: their frontend is any node
 * address (0.0.0.0 in the maps), which a flow's address alone cannot tell from a pod listening on the same port.
 */
export function serviceIndex(services: Iterable<ServiceSpec>, lbIps: (s: ServiceSpec) => readonly string[] = () => []): Map<string, { name: string; namespace: string }> {
  const out = new Map<string, { name: string; namespace: string }>();
  for (const s of services) {
    if (!s.clusterIP) continue;
    const addrs = [s.clusterIP, ...(s.type === 'LoadBalancer' ? lbIps(s) : [])];
    for (const a of addrs) for (const p of s.ports) out.set(`${a}:${p.port}/${p.protocol}`, { name: s.name, namespace: s.namespace });
  }
  return out;
}

export class ServiceManager {
  private readonly opts: ServiceManagerOptions;
  private readonly services: KindCache<ServiceSpec>;
  private readonly endpoints: KindCache<EndpointSpec>;
  private readonly identities: KindCache<IdentitySpec>;
  private readonly statuses: KindCache<ServiceStatusSpec>;
  private readonly slices: KindCache<EndpointSliceSpec>;
  private slicesRetry: NodeJS.Timeout | undefined;
  private dp: LbDatapath | undefined;
  private pending: NodeJS.Immediate | undefined;
  private starting: { stop(): void } | undefined;
  private stopped = false;
  private lastSync: { at: string; frontends: number; written: number; removed: number; ms: number } | undefined;
  private lastError: string | undefined;
  /** Frontend "ip:port/PROTO" -> service, for serviceByAddr(); rebuilt after a change. */
  private byFrontend: Map<string, { name: string; namespace: string }> | undefined;
  /** LB IPs of externalTrafficPolicy Local services without a backend on this node (set by each pass). */
  private noLocalBackend: Set<string> | undefined;

  constructor(opts: ServiceManagerOptions) {
    this.opts = opts;
    this.services = new KindCache<ServiceSpec>(opts.store, 'Service', opts.log);
    this.endpoints = new KindCache<EndpointSpec>(opts.store, 'Endpoint', opts.log);
    this.identities = new KindCache<IdentitySpec>(opts.store, 'Identity', opts.log);
    this.statuses = new KindCache<ServiceStatusSpec>(opts.store, 'ServiceStatus', opts.log);
    this.slices = new KindCache<EndpointSliceSpec>(opts.store, 'EndpointSlice', opts.log);
  }

  /** Opens the maps (adopting what an earlier run wrote) and starts the watches; store failures are retried. */
  start(map: (name: string) => BpfMap): void {
    this.dp = new LbDatapath(map, { algorithm: this.opts.algorithm, maglevTableSize: this.opts.maglevTableSize });
    const events = { change: () => this.schedule(), resync: () => this.schedule() };
    // Identities and endpoints first: a service's first pass then already sees its backends (with backendsFromSlices
    // the slices too, so that a restarted agent never writes its services without backends for a moment).
    const first = this.opts.backendsFromSlices ? [this.identities, this.endpoints, this.statuses, this.slices, this.services] : [this.identities, this.endpoints, this.statuses, this.services];
    this.starting = startInOrder(first, {
      events,
      retryMs: RETRY_MS,
      ready: () => (this.opts.backendsFromSlices ? this.schedule() : void this.startSlices(events, 0)),
      failed: (err) => {
        this.lastError = err.message;
        this.opts.log.warn({ err }, 'cannot list services from the store; retrying');
      },
    });
  }

  /**
   * Explicit backends (EndpointSlices) on their own: a store that cannot serve the kind (a Kubernetes binding without
   * it) leaves the selector-less services without backends, never the others without their maps.
   */
  private async startSlices(events: { change: () => void; resync: () => void }, failures: number): Promise<void> {
    try {
      if (!this.slices.ready) await this.slices.start(events);
      this.schedule();
    } catch (err) {
      if (this.stopped) return;
      if (failures === 0) this.opts.log.warn({ err }, 'cannot list endpoint slices from the store; services without a selector have no backends until it can');
      this.slicesRetry = setTimeout(() => void this.startSlices(events, failures + 1), Math.min(30_000, RETRY_MS * 2 ** Math.min(failures, 5)));
    }
  }

  stop(): void {
    this.stopped = true;
    this.starting?.stop();
    clearTimeout(this.slicesRetry);
    this.slices.stop();
    if (this.pending) clearImmediate(this.pending);
    this.pending = undefined;
    this.services.stop();
    this.endpoints.stop();
    this.identities.stop();
    this.statuses.stop();
  }

  private schedule(): void {
    this.byFrontend = undefined;
    if (this.pending || this.stopped || !this.services.ready) return;
    this.pending = setImmediate(() => {
      this.pending = undefined;
      this.syncNow();
    });
  }

  private syncNow(): void {
    if (!this.dp || this.stopped) return;
    const t0 = performance.now();
    const eps: EndpointView[] = this.endpoints.values().map((e) => ({
      ip: e.ip,
      node: e.node,
      namespace: e.namespace,
      labels: this.identities.get(String(e.identity))?.labels ?? [],
      namedPorts: e.namedPorts ?? [],
    }));
    const frontends = frontendsOf(this.services.values(), eps, this.opts.node, (s) => this.lbIpsOf(s), this.slices.ready ? this.slices.values() : [], this.opts.backendsFromSlices ?? false);
    this.noLocalBackend = lbIpsWithoutLocalBackend(frontends);
    try {
      const r = this.dp.sync(frontends);
      const gone = this.dp.takeRemovedBackends();
      if (gone.length > 0) this.opts.onBackendsRemoved?.(gone);
      this.lastSync = { at: new Date().toISOString(), frontends: frontends.length, ...r, ms: Math.round((performance.now() - t0) * 10) / 10 };
      this.lastError = undefined;
      if (r.written || r.removed) this.opts.log.info(this.lastSync, 'service maps updated');
    } catch (err) {
      this.lastError = (err as Error).message;
      this.opts.log.error({ err }, 'cannot write the service maps');
    }
  }

  /**
   * Whether this node may announce (L2) the LoadBalancer IP: not before the first pass over the services (it does
   * not know yet whether a service is externalTrafficPolicy Local), nor for a Local service with no backend here.
   */
  mayAnnounce(ip: string): boolean {
    return this.noLocalBackend !== undefined && !this.noLocalBackend.has(ip);
  }

  private lbIpsOf(s: ServiceSpec): readonly string[] {
    return this.statuses.get(`${s.namespace}.${s.name}`)?.loadBalancer.ingress ?? [];
  }

  /** The service whose frontend (ClusterIP or LoadBalancer IP, not a node port's 0.0.0.0) is ip:port/protocol (6 TCP, 17 UDP); for flows. */
  serviceByAddr(ip: string, port: number, protocol: number): { name: string; namespace: string } | undefined {
    const key = `${ip}:${port}/${protocol === 17 ? 'UDP' : 'TCP'}`;
    this.byFrontend ??= serviceIndex(this.services.values(), (s) => this.lbIpsOf(s));
    return this.byFrontend.get(key);
  }

  list(): ServiceListEntry[] {
    return this.dp?.list() ?? [];
  }

  status(): { enabled: boolean; algorithm: LbAlgorithm; maglevTableSize: number; synced: boolean; frontends: number; lastSync?: ServiceManager['lastSync']; lastError?: string } {
    return {
      enabled: true,
      algorithm: this.opts.algorithm,
      maglevTableSize: this.opts.maglevTableSize,
      synced: this.services.ready && this.endpoints.ready && this.identities.ready && (!this.opts.backendsFromSlices || this.slices.ready),
      frontends: this.list().length,
      ...(this.lastSync ? { lastSync: this.lastSync } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}
