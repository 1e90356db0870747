// The L7 bench's HTTP load client (runs in the client pod's namespace): closed-loop keep-alive or one connection
// per request at a concurrency, or open-loop at a fixed rate over keep-alive connections. Prints one JSON line.
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

export interface LoadResult {
  mode: string;
  requests: number;
  errors: number;
  secs: number;
  rps: number;
  p50ms: number;
  p99ms: number;
  /** CPU time this client process spent over the run (user + system), µs. */
  cpuUs?: number;
}

function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function once(agent: http.Agent | false, url: URL, close: boolean, seq?: number): Promise<boolean> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = close ? { connection: 'close' } : {};
    if (seq !== undefined) headers['x-seq'] = String(seq);
    const req = http.request(url, { agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { url: { type: 'string' }, mode: { type: 'string' }, secs: { type: 'string' }, conc: { type: 'string' }, rate: { type: 'string' }, trace: { type: 'string' } } });
  const url = new URL(values.url!);
  const mode = values.mode ?? 'keepalive';
  const secs = Number(values.secs ?? 5);
  const conc = Number(values.conc ?? 8);
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + secs * 1000;
  // --trace FILE: each request carries an x-seq header and its monotonic send/done times (ns) go to FILE as
  // [seq, sent, done, ok] lines, for bench/l7-tail.ts to line up with the proxy's trace.
  const traced: [number, number, number, boolean][] | undefined = values.trace ? [] : undefined;
  let seq = 0;
  const timed = async (agent: http.Agent | false, close: boolean): Promise<void> => {
    const t0 = performance.now();
    const id = traced ? seq++ : undefined;
    const sent = traced ? Number(process.hrtime.bigint()) : 0;
    const ok = await once(agent, url, close, id);
    if (traced) traced.push([id!, sent, Number(process.hrtime.bigint()), ok]);
    if (ok) lat.push(performance.now() - t0);
    else errors++;
  };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  if (mode === 'rate') {
    // Open loop: a request every 1/rate s, whether or not earlier ones are answered (no coordinated omission).
    const rate = Number(values.rate ?? 1000);
    const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
    const pending: Promise<void>[] = [];
    let sent = 0;
    while (performance.now() < end) {
      const due = t0 + (sent * 1000) / rate;
      const now = performance.now();
      if (due > now) await new Promise((r) => setTimeout(r, Math.max(0, due - now)));
      // Catch up in a burst when the timer fired late (the machine is shared).
      while (t0 + (sent * 1000) / rate <= performance.now() && performance.now() < end) {
        pending.push(timed(agent, false));
        sent++;
      }
    }
    await Promise.all(pending);
    agent.destroy();
  } else {
    const close = mode === 'close';
    await Promise.all(
      Array.from({ length: conc }, async () => {
        const agent = close ? false : new http.Agent({ keepAlive: true, maxSockets: 1 });
        while (performance.now() < end) await timed(agent, close);
        if (agent) agent.destroy();
      }),
    );
  }
  const took = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sorted = Float64Array.from(lat).sort();
  const out: LoadResult = { mode, requests: lat.length, errors, secs: took, rps: lat.length / took, p50ms: pct(sorted, 0.5), p99ms: pct(sorted, 0.99), cpuUs: cpu.user + cpu.system };
  if (traced) fs.writeFileSync(values.trace!, traced.map((t) => JSON.stringify(t)).join('\n') + '\n');
  process.stdout.write(JSON.stringify(out) + '\n');
}

void main();
