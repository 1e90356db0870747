// The relay (hubble-relay's role): one Observer API for the whole cluster. It asks every node's flow server,
// merges their flows in time order, and reports nodes it cannot reach as NODE_UNAVAILABLE. Its health service says
// SERVING while at least one node answers, as Hubble Relay's does (checked every few seconds).
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ObserverClient, type StreamHandle } from './client.js';
import {
  nodeToProto,
  observerService,
  queryFromProto,
  responseToProto,
  statusToProto,
  type FlowsQuery,
  type FlowsResponse,
  type NodeInfo,
  type ServerStatus,
} from './codec.js';
import { ObserveError } from './errors.js';
import { claimObserverSocket } from './server.js';
import { compileFilters } from './filter.js';
import { HealthService } from './health.js';
import { timeToNs, type Flow } from './model.js';
import { TENDRIL_VERSION } from './version.js';

export interface RelayPeer {
  /** Node name. */
  name: string;
  /** The node's flow server: "unix:///path", "/path.sock" or "host:port". */
  address: string;
}

export interface RelayOptions {
  socketPath: string;
  /** Also listen on 127.0.0.1:tcpPort; 0 picks a free port. */
  tcpPort?: number;
  peers?: RelayPeer[];
  version?: string;
  /** How long followed flows are held so flows of different nodes leave in time order (default 100 ms). */
  sortWindowMs?: number;
  /** Deadline for a node's answer (unary calls, a non-following GetFlows, a history when following); default 3 s. */
  peerTimeoutMs?: number;
  /** How often the nodes are asked whether any answers, for the health service (default 5 s, as Hubble Relay). */
  healthIntervalMs?: number;
}

interface Peer {
  info: RelayPeer;
  client: ObserverClient;
}

interface Held {
  flow: Flow;
  node: string;
  ns: bigint;
  at: number;
}

type Stream = grpc.ServerWritableStream<Record<string, unknown>, Record<string, unknown>>;
type Unary = grpc.sendUnaryData<Record<string, unknown>>;

function byTime(a: Held, b: Held): number {
  return a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}

function statusError(code: grpc.status, details: string): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(details), { code, details });
}

export class Relay {
  private readonly server = new grpc.Server();
  private readonly peers = new Map<string, Peer>();
  private readonly calls = new Set<Stream>();
  private readonly cleanups = new Set<() => void>();
  private readonly startedAt = process.hrtime.bigint();
  private readonly version: string;
  private readonly window: number;
  private readonly timeout: number;
  // NOT_SERVING until a node has answered, as Hubble Relay starts.
  private readonly health = new HealthService('NOT_SERVING');
  private readonly healthInterval: number;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private reprobe = false;
  private started = false;
  private stopping = false;
  private boundTcp: string | undefined;

  constructor(private readonly opts: RelayOptions) {
    this.version = opts.version ?? TENDRIL_VERSION;
    this.window = opts.sortWindowMs ?? 100;
    this.timeout = opts.peerTimeoutMs ?? 3000;
    this.healthInterval = opts.healthIntervalMs ?? 5000;
    this.setPeers(opts.peers ?? []);
    this.health.addTo(this.server);
    this.server.addService(observerService(), {
      GetFlows: (call: Stream) => {
        this.getFlows(call).catch((err: unknown) => call.emit('error', statusError(grpc.status.INTERNAL, (err as Error).message)));
      },
      ServerStatus: (_c: unknown, cb: Unary) => {
        this.status().then((s) => cb(null, statusToProto(s)), (err: Error) => cb(statusError(grpc.status.INTERNAL, err.message)));
      },
      GetNodes: (_c: unknown, cb: Unary) => {
        this.nodes().then((ns) => cb(null, { nodes: ns.map(nodeToProto) }), (err: Error) => cb(statusError(grpc.status.INTERNAL, err.message)));
      },
      GetNamespaces: (_c: unknown, cb: Unary) => {
        this.namespaces().then((ns) => cb(null, { namespaces: ns.map((namespace) => ({ namespace })) }), (err: Error) => cb(statusError(grpc.status.INTERNAL, err.message)));
      },
    });
  }

  /** Replaces the node list (the caller follows cluster membership); streams already open keep their nodes. */
  setPeers(peers: RelayPeer[]): void {
    const wanted = new Map(peers.map((p) => [p.name, p]));
    let changed = false;
    for (const [name, p] of this.peers) {
      const w = wanted.get(name);
      if (!w || w.address !== p.info.address) {
        p.client.close();
        this.peers.delete(name);
        changed = true;
      }
    }
    for (const p of peers) {
      if (this.peers.has(p.name)) continue;
      this.peers.set(p.name, { info: { ...p }, client: new ObserverClient(p.address) });
      changed = true;
    }
    if (changed) this.probe();
  }

  /** What the health service answers: SERVING while at least one node answers. */
  get serving(): boolean {
    return this.health.status === 'SERVING';
  }

  /** Asks the nodes now (one probe at a time; a request during one runs again after it), then every interval. */
  private probe(): void {
    if (!this.started || this.stopping) return;
    if (this.probing) {
      this.reprobe = true;
      return;
    }
    clearTimeout(this.probeTimer);
    this.probing = this.status().then(
      () => undefined,
      () => undefined,
    );
    void this.probing.then(() => {
      this.probing = undefined;
      if (this.stopping) return;
      if (this.reprobe) {
        this.reprobe = false;
        this.probe();
      } else {
        this.probeTimer = setTimeout(() => this.probe(), this.healthInterval);
      }
    });
  }

  get peerList(): RelayPeer[] {
    return [...this.peers.values()].map((p) => ({ ...p.info }));
  }

  async start(): Promise<void> {
    if (this.started) return;
    const file = this.opts.socketPath;
    await claimObserverSocket(file);
    await bind(this.server, `unix://${file}`);
    fs.chmodSync(file, 0o600);
    if (this.opts.tcpPort !== undefined) this.boundTcp = `127.0.0.1:${await bind(this.server, `127.0.0.1:${this.opts.tcpPort}`)}`;
    this.started = true;
    this.probe();
  }

  get tcpAddress(): string | undefined {
    return this.boundTcp;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.probeTimer);
    this.health.close();
    for (const c of this.cleanups) c();
    this.cleanups.clear();
    for (const call of this.calls) call.end();
    this.calls.clear();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    for (const p of this.peers.values()) p.client.close();
    // A probe in flight ends within the node deadline; nothing is scheduled after it.
    await this.probing;
    if (this.started) fs.rmSync(this.opts.socketPath, { force: true });
    this.started = false;
  }

  /** Sums of the nodes' counters; unreachable nodes are listed. */
  async status(): Promise<ServerStatus> {
    const answers = await Promise.all([...this.peers.values()].map(async (p) => ({ p, s: await p.client.serverStatus(this.timeout).catch(() => undefined) })));
    const up = answers.filter((a) => a.s !== undefined);
    const down = answers.filter((a) => a.s === undefined).map((a) => a.p.info.name).sort();
    const sum = (k: 'num_flows' | 'max_flows' | 'seen_flows' | 'flows_rate'): number => up.reduce((n, a) => n + a.s![k], 0);
    this.health.set(up.length > 0 ? 'SERVING' : 'NOT_SERVING');
    return {
      num_flows: sum('num_flows'),
      max_flows: sum('max_flows'),
      seen_flows: sum('seen_flows'),
      flows_rate: sum('flows_rate'),
      uptime_ns: process.hrtime.bigint() - this.startedAt,
      version: this.version,
      num_connected_nodes: up.length,
      num_unavailable_nodes: down.length,
      unavailable_nodes: down,
    };
  }

  async nodes(): Promise<NodeInfo[]> {
    const answers = await Promise.all(
      [...this.peers.values()].map(async (p): Promise<NodeInfo> => {
        const s = await p.client.serverStatus(this.timeout).catch(() => undefined);
        if (!s) return { name: p.info.name, version: '', address: p.info.address, state: 'NODE_UNAVAILABLE', uptime_ns: 0n, num_flows: 0, max_flows: 0, seen_flows: 0 };
        return { name: p.info.name, version: s.version, address: p.info.address, state: 'NODE_CONNECTED', uptime_ns: s.uptime_ns, num_flows: s.num_flows, max_flows: s.max_flows, seen_flows: s.seen_flows };
      }),
    );
    this.health.set(answers.some((n) => n.state === 'NODE_CONNECTED') ? 'SERVING' : 'NOT_SERVING');
    return answers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async namespaces(): Promise<string[]> {
    const lists = await Promise.all([...this.peers.values()].map((p) => p.client.getNamespaces(this.timeout).catch(() => [] as string[])));
    return [...new Set(lists.flat())].sort();
  }

  private send(call: Stream, r: FlowsResponse): void {
    if (!call.cancelled && !call.writableEnded) call.write(responseToProto(r));
  }

  private nodeStatus(call: Stream, state: 'NODE_CONNECTED' | 'NODE_UNAVAILABLE', names: string[], message?: string): void {
    if (names.length === 0) return;
    const ev = message ? { state_change: state, node_names: names, message } : { state_change: state, node_names: names };
    this.send(call, { kind: 'node_status', node_status: ev, time: new Date().toISOString() });
  }

  private async getFlows(call: Stream): Promise<void> {
    let q: FlowsQuery;
    try {
      q = queryFromProto(call.request);
      if (q.first && q.follow) throw new ObserveError('TENDRIL_ERR_OBSERVE_INVALID', '"first" cannot be combined with "follow"');
      compileFilters(q.whitelist, q.blacklist);
    } catch (err) {
      call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, (err as Error).message));
      return;
    }
    const peers = [...this.peers.values()];
    if (q.follow) return this.follow(call, q, peers);

    const answers = await Promise.all(
      peers.map(async (p) => {
        try {
          return { p, rs: await p.client.collectFlows(q, this.timeout) };
        } catch (err) {
          return { p, err: err as Error };
        }
      }),
    );
    const held: Held[] = [];
    for (const a of answers) {
      for (const r of a.rs ?? []) {
        if (r.kind === 'flow') held.push({ flow: r.flow, node: r.node_name ?? r.flow.node_name ?? a.p.info.name, ns: timeToNs(r.flow.time) ?? 0n, at: 0 });
      }
    }
    this.nodeStatus(call, 'NODE_CONNECTED', answers.filter((a) => a.rs).map((a) => a.p.info.name));
    for (const a of answers) if (a.err) this.nodeStatus(call, 'NODE_UNAVAILABLE', [a.p.info.name], a.err.message);
    held.sort(byTime);
    const n = q.number ?? 0;
    const out = n === 0 ? held : q.first ? held.slice(0, n) : held.slice(-n);
    for (const h of out) this.send(call, { kind: 'flow', flow: h.flow, node_name: h.node, time: h.flow.time });
    call.end();
  }

  /**
   * Following: every node streams its history, a "history complete" marker, then live flows. Histories are merged
   * and cut to `number` once every node has sent its marker (or timed out); live flows are held for the sort
   * window and leave in time order.
   */
  private follow(call: Stream, q: FlowsQuery, peers: Peer[]): Promise<void> {
    const buffer: Held[] = [];
    const pending = new Set(peers.map((p) => p.info.name));
    const open = new Set(peers.map((p) => p.info.name));
    const handles: StreamHandle[] = [];
    let live = false;
    let ticker: NodeJS.Timeout | undefined;
    this.calls.add(call);

    return new Promise<void>((resolve) => {
      const finish = (): void => {
        clearTimeout(historyTimer);
        if (ticker) clearInterval(ticker);
        for (const h of handles) h.cancel();
        this.calls.delete(call);
        this.cleanups.delete(finish);
        resolve();
      };
      this.cleanups.add(finish);

      const flush = (all: boolean): void => {
        buffer.sort(byTime);
        const cutoff = Date.now() - this.window;
        let i = 0;
        while (i < buffer.length && (all || buffer[i]!.at <= cutoff)) i++;
        for (const h of buffer.splice(0, i)) this.send(call, { kind: 'flow', flow: h.flow, node_name: h.node, time: h.flow.time });
      };

      const goLive = (): void => {
        if (live) return;
        live = true;
        clearTimeout(historyTimer);
        const n = q.number ?? 0;
        buffer.sort(byTime);
        if (n > 0 && buffer.length > n) buffer.splice(0, buffer.length - n);
        flush(true);
        // After the history, as a node's own server does: a client that waits for this has the whole history.
        this.nodeStatus(call, 'NODE_CONNECTED', peers.map((p) => p.info.name).filter((n) => open.has(n)));
        ticker = setInterval(() => flush(false), Math.max(10, Math.floor(this.window / 2)));
      };

      const historyTimer = setTimeout(goLive, this.timeout);

      const ended = (name: string, err?: Error): void => {
        if (!open.delete(name)) return;
        pending.delete(name);
        if (err) this.nodeStatus(call, 'NODE_UNAVAILABLE', [name], err.message);
        if (!live && pending.size === 0) goLive();
        if (open.size === 0) {
          goLive();
          flush(true);
          call.end();
          finish();
        }
      };

      for (const p of peers) {
        const name = p.info.name;
        const h = p.client.getFlows({ ...q, follow: true }, (r) => {
          if (r.kind === 'flow') {
            buffer.push({ flow: r.flow, node: r.node_name ?? r.flow.node_name ?? name, ns: timeToNs(r.flow.time) ?? 0n, at: Date.now() });
          } else if (r.kind === 'node_status') {
            if (r.node_status.message === 'history complete' && pending.delete(name) && pending.size === 0) goLive();
          } else {
            this.send(call, { ...r, node_name: r.node_name ?? name });
          }
        });
        handles.push(h);
        h.done.then(
          () => ended(name),
          (err: Error) => ended(name, err),
        );
      }
      if (peers.length === 0) {
        goLive();
      }
      call.on('cancelled', finish);
      call.on('close', finish);
    });
  }
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', `Cannot listen on ${address}: ${err.message}`, { cause: err }));
      else resolve(port);
    });
  });
}
