// gRPC clients of a flow server (node or relay): Observer calls, the gRPC health service and Tendril's Monitor stream.
import * as grpc from '@grpc/grpc-js';
import {
  grpcTarget,
  monitorService,
  nodeFromProto,
  observerService,
  queryToProto,
  responseFromProto,
  statusFromProto,
  type FlowsQuery,
  type FlowsResponse,
  type NodeInfo,
  type ServerStatus,
} from './codec.js';
import { ObserveError } from './errors.js';
import { OBSERVER_HEALTH_SERVICE, healthService } from './health.js';
import type { MonitorEvent, MonitorFilter } from './monitor-format.js';

type Unary = (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void) => grpc.ClientUnaryCall;
type ServerStream = (req: unknown, opts?: grpc.CallOptions) => grpc.ClientReadableStream<Record<string, unknown>>;

const ObserverCtor = grpc.makeGenericClientConstructor(observerService(), 'Observer');
const MonitorCtor = grpc.makeGenericClientConstructor(monitorService(), 'Monitor');
const HealthCtor = grpc.makeGenericClientConstructor(healthService, 'Health');

/** A running stream: `done` settles when the server ends it (rejects on error, resolves on cancel()). */
export interface StreamHandle {
  cancel(): void;
  done: Promise<void>;
}

function clientError(address: string, err: grpc.ServiceError): ObserveError {
  // grpc-js appends resolver notes ("Resolution note: …") that say nothing to a user.
  const details = (err.details || err.message).replace(/\s*Resolution note:.*$/s, '').replace(/^No connection established\. Last error: (Error: )?/, '');
  switch (err.code) {
    case grpc.status.INVALID_ARGUMENT:
      return new ObserveError('TENDRIL_ERR_OBSERVE_INVALID', `Invalid request to ${address}: ${details}`, { cause: err });
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return new ObserveError('TENDRIL_ERR_OBSERVE_UNREACHABLE', `Cannot reach the flow server at ${address}: ${details}`, { cause: err });
    default:
      return new ObserveError('TENDRIL_ERR_OBSERVE_SERVER', `Flow server at ${address} failed: ${details} (${grpc.status[err.code] ?? err.code})`, { cause: err });
  }
}

function stream<T>(address: string, call: grpc.ClientReadableStream<Record<string, unknown>>, onData: (d: Record<string, unknown>) => T | undefined, each: (t: T) => void): StreamHandle {
  let cancelled = false;
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', (d: Record<string, unknown>) => {
      const v = onData(d);
      if (v !== undefined) each(v);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (cancelled || err.code === grpc.status.CANCELLED) resolve();
      else reject(clientError(address, err));
    });
    call.on('end', () => resolve());
  });
  return {
    cancel: () => {
      cancelled = true;
      call.cancel();
    },
    done,
  };
}

export class ObserverClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  /** @param address "unix:///path", "/path/to.sock" or "host:port" */
  constructor(readonly address: string) {
    // A relay keeps its node clients for as long as the nodes exist: after a long outage grpc-js would wait up to
    // 120 s between attempts, failing every call meanwhile; 5 s brings a node back within a health probe or two.
    this.client = new ObserverCtor(grpcTarget(address), grpc.credentials.createInsecure(), { 'grpc.max_reconnect_backoff_ms': 5000 }) as grpc.Client &
      Record<string, unknown>;
  }

  private unary(method: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const fn = (this.client[method] as Unary).bind(this.client);
    return new Promise((resolve, reject) => {
      fn({}, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(clientError(this.address, err));
        else resolve(res ?? {});
      });
    });
  }

  async serverStatus(timeoutMs = 5000): Promise<ServerStatus> {
    return statusFromProto(await this.unary('ServerStatus', timeoutMs));
  }

  async getNodes(timeoutMs = 5000): Promise<NodeInfo[]> {
    const res = await this.unary('GetNodes', timeoutMs);
    return ((res['nodes'] as Array<Record<string, unknown>> | undefined) ?? []).map(nodeFromProto);
  }

  async getNamespaces(timeoutMs = 5000): Promise<string[]> {
    const res = await this.unary('GetNamespaces', timeoutMs);
    return ((res['namespaces'] as Array<{ namespace?: string }> | undefined) ?? []).map((n) => n.namespace ?? '');
  }

  /** Streams GetFlows answers to `each` until the server ends the stream or cancel() is called. */
  getFlows(q: FlowsQuery, each: (r: FlowsResponse) => void, timeoutMs?: number): StreamHandle {
    const opts: grpc.CallOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    const call = (this.client['GetFlows'] as ServerStream).call(this.client, queryToProto(q), opts);
    return stream(this.address, call, responseFromProto, each);
  }

  /** All answers of a non-following GetFlows. */
  async collectFlows(q: FlowsQuery, timeoutMs?: number): Promise<FlowsResponse[]> {
    const out: FlowsResponse[] = [];
    await this.getFlows({ ...q, follow: false }, (r) => out.push(r), timeoutMs).done;
    return out;
  }

  close(): void {
    this.client.close();
  }
}

/** What the health service answered: SERVING/NOT_SERVING, or SERVICE_UNKNOWN (a Watch of a service nobody reports). */
export type HealthAnswer = 'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'SERVICE_UNKNOWN';

/** A client of the standard gRPC health service of a flow server or relay, as `hubble status` and probes use it. */
export class HealthClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  /** @param address "unix:///path", "/path/to.sock" or "host:port" */
  constructor(readonly address: string) {
    this.client = new HealthCtor(grpcTarget(address), grpc.credentials.createInsecure()) as grpc.Client & Record<string, unknown>;
  }

  /** Health/Check (a service the server does not report is a TENDRIL_ERR_OBSERVE_SERVER error: NOT_FOUND). */
  check(service = OBSERVER_HEALTH_SERVICE, timeoutMs = 5000): Promise<HealthAnswer> {
    const fn = (this.client['check'] as Unary).bind(this.client);
    return new Promise((resolve, reject) => {
      fn({ service }, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(clientError(this.address, err));
        else resolve(String(res?.['status'] ?? 'UNKNOWN') as HealthAnswer);
      });
    });
  }

  /** Health/Watch: `each` gets the current status, then every change, until cancel() or the server ends the stream. */
  watch(service: string, each: (s: HealthAnswer) => void): StreamHandle {
    const call = (this.client['watch'] as ServerStream).call(this.client, { service });
    return stream(this.address, call, (d) => String(d['status'] ?? 'UNKNOWN') as HealthAnswer, each);
  }

  close(): void {
    this.client.close();
  }
}

export interface MonitorInfo {
  nodeName: string;
  numCpus: number;
  ringBytes: number;
  version: string;
}

export class MonitorClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  constructor(readonly address: string) {
    this.client = new MonitorCtor(grpcTarget(address), grpc.credentials.createInsecure()) as grpc.Client & Record<string, unknown>;
  }

  info(timeoutMs = 5000): Promise<MonitorInfo> {
    const fn = (this.client['Info'] as Unary).bind(this.client);
    return new Promise((resolve, reject) => {
      fn({}, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(clientError(this.address, err));
        else
          resolve({
            nodeName: String(res?.['node_name'] ?? ''),
            numCpus: Number(res?.['num_cpus'] ?? 0),
            ringBytes: Number(res?.['ring_bytes'] ?? 0),
            version: String(res?.['version'] ?? ''),
          });
      });
    });
  }

  /**
   * Streams events to `each`, with the count of events the server dropped just before (ev is undefined when only
   * a loss is reported). `onSubscribed` runs
   * once the server has registered the stream, so events published after it are delivered.
   */
  events(filter: MonitorFilter, each: (ev: MonitorEvent | undefined, lost: number) => void, onSubscribed?: () => void): StreamHandle {
    const req = { types: filter.types ?? [], related_to: filter.relatedTo ?? [], from: filter.from ?? [], to: filter.to ?? [] };
    const call = (this.client['Events'] as ServerStream).call(this.client, req);
    if (onSubscribed) call.once('metadata', () => onSubscribed());
    return stream(
      this.address,
      call,
      (d) => {
        const lost = Number(d['lost'] ?? 0);
        const json = typeof d['json'] === 'string' ? d['json'] : '';
        return { ev: json === '' ? undefined : (JSON.parse(json) as MonitorEvent), lost };
      },
      (x) => {
        if (x.ev || x.lost > 0) each(x.ev, x.lost);
      },
    );
  }

  close(): void {
    this.client.close();
  }
}
