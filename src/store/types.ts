// The cluster state store: typed resources with revisions and watches, behind one interface (local or etcd).

/** Resource kinds the cluster keeps (the list is what backends validate against: add new kinds here). */
export const KINDS = ['Node', 'IPAMState', 'Identity', 'Endpoint', 'Namespace', 'Policy', 'Service', 'LoadBalancerIPPool', 'ServiceStatus', 'L2Lease', 'EgressGatewayPolicy', 'PodIPPool', 'NodeLease', 'EndpointSlice'] as const;
export type Kind = (typeof KINDS)[number];

/** A stored resource. `revision` is the store-wide revision at which it was last written (etcd's mod_revision). */
export interface Resource<T> {
  kind: Kind;
  name: string;
  revision: number;
  value: T;
}

export type WatchEvent<T> =
  | { type: 'put'; resource: Resource<T> }
  | { type: 'delete'; kind: Kind; name: string; revision: number };

export interface PutOptions {
  /**
   * Optimistic concurrency: the put succeeds only if the resource's current revision equals this value.
   * 0 means "must not exist yet". Omitted: unconditional. A mismatch throws StoreError TENDRIL_ERR_STORE_CONFLICT.
   */
  expectedRevision?: number;
}

export interface DeleteOptions {
  expectedRevision?: number;
}

export interface WatchHandle {
  close(): void;
}

export interface WatchOptions {
  /** Deliver every change with a revision > fromRevision (so list().revision is the natural start). */
  fromRevision: number;
  onEvent: (ev: WatchEvent<unknown>) => void;
  /**
   * Called when the watch cannot continue from where it was (history compacted, server state lost): the caller
   * must list() again and re-watch from the new revision. The handle is closed when this fires.
   */
  onResync?: (reason: string) => void;
  /** Called on connection state changes (the client reconnects by itself and resumes from the last revision). */
  onConnection?: (connected: boolean) => void;
}

export interface Store {
  /** Human description, e.g. "local (unix:/run/x.sock)" or "etcd (127.0.0.1:2379)". */
  readonly description: string;
  get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined>;
  /** All resources of a kind, and the store revision the listing is consistent with. */
  list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }>;
  put<T>(kind: Kind, name: string, value: T, opts?: PutOptions): Promise<Resource<T>>;
  /** false when it did not exist. */
  delete(kind: Kind, name: string, opts?: DeleteOptions): Promise<boolean>;
  watch(kind: Kind, opts: WatchOptions): WatchHandle;
  /** Reachability probe (for status). */
  ping(): Promise<{ ok: boolean; revision?: number; error?: string }>;
  close(): Promise<void>;
}

/** Node resource: written by the agent (addresses) and the operator (pod CIDRs). */
export interface NodeSpec {
  name: string;
  /** Underlay (InternalIP) addresses. */
  addresses: string[];
  /** Pod CIDRs of the node (every pool's; the first is its primary): the operator's (cluster-pool), or given. */
  podCIDRs: string[];
  /** IPAM requests (agent) and grants (operator) per pool; absent on nodes of earlier versions. */
  ipam?: NodeIpamSpec;
  /** Router IP (tendril_host) and health IP, published by the agent once it has a CIDR. */
  routerIP?: string;
  healthIP?: string;
}

/** A Node's IPAM exchange, per pool name ("default" in cluster-pool mode). */
export interface NodeIpamSpec {
  pools: Record<string, NodeIpamPool>;
}

export interface NodeIpamPool {
  /** How many CIDRs of the pool the agent asks for (it grows by asking for one more). */
  requested: number;
  /** CIDRs the agent hands back (empty for a grace period); the operator frees them and drops them here. */
  release?: string[];
  /** CIDRs the operator gave the node, in the order given. */
  allocated: string[];
}

/** Cluster-pool allocator state (one resource named "cluster-pool"), written only by the operator. */
export interface ClusterPoolState {
  cidrs: string[];
  maskSize: number;
  /** node name -> CIDRs currently assigned (its primary first). */
  assigned: Record<string, string[]>;
  /** CIDR -> ISO time after which it may be handed to another node (freed by a node that left). */
  releasing: Record<string, { node: string; until: string }>;
}

/**
 * TendrilPodIPPool (multi-pool IPAM): store kind PodIPPool, named by the pool, value {spec, status} (a CRD in
 * Kubernetes mode); its allocator state is IPAMState "pool.<name>" (a ClusterPoolState). The "default" pool is the
 * cluster-pool flags'. Pools of earlier versions, IPAMState "pod-ip-pool.<name>", are migrated by the operator.
 */
export interface PodIPPoolSpec {
  cidrs: string[];
  /** Prefix length of each chunk a node gets. */
  maskSize: number;
}
/** The stored TendrilPodIPPool (Cilium's CiliumPodIPPool shape: spec.ipv4.cidrs, spec.ipv4.maskSize). */
export interface PodIPPoolResource {
  spec: { ipv4: PodIPPoolSpec };
  /** Written by the operator. */
  status?: PodIPPoolStatus;
}
export interface PodIPPoolStatus {
  /** Chunks of maskSize in the pool, handed to nodes, free. */
  chunks?: { total: number; assigned: number; free: number };
  /** node -> CIDRs of the pool it holds. */
  nodes?: Record<string, string[]>;
  /** Why nothing is allocated from the pool (overlap, malformed), or why nodes wait (exhausted). */
  problem?: string;
}
/** IPAMState name prefix of the pools of earlier versions (migrated to kind PodIPPool at operator start). */
export const POD_IP_POOL_PREFIX = 'pod-ip-pool.';
/** The store kind of TendrilPodIPPools. */
export const POD_IP_POOL_KIND = 'PodIPPool' as const;
export const POD_IP_POOL_STATE_PREFIX = 'pool.';
/** The pod (or namespace) annotation naming the pool a pod's address comes from. */
export const POD_IP_POOL_ANNOTATION = 'ipam.tendril.io/ip-pool';

/**
 * NodeLease resource, named by the node: renewed by its agent while its datapath is up (a put every renewMs).
 * Readers judge it by their own clock: a lease whose revision did not change for durationMs is expired (the agent
 * is gone or cut off), so clocks of different machines never need to agree. The egress gateway fails over on it.
 */
export interface NodeLeaseSpec {
  node: string;
  renewMs: number;
  durationMs: number;
  /** The agent's wall clock at the renewal, for people reading it (never compared across machines). */
  renewedAt: string;
}

/**
 * Identity resource, named by its number ("256"): a security label set and the number every node uses for it.
 * Agents create them (create-if-absent); the operator deletes those no Endpoint has used for a grace period.
 */
export interface IdentitySpec {
  /** Sorted security labels, "source:key=value". */
  labels: string[];
}

/** Endpoint resource, named "<node>:<endpoint id>": what other nodes need to know of a pod. Written by its agent. */
export interface EndpointSpec {
  node: string;
  id: number;
  namespace: string;
  pod: string;
  ip: string;
  /** Underlay IP of the hosting node (the tunnel endpoint other nodes send to). */
  nodeIP: string;
  identity: number;
  /** Declared container ports, what named ports in policies resolve against. */
  namedPorts: NamedPort[];
}

export interface NamedPort {
  name: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
}

/** Namespace resource, named by the namespace: its labels (kubernetes.io/metadata.name=<name> included). */
export interface NamespaceSpec {
  labels: Record<string, string>;
  /** Annotations (ipam.tendril.io/ip-pool: the IP pool of the namespace's pods); absent: none. */
  annotations?: Record<string, string>;
}

/** Policy resource, named "<kind>.<namespace>.<name>" ("NetworkPolicy.x.deny-all"): the document as applied. */
export interface PolicySpec {
  document: unknown;
}
