// JSON-over-HTTP API on a root-only unix socket (agent and operator): routes under /v1, coded errors.
import fs from 'node:fs';
import http from 'node:http';
import type { Logger } from './log.js';
import { isIPv4 } from './ip.js';
import { claimSocketPath } from './socket.js';

export type Params = Record<string, string>;
export interface ApiRequest {
  params: Params;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Body parsed as JSON; throws a 400 naming the problem. */
  json(): unknown;
}
/** A handler returns a JSON value (200), `{ status, body }`, or a raw response. */
export type ApiResult = unknown;
export interface RawResult {
  raw: true;
  status: number;
  headers: Record<string, string>;
  body: string;
}
export type Handler = (req: ApiRequest) => Promise<ApiResult> | ApiResult;

interface Route {
  method: string;
  parts: string[];
  handler: Handler;
}

/** Kinds a path parameter can be declared as (`{ip:ipv4}`): a malformed value is a 400 before the handler runs. */
const PARAM_KINDS: Record<string, { check: (v: string) => boolean; expected: string }> = {
  ipv4: { check: isIPv4, expected: 'an IPv4 address (e.g. 10.0.0.5)' },
};

/** Requests bigger than this are refused with 413 (a policy document set is kilobytes; Kubernetes allows 3 MiB). */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface ApiServerOptions {
  maxBodyBytes?: number;
}

export class ApiServer {
  private readonly routes: Route[] = [];
  private server: http.Server | undefined;
  private readonly log: Logger;
  private readonly maxBodyBytes: number;

  constructor(log: Logger, o: ApiServerOptions = {}) {
    this.log = log;
    this.maxBodyBytes = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  /** Registers `METHOD /v1/path/{param}`; `{param:ipv4}` also checks the value's kind. */
  route(method: string, pattern: string, handler: Handler): this {
    const parts = pattern.split('/').filter(Boolean);
    for (const p of parts) {
      const kind = /^\{[^:}]+:([^}]+)\}$/.exec(p)?.[1];
      if (kind !== undefined && !PARAM_KINDS[kind]) throw new Error(`Route ${method} ${pattern}: unknown parameter kind "${kind}"`);
    }
    this.routes.push({ method, parts, handler });
    return this;
  }

  /** Serves on @socket; refuses (SocketClaimError) a path a live server still answers on. */
  async listen(socket: string): Promise<void> {
    await claimSocketPath(socket);
    const server = http.createServer((req, res) => void this.dispatch(req, res));
    // A CNI ADD can take a while; never cut a request short.
    server.requestTimeout = 0;
    server.headersTimeout = 60_000;
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socket, () => resolve());
      });
    } finally {
      process.umask(oldMask);
    }
    fs.chmodSync(socket, 0o600);
    this.server = server;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }

  private match(method: string, pathname: string): { route: Route; params: Params } | 'method' | undefined {
    const parts = pathname.split('/').filter(Boolean).map((part) => {
      try {
        return decodeURIComponent(part);
      } catch {
        throw new HttpError(400, `Malformed percent-encoding in path segment "${part}" of ${pathname}`, 'TENDRIL_ERR_INVALID_REQUEST');
      }
    });
    let methodMismatch = false;
    for (const r of this.routes) {
      if (r.parts.length !== parts.length) continue;
      const params: Params = {};
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const p = r.parts[i]!;
        if (p.startsWith('{')) params[p.slice(1, -1).split(':')[0]!] = parts[i]!;
        else ok = p === parts[i];
      }
      if (!ok) continue;
      if (r.method !== method) {
        methodMismatch = true;
        continue;
      }
      for (const p of r.parts) {
        const [name, kind] = p.startsWith('{') ? p.slice(1, -1).split(':') : [];
        const k = kind === undefined ? undefined : PARAM_KINDS[kind];
        if (k && !k.check(params[name!]!)) {
          throw new HttpError(400, `Invalid ${name} "${params[name!]}" in ${method} ${pathname}: expected ${k.expected}`, 'TENDRIL_ERR_INVALID_REQUEST');
        }
      }
      return { route: r, params };
    }
    return methodMismatch ? 'method' : undefined;
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const started = process.hrtime.bigint();
    let status = 200;
    try {
      const body = await readBody(req, this.maxBodyBytes, res);
      const m = this.match(req.method ?? 'GET', url.pathname);
      if (m === undefined) throw new HttpError(404, `No API route ${req.method} ${url.pathname}`);
      if (m === 'method') throw new HttpError(405, `Method ${req.method} not allowed on ${url.pathname}`);
      const result = await m.route.handler({
        params: m.params,
        query: url.searchParams,
        headers: req.headers,
        body,
        json: () => parseJsonBody(body),
      });
      if (isRaw(result)) {
        status = result.status;
        res.writeHead(status, { 'content-type': 'application/json', ...result.headers });
        res.end(result.body);
      } else if (isStatus(result)) {
        status = result.status;
        sendJson(res, status, result.body);
      } else {
        sendJson(res, 200, result);
      }
    } catch (err) {
      const e = toHttp(err);
      status = e.status;
      if (status >= 500) this.log.error({ err, path: url.pathname }, 'API request failed');
      sendJson(res, status, { code: e.code, message: e.message });
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      this.log.debug({ method: req.method, path: url.pathname, status, ms }, 'api');
    }
  }
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code = 'TENDRIL_ERR_API',
  ) {
    super(message);
  }
}

/** A non-200 JSON answer. */
export function withStatus(status: number, body: unknown): { status: number; body: unknown } {
  return { status, body };
}

function isStatus(v: unknown): v is { status: number; body: unknown } {
  return typeof v === 'object' && v !== null && 'status' in v && 'body' in v && Object.keys(v).length === 2;
}

function isRaw(v: unknown): v is RawResult {
  return typeof v === 'object' && v !== null && (v as { raw?: unknown }).raw === true;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = body === undefined ? '' : JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** How much of a refused body is still read (and thrown away) before the 413 goes out and the connection closes. */
const REFUSED_BODY_DRAIN_BYTES = 64 * 1024 * 1024;
const REFUSED_BODY_DRAIN_MS = 5000;

/**
 * The request body, refused with 413 once it passes @limit bytes (declared or sent). The rest is read and thrown
 * away before the answer goes out (up to 64 MiB or 5 s), so a client still writing its body reads the 413 instead
 * of a broken pipe; the connection closes after it.
 */
function readBody(req: http.IncomingMessage, limit: number, res: http.ServerResponse): Promise<string> {
  const refuse = (size: string, reject: (e: HttpError) => void): void => {
    res.setHeader('connection', 'close');
    const err = new HttpError(413, `Request body of ${size} bytes exceeds the API's limit of ${limit} bytes: send less per request (e.g. one policy file at a time)`, 'TENDRIL_ERR_BODY_TOO_LARGE');
    let drained = 0;
    const done = (): void => {
      clearTimeout(timer);
      req.off('data', count);
      reject(err);
    };
    const count = (c: Buffer): void => {
      drained += c.length;
      if (drained > REFUSED_BODY_DRAIN_BYTES) done();
    };
    const timer = setTimeout(done, REFUSED_BODY_DRAIN_MS);
    req.on('data', count);
    req.once('end', done);
    req.once('error', done);
    req.resume();
  };
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) return refuse(String(declared), reject);
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size <= limit) return void chunks.push(c);
      req.off('data', onData);
      req.off('end', onEnd);
      chunks.length = 0;
      refuse(`more than ${limit}`, reject);
    };
    const onEnd = (): void => resolve(Buffer.concat(chunks).toString('utf8'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', reject);
  });
}

function parseJsonBody(body: string): unknown {
  if (body.trim() === '') throw new HttpError(400, 'Request body is empty: expected JSON', 'TENDRIL_ERR_INVALID_REQUEST');
  try {
    return JSON.parse(body);
  } catch (err) {
    throw new HttpError(400, `Request body is not valid JSON: ${(err as Error).message}`, 'TENDRIL_ERR_INVALID_REQUEST');
  }
}

function toHttp(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown; httpStatus?: unknown };
  // Coded component errors (AgentError, StoreError, …) carry their own status.
  if (typeof e.httpStatus === 'number' && typeof e.code === 'string') return { status: e.httpStatus, code: e.code, message: String(e.message) };
  return {
    status: 500,
    code: typeof e.code === 'string' ? e.code : 'TENDRIL_ERR_INTERNAL',
    message: typeof e.message === 'string' ? e.message : String(err),
  };
}
