// The HTTP/1.1 engine of the node proxy: per request, the L7 verdict; allowed requests upstream, denied ones a 403.
import type { RawFlow } from './flow-wire.js';
import http from 'node:http';
import net from 'node:net';
import { HttpMatcher, type HttpRequestView } from '../policy/index.js';

/** Where an intercepted connection was going, and who opened it. */
export interface ConnectionInfo {
  srcIp: string;
  srcPort: number;
  /** The original destination (the accepted socket's local address: the datapath assigned it, it did not NAT). */
  dstIp: string;
  dstPort: number;
}

/** What the proxy applies to one connection: every matcher must allow a request (egress of the client and
 *  ingress of the server when both are L7-policed on this node); the upstream socket factory. */
export interface ConnectionPolicy {
  matchers: HttpMatcher[];
  /** Identities for the flow records. */
  srcIdentity: number;
  dstIdentity: number;
  /** Whose policy this is (the flows' traffic_direction): the client's egress or the server's ingress. */
  direction?: 'INGRESS' | 'EGRESS';
  /** Opens the upstream connection (a socket that keeps the client's address and identity). */
  connect(info: ConnectionInfo): net.Socket;
}

/** One L7 flow record: a request (with its verdict) or the response to an allowed one. */
export interface HttpFlowRecord {
  /** A Date, or ms since the epoch (the fast engine's records). */
  time: Date | number;
  type: 'REQUEST' | 'RESPONSE';
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  conn: ConnectionInfo;
  direction?: 'INGRESS' | 'EGRESS';
  srcIdentity: number;
  dstIdentity: number;
  method: string;
  url: string;
  protocol: string;
  /** Response status (0 on a request record). */
  code: number;
  /** Request headers on a request, response headers on a response (lower-case names). */
  headers: { key: string; value: string }[];
  /** Response records: nanoseconds from the request's head to the response's head. */
  latencyNs: number;
}

export interface HttpProxyOptions {
  /** The policy for a new connection, or undefined: no L7 rule covers it any more (it is refused). */
  policyFor(info: ConnectionInfo): ConnectionPolicy | undefined;
  onFlow?(r: HttpFlowRecord): void;
  /** The fast engine only: records before their full shape is built (see flow-wire.ts); preferred over onFlow. */
  onRawFlow?(r: RawFlow): void;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

function view(req: http.IncomingMessage): HttpRequestView {
  const headers = new Map<string, string[]>();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const k = req.rawHeaders[i]!.toLowerCase();
    const list = headers.get(k);
    if (list) list.push(req.rawHeaders[i + 1]!);
    else headers.set(k, [req.rawHeaders[i + 1]!]);
  }
  return { method: req.method ?? '', path: req.url ?? '', host: req.headers.host ?? '', headers };
}

function headerList(raw: readonly string[]): { key: string; value: string }[] {
  const out: { key: string; value: string }[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push({ key: raw[i]!.toLowerCase(), value: raw[i + 1]! });
  return out;
}

const DENIED_BODY = 'Access denied';

/** Counters for `tendril status`. */
export interface HttpProxyStats {
  connections: number;
  requests: number;
  forwarded: number;
  denied: number;
  errors: number;
}

/**
 * Serves intercepted connections with Node's HTTP/1.1 server (keep-alive, pipelining with responses in order,
 * chunked bodies, Expect: 100-continue) and forwards allowed requests with their raw header lines over one upstream
 * connection per client connection (so the server sees the client's connection reuse).
 */
export class HttpProxyEngine {
  readonly stats: HttpProxyStats = { connections: 0, requests: 0, forwarded: 0, denied: 0, errors: 0 };
  private readonly server: http.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: HttpProxyOptions) {
    this.server = http.createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 });
    this.server.on('request', (req, res) => this.onRequest(req, res));
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res, true));
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as net.Socket, head));
    this.server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
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
    // The listener hands sockets over without net.Server's noDelay: without this, Nagle holds a response's body
    // behind its head until the client's delayed ACK (tens of ms per request).
    socket.setNoDelay(true);
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      conns.get(socket)?.agent?.destroy();
    });
    conns.set(socket, { info, policy, agent: undefined });
    this.server.emit('connection', socket);
  }

  /** Closes every connection (client and upstream). */
  close(): void {
    for (const s of this.sockets) {
      conns.get(s)?.agent?.destroy();
      s.destroy();
    }
    this.sockets.clear();
    this.server.close();
  }

  private allowed(policy: ConnectionPolicy, req: http.IncomingMessage): boolean {
    const v = view(req);
    return policy.matchers.every((m) => m.match(v) !== undefined);
  }

  private record(c: ConnState, req: http.IncomingMessage, type: HttpFlowRecord['type'], verdict: HttpFlowRecord['verdict'], code: number, headers: readonly string[], latencyNs: number): void {
    this.opts.onFlow?.({
      time: new Date(),
      type,
      verdict,
      conn: c.info,
      ...(c.policy.direction ? { direction: c.policy.direction } : {}),
      srcIdentity: c.policy.srcIdentity,
      dstIdentity: c.policy.dstIdentity,
      method: req.method ?? '',
      url: `http://${req.headers.host ?? c.info.dstIp}${req.url ?? ''}`,
      protocol: `HTTP/${req.httpVersion}`,
      code,
      headers: headerList(headers),
      latencyNs,
    });
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, expectContinue = false): void {
    const c = conns.get(req.socket);
    if (c === undefined) {
      res.destroy();
      return;
    }
    this.stats.requests++;
    const t0 = process.hrtime.bigint();
    if (!this.allowed(c.policy, req)) {
      this.stats.denied++;
      this.record(c, req, 'REQUEST', 'DROPPED', 0, req.rawHeaders, 0);
      // A body the client sends anyway is read and dropped, so the connection stays usable; one it holds back
      // for 100-continue never comes: close after the answer rather than wait for it.
      if (expectContinue) res.shouldKeepAlive = false;
      else req.resume();
      res.writeHead(403, { 'content-type': 'text/plain', 'content-length': String(DENIED_BODY.length) });
      res.end(DENIED_BODY);
      this.record(c, req, 'RESPONSE', 'DROPPED', 403, res.getHeaderNames().flatMap((n) => [n, String(res.getHeader(n))]), Number(process.hrtime.bigint() - t0));
      return;
    }
    this.stats.forwarded++;
    this.record(c, req, 'REQUEST', 'FORWARDED', 0, req.rawHeaders, 0);
    c.agent ??= this.upstreamAgent(c);
    const up = http.request({ method: req.method, path: req.url, headers: req.rawHeaders, agent: c.agent, setHost: false });
    up.on('continue', () => {
      res.writeContinue();
    });
    up.on('response', (ur) => {
      const raw: string[] = [];
      for (let i = 0; i + 1 < ur.rawHeaders.length; i += 2) {
        if (!HOP_BY_HOP.has(ur.rawHeaders[i]!.toLowerCase())) raw.push(ur.rawHeaders[i]!, ur.rawHeaders[i + 1]!);
      }
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, raw);
      this.record(c, req, 'RESPONSE', 'FORWARDED', ur.statusCode ?? 0, ur.rawHeaders, Number(process.hrtime.bigint() - t0));
      ur.pipe(res);
    });
    up.on('error', () => {
      this.stats.errors++;
      if (!res.headersSent) {
        res.writeHead(503, { 'content-type': 'text/plain', connection: 'close' });
        res.end('upstream connect error');
      } else res.destroy();
    });
    if (expectContinue) {
      // Ask the server: the body follows its 100 Continue (relayed above), as the client waits for one.
      up.flushHeaders();
    }
    req.pipe(up);
  }

  private onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const c = conns.get(socket);
    if (c === undefined || !this.allowed(c.policy, req)) {
      this.stats.requests++;
      this.stats.denied++;
      if (c) this.record(c, req, 'REQUEST', 'DROPPED', 0, req.rawHeaders, 0);
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${DENIED_BODY.length}\r\nConnection: close\r\n\r\n${DENIED_BODY}`);
      return;
    }
    this.stats.requests++;
    this.stats.forwarded++;
    this.record(c, req, 'REQUEST', 'FORWARDED', 0, req.rawHeaders, 0);
    // An allowed upgrade: from here on the bytes are not HTTP; relay them as they are.
    const up = c.policy.connect(c.info);
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    up.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) up.write(head);
    up.pipe(socket).pipe(up);
    const done = (): void => {
      up.destroy();
      socket.destroy();
    };
    for (const s of [up, socket]) {
      s.on('error', done);
      s.on('close', done);
    }
  }

  private upstreamAgent(c: ConnState): http.Agent {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const policy = c.policy;
    const info = c.info;
    // Our own sockets (marked, bound to the client's address) skip the Agent's noDelay: set it here.
    (agent as unknown as { createConnection: () => net.Socket }).createConnection = () => policy.connect(info).setNoDelay(true);
    return agent;
  }
}

interface ConnState {
  info: ConnectionInfo;
  policy: ConnectionPolicy;
  agent: http.Agent | undefined;
}

const conns = new WeakMap<net.Socket, ConnState>();
