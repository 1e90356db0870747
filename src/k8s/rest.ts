// Raw JSON requests to the apiserver with the kubeconfig's credentials. client-node's typed models rename fields
// (NetworkPolicy's "from" is "_from" there), so objects Tendril parses as documents are read and written as the
// apiserver's own JSON; the library's informers already hand over raw JSON.
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Source } from './bindings.js';

export type Obj = KubernetesObject & Record<string, unknown>;

/** An apiserver answer other than 2xx: `code` is the HTTP status, `body` the Status text (as ApiException). */
export class RestError extends Error {
  readonly code: number | undefined;
  readonly body: string;
  constructor(code: number | undefined, message: string, body = '') {
    super(message);
    this.name = 'RestError';
    this.code = code;
    this.body = body;
  }
}

/** Path of one object of a source (namespaced ones under /namespaces/NS/). */
export function objectPath(source: Source, name: string, namespace?: string): string {
  const cut = source.path.lastIndexOf('/');
  const base = source.path.slice(0, cut);
  const plural = source.path.slice(cut + 1);
  const ns = source.namespaced ? `/namespaces/${encodeURIComponent(namespace ?? 'default')}` : '';
  return `${base}${ns}/${plural}${name ? `/${encodeURIComponent(name)}` : ''}`;
}

export class Rest {
  private readonly kc: KubeConfig;
  private readonly server: URL;
  private readonly timeoutMs: number;

  /**
   * Connections kept open between requests: a TLS handshake (and a fresh SecureContext) per request cost the agent
   * ~30 ms of CPU each, which a node starting many pods (an endpoint published, maybe a pod read, per pod) pays at
   * the worst time. Idle sockets do not keep the process alive.
   */
  private readonly agent: https.Agent | http.Agent;

  constructor(kc: KubeConfig, server: string, timeoutMs = 10_000) {
    this.kc = kc;
    this.server = new URL(server);
    this.timeoutMs = timeoutMs;
    this.agent = this.server.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: 8 }) : new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  async request<T = Obj>(method: string, path: string, body?: unknown, contentType = 'application/json', accept = 'application/json'): Promise<T> {
    const opts: https.RequestOptions = {
      method,
      protocol: this.server.protocol,
      hostname: this.server.hostname.replace(/^\[|\]$/g, ''),
      port: this.server.port || (this.server.protocol === 'https:' ? 443 : 80),
      path: `${this.server.pathname.replace(/\/$/, '')}${path}`,
      headers: { accept, 'user-agent': 'tendril' },
      timeout: this.timeoutMs,
    };
    await this.kc.applyToHTTPSOptions(opts);
    // client-node makes a new Agent per call (no reuse); ours gets the same TLS options through the request (they
    // are part of its connection pool's key, so changed credentials get a connection of their own). Proxy agents stay.
    if (opts.agent?.constructor === https.Agent || opts.agent?.constructor === http.Agent || opts.agent === undefined) opts.agent = this.agent;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) opts.headers = { ...opts.headers, 'content-type': contentType, 'content-length': String(payload.length) };
    const mod = this.server.protocol === 'https:' ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(new RestError(undefined, err.message)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve((text ? JSON.parse(text) : {}) as T);
            } catch (err) {
              reject(new RestError(status, `${method} ${path}: bad JSON from the apiserver: ${(err as Error).message}`));
            }
            return;
          }
          let message = `${method} ${path}: HTTP ${status}`;
          try {
            const m = (JSON.parse(text) as { message?: unknown }).message;
            if (typeof m === 'string') message = m;
          } catch {
            /* not a Status */
          }
          reject(new RestError(status, message, text));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer from the apiserver in ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(new RestError(undefined, `${method} ${path}: ${err.message}`)));
      req.end(payload);
    });
  }
}
