// Public shapes of rtnetlink objects as Tendril sees them (IPv4, addresses and MACs as strings).

export type Scope = 'universe' | 'link' | 'host';
export type Direction = 'ingress' | 'egress';

export interface LinkInfo {
  index: number;
  name: string;
  mtu: number;
  mac: string;
  up: boolean;
  /** IFF_NOARP is set (always filled in by Netlink; optional so callers' fakes need not). */
  noarp?: boolean;
  kind?: string;
  masterIndex?: number;
  /** IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace). */
  peerIndex?: number;
  /** IFLA_LINK_NETNSID: id, in this namespace, of the namespace holding the peer. */
  linkNetnsId?: number;
}

export interface AddrInfo {
  index: number;
  address: string;
  prefixLen: number;
  scope: number;
}

export interface RouteInfo {
  /** "0.0.0.0/0" or "10.0.0.0/24". */
  dst: string;
  gateway?: string;
  ifindex?: number;
  scope: Scope;
  src?: string;
  table: number;
  protocol: number;
  mtu?: number;
}

export interface NeighborInfo {
  ifindex: number;
  ip: string;
  mac?: string;
  /** NUD_* bits, e.g. 0x80 permanent. */
  state: number;
  permanent: boolean;
}

export interface BpfFilterInfo {
  ifindex: number;
  direction: Direction;
  prio: number;
  handle: number;
  kind: string;
  name?: string;
  progId?: number;
  directAction: boolean;
}
