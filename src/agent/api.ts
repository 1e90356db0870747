// The agent's API contract: what each route under /v1 answers, typed once. The agent builds these views, the CLI,
// the lab and the bench read them (through index.ts). Field names follow cilium-dbg's JSON where one exists.
import type { EgressStatusView } from '../egress/index.js';
import type { Attachment, CtEntry, DropMetric, EndpointInfo, EventStats, IpcacheEntry, NatEntry } from '../datapath/index.js';
import type { MasqStatus } from '../nat/index.js';
import type { CniTimingsView } from '../cni/index.js';
import type { KubernetesStatusView } from '../k8s/status.js';
import type { NamedPort } from '../store/types.js';
import type { PodCidrStatus } from './pod-cidrs.js';
import type { EndpointState } from './endpoints.js';
import type { EndpointPolicyView, PolicyView } from './security.js';

/** GET /v1/endpoint/{id}/policy and the policies of GET /v1/policy (defined next to what builds them). */
export type { EndpointPolicyView, PolicyView };
/** GET /v1/map/tendril_lxc, /v1/datapath/attachments, /v1/map/tendril_ipcache, /v1/map/ct, /v1/map/metrics. */
export type { Attachment, CtEntry, DropMetric, EndpointInfo, IpcacheEntry };
/** GET /v1/map/nat (`bpf nat list`), the masquerading of GET /v1/healthz. */
export type { MasqStatus, NatEntry };

/** Every error answer (4xx, 5xx). */
export interface ApiErrorBody {
  code: string;
  message: string;
}

/** The last policy regeneration: how many endpoints, and how long it took. */
export interface Regeneration {
  endpoints: number;
  ms: number;
  compileMs: number;
  mapsMs: number;
  /** ISO time; '' before the first. */
  at: string;
}

/** GET /v1/healthz (`tendril status`). */
export interface StatusView {
  tendril: { state: 'Ok' | 'Waiting' | 'Warning'; message: string; version: string; node: string; 'uptime-seconds': number };
  ready: boolean;
  'cni-config': string | null;
  store: { description: string; ok: boolean; error: string | null; since: string | null } | null;
  /** Kubernetes mode: the apiserver (null otherwise). */
  kubernetes?: KubernetesStatusView | null;
  ipam: {
    'pod-cidr': string;
    used: number;
    capacity: number;
    /** Per pool: its CIDRs on this node with used/total, what the node asked for. */
    pools?: Record<string, PodCidrStatus>;
    /** --ipam multi-pool: per IP pool, its CIDRs on this node with used/total and the chunks asked for. */
    'ip-pools'?: Array<{ pool: string; requested: number; cidrs: Array<{ cidr: string; used: number; capacity: number }> }>;
    allocations: Array<{ ip: string; owner: string; endpoint: number | null }>;
  } | null;
  'attach-mode': 'tcx' | 'tc' | null;
  'device-mode': string;
  routing: { mode: string; 'native-device': string };
  nodes: number;
  monitor: ({ cpus: number } & EventStats) | null;
  /** serving: what the flow server's health service answers (SERVING only while the agent is ready). */
  hubble: { serving: boolean; flows: number; 'max-flows': number; 'seen-flows': number; 'flows-rate': number; socket: string } | null;
  endpoints: number;
  health: { ip: string | null; endpoint: number | null };
  policy: { mode: string; policies: number; 'last-regeneration': Regeneration };
  conntrack: { 'gc-interval-ms': number; 'last-gc': { deleted: number; alive: number } | null };
  /** null until the datapath is up. */
  masquerading: MasqStatus | null;
  /** Egress gateway: map entries, the egress IPs this node holds as a gateway (src/egress). */
  egressGateway: EgressStatusView | null;
  /** The node lease the operator's egress gateway failover watches (null without a cluster store). */
  'node-lease'?: import('./node-lease.js').NodeLeaseStatus | null;
  /** Service load-balancing in BPF (null: no cluster store, so no services). */
  'kube-proxy-replacement'?: { enabled: boolean; algorithm: string; maglevTableSize: number; synced: boolean; frontends: number; lastError?: string; socketLb?: { enabled: boolean; cgroup: string | null } } | null;
  /** L2 announcements of LoadBalancer IPs (src/l2). */
  'l2-announcements'?: { enabled: boolean; announced: number; leases: number; leaseDurationMs: number; lastError: string | null; gratuitousArpSent?: number; gratuitousArpError?: string | null } | null;
  /** The node's L7 proxy (null until the first L7 rule): port, process, redirects in force, request counters. */
  proxy?: import('../proxy/index.js').ProxyStatus | null;
  identities: number;
  /** Per-phase timings of the last CNI ADDs and DELs (ms). */
  'cni-timings': CniTimingsView[];
  /** Pods whose ingress program still runs as a tc filter, and the switches to tcx so far (null before the datapath). */
  'tcx-switch'?: { bridged: number; switched: number; failed: number; offThread: number; lastError?: string } | null;
}

/** GET /v1/config. */
export interface ConfigView {
  'node-name': string;
  ready: boolean;
  'pod-cidr': string | null;
  'router-ip': string | null;
  'health-ip': string | null;
  'node-ip': string | null;
  mtu: number;
  'pod-mtu': number | null;
  'device-mode': string;
  'attach-mode': 'tcx' | 'tc' | null;
  routing: { mode: string; 'native-device': string; tunnel: { protocol: 'vxlan'; port: number } | null };
  'host-device': unknown;
  store: string | null;
  'bpf-root': string;
  'cni-config': string | null;
  'state-dir': string;
}

export interface HostAddressing {
  ipv4: { enabled: boolean; ip: string; 'alloc-range': string | undefined };
}

/** POST /v1/ipam?owner=… and POST /v1/ipam/{ip}?owner=… (201). */
export interface IpamAllocation {
  ipv4: { ip: string; cidrs: Array<string | undefined>; gateway: string };
  'host-addressing'?: HostAddressing;
}

/** DELETE /v1/ipam/{ip}. */
export interface IpamRelease {
  released: string;
}

/** GET /v1/endpoint (a list), GET/PUT /v1/endpoint/{id}, PATCH /v1/endpoint/{id}/labels. */
export interface EndpointView {
  id: number;
  status: {
    state: EndpointState;
    'external-identifiers': { 'container-id': string; 'k8s-namespace': string; 'k8s-pod-name': string; 'pod-name': string };
    identity: { id: number; labels: string[] };
    labels: { 'security-relevant': string[] };
    networking: {
      addressing: Array<{ ipv4: string; 'ipv4-pool-name': string }>;
      'container-interface-name': string;
      'container-netns-path': string;
      'host-mac': string;
      'interface-index': number;
      'interface-name': string;
      mac: string;
    };
    policy: { 'policy-enabled': string; ingress: boolean; egress: boolean };
    'named-ports': NamedPort[];
    created: string;
  };
}

/** DELETE /v1/endpoint/{id}. */
export interface EndpointDeleted {
  deleted: number;
}

/** GET /v1/cluster/nodes. */
export interface NodeView {
  name: string;
  addresses: string[];
  podCIDRs: string[];
  source: 'local' | 'kvstore' | 'cluster-store' | 'custom-resource';
}

/** GET /v1/identity (a list), GET /v1/identity/{id}. */
export interface IdentityView {
  id: number;
  labels: string[];
  scope: 'reserved' | 'cluster' | 'local';
}

/** GET /v1/ip: the ipcache with where each entry came from. */
export type IpView = IpcacheEntry & { source: string };

/** GET /v1/policy. */
export interface PolicyListView {
  mode: string;
  policies: PolicyView[];
  'last-regeneration': Regeneration;
}

/** PUT /v1/policy. */
export interface PolicyImportResult {
  imported: string[];
  regeneration: { endpoints: number; ms: number };
}

/** DELETE /v1/policy/{name}. */
export interface PolicyDeleteResult {
  deleted: string[];
}

/** DELETE /v1/map/ct. */
export interface CtFlushResult {
  deleted: number;
}
