// Pod interface plumbing: the veth pair, the pod's /32 address and its routes via the node's router.
import fs from 'node:fs';
import { KernelError } from '../kernel/errors.js';
import { Netlink, type LinkInfo } from '../kernel/netlink/index.js';
import { Netns } from '../kernel/netns/index.js';
import { randomMac } from '../util/ip.js';
import { CniCode, CniError } from './errors.js';
import { UndoList } from './undo.js';

export interface PodInterfaceSpec {
  netnsPath: string;
  /** An already opened handle of netnsPath (the handler opens it first to fail early); else opened here. */
  netns?: Netns;
  hostIfName: string;
  podIfName: string;
  /** Pod IPv4 without prefix; it is configured as /32. */
  ip: string;
  routerIP: string;
  mtu: number;
}

export interface PodInterface {
  hostIfindex: number;
  hostMac: string;
  podMac: string;
  podIfindex: number;
}

/** Opens the pod's namespace; failure is CNI code 8 naming the path. */
export function openPodNetns(netnsPath: string): Netns {
  try {
    return Netns.open(netnsPath);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new CniError(CniCode.INVALID_NETNS, why.startsWith('Cannot open') ? why : `Cannot open network namespace "${netnsPath}": ${why}`, {
      cause: err,
    });
  }
}

/**
 * Creates the veth pair with its peer born inside the pod netns as podIfName (it is never visible in the
 * node's namespace), explicit random locally administered MACs on both ends (so udev's MACAddressPolicy
 * cannot change them after we report them), and configures the pod side: lo up, ip/32, a link-scope
 * route to the router and the default route via it. On any failure the veth is deleted again.
 */
export async function createPodInterface(spec: PodInterfaceSpec): Promise<PodInterface> {
  const { hostIfName, podIfName, ip, routerIP, mtu } = spec;
  const ns = spec.netns ?? openPodNetns(spec.netnsPath);
  // Sockets and handles are closed either way; only the veth is a result and on the undo list.
  let host: Netlink | undefined;
  let pod: Netlink | undefined;
  const undo = new UndoList();
  try {
    host = Netlink.open();
    const nl = host;
    pod = Netlink.openIn(ns);
    if (pod.getLink(podIfName)) {
      throw new CniError(
        CniCode.INTERNAL,
        `Cannot create "${podIfName}" in "${spec.netnsPath}": the namespace already has a link of that name`,
      );
    }
    // The name derives from (container, ifname) and the caller found no endpoint for it, so a link of
    // this name is the remains of an interrupted ADD of this very attachment.
    // Deleting a veth waits out RCU grace periods: off the event loop, so other pods' calls go on meanwhile.
    if (host.getLink(hostIfName)) await host.deleteLinkAsync(hostIfName);

    host.createVeth({ name: hostIfName, peerName: podIfName, peerNetns: ns, mtu, mac: randomMac(), peerMac: randomMac() });
    undo.push(`veth "${hostIfName}"`, () => void nl.deleteLink(hostIfName));

    const podLink = mustGet(pod, podIfName, `"${spec.netnsPath}"`);
    // The cluster is IPv4-only: without this the pod's kernel sends IPv6 (router/neighbour solicitations) that
    // the datapath can only drop as "Unsupported L3 protocol". Done before the links go up.
    ns.run(() => disableIPv6(podIfName));
    disableIPv6(hostIfName);
    pod.setLink('lo', { up: true });
    pod.addAddress(podLink.index, `${ip}/32`);
    // Routes need the link up (ENETDOWN otherwise).
    pod.setLink(podLink.index, { up: true });
    pod.addRoute({ dst: `${routerIP}/32`, ifindex: podLink.index, scope: 'link' });
    pod.addRoute({ dst: '0.0.0.0/0', gateway: routerIP, ifindex: podLink.index });
    host.setLink(hostIfName, { up: true });
    const hostLink = mustGet(host, hostIfName, 'the node namespace');
    undo.commit();
    return { hostIfindex: hostLink.index, hostMac: hostLink.mac, podMac: podLink.mac, podIfindex: podLink.index };
  } catch (err) {
    const failures = await undo.unwind();
    if (failures.length === 0) throw err;
    const e = err instanceof CniError ? err : new CniError(CniCode.INTERNAL, err instanceof Error ? err.message : String(err), { cause: err });
    throw new CniError(e.code, e.message, {
      details: `undo failed: ${failures.map((f) => `${f.what}: ${f.error instanceof Error ? f.error.message : String(f.error)}`).join('; ')}`,
      cause: err,
    });
  } finally {
    pod?.close();
    host?.close();
    if (!spec.netns) ns.close();
  }
}

/** disable_ipv6 on an interface of the calling thread's namespace; a kernel without IPv6 has nothing to disable. */
function disableIPv6(ifname: string): void {
  try {
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, '1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function mustGet(nl: Netlink, name: string, where: string): LinkInfo {
  const link = nl.getLink(name);
  if (!link) throw new CniError(CniCode.INTERNAL, `Cannot find "${name}" in ${where} right after creating it`);
  return link;
}

/** True when opening the namespace failed because it no longer exists (file gone, or no nsfs mount left). */
function netnsGone(err: unknown): boolean {
  const k = err instanceof CniError && err.cause instanceof KernelError ? err.cause : err;
  if (!(k instanceof KernelError)) return false;
  return k.is('ENOENT') || (k.errno === undefined && /not a network namespace/.test(k.message));
}

/**
 * Deletes the pod's veth. Idempotent: a missing netns, a missing link or neither given is success.
 * The host end is deleted by name in the node's namespace (this takes the pod end with it); the pod end is
 * deleted too in case the host end was already gone.
 */
export async function removePodInterface(netnsPath: string, podIfName: string, hostIfName: string): Promise<void> {
  // Look before deleting: a lookup needs no privilege, so a DEL of something long gone changes nothing.
  const host = Netlink.open();
  try {
    // Deleting a veth waits out RCU grace periods: off the event loop, so other pods' calls go on meanwhile.
    if (host.getLink(hostIfName)) await host.deleteLinkAsync(hostIfName);
  } finally {
    host.close();
  }
  if (netnsPath === '') return;
  let ns: Netns;
  try {
    ns = openPodNetns(netnsPath);
  } catch (err) {
    if (netnsGone(err)) return;
    throw err;
  }
  try {
    const pod = Netlink.openIn(ns);
    try {
      if (pod.getLink(podIfName)) await pod.deleteLinkAsync(podIfName);
    } finally {
      pod.close();
    }
  } finally {
    ns.close();
  }
}

export interface PodInterfaceCheck {
  netnsPath: string;
  podIfName: string;
  hostIfName: string;
  ip: string;
  routerIP: string;
}

/** CHECK: both veth ends exist and are up, the pod has its /32 and both routes. Throws listing every problem. */
export async function checkPodInterface(c: PodInterfaceCheck): Promise<void> {
  const problems: string[] = [];
  const host = Netlink.open();
  let hostLink: LinkInfo | undefined;
  try {
    hostLink = host.getLink(c.hostIfName);
  } finally {
    host.close();
  }
  if (!hostLink) problems.push(`host interface "${c.hostIfName}" is missing`);
  else if (!hostLink.up) problems.push(`host interface "${c.hostIfName}" is down`);

  const ns = openPodNetns(c.netnsPath);
  try {
    const pod = Netlink.openIn(ns);
    try {
      const link = pod.getLink(c.podIfName);
      if (!link) {
        problems.push(`"${c.podIfName}" is missing`);
      } else {
        if (!link.up) problems.push(`"${c.podIfName}" is down`);
        if (hostLink?.peerIndex !== undefined && hostLink.peerIndex !== link.index) {
          problems.push(`"${c.podIfName}" is not the peer of "${c.hostIfName}"`);
        }
        const addrs = pod.listAddresses(link.index);
        if (!addrs.some((a) => a.address === c.ip && a.prefixLen === 32)) {
          problems.push(`"${c.podIfName}" lacks ${c.ip}/32 (has ${addrs.map((a) => `${a.address}/${a.prefixLen}`).join(', ') || 'none'})`);
        }
        const routes = pod.listRoutes().filter((r) => r.ifindex === link.index);
        if (!routes.some((r) => r.dst === `${c.routerIP}/32` && r.scope === 'link')) {
          problems.push(`route ${c.routerIP}/32 scope link dev ${c.podIfName} is missing`);
        }
        if (!routes.some((r) => r.dst === '0.0.0.0/0' && r.gateway === c.routerIP)) {
          problems.push(`default route via ${c.routerIP} dev ${c.podIfName} is missing`);
        }
      }
    } finally {
      pod.close();
    }
  } finally {
    ns.close();
  }
  if (problems.length > 0) {
    throw new CniError(CniCode.INTERNAL, `CHECK failed for "${c.podIfName}" in "${c.netnsPath}": ${problems.join('; ')}`);
  }
}
