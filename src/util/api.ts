// JSON-over-HTTP API on a root-only unix socket (agent and operator): routes under /v1, coded errors.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Logger } from './log.js';

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

export class ApiServer {
  private readonly routes: Route[] = [];
  private server: http.Server | undefined;
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Registers `METHOD /v1/path/{param}`. */
  route(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  async listen(socket: string): Promise<void> {
    fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
    try {
      fs.unlinkSync(socket);
    } catch {
      // no stale socket
    }
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
    const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
    let methodMismatch = false;
    for (const r of this.routes) {
      if (r.parts.length !== parts.length) continue;
      const params: Params = {};
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const p = r.parts[i]!;
        if (p.startsWith('{')) params[p.slice(1, -1)] = parts[i]!;
        else ok = p === parts[i];
      }
      if (!ok) continue;
      if (r.method !== method) {
        methodMismatch = true;
        continue;
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
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
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
