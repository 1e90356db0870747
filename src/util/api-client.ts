// Client of the JSON-over-HTTP API on a unix socket (api.ts): the agent's, the operator's. Used by the CLI and the lab.
import http from 'node:http';

export class ApiClientError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  constructor(code: string, message: string, status?: number) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Who serves the socket, for messages and codes: "Cannot reach the operator …" [TENDRIL_ERR_OPERATOR_UNREACHABLE]. */
export type ApiPeer = 'agent' | 'operator';

export function rawRequest(
  socket: string,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
  timeoutMs = 30_000,
  peer: ApiPeer = 'agent',
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      // agent: false — a connection per request. Node's global agent keeps sockets alive, and one the server closed
      // while this process was busy (a blocking spawnSync in a test, a loaded machine) is reused and fails with EPIPE.
      { socketPath: socket, method, path, agent: false, headers: { ...headers, ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    // A server that is there but slow is not an unreachable one: callers may wait longer, not give up on it.
    req.setTimeout(timeoutMs, () =>
      req.destroy(new ApiClientError('TENDRIL_ERR_API_TIMEOUT', `The ${peer} at ${socket} did not answer ${method} ${path} within ${timeoutMs} ms`)),
    );
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof ApiClientError ? err : connectError(socket, peer, err)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function connectError(socket: string, peer: ApiPeer, err: NodeJS.ErrnoException): ApiClientError {
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return new ApiClientError(
      'TENDRIL_ERR_PERMISSION',
      `Permission denied on the ${peer} API socket ${socket}: it is root's only (mode 0600); run tendril as root (e.g. with sudo)`,
    );
  }
  const why = err.code === undefined ? err.message : err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `${err.code} (is the ${peer} running?)` : `${err.code} (${err.message})`;
  return new ApiClientError(`TENDRIL_ERR_${peer.toUpperCase()}_UNREACHABLE`, `Cannot reach the ${peer} at ${socket}: ${why}`);
}

export class ApiClient {
  constructor(
    readonly socket: string,
    readonly peer: ApiPeer = 'agent',
  ) {}

  async request<T = unknown>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const res = await rawRequest(
      this.socket,
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      body === undefined ? {} : { 'content-type': 'application/json' },
      timeoutMs,
      this.peer,
    );
    let parsed: unknown;
    try {
      parsed = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      throw new ApiClientError('TENDRIL_ERR_API', `The ${this.peer} answered ${method} ${path} with non-JSON (status ${res.status})`, res.status);
    }
    if (res.status >= 400) {
      const e = parsed as { code?: string; message?: string } | undefined;
      throw new ApiClientError(e?.code ?? 'TENDRIL_ERR_API', e?.message ?? `The ${this.peer} answered ${res.status}`, res.status);
    }
    return parsed as T;
  }

  get<T = unknown>(path: string, timeoutMs?: number): Promise<T> {
    return this.request<T>('GET', path, undefined, timeoutMs);
  }
}
