// Pod interface plumbing: the veth pair, the pod's /32 address and its routes via the node's router.
import fs from 'node:fs';
import { KernelError } from '../kernel/errors.js';
import { Netlink, type LinkInfo } from '../kernel/netlink/index.js';
import { Netns } from '../kernel/netns/index.js';
import { randomMac } from '../util/ip.js';
import { DatapathError } from './errors.js';

export interface PodInterfaceSpec {
  netnsPath: string;
  /** An already opened handle of netnsPath (callers open it first to fail early); else opened here. */
  netns?: Netns;
  /** Namespace of the host end; default: the calling thread's (the agent runs in the node's namespace). */
  hostNetns?: Netns;
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

/** The thread's own namespace: where the agent (and the node's interfaces) live. */
const THREAD_NS = '/proc/thread-self/ns/net';

/** Opens a pod's namespace; failure is TENDRIL_ERR_DATAPATH_NETNS naming the path (cause: the KernelError). */
export function openPodNetns(netnsPath: string): Netns {
  try {
    return Netns.open(netnsPath);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new DatapathError('TENDRIL_ERR_DATAPATH_NETNS', why.startsWith('Cannot open') ? why : `Cannot open network namespace "${netnsPath}": ${why}`, {
      cause: err,
    });
  }
}

/** True when `ns` is the calling thread's own namespace (the node's, for the agent). */
export function isOwnNetns(ns: Netns): boolean {
  return ns.inode() === fs.statSync(THREAD_NS).ino;
}

/**
 * Refuses the node's own namespace as a pod's: a pod interface there would be the node's, and removing one
 * would take a node interface down (e.g. CNI_NETNS=/proc/1/ns/net with CNI_IFNAME=eth0).
 */
export function assertPodNetns(ns: Netns): void {
  if (isOwnNetns(ns)) {
    throw new DatapathError(
      'TENDRIL_ERR_DATAPATH_NETNS',
      `Network namespace "${ns.path}" is the node's own namespace, not a pod's: refusing to wire or remove pod interfaces there`,
    );
  }
}

/**
 * Creates the veth pair with its peer born inside the pod netns as podIfName (it is never visible in the
 * node's namespace), explicit random locally administered MACs on both ends (so udev's MACAddressPolicy
 * cannot change them after we report them), and configures the pod side: lo up, ip/32, a link-scope
 * route to the router and the default route via it. A host end of the same name, the remains of an
 * interrupted wiring of this very attachment, is deleted first. On any failure the veth is deleted again.
 * The kernel's slow steps (deleting a stale veth, creating the pair) run off the event loop.
 */
export async function createPodInterface(spec: PodInterfaceSpec): Promise<PodInterface> {
  const w = openWiring(spec);
  try {
    // Deleting a veth waits out RCU grace periods: off the event loop, so other pods' calls go on meanwhile.
    if (w.host.getLink(spec.hostIfName)) await w.host.deleteLinkAsync(spec.hostIfName);
    preflight(w, spec);
    // The pod end is born with IPv6 disabled (see configure()).
    w.ns.run(() => writeIPv6Sysctl('default', true));
    await w.host.createVethAsync(vethSpec(w, spec));
    w.created = true;
    return configure(w, spec);
  } catch (err) {
    throw undoWiring(w, spec, err);
  } finally {
    closeWiring(w, spec);
  }
}

/** createPodInterface() without the stale-link cleanup, synchronous (for callers that know the name is free). */
export function wirePodInterface(spec: PodInterfaceSpec): PodInterface {
  const w = openWiring(spec);
  try {
    preflight(w, spec);
    w.host.createVeth(vethSpec(w, spec));
    w.created = true;
    return configure(w, spec);
  } catch (err) {
    throw undoWiring(w, spec, err);
  } finally {
    closeWiring(w, spec);
  }
}

interface Wiring {
  ns: Netns;
  host: Netlink;
  pod: Netlink;
  /** The veth exists: a failure from here on deletes it again. */
  created: boolean;
}

function openWiring(spec: PodInterfaceSpec): Wiring {
  const ns = spec.netns ?? openPodNetns(spec.netnsPath);
  let host: Netlink | undefined;
  try {
    host = spec.hostNetns ? Netlink.openIn(spec.hostNetns) : Netlink.open();
    return { ns, host, pod: Netlink.openIn(ns), created: false };
  } catch (err) {
    host?.close();
    if (!spec.netns) ns.close();
    throw err;
  }
}

function closeWiring(w: Wiring, spec: PodInterfaceSpec): void {
  w.pod.close();
  w.host.close();
  if (!spec.netns) w.ns.close();
}

/** Refuses a sandbox that has the interface name taken or is routed by another attachment, before anything is created. */
function preflight(w: Wiring, spec: PodInterfaceSpec): void {
  if (w.pod.getLink(spec.podIfName)) {
    throw new DatapathError(
      'TENDRIL_ERR_DATAPATH_SANDBOX_TAKEN',
      `Cannot create "${spec.podIfName}" in "${spec.netnsPath}": the namespace already has a link of that name`,
    );
  }
  // A default route means another interface already routes this sandbox: a second one would fight it for
  // the default route (EEXIST half-way through).
  const other = w.pod.listRoutes().find((r) => r.dst === '0.0.0.0/0');
  if (other) {
    const dev = other.ifindex === undefined ? undefined : w.pod.getLink(other.ifindex)?.name;
    throw new DatapathError(
      'TENDRIL_ERR_DATAPATH_SANDBOX_TAKEN',
      `Cannot add "${spec.podIfName}" to "${spec.netnsPath}": the namespace already has a default route` +
        `${other.gateway ? ` via ${other.gateway}` : ''}${dev ? ` dev ${dev}` : ''}, so another attachment owns it`,
    );
  }
}

function vethSpec(w: Wiring, spec: PodInterfaceSpec): Parameters<Netlink['createVeth']>[0] {
  return { name: spec.hostIfName, peerName: spec.podIfName, peerNetns: w.ns, mtu: spec.mtu, mac: randomMac(), peerMac: randomMac() };
}

/**
 * The pod side's address and routes, both ends up. The cluster is IPv4-only: without IPv6 off the pod's kernel sends
 * IPv6 (router/neighbour solicitations) that the datapath can only drop as "Unsupported L3 protocol". IPv6 is kept off
 * without a per-interface disable_ipv6 write: that write takes RTNL with a trylock and restarts the syscall until it
 * gets it, so on a node starting many pods (RTNL contended by the runtime's sandboxes, other veths, tcx attaches) it
 * spins, for seconds. The pod end was born disabled (the pod namespace's "default", set before the veth was made: a
 * write that takes no RTNL); the host end gets no IPv6 link-local address (addrgenmode none, in its "up" request), so
 * it sends no IPv6 of its own.
 */
function configure(w: Wiring, spec: PodInterfaceSpec): PodInterface {
  const { hostIfName, podIfName, ip, routerIP } = spec;
  const { ns, host, pod } = w;
  const podLink = mustGet(pod, podIfName, `"${spec.netnsPath}"`);
  // A kernel that did not take the default over (or a caller that made the veth itself): the classic write.
  if (ns.run(() => readIPv6Sysctl(podIfName)) === '0') ns.run(() => disableIPv6(podIfName));
  // lo is ifindex 1 in every network namespace (LOOPBACK_IFINDEX): no lookup.
  pod.setLink(LOOPBACK_IFINDEX, { up: true });
  pod.addAddress(podLink.index, `${ip}/32`);
  // Routes need the link up (ENETDOWN otherwise).
  pod.setLink(podLink.index, { up: true });
  pod.addRoute({ dst: `${routerIP}/32`, ifindex: podLink.index, scope: 'link' });
  pod.addRoute({ dst: '0.0.0.0/0', gateway: routerIP, ifindex: podLink.index });
  // Looked up once, set by index (by name, setLink() would look it up again).
  const hostLink = mustGet(host, hostIfName, 'the node namespace');
  host.setLink(hostLink.index, { up: true, noIPv6LinkLocal: true });
  w.created = false;
  return { hostIfindex: hostLink.index, hostMac: hostLink.mac, podMac: podLink.mac, podIfindex: podLink.index };
}

/** The loopback device's ifindex, the same in every network namespace (linux/netdevice.h). */
const LOOPBACK_IFINDEX = 1;

/** The error to throw after a failed wiring, once the veth it created (if any) is deleted again. */
function undoWiring(w: Wiring, spec: PodInterfaceSpec, err: unknown): unknown {
  if (!w.created) return err;
  try {
    w.host.deleteLink(spec.hostIfName);
  } catch (undoErr) {
    const why = undoErr instanceof Error ? undoErr.message : String(undoErr);
    return new DatapathError(
      'TENDRIL_ERR_DATAPATH_POD_INTERFACE',
      `${err instanceof Error ? err.message : String(err)} (and deleting veth "${spec.hostIfName}" again failed: ${why})`,
      { cause: err },
    );
  }
  return err;
}

/** Writes disable_ipv6 of `ifname` (or "default"/"all") in the calling thread's namespace; no IPv6 is no error. */
function writeIPv6Sysctl(ifname: string, disabled: boolean): void {
  try {
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, disabled ? '1' : '0');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** disable_ipv6 of `ifname` in the calling thread's namespace ('1', '0'), undefined without IPv6. */
function readIPv6Sysctl(ifname: string): string | undefined {
  try {
    return fs.readFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
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
  if (!link) throw new DatapathError('TENDRIL_ERR_DATAPATH_POD_INTERFACE', `Cannot find "${name}" in ${where} right after creating it`);
  return link;
}

/** True when opening the namespace failed because it no longer exists (file gone, or no nsfs mount left). */
function netnsGone(err: unknown): boolean {
  const k = err instanceof DatapathError && err.cause instanceof KernelError ? err.cause : err;
  if (!(k instanceof KernelError)) return false;
  return k.is('ENOENT') || (k.errno === undefined && /not a network namespace/.test(k.message));
}

/**
 * Deletes the pod's veth. Idempotent: a missing netns, a missing link or neither given is success.
 * The host end is deleted by name in the node's namespace (this takes the pod end with it); the pod end is
 * deleted too in case the host end was already gone — never in the node's own namespace, whose interfaces
 * are not a pod's (a DEL naming it removes only the host end).
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
    if (isOwnNetns(ns)) return;
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

/** Deletes the host ends named `lxc…` that `keep` does not list (veths of attachments that never finished). */
export async function removeStrayPodInterfaces(keep: ReadonlySet<string>, prefix = 'lxc'): Promise<string[]> {
  const host = Netlink.open();
  const removed: string[] = [];
  try {
    for (const l of host.listLinks()) {
      if (!l.name.startsWith(prefix) || keep.has(l.name) || l.kind !== 'veth') continue;
      if (await host.deleteLinkAsync(l.name)) removed.push(l.name);
    }
  } finally {
    host.close();
  }
  return removed;
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
    throw new DatapathError('TENDRIL_ERR_DATAPATH_POD_INTERFACE', `CHECK failed for "${c.podIfName}" in "${c.netnsPath}": ${problems.join('; ')}`);
  }
}
