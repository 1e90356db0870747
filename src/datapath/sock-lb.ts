// Socket-level load-balancing (bpf/sock.c): the cgroup sock_addr programs on one cgroup v2 directory (the lab makes
// one per node), sharing the node's pinned LB maps. Sockets of processes in that cgroup reach a service's backend
// directly; everything else keeps the per-packet translation of the endpoint program. The links are pinned under
// <bpfRoot>/sock-lb/ so the hooks stay attached while the agent is down; the next start adopts each pinned link and
// swaps its program in place (BPF_LINK_UPDATE), so an agent restart leaves no moment without socket LB.
import fs from 'node:fs';
import path from 'node:path';
import {
  BPF_CGROUP_INET4_CONNECT,
  BPF_CGROUP_INET4_GETPEERNAME,
  BPF_CGROUP_UDP4_RECVMSG,
  BPF_CGROUP_UDP4_SENDMSG,
  CgroupLink,
  Collection,
  IterLink,
  isCgroup2,
  isCgroupRoot,
} from '../kernel/bpf/index.js';
import { Netns } from '../kernel/netns/index.js';
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

/** Where the links of the sock programs are pinned below a node's bpffs root. */
export function sockLinkDir(bpfRoot: string): string {
  return path.join(bpfRoot, 'sock-lb');
}

/**
 * Removes the pinned links of an earlier run (socket LB now off). Nobody else holds them, so unpinning releases
 * and detaches them. Returns the pins removed.
 */
export function removeSockLbLinks(bpfRoot: string): string[] {
  const dir = sockLinkDir(bpfRoot);
  if (!fs.existsSync(dir)) return [];
  const pins = fs.readdirSync(dir).map((n) => path.join(dir, n));
  fs.rmSync(dir, { recursive: true, force: true });
  return pins;
}

/**
 * A backend whose sockets are to go: IPv4, port, IP protocol (6 TCP, 17 UDP), and the service ID (rev_nat_index) of
 * the frontend it left: only the sockets socket LB connected to it through that frontend go.
 */
export interface SockBackend {
  ip: string;
  port: number;
  proto: number;
  revNatIndex: number;
}

export interface SockTermResult {
  /** Sockets destroyed (their owners see ECONNABORTED). */
  destroyed: number;
  /** Namespaces that could not be walked, with why (a pod's namespace going away meanwhile, typically). */
  failed: Array<{ netns: string; error: string }>;
}

const TERM_MAP = 'tendril_lb4_sock_term';
const TERM_PROGS = ['tendril_sock4_term_tcp', 'tendril_sock4_term_udp'];

export class SockLb {
  private readonly cfg: SockLbConfig;
  private coll: Collection | undefined;
  private links: CgroupLink[] = [];
  private iters: IterLink[] = [];

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

  /** How start() got each hook: 'adopted' (a pinned link of an earlier run, program replaced) or 'attached'. */
  readonly how = new Map<string, 'adopted' | 'attached'>();

  /**
   * Loads sock.o (after the node datapath pinned its maps) and puts its programs on the four hooks: a pinned link
   * of an earlier run on the same cgroup and hook gets the new program in place, a missing one is attached and
   * pinned. Fresh attachments are all or nothing when a later hook fails; an adopted link already switched keeps the
   * new program (the link holds it), the others their earlier one.
   */
  start(): void {
    if (this.coll) return;
    const coll = Collection.load(path.join(this.cfg.objDir, 'sock.o'), {
      constants: { CONFIG_NODE_IP4: networkOrder(this.cfg.nodeIP) },
      pinRoot: this.cfg.bpfRoot,
    });
    const dir = sockLinkDir(this.cfg.bpfRoot);
    const fresh: Array<{ link: CgroupLink; pin: string }> = [];
    this.how.clear();
    try {
      fs.mkdirSync(dir, { recursive: true });
      for (const [name, type] of HOOKS) {
        const prog = coll.program(name);
        const pin = path.join(dir, name);
        const old = this.adopt(pin, type);
        if (old) {
          old.update(prog);
          this.links.push(old);
          this.how.set(name, 'adopted');
          continue;
        }
        const link = CgroupLink.attach(prog, this.cfg.cgroup, type);
        fresh.push({ link, pin });
        this.links.push(link);
        link.pin(pin);
        this.how.set(name, 'attached');
      }
      for (const name of TERM_PROGS) this.iters.push(IterLink.attach(coll.program(name)));
    } catch (err) {
      for (const it of this.iters) it.close();
      this.iters = [];
      for (const { link, pin } of fresh) {
        fs.rmSync(pin, { force: true });
        link.close();
      }
      for (const l of this.links) l.close();
      this.links = [];
      coll.close();
      throw err;
    }
    this.coll = coll;
  }

  /** The pinned link at `pin` when it is ours for this cgroup and hook; a stale pin (other cgroup) is removed. */
  private adopt(pin: string, type: number): CgroupLink | undefined {
    if (!fs.existsSync(pin)) return undefined;
    try {
      return CgroupLink.openPinned(pin, this.cfg.cgroup, type);
    } catch {
      // Pinned for another cgroup (the configuration changed) or not a link: unpinning detaches it.
      fs.rmSync(pin, { force: true });
      return undefined;
    }
  }

  /**
   * Closes our fds of the links and programs. The pinned links keep the programs attached (the next start adopts
   * them), so stopping the agent leaves socket LB working; an agent started without socket LB removes the pins
   * (removeSockLbLinks()).
   */
  stop(): void {
    this.termQueue = [];
    for (const it of this.iters) it.close();
    this.iters = [];
    for (const l of this.links) l.close();
    this.links = [];
    this.coll?.close();
    this.coll = undefined;
  }

  /**
   * Destroys the sockets socket LB connected to `backends` (each through the frontend it left), in each namespace of
   * `netns` (paths; the agent's own namespace is walked too): the iterators over TCP and UDP sockets run once per
   * namespace with the pairs in tendril_lb4_sock_term. A namespace that cannot be entered is reported, not fatal.
   * Synchronous: the calling thread is in each namespace in turn (terminateLater() yields between them).
   */
  terminate(backends: readonly SockBackend[], netns: readonly string[]): SockTermResult {
    const out: SockTermResult = { destroyed: 0, failed: [] };
    const keys = this.termBegin(backends);
    if (keys.length === 0) return out;
    try {
      out.destroyed += this.termPass(undefined, out);
      for (const p of new Set(netns)) out.destroyed += this.termPass(p, out);
    } finally {
      this.termEnd(keys);
    }
    return out;
  }

  /**
   * terminate() off the caller's stack, one namespace per event-loop turn: the agent's thread is in one pod's
   * namespace for one pass at a time and serves its API and watches in between. Calls coalesce: backends queued while
   * a round runs go together in the next round (one walk of each namespace for all of them). `netns()` is asked at
   * the start of each round. `done` gets each round's result. stop() drops what is queued; a round in progress ends
   * after the pass it is in.
   */
  terminateLater(backends: readonly SockBackend[], netns: () => readonly string[], done: (r: SockTermResult, backends: SockBackend[]) => void): void {
    if (!this.coll || backends.length === 0) return;
    this.termQueue.push(...backends);
    this.termNetns = netns;
    this.termDone = done;
    // termActive, not termRunning: the drain ends (its loop found the queue empty) before its promise settles, and a
    // call in between must start a new drain instead of queueing behind one that already left.
    if (!this.termActive) {
      this.termActive = true;
      const run: Promise<void> = this.termDrain()
        .catch((err: unknown) => this.termDone({ destroyed: 0, failed: [{ netns: '(all)', error: (err as Error).message }] }, []))
        .finally(() => {
          if (this.termRunning === run) this.termRunning = undefined;
        });
      this.termRunning = run;
    }
  }

  /** Resolves when no termination round is queued or running (for tests and benches). */
  async termIdle(): Promise<void> {
    while (this.termRunning) await this.termRunning;
  }

  private termQueue: SockBackend[] = [];
  private termNetns: () => readonly string[] = () => [];
  private termDone: (r: SockTermResult, backends: SockBackend[]) => void = () => undefined;
  private termRunning: Promise<void> | undefined;
  private termActive = false;

  private async termDrain(): Promise<void> {
    try {
      await this.termRounds();
    } finally {
      this.termActive = false;
    }
  }

  private async termRounds(): Promise<void> {
    const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
    await turn();
    while (this.coll && this.termQueue.length > 0) {
      const batch = this.termQueue.splice(0);
      const out: SockTermResult = { destroyed: 0, failed: [] };
      const keys = this.termBegin(batch);
      if (keys.length === 0) continue;
      try {
        out.destroyed += this.termPass(undefined, out);
        for (const p of new Set(this.termNetns())) {
          await turn();
          if (!this.coll) return;
          out.destroyed += this.termPass(p, out);
        }
      } finally {
        if (this.coll) this.termEnd(keys);
      }
      this.termDone(out, batch);
    }
  }

  /** Writes the (backend, service) pairs of a round into tendril_lb4_sock_term; returns their keys. */
  private termBegin(backends: readonly SockBackend[]): Buffer[] {
    if (!this.coll || backends.length === 0) return [];
    const term = this.coll.map(TERM_MAP);
    const keys = [...new Map(backends.filter((b) => b.proto === 6 || b.proto === 17).map((b) => {
      const k = termKey(b);
      return [k.toString('hex'), k] as const;
    })).values()];
    const written: Buffer[] = [];
    try {
      for (const k of keys) {
        term.put(k, Buffer.from([1]));
        written.push(k);
      }
    } catch (err) {
      this.termEnd(written);
      throw err;
    }
    return written;
  }

  private termEnd(keys: readonly Buffer[]): void {
    if (!this.coll) return;
    const term = this.coll.map(TERM_MAP);
    for (const k of keys) term.delete(k);
  }

  /** One walk of the TCP and UDP sockets of namespace `p` (undefined: the calling thread's); failures go to out. */
  private termPass(p: string | undefined, out: SockTermResult): number {
    const pass = (): number => this.iters.reduce((n, it) => n + it.run().length, 0);
    if (p === undefined) return pass();
    let ns: Netns | undefined;
    try {
      ns = Netns.open(p);
      return ns.run(pass);
    } catch (err) {
      out.failed.push({ netns: p, error: (err as Error).message });
      return 0;
    } finally {
      ns?.close();
    }
  }

}

/** struct lb4_term_key: address and port in network order, protocol, pad, rev_nat_index (host order), pad. */
function termKey(b: SockBackend): Buffer {
  const k = Buffer.alloc(12);
  k.writeUInt32BE(parseIPv4(b.ip), 0);
  k.writeUInt16BE(b.port, 4);
  k.writeUInt8(b.proto, 6);
  k.writeUInt16LE(b.revNatIndex, 8);
  return k;
}

/** IPv4 text -> the u32 whose little-endian bytes are the address in network order (a __be32 in C). */
function networkOrder(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}
