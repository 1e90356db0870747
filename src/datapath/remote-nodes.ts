// Remote nodes in the datapath: what ipcache entries and routes a node needs (pure), and the persisted record of them.
import fs from 'node:fs';
import path from 'node:path';
import { cidrContains, formatCidr, parseCidr, parseIPv4 } from '../util/ip.js';
import { DatapathError } from './errors.js';
import {
  IDENTITY_HEALTH,
  IDENTITY_REMOTE_NODE,
  IDENTITY_WORLD,
  IPCACHE_F_HAS_TUNNEL_EP,
  type IpcacheValue,
} from './maps.js';

export type RoutingMode = 'tunnel' | 'native';

/** Another node of the cluster, as the agent's node manager knows it. */
export interface RemoteNode {
  name: string;
  /** Underlay IPv4: the tunnel endpoint (tunnel mode) or next hop (native mode). */
  nodeIP: string;
  /** Pod CIDRs the node allocates from. */
  podCIDRs: string[];
  /** The node's router IP (its tendril_host address). */
  routerIP?: string;
  /** The node's health endpoint IP. */
  healthIP?: string;
}

/** A route the datapath installs for a remote node; `dev` is resolved to an ifindex when applied. */
export interface PlannedRoute {
  dst: string;
  dev: string;
  gateway?: string;
  src?: string;
  scope: 'link' | 'universe';
}

export interface NodePlan {
  /** ipcache prefix (CIDR) -> value. */
  entries: Map<string, IpcacheValue>;
  routes: PlannedRoute[];
}

export interface PlanContext {
  mode: RoutingMode;
  /** tendril_host: the device remote pod CIDRs are routed to in tunnel mode. */
  hostDev: string;
  /** The underlay device remote pod CIDRs are routed through in native mode. */
  nativeDev: string;
  /** This node's router IP: the source of the node's own traffic to remote pods in tunnel mode. */
  routerIP: string;
}

const NO_TUNNEL = '0.0.0.0';

function configError(message: string): DatapathError {
  return new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', message);
}

function checkIPv4(node: string, field: string, value: unknown): string {
  if (typeof value !== 'string') throw configError(`Invalid remote node "${node}": ${field} is missing`);
  try {
    parseIPv4(value);
  } catch (err) {
    throw configError(`Invalid remote node "${node}": ${field} "${value}" is no IPv4 address`);
  }
  return value;
}

/** Validates a remote node and returns it with canonical CIDRs (network address, no duplicates). */
export function normalizeRemoteNode(n: RemoteNode): RemoteNode {
  if (typeof n.name !== 'string' || n.name === '') throw configError('Invalid remote node: name is empty');
  const nodeIP = checkIPv4(n.name, 'nodeIP', n.nodeIP);
  if (!Array.isArray(n.podCIDRs)) throw configError(`Invalid remote node "${n.name}": podCIDRs is not a list`);
  const podCIDRs: string[] = [];
  for (const c of n.podCIDRs) {
    let cidr: string;
    try {
      cidr = formatCidr(parseCidr(c));
    } catch {
      throw configError(`Invalid remote node "${n.name}": pod CIDR "${String(c)}" is no IPv4 CIDR`);
    }
    if (!podCIDRs.includes(cidr)) podCIDRs.push(cidr);
  }
  const out: RemoteNode = { name: n.name, nodeIP, podCIDRs };
  if (n.routerIP !== undefined) out.routerIP = checkIPv4(n.name, 'routerIP', n.routerIP);
  if (n.healthIP !== undefined) out.healthIP = checkIPv4(n.name, 'healthIP', n.healthIP);
  return out;
}

/**
 * What a remote node needs, Cilium 1.18-style: its pod CIDRs are world-identity prefixes whose tunnel endpoint is
 * the node (the ipcache replaced the tunnel map), its underlay IP is remote-node, its router IP remote-node and its
 * health IP health, both behind the tunnel. Native mode has no tunnel endpoints; routes `podCIDR via nodeIP` make
 * the kernel FIB find the node instead. In tunnel mode the pod CIDRs are routed to tendril_host so that the node's
 * own traffic to remote pods meets cil_from_host, which encapsulates it.
 */
export function planRemoteNode(n: RemoteNode, ctx: PlanContext): NodePlan {
  const tunnel = ctx.mode === 'tunnel';
  const behindTunnel = (identity: number): IpcacheValue => ({
    identity,
    tunnelEndpoint: tunnel ? n.nodeIP : NO_TUNNEL,
    nodeId: 0,
    flags: tunnel ? IPCACHE_F_HAS_TUNNEL_EP : 0,
    key: 0,
  });
  const entries = new Map<string, IpcacheValue>();
  for (const cidr of n.podCIDRs) entries.set(cidr, behindTunnel(IDENTITY_WORLD));
  // The underlay address is reached on the underlay itself, never through the tunnel.
  entries.set(`${n.nodeIP}/32`, { identity: IDENTITY_REMOTE_NODE, tunnelEndpoint: NO_TUNNEL, nodeId: 0, flags: 0, key: 0 });
  if (n.routerIP !== undefined) entries.set(`${n.routerIP}/32`, behindTunnel(IDENTITY_REMOTE_NODE));
  if (n.healthIP !== undefined) entries.set(`${n.healthIP}/32`, behindTunnel(IDENTITY_HEALTH));

  const route = (dst: string): PlannedRoute =>
    tunnel
      ? { dst, dev: ctx.hostDev, src: ctx.routerIP, scope: 'link' }
      : { dst, dev: ctx.nativeDev, gateway: n.nodeIP, scope: 'universe' };
  const cidrs = n.podCIDRs.map((c) => parseCidr(c));
  const routes = n.podCIDRs.map(route);
  // Router and health IP normally sit inside a pod CIDR; one that does not still needs a way there.
  for (const ip of [n.routerIP, n.healthIP]) {
    if (ip === undefined || cidrs.some((c) => cidrContains(c, parseIPv4(ip)))) continue;
    if (!routes.some((r) => r.dst === `${ip}/32`)) routes.push(route(`${ip}/32`));
  }
  return { entries, routes };
}

/** What the datapath installed for one remote node (a superset while an update is being applied). */
export interface RemoteNodeRecord {
  node: RemoteNode;
  /** ipcache prefixes (CIDRs). */
  prefixes: string[];
  routes: PlannedRoute[];
}

/** The datapath's persisted state: its own addresses and every remote node it installed. */
export interface DatapathState {
  version: 1;
  local?: { nodeIP: string; routerIP: string };
  nodes: Record<string, RemoteNodeRecord>;
}

export function emptyState(): DatapathState {
  return { version: 1, nodes: {} };
}

/** Reads the state file; a missing file is an empty state, an unreadable one an error (never silently dropped). */
export function readState(file: string): DatapathState {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
    throw new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Cannot read datapath state "${file}": ${String(err)}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Cannot parse datapath state "${file}": ${String(err)}`, { cause: err });
  }
  const s = parsed as Partial<DatapathState> | null;
  if (!s || s.version !== 1 || typeof s.nodes !== 'object' || s.nodes === null) {
    throw new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Cannot use datapath state "${file}": not a version 1 state file`);
  }
  return { version: 1, nodes: s.nodes, ...(s.local ? { local: s.local } : {}) };
}

/** Writes the state file atomically (temp file + rename), so a crash never leaves half a file. */
export function writeState(file: string, state: DatapathState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify(state, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Routes by destination: a later route of the same dst replaces an earlier one (as `ip route replace`). */
export function mergeRoutes(a: readonly PlannedRoute[], b: readonly PlannedRoute[]): PlannedRoute[] {
  const byDst = new Map<string, PlannedRoute>();
  for (const r of [...a, ...b]) byDst.set(r.dst, r);
  return [...byDst.values()];
}
