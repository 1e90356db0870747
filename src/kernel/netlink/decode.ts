// Pure decoders of rtnetlink answers into Tendril's shapes (LinkInfo, AddrInfo, RouteInfo, ...).
import * as K from './constants.js';
import { Attrs } from './attrs.js';
import type { Message } from './message.js';
import { IFADDRMSG_LEN, IFINFOMSG_LEN, NDMSG_LEN, RTMSG_LEN, TCMSG_LEN } from './headers.js';
import { decodeIfAddrMsg, decodeIfInfoMsg, decodeNdMsg, decodeRtMsg, decodeTcMsg } from './headers.js';
import type { AddrInfo, BpfFilterInfo, LinkInfo, NeighborInfo, RouteInfo, Scope } from './types.js';

export function decodeLink(msg: Message): LinkInfo {
  const h = decodeIfInfoMsg(msg.payload);
  const a = Attrs.parse(msg.payload, IFINFOMSG_LEN);
  const info: LinkInfo = {
    index: h.index,
    name: a.str(K.IFLA_IFNAME) ?? '',
    mtu: a.u32(K.IFLA_MTU) ?? 0,
    mac: a.mac(K.IFLA_ADDRESS) ?? '',
    up: (h.flags & K.IFF_UP) !== 0,
    noarp: (h.flags & K.IFF_NOARP) !== 0,
  };
  const kind = a.nested(K.IFLA_LINKINFO)?.str(K.IFLA_INFO_KIND);
  if (kind !== undefined) info.kind = kind;
  const master = a.u32(K.IFLA_MASTER);
  if (master !== undefined && master !== 0) info.masterIndex = master;
  const link = a.u32(K.IFLA_LINK);
  // The kernel only sends IFLA_LINK when it names another device (possibly same index, other namespace).
  if (link !== undefined && link !== 0) info.peerIndex = link;
  const nsid = a.s32(K.IFLA_LINK_NETNSID);
  if (nsid !== undefined && nsid >= 0) info.linkNetnsId = nsid;
  return info;
}

/** IPv4 addresses only; other families give undefined. */
export function decodeAddr(msg: Message): AddrInfo | undefined {
  const h = decodeIfAddrMsg(msg.payload);
  if (h.family !== K.AF_INET) return undefined;
  const a = Attrs.parse(msg.payload, IFADDRMSG_LEN);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on point-to-point links.
  const address = a.ipv4(K.IFA_LOCAL) ?? a.ipv4(K.IFA_ADDRESS);
  if (address === undefined) return undefined;
  return { index: h.index, address, prefixLen: h.prefixLen, scope: h.scope };
}

export function scopeName(v: number): Scope {
  return v === K.RT_SCOPE_HOST ? 'host' : v === K.RT_SCOPE_LINK ? 'link' : 'universe';
}

export function decodeRoute(msg: Message): RouteInfo | undefined {
  const h = decodeRtMsg(msg.payload);
  if (h.family !== K.AF_INET) return undefined;
  const a = Attrs.parse(msg.payload, RTMSG_LEN);
  const route: RouteInfo = {
    dst: `${a.ipv4(K.RTA_DST) ?? '0.0.0.0'}/${h.dstLen}`,
    scope: scopeName(h.scope),
    table: a.u32(K.RTA_TABLE) ?? h.table,
    protocol: h.protocol,
  };
  const gateway = a.ipv4(K.RTA_GATEWAY);
  if (gateway !== undefined) route.gateway = gateway;
  const oif = a.u32(K.RTA_OIF);
  if (oif !== undefined) route.ifindex = oif;
  const src = a.ipv4(K.RTA_PREFSRC);
  if (src !== undefined) route.src = src;
  const mtu = a.nested(K.RTA_METRICS)?.u32(K.RTAX_MTU);
  if (mtu !== undefined) route.mtu = mtu;
  return route;
}

export function decodeNeighbor(msg: Message): NeighborInfo | undefined {
  const h = decodeNdMsg(msg.payload);
  if (h.family !== K.AF_INET) return undefined;
  const a = Attrs.parse(msg.payload, NDMSG_LEN);
  const ip = a.ipv4(K.NDA_DST);
  if (ip === undefined) return undefined;
  const n: NeighborInfo = {
    ifindex: h.ifindex,
    ip,
    state: h.state,
    permanent: (h.state & K.NUD_PERMANENT) !== 0,
  };
  const mac = a.mac(K.NDA_LLADDR);
  if (mac !== undefined) n.mac = mac;
  return n;
}

export interface QdiscInfo {
  ifindex: number;
  handle: number;
  parent: number;
  kind: string;
}

export function decodeQdisc(msg: Message): QdiscInfo {
  const h = decodeTcMsg(msg.payload);
  const a = Attrs.parse(msg.payload, TCMSG_LEN);
  return { ifindex: h.ifindex, handle: h.handle, parent: h.parent, kind: a.str(K.TCA_KIND) ?? '' };
}

/**
 * A filter of a dump; undefined for the per-priority header entries (handle 0) the kernel sends
 * before the filters themselves.
 */
export function decodeBpfFilter(msg: Message): BpfFilterInfo | undefined {
  const h = decodeTcMsg(msg.payload);
  if (h.handle === 0) return undefined;
  const a = Attrs.parse(msg.payload, TCMSG_LEN);
  const opts = a.nested(K.TCA_OPTIONS);
  const direction = (h.parent & 0xffff) === K.TC_H_MIN_EGRESS ? 'egress' : 'ingress';
  const f: BpfFilterInfo = {
    ifindex: h.ifindex,
    direction,
    prio: h.info >>> 16,
    handle: h.handle,
    kind: a.str(K.TCA_KIND) ?? '',
    directAction: ((opts?.u32(K.TCA_BPF_FLAGS) ?? 0) & K.TCA_BPF_FLAG_ACT_DIRECT) !== 0,
  };
  const name = opts?.str(K.TCA_BPF_NAME);
  if (name !== undefined) f.name = name;
  const id = opts?.u32(K.TCA_BPF_ID);
  if (id !== undefined) f.progId = id;
  return f;
}
