// The lab's outside (seed "Cilium Networking" §2): hosts on the underlay that are not cluster nodes (the seed's
// "router" VM), and networks behind such a host acting as their router. Each is a namespace of the lab (recorded in
// its ledger, so `lab down` removes it like the rest); nothing here touches the machine's own interfaces.
import { Netns } from '../kernel/netns/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import { cidrContains, formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../util/ip.js';
import { LabError } from './errors.js';
import { execCapture, loadLab, saveLab, waitForLog, type LabNode, type LabState } from './lab.js';
import { masqFile, parseMasqCidrs, requireIpMasqAgent, writeMasqFile, type LabMasq } from './masq.js';
import { NETNS_DIR, WEBPOD_JS, labPaths, netnsPath } from './paths.js';
import { ownNetns, ownPid } from './owned.js';
import { spawnInNetns, stopProcessesIn } from './procs.js';

const UNDERLAY_BRIDGE = 'br0';

export interface LabServe {
  ports: number[];
  pid: number;
}

/** A host on the underlay that is no node of the cluster. */
export interface LabExternal {
  name: string;
  ip: string;
  netns: string;
  serve?: LabServe;
}

export interface LabNetworkHost {
  name: string;
  ip: string;
  netns: string;
  serve?: LabServe;
}

/** A network behind an external host, which routes it (forwarding on, its address the network's first). */
export interface LabNetwork {
  name: string;
  cidr: string;
  via: string;
  gateway: string;
  routeBack: boolean;
  hosts: LabNetworkHost[];
}

export function outsidePaths(lab: string) {
  const prefix = labPaths(lab).netnsPrefix;
  return {
    external: (name: string) => ({ netns: `${prefix}ext-${name}`, underlayIf: `x-${name}`, logFile: `${labPaths(lab).dir}/outside/${name}.log` }),
    network: (net: string) => ({ bridge: `n-${net}` }),
    host: (net: string, k: number) => ({
      name: `${net}-h${k}`,
      netns: `${prefix}far-${net}-h${k}`,
      routerIf: `h${k}-${net}`,
      logFile: `${labPaths(lab).dir}/outside/${net}-h${k}.log`,
    }),
  };
}

// Interface names are at most 15 bytes: "x-" + 12, "h99-" + 10.
const EXTERNAL_NAME = /^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/;
const NETWORK_NAME = /^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/;

function invalid(msg: string): never {
  throw new LabError('TENDRIL_ERR_LAB_INVALID', msg);
}

function parsePorts(list: number[] | undefined, flag = '--serve'): number[] {
  const ports = list ?? [];
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) invalid(`Invalid ${flag} port ${String(p)}: expected 1-65535`);
  return ports;
}

/** Runs `fn` with a netlink socket inside the named namespace. */
function inNs<T>(ns: string, fn: (nl: Netlink, n: Netns) => T): T {
  const n = Netns.open(netnsPath(ns));
  const nl = Netlink.openIn(n);
  try {
    return fn(nl, n);
  } finally {
    nl.close();
    n.close();
  }
}

function sysctl(ns: string, kv: string): void {
  const r = execCapture(ns, ['sysctl', '-qw', kv]);
  if (r.status !== 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `sysctl ${kv} in netns ${ns} failed: ${r.stderr.trim()}`);
}

async function serve(lab: string, ns: string, name: string, ports: number[], logFile: string): Promise<LabServe | undefined> {
  if (ports.length === 0) return undefined;
  const pid = ownPid(lab, spawnInNetns(ns, [process.execPath, WEBPOD_JS, '--name', name, '--port', ports.join(',')], logFile));
  await waitForLog(logFile, 'listening', pid);
  return { ports, pid };
}

export function findExternal(st: LabState, name: string): LabExternal {
  const x = (st.externals ?? []).find((e) => e.name === name);
  if (!x) invalid(`External host "${name}" is not in lab "${st.name}" (external hosts: ${(st.externals ?? []).map((e) => e.name).join(', ') || 'none'})`);
  return x;
}

export function findNetwork(st: LabState, name: string): LabNetwork {
  const x = (st.networks ?? []).find((e) => e.name === name);
  if (!x) invalid(`Network "${name}" is not in lab "${st.name}" (networks: ${(st.networks ?? []).map((e) => e.name).join(', ') || 'none'})`);
  return x;
}

/** Every address the lab already uses on the underlay (nodes, control plane, external hosts). */
function underlayTaken(st: LabState): Map<string, string> {
  const m = new Map<string, string>([[st.controlIP, 'the control plane']]);
  for (const n of st.nodes) m.set(n.ip, `node ${n.name}`);
  for (const x of st.externals ?? []) m.set(x.ip, `external host ${x.name}`);
  return m;
}

/** `lab external add NAME --ip IP [--serve PORTS]`: a host on the underlay bridge, not joined to the cluster. */
export async function externalAdd(lab: string, name: string, o: { ip: string; serve?: number[] }): Promise<LabExternal> {
  const st = loadLab(lab);
  if (!EXTERNAL_NAME.test(name)) invalid(`Invalid external host name "${name}": use 1-12 of a-z, 0-9, "-"`);
  if ((st.externals ?? []).some((e) => e.name === name)) invalid(`External host "${name}" already exists in lab "${lab}"`);
  const underlay = parseCidr(st.underlayCidr);
  let ipNum: number;
  try {
    ipNum = parseIPv4(o.ip);
  } catch (err) {
    invalid(`Invalid --ip: ${(err as Error).message}`);
  }
  const last = (underlay.base + 2 ** (32 - underlay.bits) - 1) >>> 0;
  if (!cidrContains(underlay, ipNum) || ipNum === underlay.base || ipNum === last) invalid(`--ip ${o.ip} is not a host address of the underlay ${st.underlayCidr}`);
  const user = underlayTaken(st).get(o.ip);
  if (user) invalid(`--ip ${o.ip} is taken by ${user}`);
  const ports = parsePorts(o.serve);
  const xp = outsidePaths(lab).external(name);
  ownNetns(lab, xp.netns);
  const ns = Netns.create(xp.netns, NETNS_DIR);
  const x: LabExternal = { name, ip: o.ip, netns: xp.netns };
  try {
    inNs(labPaths(lab).underlayNetns, (unl) => {
      unl.createVeth({ name: xp.underlayIf, peerName: 'eth0', peerNetns: ns });
      unl.setLink(xp.underlayIf, { masterIndex: unl.getLink(UNDERLAY_BRIDGE)!.index, up: true });
    });
    inNs(xp.netns, (nl) => {
      nl.setLink('lo', { up: true });
      const eth = nl.getLink('eth0')!;
      nl.addAddress(eth.index, `${o.ip}/${underlay.bits}`);
      nl.setLink(eth.index, { up: true });
    });
    // A router for the networks behind it (seed: the "router" VM forwards for 10.0.0.0/16).
    sysctl(xp.netns, 'net.ipv4.ip_forward=1');
    const sv = await serve(lab, xp.netns, name, ports, xp.logFile);
    if (sv) x.serve = sv;
  } catch (err) {
    await removeNs(lab, [xp.netns], xp.underlayIf);
    throw err;
  } finally {
    ns.close();
  }
  const fresh = loadLab(lab);
  fresh.externals = [...(fresh.externals ?? []), x];
  saveLab(fresh);
  return x;
}

/** Stops what runs in the namespaces and deletes them (and the underlay port, which would outlive them a while). */
async function removeNs(lab: string, namespaces: string[], underlayIf?: string): Promise<void> {
  await stopProcessesIn(namespaces);
  if (underlayIf) {
    try {
      inNs(labPaths(lab).underlayNetns, (unl) => unl.deleteLink(underlayIf));
    } catch {
      // gone with a namespace already
    }
  }
  for (const n of namespaces) if (Netns.exists(n, NETNS_DIR)) Netns.delete(n, NETNS_DIR);
}

/** Removes an external host and every network behind it; nodes lose their routes through it. */
export async function externalDel(lab: string, name: string): Promise<{ external: LabExternal; networks: string[] }> {
  const st = loadLab(lab);
  const x = findExternal(st, name);
  const nets = (st.networks ?? []).filter((n) => n.via === name);
  for (const n of nets) await networkDel(lab, n.name);
  await removeNs(lab, [x.netns], outsidePaths(lab).external(name).underlayIf);
  const fresh = loadLab(lab);
  fresh.externals = (fresh.externals ?? []).filter((e) => e.name !== name);
  saveLab(fresh);
  return { external: x, networks: nets.map((n) => n.name) };
}

export interface NetworkAddOptions {
  cidr: string;
  via: string;
  /** Host addresses inside the CIDR (default: the .10 of its second /24, as the seed's 10.0.1.10). */
  hosts?: string[];
  serve?: number[];
  routeBack?: boolean;
}

/**
 * `lab network add NAME --cidr CIDR --via EXTERNAL`: a bridge in the external host's namespace holding the network's
 * first address (the hosts' default gateway), one namespace per host on it, and a route to the CIDR via the external
 * host on every node. --route-back: the external host routes every node's pod CIDR via that node, so traffic that
 * keeps its pod source address finds its way back.
 */
export async function networkAdd(lab: string, name: string, o: NetworkAddOptions): Promise<LabNetwork> {
  const st = loadLab(lab);
  if (!NETWORK_NAME.test(name)) invalid(`Invalid network name "${name}": use 1-10 of a-z, 0-9, "-"`);
  if ((st.networks ?? []).some((n) => n.name === name)) invalid(`Network "${name}" already exists in lab "${lab}"`);
  const x = findExternal(st, o.via);
  let cidr;
  try {
    cidr = parseCidr(o.cidr);
  } catch (err) {
    invalid(`Invalid --cidr: ${(err as Error).message}`);
  }
  if (cidr.bits > 30 || cidr.bits < 8) invalid(`--cidr ${o.cidr}: expected a prefix length from 8 to 30`);
  const clash = [
    ['the underlay', st.underlayCidr],
    ['the pod CIDR', st.podCidr],
    ...(st.networks ?? []).map((n) => [`network ${n.name}`, n.cidr] as const),
  ].find(([, other]) => overlaps(cidr, parseCidr(other!)));
  if (clash) invalid(`--cidr ${formatCidr(cidr)} overlaps ${clash[0]} (${clash[1]})`);
  const gateway = formatIPv4(cidr.base + 1);
  const last = (cidr.base + 2 ** (32 - cidr.bits) - 1) >>> 0;
  const hostIps = o.hosts && o.hosts.length ? o.hosts : [formatIPv4(cidr.bits <= 23 ? cidr.base + 256 + 10 : cidr.base + 2)];
  if (hostIps.length > 99) invalid(`At most 99 --host addresses per network`);
  for (const h of hostIps) {
    let n: number;
    try {
      n = parseIPv4(h);
    } catch (err) {
      invalid(`Invalid --host: ${(err as Error).message}`);
    }
    if (!cidrContains(cidr, n) || n === cidr.base || n === last) invalid(`--host ${h} is not a host address of ${formatCidr(cidr)}`);
    if (h === gateway) invalid(`--host ${h} is the network's gateway (the external host ${x.name} holds it)`);
  }
  if (new Set(hostIps).size !== hostIps.length) invalid(`--host addresses repeat: ${hostIps.join(', ')}`);
  const ports = parsePorts(o.serve);
  const op = outsidePaths(lab);
  const net: LabNetwork = { name, cidr: formatCidr(cidr), via: x.name, gateway, routeBack: o.routeBack === true, hosts: [] };
  const made: string[] = [];
  try {
    inNs(x.netns, (nl) => {
      nl.createBridge({ name: op.network(name).bridge });
      const br = nl.getLink(op.network(name).bridge)!;
      nl.setLink(br.index, { up: true });
      nl.addAddress(br.index, `${gateway}/${cidr.bits}`);
    });
    for (let k = 1; k <= hostIps.length; k++) {
      const hp = op.host(name, k);
      ownNetns(lab, hp.netns);
      const hns = Netns.create(hp.netns, NETNS_DIR);
      made.push(hp.netns);
      try {
        inNs(x.netns, (nl) => {
          nl.createVeth({ name: hp.routerIf, peerName: 'eth0', peerNetns: hns });
          nl.setLink(hp.routerIf, { masterIndex: nl.getLink(op.network(name).bridge)!.index, up: true });
        });
      } finally {
        hns.close();
      }
      const ip = hostIps[k - 1]!;
      inNs(hp.netns, (nl) => {
        nl.setLink('lo', { up: true });
        const eth = nl.getLink('eth0')!;
        nl.addAddress(eth.index, `${ip}/${cidr.bits}`);
        nl.setLink(eth.index, { up: true });
        nl.addRoute({ dst: '0.0.0.0/0', gateway, ifindex: eth.index });
      });
      const h: LabNetworkHost = { name: hp.name, ip, netns: hp.netns };
      const sv = await serve(lab, hp.netns, hp.name, ports, hp.logFile);
      if (sv) h.serve = sv;
      net.hosts.push(h);
    }
    for (const n of st.nodes) routeToNetwork(n, net, x);
    if (net.routeBack) routeBack(st, x);
  } catch (err) {
    await removeNs(lab, made);
    try {
      inNs(x.netns, (nl) => nl.deleteLink(op.network(name).bridge));
    } catch {
      // not made
    }
    for (const n of st.nodes) unrouteNetwork(n, net);
    throw err;
  }
  const fresh = loadLab(lab);
  fresh.networks = [...(fresh.networks ?? []), net];
  saveLab(fresh);
  return net;
}

function overlaps(a: { base: number; bits: number }, b: { base: number; bits: number }): boolean {
  return cidrContains(a, b.base) || cidrContains(b, a.base);
}

/** The node's route to a far network: via its external host on the underlay (the seed's VMs' route to 10.0.0.0/16). */
function routeToNetwork(n: LabNode, net: LabNetwork, x: LabExternal): void {
  inNs(n.netns, (nl) => nl.addRoute({ dst: net.cidr, gateway: x.ip, ifindex: nl.getLink('eth0')!.index, replace: true }));
}

function unrouteNetwork(n: LabNode, net: LabNetwork): void {
  try {
    inNs(n.netns, (nl) => nl.deleteRoute({ dst: net.cidr }));
  } catch {
    // the node or the route is gone
  }
}

/** The external host routes each node's pod CIDR via that node (what a router needs when pods keep their IPs). */
function routeBack(st: LabState, x: LabExternal): void {
  inNs(x.netns, (nl) => {
    const eth = nl.getLink('eth0')!.index;
    for (const n of st.nodes) if (n.podCidr) nl.addRoute({ dst: n.podCidr, gateway: n.ip, ifindex: eth, replace: true });
  });
}

/** A node that joins later gets the routes to every far network, and route-back routers learn its pod CIDR. */
export function outsideForNode(lab: string, node: string): void {
  const st = loadLab(lab);
  const n = st.nodes.find((x) => x.name === node);
  if (!n) return;
  for (const net of st.networks ?? []) {
    const x = findExternal(st, net.via);
    routeToNetwork(n, net, x);
    if (net.routeBack) routeBack(st, x);
  }
}

export async function networkDel(lab: string, name: string): Promise<LabNetwork> {
  const st = loadLab(lab);
  const net = findNetwork(st, name);
  await removeNs(lab, net.hosts.map((h) => h.netns));
  const x = (st.externals ?? []).find((e) => e.name === net.via);
  if (x) {
    inNs(x.netns, (nl) => {
      nl.deleteLink(outsidePaths(lab).network(name).bridge);
      // Route-back routes stay while another network through this host still wants them.
      if (net.routeBack && !(st.networks ?? []).some((n) => n !== net && n.via === x.name && n.routeBack)) {
        for (const n of st.nodes) if (n.podCidr) nl.deleteRoute({ dst: n.podCidr, gateway: n.ip });
      }
    });
  }
  for (const n of st.nodes) unrouteNetwork(n, net);
  const fresh = loadLab(lab);
  fresh.networks = (fresh.networks ?? []).filter((n) => n.name !== name);
  saveLab(fresh);
  return net;
}

/** The namespace of an outside host: an external host by name, or a network host by name (NET-hK) or address. */
export function outsideNetns(st: LabState, ref: string): string {
  const x = (st.externals ?? []).find((e) => e.name === ref);
  if (x) return x.netns;
  for (const net of st.networks ?? []) {
    const h = net.hosts.find((y) => y.name === ref || y.ip === ref);
    if (h) return h.netns;
  }
  const hosts = [...(st.externals ?? []).map((e) => e.name), ...(st.networks ?? []).flatMap((n) => n.hosts.map((h) => h.name))];
  return invalid(`No external host or network host "${ref}" in lab "${st.name}" (hosts: ${hosts.join(', ') || 'none'})`);
}

/**
 * `lab masq set`: the ip-masq-agent file of every node rewritten; agents re-read it. A lab brought up without a
 * non-masquerade set has agents that do not read any file: `restart` says so, and the caller restarts them.
 */
export function masqSet(lab: string, m: { nonMasqueradeCidrs: string[]; masqLinkLocal?: boolean }): { masq: LabMasq; files: string[]; needsRestart: boolean } {
  const st = loadLab(lab);
  requireIpMasqAgent();
  const masq: LabMasq = { nonMasqueradeCidrs: parseMasqCidrs(m.nonMasqueradeCidrs), masqLinkLocal: m.masqLinkLocal === true };
  const needsRestart = st.masq === undefined;
  st.masq = masq;
  saveLab(st);
  const files = st.nodes.map((n) => writeMasqFile(lab, n.name, masq));
  return { masq, files, needsRestart };
}

export function masqFiles(st: LabState): string[] {
  return st.nodes.map((n) => masqFile(st.name, n.name));
}
