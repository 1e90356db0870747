// HTTP-over-unix-socket client of the agent API, used by the CLI and the lab.
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

export function rawRequest(
  socket: string,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
  timeoutMs = 30_000,
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
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'is the agent running?' : err.message;
      reject(new ApiClientError('TENDRIL_ERR_AGENT_UNREACHABLE', `Cannot reach the agent at ${socket}: ${err.code ?? err.message} (${why})`));
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export class AgentClient {
  constructor(readonly socket: string) {}

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await rawRequest(
      this.socket,
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      body === undefined ? {} : { 'content-type': 'application/json' },
    );
    let parsed: unknown;
    try {
      parsed = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      throw new ApiClientError('TENDRIL_ERR_API', `Agent answered ${method} ${path} with non-JSON (status ${res.status})`, res.status);
    }
    if (res.status >= 400) {
      const e = parsed as { code?: string; message?: string } | undefined;
      throw new ApiClientError(e?.code ?? 'TENDRIL_ERR_API', e?.message ?? `Agent answered ${res.status}`, res.status);
    }
    return parsed as T;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
}
