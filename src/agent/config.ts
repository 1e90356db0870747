// Agent configuration: flags with the defaults of a real node; the lab passes per-node paths.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCidr, formatCidr, isIPv4 } from '../util/ip.js';
import { AgentError } from './errors.js';
import { masqConfig, type MasqConfig } from '../nat/index.js';
import { MAGLEV_TABLE_SIZES, type LbAlgorithm } from '../lb/index.js';
import { SUPPORTED_VERSIONS, isSupportedVersion, type CniVersion } from '../cni/errors.js';
import { nodeLeaseTiming, type NodeLeaseTiming } from './node-lease.js';

export type RoutingMode = 'tunnel' | 'native';

export interface AgentConfig {
  nodeName: string;
  /** Pod CIDR given by flag; undefined = assigned by the operator through the cluster store. */
  podCidr: string | undefined;
  /** Cluster store URL (local+unix:///…, local://HOST:PORT, etcd://HOST:PORT). */
  store: string | undefined;
  routing: RoutingMode;
  /** The node's underlay device (tunnel endpoint / native routing device). */
  nativeDev: string;
  /** tcx (default) or tc (clsact + cls_bpf): see NodeDatapathConfig.attachMode. */
  attachMode: 'tcx' | 'tc';
  nodeIP: string | undefined;
  /** Directory for the agent's persistent state (IPAM, endpoints). */
  stateDir: string;
  /** REST API socket (root-only). */
  socket: string;
  /** bpffs directory for pinned maps and links. */
  bpfRoot: string;
  /** Where 05-tendril.conflist is written when the agent is ready. */
  cniConfDir: string;
  /** Named netns of the health endpoint. */
  healthNetns: string;
  /** cniVersion of the conflist written (--cni-version): what the runtime's libcni accepts (containerd 1.6: ≤ 1.0.0). */
  cniVersion?: CniVersion | undefined;
  mtu: number;
  logFile: string | undefined;
  objDir: string;
  /** Policy enforcement mode (Cilium's --enable-policy): default, always or never. */
  enablePolicy: 'default' | 'always' | 'never';
  /** Period of the conntrack garbage collection, ms. */
  ctGcIntervalMs: number;
  /** Masquerading of pod traffic to the world (src/nat). */
  masq: MasqConfig;
  /** Service backend selection (--bpf-lb-algorithm) and Maglev table size (--bpf-lb-maglev-table-size). */
  lbAlgorithm: LbAlgorithm;
  maglevTableSize: number;
  /** Kubernetes mode (--k8s-kubeconfig, or in a pod): the apiserver is the cluster store. kubeconfig undefined = in-cluster. */
  kubernetes?: { kubeconfig: string | undefined };
  /** IPAM mode: cluster-pool (the operator carves CIDRs) or kubernetes (the Node's podCIDRs are given). */
  ipam: 'cluster-pool' | 'kubernetes' | 'multi-pool';
  /** cluster-pool: free addresses below this make the node ask for another CIDR. */
  ipamPreAllocate: number;
  /** cluster-pool: how long an extra CIDR stays empty before it is handed back, ms. */
  ipamHandBackGraceMs: number;
  /** kubernetes: how long start() waits for the Node's pod CIDR before it refuses to start, ms. */
  ipamWaitTimeoutMs: number;
  /** The node lease (egress gateway failover): --node-lease-renew-interval, --node-lease-duration. */
  nodeLease: NodeLeaseTiming;
  /** The node L7 proxy's listener port (--proxy-port); undefined = DEFAULT_PROXY_PORT. */
  proxyPort?: number;
  /** Socket-level LB (--bpf-lb-sock-cgroup): the cgroup v2 directory whose sockets get the sock programs; undefined = off. */
  sockLbCgroup?: string;
  /** --store-call-timeout: longest a cluster store call may take before the store counts as unavailable, ms. */
  storeCallTimeoutMs: number;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export const DEFAULT_SOCKET = '/var/run/tendril/tendril.sock';

export function agentConfig(o: {
  nodeName?: string | undefined;
  podCidr?: string | undefined;
  nodeIp?: string | undefined;
  stateDir?: string | undefined;
  socket?: string | undefined;
  bpfRoot?: string | undefined;
  cniConfDir?: string | undefined;
  cniVersion?: string | undefined;
  healthNetns?: string | undefined;
  mtu?: string | number | undefined;
  logFile?: string | undefined;
  store?: string | undefined;
  routing?: string | undefined;
  nativeDev?: string | undefined;
  attachMode?: string | undefined;
  enablePolicy?: string | undefined;
  conntrackGcInterval?: string | undefined;
  masq?: Parameters<typeof masqConfig>[0];
  bpfLbAlgorithm?: string | undefined;
  bpfLbMaglevTableSize?: string | number | undefined;
  k8sKubeconfig?: string | undefined;
  ipam?: string | undefined;
  ipamPreAllocate?: string | undefined;
  ipamHandBackGrace?: string | undefined;
  ipamWaitTimeout?: string | undefined;
  nodeLeaseDuration?: string | undefined;
  nodeLeaseRenewInterval?: string | undefined;
  proxyPort?: string | number | undefined;
  bpfLbSockCgroup?: string | undefined;
  storeCallTimeout?: string | undefined;
}): AgentConfig {
  const proxyPort = o.proxyPort === undefined ? undefined : Number(o.proxyPort);
  if (proxyPort !== undefined && (!Number.isInteger(proxyPort) || proxyPort < 1 || proxyPort > 65535)) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --proxy-port "${String(o.proxyPort)}": expected a TCP port 1-65535`);
  }
  const lbAlgorithm = o.bpfLbAlgorithm ?? 'random';
  if (lbAlgorithm !== 'random' && lbAlgorithm !== 'maglev') {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --bpf-lb-algorithm "${lbAlgorithm}": expected random or maglev`);
  }
  const maglevTableSize = Number(o.bpfLbMaglevTableSize ?? 1021);
  if (!(MAGLEV_TABLE_SIZES as readonly number[]).includes(maglevTableSize)) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --bpf-lb-maglev-table-size "${String(o.bpfLbMaglevTableSize)}": expected one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  }
  // In a pod (KUBERNETES_SERVICE_HOST) without --store, the apiserver is the store, as with --k8s-kubeconfig.
  const kubernetes = o.k8sKubeconfig !== undefined || (!o.store && process.env['KUBERNETES_SERVICE_HOST']) ? { kubeconfig: o.k8sKubeconfig } : undefined;
  if (kubernetes && o.store) throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Cannot use both --store ${o.store} and --k8s-kubeconfig: in Kubernetes mode the apiserver is the cluster store`);
  const ipam = o.ipam ?? 'cluster-pool';
  if (ipam !== 'cluster-pool' && ipam !== 'kubernetes' && ipam !== 'multi-pool') {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --ipam "${ipam}": expected cluster-pool, kubernetes or multi-pool`);
  }
  if (ipam === 'multi-pool' && !o.store && !o.k8sKubeconfig) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', 'Missing --store: with --ipam multi-pool the IP pools and their chunks come from the cluster store');
  }
  const preAllocate = Number(o.ipamPreAllocate ?? 8);
  if (!Number.isInteger(preAllocate) || preAllocate < 0 || preAllocate > 65536) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --ipam-pre-allocate "${String(o.ipamPreAllocate)}": expected a number of addresses 0-65536`);
  }
  const ipamHandBackGraceMs = parseDuration(o.ipamHandBackGrace ?? '30s', '--ipam-hand-back-grace');
  const ipamWaitTimeoutMs = parseDuration(o.ipamWaitTimeout ?? '60s', '--ipam-wait-timeout');
  // An apiserver answers more slowly than etcd (admission, a pod-start burst on the same small node): a longer default.
  const storeCallTimeoutMs = parseDuration(o.storeCallTimeout ?? (kubernetes ? '5s' : '1500ms'), '--store-call-timeout');
  const nodeLease = nodeLeaseTiming(parseDuration(o.nodeLeaseRenewInterval ?? '1s', '--node-lease-renew-interval'), parseDuration(o.nodeLeaseDuration ?? '5s', '--node-lease-duration'));
  // Kubernetes mode: the core Node's spec.podCIDRs (src/k8s/node-cidrs.ts).
  if (ipam === 'kubernetes' && !o.store && !kubernetes && !o.podCidr) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', 'Missing --store: with --ipam kubernetes the pod CIDRs come from the Node resource in the cluster store');
  }
  const enablePolicy = o.enablePolicy ?? 'default';
  if (enablePolicy !== 'default' && enablePolicy !== 'always' && enablePolicy !== 'never') {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --enable-policy "${enablePolicy}": expected default, always or never`);
  }
  const ctGcIntervalMs = parseDuration(o.conntrackGcInterval ?? '30s', '--conntrack-gc-interval');
  const attachMode = o.attachMode ?? 'tcx';
  if (attachMode !== 'tcx' && attachMode !== 'tc') {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --attach-mode "${attachMode}": expected tcx or tc`);
  }
  if (!o.podCidr && !o.store && !kubernetes) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', 'Missing --pod-cidr or --store: the node needs a pod CIDR, given or assigned by the operator');
  }
  let podCidr: string | undefined;
  if (o.podCidr) {
    try {
      podCidr = formatCidr(parseCidr(o.podCidr));
    } catch (err) {
      throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --pod-cidr: ${(err as Error).message}`);
    }
  }
  const routing = o.routing ?? 'tunnel';
  if (routing !== 'tunnel' && routing !== 'native') {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --routing "${routing}": expected tunnel or native`);
  }
  if (o.nodeIp !== undefined && !isIPv4(o.nodeIp)) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --node-ip "${o.nodeIp}": not an IPv4 address`);
  }
  const mtu = Number(o.mtu ?? 1500);
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
    throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --mtu "${String(o.mtu)}": expected an integer 576-65535`);
  }
  const nodeName = o.nodeName ?? 'node';
  const stateDir = o.stateDir ?? '/var/lib/tendril';
  return {
    nodeName,
    podCidr,
    store: o.store,
    routing,
    nativeDev: o.nativeDev ?? 'eth0',
    attachMode,
    nodeIP: o.nodeIp,
    stateDir,
    socket: o.socket ?? DEFAULT_SOCKET,
    bpfRoot: o.bpfRoot ?? `/sys/fs/bpf/tendril/${nodeName}`,
    cniConfDir: o.cniConfDir ?? '/etc/cni/net.d',
    cniVersion: parseCniVersion(o.cniVersion),
    healthNetns: o.healthNetns ?? 'tendril-health',
    mtu,
    logFile: o.logFile,
    objDir: path.join(repoRoot, 'build/bpf'),
    enablePolicy,
    ctGcIntervalMs,
    masq: masqConfig(o.masq ?? {}),
    lbAlgorithm,
    maglevTableSize,
    ...(kubernetes ? { kubernetes } : {}),
    ipam,
    ipamPreAllocate: preAllocate,
    ipamHandBackGraceMs,
    ipamWaitTimeoutMs,
    nodeLease,
    storeCallTimeoutMs,
    ...(proxyPort !== undefined ? { proxyPort } : {}),
    ...(o.bpfLbSockCgroup ? { sockLbCgroup: o.bpfLbSockCgroup } : {}),
  };
}

/** "30s", "500ms", "2m" or a number of seconds -> ms (> 0). */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
  const ms = m ? Number(m[1]) * unit[(m[2] ?? 's') as keyof typeof unit] : NaN;
  if (!Number.isFinite(ms) || ms <= 0) throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid ${flag} "${text}": expected a duration like 30s, 500ms or 2m`);
  return ms;
}

/** --cni-version: one of the versions the shim speaks, or undefined (the latest). */
function parseCniVersion(v: string | undefined): CniVersion | undefined {
  if (v === undefined || v === '') return undefined;
  if (!isSupportedVersion(v)) throw new AgentError('TENDRIL_ERR_INVALID_REQUEST', `Invalid --cni-version "${v}": expected one of ${SUPPORTED_VERSIONS.join(', ')}`);
  return v;
}
