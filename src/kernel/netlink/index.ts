// rtnetlink for Tendril: links (veth, bridge, vxlan), addresses, routes, neighbours and tc attach, in TypeScript.
export { Netlink } from './netlink.js';
export type { AddrInfo, BpfFilterInfo, Direction, LinkInfo, NeighborInfo, RouteInfo, Scope } from './types.js';
