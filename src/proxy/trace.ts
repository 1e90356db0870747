// A diagnostic timeline of the proxy process, off unless TENDRIL_PROXY_TRACE names a file: per request the
// monotonic times (process.hrtime, CLOCK_MONOTONIC, shared by every process of the box) at which its head was
// judged and its response head came back, and the process's pauses: GC (PerformanceObserver) and event-loop
// stalls (a 2 ms probe timer running late), and the flow flushes to the agent. bench/l7-tail.ts lines them up
// with the load client's per-request times to find where a slow request spent its time.
import fs from 'node:fs';
import { PerformanceObserver, performance } from 'node:perf_hooks';

export type TraceEvent =
  /** A request head judged: request id (the x-seq header of the bench client), ns. */
  | ['req', string, number]
  /** Its response head from upstream: request id, ns. */
  | ['resp', string, number]
  /** A GC pause: start ns, duration ns, kind. */
  | ['gc', number, number, number]
  /** The event loop ran the probe late: when it ran (ns), how late (ns). */
  | ['lag', number, number]
  /** A flow batch sent to the agent: ns, records, ns spent in send(). */
  | ['flush', number, number, number];

const PROBE_MS = 2;

export interface ProxyTrace {
  req(id: string): void;
  resp(id: string): void;
  flush(t0: number, records: number): void;
  stop(): void;
}

const now = (): number => Number(process.hrtime.bigint());

/** The trace named by the environment, or undefined (the normal case: the engine calls nothing). */
export function traceFromEnv(env: NodeJS.ProcessEnv = process.env): ProxyTrace | undefined {
  const file = env['TENDRIL_PROXY_TRACE'];
  if (!file) return undefined;
  const events: TraceEvent[] = [];
  // performance.now() and hrtime differ by a constant: taken once, it maps GC entries onto the shared clock.
  const offset = now() - performance.now() * 1e6;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) events.push(['gc', Math.round(offset + e.startTime * 1e6), Math.round(e.duration * 1e6), ((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? 0]);
  });
  gc.observe({ entryTypes: ['gc'] });
  let due = now() + PROBE_MS * 1e6;
  const probe = setInterval(() => {
    const t = now();
    if (t - due > 1e6) events.push(['lag', t, t - due]);
    due = t + PROBE_MS * 1e6;
  }, PROBE_MS);
  probe.unref();
  const write = (): void => {
    if (events.length === 0) return;
    fs.appendFileSync(file, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
    events.length = 0;
  };
  const writer = setInterval(write, 1000);
  writer.unref();
  return {
    req: (id) => void events.push(['req', id, now()]),
    resp: (id) => void events.push(['resp', id, now()]),
    flush: (t0, records) => void events.push(['flush', t0, records, now() - t0]),
    stop() {
      clearInterval(probe);
      clearInterval(writer);
      gc.disconnect();
      write();
    },
  };
}
