// LB IPAM: the operator gives every LoadBalancer service an IP of a TendrilLoadBalancerIPPool that selects it.
//
// Level-triggered as the cluster-pool: any change of a Service or pool marks the world dirty and one serialized pass
// recomputes everything from the store. Every handed-out IP is a claim resource (IPAMState "lb-ip.<ip>") written with
// expectedRevision, so the store refuses a second owner across concurrent writers and operator restarts; a pass that
// loses such a race is simply run again. The service's IP (or why it has none) is its ServiceStatus; a pool's
// overlap with another pool and its usage are in the pool's status.
import {
  LBIPAM_IPS_ANNOTATION,
  LBIPAM_SHARING_KEY_ANNOTATION,
  LB_IP_CLAIM_PREFIX,
  LB_REQUEST_SATISFIED,
  poolRanges,
  poolSpan,
  rangesOverlap,
  selectorMatches,
  serviceKey,
  serviceSelectorLabels,
  validateLbPool,
  type IpRange,
  type LbIpClaim,
  type LbPoolCondition,
  type LbPoolResource,
  type LbPoolSpec,
  type ServiceSpec,
  type ServiceStatusSpec,
} from '../lb/index.js';
import { KindCache, type Resource, type Store } from '../store/index.js';
import { formatIPv4, isIPv4, parseIPv4 } from '../util/ip.js';
import type { Logger } from '../util/log.js';

export const POOL_CONFLICT = 'tendril.io/pool-conflict';
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;

export interface LbIpamOptions {
  store: Store;
  log: Logger;
}

export interface LbIpamStatus {
  running: boolean;
  pools: Array<{ name: string; disabled: boolean; conflict: string | null; available: number; used: number }>;
  /** "namespace/name" -> reason, for LoadBalancer services without an IP. */
  pending: Record<string, string>;
  allocated: Record<string, string[]>;
  lastError: string | null;
  lastPass: string | null;
}

interface PoolView {
  name: string;
  res: Resource<LbPoolResource>;
  spec: LbPoolSpec | undefined;
  invalid?: string;
  ranges: IpRange[];
  conflictWith?: string;
}

type Claims = Map<string, Resource<LbIpClaim>>;

function portsOf(s: ServiceSpec): string[] {
  return s.ports.map((p) => `${p.port}/${p.protocol}`);
}

function inRanges(ranges: readonly IpRange[], ip: number): boolean {
  return ranges.some((r) => ip >= r.first && ip <= r.last);
}

/** Whether `key`'s service may join the holders of a claim: same sharing key and no port any holder uses. */
function shareable(c: LbIpClaim, key: string, sharingKey: string | undefined, ports: readonly string[]): boolean {
  if (sharingKey === undefined || c.sharingKey !== sharingKey) return false;
  return c.owners.every((o) => o.service === key || !o.ports.some((p) => ports.includes(p)));
}

function condition(status: boolean, reason: string, message: string, type = LB_REQUEST_SATISFIED): LbPoolCondition {
  return { type, status: status ? 'True' : 'False', reason, message };
}

export class LbIpam {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly services: KindCache<ServiceSpec>;
  private readonly pools: KindCache<LbPoolResource>;
  private running = false;
  private dirty = false;
  private loop: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private startTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private last: Omit<LbIpamStatus, 'running' | 'lastError' | 'lastPass'> = { pools: [], pending: {}, allocated: {} };
  private lastError: string | null = null;
  private lastPass: string | null = null;

  constructor(opts: LbIpamOptions) {
    this.store = opts.store;
    this.log = opts.log;
    this.services = new KindCache<ServiceSpec>(opts.store, 'Service', opts.log);
    this.pools = new KindCache<LbPoolResource>(opts.store, 'LoadBalancerIPPool', opts.log);
  }

  /** Starts the watches (retried while the store is away) and the first pass. */
  async start(): Promise<void> {
    this.running = true;
    await this.startCaches();
  }

  private async startCaches(): Promise<void> {
    const events = { change: () => this.kick(), resync: () => this.kick() };
    try {
      if (!this.pools.ready) await this.pools.start(events);
      if (!this.services.ready) await this.services.start(events);
      this.kick();
    } catch (err) {
      if (!this.running) return;
      this.lastError = (err as Error).message;
      this.log.warn({ err }, 'LB IPAM cannot list services and pools; retrying');
      this.startTimer = setTimeout(() => void this.startCaches(), 1000);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.startTimer);
    this.services.stop();
    this.pools.stop();
    await this.loop;
  }

  /** Marks the world dirty and runs a pass unless one is running (it then runs again). */
  kick(): void {
    this.dirty = true;
    if (this.loop || !this.running) return;
    this.loop = (async () => {
      while (this.dirty && this.running) {
        this.dirty = false;
        try {
          await this.pass();
          this.failures = 0;
          this.lastError = null;
        } catch (err) {
          this.failures++;
          this.lastError = (err as Error).message;
          const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(this.failures, 6));
          this.log.warn({ err: (err as Error).message, retryMs: wait }, 'LB IPAM pass failed; retrying');
          clearTimeout(this.retryTimer);
          this.retryTimer = setTimeout(() => this.kick(), wait);
        }
      }
    })().finally(() => {
      this.loop = undefined;
    });
  }

  /** Resolves once no pass is running and none is due (tests). */
  async settled(): Promise<void> {
    while (this.loop) await this.loop;
  }

  status(): LbIpamStatus {
    return { running: this.running, ...this.last, lastError: this.lastError, lastPass: this.lastPass };
  }

  /** One pass over everything (exported for tests through kick/settled). */
  private async pass(): Promise<void> {
    const [poolList, svcList, claimList, statusList] = await Promise.all([
      this.store.list<LbPoolResource>('LoadBalancerIPPool'),
      this.store.list<ServiceSpec>('Service'),
      this.store.list<LbIpClaim>('IPAMState'),
      this.store.list<ServiceStatusSpec>('ServiceStatus'),
    ]);
    const pools = this.viewPools(poolList.items);
    const claims: Claims = new Map();
    for (const r of claimList.items) if (r.name.startsWith(LB_IP_CLAIM_PREFIX)) claims.set(r.name.slice(LB_IP_CLAIM_PREFIX.length), r);
    const statuses = new Map(statusList.items.map((r) => [r.name, r]));
    const pending: Record<string, string> = {};
    const allocated: Record<string, string[]> = {};
    const lbServices = new Set<string>();

    for (const r of [...svcList.items].sort((a, b) => a.name.localeCompare(b.name))) {
      const s = r.value;
      if (s.type !== 'LoadBalancer') continue;
      const key = serviceKey(s);
      lbServices.add(key);
      const st = await this.serve(s, pools, claims);
      if (st.loadBalancer.ingress.length > 0) allocated[key] = st.loadBalancer.ingress;
      else pending[key] = st.conditions[0]?.message ?? 'pending';
      const cur = statuses.get(r.name);
      if (!cur || JSON.stringify(cur.value) !== JSON.stringify(st)) await this.store.put<ServiceStatusSpec>('ServiceStatus', r.name, st);
      statuses.delete(r.name);
    }
    // Services gone or no longer LoadBalancer: their IPs go back, their status goes.
    for (const [ip, c] of claims) {
      const gone = c.value.owners.filter((o) => !lbServices.has(o.service));
      if (gone.length > 0) await this.dropOwners(ip, c, gone.map((o) => o.service), claims);
    }
    for (const name of statuses.keys()) await this.store.delete('ServiceStatus', name);
    await this.writePoolStatus(pools, claims);
    this.last = {
      pools: pools.map((p) => ({ name: p.name, disabled: p.spec?.disabled ?? false, conflict: p.invalid ?? (p.conflictWith ? `overlaps pool "${p.conflictWith}"` : null), ...this.usage(p, claims) })),
      pending,
      allocated,
    };
    this.lastPass = new Date().toISOString();
  }

  /** Pools in name order; one that overlaps an earlier usable pool is conflicting and hands out nothing. */
  private viewPools(items: Resource<LbPoolResource>[]): PoolView[] {
    const out: PoolView[] = [];
    for (const res of [...items].sort((a, b) => a.name.localeCompare(b.name))) {
      const v: PoolView = { name: res.name, res, spec: undefined, ranges: [] };
      try {
        v.spec = validateLbPool(res.name, res.value?.spec);
        v.ranges = poolRanges(v.spec);
      } catch (err) {
        v.invalid = (err as Error).message;
      }
      if (v.spec) {
        const span = poolSpan(v.spec);
        const other = out.find((p) => p.spec && !p.conflictWith && rangesOverlap(poolSpan(p.spec), span));
        if (other) v.conflictWith = other.name;
      }
      out.push(v);
    }
    return out;
  }

  private usage(p: PoolView, claims: Claims): { available: number; used: number } {
    const total = p.ranges.reduce((n, r) => n + (r.last - r.first + 1), 0);
    let used = 0;
    for (const ip of claims.keys()) if (inRanges(p.ranges, parseIPv4(ip))) used++;
    return { available: total - used, used };
  }

  private async writePoolStatus(pools: PoolView[], claims: Claims): Promise<void> {
    for (const p of pools) {
      const conditions = [
        p.invalid
          ? condition(true, 'invalid', p.invalid, POOL_CONFLICT)
          : p.conflictWith
            ? condition(true, 'overlap', `Pool "${p.name}" overlaps pool "${p.conflictWith}": it hands out no IP until the overlap is gone`, POOL_CONFLICT)
            : condition(false, 'no-overlap', 'No overlap with another pool', POOL_CONFLICT),
      ];
      const status = { conditions, ...this.usage(p, claims) };
      if (JSON.stringify(p.res.value.status) === JSON.stringify(status)) continue;
      try {
        await this.store.put<LbPoolResource>('LoadBalancerIPPool', p.name, { ...p.res.value, status }, { expectedRevision: p.res.revision });
      } catch (err) {
        // The user changed the pool meanwhile: the watch brings it back for another pass.
        if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_CONFLICT') throw err;
      }
    }
  }

  /** Keeps, claims or frees the IPs of one LoadBalancer service and returns its status. */
  private async serve(s: ServiceSpec, pools: PoolView[], claims: Claims): Promise<ServiceStatusSpec> {
    const key = serviceKey(s);
    const ports = portsOf(s);
    const sharingKey = s.annotations?.[LBIPAM_SHARING_KEY_ANNOTATION];
    const labels = serviceSelectorLabels(s);
    const matching = pools.filter((p) => p.spec && !p.conflictWith && selectorMatches(p.spec.serviceSelector, labels));
    const held = [...claims].filter(([, c]) => c.value.owners.some((o) => o.service === key)).map(([ip]) => ip);
    const inMatching = (ip: string, fresh: boolean): boolean => matching.some((p) => !(fresh && p.spec!.disabled) && inRanges(p.ranges, parseIPv4(ip)));
    const pendingStatus = (reason: string, message: string): ServiceStatusSpec => ({ loadBalancer: { ingress: [] }, conditions: [condition(false, reason, message)] });

    const rawReq = s.annotations?.[LBIPAM_IPS_ANNOTATION];
    let wanted: string[] | undefined;
    let failure: ServiceStatusSpec | undefined;
    if (rawReq !== undefined) {
      const req = rawReq.split(',').map((x) => x.trim()).filter((x) => x !== '');
      const bad = req.find((ip) => !isIPv4(ip));
      if (bad !== undefined || req.length === 0) failure = pendingStatus('invalid_request', `Annotation ${LBIPAM_IPS_ANNOTATION} "${rawReq}" is no comma-separated list of IPv4 addresses`);
      else {
        const outside = req.find((ip) => !inMatching(ip, !held.includes(ip)));
        if (outside !== undefined) failure = pendingStatus('not_in_pool', `Requested IP ${outside} is in no enabled pool that selects service "${key}"`);
        else {
          const taken = req.find((ip) => !held.includes(ip) && claims.has(ip) && !shareable(claims.get(ip)!.value, key, sharingKey, ports));
          if (taken !== undefined) failure = pendingStatus('already_allocated', `Requested IP ${taken} is held by ${claims.get(taken)!.value.owners.map((o) => `"${o.service}"`).join(', ')} (no shared sharing-key, or a port clash)`);
          else wanted = req;
        }
      }
    } else {
      // An IP held before stays while a selecting pool (disabled or not) still contains it.
      const keep = held.filter((ip) => inMatching(ip, false));
      if (keep.length > 0) wanted = keep.slice(0, 1);
      else if (!matching.some((p) => !p.spec!.disabled)) failure = pendingStatus('no_pool', `No enabled, non-conflicting pool selects service "${key}"`);
      else {
        const ip = this.pick(matching, claims, key, sharingKey, ports);
        if (ip === undefined) failure = pendingStatus('out_of_ips', `Every IP of the pools selecting service "${key}" (${matching.map((p) => `"${p.name}"`).join(', ')}) is in use`);
        else wanted = [ip];
      }
    }
    const target = wanted ?? [];
    for (const ip of target) if (!held.includes(ip)) await this.addOwner(ip, key, sharingKey, ports, claims);
    // Update the ports recorded for IPs kept (a port change must be seen by the next sharer).
    for (const ip of target) {
      const c = claims.get(ip)!;
      const me = c.value.owners.find((o) => o.service === key)!;
      if (JSON.stringify(me.ports) !== JSON.stringify(ports)) {
        const next: LbIpClaim = { ...c.value, owners: c.value.owners.map((o) => (o.service === key ? { service: key, ports } : o)) };
        claims.set(ip, await this.store.put<LbIpClaim>('IPAMState', LB_IP_CLAIM_PREFIX + ip, next, { expectedRevision: c.revision }));
      }
    }
    for (const ip of held) if (!target.includes(ip)) await this.dropOwners(ip, claims.get(ip)!, [key], claims);
    if (failure) return failure;
    return { loadBalancer: { ingress: target }, conditions: [condition(true, 'satisfied', `Got ${target.join(', ')}`)] };
  }

  /** An IP for a new holder: one it may share first (as Cilium does), else the first free one in pool order. */
  private pick(pools: PoolView[], claims: Claims, key: string, sharingKey: string | undefined, ports: readonly string[]): string | undefined {
    const usable = pools.filter((p) => !p.spec!.disabled);
    if (sharingKey !== undefined) {
      for (const [ip, c] of claims) if (shareable(c.value, key, sharingKey, ports) && usable.some((p) => inRanges(p.ranges, parseIPv4(ip)))) return ip;
    }
    for (const p of usable) {
      for (const r of p.ranges) {
        for (let n = r.first; n <= r.last; n++) {
          const ip = formatIPv4(n);
          if (!claims.has(ip)) return ip;
        }
      }
    }
    return undefined;
  }

  private async addOwner(ip: string, key: string, sharingKey: string | undefined, ports: string[], claims: Claims): Promise<void> {
    const cur = claims.get(ip);
    const next: LbIpClaim = cur ? { ...cur.value, owners: [...cur.value.owners, { service: key, ports }] } : { owners: [{ service: key, ports }], ...(sharingKey !== undefined ? { sharingKey } : {}) };
    // expectedRevision: a claim written meanwhile (another operator) fails this pass, which then runs again.
    claims.set(ip, await this.store.put<LbIpClaim>('IPAMState', LB_IP_CLAIM_PREFIX + ip, next, { expectedRevision: cur?.revision ?? 0 }));
    this.log.info({ ip, service: key, shared: cur !== undefined }, 'LoadBalancer IP allocated');
  }

  private async dropOwners(ip: string, c: Resource<LbIpClaim>, services: string[], claims: Claims): Promise<void> {
    const owners = c.value.owners.filter((o) => !services.includes(o.service));
    if (owners.length === 0) {
      await this.store.delete('IPAMState', LB_IP_CLAIM_PREFIX + ip, { expectedRevision: c.revision });
      claims.delete(ip);
    } else {
      claims.set(ip, await this.store.put<LbIpClaim>('IPAMState', LB_IP_CLAIM_PREFIX + ip, { ...c.value, owners }, { expectedRevision: c.revision }));
    }
    this.log.info({ ip, services }, 'LoadBalancer IP released');
  }
}

