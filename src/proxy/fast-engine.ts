// The fast HTTP/1.1 forwarding path of the node proxy: our own head parser decides, the raw bytes go through.
// Per client connection one upstream socket; requests are served one at a time (pipelined ones wait in the
// buffer), so responses stay in order and a denied request's 403 takes its place.
import net from 'node:net';
import type { HttpRequestView } from '../policy/index.js';
import type { ConnectionInfo, ConnectionPolicy, HttpFlowRecord, HttpProxyOptions, HttpProxyStats } from './types.js';
import type { ProxyTrace } from './trace.js';
import { toRecord, type RawFlow } from './flow-wire.js';
import { ChunkedScanner, HttpParseError, headEnd, parseRequestHead, parseResponseHead, responseFraming, type BodyFraming, type RequestHead } from './http-head.js';

const DENIED_BODY = 'Access denied';
const DENIED_HEADERS = ['content-type', 'text/plain', 'content-length', String(DENIED_BODY.length)];
/** A connection with no exchange under way and no bytes either way for this long is closed… */
export const IDLE_TIMEOUT_MS = 60_000;
/** …as found by one sweep of every connection this often (no timer per connection or per request). */
const IDLE_SWEEP_MS = 10_000;
/** Client bytes buffered beyond the request being served (pipelining) before the client is paused. */
const MAX_BUFFERED = 1024 * 1024;
const REASONS: Record<number, string> = { 400: 'Bad Request', 431: 'Request Header Fields Too Large', 501: 'Not Implemented' };

/** Where a body stands: bytes left of a Content-Length body, or a chunked scanner, or until close. */
class BodyCursor {
  private left: number;
  private readonly chunked: ChunkedScanner | undefined;
  constructor(readonly framing: BodyFraming) {
    this.left = framing.kind === 'length' ? framing.length : 0;
    this.chunked = framing.kind === 'chunked' ? new ChunkedScanner() : undefined;
  }
  get done(): boolean {
    if (this.framing.kind === 'none') return true;
    if (this.framing.kind === 'length') return this.left === 0;
    if (this.chunked) return this.chunked.done;
    return false;
  }
  /** How many bytes of buf from start belong to the body. */
  take(buf: Buffer, start: number): number {
    if (this.framing.kind === 'length') {
      const n = Math.min(this.left, buf.length - start);
      this.left -= n;
      return n;
    }
    if (this.chunked) return this.chunked.scan(buf, start);
    if (this.framing.kind === 'close') return buf.length - start;
    return 0;
  }
}

interface Exchange {
  head: RequestHead;
  /** The URL the exchange's records name (built once for both). */
  url: string;
  t0: bigint;
  allowed: boolean;
  body: BodyCursor;
  /** The final response has been relayed completely (or, denied, written). */
  responded: boolean;
  /** Close the client after this exchange. */
  close: boolean;
  /** The request's id on the diagnostic trace (its x-seq header), when tracing. */
  seq?: string;
}

/** One intercepted client connection. */
class ClientConn {
  private buf: Buffer = Buffer.alloc(0);
  private cur: Exchange | undefined;
  private upstream: net.Socket | undefined;
  private upBuf: Buffer = Buffer.alloc(0);
  /** The response being relayed: its body framing once its head has been read. */
  private resp: BodyCursor | undefined;
  private respHeadSent = false;
  private tunnel = false;
  private closed = false;
  private clientEnded = false;
  /** The engine's sweep count when bytes last moved (idle check without reading a clock per request). */
  seen = 0;

  constructor(
    private readonly engine: HttpFastEngine,
    readonly socket: net.Socket,
    private readonly info: ConnectionInfo,
    private readonly policy: ConnectionPolicy,
  ) {
    socket.on('data', (d: Buffer) => this.onClientData(d));
    socket.on('end', () => this.onClientEnd());
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.destroy());
    socket.on('drain', () => this.upstream?.resume());
    this.seen = engine.sweeps;
  }

  /** Called by the engine's sweep: closes the connection if it has been idle for `sweeps` sweeps. */
  sweep(now: number, sweeps: number): void {
    if (now - this.seen >= sweeps && this.cur === undefined && !this.tunnel) this.destroy();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.upstream?.destroy();
    this.socket.destroy();
    this.engine.forget(this);
  }

  private onClientData(d: Buffer): void {
    this.seen = this.engine.sweeps;
    if (this.tunnel) {
      if (this.upstream && !this.upstream.write(d)) this.socket.pause();
      return;
    }
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    this.pump();
  }

  private onClientEnd(): void {
    if (this.tunnel) {
      this.upstream?.end();
      return;
    }
    // A half-closed client still gets the answers to what it sent; then the connection closes.
    this.clientEnded = true;
    this.pump();
  }

  /** Moves client bytes: a new request's head, or the body of the current one. */
  private pump(): void {
    while (!this.closed && !this.tunnel) {
      if (this.cur === undefined) {
        const ended = (): void => {
          if (this.clientEnded) this.finishClose();
        };
        if (this.buf.length === 0) return ended();
        let size: number;
        let head: RequestHead;
        try {
          size = headEnd(this.buf);
          if (size < 0) return ended();
          head = parseRequestHead(this.buf, size);
        } catch (err) {
          this.refuse(err instanceof HttpParseError ? err.status : 400);
          return;
        }
        this.begin(head, size);
        continue;
      }
      const x = this.cur;
      if (x.body.done) {
        // Waiting for the response; hold pipelined bytes (up to a limit).
        if (this.buf.length > MAX_BUFFERED) this.socket.pause();
        return;
      }
      if (this.buf.length === 0) return;
      let n: number;
      try {
        n = x.body.take(this.buf, 0);
      } catch {
        this.engine.stats.errors++;
        this.destroy();
        return;
      }
      if (x.allowed && this.upstream && n > 0 && !this.upstream.write(n === this.buf.length ? this.buf : this.buf.subarray(0, n))) this.socket.pause();
      this.buf = this.buf.subarray(n);
      this.maybeFinish();
    }
  }

  private refuse(status: 400 | 431 | 501): void {
    this.engine.stats.errors++;
    this.socket.end(`HTTP/1.1 ${status} ${REASONS[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    this.closed = true;
    this.upstream?.destroy();
    this.engine.forget(this);
  }

  private view(h: RequestHead): HttpRequestView {
    return { method: h.method, path: h.target, host: h.headers.get('host')?.[0] ?? '', headers: h.headers };
  }

  private record(x: Exchange, type: HttpFlowRecord['type'], verdict: HttpFlowRecord['verdict'], code: number, rawHeaders: readonly string[], latencyNs: number): void {
    const sink = this.engine.rawSink;
    if (sink === undefined) return;
    sink({
      time: Date.now(),
      type,
      verdict,
      conn: this.info,
      direction: this.policy.direction,
      srcIdentity: this.policy.srcIdentity,
      dstIdentity: this.policy.dstIdentity,
      method: x.head.method,
      url: x.url,
      protocol: x.head.minor === 1 ? 'HTTP/1.1' : 'HTTP/1.0',
      code,
      rawHeaders,
      latencyNs,
    });
  }

  /** Judges a parsed head (buf[0..size)); an allowed one goes upstream with the body bytes already here. */
  private begin(head: RequestHead, size: number): void {
    const stats = this.engine.stats;
    stats.requests++;
    const t0 = process.hrtime.bigint();
    const v = this.view(head);
    const allowed = this.policy.matchers.every((m) => m.match(v) !== undefined);
    const url = `http://${head.headers.get('host')?.[0] ?? this.info.dstIp}${head.target}`;
    const x: Exchange = { head, url, t0, allowed, body: new BodyCursor(head.framing), responded: false, close: !head.keepAlive };
    const trace = this.engine.trace;
    if (trace) trace.req((x.seq = head.headers.get('x-seq')?.[0] ?? ''));
    if (!allowed) {
      stats.denied++;
      this.record(x, 'REQUEST', 'DROPPED', 0, head.raw, 0);
      // A body the client holds back for 100-continue never comes, and an upgrade's bytes are not HTTP: close
      // after the answer. Otherwise the body is read and dropped, and the connection stays usable.
      const close = head.upgrade || (head.expectContinue && !x.body.done) || x.close;
      this.socket.write(
        `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${DENIED_BODY.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n${DENIED_BODY}`,
      );
      this.record(x, 'RESPONSE', 'DROPPED', 403, DENIED_HEADERS, Number(process.hrtime.bigint() - t0));
      if (close) {
        this.finishClose();
        return;
      }
      x.responded = true;
      this.cur = x;
      this.buf = this.buf.subarray(size);
      this.maybeFinish();
      return;
    }
    stats.forwarded++;
    this.record(x, 'REQUEST', 'FORWARDED', 0, head.raw, 0);
    this.cur = x;
    this.resp = undefined;
    this.respHeadSent = false;
    const up = this.upstream ?? this.connectUpstream();
    if (head.upgrade) {
      // From here on the bytes are not HTTP: relay them as they are, both ways.
      this.tunnel = true;
      up.write(this.buf);
      this.buf = Buffer.alloc(0);
      return;
    }
    // The head and what is here of the body in one write (one segment for a small request).
    let n: number;
    try {
      n = x.body.take(this.buf, size);
    } catch {
      this.engine.stats.errors++;
      this.destroy();
      return;
    }
    if (!up.write(size + n === this.buf.length ? this.buf : this.buf.subarray(0, size + n))) this.socket.pause();
    this.buf = this.buf.subarray(size + n);
    this.maybeFinish();
  }

  private connectUpstream(): net.Socket {
    const up = this.policy.connect(this.info);
    // Our own sockets (marked, bound to the client's address) are not created by a server: set noDelay here.
    up.setNoDelay(true);
    this.upstream = up;
    up.on('data', (d: Buffer) => this.onUpstreamData(up, d));
    up.on('drain', () => this.socket.resume());
    up.on('error', () => this.onUpstreamGone(up, true));
    up.on('end', () => this.onUpstreamGone(up, false));
    up.on('close', () => this.onUpstreamGone(up, false));
    return up;
  }

  private onUpstreamGone(up: net.Socket, error: boolean): void {
    if (this.upstream !== up) return;
    this.upstream = undefined;
    up.destroy();
    if (this.closed) return;
    if (this.tunnel) {
      this.socket.end();
      return;
    }
    const x = this.cur;
    if (x === undefined || !x.allowed || x.responded) return;
    if (this.resp?.framing.kind === 'close' && !error) {
      // A response delimited by the close of its connection: it is complete, and so is this client connection.
      this.cur = undefined;
      this.socket.end();
      return;
    }
    this.engine.stats.errors++;
    if (!this.respHeadSent) {
      this.socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\nupstream connect error');
      this.closed = true;
      this.engine.forget(this);
    } else this.destroy();
  }

  private onUpstreamData(up: net.Socket, d: Buffer): void {
    if (this.upstream !== up || this.closed) return;
    this.seen = this.engine.sweeps;
    if (this.tunnel) {
      if (!this.socket.write(d)) up.pause();
      return;
    }
    const x = this.cur;
    if (x === undefined || !x.allowed || x.responded) {
      // Bytes nobody asked for: the upstream is out of step.
      this.engine.stats.errors++;
      this.destroy();
      return;
    }
    const buf = this.upBuf.length === 0 ? d : Buffer.concat([this.upBuf, d]);
    this.upBuf = Buffer.alloc(0);
    let from = 0; // first byte of buf not yet written to the client
    let i = 0;
    while (i < buf.length && !x.responded) {
      if (this.resp === undefined) {
        let size: number;
        try {
          size = headEnd(buf.subarray(i), 64 * 1024);
          if (size < 0) break;
          const h = parseResponseHead(buf.subarray(i), size);
          i += size;
          if (h.status >= 100 && h.status < 200 && h.status !== 101) continue; // interim (100 Continue): relayed, the final one follows
          this.respHeadSent = true;
          if (x.seq !== undefined) this.engine.trace?.resp(x.seq);
          this.record(x, 'RESPONSE', 'FORWARDED', h.status, h.raw, Number(process.hrtime.bigint() - x.t0));
          if (h.status === 101) {
            this.tunnel = true;
            this.socket.write(buf.subarray(from));
            return;
          }
          if (!h.keepAlive) x.close = true;
          this.resp = new BodyCursor(responseFraming(h, x.head.method));
        } catch {
          this.engine.stats.errors++;
          if (!this.respHeadSent) {
            this.socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
            this.closed = true;
            this.upstream?.destroy();
            this.engine.forget(this);
          } else this.destroy();
          return;
        }
      }
      try {
        i += this.resp.take(buf, i);
      } catch {
        this.engine.stats.errors++;
        this.destroy();
        return;
      }
      if (this.resp.done) x.responded = true;
    }
    if (i > from && !this.socket.write(from === 0 && i === buf.length ? buf : buf.subarray(from, i))) up.pause();
    from = i;
    if (this.resp === undefined && from < buf.length) this.upBuf = Buffer.from(buf.subarray(from)); // a partial head
    else if (from < buf.length) {
      // Bytes past the end of the response: the server is out of step (we never pipeline to it).
      this.engine.stats.errors++;
      this.destroy();
      return;
    }
    this.maybeFinish();
    this.pump();
  }

  /** Ends the client connection after what was written (and drops the upstream). */
  private finishClose(): void {
    this.socket.end();
    this.closed = true;
    this.upstream?.destroy();
    this.engine.forget(this);
  }

  /** An exchange is over when its request body has been read and its response relayed: on to the next. */
  private maybeFinish(): void {
    const x = this.cur;
    if (x === undefined || !x.responded || !x.body.done) return;
    this.cur = undefined;
    this.resp = undefined;
    if (x.close) {
      this.finishClose();
      return;
    }
    this.socket.resume();
  }
}

/**
 * The proxy's engine on the fast path: parses request heads itself (request line, headers, body framing) to judge
 * each request, writes an allowed request's raw bytes to one upstream socket per client connection and relays the
 * response's raw bytes back (parsing its head and framing only to know where it ends and to record it).
 * Keep-alive, pipelining (served in order), chunked bodies, Expect: 100-continue, upgrades.
 */
export class HttpFastEngine {
  readonly stats: HttpProxyStats = { connections: 0, requests: 0, forwarded: 0, denied: 0, errors: 0 };
  /** @internal Where the connections' records go: the raw sink, else onFlow with each record's full shape. */
  readonly rawSink: ((r: RawFlow) => void) | undefined;
  /** @internal The diagnostic trace, if any. */
  readonly trace: ProxyTrace | undefined;
  private readonly conns = new Set<ClientConn>();
  /** @internal Sweeps so far (the connections' idle clock). */
  sweeps = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: HttpProxyOptions,
    idle: { timeoutMs: number; sweepMs: number } = { timeoutMs: IDLE_TIMEOUT_MS, sweepMs: IDLE_SWEEP_MS },
  ) {
    this.trace = opts.trace;
    const onFlow = opts.onFlow;
    this.rawSink = opts.onRawFlow ?? (onFlow ? (r) => onFlow(toRecord(r)) : undefined);
    // Idle connections: one unref'd sweep for all of them (a socket timeout re-arms on every read and write).
    const sweeps = Math.max(1, Math.ceil(idle.timeoutMs / idle.sweepMs));
    this.sweeper = setInterval(() => {
      this.sweeps++;
      for (const c of this.conns) c.sweep(this.sweeps, sweeps);
    }, idle.sweepMs).unref();
  }

  /** Takes over an accepted connection. */
  handle(socket: net.Socket): void {
    const info: ConnectionInfo = { srcIp: socket.remoteAddress ?? '', srcPort: socket.remotePort ?? 0, dstIp: socket.localAddress ?? '', dstPort: socket.localPort ?? 0 };
    const policy = this.opts.policyFor(info);
    if (policy === undefined) {
      socket.destroy();
      return;
    }
    this.stats.connections++;
    // The listener hands sockets over without net.Server's noDelay: without it Nagle holds bodies behind heads.
    socket.setNoDelay(true);
    this.conns.add(new ClientConn(this, socket, info, policy));
  }

  /** @internal */
  forget(c: ClientConn): void {
    this.conns.delete(c);
  }

  /** Closes every connection (client and upstream) and stops the idle sweep. */
  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const c of [...this.conns]) c.destroy();
    this.conns.clear();
  }
}
