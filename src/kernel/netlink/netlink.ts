// Netlink: rtnetlink operations on links, addresses, routes, neighbours and tc (clsact + cls_bpf).
import { KernelError, errnoText } from '../errors.js';
import type { Netns } from '../netns/index.js';
import { NetlinkRequestError, NetlinkSocket } from './socket.js';
import type { Message, Request } from './message.js';
import * as R from './requests.js';
import { decodeAddr, decodeBpfFilter, decodeLink, decodeNeighbor, decodeQdisc, decodeRoute } from './decode.js';
import { RT_TABLE_MAIN } from './constants.js';
import type { AddrInfo, BpfFilterInfo, Direction, LinkInfo, NeighborInfo, RouteInfo, Scope } from './types.js';

const ENODEV = 19;

export class Netlink {
  private readonly sock: NetlinkSocket;

  private constructor(sock: NetlinkSocket) {
    this.sock = sock;
  }

  /** A socket in the calling thread's current network namespace. */
  static open(): Netlink {
    return new Netlink(NetlinkSocket.open());
  }

  /** A socket created inside ns; it keeps working on ns from any namespace afterwards. */
  static openIn(ns: Netns): Netlink {
    return ns.run(() => Netlink.open());
  }

  close(): void {
    this.sock.close();
  }

  // ---- links ----

  listLinks(): LinkInfo[] {
    return this.dump('Cannot list links', R.linkDumpRequest()).map(decodeLink);
  }

  /** undefined when there is no such link. */
  getLink(nameOrIndex: string | number): LinkInfo | undefined {
    const msgs = this.call(`Cannot get link ${quote(nameOrIndex)}`, R.linkGetRequest(nameOrIndex), ['ENODEV']);
    const first = msgs?.[0];
    return first ? decodeLink(first) : undefined;
  }

  /** veth pair; with peerNetns the peer is created directly in that namespace (never visible here). */
  createVeth(o: {
    name: string;
    peerName: string;
    peerNetns?: Netns;
    mtu?: number;
    mac?: string;
    peerMac?: string;
    txqueuelen?: number;
  }): void {
    const { peerNetns, ...rest } = o;
    const req = R.vethRequest({ ...rest, ...(peerNetns ? { peerNsFd: peerNetns.fd } : {}) });
    this.call(`Cannot create veth "${o.name}"`, req);
  }

  /**
   * createVeth() without blocking the event loop: the kernel builds both ends and moves the peer into its
   * namespace under RTNL, several ms on a busy node, during which the agent serves other calls.
   * Do not use this socket for anything else until it settles.
   */
  async createVethAsync(o: Parameters<Netlink['createVeth']>[0]): Promise<void> {
    const { peerNetns, ...rest } = o;
    try {
      await this.sock.requestAsync(R.vethRequest({ ...rest, ...(peerNetns ? { peerNsFd: peerNetns.fd } : {}) }));
    } catch (err) {
      throw describe(`Cannot create veth "${o.name}"`, err);
    }
  }

  createBridge(o: { name: string; mtu?: number; mac?: string }): void {
    this.call(`Cannot create bridge "${o.name}"`, R.bridgeRequest(o));
  }

  /** Collect-metadata VXLAN device (VNI and remote chosen per packet by BPF). */
  createVxlan(o: { name: string; vni?: number; port: number; external: true; learning?: false; mtu?: number }): void {
    this.call(`Cannot create vxlan "${o.name}"`, R.vxlanRequest(o));
  }

  /** Applies all given changes in one request; masterIndex 0 detaches from the master. */
  setLink(
    nameOrIndex: string | number,
    o: { up?: boolean; noarp?: boolean; mtu?: number; mac?: string; name?: string; masterIndex?: number; netns?: Netns; noIPv6LinkLocal?: true },
  ): void {
    const what = `Cannot set link ${quote(nameOrIndex)}`;
    const index = this.resolveIndex(nameOrIndex, what);
    const { netns, ...rest } = o;
    this.call(what, R.linkSetRequest(index, { ...rest, ...(netns ? { nsFd: netns.fd } : {}) }));
  }

  /** false when the link did not exist. */
  deleteLink(nameOrIndex: string | number): boolean {
    return this.call(`Cannot delete link ${quote(nameOrIndex)}`, R.linkDeleteRequest(nameOrIndex), ['ENODEV']) !== undefined;
  }

  /**
   * deleteLink() without blocking the event loop: deleting a veth waits out RCU grace periods (tens of ms).
   * Do not use this socket for anything else until it settles.
   */
  async deleteLinkAsync(nameOrIndex: string | number): Promise<boolean> {
    try {
      await this.sock.requestAsync(R.linkDeleteRequest(nameOrIndex));
      return true;
    } catch (err) {
      if (err instanceof NetlinkRequestError && err.is('ENODEV')) return false;
      throw describe(`Cannot delete link ${quote(nameOrIndex)}`, err);
    }
  }

  // ---- addresses ----

  addAddress(ifindex: number, cidr: string, o: { scope?: Scope; noprefixroute?: boolean } = {}): void {
    this.call(`Cannot add address "${cidr}" to link ${ifindex}`, R.addrRequest('add', ifindex, cidr, o));
  }

  /** false when the address (or the link) was not there. */
  deleteAddress(ifindex: number, cidr: string): boolean {
    const what = `Cannot delete address "${cidr}" from link ${ifindex}`;
    return this.call(what, R.addrRequest('delete', ifindex, cidr), ['EADDRNOTAVAIL', 'ENODEV']) !== undefined;
  }

  /** IPv4 addresses, of one link when ifindex is given. */
  listAddresses(ifindex?: number): AddrInfo[] {
    const all = this.dump('Cannot list addresses', R.addrDumpRequest()).map(decodeAddr);
    return all.filter((a): a is AddrInfo => a !== undefined && (ifindex === undefined || a.index === ifindex));
  }

  // ---- routes ----

  /** A route without gateway defaults to scope link, as with `ip route add`. */
  addRoute(r: R.RouteRequestOptions): void {
    this.call(`Cannot add route ${routeText(r)}`, R.routeAddRequest(r));
  }

  /** false when no such route (or link) existed. */
  deleteRoute(r: { dst: string; gateway?: string; ifindex?: number; table?: number }): boolean {
    return this.call(`Cannot delete route ${routeText(r)}`, R.routeDeleteRequest(r), ['ESRCH', 'ENODEV']) !== undefined;
  }

  /** IPv4 routes of one table (default: main). */
  listRoutes(o: { table?: number } = {}): RouteInfo[] {
    const table = o.table ?? RT_TABLE_MAIN;
    const all = this.dump('Cannot list routes', R.routeDumpRequest()).map(decodeRoute);
    return all.filter((r): r is RouteInfo => r !== undefined && r.table === table);
  }

  // ---- neighbours ----

  /** Permanent unless permanent: false. */
  addNeighbor(n: { ifindex: number; ip: string; mac: string; permanent?: boolean; replace?: boolean }): void {
    this.call(`Cannot add neighbour "${n.ip}" on link ${n.ifindex}`, R.neighAddRequest(n));
  }

  /** false when the entry (or the link) was not there. */
  deleteNeighbor(n: { ifindex: number; ip: string }): boolean {
    const what = `Cannot delete neighbour "${n.ip}" on link ${n.ifindex}`;
    return this.call(what, R.neighDeleteRequest(n), ['ENOENT', 'ENODEV']) !== undefined;
  }

  listNeighbors(ifindex?: number): NeighborInfo[] {
    const all = this.dump('Cannot list neighbours', R.neighDumpRequest()).map(decodeNeighbor);
    return all.filter((n): n is NeighborInfo => n !== undefined && (ifindex === undefined || n.ifindex === ifindex));
  }

  // ---- tc: the fallback attach path for kernels without tcx ----

  hasClsact(ifindex: number): boolean {
    return this.dump(`Cannot list qdiscs of link ${ifindex}`, R.qdiscDumpRequest())
      .map(decodeQdisc)
      .some((q) => q.ifindex === ifindex && q.kind === 'clsact');
  }

  /** Adds the clsact qdisc; fine when it is there already. */
  ensureClsact(ifindex: number): void {
    const what = `Cannot add clsact qdisc to link ${ifindex}`;
    const done = this.call(what, R.clsactRequest(ifindex), ['EEXIST']);
    if (done === undefined && !this.hasClsact(ifindex)) {
      // EEXIST from another qdisc (e.g. "ingress") holding the slot.
      throw new KernelError('TENDRIL_ERR_NETLINK', `${what}: another qdisc occupies its place`, { errno: 17 });
    }
  }

  /** cls_bpf filter in direct-action mode; replaces a filter with the same prio/handle. Needs clsact. */
  attachBpfFilter(o: {
    ifindex: number;
    direction: Direction;
    progFd: number;
    name: string;
    prio?: number;
    handle?: number;
  }): void {
    this.call(`Cannot attach BPF filter "${o.name}" to ${o.direction} of link ${o.ifindex}`, R.bpfFilterRequest(o));
  }

  /**
   * false when there was no such filter (or no clsact, or no link). `clsact: true`: the caller made the link's clsact
   * (a filter it attached itself), so the check for it (a dump of every qdisc of the namespace, which grows with the
   * node's pods) is skipped, and EINVAL (no clsact after all) counts as no filter.
   */
  detachBpfFilter(o: { ifindex: number; direction: Direction; prio?: number; handle?: number; clsact?: true }): boolean {
    const what = `Cannot detach BPF filter from ${o.direction} of link ${o.ifindex}`;
    // Without clsact the kernel answers EINVAL ("Parent Qdisc doesn't exists"), which we cannot tell apart.
    if (o.clsact) return this.call(what, R.bpfFilterDeleteRequest(o), ['ENOENT', 'ENODEV', 'EINVAL']) !== undefined;
    if (!this.linkHasClsact(o.ifindex)) return false;
    return this.call(what, R.bpfFilterDeleteRequest(o), ['ENOENT', 'ENODEV']) !== undefined;
  }

  listBpfFilters(ifindex: number, direction: Direction): BpfFilterInfo[] {
    if (!this.linkHasClsact(ifindex)) return [];
    const msgs = this.dump(`Cannot list filters on ${direction} of link ${ifindex}`, R.filterDumpRequest(ifindex, direction));
    return msgs.map(decodeBpfFilter).filter((f): f is BpfFilterInfo => f !== undefined);
  }

  // ---- plumbing ----

  private linkHasClsact(ifindex: number): boolean {
    return this.getLink(ifindex) !== undefined && this.hasClsact(ifindex);
  }

  private resolveIndex(nameOrIndex: string | number, what: string): number {
    if (typeof nameOrIndex === 'number') return nameOrIndex;
    const link = this.getLink(nameOrIndex);
    if (!link) throw new KernelError('TENDRIL_ERR_NETLINK', `${what}: ${errnoText(ENODEV)}`, { errno: ENODEV });
    return link.index;
  }

  /**
   * Request with ack. Returns the answered messages, or undefined when the kernel refused with one of the
   * `absent` errno names (the "already gone / not there" cases callers turn into false or undefined).
   */
  private call(what: string, req: Request): Message[];
  private call(what: string, req: Request, absent: string[]): Message[] | undefined;
  private call(what: string, req: Request, absent: string[] = []): Message[] | undefined {
    try {
      return this.sock.request(req);
    } catch (err) {
      if (err instanceof NetlinkRequestError && absent.some((n) => err.is(n))) return undefined;
      throw describe(what, err);
    }
  }

  private dump(what: string, req: Request): Message[] {
    try {
      return this.sock.dump(req);
    } catch (err) {
      throw describe(what, err);
    }
  }
}

function describe(what: string, err: unknown): KernelError {
  if (err instanceof NetlinkRequestError) {
    return new KernelError('TENDRIL_ERR_NETLINK', `${what}: ${err.message}`, { errno: err.ack.errno, cause: err });
  }
  if (err instanceof KernelError) {
    return new KernelError(err.code, `${what}: ${err.message}`, {
      ...(err.errno !== undefined ? { errno: err.errno } : {}),
      cause: err,
    });
  }
  return new KernelError('TENDRIL_ERR_NETLINK', `${what}: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
  });
}

function quote(nameOrIndex: string | number): string {
  return typeof nameOrIndex === 'number' ? `${nameOrIndex}` : `"${nameOrIndex}"`;
}

function routeText(r: { dst: string; gateway?: string; ifindex?: number; table?: number }): string {
  let t = `"${r.dst}`;
  if (r.gateway !== undefined) t += ` via ${r.gateway}`;
  if (r.ifindex !== undefined) t += ` dev ${r.ifindex}`;
  if (r.table !== undefined) t += ` table ${r.table}`;
  return `${t}"`;
}
