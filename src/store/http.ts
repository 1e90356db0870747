// HTTP/1.1 client plumbing shared by the local and etcd backends: JSON requests that retry while the server is
// unreachable, and newline-delimited JSON streams for watches.
import http from 'node:http';
import { StoreError, describeCause } from './errors.js';

/** Where a server listens: a unix socket path or a TCP host:port. */
export type HttpTarget = { socketPath: string } | { host: string; port: number };

export interface RetryOptions {
  /** How long an operation keeps retrying to connect while the server is unreachable. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** How long one request may be silent before it fails. Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Upper bound of the pause between reconnect attempts (operations and watches). Default 2000 ms. */
  maxBackoffMs?: number;
}

export interface ResolvedRetry {
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  maxBackoffMs: number;
}

export function resolveRetry(o: RetryOptions = {}): ResolvedRetry {
  return {
    connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
    maxBackoffMs: o.maxBackoffMs ?? 2000,
  };
}

export function describeTarget(t: HttpTarget): string {
  return 'socketPath' in t ? `unix:${t.socketPath}` : `${t.host}:${t.port}`;
}

/** Exponential backoff with jitter, so many agents reconnecting after a restart do not arrive in lockstep. */
export class Backoff {
  private next: number;
  constructor(private readonly initialMs: number, private readonly maxMs: number) {
    this.next = initialMs;
  }
  delay(): number {
    const d = this.next * (0.8 + Math.random() * 0.4);
    this.next = Math.min(this.next * 2, this.maxMs);
    return Math.min(d, this.maxMs);
  }
  reset(): void {
    this.next = this.initialMs;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const MAX_RESPONSE = 64 * 1024 * 1024;

export interface JsonResponse {
  status: number;
  body: unknown;
}

/**
 * Errors that prove the request never reached the server, so sending it again cannot apply it twice:
 * nothing listening, socket file missing (server restarting), or a kept-alive connection the server had
 * already closed (Node's documented `reusedSocket` case).
 */
function neverSent(err: unknown, reusedSocket: boolean): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EAGAIN' || code === 'EADDRNOTAVAIL') return true;
  return reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

export class HttpJsonClient {
  readonly agent: http.Agent;
  constructor(readonly target: HttpTarget, readonly retry: ResolvedRetry, private readonly what: string) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  /** One request, retried while the server cannot be reached, up to connectTimeoutMs. */
  async request(method: string, path: string, body?: unknown): Promise<JsonResponse> {
    const deadline = Date.now() + this.retry.connectTimeoutMs;
    const backoff = new Backoff(50, this.retry.maxBackoffMs);
    for (;;) {
      try {
        return await this.once(method, path, body);
      } catch (err) {
        const e = err as { error: unknown; reusedSocket: boolean };
        if (neverSent(e.error, e.reusedSocket)) {
          const wait = backoff.delay();
          if (Date.now() + wait < deadline) {
            await sleep(wait);
            continue;
          }
        }
        throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot reach ${this.what} at ${describeTarget(this.target)}: ${describeCause(e.error)}`, { cause: e.error });
      }
    }
  }

  close(): void {
    this.agent.destroy();
  }

  private once(method: string, path: string, body: unknown): Promise<JsonResponse> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
      if (payload) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = payload.length;
      }
      const req = http.request({ ...this.target, method, path, headers, agent: this.agent });
      const fail = (error: unknown): void => reject({ error, reusedSocket: req.reusedSocket });
      req.setTimeout(this.retry.requestTimeoutMs, () => {
        req.destroy(Object.assign(new Error(`no answer within ${this.retry.requestTimeoutMs} ms`), { code: 'ETIMEDOUT' }));
      });
      req.on('error', fail);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE) req.destroy(new Error(`response larger than ${MAX_RESPONSE} bytes`));
          else chunks.push(c);
        });
        res.on('error', fail);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = undefined;
          if (text.length > 0) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = { unparsed: text.slice(0, 200) };
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.end(payload);
    });
  }
}

export interface StreamHandlers {
  /** Status and headers arrived; a non-2xx status ends the stream after its body is read as lines. */
  onResponse(status: number): void;
  onLine(value: unknown): void;
  /** Exactly once: the stream ended (err undefined) or failed. Not called after cancel(). */
  onEnd(err?: unknown): void;
}

const MAX_LINE = 64 * 1024 * 1024;

/** A long-lived request whose response is newline-delimited JSON. Returns a cancel function. */
export function openNdjsonStream(target: HttpTarget, method: string, path: string, body: unknown, h: StreamHandlers): () => void {
  let done = false;
  const end = (err?: unknown): void => {
    if (done) return;
    done = true;
    h.onEnd(err);
  };
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = { accept: 'application/x-ndjson' };
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = payload.length;
  }
  // Own connection (agent: false): a watch holds it for its whole life.
  const req = http.request({ ...target, method, path, headers, agent: false });
  req.on('socket', (s) => {
    // Notices a peer that vanished without closing (host died, cable pulled) sooner than the OS default.
    s.setKeepAlive(true, 10_000);
    s.setNoDelay(true);
  });
  req.on('error', (err) => end(err));
  req.on('response', (res) => {
    h.onResponse(res.statusCode ?? 0);
    res.setEncoding('utf8');
    let buf = '';
    res.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while (!done && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.length === 0) continue;
        let value: unknown;
        try {
          value = JSON.parse(line);
        } catch (err) {
          req.destroy();
          end(new Error(`malformed stream line: ${describeCause(err)}`));
          return;
        }
        h.onLine(value);
      }
      if (buf.length > MAX_LINE) {
        req.destroy();
        end(new Error(`stream line longer than ${MAX_LINE} bytes`));
      }
    });
    res.on('error', (err) => end(err));
    res.on('aborted', () => end(new Error('stream aborted')));
    res.on('end', () => end());
    res.on('close', () => end(new Error('stream closed')));
  });
  req.end(payload);
  return () => {
    done = true;
    req.destroy();
  };
}
