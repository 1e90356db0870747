// Socket-level load-balancing (bpf/sock.c): the cgroup sock_addr programs on one cgroup v2 directory (the lab makes
// one per node), sharing the node's pinned LB maps. Sockets of processes in that cgroup reach a service's backend
// directly; everything else keeps the per-packet translation of the endpoint program.
import path from 'node:path';
import {
  BPF_CGROUP_INET4_CONNECT,
  BPF_CGROUP_INET4_GETPEERNAME,
  BPF_CGROUP_UDP4_RECVMSG,
  BPF_CGROUP_UDP4_SENDMSG,
  CgroupLink,
  Collection,
  isCgroup2,
  isCgroupRoot,
} from '../kernel/bpf/index.js';
import { parseIPv4 } from '../util/ip.js';
import { DatapathError } from './errors.js';

export interface SockLbConfig {
  /** Directory of build/bpf (sock.o). */
  objDir: string;
  /** The node's bpffs root: sock.o re-uses the pinned LB maps there. */
  bpfRoot: string;
  /** The node's own IPv4: a NodePort on it (or on loopback) is served. */
  nodeIP: string;
  /** cgroup v2 directory the programs attach to; never the hierarchy's root. */
  cgroup: string;
}

const HOOKS: Array<[string, number]> = [
  ['tendril_sock4_connect', BPF_CGROUP_INET4_CONNECT],
  ['tendril_sock4_sendmsg', BPF_CGROUP_UDP4_SENDMSG],
  ['tendril_sock4_recvmsg', BPF_CGROUP_UDP4_RECVMSG],
  ['tendril_sock4_getpeername', BPF_CGROUP_INET4_GETPEERNAME],
];

export class SockLb {
  private readonly cfg: SockLbConfig;
  private coll: Collection | undefined;
  private links: CgroupLink[] = [];

  constructor(cfg: SockLbConfig) {
    if (!isCgroup2(cfg.cgroup)) {
      throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Socket LB: "${cfg.cgroup}" is not a cgroup v2 directory`);
    }
    if (isCgroupRoot(cfg.cgroup)) {
      throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Socket LB: "${cfg.cgroup}" is the root of its cgroup hierarchy: give a cgroup of its own`);
    }
    this.cfg = cfg;
  }

  get cgroup(): string {
    return this.cfg.cgroup;
  }

  get enabled(): boolean {
    return this.links.length === HOOKS.length;
  }

  /** Loads sock.o (after the node datapath pinned its maps) and attaches the four hooks; all or nothing. */
  start(): void {
    if (this.coll) return;
    const coll = Collection.load(path.join(this.cfg.objDir, 'sock.o'), {
      constants: { CONFIG_NODE_IP4: networkOrder(this.cfg.nodeIP) },
      pinRoot: this.cfg.bpfRoot,
    });
    try {
      for (const [prog, type] of HOOKS) this.links.push(CgroupLink.attach(coll.program(prog), this.cfg.cgroup, type));
    } catch (err) {
      for (const l of this.links) l.close();
      this.links = [];
      coll.close();
      throw err;
    }
    this.coll = coll;
  }

  /** Detaches the hooks and closes the programs; the pinned maps stay (the node datapath owns them). */
  stop(): void {
    for (const l of this.links) l.close();
    this.links = [];
    this.coll?.close();
    this.coll = undefined;
  }
}

/** IPv4 text -> the u32 whose little-endian bytes are the address in network order (a __be32 in C). */
function networkOrder(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}
