// The agent: composition root of one node. Wires IPAM, datapath, endpoints, the CNI handler and the API by hand.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import path from 'node:path';
import { NodeDatapath, HOST_DEV, ctGcIntervalMs } from '../datapath/index.js';
import { createPodInterface, ensureNamedNetns, interfaceIndex, removePodInterface, sendFrame } from '../datapath/index.js';
import { CniCode, CniError, CniHandler, CONFLIST_NAME, tendrilConflist, type CniBackend } from '../cni/index.js';
import { ApiServer, HttpError, withStatus } from '../util/api.js';
import type { AgentConfig } from './config.js';
import type { ConfigView, EndpointView, HostAddressing, IdentityView, NodeView, StatusView } from './api.js';
import { EndpointManager, type Endpoint } from './endpoints.js';
import { AgentError } from './errors.js';
import { DEFAULT_SERVICE_ACCOUNT, IDENTITY_HEALTH } from './identity.js';
import { SecurityManager, type EndpointPolicyView } from './security.js';
import { ServiceManager } from '../lb/index.js';
import { L2Announcer, L2_RESPONDER_MAP, l2ResponderEntryCodec, l2ResponderKeyCodec } from '../l2/index.js';
import { entryKeyId } from '../datapath/policy.js';
import { labelKeyProblem, labelValueProblem } from '../policy/index.js';
import { NodeIpam } from './ipam.js';
import { PodCidrs } from './pod-cidrs.js';
import { PoolAddresses, poolOf } from './multi-pool.js';
import { POD_IP_POOL_KIND } from '../store/index.js';
import { NodeLeaseKeeper } from './node-lease.js';
import { hasSavedPods, reconcileLeftovers } from './reconcile.js';
import { NodeManager } from './nodes.js';
import { ObserverServer, monotonicClock, observerSocketFor, type EndpointInfo as FlowEndpointInfo, type FlowContext } from '../observe/index.js';
import type { EventWatch } from '../datapath/index.js';
import { interfaceName } from '../datapath/index.js';
import { GuardedStore, openStore, StoreError } from '../store/index.js';
import { KubernetesMode } from '../k8s/index.js';
import { memoryView } from '../util/memory.js';
import { cpuProfile } from '../util/cpu-profile.js';
import type { NodeSpec } from '../store/types.js';
import { readJsonFile, writeJsonFile } from './state-file.js';
import { Masquerade } from '../nat/index.js';
import { EgressManager } from '../egress/index.js';
import type { Logger } from '../util/log.js';
import { DEFAULT_PROXY_PORT, ProxySupervisor } from '../proxy/index.js';
import { sockLbStatus, startSockLb, terminateBackendSockets } from './sock-lb.js';
import type { SockLb } from '../datapath/index.js';

export const VERSION = '0.1.0';

const HEALTH_IF = 'lxc_health';
/** Pause between attempts to reach a cluster store that does not answer. */
const STORE_RETRY_MS = 1000;
/** How long start() waits for the egress gateway map's first sync before it reports ready anyway. */
const EGRESS_SYNC_WAIT_MS = 5000;

/** node.json in the state dir: what the node needs to come up again without the cluster store. */
interface NodeStateFile {
  podCidr: string;
}

export class Agent {
  readonly cfg: AgentConfig;
  private readonly log: Logger;
  private ipam!: NodeIpam;
  private podCidrs: PodCidrs | undefined;
  /** --ipam multi-pool: addresses per IP pool. */
  private ipPools: PoolAddresses | undefined;
  private lease: NodeLeaseKeeper | undefined;
  /** Settles start() in --ipam kubernetes mode once the datapath is up (or the wait is over). */
  private broughtUp: (() => void) | undefined;
  private dp: NodeDatapath | undefined;
  private endpoints: EndpointManager | undefined;
  private store: GuardedStore | undefined;
  /** Kubernetes mode: the apiserver connection (its Store is `store`'s inner store). */
  private kubernetes: KubernetesMode | undefined;
  private nodes: NodeManager | undefined;
  /** Whether the node list came from the store at least once (until then the datapath keeps its remote nodes). */
  private nodesListed = false;
  private nodeRetryTimer: NodeJS.Timeout | undefined;
  private publishTimer: NodeJS.Timeout | undefined;
  private security!: SecurityManager;
  private masq: Masquerade | undefined;
  private services: ServiceManager | undefined;
  private sockLb: SockLb | undefined;
  private egress: EgressManager | undefined;
  private l2: L2Announcer | undefined;
  private ctGcTimer: NodeJS.Timeout | undefined;
  /** Set by stop(): a pass in flight does not schedule the next. */
  private ctGcStopped = false;
  private ctGcLast: { at: string; deleted: number; alive: number; fill: number; ms: number; 'next-ms': number } | undefined;
  private queue: Promise<void> = Promise.resolve();
  private ready = false;
  private stopping = false;
  private observer: ObserverServer | undefined;
  /** The node's L7 proxy: started when the first L7 rule applies to an endpoint here. */
  private proxy: ProxySupervisor | undefined;
  private events: EventWatch | undefined;
  private podCidr = '';
  private api: ApiServer | undefined;
  private routerIP = '';
  private healthIP = '';
  private cniConfPath: string | undefined;
  private cni: CniHandler | undefined;
  private readonly startedAt = Date.now();

  constructor(cfg: AgentConfig, log: Logger) {
    this.cfg = cfg;
    this.log = log;
  }

  async start(): Promise<void> {
    const { cfg } = this;
    fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
    const api = new ApiServer(this.log.child({ subsys: 'api' }));
    this.cni = new CniHandler(this.cniBackend(), this.log.child({ subsys: 'cni' }));
    this.routes(api, this.cni);
    if (cfg.kubernetes) {
      this.kubernetes = new KubernetesMode(cfg.kubernetes.kubeconfig, this.log.child({ subsys: 'k8s' }));
      await this.kubernetes.start();
      this.kubernetes.watchPods(cfg.nodeName);
    }
    if (cfg.store || this.kubernetes) {
      // Short bounds: the store is asked in the background (watches, publishing) or on behalf of a runtime that
      // retries; a store that does not answer must fail those calls fast, never hold the API or a CNI ADD.
      const inner = this.kubernetes?.store ?? openStore(cfg.store!, { connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
      this.store = new GuardedStore(inner, {
        callTimeoutMs: cfg.storeCallTimeoutMs,
        onChange: (up, error) =>
          up ? this.log.info('cluster store reachable again') : this.log.warn({ err: error }, 'cluster store unavailable; serving from local state'),
      });
      this.store.start();
    }
    this.security = new SecurityManager({
      nodeName: cfg.nodeName,
      nodeIP: cfg.nodeIP ?? '',
      store: this.store,
      stateDir: cfg.stateDir,
      mode: cfg.enablePolicy,
      log: this.log.child({ subsys: 'policy' }),
      storeAvailable: () => this.store?.up ?? true,
      identityFile: path.join(cfg.stateDir, 'identities.json'),
      onL7Change: () => this.onL7Change(),
    });
    await api.listen(cfg.socket);
    this.api = api;
    // The flow server comes up with the API, not serving: health checks (`hubble status`, probes) say
    // NOT_SERVING until the node is ready, and flows start once the datapath does.
    await this.startObserver();
    this.security.start();
    // The CIDR of the last run, if the flag gives none: a restart needs no store to serve the node's pods.
    const podCidr = cfg.podCidr ?? readJsonFile<NodeStateFile>(this.nodeStateFile)?.podCidr;
    if (podCidr) await this.bringUp(podCidr);
    if (this.store) {
      this.nodes = new NodeManager(this.store, { name: cfg.nodeName, addresses: cfg.nodeIP ? [cfg.nodeIP] : [] }, this.log.child({ subsys: 'nodes' }));
      this.startNodeManager();
    }
    // Kubernetes mode, --ipam kubernetes: the core Node's spec.podCIDRs are this node's (src/k8s/node-cidrs.ts).
    if (this.kubernetes && cfg.ipam === 'kubernetes') this.kubernetes.watchNodeCidrs(cfg.nodeName, (podCIDRs) => this.serial(() => this.onSelf(this.selfWith(podCIDRs))));
    if (cfg.ipam === 'kubernetes' && !this.dp) await this.waitForGivenCidr();
    this.log.info({ socket: cfg.socket, node: cfg.nodeName, store: cfg.store ?? null }, 'agent API up');
  }

  /** --ipam kubernetes: the pod CIDR must come from the Node resource within the wait, or the agent does not start. */
  private async waitForGivenCidr(): Promise<void> {
    const { cfg } = this;
    let timer: NodeJS.Timeout | undefined;
    const up = await new Promise<boolean>((resolve) => {
      this.broughtUp = () => resolve(true);
      timer = setTimeout(() => resolve(false), cfg.ipamWaitTimeoutMs);
    });
    clearTimeout(timer);
    this.broughtUp = undefined;
    if (!up) {
      throw new AgentError(
        'TENDRIL_ERR_NO_POD_CIDR',
        `Node ${cfg.nodeName} got no pod CIDR within ${cfg.ipamWaitTimeoutMs / 1000}s: with --ipam kubernetes the Node resource's podCIDRs ` +
          'are set by the cluster (kube-controller-manager; in the lab `lab node add NAME --pod-cidr CIDR`), and none was',
      );
    }
  }

  /** Connects to the cluster store in the background, retrying until it answers. */
  private startNodeManager(): void {
    const nodes = this.nodes!;
    nodes
      .start({
        self: (n) => this.serial(() => this.onSelf(n)),
        upsert: (n) => this.serial(async () => this.upsertRemote(n)),
        remove: (name) => this.serial(async () => this.removeRemote(name)),
        resync: (all) =>
          this.serial(async () => {
            this.nodesListed = true;
            this.resyncRemotes(all);
          }),
      })
      .catch((err: unknown) => {
        if (this.stopping) return;
        this.log.warn({ err: (err as Error).message }, 'cluster store not reachable yet; retrying');
        this.nodeRetryTimer = setTimeout(() => this.startNodeManager(), STORE_RETRY_MS);
      });
  }

  private get nodeStateFile(): string {
    return path.join(this.cfg.stateDir, 'node.json');
  }

  /** This node's spec as the store has it, with these pod CIDRs (the core Node's, in Kubernetes mode). */
  private selfWith(podCIDRs: string[]): NodeSpec {
    const cur = this.nodes?.list().find((x) => x.name === this.cfg.nodeName);
    return { ...(cur ?? { name: this.cfg.nodeName, addresses: this.cfg.nodeIP ? [this.cfg.nodeIP] : [] }), podCIDRs, ...(this.routerIP ? { routerIP: this.routerIP } : {}), ...(this.healthIP ? { healthIP: this.healthIP } : {}) };
  }

  /** This node's router and health IPs to the cluster (other nodes route to them), retried until the store takes them. */
  private publishNode(): void {
    const nodes = this.nodes;
    if (!nodes || this.stopping) return;
    clearTimeout(this.publishTimer);
    this.publishTimer = undefined;
    const { cfg } = this;
    nodes
      .update((cur) => ({
        ...cur,
        name: cfg.nodeName,
        addresses: cur?.addresses ?? (cfg.nodeIP ? [cfg.nodeIP] : []),
        // In Kubernetes mode with --ipam kubernetes the core Node's CIDRs, which the other nodes route by.
        podCIDRs: this.kubernetes?.nodeCidrs?.current().length ? this.kubernetes.nodeCidrs.current() : (cur?.podCIDRs ?? [this.podCidr]),
        routerIP: this.routerIP,
        healthIP: this.healthIP,
      }))
      .catch((err: unknown) => {
        if (this.stopping) return;
        this.log.warn({ err: (err as Error).message }, 'cannot publish this node to the cluster store; retrying');
        this.publishTimer = setTimeout(() => this.publishNode(), STORE_RETRY_MS);
      });
  }

  /** Node events are applied one at a time, in order. */
  private serial(fn: () => Promise<void>): void {
    this.queue = this.queue.then(fn).catch((err: unknown) => this.log.error({ err }, 'applying a node change failed'));
  }

  private async onSelf(n: NodeSpec): Promise<void> {
    const cidr = n.podCIDRs[0];
    if (!cidr) return;
    if (this.dp) {
      this.podCidrs?.follow(n);
      this.ipPools?.follow(n);
      if (cidr !== this.podCidr && this.cfg.ipam === 'cluster-pool') this.log.error({ assigned: cidr, inUse: this.podCidr }, 'the operator assigned another primary pod CIDR; keeping the one in use');
      // Came up from its own state while the store was away: what it publishes may not be there yet.
      else if (n.routerIP !== this.routerIP || n.healthIP !== this.healthIP) this.publishNode();
      return;
    }
    await this.bringUp(cidr);
  }

  /** Brings the datapath up once the node's pod CIDR is known (flag or operator). */
  private async bringUp(podCidr: string): Promise<void> {
    const { cfg } = this;
    this.podCidr = podCidr;
    this.ipam = new NodeIpam(podCidr, path.join(cfg.stateDir, 'ipam.json'));
    if (readJsonFile<NodeStateFile>(this.nodeStateFile)?.podCidr !== podCidr) writeJsonFile(this.nodeStateFile, { podCidr } satisfies NodeStateFile);
    this.routerIP = this.ipam.findByOwner('router') ?? this.ipam.allocateNext('router');
    this.healthIP = this.ipam.findByOwner('health') ?? this.ipam.allocateNext('health');
    const masq = new Masquerade(cfg.masq, { nativeDev: cfg.nativeDev, podCidr }, this.log.child({ subsys: 'nat' }));
    const masquerade = masq.datapathConfig();
    const dp = new NodeDatapath({
      podCidr,
      routerIP: this.routerIP,
      bpfRoot: cfg.bpfRoot,
      objDir: cfg.objDir,
      mtu: cfg.mtu,
      routing: cfg.routing,
      nativeDev: cfg.nativeDev,
      nodeIP: cfg.nodeIP ?? this.routerIP,
      stateFile: path.join(cfg.stateDir, 'remote-nodes.json'),
      attachMode: cfg.attachMode,
      ...(masquerade ? { masquerade } : {}),
      ...(cfg.sockLbCgroup ? { sockLbCgroup: cfg.sockLbCgroup } : {}),
    });
    dp.start();
    this.dp = dp;
    masq.start(dp);
    this.masq = masq;
    this.podCidrs = new PodCidrs({
      mode: cfg.ipam,
      ipam: this.ipam,
      preAllocate: cfg.ipamPreAllocate,
      handBackGraceMs: cfg.ipamHandBackGraceMs,
      routes: { add: (c) => dp.addLocalPodCidr(c), remove: (c) => dp.removeLocalPodCidr(c) },
      ...(this.nodes ? { updateNode: (fn: Parameters<NodeManager['update']>[0]) => this.nodes!.update(fn) } : {}),
      log: this.log.child({ subsys: 'ipam' }),
    });
    if (cfg.ipam === 'multi-pool') {
      // A restart brings the datapath up before the node manager: both are looked up when first needed.
      this.ipPools = new PoolAddresses({
        ipam: this.ipam,
        preAllocate: cfg.ipamPreAllocate,
        waitMs: cfg.ipamWaitTimeoutMs,
        handBackGraceMs: cfg.ipamHandBackGraceMs,
        updateNode: (fn) => (this.nodes ? this.nodes.update(fn) : Promise.reject(new Error('the node is not registered in the cluster store yet'))),
        poolExists: async (name) => {
          if (!this.store) throw new CniError(CniCode.TRY_AGAIN_LATER, `Cannot look up IP pool "${name}": no cluster store yet`);
          return (await this.store.get(POD_IP_POOL_KIND, name)) !== undefined;
        },
        log: this.log.child({ subsys: 'ip-pools' }),
      });
    }
    this.log.info({ podCidr, router: this.routerIP, attach: dp.mode, routing: cfg.routing, bpfRoot: cfg.bpfRoot }, 'datapath loaded');

    this.endpoints = new EndpointManager(dp, path.join(cfg.stateDir, 'endpoints.json'), this.log.child({ subsys: 'endpoint' }));
    this.endpoints.restore(interfaceIndex);
    await reconcileLeftovers({ ipam: this.ipam, endpoints: this.endpoints, dp, log: this.log.child({ subsys: 'endpoint' }), keepInterfaces: [HEALTH_IF] });
    await this.ensureHealthEndpoint();
    this.security.attach(dp, this.endpoints);
    // Services come from the cluster store; in Kubernetes mode that is the watched core Services (src/k8s/bindings.ts).
    if (this.store) {
      this.services = new ServiceManager({ store: this.store, node: cfg.nodeName, log: this.log.child({ subsys: 'service' }), algorithm: cfg.lbAlgorithm, maglevTableSize: cfg.maglevTableSize, backendsFromSlices: this.kubernetes !== undefined, onBackendsRemoved: (b) => terminateBackendSockets(this.sockLb, b, this.endpoints?.list().filter((e) => e.kind === 'pod').map((e) => e.netnsPath) ?? [], this.log.child({ subsys: 'sock-lb' })) });
      this.services.start((name) => dp.map(name));
      this.sockLb = startSockLb(cfg, dp, this.log.child({ subsys: 'sock-lb' }));
      // Egress gateway policies and L2 announcements: store kinds, CRDs in Kubernetes mode (src/k8s/bindings.ts).
      this.egress = new EgressManager({ store: this.store, node: cfg.nodeName, nativeDev: cfg.nativeDev, log: this.log.child({ subsys: 'egress-gateway' }) });
      this.egress.start((name) => dp.map(name));
      // L2 announcements of LoadBalancer IPs on the native device (src/l2).
      this.l2 = new L2Announcer({ store: this.store, node: cfg.nodeName, log: this.log.child({ subsys: 'l2-announcer' }), device: () => ({ ifindex: dp.nativeDevice.index, mac: dp.nativeDevice.mac }), responder: dp.hostMap(L2_RESPONDER_MAP).typed(l2ResponderKeyCodec, l2ResponderEntryCodec), mayAnnounce: (ip) => this.services?.mayAnnounce(ip) ?? false, sendFrame });
      this.l2.start();
      // Liveness for the operator (egress gateway failover), renewed while the datapath is up.
      this.lease = new NodeLeaseKeeper({ store: this.store, node: cfg.nodeName, ...cfg.nodeLease, log: this.log.child({ subsys: 'node-lease' }) });
      this.lease.start();
      await this.waitEgressSync(this.egress);
    }
    this.startCtGc();
    this.startEvents(dp);
    this.setReady(true);
    // Written when ready, as Cilium does: a runtime that finds it may start pods here. A plugin call that comes
    // earlier anyway (a stale config) is answered "try again later" (11).
    this.writeCniConfig();
    if (this.nodes) {
      this.publishNode();
      // Remote nodes known from the store; before its first listing the pinned ones stay (restart without a store).
      if (this.nodesListed) this.resyncRemotes(this.nodes.list().filter((x) => x.name !== cfg.nodeName));
    }
    this.log.info({ node: cfg.nodeName, podCidr, podCidrs: this.ipam.cidrs() }, 'agent ready');
    // Extra CIDRs the Node already lists, and the watermark, once everything is up.
    const self = this.nodes?.list().find((x) => x.name === cfg.nodeName);
    if (self) this.podCidrs.follow(self);
    else this.podCidrs.check();
    if (self) this.ipPools?.follow(self);
    this.broughtUp?.();
  }

  private upsertRemote(n: NodeSpec): void {
    if (!this.dp) return;
    const nodeIP = n.addresses[0];
    if (!nodeIP || n.podCIDRs.length === 0) return;
    this.dp.upsertRemoteNode({
      name: n.name,
      nodeIP,
      podCIDRs: n.podCIDRs,
      ...(n.routerIP ? { routerIP: n.routerIP } : {}),
      ...(n.healthIP ? { healthIP: n.healthIP } : {}),
    });
    this.log.info({ node: n.name, nodeIP, podCIDRs: n.podCIDRs }, 'remote node up to date');
  }

  private removeRemote(name: string): void {
    if (!this.dp) return;
    this.dp.removeRemoteNode(name);
    this.log.info({ node: name }, 'remote node removed');
  }

  private resyncRemotes(all: NodeSpec[]): void {
    if (!this.dp) return;
    this.dp.pruneRemoteNodes(all.map((n) => n.name));
    for (const n of all) this.upsertRemote(n);
  }

  /** The agent's readiness, and what the flow server's health service answers (SERVING only while ready). */
  private setReady(ready: boolean): void {
    this.ready = ready;
    this.observer?.setServing(ready);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.setReady(false);
    this.ctGcStopped = true;
    clearTimeout(this.ctGcTimer);
    clearTimeout(this.nodeRetryTimer);
    clearTimeout(this.publishTimer);
    this.podCidrs?.stop();
    this.ipPools?.stop();
    this.broughtUp?.();
    this.security?.stop();
    this.services?.stop();
    this.egress?.stop();
    await this.lease?.stop();
    await this.l2?.stop().catch((err: unknown) => this.log.warn({ err }, 'cannot hand back the L2 announcement leases'));
    await this.proxy?.stop();
    this.nodes?.stop();
    this.events?.stop();
    await this.observer?.stop();
    await this.api?.close();
    await this.queue;
    await this.store?.close().catch(() => {});
    this.sockLb?.stop();
    this.masq?.stop();
    await this.kubernetes?.stop().catch(() => {});
    this.dp?.stop();
  }

  /** Starts the proxy with the first L7 rule, and gives it the rules in force on every change. L7 entries redirect
   *  only once it listens; it stays up (and keeps its port in the datapath) once started. */
  private onL7Change(): void {
    if (!this.dp || this.stopping) return;
    if (!this.proxy && this.security.hasL7) {
      const port = this.cfg.proxyPort ?? DEFAULT_PROXY_PORT;
      this.proxy = new ProxySupervisor({
        port,
        log: this.log.child({ subsys: 'proxy' }),
        // The proxy's HTTP records become L7 flows in the same ring and gRPC Observer as the datapath's.
        onFlow: (r) => this.observer?.ingestL7(r),
        onReady: () => {
          this.dp?.setProxyPort(port);
          this.security.setProxyPort(port);
        },
      });
      this.proxy.start();
    }
    this.proxy?.update(this.security.l7Table());
  }

  /** The flow server (Hubble's Observer API); NOT_SERVING until the agent is ready. */
  private async startObserver(): Promise<void> {
    const observer = new ObserverServer({
      nodeName: this.cfg.nodeName,
      socketPath: observerSocketFor(this.cfg.socket),
      context: this.flowContext(),
      numCpus: os.cpus().length,
      ringBytes: 1 << 20,
      serving: false,
    });
    await observer.start();
    this.observer = observer;
  }

  /** Feeds the flow server from the datapath's event ring. */
  private startEvents(dp: NodeDatapath): void {
    const observer = this.observer!;
    this.events = dp.startEvents((ev) => observer.ingest(ev), {
      onError: (err) => this.log.warn({ err }, 'turning a datapath event into a flow failed'),
    });
  }

  /** What turns datapath events into flows: this node's endpoints by ID and IP, identities, interface names. */
  private flowContext(): FlowContext {
    const view = (e: Endpoint): FlowEndpointInfo => ({
      id: e.id,
      identity: e.identity,
      namespace: e.namespace,
      podName: e.podName,
      labels: e.securityLabels,
    });
    const ifnames = new Map<number, string>();
    return {
      nodeName: this.cfg.nodeName,
      ...monotonicClock(),
      endpointById: (id) => {
        const e = this.endpoints?.get(id);
        return e ? view(e) : undefined;
      },
      endpointByIp: (ip) => {
        const e = this.endpoints?.findByIp(ip);
        if (e) return view(e);
        // A pod of another node: what its agent published (endpoint IDs are per node, so none is given).
        const r = this.security.remoteEndpoint(ip);
        return r ? { id: 0, identity: r.identity, namespace: r.namespace, podName: r.pod, labels: this.security.identities.labels(r.identity) ?? [] } : undefined;
      },
      identityLabels: (id) => this.security.labelsOf(id),
      sourceXlated: (t) => this.dp?.natSourceOf(t),
      serviceByAddr: (ip, port, protocol) => this.services?.serviceByAddr(ip, port, protocol),
      interfaceName: (ifindex) => {
        let name = ifnames.get(ifindex);
        if (name === undefined) {
          name = interfaceName(ifindex);
          if (name !== undefined) ifnames.set(ifindex, name);
        }
        return name;
      },
    };
  }

  /** The parts that exist once the node has its pod CIDR; a clear "not ready" otherwise. */
  private live(): { ipam: NodeIpam; dp: NodeDatapath; endpoints: EndpointManager } {
    if (!this.dp || !this.endpoints) {
      throw new AgentError('TENDRIL_ERR_NOT_READY', `Node ${this.cfg.nodeName} has no pod CIDR yet: waiting for the operator to assign one`);
    }
    return { ipam: this.ipam, dp: this.dp, endpoints: this.endpoints };
  }

  private async ensureHealthEndpoint(): Promise<void> {
    const existing = this.live().endpoints.list().find((e) => e.kind === 'health');
    if (existing) return;
    const netnsPath = ensureNamedNetns(this.cfg.healthNetns);
    // A health interface left by a crashed run without an endpoint record: start clean.
    await removePodInterface(netnsPath, 'eth0', HEALTH_IF);
    const wired = await createPodInterface({
      netnsPath,
      hostIfName: HEALTH_IF,
      podIfName: 'eth0',
      ip: this.healthIP,
      routerIP: this.routerIP,
      mtu: this.cfg.mtu,
    });
    await this.live().endpoints.create({
      kind: 'health',
      containerId: `health:${this.cfg.nodeName}`,
      ifname: 'eth0',
      hostIfName: HEALTH_IF,
      hostIfindex: wired.hostIfindex,
      hostMac: wired.hostMac,
      podMac: wired.podMac,
      ip: this.healthIP,
      netnsPath,
      namespace: '',
      podName: '',
      labels: {},
      namedPorts: [],
      securityLabels: ['reserved:health'],
      identity: IDENTITY_HEALTH,
    });
  }

  private cniBackend(): CniBackend {
    return {
      // limited: pods run on what an earlier computation left (not restored yet, or the cluster's identities and
      // policies not loaded from the store), without policy or peer updates.
      status: () => {
        if (!this.ready) return { ready: false, reason: `node ${this.cfg.nodeName} has no pod CIDR yet`, ...(!this.endpoints && hasSavedPods(this.cfg.stateDir) ? { limited: true } : {}) };
        return this.security.synced ? { ready: true } : { ready: true, limited: true, reason: 'the cluster\'s identities, endpoints and policies are not loaded from the store yet' };
      },
      netConfig: () => ({ routerIP: this.routerIP, mtu: this.live().dp.podMtu }),
      pool: () => (this.dp ? { cidr: this.ipam.cidrs().join(', '), free: this.ipam.free } : undefined),
      allocateIP: async (r) => {
        if (!this.ready) {
          throw new CniError(CniCode.TRY_AGAIN_LATER, `Node ${this.cfg.nodeName} has no pod CIDR yet`, { details: 'waiting for the operator to assign one (cluster-pool IPAM)' });
        }
        const att = { containerId: r.containerId, ifname: r.ifname };
        try {
          if (this.ipPools && r.ip === undefined) return await this.ipPools.allocate(poolOf(await this.podAnnotations(r), this.security.namespaceAnnotations(r.namespace ?? 'default')), r.owner, att, r.namespace && r.podName ? `${r.namespace}/${r.podName}` : r.owner);
          return r.ip === undefined ? this.live().ipam.allocateNext(r.owner, att) : this.live().ipam.allocate(r.ip, r.owner, att);
        } catch (err) {
          if ((err as AgentError).code === 'TENDRIL_ERR_IPAM_EXHAUSTED' && this.podCidrs) throw this.podCidrs.exhausted();
          throw err;
        } finally {
          this.podCidrs?.check();
        }
      },
      releaseIP: async (ip, attachment) => {
        this.live().ipam.release(ip, attachment);
        this.podCidrs?.check();
        this.ipPools?.released();
      },
      attachmentIPs: (containerId, ifname) => this.live().ipam.findByAttachment(containerId, ifname),
      listAttachmentIPs: () => this.live().ipam.attachments(),
      createEndpoint: async (r, clock) => {
        const namespace = r.namespace ?? 'default';
        let labels = r.labels ?? {};
        let serviceAccount = r.serviceAccount ?? DEFAULT_SERVICE_ACCOUNT;
        if (this.kubernetes?.pods && r.podName) {
          // Kubernetes mode: the watched Pod's labels are the pod's (the runtime sends none).
          const pod = await this.kubernetes.pods.get(namespace, r.podName);
          if (!pod) throw new CniError(CniCode.TRY_AGAIN_LATER, `Pod ${namespace}/${r.podName} is not known to the apiserver watch of node ${this.cfg.nodeName} yet`, { details: 'the runtime retries the ADD' });
          labels = { ...labels, ...pod.labels };
          serviceAccount = pod.serviceAccount;
          clock?.lap('pod');
        }
        const { securityLabels: sec, identity } = await this.security.podIdentity(namespace, labels, serviceAccount).catch((err: unknown) => {
          // The cluster store is away: the runtime retries the ADD later (as while the node waits for its CIDR).
          if (isTransient(err)) throw new CniError(CniCode.TRY_AGAIN_LATER, (err as Error).message, { details: 'the cluster store is unavailable; existing pods are not affected' });
          throw err;
        });
        clock?.lap('identity');
        const ep = await this.live().endpoints.create({
          kind: 'pod',
          containerId: r.containerId,
          ifname: r.ifname,
          hostIfName: r.hostIfName,
          hostIfindex: r.hostIfindex,
          hostMac: r.hostMac,
          podMac: r.podMac,
          ip: r.ip,
          netnsPath: r.netnsPath,
          namespace,
          podName: r.podName ?? r.containerId.slice(0, 12),
          labels,
          serviceAccount,
          namedPorts: r.namedPorts ?? [],
          securityLabels: sec,
          identity,
        }, clock);
        this.security.endpointCreated(ep);
        clock?.lap('policy');
        return { id: ep.id };
      },
      findEndpoint: (containerId, ifname) => this.live().endpoints.findByContainer(containerId, ifname),
      deleteEndpoint: async (id) => {
        if (this.live().endpoints.get(id)) this.deleteEndpoint(id);
      },
      listEndpoints: () => this.live().endpoints.list().filter((e) => e.kind === 'pod'),
      callStarted: () => this.dp?.holdTcxSwitch() ?? (() => {}),
    };
  }

  /** A pod's annotations: the CNI args', and in Kubernetes mode the watched Pod's over them (kubelet sends none). */
  private async podAnnotations(r: { annotations?: Record<string, string>; namespace?: string; podName?: string }): Promise<Record<string, string> | undefined> {
    if (!this.kubernetes?.pods || !r.podName) return r.annotations;
    const namespace = r.namespace ?? 'default';
    const pod = await this.kubernetes.pods.get(namespace, r.podName);
    if (!pod) throw new CniError(CniCode.TRY_AGAIN_LATER, `Pod ${namespace}/${r.podName} is not known to the apiserver watch of node ${this.cfg.nodeName} yet`, { details: 'its annotations name its IP pool; the runtime retries the ADD' });
    return { ...r.annotations, ...pod.annotations };
  }

  private routes(api: ApiServer, cni: CniHandler): void {
    api.route('GET', '/v1/healthz', () => this.status());
    api.route('GET', '/v1/config', () => this.configView());
    api.route('GET', '/v1/debug/memory', (req) => memoryView(req.query.get('gc') === '1'));
    api.route('GET', '/v1/debug/cpu-profile', (req) => cpuProfile(req.query.get('ms'), req.query.get('interval-us')));
    api.route('POST', '/v1/ipam', (req) => {
      const owner = req.query.get('owner') ?? '';
      if (!owner) throw new HttpError(400, 'Missing query parameter "owner" (e.g. ?owner=default/curl-pod)', 'TENDRIL_ERR_INVALID_REQUEST');
      const ip = this.live().ipam.allocateNext(owner);
      return withStatus(201, { ipv4: { ip, cidrs: [this.cfg.podCidr], gateway: this.routerIP }, 'host-addressing': this.hostAddressing() });
    });
    api.route('POST', '/v1/ipam/{ip:ipv4}', (req) => {
      const owner = req.query.get('owner') ?? '';
      if (!owner) throw new HttpError(400, 'Missing query parameter "owner"', 'TENDRIL_ERR_INVALID_REQUEST');
      this.live().ipam.allocate(req.params['ip']!, owner);
      return withStatus(201, { ipv4: { ip: req.params['ip'], cidrs: [this.cfg.podCidr], gateway: this.routerIP } });
    });
    api.route('DELETE', '/v1/ipam/{ip:ipv4}', (req) => {
      const ip = req.params['ip']!;
      const owner = this.live().ipam.ownerOf(ip);
      if (owner === undefined) throw new HttpError(404, `IP ${ip} is not allocated`, 'TENDRIL_ERR_IPAM_NOT_FOUND');
      if (owner === 'router' || owner === 'health') throw new HttpError(409, `IP ${ip} belongs to the node (${owner}) and cannot be released`, 'TENDRIL_ERR_IPAM_CONFLICT');
      if (this.live().endpoints.resolve(`ipv4:${ip}`)) throw new HttpError(409, `IP ${ip} is in use by an endpoint; delete the endpoint first`, 'TENDRIL_ERR_IPAM_CONFLICT');
      this.live().ipam.release(ip);
      return { released: ip };
    });
    api.route('GET', '/v1/endpoint', () => this.live().endpoints.list().map((e) => this.endpointView(e)));
    api.route('GET', '/v1/endpoint/{id}', (req) => this.endpointView(this.mustResolve(req.params['id']!)));
    api.route('PUT', '/v1/endpoint/{id}', async (req) => {
      const id = Number(req.params['id']);
      if (!Number.isInteger(id) || id < 1 || id > 4095) throw new HttpError(400, `Invalid endpoint ID "${req.params['id']}": expected 1-4095`, 'TENDRIL_ERR_INVALID_REQUEST');
      const ep = await this.live().endpoints.create({ ...(await this.endpointFromChangeRequest(req.json())), id });
      this.security.endpointCreated(ep);
      return withStatus(201, this.endpointView(ep));
    });
    api.route('DELETE', '/v1/endpoint/{id}', (req) => {
      const ep = this.mustResolve(req.params['id']!);
      if (ep.kind === 'health') throw new HttpError(409, `Endpoint ${ep.id} is the node's health endpoint and cannot be deleted`, 'TENDRIL_ERR_ENDPOINT_CONFLICT');
      this.deleteEndpoint(ep.id);
      return { deleted: ep.id };
    });
    api.route('GET', '/v1/map/tendril_lxc', () => this.live().dp.dumpEndpoints());
    api.route('GET', '/v1/datapath/attachments', () => this.live().dp.attachments());
    api.route('GET', '/v1/map/tendril_ipcache', () => this.live().dp.dumpIpcache());
    api.route('GET', '/v1/cluster/nodes', () => this.nodeList());
    api.route('GET', '/v1/identity', () => this.identityList());
    api.route('GET', '/v1/identity/{id}', (req) => {
      const id = Number(req.params['id']);
      const found = this.identityList().find((i) => i.id === id);
      if (!found) throw new HttpError(404, `Identity ${req.params['id']} not found`, 'TENDRIL_ERR_IDENTITY_NOT_FOUND');
      return found;
    });
    api.route('GET', '/v1/ip', () =>
      this.live().dp.dumpIpcache().map((e) => ({ ...e, source: this.security.ipSource(e.prefix, e.identity) })),
    );
    api.route('GET', '/v1/policy', () => ({
      mode: this.security.mode,
      policies: this.security.listPolicies(),
      'last-regeneration': this.security.lastRegeneration,
    }));
    api.route('PUT', '/v1/policy', (req) => {
      // {"text": "...", "origin": "file.yaml"} from the CLI, or the documents themselves (JSON or YAML) as the body.
      let text = req.body;
      let origin = req.query.get('origin') ?? 'request body';
      try {
        const b = JSON.parse(req.body) as { text?: unknown; origin?: unknown };
        if (typeof b === 'object' && b !== null && typeof b.text === 'string') {
          text = b.text;
          if (typeof b.origin === 'string') origin = b.origin;
        }
      } catch {
        // YAML body
      }
      return this.security.importPolicies(text, origin);
    });
    api.route('DELETE', '/v1/policy/{name}', (req) => this.security.deletePolicy(req.params['name']!));
    api.route('GET', '/v1/endpoint/{id}/policy', (req) => this.endpointPolicyView(this.mustResolve(req.params['id']!)));
    api.route('PATCH', '/v1/endpoint/{id}/labels', async (req) => {
      const ep = this.mustResolve(req.params['id']!);
      if (ep.kind !== 'pod') throw new HttpError(409, `Endpoint ${ep.id} is the node's health endpoint; its labels are reserved`, 'TENDRIL_ERR_ENDPOINT_CONFLICT');
      const labels = applyLabelChange(ep.labels, req.json());
      return this.endpointView(await this.security.relabel(ep, labels));
    });
    api.route('GET', '/v1/map/ct', () => this.live().dp.ctList());
    api.route('DELETE', '/v1/map/ct', () => ({ deleted: this.live().dp.ctFlush() }));
    api.route('GET', '/v1/map/metrics', () => this.live().dp.metrics());
    api.route('GET', '/v1/map/nat', () => this.live().dp.natList());
    api.route('DELETE', '/v1/map/nat', () => ({ deleted: this.live().dp.natFlush() }));
    api.route('GET', '/v1/map/ipmasq', () => this.live().dp.ipmasqList());
    api.route('GET', '/v1/map/egress', () => this.egress?.list() ?? []);
    api.route('GET', '/v1/egress', () => this.egress?.status() ?? null);
    api.route('GET', '/v1/service', () => this.services?.list() ?? []);
    api.route('GET', '/v1/l2', () => this.l2?.list() ?? []);
    api.route('POST', '/v1/cni', async (req) => {
      const out = await cni.handleRaw(flattenHeaders(req.headers), req.body);
      return { raw: true, status: 200, headers: { 'x-cni-exit-code': String(out.exitCode) }, body: out.stdout };
    });
  }

  private deleteEndpoint(id: number): void {
    const ep = this.live().endpoints.delete(id);
    this.security.endpointDeleted(ep);
  }

  private identityList(): IdentityView[] {
    return this.security.identityInfos().map((i) => ({
      id: i.id,
      labels: i.labels,
      scope: i.id < 256 ? 'reserved' : i.cidr !== undefined || i.ipBlock !== undefined ? 'local' : 'cluster',
    }));
  }

  /** `bpf policy get`: the endpoint's map entries with counters, the identities' labels and where each came from. */
  private endpointPolicyView(ep: Endpoint): EndpointPolicyView {
    const compiled = this.security.endpointPolicy(ep.id);
    const derived = new Map<string, string[]>();
    for (const e of compiled?.entries ?? []) derived.set(entryKeyId(e), e.derivedFrom);
    const labelsOf = (id: number): string[] => (id === 0 ? ['(any)'] : (this.security.labelsOf(id) ?? []));
    return {
      endpoint: ep.id,
      identity: ep.identity,
      'policy-enabled': enforcementText(compiled),
      ingress: compiled?.ingress.enforced ?? false,
      egress: compiled?.egress.enforced ?? false,
      entries: this.live().dp.endpointPolicy(ep.id).map((e) => ({
        ...e,
        packets: Number(e.packets),
        bytes: Number(e.bytes),
        labels: labelsOf(e.identity),
        derivedFrom: derived.get(entryKeyId(e)) ?? [],
      })),
    };
  }

  /** Conntrack garbage collection: expired entries are deleted periodically (BPF never deletes them). */
  private startCtGc(): void {
    // Passes run on the datapath's GC thread: a walk of full tables must not hold the API, CNI ADDs or watches.
    const run = async (): Promise<void> => {
      this.ctGcTimer = undefined;
      let next = this.cfg.ctGcIntervalMs;
      const dp = this.dp;
      if (dp) {
        const t0 = performance.now();
        try {
          const r = await dp.ctGcInThread();
          // Sooner when the tables fill (connection churn), as Cilium's GC adapts its interval.
          next = ctGcIntervalMs(this.cfg.ctGcIntervalMs, r.fill);
          this.ctGcLast = { at: new Date().toISOString(), ...r, ms: Math.round((performance.now() - t0) * 100) / 100, 'next-ms': next };
          if (r.deleted > 0) this.log.debug(this.ctGcLast, 'conntrack garbage collected');
        } catch (err) {
          if (this.ctGcStopped) return;
          this.log.warn({ err }, 'conntrack garbage collection failed');
        }
      }
      if (!this.ctGcStopped) this.ctGcTimer = setTimeout(() => void run(), next);
    };
    clearTimeout(this.ctGcTimer);
    this.ctGcStopped = false;
    this.ctGcTimer = setTimeout(() => void run(), this.cfg.ctGcIntervalMs);
  }

  private mustResolve(ref: string): Endpoint {
    const ep = this.live().endpoints.resolve(ref);
    if (!ep) throw new AgentError('TENDRIL_ERR_ENDPOINT_NOT_FOUND', `Endpoint "${ref}" not found`);
    return ep;
  }

  /** Validates a Cilium-style EndpointChangeRequest for PUT /v1/endpoint/{id}. */
  private async endpointFromChangeRequest(body: unknown): Promise<Omit<Endpoint, 'id' | 'state' | 'created'>> {
    if (typeof body !== 'object' || body === null) throw new HttpError(400, 'Endpoint request must be a JSON object', 'TENDRIL_ERR_INVALID_REQUEST');
    const b = body as Record<string, unknown>;
    const str = (k: string, required = true): string => {
      const v = b[k];
      if (typeof v === 'string' && v !== '') return v;
      if (!required && v === undefined) return '';
      throw new HttpError(400, `Invalid endpoint request: "${k}" must be a non-empty string`, 'TENDRIL_ERR_INVALID_REQUEST');
    };
    const addressing = b['addressing'] as { ipv4?: unknown } | undefined;
    const ip = typeof addressing?.ipv4 === 'string' ? addressing.ipv4 : '';
    if (!ip) throw new HttpError(400, 'Invalid endpoint request: "addressing.ipv4" is required', 'TENDRIL_ERR_INVALID_REQUEST');
    if (this.live().ipam.ownerOf(ip) === undefined) throw new HttpError(400, `Invalid endpoint request: ${ip} is not allocated by this node's IPAM (POST /v1/ipam first)`, 'TENDRIL_ERR_INVALID_REQUEST');
    const hostIfName = str('interface-name');
    const hostIfindex = interfaceIndex(hostIfName);
    if (hostIfindex === undefined) throw new HttpError(400, `Invalid endpoint request: interface "${hostIfName}" does not exist on this node`, 'TENDRIL_ERR_INVALID_REQUEST');
    const labelsIn = b['labels'];
    const labels: Record<string, string> = {};
    if (labelsIn !== undefined) {
      if (typeof labelsIn !== 'object' || labelsIn === null || Array.isArray(labelsIn)) throw new HttpError(400, 'Invalid endpoint request: "labels" must be an object of strings', 'TENDRIL_ERR_INVALID_REQUEST');
      for (const [k, v] of Object.entries(labelsIn)) {
        if (typeof v !== 'string') throw new HttpError(400, `Invalid endpoint request: label "${k}" must be a string`, 'TENDRIL_ERR_INVALID_REQUEST');
        labels[k] = v;
      }
    }
    const namespace = str('k8s-namespace', false) || 'default';
    const serviceAccount = str('k8s-service-account', false) || DEFAULT_SERVICE_ACCOUNT;
    const { securityLabels: sec, identity } = await this.security.podIdentity(namespace, labels, serviceAccount);
    return {
      kind: 'pod',
      containerId: str('container-id'),
      ifname: str('container-interface-name', false) || 'eth0',
      hostIfName,
      hostIfindex,
      hostMac: str('host-mac'),
      podMac: str('mac'),
      ip,
      netnsPath: str('container-netns-path', false),
      namespace,
      podName: str('k8s-pod-name', false),
      labels,
      serviceAccount,
      namedPorts: [],
      securityLabels: sec,
      identity,
    };
  }

  private hostAddressing(): HostAddressing {
    return { ipv4: { enabled: true, ip: this.routerIP, 'alloc-range': this.cfg.podCidr } };
  }

  private configView(): ConfigView {
    const dp = this.dp;
    return {
      'node-name': this.cfg.nodeName,
      ready: this.ready,
      'pod-cidr': this.podCidr || null,
      'router-ip': this.routerIP || null,
      'health-ip': this.healthIP || null,
      'node-ip': this.cfg.nodeIP ?? null,
      mtu: this.cfg.mtu,
      'pod-mtu': dp?.podMtu ?? null,
      'device-mode': 'veth',
      'attach-mode': dp?.mode ?? null,
      routing: { mode: this.cfg.routing, 'native-device': this.cfg.nativeDev, tunnel: this.cfg.routing === 'tunnel' ? { protocol: 'vxlan', port: 8472 } : null },
      'host-device': dp?.hostDevice ?? null,
      store: this.store?.description ?? null,
      'bpf-root': this.cfg.bpfRoot,
      'cni-config': this.cniConfPath ?? null,
      'state-dir': this.cfg.stateDir,
    };
  }

  private async status(): Promise<StatusView> {
    const live = this.dp && this.endpoints ? this.live() : undefined;
    const eps = live?.endpoints.list() ?? [];
    const owners = new Map(eps.map((e) => [e.ip, e]));
    // From the store guard's last probe: health answers from local state, whatever the store does.
    const store = this.store?.health();
    const storeDown = store?.ok === false;
    return {
      tendril: {
        state: !this.ready ? 'Waiting' : storeDown ? 'Warning' : 'Ok',
        message: !this.ready
          ? `node ${this.cfg.nodeName} has no pod CIDR yet (waiting for the operator)`
          : storeDown
            ? 'cluster store unavailable: existing pods are served from local state; changes that need the store wait for it'
            : '',
        version: VERSION,
        node: this.cfg.nodeName,
        'uptime-seconds': Math.round((Date.now() - this.startedAt) / 1000),
      },
      ready: this.ready,
      'cni-config': this.cniConfPath ?? null,
      kubernetes: this.kubernetes?.view() ?? null,
      store: this.store ? { description: this.store.description, ok: store?.ok === true, error: store?.ok === true ? null : (store?.error ?? 'not checked yet'), since: store?.since ?? null } : null,
      ipam: live
        ? {
            'pod-cidr': this.podCidr,
            used: live.ipam.used,
            capacity: live.ipam.capacity,
            ...(this.podCidrs ? { pools: { default: this.podCidrs.status() } } : {}),
            ...(this.ipPools ? { 'ip-pools': this.ipPools.status() } : {}),
            allocations: live.ipam.list().map((a) => ({ ...a, endpoint: owners.get(a.ip)?.id ?? null })),
          }
        : null,
      'attach-mode': live?.dp.mode ?? null,
      'device-mode': 'veth',
      routing: { mode: this.cfg.routing, 'native-device': this.cfg.nativeDev },
      nodes: this.nodes ? this.nodes.list().length : 1,
      monitor: this.events ? { cpus: os.cpus().length, ...this.events.stats() } : null,
      hubble: this.observer ? hubbleStatus(this.observer) : null,
      endpoints: eps.length,
      policy: { mode: this.cfg.enablePolicy, policies: this.security.listPolicies().length, 'last-regeneration': this.security.lastRegeneration },
      conntrack: { 'gc-interval-ms': this.cfg.ctGcIntervalMs, 'last-gc': this.ctGcLast ?? null },
      masquerading: this.masq?.status() ?? null,
      egressGateway: this.egress?.status() ?? null,
      'node-lease': this.lease?.status() ?? null,
      'kube-proxy-replacement': this.services ? { ...this.services.status(), socketLb: sockLbStatus(this.sockLb) } : null,
      'l2-announcements': this.l2?.status() ?? null,
      identities: this.security.identities.list().length,
      proxy: this.proxy ? this.proxy.status() : null,
      health: { ip: this.healthIP || null, endpoint: eps.find((e) => e.kind === 'health')?.id ?? null },
      'cni-timings': this.cni?.timings.view() ?? [],
      'tcx-switch': this.dp?.tcxSwitchStats() ?? null,
    };
  }

  /** Ready only once the egress map matches the store (src/egress), or after EGRESS_SYNC_WAIT_MS without it. */
  private async waitEgressSync(egress: EgressManager): Promise<void> {
    if (!(await egress.whenSynced(EGRESS_SYNC_WAIT_MS))) this.log.warn({ waitedMs: EGRESS_SYNC_WAIT_MS }, 'egress gateway map not synced with the store yet; ready with the map as it was');
  }

  private nodeList(): NodeView[] {
    const own = this.cfg.nodeName;
    const list = this.nodes
      ? this.nodes.list()
      : [{ name: own, addresses: this.cfg.nodeIP ? [this.cfg.nodeIP] : [], podCIDRs: this.podCidr ? [this.podCidr] : [] }];
    return list.map((n) => ({ ...n, source: n.name === own ? 'local' : this.cfg.store?.startsWith('etcd') ? 'kvstore' : this.kubernetes ? 'custom-resource' : 'cluster-store' }));
  }

  private endpointView(ep: Endpoint): EndpointView {
    return {
      id: ep.id,
      status: {
        state: ep.state,
        'external-identifiers': {
          'container-id': ep.containerId,
          'k8s-namespace': ep.namespace,
          'k8s-pod-name': ep.podName,
          'pod-name': ep.podName ? `${ep.namespace}/${ep.podName}` : '',
        },
        identity: { id: ep.identity, labels: ep.securityLabels },
        labels: { 'security-relevant': ep.securityLabels },
        networking: {
          addressing: [{ ipv4: ep.ip, 'ipv4-pool-name': 'default' }],
          'container-interface-name': ep.ifname,
          'container-netns-path': ep.netnsPath,
          'host-mac': ep.hostMac,
          'interface-index': ep.hostIfindex,
          'interface-name': ep.hostIfName,
          mac: ep.podMac,
        },
        policy: {
          'policy-enabled': enforcementText(this.security.endpointPolicy(ep.id)),
          ingress: this.security.endpointPolicy(ep.id)?.ingress.enforced ?? false,
          egress: this.security.endpointPolicy(ep.id)?.egress.enforced ?? false,
        },
        'named-ports': ep.namedPorts,
        created: ep.created,
      },
    };
  }

  /** The conflist in the latest spec version: runtimes call STATUS and GC only for 1.1.0 configs. */
  private writeCniConfig(): void {
    fs.mkdirSync(this.cfg.cniConfDir, { recursive: true });
    const file = path.join(this.cfg.cniConfDir, CONFLIST_NAME);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, tendrilConflist({ agentSocket: this.cfg.socket, ...(this.cfg.cniVersion ? { cniVersion: this.cfg.cniVersion } : {}) }));
    fs.renameSync(tmp, file);
    this.cniConfPath = file;
  }
}

/** Conditions a runtime should retry (CNI 11): the cluster store away, the node or its cluster state not ready. */
function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    (err instanceof AgentError && (code === 'TENDRIL_ERR_NOT_READY' || code === 'TENDRIL_ERR_STORE_UNAVAILABLE')) ||
    (err instanceof StoreError && code === 'TENDRIL_ERR_STORE_UNAVAILABLE')
  );
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) flat[k] = Array.isArray(v) ? v.join(',') : v;
  return flat;
}

export { HOST_DEV };

function hubbleStatus(o: ObserverServer): StatusView['hubble'] {
  const st = o.status();
  return { serving: o.serving, flows: st.num_flows, 'max-flows': st.max_flows, 'seen-flows': st.seen_flows, 'flows-rate': st.flows_rate, socket: o.socketPath };
}

/** Cilium's policy-enabled values: none, ingress, egress, both. */
function enforcementText(p: { ingress: { enforced: boolean }; egress: { enforced: boolean } } | undefined): string {
  const i = p?.ingress.enforced ?? false;
  const e = p?.egress.enforced ?? false;
  return i && e ? 'both' : i ? 'ingress' : e ? 'egress' : 'none';
}

/** PATCH body {"labels": {"k": "v", "gone": null}}: sets and removes labels (the `k=v` / `k-` of the CLI). */
function applyLabelChange(cur: Record<string, string>, body: unknown): Record<string, string> {
  const b = body as { labels?: unknown } | null;
  if (typeof b !== 'object' || b === null || typeof b.labels !== 'object' || b.labels === null || Array.isArray(b.labels)) {
    throw new HttpError(400, 'Label change must be {"labels": {"key": "value" | null}}', 'TENDRIL_ERR_INVALID_REQUEST');
  }
  const next = { ...cur };
  for (const [k, v] of Object.entries(b.labels as Record<string, unknown>)) {
    const keyProblem = labelKeyProblem(k);
    if (keyProblem) throw new HttpError(400, `Invalid label: ${keyProblem}`, 'TENDRIL_ERR_INVALID_REQUEST');
    if (v === null) {
      delete next[k];
      continue;
    }
    const valueProblem = typeof v === 'string' ? labelValueProblem(v) : 'a label value is a string (or null to remove it)';
    if (valueProblem) throw new HttpError(400, `Invalid value for label "${k}": ${valueProblem}`, 'TENDRIL_ERR_INVALID_REQUEST');
    next[k] = v as string;
  }
  return next;
}
