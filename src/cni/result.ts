// The ADD result in spec shape, and its conversion to the cniVersion the runtime asked for.
import { CniCode, CniError, compareVersions, type CniVersion } from './errors.js';

export interface CniInterface {
  name: string;
  mac?: string;
  /** Netns path; set for interfaces inside the sandbox, absent for host-side ones. */
  sandbox?: string;
  /** CNI 1.1 only. */
  mtu?: number;
}

export interface CniIPConfig {
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the 1.x shape, independent of the version it is printed in. */
export interface CniResult {
  interfaces: CniInterface[];
  ips: CniIPConfig[];
  routes: CniRoute[];
  dns: CniDns;
}

export interface PodAttachment {
  hostIfName: string;
  hostMac: string;
  podIfName: string;
  podMac: string;
  netnsPath: string;
  /** Pod IPv4 without prefix. */
  ip: string;
  routerIP: string;
  mtu: number;
}

/** Result of a Tendril ADD: host veth end, pod end (index 1) with a /32 and the router as gateway. */
export function podResult(a: PodAttachment): CniResult {
  return {
    interfaces: [
      { name: a.hostIfName, mac: a.hostMac },
      { name: a.podIfName, mac: a.podMac, sandbox: a.netnsPath, mtu: a.mtu },
    ],
    ips: [{ address: `${a.ip}/32`, gateway: a.routerIP, interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: a.routerIP }],
    dns: {},
  };
}

/** JSON object of `r` as spec version `v` defines it. */
export function formatResult(r: CniResult, v: CniVersion): Record<string, unknown> {
  const modern = compareVersions(v, '1.0.0') >= 0;
  const withMtu = compareVersions(v, '1.1.0') >= 0;
  const interfaces = r.interfaces.map((i) => {
    const out: Record<string, unknown> = { name: i.name };
    if (i.mac !== undefined) out['mac'] = i.mac;
    if (i.sandbox !== undefined) out['sandbox'] = i.sandbox;
    if (withMtu && i.mtu !== undefined) out['mtu'] = i.mtu;
    return out;
  });
  const ips = r.ips.map((ip) => {
    // 0.3.x and 0.4.0 carry the family explicitly; 1.0 derives it from the address.
    const out: Record<string, unknown> = modern ? {} : { version: ip.address.includes(':') ? '6' : '4' };
    out['address'] = ip.address;
    if (ip.gateway !== undefined) out['gateway'] = ip.gateway;
    if (ip.interface !== undefined) out['interface'] = ip.interface;
    return out;
  });
  const routes = r.routes.map((rt) => (rt.gw === undefined ? { dst: rt.dst } : { dst: rt.dst, gw: rt.gw }));
  return { cniVersion: v, interfaces, ips, routes, dns: { ...r.dns } };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(msg: string): CniError {
  return new CniError(CniCode.INVALID_CONFIG, `invalid network config: "prevResult" ${msg}`);
}

/** Reads a prevResult of any supported version (CHECK/DEL input) back into the 1.x shape. */
export function parseResult(raw: Record<string, unknown>): CniResult {
  const list = (key: string): unknown[] => {
    const v = raw[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw bad(`"${key}" must be an array`);
    return v;
  };
  const interfaces = list('interfaces').map((i, n): CniInterface => {
    if (!isObject(i) || typeof i['name'] !== 'string') throw bad(`interfaces[${n}] needs a string "name"`);
    const out: CniInterface = { name: i['name'] };
    if (typeof i['mac'] === 'string') out.mac = i['mac'];
    if (typeof i['sandbox'] === 'string') out.sandbox = i['sandbox'];
    if (typeof i['mtu'] === 'number') out.mtu = i['mtu'];
    return out;
  });
  const ips = list('ips').map((ip, n): CniIPConfig => {
    if (!isObject(ip) || typeof ip['address'] !== 'string') throw bad(`ips[${n}] needs a string "address"`);
    const out: CniIPConfig = { address: ip['address'] };
    if (typeof ip['gateway'] === 'string') out.gateway = ip['gateway'];
    if (typeof ip['interface'] === 'number') out.interface = ip['interface'];
    return out;
  });
  const routes = list('routes').map((rt, n): CniRoute => {
    if (!isObject(rt) || typeof rt['dst'] !== 'string') throw bad(`routes[${n}] needs a string "dst"`);
    return typeof rt['gw'] === 'string' ? { dst: rt['dst'], gw: rt['gw'] } : { dst: rt['dst'] };
  });
  const dns = isObject(raw['dns']) ? (raw['dns'] as CniDns) : {};
  return { interfaces, ips, routes, dns };
}
