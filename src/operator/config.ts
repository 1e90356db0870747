// Flags of `tendril operator` -> a validated OperatorConfig (pure): pool, store backend, grace, sockets, log file.
import { parseEgressPool } from '../egress/index.js';
import { DEFAULT_IDENTITY_GC_GRACE_MS, DEFAULT_IDENTITY_GC_INTERVAL_MS } from './identity-gc.js';
import { parseStoreUrl, type ListenAddress } from '../store/index.js';
import { validatePoolConfig, type ClusterPoolConfig } from './cluster-pool.js';
import { OperatorError } from './errors.js';
import { DEFAULT_NODE_CIDR_GRACE_MS } from './operator.js';

export const DEFAULT_OPERATOR_API_SOCKET = '/var/run/tendril/operator.sock';
export const DEFAULT_STORE_DATA = '/var/lib/tendril/store';

/** Raw flag values as commander hands them over (camelCase keys). */
export interface OperatorFlags {
  /** IPAM mode: cluster-pool (default) or kubernetes (node CIDRs are given by someone else: no allocation here). */
  ipam?: string | undefined;
  /** Repeatable: every cluster CIDR (`--cluster-pool-ipv4-cidr`). */
  clusterPoolIpv4Cidr?: string | string[] | undefined;
  /** Alias of clusterPoolIpv4Cidr (the flag of earlier versions). */
  clusterPoolCidr?: string | string[] | undefined;
  clusterPoolIpv4MaskSize?: string | number | undefined;
  /** Alias of clusterPoolIpv4MaskSize. */
  clusterPoolMaskSize?: string | number | undefined;
  store?: string | undefined;
  storeListen?: string | undefined;
  storeData?: string | undefined;
  nodeCidrGrace?: string | number | undefined;
  identityGcInterval?: string | number | undefined;
  identityGcGrace?: string | number | undefined;
  /** Egress IPs for egress gateway policies that give none (src/egress). */
  egressIpPool?: string | undefined;
  /** How long a node's lease may go unrenewed before its egress gateways move (at least the lease's own duration). */
  nodeMonitorGracePeriod?: string | number | undefined;
  apiSocket?: string | undefined;
  logFile?: string | undefined;
  k8sKubeconfig?: string | undefined;
  leaderElectionNamespace?: string | undefined;
  leaderElectionLeaseDuration?: string | number | undefined;
}

export type StoreChoice =
  /** Use a store someone else runs (etcd://…, local+unix://…, local://…). */
  | { mode: 'connect'; url: string }
  /** Host the local store in this process, persisted in dataDir. */
  | { mode: 'host'; listen: ListenAddress; dataDir: string }
  /** Kubernetes mode: the apiserver is the store (kubeconfig undefined = in-cluster); replicas elect a leader. */
  | { mode: 'kubernetes'; kubeconfig: string | undefined; leaseNamespace: string; leaseDurationMs: number };

export const OPERATOR_IPAM_MODES = ['cluster-pool', 'kubernetes', 'multi-pool'] as const;
export type OperatorIpamMode = (typeof OPERATOR_IPAM_MODES)[number];

export interface OperatorConfig {
  ipam: OperatorIpamMode;
  pool: ClusterPoolConfig;
  store: StoreChoice;
  graceMs: number;
  identityGcIntervalMs: number;
  identityGcGraceMs: number;
  apiSocket: string;
  /** --egress-ip-pool (checked), or undefined. */
  egressIpPool?: string;
  /** --node-monitor-grace-period, ms; 0 (default): each node lease's own duration. */
  nodeMonitorGracePeriodMs: number;
  logFile?: string;
}

export function operatorConfig(flags: OperatorFlags): OperatorConfig {
  const ipam = flags.ipam ?? 'cluster-pool';
  if (!(OPERATOR_IPAM_MODES as readonly string[]).includes(ipam)) {
    throw invalid(`Invalid --ipam "${ipam}": expected one of ${OPERATOR_IPAM_MODES.join(', ')}`);
  }
  const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
  const cidrs = [...list(flags.clusterPoolIpv4Cidr), ...list(flags.clusterPoolCidr)];
  if (flags.clusterPoolIpv4MaskSize !== undefined && flags.clusterPoolMaskSize !== undefined && String(flags.clusterPoolIpv4MaskSize) !== String(flags.clusterPoolMaskSize)) {
    throw invalid(`Conflicting --cluster-pool-ipv4-mask-size ${flags.clusterPoolIpv4MaskSize} and --cluster-pool-mask-size ${flags.clusterPoolMaskSize}: the second is an alias of the first; give one`);
  }
  const pool = validatePoolConfig({ cidrs, maskSize: flags.clusterPoolIpv4MaskSize ?? flags.clusterPoolMaskSize });
  const graceMs =
    flags.nodeCidrGrace === undefined ? DEFAULT_NODE_CIDR_GRACE_MS : parseDuration('--node-cidr-grace', flags.nodeCidrGrace);

  let store: StoreChoice;
  const kubernetes = flags.k8sKubeconfig !== undefined || (flags.store === undefined && flags.storeListen === undefined && !!process.env['KUBERNETES_SERVICE_HOST']);
  if (kubernetes && (flags.store !== undefined || flags.storeListen !== undefined)) {
    throw invalid(`Cannot use --k8s-kubeconfig with ${flags.store !== undefined ? '--store' : '--store-listen'}: in Kubernetes mode the apiserver is the store`);
  } else if (kubernetes) {
    const leaseDurationMs = flags.leaderElectionLeaseDuration === undefined ? 15_000 : parseDuration('--leader-election-lease-duration', flags.leaderElectionLeaseDuration);
    if (leaseDurationMs < 1000) throw invalid(`Invalid --leader-election-lease-duration "${String(flags.leaderElectionLeaseDuration)}": at least 1s`);
    store = { mode: 'kubernetes', kubeconfig: flags.k8sKubeconfig, leaseNamespace: nonEmpty('--leader-election-namespace', flags.leaderElectionNamespace ?? 'kube-system'), leaseDurationMs };
  } else if (flags.store !== undefined && flags.storeListen !== undefined) {
    throw invalid(`Cannot use both --store ${flags.store} and --store-listen ${flags.storeListen}: pick one (connect to a store, or host one)`);
  } else if (flags.store !== undefined) {
    if (flags.storeData !== undefined) throw invalid('--store-data only applies with --store-listen (the hosted local store keeps its data there)');
    try {
      parseStoreUrl(flags.store);
    } catch (err) {
      const why = (err as Error).message.replace(/^Invalid store URL "[^"]*": /, '');
      throw invalid(`Invalid --store "${flags.store}": ${why}`);
    }
    store = { mode: 'connect', url: flags.store };
  } else if (flags.storeListen !== undefined) {
    store = { mode: 'host', listen: parseListen(flags.storeListen), dataDir: nonEmpty('--store-data', flags.storeData ?? DEFAULT_STORE_DATA) };
  } else {
    throw invalid('Missing store: give --store URL (etcd://HOST:PORT, local+unix:///path.sock) or --store-listen ADDRESS to host the local store');
  }

  const identityGcIntervalMs = flags.identityGcInterval === undefined ? DEFAULT_IDENTITY_GC_INTERVAL_MS : parseDuration('--identity-gc-interval', flags.identityGcInterval);
  const identityGcGraceMs = flags.identityGcGrace === undefined ? DEFAULT_IDENTITY_GC_GRACE_MS : parseDuration('--identity-gc-grace', flags.identityGcGrace);
  const nodeMonitorGracePeriodMs = flags.nodeMonitorGracePeriod === undefined ? 0 : parseDuration('--node-monitor-grace-period', flags.nodeMonitorGracePeriod);
  const cfg: OperatorConfig = { ipam: ipam as OperatorIpamMode, pool, store, graceMs, identityGcIntervalMs, identityGcGraceMs, nodeMonitorGracePeriodMs, apiSocket: nonEmpty('--api-socket', flags.apiSocket ?? DEFAULT_OPERATOR_API_SOCKET) };
  if (flags.logFile !== undefined) cfg.logFile = nonEmpty('--log-file', flags.logFile);
  if (flags.egressIpPool !== undefined) cfg.egressIpPool = checkEgressPool(flags.egressIpPool);
  return cfg;
}

/** `unix:///abs/path.sock`, `HOST:PORT` or `[v6]:PORT` (the address the hosted local store listens on). */
export function parseListen(text: string): ListenAddress {
  const fail = (why: string): never => {
    throw invalid(`Invalid --store-listen "${text}": ${why}; expected unix:///path/to.sock or HOST:PORT`);
  };
  if (text.startsWith('unix://')) {
    const socket = text.slice('unix://'.length);
    if (!socket.startsWith('/')) return fail('the socket path must be absolute');
    return { socket };
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (!m) return fail('not an address');
  const port = Number(m[2]);
  if (port > 65535) return fail(`port ${port} is above 65535`);
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  return { host, port };
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go-style durations: "30s", "300ms", "1m30s", "0". A bare number is refused (seconds or milliseconds?). */
export function parseDuration(flag: string, value: string | number): number {
  const text = String(value).trim();
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    end = re.lastIndex;
  }
  if (text.length === 0 || end !== text.length) {
    throw invalid(`Invalid ${flag} "${String(value)}": expected a duration such as 30s, 500ms or 1m30s`);
  }
  return Math.round(total);
}

function nonEmpty(flag: string, v: string): string {
  if (v.trim() === '') throw invalid(`Invalid ${flag} "": expected a path`);
  return v;
}

function invalid(message: string): OperatorError {
  return new OperatorError('TENDRIL_ERR_INVALID_CONFIG', message);
}

/** --egress-ip-pool: a coded invalid-config error for a bad CIDR. */
function checkEgressPool(text: string): string {
  try {
    return parseEgressPool(text);
  } catch (err) {
    throw invalid((err as Error).message);
  }
}
