// The node's security state: identities of its endpoints, the cluster's endpoints and namespaces as the ipcache and
// the policy compiler need them, the policy repository (cluster-wide from the store, node-local from the API), and
// the per-endpoint policy map entries compiled from it — recomputed for the endpoints a change affects and applied
// to the maps in place.
import type { L7Entry, ProxyEndpointRules, ProxyTable } from '../proxy/index.js';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  LABEL_NAMESPACE_NAME,
  PolicyCompiler,
  PolicyError,
  parsePolicies,
  parsePolicyObject,
  policyKey,
  type ClusterView,
  type EndpointPolicy,
  type EnforcementMode,
  type EndpointView,
  type IdentityInfo,
  type Policy,
} from '../policy/index.js';
import { KindCache } from '../store/cache.js';
import type { EndpointSpec, NamedPort, NamespaceSpec, PolicySpec, Store } from '../store/types.js';
import type { PolicyMapEntry } from '../datapath/index.js';
import type { Logger } from '../util/log.js';
import type { Endpoint, EndpointManager } from './endpoints.js';
import { AgentError } from './errors.js';
import { IDENTITY_LOCAL_MIN, IDENTITY_MIN, IdentityAllocator, RESERVED_LABELS, securityLabels } from './identity.js';
import type { SecurityDatapath } from './seams.js';
import { readJsonFile, writeJsonFile } from './state-file.js';

export interface SecurityOptions {
  nodeName: string;
  /** Underlay IP of this node, published with its endpoints (the tunnel endpoint for them). */
  nodeIP: string;
  store: Store | undefined;
  stateDir: string;
  mode: EnforcementMode;
  log: Logger;
  /** Whether the store answered lately (no round trip); false fails store-bound work at once. Default: always. */
  storeAvailable?: () => boolean;
  /** Where the identities known are kept for a restart without the store. */
  identityFile?: string;
  /** After a regeneration in which some endpoint has L7 entries (or had, and they are gone): the agent starts the
   *  proxy and hands it l7Table(). */
  onL7Change?: () => void;
}

/** Store name of an Endpoint resource. */
export function endpointResourceName(node: string, id: number): string {
  return `${node}:${id}`;
}

export interface PolicyView {
  key: string;
  kind: string;
  namespace: string;
  name: string;
  /** 'cluster' (the store, e.g. `tendril lab policy apply`) or 'local' (`tendril policy import` on this node). */
  source: 'cluster' | 'local';
  /** Store revision of a cluster policy. */
  revision?: number;
  document: unknown;
}

const PUBLISH_RETRY_MS = 1000;
/** Longest a pod ADD waits for the cluster state to load, and for its identity (the runtime retries on code 11). */
const SYNC_WAIT_MS = 2000;
const IDENTITY_WAIT_MS = 5000;
/** NetworkPolicy ipBlock identities: node-local, a range of their own above the CIDR ones (Cilium numbers local
 *  identities from 1 << 24). They exist only in the datapath's ipBlock trie and in policy entries. */
export const IDENTITY_IPBLOCK_MIN = 0x02000001;

/** GET /v1/endpoint/{id}/policy (`tendril bpf policy get`): the endpoint's map entries as the kernel holds them. */
export interface EndpointPolicyView {
  endpoint: number;
  identity: number;
  /** Cilium's policy-enabled: none, ingress, egress or both. */
  'policy-enabled': string;
  ingress: boolean;
  egress: boolean;
  entries: Array<PolicyMapEntry & { packets: number; bytes: number; labels: string[]; derivedFrom: string[] }>;
}

export class SecurityManager {
  readonly identities: IdentityAllocator;
  private readonly opts: SecurityOptions;
  private readonly log: Logger;
  private dp: SecurityDatapath | undefined;
  private endpoints: EndpointManager | undefined;
  private readonly namespaces: KindCache<NamespaceSpec> | undefined;
  private readonly clusterEndpoints: KindCache<EndpointSpec> | undefined;
  private readonly clusterPolicies: KindCache<PolicySpec> | undefined;
  /** Parsed cluster policies by resource name. */
  private readonly parsedCluster = new Map<string, Policy>();
  private readonly localPolicies = new Map<string, Policy>();
  private readonly localFile: string;
  private readonly compiler: PolicyCompiler;
  private clusterDirty = true;
  /** CIDR named in a policy -> its node-local identity. */
  private readonly cidrIds = new Map<string, number>();
  private nextCidrId = IDENTITY_LOCAL_MIN;
  /** CIDR prefixes already written to the ipcache (or left to the cluster entry that owns the prefix). */
  private readonly cidrInstalled = new Set<string>();
  /** NetworkPolicy ipBlock prefix -> its node-local identity (tendril_ipblock). */
  private readonly blockIds = new Map<string, number>();
  private nextBlockId = IDENTITY_IPBLOCK_MIN;
  /** ipBlock prefixes allocated but not yet in the trie: written after the endpoints are compiled with them, so an
   *  address never meets a block its policies do not know yet. */
  private readonly blocksToInstall = new Set<string>();
  private readonly compiled = new Map<number, EndpointPolicy>();
  private readonly pending = new Set<number>();
  private pendingAll = false;
  private scheduled: NodeJS.Immediate | undefined;
  private stopped = false;
  private readonly unpublished = new Set<number>();
  /** Records of deleted endpoints the store did not take the deletion of yet (resource names). */
  private readonly unremoved = new Set<string>();
  private publishTimer: NodeJS.Timeout | undefined;
  private publishing = false;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  /** The node proxy's port once it listens (L7 entries redirect there); 0 = none, L7 entries are left out. */
  private proxyPort = 0;
  /** Endpoints whose last compiled policy has L7 entries. */
  private readonly l7Endpoints = new Set<number>();
  /** Last regeneration: how many endpoints and how long. */
  lastRegeneration = { endpoints: 0, ms: 0, compileMs: 0, mapsMs: 0, at: '' };

  constructor(opts: SecurityOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.compiler = new PolicyCompiler({ mode: opts.mode });
    this.identities = new IdentityAllocator(opts.store, opts.log.child({ subsys: 'identity' }), opts.identityFile);
    if (opts.store) {
      this.namespaces = new KindCache<NamespaceSpec>(opts.store, 'Namespace', opts.log);
      this.clusterEndpoints = new KindCache<EndpointSpec>(opts.store, 'Endpoint', opts.log);
      this.clusterPolicies = new KindCache<PolicySpec>(opts.store, 'Policy', opts.log);
    }
    this.localFile = path.join(opts.stateDir, 'policies.json');
    for (const doc of readJsonFile<unknown[]>(this.localFile) ?? []) {
      try {
        const p = parsePolicyObject(doc, this.localFile);
        this.localPolicies.set(policyKey(p), p);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'ignoring an invalid saved policy');
      }
    }
  }

  /**
   * Whether the cluster's identities, namespaces, endpoints and policies have been listed. Until then nothing is
   * compiled: after a restart the pinned maps keep enforcing what the last run computed, and an empty policy
   * repository must not replace that.
   */
  get synced(): boolean {
    if (!this.opts.store) return true;
    return this.identities.ready && !!this.namespaces?.ready && !!this.clusterEndpoints?.ready && !!this.clusterPolicies?.ready;
  }

  private async whenSynced(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.synced) {
      if (this.opts.storeAvailable?.() === false || Date.now() > deadline) throw this.notSynced(ms);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private notSynced(ms?: number): AgentError {
    const why = ms === undefined ? 'not loaded yet' : `not loaded after ${ms} ms`;
    return new AgentError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cluster state (identities, policies) ${why}: the cluster store is unavailable; try again later`);
  }

  get mode(): EnforcementMode {
    return this.opts.mode;
  }

  /** Connects the datapath and endpoints once the node has them; compiles every endpoint. */
  attach(dp: SecurityDatapath, endpoints: EndpointManager): void {
    this.dp = dp;
    this.endpoints = endpoints;
    // CIDR identities of the last run keep their numbers: the pinned policy entries still refer to them.
    for (const e of dp.dumpIpcache()) {
      if (e.identity < IDENTITY_LOCAL_MIN) continue;
      this.cidrIds.set(e.prefix, e.identity);
      this.cidrInstalled.add(e.prefix);
      this.nextCidrId = Math.max(this.nextCidrId, e.identity + 1);
    }
    // So do ipBlock identities. Nothing was compiled before the datapath came: numbers allocated meanwhile go.
    this.blockIds.clear();
    this.blocksToInstall.clear();
    for (const e of dp.dumpIpBlocks()) {
      this.blockIds.set(e.prefix, e.identity);
      this.nextBlockId = Math.max(this.nextBlockId, e.identity + 1);
    }
    for (const [name, spec] of this.clusterEndpoints?.entries() ?? []) this.remoteEndpointChanged(name, spec);
    if (this.clusterEndpoints?.ready) this.pruneStaleRemoteIps();
    this.reconcileOwnRecords();
    this.syncCidrIdentities();
    this.scheduleAll();
  }

  /** Starts watching the store (identities, namespaces, endpoints, policies); retries until it answers. */
  start(): void {
    if (!this.opts.store) return;
    const retry = (what: string, fn: () => Promise<void>): void => {
      fn().catch((err: unknown) => {
        if (this.stopped) return;
        this.log.warn({ err: (err as Error).message, what }, 'cluster store not reachable yet; retrying');
        const t = setTimeout(() => {
          this.retryTimers.delete(t);
          retry(what, fn);
        }, 1000);
        this.retryTimers.add(t);
      });
    };
    retry('identities', () =>
      this.identities.start({
        change: (id, labels) => this.identityChanged(id, labels),
        resync: () => this.clusterChanged(),
      }),
    );
    retry('namespaces', () =>
      this.namespaces!.start({
        change: (name) => this.namespaceChanged(name),
        resync: (all) => {
          for (const name of all.keys()) this.namespaceChanged(name);
          this.clusterChanged();
        },
      }),
    );
    retry('endpoints', () =>
      this.clusterEndpoints!.start({
        change: (name, v) => this.remoteEndpointChanged(name, v),
        resync: (all) => this.remoteEndpointsResynced(all),
      }),
    );
    retry('policies', () =>
      this.clusterPolicies!.start({
        change: (name, v) => this.clusterPolicyChanged(name, v),
        resync: (all) => {
          for (const name of [...this.parsedCluster.keys()]) if (!all.has(name)) this.clusterPolicyChanged(name, undefined);
          for (const [name, v] of all) this.clusterPolicyChanged(name, v);
          this.clusterChanged();
        },
      }),
    );
  }

  stop(): void {
    this.stopped = true;
    this.identities.stop();
    this.namespaces?.stop();
    this.clusterEndpoints?.stop();
    this.clusterPolicies?.stop();
    if (this.scheduled) clearImmediate(this.scheduled);
    clearTimeout(this.publishTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
  }

  // ---- identities of local endpoints ------------------------------------------------------------------------

  /** Annotations of namespace @ns (none when nobody declared it). */
  namespaceAnnotations(ns: string): Record<string, string> {
    return this.namespaces?.get(ns)?.annotations ?? {};
  }

  /** Labels of namespace @ns; a namespace nobody declared has just its name label, as Kubernetes sets it. */
  namespaceLabels(ns: string): Record<string, string> {
    return { ...(this.namespaces?.get(ns)?.labels ?? {}), [LABEL_NAMESPACE_NAME]: ns };
  }

  /** Security labels and identity of a pod: allocated cluster-wide (bounded wait: the CNI caller retries). */
  async podIdentity(namespace: string, labels: Record<string, string>, serviceAccount?: string): Promise<{ securityLabels: string[]; identity: number }> {
    await this.whenSynced(SYNC_WAIT_MS);
    const sec = securityLabels(namespace, labels, this.namespaceLabels(namespace), serviceAccount);
    // The first endpoint of a label set on this node touches its identity, which the operator may be collecting.
    const text = sec.join(',');
    const touch = !this.endpoints?.list().some((e) => e.securityLabels.join(',') === text);
    const identity = await withTimeout(this.identities.allocate(sec, { touch }), IDENTITY_WAIT_MS, `allocating an identity for ${namespace} pod labels`);
    return { securityLabels: sec, identity };
  }

  /** An endpoint was created (or restored): its policy now, its record to the cluster soon. */
  endpointCreated(ep: Endpoint): void {
    this.regenerate([ep.id]);
    this.unpublished.add(ep.id);
    this.schedulePublish();
  }

  endpointDeleted(ep: Endpoint): void {
    this.compiled.delete(ep.id);
    this.unpublished.delete(ep.id);
    if (this.opts.store) {
      // Through the publisher, which retries while the store is away (other nodes route the address until then).
      this.unremoved.add(endpointResourceName(this.opts.nodeName, ep.id));
      this.schedulePublish();
    }
    this.identities.releaseLocal(new Set(this.endpoints?.list().map((e) => e.identity)));
  }

  /** Re-labels a running pod: new identity, maps updated in place, policies recomputed. */
  async relabel(ep: Endpoint, labels: Record<string, string>): Promise<Endpoint> {
    const { securityLabels: sec, identity } = await this.podIdentity(ep.namespace, labels, ep.serviceAccount);
    return this.applyIdentity(ep, labels, sec, identity);
  }

  private applyIdentity(ep: Endpoint, labels: Record<string, string>, sec: string[], identity: number): Endpoint {
    const endpoints = this.live().endpoints;
    const changed = identity !== ep.identity;
    const next = endpoints.update(ep.id, { labels, securityLabels: sec, identity });
    if (changed) {
      this.live().dp.updateEndpoint(next);
      this.log.info({ endpoint: ep.id, from: ep.identity, to: identity, labels: sec }, 'endpoint identity changed');
    }
    // Its own policy (selectors match its labels) and everyone whose peers may select it.
    this.clusterDirty = true;
    this.scheduleAll();
    this.unpublished.add(ep.id);
    this.schedulePublish();
    this.identities.releaseLocal(new Set(endpoints.list().map((e) => e.identity)));
    return next;
  }

  private namespaceChanged(ns: string): void {
    const endpoints = this.endpoints;
    if (!endpoints) return;
    for (const ep of endpoints.list()) {
      if (ep.kind !== 'pod' || ep.namespace !== ns) continue;
      const sec = securityLabels(ns, ep.labels, this.namespaceLabels(ns), ep.serviceAccount);
      if (sec.join(',') === ep.securityLabels.join(',')) continue;
      this.identities
        .allocate(sec)
        .then((identity) => {
          const cur = this.endpoints?.get(ep.id);
          if (cur) this.applyIdentity(cur, cur.labels, sec, identity);
        })
        .catch((err: unknown) => this.log.error({ err, endpoint: ep.id }, 'cannot re-identify an endpoint after a namespace change'));
    }
  }

  private identityChanged(id: number, labels: string[] | undefined): void {
    this.clusterChanged();
    if (labels !== undefined || !this.endpoints) return;
    // Collected by the operator while a local endpoint still has it (a race with its grace period): re-create it.
    const user = this.endpoints.list().find((e) => e.identity === id && e.kind === 'pod');
    if (!user) return;
    this.identities
      .ensure(id, user.securityLabels)
      .then((ok) => {
        if (!ok) return this.relabel(user, user.labels).then(() => undefined);
        this.log.warn({ identity: id }, 'identity in use was deleted from the cluster store; re-created');
        return undefined;
      })
      .catch((err: unknown) => this.log.error({ err, identity: id }, 'cannot re-create an identity in use'));
  }

  private clusterChanged(): void {
    this.clusterDirty = true;
    this.scheduleAll();
  }

  // ---- the cluster's endpoints: ipcache and named ports -----------------------------------------------------

  private isOwn(name: string): boolean {
    return name.startsWith(`${this.opts.nodeName}:`);
  }

  /** Remote endpoint IPs currently in the ipcache (resource name -> ip), to undo them on change. */
  private readonly remoteIps = new Map<string, string>();
  /** Remote endpoints by IP: flows name the pods of other nodes too. */
  private readonly remoteByIp = new Map<string, EndpointSpec>();

  remoteEndpoint(ip: string): EndpointSpec | undefined {
    return this.remoteByIp.get(ip);
  }

  private remoteEndpointChanged(name: string, v: EndpointSpec | undefined): void {
    if (this.isOwn(name)) {
      // Our record removed by someone else (the operator, a re-registration) while the endpoint lives: publish again.
      const id = Number(name.slice(this.opts.nodeName.length + 1));
      if (!v && this.endpoints?.get(id)) {
        this.unpublished.add(id);
        this.schedulePublish();
      }
      return;
    }
    const dp = this.dp;
    const old = this.remoteIps.get(name);
    const oldSpec = old !== undefined ? this.remoteByIp.get(old) : undefined;
    if (v) this.remoteIps.set(name, v.ip);
    else this.remoteIps.delete(name);
    if (old !== undefined && old !== v?.ip) {
      // The address may have gone to another record meanwhile (a pod deleted, its IP reused, events reordered).
      const heir = [...this.remoteIps].find(([n, ip]) => ip === old && n !== name);
      const heirSpec = heir ? this.clusterEndpoints?.get(heir[0]) : undefined;
      if (heirSpec) this.remoteByIp.set(old, heirSpec);
      else this.remoteByIp.delete(old);
      if (dp && !this.endpoints?.findByIp(old)) {
        if (heirSpec) dp.ipcacheUpsert(`${old}/32`, { identity: heirSpec.identity, tunnelEndpoint: heirSpec.nodeIP });
        else dp.ipcacheDelete(`${old}/32`);
      }
    }
    if (v) {
      this.remoteByIp.set(v.ip, v);
      // A local endpoint owns its address (a stale record of a pod that moved here must not shadow it).
      if (dp && !this.endpoints?.findByIp(v.ip)) dp.ipcacheUpsert(`${v.ip}/32`, { identity: v.identity, tunnelEndpoint: v.nodeIP });
    }
    // Named ports of other nodes' pods are what egress named ports resolve against.
    if (v?.namedPorts.length || oldSpec?.namedPorts.length) this.clusterChanged();
  }

  private remoteEndpointsResynced(all: Map<string, EndpointSpec>): void {
    for (const name of [...this.remoteIps.keys()]) if (!all.has(name)) this.remoteEndpointChanged(name, undefined);
    for (const [name, v] of all) this.remoteEndpointChanged(name, v);
    this.pruneStaleRemoteIps();
    this.reconcileOwnRecords();
    this.clusterChanged();
  }

  /**
   * After a listing: remote pod addresses in the (pinned) ipcache that no record names any more, written by an
   * earlier run of this agent for pods deleted while it or the store was away, are removed.
   */
  private pruneStaleRemoteIps(): void {
    const dp = this.dp;
    if (!dp) return;
    for (const e of dp.dumpIpcache()) {
      if (!e.prefix.endsWith('/32') || e.identity < IDENTITY_MIN || e.identity >= IDENTITY_LOCAL_MIN) continue;
      const ip = e.prefix.slice(0, -3);
      if (this.remoteByIp.has(ip) || this.endpoints?.findByIp(ip)) continue;
      dp.ipcacheDelete(e.prefix);
      this.log.info({ ip }, 'removed the ipcache entry of a remote pod that is gone');
    }
  }

  /**
   * This node's Endpoint records against its endpoints, once both are known (whichever comes second: the store's
   * listing or the datapath after a restart): every endpoint is published again (its identity re-ensured), records
   * of endpoints deleted while the store was away are removed.
   */
  private reconcileOwnRecords(): void {
    const endpoints = this.endpoints;
    const cache = this.clusterEndpoints;
    if (!endpoints || !cache?.ready) return;
    for (const [name] of cache.entries()) {
      if (!this.isOwn(name)) continue;
      const id = Number(name.slice(this.opts.nodeName.length + 1));
      if (!endpoints.get(id)) this.opts.store?.delete('Endpoint', name).catch(() => {});
    }
    for (const ep of endpoints.list()) if (ep.kind === 'pod') this.unpublished.add(ep.id);
    this.schedulePublish();
  }

  private endpointSpec(ep: Endpoint): EndpointSpec {
    return {
      node: this.opts.nodeName,
      id: ep.id,
      namespace: ep.namespace,
      pod: ep.podName,
      ip: ep.ip,
      nodeIP: this.opts.nodeIP,
      identity: ep.identity,
      namedPorts: ep.namedPorts,
    };
  }

  /** Publishes local endpoints (and removes deleted ones) in the store, one run at a time, retrying while it is away. */
  private schedulePublish(delayMs = 0): void {
    if (!this.opts.store || this.publishTimer || this.stopped || (this.unpublished.size === 0 && this.unremoved.size === 0) || !this.endpoints) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = undefined;
      if (this.publishing) {
        this.schedulePublish(PUBLISH_RETRY_MS);
        return;
      }
      this.publishing = true;
      void this.publish()
        .catch(() => false)
        .then((ok) => {
          this.publishing = false;
          this.schedulePublish(ok ? 0 : PUBLISH_RETRY_MS);
        });
    }, delayMs);
  }

  /** One pass over what is pending; false when the store refused (the rest waits for the retry). */
  private async publish(): Promise<boolean> {
    const store = this.opts.store;
    if (!store || !this.endpoints) return true;
    const retry = (err: unknown, what: Record<string, unknown>): false => {
      if (!this.stopped) this.log.warn({ err: (err as Error).message, ...what }, 'cannot update the cluster store; retrying');
      return false;
    };
    for (const name of [...this.unremoved]) {
      // The ID went to a new endpoint meanwhile: its record is published over this one.
      if (this.endpoints.get(Number(name.slice(this.opts.nodeName.length + 1)))) {
        this.unremoved.delete(name);
        continue;
      }
      try {
        await store.delete('Endpoint', name);
        this.unremoved.delete(name);
      } catch (err) {
        return retry(err, { record: name });
      }
    }
    for (const id of [...this.unpublished]) {
      const ep = this.endpoints.get(id);
      this.unpublished.delete(id);
      if (!ep || ep.kind !== 'pod') continue;
      try {
        if (!(await this.identities.ensure(ep.identity, ep.securityLabels))) {
          // Its number went to other labels while it was not published (collected, re-allocated): a new one first;
          // relabel() queues the endpoint for publishing again.
          this.log.warn({ endpoint: id, identity: ep.identity }, "the endpoint's identity now belongs to other labels; allocating a new one");
          await this.relabel(ep, ep.labels);
          continue;
        }
        await store.put<EndpointSpec>('Endpoint', endpointResourceName(this.opts.nodeName, id), this.endpointSpec(ep));
      } catch (err) {
        this.unpublished.add(id);
        return retry(err, { endpoint: id });
      }
    }
    return true;
  }

  // ---- policies ---------------------------------------------------------------------------------------------

  private clusterPolicyChanged(name: string, v: PolicySpec | undefined): void {
    const old = this.parsedCluster.get(name);
    let next: Policy | undefined;
    if (v) {
      try {
        next = parsePolicyObject(v.document, `Policy ${name}`);
      } catch (err) {
        // The writer validated it; a newer Tendril's syntax, say. Keep what is in force.
        this.log.error({ policy: name, err: (err as Error).message }, 'ignoring an invalid cluster policy');
        return;
      }
      this.parsedCluster.set(name, next);
    } else {
      this.parsedCluster.delete(name);
    }
    this.policiesChanged([old, next]);
  }

  allPolicies(): Policy[] {
    return [...this.parsedCluster.values(), ...this.localPolicies.values()];
  }

  listPolicies(): PolicyView[] {
    const out: PolicyView[] = [];
    for (const [name, p] of this.parsedCluster) {
      const rev = this.clusterPolicies?.revisionOf(name);
      out.push({ key: policyKey(p), kind: p.kind, namespace: p.namespace, name: p.name, source: 'cluster', ...(rev !== undefined ? { revision: rev } : {}), document: p.source });
    }
    for (const p of this.localPolicies.values()) {
      out.push({ key: policyKey(p), kind: p.kind, namespace: p.namespace, name: p.name, source: 'local', document: p.source });
    }
    return out.sort((a, b) => a.key.localeCompare(b.key) || a.source.localeCompare(b.source));
  }

  /**
   * `policy import`: parses every document first (all or nothing), then replaces same-named local policies and
   * enforces the result before returning.
   */
  importPolicies(text: string, origin: string): { imported: string[]; regeneration: { endpoints: number; ms: number } } {
    // Compiled against a cluster state not loaded, the node's maps would lose what cluster policies allow.
    if (!this.synced) throw this.notSynced();
    let parsed: Policy[];
    try {
      parsed = parsePolicies(text, origin);
    } catch (err) {
      if (err instanceof PolicyError) throw new AgentError('TENDRIL_ERR_POLICY_INVALID', err.message);
      throw err;
    }
    if (parsed.length === 0) throw new AgentError('TENDRIL_ERR_POLICY_INVALID', `No policy in ${origin}: expected a NetworkPolicy, TendrilNetworkPolicy or TendrilClusterwideNetworkPolicy document`);
    const touched: Array<Policy | undefined> = [];
    for (const p of parsed) {
      touched.push(this.localPolicies.get(policyKey(p)), p);
      this.localPolicies.set(policyKey(p), p);
    }
    this.saveLocal();
    const regen = this.policiesChanged(touched, true);
    return { imported: parsed.map((p) => policyKey(p)), regeneration: regen };
  }

  /** `policy delete NAME`: NAME is "namespace/name" or a name unique among local policies. */
  deletePolicy(ref: string): { deleted: string[] } {
    if (!this.synced) throw this.notSynced();
    const matches = [...this.localPolicies.values()].filter((p) => refersTo(p, ref));
    if (matches.length === 0) {
      const cluster = [...this.parsedCluster.values()].find((p) => refersTo(p, ref));
      if (cluster) {
        throw new AgentError('TENDRIL_ERR_POLICY_NOT_FOUND', `Policy "${ref}" is cluster-wide (from the cluster store), not imported on this node: delete it where it was applied (tendril lab policy delete ${cluster.name})`);
      }
      throw new AgentError('TENDRIL_ERR_POLICY_NOT_FOUND', `Policy "${ref}" not found among this node's imported policies (tendril policy get lists them)`);
    }
    if (matches.length > 1) {
      throw new AgentError('TENDRIL_ERR_POLICY_NOT_FOUND', `Policy name "${ref}" is ambiguous: ${matches.map((p) => policyKey(p)).join(', ')}; use NAMESPACE/NAME`);
    }
    for (const p of matches) this.localPolicies.delete(policyKey(p));
    this.saveLocal();
    this.policiesChanged(matches, true);
    return { deleted: matches.map((p) => policyKey(p)) };
  }

  private saveLocal(): void {
    writeJsonFile(this.localFile, [...this.localPolicies.values()].map((p) => p.source));
  }

  /**
   * Policies were added, changed or removed (old and new versions in @touched): the endpoints either version selects
   * are recompiled — now when @now (the API waits for enforcement), else on the next turn of the event loop.
   */
  private policiesChanged(touched: Array<Policy | undefined>, now = false): { endpoints: number; ms: number } {
    // New or removed CIDR identities change what `world` and every CIDR peer select, in every endpoint's policy.
    const cidrsChanged = this.syncCidrIdentities();
    if (cidrsChanged) this.clusterDirty = true;
    const endpoints = this.endpoints;
    if (!endpoints) return { endpoints: 0, ms: 0 };
    const ps = touched.filter((p): p is Policy => p !== undefined);
    const affected: number[] = [];
    this.refreshCluster();
    for (const ep of endpoints.list()) {
      if (ep.kind !== 'pod') continue;
      const view = this.view(ep);
      if (cidrsChanged || this.opts.mode === 'always' || ps.some((p) => this.compiler.selects(p, view))) affected.push(ep.id);
    }
    if (now) return this.regenerate(affected);
    for (const id of affected) this.pending.add(id);
    this.kick();
    return { endpoints: affected.length, ms: 0 };
  }

  /**
   * Every CIDR the policies name gets a node-local identity and an ipcache prefix; unused ones go. True if the set
   * changed. The ipcache is only read (a full dump) when a prefix is added or removed, not on every policy change.
   */
  private syncCidrIdentities(): boolean {
    // Until every policy is known, a CIDR missing from them may just not be loaded yet.
    if (!this.synced) return false;
    const blocks = this.syncIpBlocks();
    return this.syncCidrs() || blocks;
  }

  /**
   * NetworkPolicy ipBlock prefixes: each gets an identity. A prefix no policy names any longer leaves the trie at once
   * (its addresses fall back to the next longer block, which every remaining peer treats alike); a new one enters it
   * only after the endpoints were compiled with it (installIpBlocks()).
   */
  private syncIpBlocks(): boolean {
    const want = new Set(PolicyCompiler.ipBlocksOf(this.allPolicies()));
    let changed = false;
    for (const [prefix] of this.blockIds) {
      if (want.has(prefix)) continue;
      if (!this.blocksToInstall.delete(prefix)) this.dp?.ipBlockDelete(prefix);
      this.blockIds.delete(prefix);
      changed = true;
    }
    for (const prefix of want) {
      if (this.blockIds.has(prefix)) continue;
      this.blockIds.set(prefix, this.nextBlockId++);
      this.blocksToInstall.add(prefix);
      changed = true;
    }
    return changed;
  }

  private installIpBlocks(): void {
    const dp = this.dp;
    if (!dp) return;
    for (const prefix of [...this.blocksToInstall]) {
      const id = this.blockIds.get(prefix);
      try {
        if (id !== undefined) dp.ipBlockSet(prefix, id);
        this.blocksToInstall.delete(prefix);
      } catch (err) {
        // A full trie, say: its addresses keep the narrowest block installed around them; retried at the next regeneration.
        this.log.error({ err: (err as Error).message, prefix }, 'cannot write an ipBlock prefix to the datapath');
      }
    }
  }

  private syncCidrs(): boolean {
    const want = new Set(PolicyCompiler.cidrsOf(this.allPolicies()));
    const dp = this.dp;
    const gone = [...this.cidrIds.keys()].filter((c) => !want.has(c));
    const added = [...want].filter((c) => !this.cidrIds.has(c));
    for (const cidr of added) this.cidrIds.set(cidr, this.nextCidrId++);
    if (!dp) {
      for (const cidr of gone) this.cidrIds.delete(cidr);
      return gone.length + added.length > 0;
    }
    const pending = [...gone, ...[...this.cidrIds.keys()].filter((c) => !this.cidrInstalled.has(c))];
    if (pending.length === 0) return false;
    const existing = new Map(dp.dumpIpcache().map((e) => [e.prefix, e]));
    for (const cidr of gone) {
      const cur = existing.get(cidr);
      if (cur && cur.identity === this.cidrIds.get(cidr)) dp.ipcacheDelete(cidr);
      this.cidrIds.delete(cidr);
      this.cidrInstalled.delete(cidr);
    }
    for (const [cidr, id] of this.cidrIds) {
      if (this.cidrInstalled.has(cidr)) continue;
      const cur = existing.get(cidr);
      // A prefix the cluster already owns (a node's pod CIDR, a node or pod address) keeps its identity.
      if (!cur || cur.identity >= IDENTITY_LOCAL_MIN) dp.ipcacheUpsert(cidr, { identity: id });
      this.cidrInstalled.add(cidr);
    }
    return gone.length + added.length > 0;
  }

  /** Labels of any identity this node knows: reserved, cluster-wide, or a node-local CIDR one. */
  labelsOf(id: number): string[] | undefined {
    const known = this.identities.labels(id);
    if (known || id < IDENTITY_LOCAL_MIN) return known;
    for (const [cidr, cid] of this.cidrIds) if (cid === id) return cidrLabels(cidr);
    for (const [block, bid] of this.blockIds) if (bid === id) return ipBlockLabels(block);
    return undefined;
  }


  // ---- compilation ------------------------------------------------------------------------------------------

  private view(ep: Endpoint): EndpointView {
    return { id: ep.id, namespace: ep.namespace, identity: ep.identity, labels: ep.securityLabels, namedPorts: ep.namedPorts };
  }

  /** Every identity known: reserved, cluster-wide, node-local CIDR ones. */
  identityInfos(): IdentityInfo[] {
    const out: IdentityInfo[] = Object.entries(RESERVED_LABELS).map(([id, labels]) => ({ id: Number(id), labels }));
    for (const { id, labels } of this.identities.list()) out.push({ id, labels });
    for (const [cidr, id] of this.cidrIds) out.push({ id, labels: cidrLabels(cidr), cidr });
    for (const [block, id] of this.blockIds) out.push({ id, labels: ipBlockLabels(block), ipBlock: block });
    return out;
  }

  private refreshCluster(): void {
    if (!this.clusterDirty) return;
    const eps: Array<{ identity: number; namedPorts: NamedPort[] }> = [];
    for (const [name, v] of this.clusterEndpoints?.entries() ?? []) if (!this.isOwn(name)) eps.push(v);
    for (const ep of this.endpoints?.list() ?? []) if (ep.kind === 'pod') eps.push(ep);
    const view: ClusterView = { identities: this.identityInfos(), endpoints: eps };
    this.compiler.setCluster(view);
    this.clusterDirty = false;
  }

  private scheduleAll(): void {
    this.pendingAll = true;
    this.kick();
  }

  private kick(): void {
    // Not yet synced: the resync of each cache schedules everything again.
    if (this.scheduled || this.stopped || !this.synced) return;
    this.scheduled = setImmediate(() => {
      this.scheduled = undefined;
      const ids = this.pendingAll ? (this.endpoints?.list().map((e) => e.id) ?? []) : [...this.pending];
      this.pendingAll = false;
      this.pending.clear();
      this.regenerate(ids);
    });
  }

  /** Compiles the given endpoints and applies the difference to their map entries. */
  regenerate(ids: Iterable<number>): { endpoints: number; ms: number } {
    const dp = this.dp;
    const endpoints = this.endpoints;
    if (!dp || !endpoints || !this.synced) return { endpoints: 0, ms: 0 };
    const t0 = performance.now();
    if (this.syncCidrIdentities()) {
      this.clusterDirty = true;
      ids = endpoints.list().map((e) => e.id);
    }
    this.refreshCluster();
    const policies = this.allPolicies();
    let n = 0;
    let mapsMs = 0;
    let l7Changed = false;
    for (const id of ids) {
      const ep = endpoints.get(id);
      if (!ep) continue;
      let result: EndpointPolicy;
      if (ep.kind === 'health') {
        // The health endpoint answers every node's probes: never subject to policy (as Cilium's).
        result = { ingress: { enforced: false, defaultDeny: false }, egress: { enforced: false, defaultDeny: false }, entries: [] };
      } else {
        try {
          result = this.compiler.compile(this.view(ep), policies);
        } catch (err) {
          this.log.error({ err, endpoint: id }, 'policy compilation failed; keeping the entries in force');
          continue;
        }
      }
      const t1 = performance.now();
      // L7 entries are only written with a proxy to redirect to; without one they are left out, so traffic on
      // L7-policed ports fails closed (dropped) instead of passing unfiltered.
      const hasL7 = result.entries.some((e) => e.http !== undefined);
      if (hasL7 !== this.l7Endpoints.has(id)) l7Changed = true;
      if (hasL7) {
        this.l7Endpoints.add(id);
        l7Changed = true;
      } else this.l7Endpoints.delete(id);
      const port = this.proxyPort;
      const entries = !hasL7
        ? result.entries
        : port === 0
          ? result.entries.filter((e) => e.http === undefined)
          : result.entries.map((e) => (e.http === undefined ? e : { ...e, proxyPort: port }));
      dp.setEndpointPolicy(ep, { ingressEnforced: result.ingress.enforced, egressEnforced: result.egress.enforced, entries });
      mapsMs += performance.now() - t1;
      this.compiled.set(id, result);
      n++;
    }
    this.installIpBlocks();
    if (l7Changed) this.opts.onL7Change?.();
    const ms = performance.now() - t0;
    const r2 = (x: number): number => Math.round(x * 100) / 100;
    if (n > 0) this.lastRegeneration = { endpoints: n, ms: r2(ms), compileMs: r2(ms - mapsMs), mapsMs: r2(mapsMs), at: new Date().toISOString() };
    return { endpoints: n, ms };
  }

  /** Points L7 entries at the proxy listening on `port` (0: none, they are left out) and rewrites every endpoint. */
  setProxyPort(port: number): void {
    if (port === this.proxyPort) return;
    this.proxyPort = port;
    this.pendingAll = true;
    this.kick();
  }

  /** Whether some endpoint of this node has L7 entries. */
  get hasL7(): boolean {
    return this.l7Endpoints.size > 0;
  }

  /** The L7 entries of this node's endpoints and the addresses' identities, for the proxy. */
  l7Table(): ProxyTable {
    const endpoints: ProxyEndpointRules[] = [];
    for (const id of this.l7Endpoints) {
      const ep = this.endpoints?.get(id);
      const pol = this.compiled.get(id);
      if (!ep || !pol) continue;
      const l7 = (d: 'ingress' | 'egress'): L7Entry[] =>
        pol.entries.filter((e) => e.direction === d && e.http !== undefined).map((e) => ({ identity: e.identity, port: e.port, portPrefixLen: e.portPrefixLen, http: e.http! }));
      endpoints.push({ ip: ep.ip, identity: ep.identity, ingress: l7('ingress'), egress: l7('egress') });
    }
    const identities: [string, number][] = [];
    for (const e of this.dp?.dumpIpcache() ?? []) if (e.prefix.endsWith('/32')) identities.push([e.prefix.slice(0, -3), e.identity]);
    return { endpoints, identities };
  }

  /** The last compiled policy of an endpoint (enforcement and entries with the policies they came from). */
  endpointPolicy(id: number): EndpointPolicy | undefined {
    return this.compiled.get(id);
  }

  private live(): { dp: SecurityDatapath; endpoints: EndpointManager } {
    if (!this.dp || !this.endpoints) throw new AgentError('TENDRIL_ERR_NOT_READY', `Node ${this.opts.nodeName} has no datapath yet`);
    return { dp: this.dp, endpoints: this.endpoints };
  }

  /** Source of an ipcache prefix, for `tendril ip list`. */
  ipSource(prefix: string, identity: number): string {
    const ip = prefix.endsWith('/32') ? prefix.slice(0, -3) : undefined;
    if (ip && this.endpoints?.findByIp(ip)) return 'local-endpoint';
    if (identity >= IDENTITY_LOCAL_MIN) return 'policy-cidr';
    if (ip && [...this.remoteIps.values()].includes(ip)) return 'cluster-endpoint';
    if (identity === 1) return 'local-node';
    return 'cluster-node';
  }
}

/** Labels of a CIDR identity, as Cilium's: the world it is part of and its prefix. */
function cidrLabels(cidr: string): string[] {
  return ['reserved:world', `cidr:${cidr}`];
}

/** Labels of a NetworkPolicy ipBlock identity (no Cilium counterpart: it stands for addresses, pods included). */
function ipBlockLabels(block: string): string[] {
  return [`ipblock:${block}`];
}

/** A policy named by its key ("Kind/ns/name"), "ns/name", or its bare name. */
function refersTo(p: Policy, ref: string): boolean {
  return policyKey(p) === ref || `${p.namespace}/${p.name}` === ref || (!ref.includes('/') && p.name === ref);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new AgentError('TENDRIL_ERR_STORE_UNAVAILABLE', `Timed out after ${ms} ms ${what}: the cluster store is unavailable; try again later`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
