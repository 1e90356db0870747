// The operator's decisions for egress gateway policies, as a pure function of policies, nodes and the pool state:
// each policy's gateway node (the one it has while healthy, else the first healthy node by name its nodeSelector picks) and egress IP (given, or from
// --egress-ip-pool, never one address twice).
import type { NodeSpec } from '../store/index.js';
import { cidrContains, cidrSize, formatIPv4, parseCidr, parseIPv4 } from '../util/ip.js';
import { EgressError } from './errors.js';
import { labelsMatch, type EgressGatewayPolicySpec, type EgressGatewayPolicyStatus } from './policy.js';

/** IPAMState resource holding the pool's assignments, written by the operator only. */
export const EGRESS_POOL_STATE = 'egress-ip-pool';
export const LABEL_HOSTNAME = 'kubernetes.io/hostname';

export interface EgressPoolState {
  cidr: string;
  /** policy name -> egress IP allocated to it. */
  assigned: Record<string, string>;
}

/** Checks --egress-ip-pool: an IPv4 CIDR with room for at least one address. */
export function parseEgressPool(text: string): string {
  let c;
  try {
    c = parseCidr(text);
  } catch (err) {
    throw new EgressError('TENDRIL_ERR_EGRESS_POOL_INVALID', `Invalid --egress-ip-pool ${JSON.stringify(text)}: ${(err as Error).message}`);
  }
  if (c.bits > 32 || c.bits < 8) throw new EgressError('TENDRIL_ERR_EGRESS_POOL_INVALID', `Invalid --egress-ip-pool ${JSON.stringify(text)}: expected a prefix /8 to /32`);
  return text;
}

/** The labels a node's selector sees: kubernetes.io/hostname=<name>, then the Node's own (when it has any). */
export function nodeLabels(n: NodeSpec): Record<string, string> {
  const own = (n as NodeSpec & { labels?: Record<string, string> }).labels ?? {};
  return { [LABEL_HOSTNAME]: n.name, ...own };
}

/** Healthy: the agent published its underlay address and router IP (it is up). */
export function nodeHealthy(n: NodeSpec): boolean {
  return n.addresses.length > 0 && n.routerIP !== undefined;
}

export interface EgressPlan {
  status: Map<string, EgressGatewayPolicyStatus>;
  pool: EgressPoolState | undefined;
}

/** Addresses of a pool a policy may get: not the network nor the broadcast address of prefixes up to /30. */
function* candidates(cidr: string): Generator<string> {
  const c = parseCidr(cidr);
  const size = cidrSize(c);
  const skipEnds = c.bits <= 30;
  for (let i = skipEnds ? 1 : 0; i < (skipEnds ? size - 1 : size); i++) yield formatIPv4((c.base + i) >>> 0);
}

/**
 * Plans every policy's status. Assignments of the pool survive (a policy keeps its address), those of deleted
 * policies and of policies that now name their own egressIP are freed; a given egressIP inside the pool is
 * reserved for its policy, and two policies giving the same one is a problem for the second (by name).
 */
export function planEgress(policies: readonly EgressGatewayPolicySpec[], nodes: readonly NodeSpec[], pool: EgressPoolState | undefined, current?: ReadonlyMap<string, string>): EgressPlan {
  const sorted = [...policies].sort((a, b) => a.name.localeCompare(b.name));
  const byName = new Set(sorted.map((p) => p.name));
  const healthy = [...nodes].filter(nodeHealthy).sort((a, b) => a.name.localeCompare(b.name));
  const status = new Map<string, EgressGatewayPolicyStatus>();
  const next: EgressPoolState | undefined = pool ? { cidr: pool.cidr, assigned: {} } : undefined;
  const used = new Map<string, string>(); // ip -> policy
  // Given addresses first: they are not the pool's to hand out.
  for (const p of sorted) {
    const ip = p.egressGateway.egressIP;
    if (ip === undefined) continue;
    if (used.has(ip)) continue;
    used.set(ip, p.name);
  }
  if (pool && next) {
    const c = parseCidr(pool.cidr);
    for (const [name, ip] of Object.entries(pool.assigned).sort(([a], [b]) => a.localeCompare(b))) {
      const p = sorted.find((x) => x.name === name);
      if (!byName.has(name) || !p || p.egressGateway.egressIP !== undefined || used.has(ip) || !cidrContains(c, parseIPv4(ip))) continue;
      next.assigned[name] = ip;
      used.set(ip, name);
    }
  }
  const free = pool ? candidates(pool.cidr) : undefined;
  for (const p of sorted) {
    const st: EgressGatewayPolicyStatus = {};
    let ip = p.egressGateway.egressIP;
    if (ip !== undefined) {
      if (used.get(ip) !== p.name) st.problem = `egress IP ${ip} is policy "${used.get(ip)}"'s`;
    } else if (next) {
      ip = next.assigned[p.name];
      if (ip === undefined && free) {
        for (let r = free.next(); !r.done; r = free.next()) {
          if (used.has(r.value)) continue;
          ip = r.value;
          next.assigned[p.name] = ip;
          used.set(ip, p.name);
          break;
        }
        if (ip === undefined) st.problem = `no egress IP left in pool ${next.cidr}`;
      }
    } else {
      st.problem = 'no egressIP given and the operator has no --egress-ip-pool';
    }
    // The gateway stays where it is while that node is healthy and selected (a node coming back takes nothing over);
    // otherwise the first by name: failover is the same choice made without the node that went.
    const picks = (n: NodeSpec): boolean => labelsMatch(p.egressGateway.nodeSelector, nodeLabels(n));
    const gw = healthy.find((n) => n.name === current?.get(p.name) && picks(n)) ?? healthy.find(picks);
    if (!gw) st.problem ??= 'no healthy node matches egressGateway.nodeSelector';
    if (ip !== undefined && st.problem === undefined) st.egressIP = ip;
    if (gw && st.problem === undefined) {
      st.gatewayNode = gw.name;
      st.gatewayIP = gw.addresses[0]!;
    }
    status.set(p.name, st);
  }
  return { status, pool: next };
}
