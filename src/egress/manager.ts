// The agent's egress gateway side: watches policies (with the operator's status), endpoints, identities and
// namespaces of the whole cluster, keeps tendril_egress_gw_policy_v4 equal to what they select, and on the gateway
// node holds each egress IP on its device (and in tendril_egress_ip_v4, which the reverse NAT consults).
import type { BpfMap } from '../kernel/bpf/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import { sendFrame } from '../kernel/socket/index.js';
import { garpFrames } from '../l2/index.js';
import { KindCache, startInOrder, type EndpointSpec, type IdentitySpec, type NamespaceSpec, type Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import { egressEntries, type EgressEntry } from './entries.js';
import { EgressMaps, type EgressKey, type EgressValue } from './maps.js';
import type { EgressGatewayPolicyResource } from './policy.js';
import { EGRESS_STORE_KIND } from './store.js';

const RETRY_MS = 500;

export interface EgressManagerOptions {
  store: Store;
  node: string;
  /** The native device egress IPs go on unless a policy names its interface. */
  nativeDev: string;
  log: Logger;
}

/** One egress IP this node holds as a gateway. */
export interface EgressIpView {
  ip: string;
  device: string;
  policy: string;
}

export interface EgressStatusView {
  entries: number;
  gatewayOf: EgressIpView[];
  lastSync: { at: string; written: number; removed: number } | null;
  /** Policy name -> store revision of it the map holds (what `lab egress-gateway apply` waits for). */
  applied: Record<string, number>;
  lastError: string | null;
}

export class EgressManager {
  private readonly opts: EgressManagerOptions;
  private readonly policies: KindCache<EgressGatewayPolicyResource>;
  private readonly endpoints: KindCache<EndpointSpec>;
  private readonly identities: KindCache<IdentitySpec>;
  private readonly namespaces: KindCache<NamespaceSpec>;
  private maps: EgressMaps | undefined;
  private pending: NodeJS.Immediate | undefined;
  private retry: NodeJS.Timeout | undefined;
  private starting: { stop(): void } | undefined;
  private stopped = false;
  private held: EgressIpView[] = [];
  private lastSync: EgressStatusView['lastSync'] = null;
  private lastError: string | undefined;
  /** Policy name -> the value (JSON) the map was last made from. */
  private synced = new Map<string, string>();
  /** Callers of whenSynced() waiting for the first pass. */
  private waiters: Array<(synced: boolean) => void> = [];

  constructor(opts: EgressManagerOptions) {
    this.opts = opts;
    this.policies = new KindCache<EgressGatewayPolicyResource>(opts.store, EGRESS_STORE_KIND, opts.log);
    this.endpoints = new KindCache<EndpointSpec>(opts.store, 'Endpoint', opts.log);
    this.identities = new KindCache<IdentitySpec>(opts.store, 'Identity', opts.log);
    this.namespaces = new KindCache<NamespaceSpec>(opts.store, 'Namespace', opts.log);
  }

  /** Opens the maps (what an earlier run wrote is adopted and corrected by the first pass) and starts the watches. */
  start(map: (name: string) => BpfMap): void {
    this.maps = new EgressMaps(map);
    this.starting = startInOrder([this.identities, this.namespaces, this.endpoints, this.policies], {
      events: { change: () => this.schedule(), resync: () => this.schedule() },
      retryMs: RETRY_MS,
      ready: () => this.schedule(),
      failed: (err) => {
        this.lastError = err.message;
        this.opts.log.warn({ err }, 'cannot list egress gateway policies from the store; retrying');
      },
    });
  }

  /**
   * Resolves true once the map equals what the store asks for (the first pass after start), false after `ms`
   * (the store away: the map from before the restart keeps working meanwhile). The agent waits for it before it
   * reports ready, so an agent coming back after the gateway moved points its pods at the new gateway at once.
   */
  whenSynced(ms: number): Promise<boolean> {
    if (this.lastSync) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), ms);
      const done = (v: boolean): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(v);
      };
      this.waiters.push(done);
    });
  }

  /** Stops the watches. Map entries and egress IPs stay (traffic keeps flowing through an agent restart). */
  stop(): void {
    for (const w of [...this.waiters]) w(false);
    this.stopped = true;
    this.starting?.stop();
    clearTimeout(this.retry);
    if (this.pending) clearImmediate(this.pending);
    this.pending = undefined;
    this.policies.stop();
    this.endpoints.stop();
    this.identities.stop();
    this.namespaces.stop();
  }

  private schedule(): void {
    if (this.pending || this.stopped || !this.policies.ready) return;
    this.pending = setImmediate(() => {
      this.pending = undefined;
      this.syncNow();
    });
  }

  /** The entries the cluster's state asks for now. */
  wanted(): EgressEntry[] {
    const eps = this.endpoints.values().map((e) => ({ ip: e.ip, namespace: e.namespace, labels: this.identities.get(String(e.identity))?.labels ?? [] }));
    const ns = new Map(this.namespaces.entries().map(([name, v]) => [name, v.labels] as [string, Record<string, string>]));
    return egressEntries(this.policies.values(), eps, ns);
  }

  private syncNow(): void {
    const maps = this.maps;
    if (!maps || this.stopped) return;
    try {
      const want = this.wanted();
      const r = maps.replacePolicy(want);
      const mine = this.policies
        .values()
        .filter((p) => p.status.gatewayNode === this.opts.node && p.status.egressIP !== undefined)
        .map((p): EgressIpView => ({ ip: p.status.egressIP!, device: p.spec.egressGateway.interface ?? this.opts.nativeDev, policy: p.spec.name }));
      this.holdIps(maps, mine);
      this.synced = new Map(this.policies.entries().map(([n, v]) => [n, JSON.stringify(v)]));
      this.lastSync = { at: new Date().toISOString(), written: r.written, removed: r.removed };
      this.lastError = undefined;
      for (const w of [...this.waiters]) w(true);
      if (r.written || r.removed) this.opts.log.info({ ...this.lastSync, entries: want.length, gatewayOf: mine.map((m) => m.ip) }, 'egress gateway map updated');
    } catch (err) {
      this.lastError = (err as Error).message;
      this.opts.log.error({ err }, 'cannot apply egress gateway policies');
      clearTimeout(this.retry);
      this.retry = setTimeout(() => this.schedule(), RETRY_MS);
    }
  }

  /** Egress IPs on their devices (as /32) and in tendril_egress_ip_v4; the ones no longer this node's are removed. */
  private holdIps(maps: EgressMaps, mine: EgressIpView[]): void {
    const nl = Netlink.open();
    try {
      const wantIps = mine.map((m) => m.ip);
      // What an earlier pass (or run: the map is pinned) put on a device and is no longer wanted goes.
      const stale = [...new Set([...maps.ips.keys(), ...this.held.map((h) => h.ip)])].filter((ip) => !wantIps.includes(ip));
      for (const ip of stale) {
        for (const a of nl.listAddresses()) if (a.address === ip && a.prefixLen === 32) nl.deleteAddress(a.index, `${ip}/32`);
      }
      for (const m of mine) {
        const link = nl.getLink(m.device);
        if (!link) throw new Error(`Cannot hold egress IP ${m.ip} of policy "${m.policy}": interface "${m.device}" not found on node ${this.opts.node}`);
        if (!nl.listAddresses(link.index).some((a) => a.address === m.ip)) {
          nl.addAddress(link.index, `${m.ip}/32`);
          // Taken over from a gateway that went (failover): the segment's hosts move their neighbour entry for the
          // egress IP to this node at once (the old node, if still up, may hold the address until its agent is back).
          try {
            for (const f of garpFrames(m.ip, link.mac)) sendFrame(link.index, f);
          } catch (err) {
            this.opts.log.warn({ err: (err as Error).message, ip: m.ip }, 'cannot send gratuitous ARP for the egress IP; neighbours learn it when their entry goes stale');
          }
        }
      }
      maps.replaceIps(wantIps);
      this.held = mine;
    } finally {
      nl.close();
    }
  }

  /** The store revision of each policy the map holds: a rewrite of the same value (which the cache reports as no change) counts as applied. */
  private applied(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [n, v] of this.policies.entries()) if (this.synced.get(n) === JSON.stringify(v)) out[n] = this.policies.revisionOf(n) ?? 0;
    return out;
  }

  list(): Array<EgressKey & EgressValue> {
    return this.maps?.listPolicy() ?? [];
  }

  status(): EgressStatusView {
    return { entries: this.maps ? this.maps.listPolicy().length : 0, gatewayOf: this.held, lastSync: this.lastSync, applied: this.applied(), lastError: this.lastError ?? null };
  }
}
