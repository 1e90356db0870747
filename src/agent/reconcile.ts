// After a restart: what an ADD interrupted by the agent's death left behind (an address, a map entry, a veth)
// is reconciled against the endpoints that finished, so nothing leaks for good.
import path from 'node:path';
import { interfaceName, removeStrayPodInterfaces, type NodeDatapath } from '../datapath/index.js';
import type { Logger } from '../util/log.js';
import { savedEndpoints, type EndpointManager } from './endpoints.js';
import type { NodeIpam } from './ipam.js';

/** IPAM owners that are the node's own and never a pod's. */
const NODE_OWNERS = new Set(['router', 'health']);

export interface Leftovers {
  /** Addresses released: allocated, but no finished endpoint holds them. */
  ips: string[];
  /** Addresses re-recorded: a restored endpoint holds them, but the IPAM state had lost them. */
  readopted: string[];
  /** Endpoint map entries removed: written by an ADD whose endpoint was never saved. */
  mapEntries: string[];
  /** Host-side veths deleted: created by an ADD whose endpoint was never saved. */
  interfaces: string[];
}

/**
 * Call once the saved endpoints are restored and before any ADD runs. Every IPAM allocation that is neither the
 * node's own nor a restored endpoint's is released, every restored endpoint's address is allocated (an address allocated through the API without an endpoint
 * does not survive a restart either, as in Cilium); every tendril_lxc entry and lxc veth that no restored
 * endpoint owns is removed. `keepInterfaces` names host devices that are not endpoints' (the health device).
 */
export async function reconcileLeftovers(
  o: { ipam: NodeIpam; endpoints: EndpointManager; dp: NodeDatapath; log: Logger; keepInterfaces: string[] },
): Promise<Leftovers> {
  const eps = o.endpoints.list();
  const epIps = new Set(eps.map((e) => e.ip));
  const ips = o.ipam.releaseUnless((a) => NODE_OWNERS.has(a.owner) || epIps.has(a.ip)).map((a) => a.ip);
  // The other way round too: an address a running pod holds is never handed out again.
  const readopted: string[] = [];
  for (const e of eps) {
    if (o.ipam.get(e.ip)) continue;
    const owner = e.kind === 'health' ? 'health' : `${e.namespace}/${e.podName}`;
    o.ipam.allocate(e.ip, owner, e.kind === 'pod' ? { containerId: e.containerId, ifname: e.ifname } : undefined);
    readopted.push(e.ip);
  }

  const known = new Set(eps.map((e) => `${e.ip}@${e.hostIfindex}`));
  const mapEntries: string[] = [];
  for (const entry of o.dp.dumpEndpoints()) {
    // ifindex 0: the node's own addresses (ENDPOINT_F_HOST entries), no pod's.
    if (entry.ifindex === 0 || known.has(`${entry.ip4}@${entry.ifindex}`)) continue;
    const name = interfaceName(entry.ifindex) ?? '';
    o.dp.removeEndpoint({ ip: entry.ip4, hostIfName: name, hostIfindex: entry.ifindex, id: entry.lxcId });
    mapEntries.push(entry.ip4);
  }

  const keep = new Set([...eps.map((e) => e.hostIfName), ...o.keepInterfaces]);
  const interfaces = await removeStrayPodInterfaces(keep);

  if (ips.length + readopted.length + mapEntries.length + interfaces.length > 0) {
    o.log.warn({ ips, readopted, mapEntries, interfaces }, 'reconciled what interrupted CNI ADDs left behind');
  }
  return { ips, readopted, mapEntries, interfaces };
}

/** True when an earlier run saved pod endpoints in `stateDir` (they keep running on the pinned datapath). */
export function hasSavedPods(stateDir: string): boolean {
  try {
    return savedEndpoints(path.join(stateDir, 'endpoints.json')).some((e) => e.kind === 'pod');
  } catch {
    return false;
  }
}
