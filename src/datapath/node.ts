// The node's datapath: host and tunnel devices, the loaded BPF objects, how an endpoint is wired into them, and the
// ipcache entries and routes that reach other nodes. One loaded instance of each object serves every endpoint;
// adding an endpoint is map updates + one attach (its veth's ingress: nothing of a pod's needs the egress hook).
import fs from 'node:fs';
import path from 'node:path';
import { BpfMap, Collection, type TypedMap, cgroupIdLevel, ensureBpffs, haveTcx, queryTcx, u8 } from '../kernel/bpf/index.js';
import { Netlink, type LinkInfo } from '../kernel/netlink/index.js';
import { PROXY_MAP, ensureProxyRoute, proxyConfigValue } from './proxy.js';
import { KernelError } from '../kernel/errors.js';
import { Netns } from '../kernel/netns/index.js';
import { PinnedAttachments, TcxSwitcher, type TcxSwitchStats } from './attach.js';
import { staleMasqDevices } from './masq-devices.js';
import { NatSourceCache, type FlowTuple } from './nat-source-cache.js';
import type { DatapathEvent } from './event-types.js';
import { formatCidr, parseCidr, parseIPv4, parseMac } from '../util/ip.js';
import { DatapathError } from './errors.js';
import { monotonicSeconds, toCtEntry, type CtEntry } from './ct.js';
import { CtGcThread, ctGcPass, ctGcPins, type CtGcOptions, type CtGcResult } from './ct-gc.js';
import {
  EGRESS_IP_MAP_NAME,
  IPMASQ_MAP,
  SNAT_MAP,
  ipmasqKeyCodec,
  ipmasqList,
  ipmasqReplace,
  ipmasqValueCodec,
  natConstants,
  natFlush,
  natGc,
  NatLiveFlows,
  natAdoptUnflagged,
  natList,
  natLookupOut,
  natValueCodec,
  SNAT_MAP_SIZE,
  type IpmasqKey,
  type MasqDatapathConfig,
  type NatEntry,
  type NatValue,
} from './nat.js';
import {
  diffPolicy,
  entryFromMap,
  entryKeyId,
  policyKey,
  policyValue,
  type EndpointPolicyState,
  type PolicyMapEntry,
  type PolicyMapEntryStats,
} from './policy.js';
import { watchEvents, type EventReaderOptions, type EventWatch } from './event-reader.js';
import { EVENTS_LOST_MAP, EVENTS_MAP } from './events.js';
import {
  CT_MAP_ANY,
  CT_MAP_TCP,
  CT_TIMEOUTS_DEFAULT,
  ENDPOINT_F_EGRESS_ENFORCED,
  ipv4Codec,
  ENDPOINT_F_HOST,
  ENDPOINT_F_INGRESS_ENFORCED,
  IDENTITY_HOST,
  METRICS_MAP,
  METRIC_DIR_EGRESS,
  METRIC_DIR_INGRESS,
  POLICY_MAP,
  dropReasonText,
  ctKeyCodec,
  ctValueCodec,
  metricsKeyCodec,
  metricsValueCodec,
  policyKeyCodec,
  policyValueCodec,
  type CtKey,
  type CtValue,
  type PolicyKeyRaw,
  type PolicyValueRaw,
  IPCACHE_F_HAS_TUNNEL_EP,
  IPCACHE_MAP,
  IPBLOCK_MAP,
  ipblockValueCodec,
  LXC_IF_MAP,
  LXC_MAP,
  ROUTING_MODE_NATIVE,
  ROUTING_MODE_TUNNEL,
  type EndpointInfo,
  type EndpointKey,
  type IpcacheKey,
  type IpcacheValue,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
  ipcacheKeyCodec,
  ipcacheValueCodec,
  CT_MAP_SIZE_ANY,
  CT_MAP_SIZE_TCP,
} from './maps.js';
import {
  type DatapathState,
  type PlanContext,
  type PlannedRoute,
  type RemoteNode,
  type RoutingMode,
  emptyState,
  mergeRoutes,
  normalizeRemoteNode,
  planRemoteNode,
  readState,
  writeState,
} from './remote-nodes.js';

export const HOST_DEV = 'tendril_host';
export const NET_DEV = 'tendril_net';
export const VXLAN_DEV = 'tendril_vxlan';
/** UDP port of the tunnel (Cilium's, the Linux VXLAN default before IANA's 4789). */
export const VXLAN_PORT = 8472;
/** Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 bytes: what tunnel mode takes off the pods' MTU. */
export const TUNNEL_OVERHEAD = 50;

export interface NodeDatapathConfig {
  /** Pod CIDR of this node, e.g. 172.20.0.0/24: routed to tendril_host. */
  podCidr: string;
  /** Router IP (pod gateway), held by tendril_host as /32. */
  routerIP: string;
  /** The node's own underlay IP: the tunnel endpoint other nodes send to, the next hop in native mode. */
  nodeIP: string;
  /** How pods of other nodes are reached (default 'tunnel'). */
  routing?: RoutingMode;
  /** The underlay device (eth0 in the lab): native-mode programs attach here, its MTU sizes the pods'. */
  nativeDev: string;
  /** bpffs directory for this node's pinned maps and links. */
  bpfRoot: string;
  /** Directory with the compiled objects (lxc.o, host.o, overlay.o). */
  objDir: string;
  /** Underlay MTU; default: the native device's. Pods get it minus 50 in tunnel mode (see podMtu). */
  mtu?: number;
  /**
   * JSON file recording this node's own addresses and every remote node installed (ipcache prefixes and routes),
   * so that entries of nodes that vanished while the agent was down can be pruned after a restart. Without it the
   * record lives in memory only and pruneRemoteNodes() knows just the nodes of this run.
   */
  stateFile?: string;
  /**
   * How programs are attached (default 'tcx'). A tcx attach holds the RTNL lock across an RCU grace period
   * (10-30 ms here); 'tc' (clsact + cls_bpf) attaches in about a millisecond. With tcx a pod started through
   * addEndpointAsync() runs on a filter until the node is quiet, then on its tcx link (see TcxSwitcher). Same
   * programs, same maps either way.
   */
  attachMode?: 'tcx' | 'tc';
  /** tcx: how long the node must be without CNI calls in flight and endpoint adds and removals before pods move from filter to link (TCX_SWITCH_QUIET_MS, 1 s). */
  tcxSwitchQuietMs?: number;
  /**
   * Datapath events (traces, drops, policy verdicts) written to the node's ring buffer (default true). Off, the
   * programs are loaded without any event code (CONFIG_EVENTS = 0). Takes effect at start().
   */
  events?: boolean;
  /**
   * Conntrack timeouts in seconds (defaults: Cilium's, tcp 8000, tcpSyn 60, tcpFin 10, any 60). Load-time constants:
   * take effect at start().
   */
  ctTimeouts?: { tcp?: number; tcpSyn?: number; tcpFin?: number; any?: number };
  /**
   * BPF masquerading of pod traffic to the world on the native device (default off). On, the native-device
   * programs are attached in tunnel mode too. Load-time constants: take effect at start().
   */
  masquerade?: MasqDatapathConfig;
  /**
   * The cgroup v2 directory socket-level LB is attached to (src/datapath/sock-lb.ts): the endpoint programs skip the
   * per-packet service lookup for packets whose socket lives in it or below (CONFIG_SOCK_LB_CGROUP_ID/_LEVEL).
   * Load-time constants: take effect at start().
   */
  sockLbCgroup?: string;
  /**
   * NodePort from outside on the native device (bpf/lib/nodeport.h, default true): the native-device programs are
   * attached in tunnel mode too. Takes effect at start().
   */
  nodePort?: boolean;
}

export type { EndpointPolicyState, PolicyMapEntry, PolicyMapEntryStats } from './policy.js';
export type { CtEntry } from './ct.js';
export type { MasqDatapathConfig, NatEntry } from './nat.js';

/** One tendril_metrics entry summed over CPUs. */
export interface DropMetric {
  /** Positive drop code. */
  reason: number;
  description: string;
  direction: 'ingress' | 'egress' | 'unknown';
  packets: number;
  bytes: number;
}

/** What the datapath needs to know of an endpoint. */
export interface DatapathEndpoint {
  id: number;
  ip: string;
  hostIfName: string;
  hostIfindex: number;
  hostMac: string;
  podMac: string;
  identity: number;
}

export interface HostDevice {
  name: string;
  ifindex: number;
  mac: string;
}

/** One tendril_ipcache entry as dumpIpcache() reports it. */
export interface IpcacheEntry {
  /** CIDR, /32 for a single address. */
  prefix: string;
  identity: number;
  /** Underlay IP of the node hosting the prefix, when traffic to it is tunnelled. */
  tunnelEndpoint?: string;
  /** IPCACHE_F_* bits. */
  flags: number;
}

type Direction = 'ingress' | 'egress';

export interface Attachment {
  ifname: string;
  ifindex: number;
  /** tcx link, or a cls_bpf filter on clsact. */
  attach: 'tcx' | 'tc';
  direction: Direction;
  progName: string;
  progId: number;
  /** 0 for tc filters (no BPF link). */
  linkId: number;
}

interface Started {
  lxc: Collection;
  host: Collection;
  overlay: Collection | undefined;
  lxcMap: TypedMap<EndpointKey, EndpointInfo>;
  lxcIfMap: TypedMap<number, EndpointInfo>;
  ipcache: TypedMap<IpcacheKey, IpcacheValue>;
  policy: TypedMap<PolicyKeyRaw, PolicyValueRaw>;
  ipblock: TypedMap<IpcacheKey, number>;
  ct: Array<TypedMap<CtKey, CtValue>>;
  snat: TypedMap<CtKey, NatValue>;
  ipmasq: TypedMap<IpmasqKey, number>;
  metrics: BpfMap;
  hostDev: HostDevice;
  nativeDev: LinkInfo;
  podMtu: number;
  /** The other masquerade devices' objects (masqDevices()). */
  masqDevs: Collection[];
  /** The addresses flows are masqueraded to: the node IP, then each further masquerade device's. */
  natAddrs: string[];
}

const NO_TUNNEL = '0.0.0.0';

/** A device other than the native one masqueraded on, and the address its traffic leaves with. */
interface MasqDevice {
  link: LinkInfo;
  ip: string;
}

/** Is the native device among the masquerade devices (none listed: it alone)? */
function masqOnNative(m: MasqDatapathConfig, nativeDev: string): boolean {
  return (m.interfaces ?? []).length === 0 || m.interfaces!.includes(nativeDev);
}

/** The masquerade devices other than the native one, each with its first IPv4 address; none when masquerading is off. */
function masqDevices(nl: Netlink, m: MasqDatapathConfig | undefined, nativeDev: string): MasqDevice[] {
  if (!m?.enabled) return [];
  return [...new Set(m.interfaces ?? [])].filter((n) => n !== nativeDev).map((name) => {
    const link = nl.getLink(name);
    if (!link) throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot start datapath: masquerade interface "${name}" not found`);
    const addr = nl.listAddresses(link.index)[0];
    if (!addr) throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot start datapath: masquerade interface "${name}" has no IPv4 address`);
    return { link, ip: addr.address };
  });
}

export class NodeDatapath {
  private readonly cfg: NodeDatapathConfig;
  private readonly routing: RoutingMode;
  private s: Started | undefined;
  private attachMode: 'tcx' | 'tc' = 'tcx';
  private state: DatapathState = emptyState();
  private readonly watches = new Set<EventWatch>();
  /**
   * What tendril_policy holds, per endpoint ID: read from the map once (it may hold entries of an earlier agent
   * run), then kept in step with every write, so each setEndpointPolicy() is a diff.
   */
  private policyShadow: Map<number, Map<string, PolicyMapEntry>> | undefined;
  /**
   * Endpoint ID -> its veth and the endpoint_info it was last written with, so that a policy update that only
   * changes entries costs no endpoint-map reads (1,000 endpoints at once is the common case of a policy change).
   */
  private readonly wired = new Map<number, EndpointInfo>();
  private readonly pins: PinnedAttachments;
  /** Bridged endpoints' switch to tcx; from start() to stop(), in the namespace start() ran in. */
  private switcher: TcxSwitcher | undefined;
  /** The conntrack GC thread (ctGcInThread()), started by the first pass. */
  private gcThread: CtGcThread | undefined;
  private switcherNs: Netns | undefined;

  /** Validates the configuration; nothing touches the kernel before start(). */
  constructor(cfg: NodeDatapathConfig) {
    const bad = (what: string): never => {
      throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Invalid datapath configuration: ${what}`);
    };
    for (const [field, value] of [
      ['routerIP', cfg.routerIP],
      ['nodeIP', cfg.nodeIP],
    ] as const) {
      try {
        parseIPv4(value);
      } catch {
        bad(`${field} "${String(value)}" is no IPv4 address`);
      }
    }
    try {
      parseCidr(cfg.podCidr);
    } catch {
      bad(`podCidr "${cfg.podCidr}" is no IPv4 CIDR`);
    }
    const routing = cfg.routing ?? 'tunnel';
    if (routing !== 'tunnel' && routing !== 'native') bad(`routing "${String(routing)}" is neither "tunnel" nor "native"`);
    if (typeof cfg.nativeDev !== 'string' || cfg.nativeDev === '') bad('nativeDev is empty');
    if (cfg.tcxSwitchQuietMs !== undefined && (!Number.isInteger(cfg.tcxSwitchQuietMs) || cfg.tcxSwitchQuietMs < 0 || cfg.tcxSwitchQuietMs > 2 ** 31 - 1)) {
      bad(`tcxSwitchQuietMs ${String(cfg.tcxSwitchQuietMs)} is not an integer in [0, ${2 ** 31 - 1}] (ms)`);
    }
    if (cfg.mtu !== undefined && (!Number.isInteger(cfg.mtu) || cfg.mtu < 576 + TUNNEL_OVERHEAD || cfg.mtu > 65535)) {
      bad(`mtu ${cfg.mtu} is not an integer in [${576 + TUNNEL_OVERHEAD}, 65535]`);
    }
    for (const [k, v] of Object.entries(cfg.ctTimeouts ?? {})) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 0xffffffff)) bad(`ctTimeouts.${k} ${String(v)} is not a positive integer (seconds)`);
    }
    const m = cfg.masquerade;
    if (m !== undefined) {
      const port = (v: number): boolean => Number.isInteger(v) && v >= 1 && v <= 65535;
      if (!port(m.portMin) || !port(m.portMax) || m.portMin > m.portMax) bad(`masquerade port range ${m.portMin}-${m.portMax} is not 1-65535, low to high`);
      for (const i of m.interfaces ?? []) if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(i)) bad(`masquerade interface "${i}" is no interface name`);
      if (m.nativeRoutingCidr !== undefined) {
        try {
          parseCidr(m.nativeRoutingCidr);
        } catch {
          bad(`masquerade nativeRoutingCidr "${m.nativeRoutingCidr}" is no IPv4 CIDR`);
        }
      }
    }
    this.cfg = cfg;
    this.routing = routing;
    this.pins = new PinnedAttachments(path.join(cfg.bpfRoot, 'links'), cfg.attachMode);
  }

  /**
   * Creates the host devices (and tendril_vxlan in tunnel mode) with their routes, loads the objects (re-using
   * pinned maps), attaches the host and tunnel or native-device programs, and writes this node's own ipcache
   * entries. Runs in the calling thread's network namespace.
   */
  start(): void {
    const { cfg } = this;
    const tunnel = this.routing === 'tunnel';
    ensureBpffs();
    fs.mkdirSync(path.join(cfg.bpfRoot, 'links'), { recursive: true });
    if (cfg.stateFile !== undefined) this.state = readState(cfg.stateFile);

    const nl = Netlink.open();
    let hostDev: HostDevice;
    let nativeDev: LinkInfo;
    let vxlan: LinkInfo | undefined;
    let podMtu: number;
    let masqDevs: MasqDevice[];
    try {
      const native = nl.getLink(cfg.nativeDev);
      if (!native) {
        throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot start datapath: native device "${cfg.nativeDev}" not found`);
      }
      nativeDev = native;
      masqDevs = masqDevices(nl, cfg.masquerade, cfg.nativeDev);
      const underlayMtu = cfg.mtu ?? native.mtu;
      podMtu = tunnel ? underlayMtu - TUNNEL_OVERHEAD : underlayMtu;
      hostDev = this.setupHostDevices(nl, podMtu);
      if (tunnel) vxlan = this.setupVxlan(nl, podMtu);
      else if (nl.getLink(VXLAN_DEV)) {
        // Switched from tunnel mode: the device and its attachments go.
        this.pins.detach(VXLAN_DEV, nl.getLink(VXLAN_DEV)!.index);
        nl.deleteLink(VXLAN_DEV);
      }
      writeSysctl('net/ipv4/ip_forward', '1');
      // The cross-node paths are asymmetric (e.g. a pod's packet to a remote node's IP returns through the
      // tunnel); strict reverse-path filtering on our devices would drop their halves.
      for (const d of [HOST_DEV, NET_DEV, ...(tunnel ? [VXLAN_DEV] : [])]) writeSysctl(`net/ipv4/conf/${d}/rp_filter`, '0');
      if (readSysctl(`net/ipv4/conf/${cfg.nativeDev}/rp_filter`) === '1') writeSysctl(`net/ipv4/conf/${cfg.nativeDev}/rp_filter`, '2');
    } finally {
      nl.close();
    }

    const constants = {
      CONFIG_ROUTER_IP4: be32(cfg.routerIP),
      CONFIG_HOST_IFINDEX: hostDev.ifindex,
      CONFIG_HOST_MAC: parseMac(hostDev.mac),
      CONFIG_NODE_IP4: be32(cfg.nodeIP),
      CONFIG_ROUTING_MODE: tunnel ? ROUTING_MODE_TUNNEL : ROUTING_MODE_NATIVE,
      CONFIG_TUNNEL_IFINDEX: vxlan?.index ?? 0,
      CONFIG_NATIVE_IFINDEX: nativeDev.index,
      CONFIG_EVENTS: cfg.events === false ? 0 : 1,
      CONFIG_CT_TIMEOUT_TCP: cfg.ctTimeouts?.tcp ?? CT_TIMEOUTS_DEFAULT.tcp,
      CONFIG_CT_TIMEOUT_TCP_SYN: cfg.ctTimeouts?.tcpSyn ?? CT_TIMEOUTS_DEFAULT.tcpSyn,
      CONFIG_CT_TIMEOUT_TCP_FIN: cfg.ctTimeouts?.tcpFin ?? CT_TIMEOUTS_DEFAULT.tcpFin,
      CONFIG_CT_TIMEOUT_ANY: cfg.ctTimeouts?.any ?? CT_TIMEOUTS_DEFAULT.any,
      ...natConstants(cfg.masquerade),
      ...sockLbConstants(cfg.sockLbCgroup),
      // Masquerading on other devices only: the native device's programs do NodePort and routing, no SNAT.
      ...(cfg.masquerade?.enabled && !masqOnNative(cfg.masquerade, cfg.nativeDev) ? { CONFIG_MASQ: 0 } : {}),
    };
    // Also in tunnel mode unless NodePort is off: NodePort from outside (lib/nodeport.h) and ARP for the
    // LoadBalancer IPs this node announces (lib/l2announce.h) ride on these programs.
    const netdev = !tunnel || cfg.masquerade?.enabled === true || cfg.nodePort !== false;
    // Everything below is undone, last first, when a later step fails: the collections closed, each hook put back
    // as it was (an earlier run's program switched back in, a new attachment removed), so a failed start loses
    // nothing that was working. Devices and routes stay: start() re-uses them.
    const undo: Array<() => void> = [];
    const commit: Array<() => void> = [];
    const attach = (c: Collection, prog: string, ifindex: number, ifname: string, dir: Direction): 'tcx' | 'tc' => {
      const a = this.pins.attachReversibly(c.program(prog), ifindex, ifname, dir);
      undo.push(() => a.undo());
      commit.push(() => a.commit());
      return a.kind;
    };
    const load = (obj: string, own: Record<string, number> = {}): Collection => {
      const c = Collection.load(path.join(cfg.objDir, obj), { constants: { ...constants, ...own }, pinRoot: cfg.bpfRoot });
      undo.push(() => c.close());
      return c;
    };
    try {
      const lxc = load('lxc.o');
      const host = load('host.o');
      const overlay = tunnel ? load('overlay.o') : undefined;
      const s: Started = {
        lxc,
        host,
        overlay,
        lxcMap: lxc.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec),
        lxcIfMap: lxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec),
        ipcache: lxc.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec),
        policy: lxc.map(POLICY_MAP).typed(policyKeyCodec, policyValueCodec),
        ipblock: lxc.map(IPBLOCK_MAP).typed(ipcacheKeyCodec, ipblockValueCodec),
        ct: [lxc.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec), lxc.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec)],
        snat: host.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec),
        ipmasq: host.map(IPMASQ_MAP).typed(ipmasqKeyCodec, ipmasqValueCodec),
        metrics: lxc.map(METRICS_MAP),
        hostDev,
        nativeDev,
        podMtu,
        masqDevs: [],
        natAddrs: [cfg.nodeIP, ...masqDevs.map((d) => d.ip)],
      };
      const mode = attach(host, 'cil_from_host', hostDev.ifindex, HOST_DEV, 'egress');
      if (overlay && vxlan) {
        attach(overlay, 'cil_from_overlay', vxlan.index, VXLAN_DEV, 'ingress');
        attach(overlay, 'cil_to_overlay', vxlan.index, VXLAN_DEV, 'egress');
      }
      if (netdev) {
        attach(host, 'cil_from_netdev', nativeDev.index, cfg.nativeDev, 'ingress');
        attach(host, 'cil_to_netdev', nativeDev.index, cfg.nativeDev, 'egress');
      }
      // Masquerade on another device: host.o again, that device's address as the node's and its ifindex as the
      // native one (maps shared through the pins), for the SNAT on its egress and the replies on its ingress.
      for (const d of masqDevs) {
        const c = load('host.o', { CONFIG_NODE_IP4: be32(d.ip), CONFIG_NATIVE_IFINDEX: d.link.index, CONFIG_MASQ: 1 });
        s.masqDevs.push(c);
        attach(c, 'cil_from_netdev', d.link.index, d.link.name, 'ingress');
        attach(c, 'cil_to_netdev', d.link.index, d.link.name, 'egress');
      }
      this.s = s;
      this.writeLocalEntries();
      this.attachMode = mode;
    } catch (err) {
      this.s = undefined;
      for (const u of undo.reverse()) {
        try {
          u();
        } catch {
          // Best effort: the error that made us unwind is the one to report.
        }
      }
      throw err;
    }
    for (const c of commit) c();
    // Switched from native mode (or masquerading off): the underlay device no longer needs our programs.
    if (!netdev) this.pins.detach(cfg.nativeDev, nativeDev.index);
    // A device dropped from --masquerade-interfaces since an earlier start: its programs go (src/datapath/masq-devices.ts).
    this.detachStaleMasqDevices(new Set([...(netdev ? [nativeDev.index] : []), ...masqDevs.map((d) => d.link.index)]));
    // Masquerade mappings of a datapath from before NAT_F_MASQ: flagged, so that their replies keep reaching the pods.
    const { snat, lxcMap } = this.s!;
    natAdoptUnflagged(snat, (ip) => ((lxcMap.lookup({ ip4: ip })?.flags ?? ENDPOINT_F_HOST) & ENDPOINT_F_HOST) === 0);
    this.switcherNs = Netns.current();
    this.switcher = new TcxSwitcher(this.pins, this.switcherNs, cfg.tcxSwitchQuietMs);
  }

  /** Detaches both hooks of every device outside `keep` whose egress runs cil_to_netdev (an earlier masquerade device). */
  private detachStaleMasqDevices(keep: ReadonlySet<number>): void {
    const nl = Netlink.open();
    try {
      for (const l of staleMasqDevices(nl, keep)) this.pins.detach(l.name, l.index);
    } finally {
      nl.close();
    }
  }

  /** Stops event readers and closes our file descriptors; pinned maps and links keep forwarding while the agent is away. */
  stop(): void {
    this.gcThread?.stop();
    this.gcThread = undefined;
    for (const w of [...this.watches]) w.stop();
    this.switcher?.stop();
    this.switcher = undefined;
    this.switcherNs?.close();
    this.switcherNs = undefined;
    this.s?.lxc.close();
    this.s?.host.close();
    this.s?.overlay?.close();
    for (const c of this.s?.masqDevs ?? []) c.close();
    this.s = undefined;
    this.policyShadow = undefined;
    this.wired.clear();
  }

  /** A map of the loaded endpoint object by name (pinned maps are shared by all objects). */
  map(name: string): BpfMap {
    if (!this.s) throw new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Cannot open map "${name}": the datapath is not started`);
    return this.s.lxc.map(name);
  }

  /** The egress IPs this node is the gateway of (for the NAT GC); none when the map cannot be read. */
  private localEgressIps(): Set<string> {
    try {
      return new Set([...this.started().host.map(EGRESS_IP_MAP_NAME).typed(ipv4Codec, u8).keys()]);
    } catch {
      return new Set();
    }
  }

  /** A map of the loaded host object by name (its own maps, e.g. the L2 responder, are not in the endpoint object). */
  hostMap(name: string): BpfMap {
    if (!this.s) throw new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Cannot open map "${name}": the datapath is not started`);
    return this.s.host.map(name);
  }

  /** The native (underlay) device as found at start. */
  get nativeDevice(): LinkInfo {
    return this.started().nativeDev;
  }

  get hostDevice(): HostDevice {
    return this.started().hostDev;
  }

  get mode(): 'tcx' | 'tc' {
    return this.attachMode;
  }

  get routingMode(): RoutingMode {
    return this.routing;
  }

  /** MTU for pod interfaces: the underlay's, minus the VXLAN overhead in tunnel mode. */
  get podMtu(): number {
    return this.started().podMtu;
  }

  /**
   * Reads the node's events ring: every `intervalMs` (default 20 ms) the events written since are decoded and handed
   * to onEvent, on the event loop, a bounded batch at a time. stats() counts what was read and what the datapath
   * lost (ring full) or held back (drop-event rate limit) since this call. stop() (or the datapath's stop())
   * delivers what the ring holds and ends the reading. Several readers would split the events between them.
   */
  startEvents(onEvent: (e: DatapathEvent) => void, o: EventReaderOptions = {}): EventWatch {
    const s = this.started();
    const inner = watchEvents(s.lxc.map(EVENTS_MAP), s.lxc.map(EVENTS_LOST_MAP), onEvent, o);
    const watch: EventWatch = {
      stop: () => {
        this.watches.delete(watch);
        inner.stop();
      },
      stats: () => inner.stats(),
    };
    this.watches.add(watch);
    return watch;
  }

  private started(): Started {
    if (!this.s) throw new DatapathError('TENDRIL_ERR_DATAPATH_NOT_STARTED', 'Datapath is not started');
    return this.s;
  }

  private setupHostDevices(nl: Netlink, mtu: number): HostDevice {
    if (!nl.getLink(HOST_DEV)) {
      nl.createVeth({ name: HOST_DEV, peerName: NET_DEV, mtu });
    }
    // NOARP: the stack sends pod-bound packets out of tendril_host without resolving pod addresses; the
    // BPF program on its egress writes the real MACs.
    nl.setLink(NET_DEV, { up: true, mtu, noarp: true });
    nl.setLink(HOST_DEV, { up: true, mtu, noarp: true });
    const dev = nl.getLink(HOST_DEV);
    if (!dev) throw new KernelError('TENDRIL_ERR_NETLINK', `Cannot find "${HOST_DEV}" after creating it`);
    const want = `${this.cfg.routerIP}/32`;
    const have = nl.listAddresses(dev.index).some((a) => `${a.address}/${a.prefixLen}` === want);
    if (!have) nl.addAddress(dev.index, want);
    nl.addRoute({ dst: this.cfg.podCidr, ifindex: dev.index, scope: 'link', src: this.cfg.routerIP, replace: true });
    return { name: HOST_DEV, ifindex: dev.index, mac: dev.mac };
  }

  /** The collect-metadata VXLAN device: BPF picks remote and VNI per packet. Re-used when it exists. */
  private setupVxlan(nl: Netlink, mtu: number): LinkInfo {
    const cur = nl.getLink(VXLAN_DEV);
    if (cur && cur.kind !== 'vxlan') {
      this.pins.detach(VXLAN_DEV, cur.index);
      nl.deleteLink(VXLAN_DEV);
    }
    if (!cur || cur.kind !== 'vxlan') nl.createVxlan({ name: VXLAN_DEV, port: VXLAN_PORT, external: true, learning: false, mtu });
    nl.setLink(VXLAN_DEV, { up: true, mtu });
    // Nothing is routed to it but the kernel would still try IPv6 neighbour discovery out of it.
    const v6 = `/proc/sys/net/ipv6/conf/${VXLAN_DEV}/disable_ipv6`;
    if (fs.existsSync(v6)) fs.writeFileSync(v6, '1');
    const dev = nl.getLink(VXLAN_DEV);
    if (!dev) throw new KernelError('TENDRIL_ERR_NETLINK', `Cannot find "${VXLAN_DEV}" after creating it`);
    return dev;
  }

  /**
   * The node's own addresses: ipcache identity host, and host entries in tendril_lxc so every program sees
   * "deliver to the stack" with one lookup. Entries of an earlier run's addresses are removed.
   */
  private writeLocalEntries(): void {
    const s = this.started();
    const { nodeIP, routerIP } = this.cfg;
    const old = this.state.local;
    for (const ip of old ? [old.nodeIP, old.routerIP] : []) {
      if (ip === nodeIP || ip === routerIP) continue;
      s.ipcache.delete({ prefix: ip });
      const cur = s.lxcMap.lookup({ ip4: ip });
      if (cur && cur.flags & ENDPOINT_F_HOST) s.lxcMap.delete({ ip4: ip });
    }
    for (const ip of [nodeIP, routerIP]) {
      s.ipcache.put({ prefix: ip }, localValue(IDENTITY_HOST));
      s.lxcMap.put({ ip4: ip }, { ifindex: 0, lxcId: 0, flags: ENDPOINT_F_HOST, mac: '00:00:00:00:00:00', nodeMac: '00:00:00:00:00:00', secId: IDENTITY_HOST, ip4: ip });
    }
    this.state.local = { nodeIP, routerIP };
    this.saveState();
  }

  /**
   * Wires an endpoint: endpoint map and ipcache entries, then cil_from_container on its veth's ingress as a pinned
   * tcx link (switched in place when one exists). Also the restore path: a tc bridge or an egress attachment left by
   * an earlier run goes.
   */
  addEndpoint(ep: DatapathEndpoint): void {
    const s = this.writeEndpoint(ep);
    this.switcher?.forget(ep.hostIfindex);
    if (this.pins.tcOnly) {
      this.pins.attach(s.lxc.program('cil_from_container'), ep.hostIfindex, ep.hostIfName, 'ingress').close();
    } else {
      this.pins.switchToTcx(s.lxc.program('cil_from_container'), ep.hostIfindex, ep.hostIfName, 'ingress');
    }
    // Earlier versions attached a pass-everything cil_to_container there.
    this.pins.detachHook(ep.hostIfName, ep.hostIfindex, 'egress');
  }

  /**
   * addEndpoint() for the agent's CNI path, without waiting for a tcx attach (an RCU grace period under RTNL, which
   * every pod start of the node would queue behind): the program goes on as a cls_bpf filter now, enforcing from
   * the first packet, and is switched to a pinned tcx link when the node is quiet (see TcxSwitcher). A veth that
   * already has our pinned link (the same endpoint added again) gets it switched in place. Async for the callers'
   * sake; the work is done synchronously, in the calling thread's namespace.
   */
  addEndpointAsync(ep: DatapathEndpoint): Promise<void> {
    const s = this.writeEndpoint(ep);
    const prog = s.lxc.program('cil_from_container');
    const reused = this.pins.tcOnly ? undefined : this.pins.reuse(prog, ep.hostIfindex, ep.hostIfName, 'ingress');
    if (reused) reused.close();
    else if (this.switcher && haveTcx()) this.switcher.bridge(prog, ep.hostIfindex, ep.hostIfName);
    else this.pins.attach(prog, ep.hostIfindex, ep.hostIfName, 'ingress').close();
    return Promise.resolve();
  }

  /**
   * A CNI call (ADD, DEL) is in flight: no switch to tcx starts (each holds RTNL over an RCU grace period, which the
   * call's own netlink work would queue behind) until the returned function is called and the node is quiet again.
   */
  holdTcxSwitch(): () => void {
    return this.switcher?.hold() ?? (() => {});
  }

  /** Endpoints whose ingress program still runs as a tc filter, waiting for the switch to tcx, and how switches went. */
  tcxSwitchStats(): TcxSwitchStats {
    return this.switcher?.stats() ?? { bridged: 0, switched: 0, failed: 0, offThread: 0 };
  }

  /**
   * Writes the endpoint's map entries. The same endpoint wired again (restore after a restart, a repeated add)
   * keeps its enforcement flags and policy entries; an endpoint new to this veth starts unenforced, and entries an
   * earlier endpoint of the same ID left in tendril_policy go.
   */
  private writeEndpoint(ep: DatapathEndpoint): ReturnType<NodeDatapath['started']> {
    const s = this.started();
    const cur = s.lxcIfMap.lookup(ep.hostIfindex);
    const same = cur !== undefined && cur.lxcId === ep.id;
    if (!same) this.removePolicyEntries(ep.id);
    const info = toInfo(ep, same ? cur.flags & ENFORCED_FLAGS : 0);
    s.lxcIfMap.update(ep.hostIfindex, info);
    s.lxcMap.update({ ip4: ep.ip }, info);
    s.ipcache.update({ prefix: ep.ip }, localValue(ep.identity));
    this.wired.set(ep.id, info);
    return s;
  }

  /**
   * Re-adopts an endpoint after an agent restart: same as add (attaches are switched in place); its enforcement
   * flags and policy entries stay as the earlier run left them, and the next setEndpointPolicy() diffs against them.
   */
  restoreEndpoint(ep: DatapathEndpoint): void {
    this.addEndpoint(ep);
  }

  /** Rewrites an existing endpoint's map entries (e.g. its identity changed), keeping its enforcement flags; no re-attach. */
  updateEndpoint(ep: DatapathEndpoint): void {
    const s = this.started();
    const cur = s.lxcIfMap.lookup(ep.hostIfindex);
    if (!cur || cur.lxcId !== ep.id) {
      throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot update endpoint ${ep.id} on "${ep.hostIfName}": it is not wired`);
    }
    const info = toInfo(ep, cur.flags & ENFORCED_FLAGS);
    s.lxcIfMap.update(ep.hostIfindex, info);
    s.lxcMap.update({ ip4: ep.ip }, info);
    s.ipcache.update({ prefix: ep.ip }, localValue(ep.identity));
    this.wired.set(ep.id, info);
    // A changed address: the old one no longer leads here.
    if (cur.ip4 !== ep.ip) {
      const old = s.lxcMap.lookup({ ip4: cur.ip4 });
      if (old && old.ifindex === ep.hostIfindex) s.lxcMap.delete({ ip4: cur.ip4 });
      const ipc = s.ipcache.lookup({ prefix: cur.ip4 });
      if (ipc && !(ipc.flags & IPCACHE_F_HAS_TUNNEL_EP) && ipc.identity !== IDENTITY_HOST) s.ipcache.delete({ prefix: cur.ip4 });
    }
  }

  /**
   * Unwires an endpoint: map entries, policy entries, conntrack entries of its address, attachments. Tolerant of
   * parts already gone. The endpoint ID comes from `ep.id` or, without it, from the endpoint map.
   */
  removeEndpoint(ep: Pick<DatapathEndpoint, 'ip' | 'hostIfName' | 'hostIfindex'> & { id?: number }): void {
    const s = this.started();
    const byIf = s.lxcIfMap.lookup(ep.hostIfindex);
    const epId = ep.id ?? byIf?.lxcId;
    const cur = s.lxcMap.lookup({ ip4: ep.ip });
    // An address already handed to a newer endpoint keeps that endpoint's entries.
    if (cur === undefined || cur.ifindex === ep.hostIfindex) {
      if (cur !== undefined) s.lxcMap.delete({ ip4: ep.ip });
      const ipc = s.ipcache.lookup({ prefix: ep.ip });
      if (ipc && !(ipc.flags & IPCACHE_F_HAS_TUNNEL_EP) && ipc.identity !== IDENTITY_HOST) s.ipcache.delete({ prefix: ep.ip });
    }
    s.lxcIfMap.delete(ep.hostIfindex);
    this.switcher?.forget(ep.hostIfindex);
    this.pins.detach(ep.hostIfName, ep.hostIfindex);
    if (epId !== undefined) {
      this.removePolicyEntries(epId);
      if (this.wired.get(epId)?.ifindex === ep.hostIfindex) this.wired.delete(epId);
    }
    // Only when the address is not already another endpoint's.
    if (cur === undefined || cur.ifindex === ep.hostIfindex) this.ctFlush({ ip: ep.ip });
  }

  // ---- L7 proxy ----

  /**
   * The node proxy's listener port (0 = no proxy: the datapath then does no socket lookups for proxy replies) and,
   * with a port, the policy route that delivers packets assigned to the proxy locally. The port is written into the
   * pinned map, so it outlives the agent like the policy entries that name it.
   */
  setProxyPort(port: number): void {
    const s = this.started();
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Invalid proxy port ${String(port)}`);
    if (port !== 0) ensureProxyRoute();
    s.lxc.map(PROXY_MAP).update(Buffer.alloc(4), proxyConfigValue(port), 'any');
  }

  // ---- policy ----

  /**
   * Diff-applies the endpoint's entries in place (no reload) and sets its enforcement flags in tendril_lxc and
   * tendril_lxc_if. Order: new/changed entries, then flags on / off, then stale entries removed, so a change never
   * passes through "enforced with nothing allowed" or "not enforced" transiently. Returns counts.
   */
  setEndpointPolicy(ep: DatapathEndpoint, p: EndpointPolicyState): { added: number; removed: number; changed: number } {
    const s = this.started();
    let byIf = this.wired.get(ep.id);
    if (!byIf || byIf.ifindex !== ep.hostIfindex) {
      byIf = s.lxcIfMap.lookup(ep.hostIfindex);
      if (!byIf || byIf.lxcId !== ep.id) {
        throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot set policy of endpoint ${ep.id} on "${ep.hostIfName}": it is not wired`);
      }
      this.wired.set(ep.id, byIf);
    }
    const shadow = this.shadow();
    const current = shadow.get(ep.id) ?? new Map<string, PolicyMapEntry>();
    const d = diffPolicy(ep.id, current, p.entries);
    shadow.set(ep.id, current);
    for (const e of [...d.add, ...d.change]) {
      s.policy.update(policyKey(ep.id, e), policyValue(e));
      current.set(entryKeyId(e), e);
    }
    const flags = (p.ingressEnforced ? ENDPOINT_F_INGRESS_ENFORCED : 0) | (p.egressEnforced ? ENDPOINT_F_EGRESS_ENFORCED : 0);
    if ((byIf.flags & ENFORCED_FLAGS) !== flags) {
      const next = (byIf.flags & ~ENFORCED_FLAGS) | flags;
      // tendril_lxc_if first: egress is decided there, and a pod's own traffic is what a policy change is usually for.
      s.lxcIfMap.update(ep.hostIfindex, { ...byIf, flags: next });
      this.wired.set(ep.id, { ...byIf, flags: next });
      const byIp = s.lxcMap.lookup({ ip4: byIf.ip4 });
      if (byIp && byIp.ifindex === ep.hostIfindex) s.lxcMap.update({ ip4: byIf.ip4 }, { ...byIp, flags: (byIp.flags & ~ENFORCED_FLAGS) | flags });
    }
    for (const e of d.remove) {
      s.policy.delete(policyKey(ep.id, e));
      current.delete(entryKeyId(e));
    }
    if (current.size === 0) shadow.delete(ep.id);
    return { added: d.add.length, removed: d.remove.length, changed: d.change.length };
  }

  /**
   * The endpoint's entries as tendril_policy holds them, with the packets and bytes each one decided. Read by exact
   * key (a trie lookup with the entry's own prefix length finds that entry): a walk of the whole trie costs ~70 µs
   * per entry of every endpoint.
   */
  endpointPolicy(epId: number): PolicyMapEntryStats[] {
    const s = this.started();
    const out: PolicyMapEntryStats[] = [];
    for (const e of this.shadow().get(epId)?.values() ?? []) {
      const v = s.policy.lookup(policyKey(epId, e));
      // A shorter prefix of the same identity answers when the entry itself is gone: its L4 length tells.
      if (v && v.l4PrefixLen === policyValue(e).l4PrefixLen) out.push({ ...entryFromMap(policyKey(epId, e), v), packets: Number(v.packets), bytes: Number(v.bytes) });
    }
    return out.sort(
      (a, b) =>
        (a.direction === b.direction ? 0 : a.direction === 'ingress' ? -1 : 1) ||
        a.identity - b.identity ||
        a.protocol - b.protocol ||
        a.port - b.port ||
        a.portPrefixLen - b.portPrefixLen,
    );
  }

  /** Removes every tendril_policy entry of an endpoint ID. */
  private removePolicyEntries(epId: number): void {
    const s = this.started();
    const shadow = this.shadow();
    const cur = shadow.get(epId);
    if (!cur) return;
    for (const e of cur.values()) s.policy.delete(policyKey(epId, e));
    shadow.delete(epId);
  }

  private shadow(): Map<number, Map<string, PolicyMapEntry>> {
    if (this.policyShadow) return this.policyShadow;
    const s = this.started();
    const shadow = new Map<number, Map<string, PolicyMapEntry>>();
    for (const [k, v] of s.policy.entries()) {
      const e = entryFromMap(k, v);
      let m = shadow.get(k.epId);
      if (!m) shadow.set(k.epId, (m = new Map()));
      m.set(entryKeyId(e), e);
    }
    this.policyShadow = shadow;
    return shadow;
  }

  // ---- local pod CIDRs ----

  /**
   * Routes a further pod CIDR of this node (one it grew into) to tendril_host, as start() does the primary; pod
   * delivery itself needs nothing more (endpoints are found by address). Idempotent.
   */
  addLocalPodCidr(cidr: string): void {
    const nl = Netlink.open();
    try {
      this.installRoute(nl, { dst: formatCidr(parseCidr(cidr)), dev: HOST_DEV, src: this.cfg.routerIP, scope: 'link' });
    } finally {
      nl.close();
    }
  }

  /** Removes the route of a pod CIDR this node gave up; false when it was not there. */
  removeLocalPodCidr(cidr: string): boolean {
    const nl = Netlink.open();
    try {
      const dev = nl.getLink(HOST_DEV);
      return dev ? nl.deleteRoute({ dst: formatCidr(parseCidr(cidr)), ifindex: dev.index }) : false;
    } finally {
      nl.close();
    }
  }

  // ---- ipcache ----

  /** Writes one ipcache entry (a remote endpoint's identity, a CIDR identity); with tunnelEndpoint it is tunnelled to. */
  ipcacheUpsert(prefix: string, v: { identity: number; tunnelEndpoint?: string }): void {
    const s = this.started();
    const value: IpcacheValue =
      v.tunnelEndpoint !== undefined
        ? { identity: v.identity, tunnelEndpoint: v.tunnelEndpoint, nodeId: 0, flags: IPCACHE_F_HAS_TUNNEL_EP, key: 0 }
        : localValue(v.identity);
    s.ipcache.update({ prefix }, value);
  }

  /** Removes one ipcache entry; false when it was not there. */
  ipcacheDelete(prefix: string): boolean {
    return this.started().ipcache.delete({ prefix });
  }

  /** Sets the identity of a NetworkPolicy ipBlock prefix (tendril_ipblock: matched by address, pods included). */
  ipBlockSet(prefix: string, identity: number): void {
    this.started().ipblock.update({ prefix }, identity);
  }

  /** Removes an ipBlock prefix; false when it was not there. */
  ipBlockDelete(prefix: string): boolean {
    return this.started().ipblock.delete({ prefix });
  }

  /** tendril_ipblock as the kernel holds it (unsorted). */
  dumpIpBlocks(): Array<{ prefix: string; identity: number }> {
    return [...this.started().ipblock.entries()].map(([k, identity]) => ({ prefix: k.prefix, identity }));
  }

  // ---- conntrack ----

  /** Every conntrack entry (TCP and other), unsorted. */
  ctList(): CtEntry[] {
    const s = this.started();
    const now = monotonicSeconds();
    const out: CtEntry[] = [];
    for (const m of s.ct) for (const [k, v] of m.entries()) out.push(toCtEntry(k, v, now));
    return out;
  }

  /** Deletes every conntrack entry, or those with `ip` as source or destination. Returns how many. */
  ctFlush(match: { ip?: string } = {}): number {
    const s = this.started();
    let n = 0;
    for (const m of s.ct) {
      const doomed: CtKey[] = [];
      for (const k of m.keys()) if (match.ip === undefined || k.saddr === match.ip || k.daddr === match.ip) doomed.push(k);
      for (const k of doomed) if (m.delete(k)) n++;
    }
    return n;
  }

  // ---- masquerading ----

  /** Every NAT entry (both directions), unsorted. */
  natList(): NatEntry[] {
    return natList(this.started().snat);
  }

  /** Deletes every NAT entry (live masqueraded flows get new ports). Returns how many. */
  natFlush(): number {
    this.natSources.clear();
    return natFlush(this.started().snat);
  }

  /** Replaces the ip-masq-agent's non-masquerade set (tendril_ipmasq). */
  ipmasqReplace(cidrs: readonly string[]): { added: number; removed: number } {
    return ipmasqReplace(this.started().ipmasq, cidrs);
  }

  ipmasqList(): string[] {
    return ipmasqList(this.started().ipmasq);
  }

  /** The address a pod's flow (its own tuple) leaves with, when masqueraded; undefined otherwise or before start(). */
  natSourceOf(t: FlowTuple): string | undefined {
    return this.natSources.get(t);
  }

  /** One flow's to-network events share one NAT lookup (nat-source-cache.ts). */
  private readonly natSources = new NatSourceCache((t) => {
    const s = this.s;
    return s && natLookupOut(s.snat, { saddr: t.src, daddr: t.dst, sport: t.sport, dport: t.dport, nexthdr: t.protocol, dir: 0, pad: 0 }, s.natAddrs)?.toAddr;
  });

  /**
   * Deletes expired entries (lifetime before now); the datapath never deletes, LRU only evicts under pressure.
   * The NAT entries of flows whose conntrack entry is gone go with them (natDeleted).
   */
  ctGc(): CtGcResult {
    const s = this.started();
    return ctGcPass({ ct: s.ct, snat: s.snat }, this.ctGcOptions());
  }

  /**
   * The same pass on the GC thread (ct-gc.ts), over its own descriptors of the pinned maps: the caller's event loop
   * goes on meanwhile. One pass at a time per node.
   */
  ctGcInThread(): Promise<CtGcResult> {
    this.started();
    this.gcThread ??= new CtGcThread(ctGcPins(this.cfg.bpfRoot));
    return this.gcThread.run(this.ctGcOptions());
  }

  private ctGcOptions(): CtGcOptions {
    const t = this.cfg.ctTimeouts;
    return {
      egressIps: this.localEgressIps(),
      idle: { tcp: t?.tcp ?? CT_TIMEOUTS_DEFAULT.tcp, any: t?.any ?? CT_TIMEOUTS_DEFAULT.any, tcpClosed: t?.tcpFin ?? CT_TIMEOUTS_DEFAULT.tcpFin },
    };
  }

  // ---- metrics ----

  /** Drops counted by the datapath (tendril_metrics), summed over CPUs, by reason and direction. */
  metrics(): DropMetric[] {
    const s = this.started();
    const out: DropMetric[] = [];
    for (const raw of s.metrics.keys()) {
      const k = metricsKeyCodec.decode(raw);
      let packets = 0n;
      let bytes = 0n;
      for (const v of s.metrics.lookupPerCpu(raw) ?? []) {
        const c = metricsValueCodec.decode(v);
        packets += c.packets;
        bytes += c.bytes;
      }
      const direction = k.dir === METRIC_DIR_INGRESS ? 'ingress' : k.dir === METRIC_DIR_EGRESS ? 'egress' : 'unknown';
      out.push({ reason: k.reason, description: dropReasonText(k.reason), direction, packets: Number(packets), bytes: Number(bytes) });
    }
    return out.sort((a, b) => a.reason - b.reason || a.direction.localeCompare(b.direction));
  }

  // ---- remote nodes ----

  /**
   * Installs or updates another node: its ipcache entries (pod CIDRs, node, router and health IPs) and routes to
   * its pod CIDRs. Idempotent, and safe on entries left by an earlier run; whatever the previous version of this
   * node installed that the new one does not (a changed CIDR, a new router IP) is removed. Runs in the calling
   * thread's network namespace.
   */
  upsertRemoteNode(input: RemoteNode): void {
    const s = this.started();
    const node = normalizeRemoteNode(input);
    if (node.nodeIP === this.cfg.nodeIP) {
      throw new DatapathError(
        'TENDRIL_ERR_DATAPATH_CONFIG',
        `Invalid remote node "${node.name}": nodeIP ${node.nodeIP} is this node's own address`,
      );
    }
    const plan = planRemoteNode(node, this.planContext());
    const prefixes = [...plan.entries.keys()];
    const old = this.state.nodes[node.name];
    // Write-ahead: record everything this node may have installed (old and new) before touching the kernel, so a
    // failure or crash half-way leaves nothing that a later remove or prune would not find.
    this.state.nodes[node.name] = {
      node,
      prefixes: [...new Set([...(old?.prefixes ?? []), ...prefixes])],
      routes: mergeRoutes(old?.routes ?? [], plan.routes),
    };
    this.saveState();

    // ipcache first: pods reach the node through it; the routes serve the node's own traffic.
    for (const [prefix, value] of plan.entries) s.ipcache.update({ prefix }, value);
    const nl = Netlink.open();
    try {
      // A node (re)appearing under an address may be another machine than the one last seen there.
      if (old?.node.nodeIP !== node.nodeIP) {
        this.forgetNeighbor(nl, node.nodeIP);
        if (old) this.forgetNeighbor(nl, old.node.nodeIP);
      }
      for (const r of plan.routes) this.installRoute(nl, r);
      this.state.nodes[node.name] = { node, prefixes, routes: plan.routes };
      for (const p of old?.prefixes ?? []) if (!plan.entries.has(p)) this.releasePrefix(p);
      for (const r of old?.routes ?? []) if (!plan.routes.some((n) => n.dst === r.dst)) this.releaseRoute(nl, r);
    } finally {
      nl.close();
    }
    this.saveState();
  }

  /** Removes a node's ipcache entries, routes and cached underlay neighbour; false when the node was not installed. */
  removeRemoteNode(name: string): boolean {
    this.started();
    const rec = this.state.nodes[name];
    if (!rec) return false;
    delete this.state.nodes[name];
    const nl = Netlink.open();
    try {
      for (const p of rec.prefixes) this.releasePrefix(p);
      for (const r of rec.routes) this.releaseRoute(nl, r);
      this.forgetNeighbor(nl, rec.node.nodeIP);
    } finally {
      nl.close();
    }
    this.saveState();
    return true;
  }

  /**
   * After a restart and a round of upserts: removes every recorded node not in `keepNames` (nodes that left the
   * cluster while the agent was down). Returns the names removed. Knows the nodes of earlier runs only through
   * config.stateFile.
   */
  pruneRemoteNodes(keepNames: readonly string[]): string[] {
    this.started();
    const keep = new Set(keepNames);
    const gone = Object.keys(this.state.nodes).filter((n) => !keep.has(n));
    for (const name of gone) this.removeRemoteNode(name);
    return gone;
  }

  /** The remote nodes installed (as recorded, including those of earlier runs not yet upserted again). */
  remoteNodes(): RemoteNode[] {
    return Object.values(this.state.nodes)
      .map((r) => r.node)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** tendril_ipcache as the kernel holds it, sorted by address then prefix length. */
  dumpIpcache(): IpcacheEntry[] {
    const s = this.started();
    const out: IpcacheEntry[] = [];
    for (const [k, v] of s.ipcache.entries()) {
      const e: IpcacheEntry = { prefix: k.prefix, identity: v.identity, flags: v.flags };
      if (v.flags & IPCACHE_F_HAS_TUNNEL_EP) e.tunnelEndpoint = v.tunnelEndpoint;
      out.push(e);
    }
    const order = (p: string): [number, number] => {
      const c = parseCidr(p);
      return [c.base, c.bits];
    };
    return out.sort((a, b) => {
      const [ab, al] = order(a.prefix);
      const [bb, bl] = order(b.prefix);
      return ab - bb || al - bl;
    });
  }

  private planContext(): PlanContext {
    return { mode: this.routing, hostDev: HOST_DEV, nativeDev: this.cfg.nativeDev, routerIP: this.cfg.routerIP };
  }

  /** A prefix no longer claimed by the node that had it: another node's claim takes over, else it goes. */
  private releasePrefix(prefix: string): void {
    const s = this.started();
    for (const rec of Object.values(this.state.nodes)) {
      if (!rec.prefixes.includes(prefix)) continue;
      const value = planRemoteNode(rec.node, this.planContext()).entries.get(prefix);
      if (value) {
        s.ipcache.update({ prefix }, value);
        return;
      }
    }
    s.ipcache.delete({ prefix });
  }

  /** Like releasePrefix() for a route: another node's route to the same destination is put back, else it goes. */
  private releaseRoute(nl: Netlink, r: PlannedRoute): void {
    for (const rec of Object.values(this.state.nodes)) {
      const other = rec.routes.find((o) => o.dst === r.dst);
      if (other) {
        this.installRoute(nl, other);
        return;
      }
    }
    const dev = nl.getLink(r.dev);
    // The device is gone, and its routes with it.
    if (!dev) return;
    nl.deleteRoute({ dst: r.dst, ifindex: dev.index, ...(r.gateway !== undefined ? { gateway: r.gateway } : {}) });
  }

  /**
   * Drops the underlay neighbour entry of a node address that appears or goes. A node deleted and re-created
   * under the same IP has a new MAC; the cached one would stay "reachable" for up to ~45 s and black-hole the
   * tunnel (or the native next hop) meanwhile, as Linux announces nothing when an address comes up. Dropping an
   * entry still in use costs one ARP exchange.
   */
  private forgetNeighbor(nl: Netlink, ip: string): void {
    nl.deleteNeighbor({ ifindex: this.started().nativeDev.index, ip });
  }

  private installRoute(nl: Netlink, r: PlannedRoute): void {
    const dev = nl.getLink(r.dev);
    if (!dev) throw new KernelError('TENDRIL_ERR_NETLINK', `Cannot add route to ${r.dst}: device "${r.dev}" not found`);
    nl.addRoute({
      dst: r.dst,
      ifindex: dev.index,
      scope: r.scope,
      replace: true,
      ...(r.gateway !== undefined ? { gateway: r.gateway } : {}),
      ...(r.src !== undefined ? { src: r.src } : {}),
    });
  }

  private saveState(): void {
    if (this.cfg.stateFile !== undefined) writeState(this.cfg.stateFile, this.state);
  }

  // ---- introspection ----

  /** Every tcx attachment of this node's interfaces, as `bpftool net show` lists them on newer bpftool. */
  attachments(): Attachment[] {
    const nl = Netlink.open();
    let links;
    try {
      links = nl.listLinks();
    } finally {
      nl.close();
    }
    // The kernel keeps 15 characters of a program name; ours are known in full by ID.
    const names = new Map<number, string>();
    for (const c of [this.s?.lxc, this.s?.host, this.s?.overlay]) for (const p of c?.programs.values() ?? []) names.set(p.id, p.name);
    const out: Attachment[] = [];
    const nl2 = Netlink.open();
    try {
      for (const l of links.sort((a, b) => a.index - b.index)) {
        for (const dir of ['ingress', 'egress'] as const) {
          for (const a of queryTcx(l.index, dir)) {
            out.push({ ifname: l.name, ifindex: l.index, attach: 'tcx', ...a, progName: names.get(a.progId) ?? a.progName });
          }
          for (const f of nl2.listBpfFilters(l.index, dir)) {
            const progId = f.progId ?? 0;
            out.push({ ifname: l.name, ifindex: l.index, attach: 'tc', direction: dir, progId, progName: names.get(progId) ?? f.name ?? '', linkId: 0 });
          }
        }
      }
    } finally {
      nl2.close();
    }
    return out;
  }

  /** The endpoint map as the kernel holds it. */
  dumpEndpoints(): Array<EndpointInfo> {
    const s = this.started();
    return [...s.lxcMap.entries()].map(([, v]) => v);
  }
}

/** The endpoint_info.flags bits setEndpointPolicy() owns. */
const ENFORCED_FLAGS = ENDPOINT_F_INGRESS_ENFORCED | ENDPOINT_F_EGRESS_ENFORCED;

function toInfo(ep: DatapathEndpoint, flags: number): EndpointInfo {
  return {
    ifindex: ep.hostIfindex,
    lxcId: ep.id,
    flags,
    mac: ep.podMac,
    nodeMac: ep.hostMac,
    secId: ep.identity,
    ip4: ep.ip,
  };
}

/** An ipcache value of this node: an identity, no tunnel. */
function localValue(identity: number): IpcacheValue {
  return { identity, tunnelEndpoint: NO_TUNNEL, nodeId: 0, flags: 0, key: 0 };
}

/** IPv4 text -> the u32 whose little-endian bytes are the address in network order (a __be32 in C). */
function be32(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}

function writeSysctl(key: string, value: string): void {
  fs.writeFileSync(path.join('/proc/sys', key), value);
}

function readSysctl(key: string): string | undefined {
  try {
    return fs.readFileSync(path.join('/proc/sys', key), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** CONFIG_SOCK_LB_CGROUP_ID/_LEVEL of lib/config.h: the socket-LB cgroup, or 0 (none). */
function sockLbConstants(dir: string | undefined): { CONFIG_SOCK_LB_CGROUP_ID: bigint; CONFIG_SOCK_LB_CGROUP_LEVEL: number } {
  const c = dir === undefined ? { id: 0n, level: 0 } : cgroupIdLevel(dir);
  return { CONFIG_SOCK_LB_CGROUP_ID: c.id, CONFIG_SOCK_LB_CGROUP_LEVEL: c.level };
}
