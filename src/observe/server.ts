// A node's flow server: keeps the last N flows and serves Hubble's Observer API (GetFlows, ServerStatus, GetNodes,
// GetNamespaces), the standard gRPC health service and Tendril's Monitor service (raw events for `tendril monitor`)
// over gRPC on a unix socket and optionally on 127.0.0.1. Publishing never blocks: a follower that cannot keep up
// loses flows and is told how many.
import fs from 'node:fs';
import os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import {
  monitorService,
  nodeToProto,
  nsToTimestamp,
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
import { SocketClaimError, claimSocketPath } from '../util/socket.js';
import { compileFilters, filtersOnly, type FlowPredicate } from './filter.js';
import type { FlowContext } from './flow.js';
import { DatapathEntry, SKELETON_FILTERS } from './flow-entry.js';
import { HealthService } from './health.js';
import { timeToNs, type Flow } from './model.js';
import { monitorMatches, toMonitorEvent, validateMonitorFilter, type MonitorFilter } from './monitor-format.js';
import { DEFAULT_MAX_FLOWS, FlowRing } from './ring.js';
import { l7Endpoints, l7Flow, recordNs, type HttpAccessRecord, type L7Endpoints } from './l7.js';
import { l7MonitorEvent, l7MonitorMatches } from './monitor-l7.js';
import type { DatapathEvent } from './types.js';
import { TENDRIL_VERSION } from './version.js';

export interface ObserverServerOptions {
  nodeName: string;
  /** Unix socket to listen on (created with mode 0600; a stale file is replaced). */
  socketPath: string;
  /** Also listen on 127.0.0.1:tcpPort; 0 picks a free port (see tcpAddress). */
  tcpPort?: number;
  /** Ring size (default 4095, as Hubble). */
  maxFlows?: number;
  version?: string;
  /** Lookups that turn datapath events into flows; needed by ingest(). */
  context?: FlowContext;
  /** For the monitor header: CPUs and event ring size of the datapath. */
  numCpus?: number;
  ringBytes?: number;
  /** Responses queued per follower before its flows are dropped (default 1024). */
  followerQueue?: number;
  /**
   * Whether the node serves from the start (default true: the agent starts the flow server once it is ready).
   * Health checks answer NOT_SERVING until setServing(true) otherwise.
   */
  serving?: boolean;
}

interface Entry {
  readonly flow: Flow;
  readonly ns: bigint;
}

/**
 * An L7 flow as the ring keeps it: the proxy's record and its connection's endpoints (looked up at ingest), the
 * Hubble flow built the first time something reads it (a follower, a monitor client, GetFlows), then kept. The
 * proxy sends one record per request and per response: with nobody reading, a record costs the agent this object.
 */
class L7Entry implements Entry {
  readonly ns: bigint;
  private built: Flow | undefined;
  /** What the flow is built from (the record is dropped once it is). */
  private r: HttpAccessRecord | undefined;
  constructor(
    r: HttpAccessRecord,
    private readonly eps: L7Endpoints,
    private readonly ctx: FlowContext,
  ) {
    this.ns = recordNs(r);
    this.r = r;
  }
  get flow(): Flow {
    if (this.built === undefined) {
      this.built = l7Flow(this.r!, this.ctx, this.eps);
      this.r = undefined;
    }
    return this.built;
  }
}

/** One streaming client and its backpressure state. */
type Stream = grpc.ServerWritableStream<Record<string, unknown>, Record<string, unknown>>;

class Follower {
  lost = 0;
  private blocked = false;
  private pending = 0;
  constructor(
    readonly call: Stream,
    private readonly limit: number,
    private readonly lostMessage: (lost: number) => Record<string, unknown>,
  ) {
    call.on('drain', () => {
      this.blocked = false;
      this.pending = 0;
      if (this.lost > 0) {
        const n = this.lost;
        this.lost = 0;
        this.write(this.lostMessage(n));
      }
    });
  }

  /** Writes unless the client is too far behind, in which case the message is counted as lost. */
  offer(msg: () => Record<string, unknown>): void {
    if (this.blocked && this.pending >= this.limit) {
      this.lost++;
      return;
    }
    this.write(msg());
  }

  write(msg: Record<string, unknown>): void {
    if (!this.call.write(msg)) {
      this.blocked = true;
      this.pending++;
    }
  }

  get closed(): boolean {
    return this.call.cancelled || this.call.destroyed || this.call.writableEnded;
  }
}

interface FlowFollower {
  f: Follower;
  match: FlowPredicate;
  /** Whether match reads only what a datapath entry's skeleton has (so it needs no built flow). */
  onSkeleton: boolean;
  until: bigint | undefined;
}

/** Matches an entry: a datapath entry not built yet by its skeleton when the filters allow, by its flow otherwise. */
function entryMatches(e: Entry, match: FlowPredicate, onSkeleton: boolean): boolean {
  return onSkeleton && e instanceof DatapathEntry ? match(e.skeleton()) : match(e.flow);
}

interface EventFollower {
  f: Follower;
  filter: MonitorFilter;
}

/** gRPC status error for a handler callback or a stream. */
function statusError(code: grpc.status, details: string): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(details), { code, details });
}

export class ObserverServer {
  private readonly ring: FlowRing<Entry>;
  private readonly server = new grpc.Server();
  private readonly flowFollowers = new Set<FlowFollower>();
  private readonly eventFollowers = new Set<EventFollower>();
  /** The endpoints of the L7 records' connections, per connection object (ingestL7). */
  private readonly l7Conns = new WeakMap<object, L7Endpoints>();
  private readonly startedAt = process.hrtime.bigint();
  private readonly version: string;
  private readonly queue: number;
  private readonly health: HealthService;
  private started = false;
  private boundTcp: string | undefined;

  constructor(private readonly opts: ObserverServerOptions) {
    this.ring = new FlowRing<Entry>(opts.maxFlows ?? DEFAULT_MAX_FLOWS);
    this.version = opts.version ?? TENDRIL_VERSION;
    this.queue = opts.followerQueue ?? 1024;
    this.health = new HealthService(opts.serving === false ? 'NOT_SERVING' : 'SERVING');
    this.health.addTo(this.server);
    this.server.addService(observerService(), {
      GetFlows: (call: Stream) => this.getFlows(call),
      ServerStatus: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<Record<string, unknown>>) => cb(null, statusToProto(this.status())),
      GetNodes: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<Record<string, unknown>>) => cb(null, { nodes: [nodeToProto(this.node())] }),
      GetNamespaces: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<Record<string, unknown>>) =>
        cb(null, { namespaces: this.namespaces().map((namespace) => ({ namespace })) }),
    });
    this.server.addService(monitorService(), {
      Info: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<Record<string, unknown>>) =>
        cb(null, { node_name: opts.nodeName, num_cpus: opts.numCpus ?? os.cpus().length, ring_bytes: String(opts.ringBytes ?? 0), version: this.version }),
      Events: (call: Stream) => this.events(call),
    });
  }

  /** Listens on the unix socket (and 127.0.0.1 if asked). */
  async start(): Promise<void> {
    if (this.started) return;
    await claimObserverSocket(this.opts.socketPath);
    await bind(this.server, `unix://${this.opts.socketPath}`);
    fs.chmodSync(this.opts.socketPath, 0o600);
    if (this.opts.tcpPort !== undefined) {
      const port = await bind(this.server, `127.0.0.1:${this.opts.tcpPort}`);
      this.boundTcp = `127.0.0.1:${port}`;
    }
    this.started = true;
  }

  /** "127.0.0.1:PORT" once started with tcpPort. */
  get tcpAddress(): string | undefined {
    return this.boundTcp;
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  /**
   * Stores a datapath event as a flow (needs options.context) and streams it, and streams the raw event. The flow
   * is built when first read (DatapathEntry); what it needs from the node is looked up now, so it shows the pods
   * as they were.
   */
  ingest(ev: DatapathEvent): { readonly flow: Flow } {
    const ctx = this.opts.context;
    if (!ctx) throw new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', 'Cannot ingest datapath events: the observer server has no flow context');
    const e = new DatapathEntry(ev, ctx);
    const ifname = e.snapshot!.ifname;
    this.publishEntry(e);
    if (this.eventFollowers.size > 0) this.publishEvent(ev, ifname);
    return e;
  }

  /**
   * Stores one of the node proxy's access records as an L7 flow (needs options.context) and streams it. The flow
   * is built when first read (L7Entry); its endpoints are looked up now, once per connection object (the records
   * of a decoded batch share theirs), so it shows the pods as they were.
   */
  ingestL7(r: HttpAccessRecord): { readonly flow: Flow } {
    const ctx = this.opts.context;
    if (!ctx) throw new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', 'Cannot ingest L7 records: the observer server has no flow context');
    let eps = this.l7Conns.get(r.conn);
    if (eps === undefined) {
      eps = l7Endpoints(r, ctx);
      this.l7Conns.set(r.conn, eps);
    }
    const e = new L7Entry(r, eps, ctx);
    this.publishEntry(e);
    if (this.eventFollowers.size > 0) this.publishL7Event(e.flow);
    return e;
  }

  /** Stores a flow in the ring and sends it to every follower whose filters match. */
  publish(flow: Flow): void {
    this.publishEntry({ flow, ns: timeToNs(flow.time) ?? 0n });
  }

  private publishEntry(e: Entry): void {
    const ns = e.ns;
    this.ring.push(e);
    if (this.flowFollowers.size === 0) return;
    for (const fol of this.flowFollowers) {
      if (fol.f.closed) {
        this.flowFollowers.delete(fol);
        continue;
      }
      if (fol.until !== undefined && ns > fol.until) {
        this.flowFollowers.delete(fol);
        fol.f.call.end();
        continue;
      }
      if (entryMatches(e, fol.match, fol.onSkeleton)) fol.f.offer(() => responseToProto(this.flowResponse(e.flow)));
    }
  }

  /** An L7 flow's access-log line to `monitor` clients (monitor-l7.ts). */
  private publishL7Event(flow: Flow): void {
    if (this.eventFollowers.size === 0) return;
    const m = l7MonitorEvent(flow, this.opts.nodeName);
    this.offerToMonitors((filter) => l7MonitorMatches(m, filter), () => m);
  }

  /** Sends a raw event to `monitor` clients (nothing is stored). */
  publishEvent(ev: DatapathEvent, ifname?: string): void {
    if (this.eventFollowers.size === 0) return;
    this.offerToMonitors((filter) => monitorMatches(ev, filter), () => toMonitorEvent(ev, { ifname, node: this.opts.nodeName }));
  }

  /** Offers one event to every `monitor` client whose filter matches; serialized once, when the first one sends. */
  private offerToMonitors(matches: (filter: EventFollower['filter']) => boolean, make: () => unknown): void {
    let json: string | undefined;
    for (const fol of this.eventFollowers) {
      if (fol.f.closed) {
        this.eventFollowers.delete(fol);
        continue;
      }
      if (!matches(fol.filter)) continue;
      fol.f.offer(() => {
        json ??= JSON.stringify(make());
        return { json };
      });
    }
  }

  status(): ServerStatus {
    return {
      num_flows: this.ring.size,
      max_flows: this.ring.capacity,
      seen_flows: this.ring.seen,
      uptime_ns: process.hrtime.bigint() - this.startedAt,
      version: this.version,
      flows_rate: this.flowsRate(),
    };
  }

  node(): NodeInfo {
    const s = this.status();
    return {
      name: this.opts.nodeName,
      version: s.version,
      address: this.boundTcp ?? `unix://${this.opts.socketPath}`,
      state: 'NODE_CONNECTED',
      uptime_ns: s.uptime_ns,
      num_flows: s.num_flows,
      max_flows: s.max_flows,
      seen_flows: s.seen_flows,
    };
  }

  /** What health checks answer: SERVING while the agent is ready, NOT_SERVING otherwise (and once stopping). */
  setServing(ready: boolean): void {
    this.health.set(ready ? 'SERVING' : 'NOT_SERVING');
  }

  get serving(): boolean {
    return this.health.status === 'SERVING';
  }

  /** Number of clients following flows or events (for tests and status). */
  get followers(): number {
    return this.flowFollowers.size + this.eventFollowers.size;
  }

  /** Tells health watchers NOT_SERVING, ends every stream, stops listening and removes the socket file. */
  async stop(): Promise<void> {
    this.health.close();
    for (const fol of this.flowFollowers) fol.f.call.end();
    for (const fol of this.eventFollowers) fol.f.call.end();
    this.flowFollowers.clear();
    this.eventFollowers.clear();
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
    if (this.started) fs.rmSync(this.opts.socketPath, { force: true });
    this.started = false;
  }

  private flowResponse(flow: Flow): FlowsResponse {
    return { kind: 'flow', flow, node_name: flow.node_name ?? this.opts.nodeName, time: flow.time };
  }

  private getFlows(call: Stream): void {
    let q: FlowsQuery;
    let match: FlowPredicate;
    let onSkeleton: boolean;
    try {
      q = queryFromProto(call.request);
      if (q.first && q.follow) throw new ObserveError('TENDRIL_ERR_OBSERVE_INVALID', '"first" cannot be combined with "follow"');
      match = compileFilters(q.whitelist, q.blacklist);
      onSkeleton = filtersOnly(q.whitelist ?? [], q.blacklist ?? [], SKELETON_FILTERS);
    } catch (err) {
      call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, (err as Error).message));
      return;
    }
    for (const e of selectHistory(this.ring, q, (e) => entryMatches(e, match, onSkeleton))) call.write(responseToProto(this.flowResponse(e.flow)));
    if (!q.follow) {
      call.end();
      return;
    }
    // Marks the end of the history part, so a relay can merge histories before it interleaves live flows.
    // Hubble clients show NODE_CONNECTED events only in debug mode.
    call.write(
      responseToProto({
        kind: 'node_status',
        node_status: { state_change: 'NODE_CONNECTED', node_names: [this.opts.nodeName], message: 'history complete' },
        node_name: this.opts.nodeName,
      }),
    );
    const fol: FlowFollower = {
      f: new Follower(call, this.queue, (n) => this.lostMessage(n)),
      match,
      onSkeleton,
      until: q.until,
    };
    this.flowFollowers.add(fol);
    const drop = (): void => {
      this.flowFollowers.delete(fol);
    };
    call.on('cancelled', drop);
    call.on('close', drop);
    call.on('error', drop);
  }

  private lostMessage(n: number): Record<string, unknown> {
    return {
      lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: String(n) },
      node_name: this.opts.nodeName,
      time: nsToTimestamp(BigInt(Date.now()) * 1_000_000n),
    };
  }

  private events(call: Stream): void {
    const r = call.request;
    const nums = (k: string): number[] => ((r[k] as number[] | undefined) ?? []).map(Number);
    const filter: MonitorFilter = { types: (r['types'] as string[] | undefined) ?? [], relatedTo: nums('related_to'), from: nums('from'), to: nums('to') };
    try {
      validateMonitorFilter(filter);
    } catch (err) {
      call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, (err as Error).message));
      return;
    }
    const fol: EventFollower = {
      f: new Follower(call, this.queue, (n) => ({ json: '', lost: String(n) })),
      filter,
    };
    this.eventFollowers.add(fol);
    const drop = (): void => {
      this.eventFollowers.delete(fol);
    };
    call.on('cancelled', drop);
    call.on('close', drop);
    call.on('error', drop);
    // Headers go out now, so a client knows it is subscribed before the first event.
    call.sendMetadata(new grpc.Metadata());
  }

  /** Flows per second over the last minute. */
  private flowsRate(): number {
    const since = BigInt(Date.now() - 60_000) * 1_000_000n;
    let n = 0;
    for (const e of this.ring.reversed()) {
      if (e.ns < since) break;
      n++;
    }
    return n / 60;
  }

  /** Namespaces seen in flows of the last hour (what `hubble list namespaces` shows). */
  private namespaces(): string[] {
    const since = BigInt(Date.now() - 3_600_000) * 1_000_000n;
    const set = new Set<string>();
    for (const e of this.ring.reversed()) {
      if (e.ns < since) break;
      for (const ep of [e.flow.source, e.flow.destination]) if (ep?.namespace) set.add(ep.namespace);
    }
    return [...set].sort();
  }
}

/** The flows a GetFlows request gets before following: last (or first) `number` matching flows within since/until. */
export function selectHistory(ring: FlowRing<Entry>, q: FlowsQuery, match: (e: Entry) => boolean): Entry[] {
  const number = q.number ?? 0;
  // Following without a count or a start time means "only new flows", as Hubble.
  if (q.follow && number === 0 && q.since === undefined) return [];
  const inWindow = (e: Entry): boolean => (q.since === undefined || e.ns >= q.since) && (q.until === undefined || e.ns <= q.until);
  const out: Entry[] = [];
  if (q.first) {
    for (const e of ring.values()) {
      if (!inWindow(e) || !match(e)) continue;
      out.push(e);
      if (number > 0 && out.length >= number) break;
    }
    return out;
  }
  for (const e of ring.reversed()) {
    if (q.since !== undefined && e.ns < q.since) break;
    if (!inWindow(e) || !match(e)) continue;
    out.push(e);
    if (number > 0 && out.length >= number) break;
  }
  return out.reverse();
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', `Cannot listen on ${address}: ${err.message}`, { cause: err }));
      else resolve(port);
    });
  });
}

/** Claims the socket path (a crashed agent's stale socket goes, a live server's stays) with this module's code. */
export async function claimObserverSocket(file: string): Promise<void> {
  try {
    await claimSocketPath(file);
  } catch (err) {
    if (err instanceof SocketClaimError) throw new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', err.message, { cause: err });
    throw err;
  }
}
