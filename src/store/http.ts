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

/**
 * The members of one replicated server (etcd's cluster members; a single target for the local store). One member is
 * preferred; a member that fails hands the preference to the next, so requests and watches move together and stay
 * on a member that works.
 */
export class Members {
  private preferred = 0;
  readonly targets: readonly HttpTarget[];

  constructor(targets: HttpTarget | readonly HttpTarget[]) {
    this.targets = Array.isArray(targets) ? [...targets] : [targets as HttpTarget];
    if (this.targets.length === 0) throw new StoreError('TENDRIL_ERR_STORE_INVALID', 'A store needs at least one endpoint');
  }

  get current(): HttpTarget {
    return this.targets[this.preferred]!;
  }

  /** `t` failed: if it is still the preferred member, the next one becomes preferred. */
  failed(t: HttpTarget): void {
    if (this.targets.length > 1 && this.current === t) this.preferred = (this.preferred + 1) % this.targets.length;
  }

  describe(): string {
    return this.targets.map(describeTarget).join(', ');
  }
}

/** How a request may be retried. */
export interface RequestPolicy {
  /** Sending it again cannot do harm (a read): a lost answer moves on to another member like a refused connection. */
  resend?: boolean;
  /**
   * Only a connection that could not be opened proves the request unsent: a kept-alive connection reset under it
   * (usually the server closing an idle one, but also a server dying while it works on the request) is an unknown
   * outcome, for callers that can find out which (etcd writes read the key back).
   */
  strict?: boolean;
  /** Abandons the request in flight (an unknown outcome unless it could not be sent). */
  signal?: AbortSignal;
  /** An answer meaning this member did not serve the request and another may (etcd's "no leader"). */
  unserved?: (res: JsonResponse) => string | undefined;
}

/**
 * The server may or may not have applied the request: its answer was lost (connection reset after sending, or no
 * answer in time). Still TENDRIL_ERR_STORE_UNAVAILABLE for callers; a backend can find out and resolve it.
 */
export class OutcomeUnknownError extends StoreError {
  constructor(message: string, readonly target: HttpTarget, cause: unknown) {
    super('TENDRIL_ERR_STORE_UNAVAILABLE', message, { cause });
  }
}

export class HttpJsonClient {
  readonly agent: http.Agent;
  readonly members: Members;
  constructor(
    targets: HttpTarget | readonly HttpTarget[] | Members,
    readonly retry: ResolvedRetry,
    private readonly what: string,
    /** Sent with every request. */
    private readonly headers: Readonly<Record<string, string>> = {},
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    this.members = targets instanceof Members ? targets : new Members(targets);
  }

  /**
   * One request, sent to the preferred member and moved on to the next while members cannot be reached (every
   * member tried once before a backoff pause), up to connectTimeoutMs.
   */
  async request(method: string, path: string, body?: unknown, policy: RequestPolicy = {}): Promise<JsonResponse> {
    const deadline = Date.now() + this.retry.connectTimeoutMs;
    const backoff = new Backoff(50, this.retry.maxBackoffMs);
    const n = this.members.targets.length;
    for (let failures = 1; ; failures++) {
      const t = this.members.current;
      let cause: unknown;
      try {
        const res = await this.once(t, method, path, body, policy.signal);
        const why = policy.unserved?.(res);
        if (why === undefined) return res;
        cause = new Error(why);
      } catch (err) {
        const e = err as { error: unknown; reusedSocket: boolean };
        cause = e.error;
        if (!neverSent(e.error, e.reusedSocket && policy.strict !== true) && policy.resend !== true) {
          this.members.failed(t);
          throw new OutcomeUnknownError(`Cannot reach ${this.what} at ${describeTarget(t)}: ${describeCause(e.error)}`, t, e.error);
        }
      }
      this.members.failed(t);
      // A pause after each round over all members; a single server is one member, so every attempt pauses.
      const wait = failures % n === 0 ? backoff.delay() : 0;
      // Every member is tried once whatever the deadline (an attempt on a hung one takes a whole requestTimeoutMs).
      if (failures >= n && Date.now() + wait >= deadline) {
        const where = n === 1 ? describeTarget(t) : `any of ${this.members.describe()}`;
        throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot reach ${this.what} at ${where}: ${describeCause(cause)}`, { cause });
      }
      if (wait > 0) await sleep(wait);
    }
  }

  /** One attempt on one member, no retry (probes of a particular member). */
  async requestTo(t: HttpTarget, method: string, path: string, body?: unknown): Promise<JsonResponse> {
    try {
      return await this.once(t, method, path, body);
    } catch (err) {
      const e = (err as { error: unknown }).error;
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot reach ${this.what} at ${describeTarget(t)}: ${describeCause(e)}`, { cause: e });
    }
  }

  close(): void {
    this.agent.destroy();
  }

  private once(target: HttpTarget, method: string, path: string, body: unknown, signal?: AbortSignal): Promise<JsonResponse> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json', ...this.headers };
      if (payload) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = payload.length;
      }
      const req = http.request({ ...target, method, path, headers, agent: this.agent, ...(signal ? { signal } : {}) });
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
export function openNdjsonStream(
  target: HttpTarget, method: string, path: string, body: unknown, h: StreamHandlers, extraHeaders: Readonly<Record<string, string>> = {},
): () => void {
  let done = false;
  const end = (err?: unknown): void => {
    if (done) return;
    done = true;
    h.onEnd(err);
  };
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = { accept: 'application/x-ndjson', ...extraHeaders };
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
