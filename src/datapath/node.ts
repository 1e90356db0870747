// The node's datapath: host devices, the loaded BPF objects, and how an endpoint is wired into them.
// One loaded instance of each object serves every endpoint; adding an endpoint is map updates + two tcx attaches.
import fs from 'node:fs';
import path from 'node:path';
import { Collection, Link, type BpfProgram, type TypedMap, ensureBpffs, queryTcx } from '../kernel/bpf/index.js';
import { Netlink } from '../kernel/netlink/index.js';
import { KernelError } from '../kernel/errors.js';
import { parseIPv4 } from '../util/ip.js';
import {
  type EndpointInfo,
  type EndpointKey,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
} from './maps.js';

export const HOST_DEV = 'tendril_host';
export const NET_DEV = 'tendril_net';

export interface NodeDatapathConfig {
  /** Pod CIDR of this node, e.g. 172.20.0.0/24: routed to tendril_host. */
  podCidr: string;
  /** Router IP (pod gateway), held by tendril_host as /32. */
  routerIP: string;
  /** The node's own (underlay) IP, if known. */
  nodeIP?: string;
  /** bpffs directory for this node's pinned maps and links. */
  bpfRoot: string;
  /** Directory with the compiled objects (lxc.o, host.o). */
  objDir: string;
  mtu: number;
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

type Direction = 'ingress' | 'egress';

export interface Attachment {
  ifname: string;
  ifindex: number;
  direction: Direction;
  progName: string;
  progId: number;
  linkId: number;
}

export class NodeDatapath {
  private readonly cfg: NodeDatapathConfig;
  private lxc: Collection | undefined;
  private host: Collection | undefined;
  private lxcMap: TypedMap<EndpointKey, EndpointInfo> | undefined;
  private lxcIfMap: TypedMap<number, EndpointInfo> | undefined;
  private hostDev: HostDevice | undefined;
  private attachMode: 'tcx' | 'tc' = 'tcx';

  constructor(cfg: NodeDatapathConfig) {
    this.cfg = cfg;
  }

  /** Creates host devices and routes, loads the objects (re-using pinned maps) and attaches the host program. */
  start(): void {
    ensureBpffs();
    fs.mkdirSync(path.join(this.cfg.bpfRoot, 'links'), { recursive: true });
    this.hostDev = this.setupHostDevices();
    const constants = {
      CONFIG_ROUTER_IP4: be32(this.cfg.routerIP),
      CONFIG_HOST_IFINDEX: this.hostDev.ifindex,
      CONFIG_NODE_IP4: this.cfg.nodeIP ? be32(this.cfg.nodeIP) : 0,
    };
    this.lxc = Collection.load(path.join(this.cfg.objDir, 'lxc.o'), { constants, pinRoot: this.cfg.bpfRoot });
    this.host = Collection.load(path.join(this.cfg.objDir, 'host.o'), { constants, pinRoot: this.cfg.bpfRoot });
    this.lxcMap = this.lxc.map('tendril_lxc').typed(endpointKeyCodec, endpointInfoCodec);
    this.lxcIfMap = this.lxc.map('tendril_lxc_if').typed(ifindexKeyCodec, endpointInfoCodec);
    const link = this.attachPinned(this.host.program('cil_from_host'), this.hostDev.ifindex, HOST_DEV, 'egress');
    this.attachMode = link.kind;
    link.close();
  }

  /** Closes our file descriptors; pinned maps and links keep forwarding while the agent is away. */
  stop(): void {
    this.lxc?.close();
    this.host?.close();
    this.lxc = undefined;
    this.host = undefined;
  }

  get hostDevice(): HostDevice {
    if (!this.hostDev) throw new KernelError('TENDRIL_ERR_BPF', 'Datapath is not started');
    return this.hostDev;
  }

  get mode(): 'tcx' | 'tc' {
    return this.attachMode;
  }

  private setupHostDevices(): HostDevice {
    const nl = Netlink.open();
    try {
      if (!nl.getLink(HOST_DEV)) {
        nl.createVeth({ name: HOST_DEV, peerName: NET_DEV, mtu: this.cfg.mtu });
      }
      // NOARP: the stack sends pod-bound packets out of tendril_host without resolving pod addresses; the
      // BPF program on its egress writes the real MACs.
      nl.setLink(NET_DEV, { up: true, mtu: this.cfg.mtu, noarp: true });
      nl.setLink(HOST_DEV, { up: true, mtu: this.cfg.mtu, noarp: true });
      const dev = nl.getLink(HOST_DEV);
      if (!dev) throw new KernelError('TENDRIL_ERR_NETLINK', `Cannot find "${HOST_DEV}" after creating it`);
      const want = `${this.cfg.routerIP}/32`;
      const have = nl.listAddresses(dev.index).some((a) => `${a.address}/${a.prefixLen}` === want);
      if (!have) nl.addAddress(dev.index, want);
      nl.addRoute({ dst: this.cfg.podCidr, ifindex: dev.index, scope: 'link', src: this.cfg.routerIP, replace: true });
      writeSysctl('net/ipv4/ip_forward', '1');
      for (const d of [HOST_DEV, NET_DEV]) writeSysctl(`net/ipv4/conf/${d}/rp_filter`, '0');
      return { name: HOST_DEV, ifindex: dev.index, mac: dev.mac };
    } finally {
      nl.close();
    }
  }

  /**
   * Attaches `prog` and pins the link; when a pinned link of an earlier agent run exists, it is switched to the
   * freshly loaded program in place (BPF_LINK_UPDATE), so traffic never sees a gap.
   */
  private attachPinned(prog: BpfProgram, ifindex: number, ifname: string, dir: Direction): Link {
    const pin = this.linkPin(ifname, dir);
    if (fs.existsSync(pin)) {
      const old = Link.openPinned(pin);
      const info = Link.info(old.fd);
      if (info.ifindex === ifindex) {
        old.update(prog);
        return old;
      }
      // The interface was re-created since the pin was made: the old link is dead.
      old.close();
      fs.unlinkSync(pin);
    }
    const link = prog.attach({ ifindex, direction: dir, mode: 'auto' });
    link.pin(pin);
    return link;
  }

  private linkPin(ifname: string, dir: Direction): string {
    return path.join(this.cfg.bpfRoot, 'links', `${ifname}-${dir}`);
  }

  private maps(): { lxc: TypedMap<EndpointKey, EndpointInfo>; lxcIf: TypedMap<number, EndpointInfo> } {
    if (!this.lxcMap || !this.lxcIfMap || !this.lxc) throw new KernelError('TENDRIL_ERR_BPF', 'Datapath is not started');
    return { lxc: this.lxcMap, lxcIf: this.lxcIfMap };
  }

  /** Wires an endpoint: endpoint map entries, then cil_from_container / cil_to_container on its host-side veth. */
  addEndpoint(ep: DatapathEndpoint): void {
    const { lxc, lxcIf } = this.maps();
    const info = toInfo(ep);
    lxcIf.update(ep.hostIfindex, info);
    lxc.update({ ip4: ep.ip }, info);
    this.attachPinned(this.lxc!.program('cil_from_container'), ep.hostIfindex, ep.hostIfName, 'ingress').close();
    this.attachPinned(this.lxc!.program('cil_to_container'), ep.hostIfindex, ep.hostIfName, 'egress').close();
  }

  /** Re-adopts an endpoint after an agent restart: same as add (attaches are switched in place). */
  restoreEndpoint(ep: DatapathEndpoint): void {
    this.addEndpoint(ep);
  }

  /** Unwires an endpoint; tolerant of parts already gone. */
  removeEndpoint(ep: Pick<DatapathEndpoint, 'ip' | 'hostIfName' | 'hostIfindex'>): void {
    const { lxc, lxcIf } = this.maps();
    const cur = lxc.lookup({ ip4: ep.ip });
    if (cur && cur.ifindex === ep.hostIfindex) lxc.delete({ ip4: ep.ip });
    lxcIf.delete(ep.hostIfindex);
    for (const dir of ['ingress', 'egress'] as const) {
      const pin = this.linkPin(ep.hostIfName, dir);
      if (!fs.existsSync(pin)) continue;
      const link = Link.openPinned(pin);
      try {
        link.detach();
      } catch {
        // The interface is already gone, and with it the attachment.
      } finally {
        link.close();
      }
      fs.rmSync(pin, { force: true });
    }
  }

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
    for (const c of [this.lxc, this.host]) for (const p of c?.programs.values() ?? []) names.set(p.id, p.name);
    const out: Attachment[] = [];
    for (const l of links.sort((a, b) => a.index - b.index)) {
      for (const dir of ['ingress', 'egress'] as const) {
        for (const a of queryTcx(l.index, dir)) out.push({ ifname: l.name, ifindex: l.index, ...a, progName: names.get(a.progId) ?? a.progName });
      }
    }
    return out;
  }

  /** The endpoint map as the kernel holds it. */
  dumpEndpoints(): Array<EndpointInfo> {
    const { lxc } = this.maps();
    return [...lxc.entries()].map(([, v]) => v);
  }
}

function toInfo(ep: DatapathEndpoint): EndpointInfo {
  return {
    ifindex: ep.hostIfindex,
    lxcId: ep.id,
    flags: 0,
    mac: ep.podMac,
    nodeMac: ep.hostMac,
    secId: ep.identity,
    ip4: ep.ip,
  };
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
