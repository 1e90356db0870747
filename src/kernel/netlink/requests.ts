// Pure builders of the rtnetlink requests Tendril sends (no I/O, so unit tests can check exact bytes).
import * as K from './constants.js';
import type { Request } from './message.js';
import { encodeIfAddrMsg, encodeIfInfoMsg, encodeNdMsg, encodeRtMsg, encodeTcMsg } from './headers.js';
import {
  attrBe16,
  attrIPv4,
  attrMac,
  attrNested,
  attrStr,
  attrStrNoNul,
  attrU32,
  attrU8,
} from './attrs.js';
import { parseIPv4 } from '../../util/ip.js';
import type { Direction, Scope } from './types.js';

const CREATE_EXCL = K.NLM_F_CREATE | K.NLM_F_EXCL;

/** "10.1.2.3/24" -> address and prefix length; host bits are kept (an interface address has them). */
export function parseAddrPrefix(text: string): { ip: string; prefixLen: number } {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m || Number(m[2]) > 32) throw new TypeError(`Invalid CIDR "${text}": expected IPv4/BITS`);
  parseIPv4(m[1]!);
  return { ip: m[1]!, prefixLen: Number(m[2]) };
}

export function scopeValue(s: Scope): number {
  return s === 'host' ? K.RT_SCOPE_HOST : s === 'link' ? K.RT_SCOPE_LINK : K.RT_SCOPE_UNIVERSE;
}

// ---- links ----

/** Dump of all links; statistics skipped to keep answers small. */
export function linkDumpRequest(): Request {
  return {
    type: K.RTM_GETLINK,
    flags: K.NLM_F_DUMP,
    body: Buffer.concat([encodeIfInfoMsg({ family: K.AF_UNSPEC }), attrU32(K.IFLA_EXT_MASK, K.RTEXT_FILTER_SKIP_STATS)]),
  };
}

function linkSelector(nameOrIndex: string | number, ...extra: Buffer[]): Buffer {
  return typeof nameOrIndex === 'number'
    ? Buffer.concat([encodeIfInfoMsg({ index: nameOrIndex }), ...extra])
    : Buffer.concat([encodeIfInfoMsg({}), ...extra, attrStr(K.IFLA_IFNAME, nameOrIndex)]);
}

export function linkGetRequest(nameOrIndex: string | number): Request {
  return {
    type: K.RTM_GETLINK,
    flags: 0,
    body: linkSelector(nameOrIndex, attrU32(K.IFLA_EXT_MASK, K.RTEXT_FILTER_SKIP_STATS)),
  };
}

export function linkDeleteRequest(nameOrIndex: string | number): Request {
  return { type: K.RTM_DELLINK, flags: 0, body: linkSelector(nameOrIndex) };
}

interface CommonLinkOptions {
  name: string;
  mtu?: number;
  mac?: string;
  txqueuelen?: number;
}

/** Attribute order follows iproute2 (`ip link add NAME mtu M address A`), so captures of it compare byte for byte. */
function commonLinkAttrs(o: Omit<CommonLinkOptions, 'name'> & { name?: string }): Buffer[] {
  const a: Buffer[] = [];
  if (o.mtu !== undefined) a.push(attrU32(K.IFLA_MTU, o.mtu));
  if (o.mac !== undefined) a.push(attrMac(K.IFLA_ADDRESS, o.mac));
  if (o.txqueuelen !== undefined) a.push(attrU32(K.IFLA_TXQLEN, o.txqueuelen));
  if (o.name !== undefined) a.push(attrStr(K.IFLA_IFNAME, checkIfName(o.name)));
  return a;
}

function newLinkRequest(o: CommonLinkOptions, kind: string, data?: Buffer): Request {
  const info = [attrStrNoNul(K.IFLA_INFO_KIND, kind)];
  if (data) info.push(data);
  return {
    type: K.RTM_NEWLINK,
    flags: CREATE_EXCL,
    body: Buffer.concat([encodeIfInfoMsg({}), ...commonLinkAttrs(o), attrNested(K.IFLA_LINKINFO, ...info)]),
  };
}

export interface VethRequestOptions extends CommonLinkOptions {
  peerName: string;
  /** fd of the namespace the peer is created in. */
  peerNsFd?: number;
  peerMac?: string;
}

/** veth pair; the peer is described by its own ifinfomsg + attributes inside VETH_INFO_PEER. */
export function vethRequest(o: VethRequestOptions): Request {
  const peer = [encodeIfInfoMsg({})];
  if (o.peerNsFd !== undefined) peer.push(attrU32(K.IFLA_NET_NS_FD, o.peerNsFd));
  peer.push(
    ...commonLinkAttrs({
      name: o.peerName,
      ...(o.mtu !== undefined ? { mtu: o.mtu } : {}),
      ...(o.peerMac !== undefined ? { mac: o.peerMac } : {}),
      ...(o.txqueuelen !== undefined ? { txqueuelen: o.txqueuelen } : {}),
    }),
  );
  return newLinkRequest(o, 'veth', attrNested(K.IFLA_INFO_DATA, attrNested(K.VETH_INFO_PEER, ...peer)));
}

export function bridgeRequest(o: { name: string; mtu?: number; mac?: string }): Request {
  return newLinkRequest(o, 'bridge');
}

export interface VxlanRequestOptions {
  name: string;
  vni?: number;
  port: number;
  external: true;
  learning?: false;
  mtu?: number;
}

/** Flow-based (collect-metadata) VXLAN device: the datapath sets VNI and remote per packet. */
export function vxlanRequest(o: VxlanRequestOptions): Request {
  const data: Buffer[] = [];
  if (o.vni !== undefined) data.push(attrU32(K.IFLA_VXLAN_ID, o.vni));
  if (o.external) data.push(attrU8(K.IFLA_VXLAN_COLLECT_METADATA, 1));
  if (o.learning === false) data.push(attrU8(K.IFLA_VXLAN_LEARNING, 0));
  data.push(attrBe16(K.IFLA_VXLAN_PORT, o.port));
  return newLinkRequest(o, 'vxlan', attrNested(K.IFLA_INFO_DATA, ...data));
}

export interface LinkChange {
  up?: boolean;
  /** IFF_NOARP: the link neither sends nor answers ARP. */
  noarp?: boolean;
  mtu?: number;
  mac?: string;
  name?: string;
  /** 0 removes the link from its master. */
  masterIndex?: number;
  /** fd of the namespace to move the link into. */
  nsFd?: number;
  /** IPv6 address generation off (addrgenmode none): the link gets no IPv6 link-local address, so sends no ND/RS. */
  noIPv6LinkLocal?: true;
}

/** Changes of an existing link, in one RTM_NEWLINK (the kernel moves namespace first, renames, then sets flags). */
export function linkSetRequest(index: number, o: LinkChange): Request {
  let flags = 0;
  let change = 0;
  if (o.up !== undefined) {
    change |= K.IFF_UP;
    if (o.up) flags |= K.IFF_UP;
  }
  if (o.noarp !== undefined) {
    change |= K.IFF_NOARP;
    if (o.noarp) flags |= K.IFF_NOARP;
  }
  const a: Buffer[] = [encodeIfInfoMsg({ index, flags, change })];
  if (o.nsFd !== undefined) a.push(attrU32(K.IFLA_NET_NS_FD, o.nsFd));
  a.push(
    ...commonLinkAttrs({
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.mtu !== undefined ? { mtu: o.mtu } : {}),
      ...(o.mac !== undefined ? { mac: o.mac } : {}),
    }),
  );
  if (o.masterIndex !== undefined) a.push(attrU32(K.IFLA_MASTER, o.masterIndex));
  if (o.noIPv6LinkLocal) a.push(attrNested(K.IFLA_AF_SPEC, attrNested(K.AF_INET6, attrU8(K.IFLA_INET6_ADDR_GEN_MODE, K.IN6_ADDR_GEN_MODE_NONE))));
  return { type: K.RTM_NEWLINK, flags: 0, body: Buffer.concat(a) };
}

function checkIfName(name: string): string {
  // IFNAMSIZ is 16 including the NUL; the kernel's answer (EINVAL) would not say why.
  if (name.length === 0 || Buffer.byteLength(name) > 15 || /[\s/:]/.test(name)) {
    throw new TypeError(`Invalid interface name "${name}": 1-15 bytes without whitespace, "/" or ":"`);
  }
  return name;
}

// ---- addresses ----

export function addrRequest(
  op: 'add' | 'delete',
  ifindex: number,
  cidr: string,
  o: { scope?: Scope; noprefixroute?: boolean } = {},
): Request {
  const { ip, prefixLen } = parseAddrPrefix(cidr);
  const a = [
    encodeIfAddrMsg({ family: K.AF_INET, prefixLen, scope: scopeValue(o.scope ?? 'universe'), index: ifindex }),
    attrIPv4(K.IFA_LOCAL, ip),
    attrIPv4(K.IFA_ADDRESS, ip),
  ];
  if (o.noprefixroute) a.push(attrU32(K.IFA_FLAGS, K.IFA_F_NOPREFIXROUTE));
  return {
    type: op === 'add' ? K.RTM_NEWADDR : K.RTM_DELADDR,
    flags: op === 'add' ? CREATE_EXCL : 0,
    body: Buffer.concat(a),
  };
}

export function addrDumpRequest(): Request {
  return { type: K.RTM_GETADDR, flags: K.NLM_F_DUMP, body: encodeIfAddrMsg({ family: K.AF_INET }) };
}

// ---- routes ----

export interface RouteRequestOptions {
  dst: string;
  gateway?: string;
  ifindex?: number;
  scope?: Scope;
  src?: string;
  mtu?: number;
  table?: number;
  replace?: boolean;
  onlink?: boolean;
}

/** Tables above 255 only fit in RTA_TABLE (rtm_table is a byte), as iproute2 does. */
function tableFields(table: number): { rtm: number; attr?: Buffer } {
  return table < 256 ? { rtm: table } : { rtm: K.RT_TABLE_UNSPEC, attr: attrU32(K.RTA_TABLE, table) };
}

export function routeAddRequest(r: RouteRequestOptions): Request {
  const { ip, prefixLen } = parseAddrPrefix(r.dst);
  const table = tableFields(r.table ?? K.RT_TABLE_MAIN);
  // Like `ip route add`: a route without gateway is scope link unless told otherwise.
  const scope = r.scope ?? (r.gateway === undefined ? 'link' : 'universe');
  const a = [
    encodeRtMsg({
      family: K.AF_INET,
      dstLen: prefixLen,
      table: table.rtm,
      protocol: K.RTPROT_BOOT,
      scope: scopeValue(scope),
      type: K.RTN_UNICAST,
      flags: r.onlink ? K.RTNH_F_ONLINK : 0,
    }),
  ];
  if (table.attr) a.push(table.attr);
  if (prefixLen > 0) a.push(attrIPv4(K.RTA_DST, ip));
  if (r.gateway !== undefined) a.push(attrIPv4(K.RTA_GATEWAY, r.gateway));
  if (r.ifindex !== undefined) a.push(attrU32(K.RTA_OIF, r.ifindex));
  if (r.src !== undefined) a.push(attrIPv4(K.RTA_PREFSRC, r.src));
  if (r.mtu !== undefined) a.push(attrNested(K.RTA_METRICS, attrU32(K.RTAX_MTU, r.mtu)));
  return {
    type: K.RTM_NEWROUTE,
    flags: K.NLM_F_CREATE | (r.replace ? K.NLM_F_REPLACE : K.NLM_F_EXCL),
    body: Buffer.concat(a),
  };
}

/** Scope "nowhere" and type/protocol 0 match any route with this prefix (plus gateway/oif when given). */
export function routeDeleteRequest(r: { dst: string; gateway?: string; ifindex?: number; table?: number }): Request {
  const { ip, prefixLen } = parseAddrPrefix(r.dst);
  const table = tableFields(r.table ?? K.RT_TABLE_MAIN);
  const a = [encodeRtMsg({ family: K.AF_INET, dstLen: prefixLen, table: table.rtm, scope: K.RT_SCOPE_NOWHERE })];
  if (table.attr) a.push(table.attr);
  if (prefixLen > 0) a.push(attrIPv4(K.RTA_DST, ip));
  if (r.gateway !== undefined) a.push(attrIPv4(K.RTA_GATEWAY, r.gateway));
  if (r.ifindex !== undefined) a.push(attrU32(K.RTA_OIF, r.ifindex));
  return { type: K.RTM_DELROUTE, flags: 0, body: Buffer.concat(a) };
}

export function routeDumpRequest(): Request {
  return { type: K.RTM_GETROUTE, flags: K.NLM_F_DUMP, body: encodeRtMsg({ family: K.AF_INET }) };
}

// ---- neighbours ----

export function neighAddRequest(n: {
  ifindex: number;
  ip: string;
  mac: string;
  permanent?: boolean;
  replace?: boolean;
}): Request {
  return {
    type: K.RTM_NEWNEIGH,
    flags: K.NLM_F_CREATE | (n.replace ? K.NLM_F_REPLACE : K.NLM_F_EXCL),
    body: Buffer.concat([
      encodeNdMsg({
        family: K.AF_INET,
        ifindex: n.ifindex,
        state: n.permanent === false ? K.NUD_REACHABLE : K.NUD_PERMANENT,
      }),
      attrIPv4(K.NDA_DST, n.ip),
      attrMac(K.NDA_LLADDR, n.mac),
    ]),
  };
}

export function neighDeleteRequest(n: { ifindex: number; ip: string }): Request {
  return {
    type: K.RTM_DELNEIGH,
    flags: 0,
    body: Buffer.concat([encodeNdMsg({ family: K.AF_INET, ifindex: n.ifindex }), attrIPv4(K.NDA_DST, n.ip)]),
  };
}

export function neighDumpRequest(): Request {
  return { type: K.RTM_GETNEIGH, flags: K.NLM_F_DUMP, body: encodeNdMsg({ family: K.AF_INET }) };
}

// ---- traffic control ----

/** TC_H_MAKE(TC_H_CLSACT, 0): the handle `tc qdisc add dev X clsact` gets. */
export const CLSACT_HANDLE = 0xffff0000;

export function filterParent(direction: Direction): number {
  return (((K.TC_H_CLSACT & 0xffff0000) | (direction === 'ingress' ? K.TC_H_MIN_INGRESS : K.TC_H_MIN_EGRESS)) >>> 0);
}

/** tcm_info of a filter: priority in the upper half, protocol ETH_P_ALL in network order in the lower. */
function filterInfo(prio: number): number {
  return ((prio << 16) | ((K.ETH_P_ALL & 0xff) << 8) | (K.ETH_P_ALL >> 8)) >>> 0;
}

export function clsactRequest(ifindex: number): Request {
  return {
    type: K.RTM_NEWQDISC,
    flags: CREATE_EXCL,
    body: Buffer.concat([
      encodeTcMsg({ family: K.AF_UNSPEC, ifindex, handle: CLSACT_HANDLE, parent: K.TC_H_CLSACT }),
      attrStr(K.TCA_KIND, 'clsact'),
    ]),
  };
}

export function qdiscDumpRequest(): Request {
  return { type: K.RTM_GETQDISC, flags: K.NLM_F_DUMP, body: encodeTcMsg({}) };
}

export const DEFAULT_FILTER_PRIO = 1;
export const DEFAULT_FILTER_HANDLE = 1;

/** cls_bpf in direct-action mode; create-or-replace so re-attaching swaps the program atomically. */
export function bpfFilterRequest(o: {
  ifindex: number;
  direction: Direction;
  progFd: number;
  name: string;
  prio?: number;
  handle?: number;
}): Request {
  return {
    type: K.RTM_NEWTFILTER,
    flags: K.NLM_F_CREATE | K.NLM_F_REPLACE,
    body: Buffer.concat([
      encodeTcMsg({
        family: K.AF_UNSPEC,
        ifindex: o.ifindex,
        handle: o.handle ?? DEFAULT_FILTER_HANDLE,
        parent: filterParent(o.direction),
        info: filterInfo(o.prio ?? DEFAULT_FILTER_PRIO),
      }),
      attrStr(K.TCA_KIND, 'bpf'),
      attrNested(
        K.TCA_OPTIONS,
        attrU32(K.TCA_BPF_FD, o.progFd),
        attrStr(K.TCA_BPF_NAME, o.name),
        attrU32(K.TCA_BPF_FLAGS, K.TCA_BPF_FLAG_ACT_DIRECT),
      ),
    ]),
  };
}

export function bpfFilterDeleteRequest(o: {
  ifindex: number;
  direction: Direction;
  prio?: number;
  handle?: number;
}): Request {
  return {
    type: K.RTM_DELTFILTER,
    flags: 0,
    body: Buffer.concat([
      encodeTcMsg({
        family: K.AF_UNSPEC,
        ifindex: o.ifindex,
        handle: o.handle ?? DEFAULT_FILTER_HANDLE,
        parent: filterParent(o.direction),
        info: filterInfo(o.prio ?? DEFAULT_FILTER_PRIO),
      }),
      attrStr(K.TCA_KIND, 'bpf'),
    ]),
  };
}

export function filterDumpRequest(ifindex: number, direction: Direction): Request {
  return {
    type: K.RTM_GETTFILTER,
    flags: K.NLM_F_DUMP,
    body: encodeTcMsg({ family: K.AF_UNSPEC, ifindex, parent: filterParent(direction) }),
  };
}
