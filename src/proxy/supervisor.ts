// Runs the node proxy as a child process in the agent's (the node's) namespace, feeds it rules, restarts it.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../util/log.js';
import { decodeRecords, type FlowBatch, type WireRecord } from './flow-wire.js';
import { PROXY_NICE, setProcessNice } from './priority.js';
import type { HttpProxyStats } from './types.js';
import type { FromProxy, ToProxy } from './main.js';
import type { ProxyTable } from './rules.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
/** Quick enough that new connections work again within a second of a crash. */
const RESTART_DELAY_MS = 100;
/**
 * V8 flags of the proxy process. A larger young generation: the proxy's garbage is per request (heads, records),
 * so fewer scavenges pause its event loop, each no longer (their cost is what survives, not the space's size). The
 * minimum makes it large from the start (V8 starts at 1 MB and grows it only when much survives): under l7-tail at
 * 1,000 req/s the slowest 1 % then overlapped a proxy GC in 1 of 4 runs (it was the second cause of the tail).
 */
export const PROXY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32', '--min-semi-space-size=16'];

/** Extra V8/Node flags for the proxy from TENDRIL_PROXY_NODE_FLAGS (space-separated; diagnostics such as
 *  `--cpu-prof --cpu-prof-dir=DIR`, bench/l7-profile.ts). */
export function extraProxyFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env['TENDRIL_PROXY_NODE_FLAGS'] ?? '').split(/\s+/).filter((f) => f !== '');
}

export interface ProxyStatus {
  port: number;
  running: boolean;
  pid: number | null;
  restarts: number;
  /** Endpoints with L7 rules (the redirects in force). */
  redirects: number;
  stats: HttpProxyStats | null;
}

export class ProxySupervisor {
  private child: ChildProcess | undefined;
  private table: ProxyTable = { endpoints: [], identities: [] };
  private stopped = true;
  private restarts = 0;
  private timer: NodeJS.Timeout | undefined;
  private stats: HttpProxyStats | null = null;
  private ready = false;

  constructor(private readonly opts: { port: number; log: Logger; onFlow?: (f: WireRecord) => void; onReady?: () => void; nice?: number }) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.spawn();
  }

  private spawn(): void {
    const child = fork(MAIN, [String(this.opts.port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'advanced', execArgv: [...process.execArgv, ...PROXY_NODE_FLAGS, ...extraProxyFlags()] });
    this.child = child;
    this.ready = false;
    child.on('message', (m: FromProxy) => {
      if (m.type === 'ready') {
        this.ready = true;
        this.prioritize(child);
        this.send({ type: 'rules', table: this.table });
        this.opts.log.info({ port: m.port, pid: child.pid }, 'L7 proxy listening');
        this.opts.onReady?.();
      } else if (m.type === 'flows') this.onFlows(m.batch);
      else if (m.type === 'stats') this.stats = m.stats;
      else if (m.type === 'error') this.opts.log.error({ err: m.message }, 'L7 proxy failed to start');
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.stopped) return;
      this.restarts++;
      this.opts.log.warn({ code, signal, restarts: this.restarts }, 'L7 proxy exited; restarting (its ports fail closed meanwhile)');
      this.timer = setTimeout(() => this.spawn(), RESTART_DELAY_MS);
    });
    child.on('error', (err) => this.opts.log.error({ err }, 'L7 proxy process error'));
  }

  /** The proxy ahead of the node's other work (priority.ts); a failure (no CAP_SYS_NICE) only costs latency. */
  private prioritize(child: ChildProcess): void {
    const nice = this.opts.nice ?? PROXY_NICE;
    if (child.pid === undefined || nice === 0) return;
    try {
      setProcessNice(child.pid, nice);
    } catch (err) {
      this.opts.log.warn({ err, nice }, 'L7 proxy left at the default CPU priority');
    }
  }

  private onFlows(batch: FlowBatch): void {
    const onFlow = this.opts.onFlow;
    if (onFlow === undefined) return;
    let flows: WireRecord[];
    try {
      flows = decodeRecords(batch);
    } catch (err) {
      this.opts.log.error({ err }, 'L7 proxy sent a malformed flow batch');
      return;
    }
    for (const f of flows) onFlow(f);
  }

  private send(m: ToProxy): void {
    if (this.child?.connected && this.ready) this.child.send(m);
  }

  /** The rules in force (kept for restarts). */
  update(table: ProxyTable): void {
    this.table = table;
    this.send({ type: 'rules', table });
  }

  status(): ProxyStatus {
    return { port: this.opts.port, running: this.ready && this.child !== undefined, pid: this.child?.pid ?? null, restarts: this.restarts, redirects: this.table.endpoints.length, stats: this.stats };
  }

  /** Stops the proxy and waits for the process to be gone. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  }
}
