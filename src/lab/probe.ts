// Reachability prober run inside a pod's netns: probes TCP/UDP targets concurrently, or holds one keep-alive HTTP flow.
//
//   node probe.js --timeout MS '[{"ip":"172.20.1.5","port":80,"proto":"tcp"}, ...]'
//     prints one JSON array [{ip, port, proto, ok, error?}] (error says why a probe failed: timeout, ECONNREFUSED, ...)
//   node probe.js --hold IP:PORT [--interval MS] [--timeout MS]
//     one TCP connection, an HTTP/1.1 request every interval; prints "ok N" or "timeout N" per request, in order
//     of request numbers, until killed (SIGTERM/SIGINT) or the connection closes ("closed N" then exit 1).
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export interface ProbeTarget {
  ip: string;
  port: number;
  proto: 'tcp' | 'udp';
}

export interface ProbeResult extends ProbeTarget {
  ok: boolean;
  /** Why it failed (timeout, ECONNREFUSED, bad answer); absent when ok. */
  error?: string;
}

const UDP_RETRY_MS = 150;

/** A TCP probe succeeds once an HTTP status line comes back: the SYN, the request and both replies all passed. */
function probeTcp(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let answer = '';
    let settled = false;
    const sock = net.connect({ host: t.ip, port: t.port });
    const done = (ok: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...t, ok, ...(!ok && error !== undefined ? { error } : {}) });
    };
    const timer = setTimeout(() => done(false, 'timeout'), timeoutMs);
    sock.on('connect', () => sock.write(`GET /probe HTTP/1.0\r\nHost: ${t.ip}\r\n\r\n`));
    sock.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
      if (answer.length >= 12) done(/^HTTP\/1\.[01] \d{3}/.test(answer), /^HTTP\//.test(answer) ? undefined : `bad answer ${JSON.stringify(answer.slice(0, 20))}`);
    });
    sock.on('end', () => done(/^HTTP\/1\.[01] \d{3}/.test(answer), 'closed without an HTTP answer'));
    sock.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
  });
}

/** A UDP probe resends every 150 ms (a lost first datagram is not a denial) until the target echoes. */
function probeUdp(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    let settled = false;
    let retry: NodeJS.Timeout | undefined;
    const done = (ok: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(retry);
      sock.close();
      resolve({ ...t, ok, ...(error !== undefined ? { error } : {}) });
    };
    const timer = setTimeout(() => done(false, 'timeout'), timeoutMs);
    // Unconnected socket: an ICMP error does not end the probe early, only an echo from the target counts.
    sock.on('message', (_msg, rinfo) => {
      if (rinfo.address === t.ip && rinfo.port === t.port) done(true);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
    const send = (): void => sock.send(`probe ${t.ip}:${t.port}\n`, t.port, t.ip, (err) => {
      if (err && !settled) done(false, (err as NodeJS.ErrnoException).code ?? err.message);
    });
    sock.bind(0, () => {
      send();
      retry = setInterval(send, UDP_RETRY_MS);
    });
  });
}

export function probe(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
  return t.proto === 'tcp' ? probeTcp(t, timeoutMs) : probeUdp(t, timeoutMs);
}

function parseTargets(text: string): ProbeTarget[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`Invalid targets: not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new Error('Invalid targets: expected a JSON array of {ip, port, proto}');
  return raw.map((x: unknown, i) => {
    const o = x as Partial<ProbeTarget> | null;
    if (!o || typeof o.ip !== 'string' || net.isIPv4(o.ip) === false || !Number.isInteger(o.port) || (o.proto !== 'tcp' && o.proto !== 'udp')) {
      throw new Error(`Invalid target ${i}: ${JSON.stringify(x)}: expected {ip: IPv4, port: integer, proto: "tcp" | "udp"}`);
    }
    return { ip: o.ip, port: o.port!, proto: o.proto };
  });
}

/**
 * Holds one keep-alive connection and pipelines a request every @intervalMs. Responses come back in request order,
 * so each answer settles the oldest open request; a request still open after @timeoutMs is reported as a timeout
 * (its late answer, if the flow recovers, is then only counted off the queue).
 */
function hold(ip: string, port: number, intervalMs: number, timeoutMs: number): void {
  const open: Array<{ n: number; sent: number; reported: boolean }> = [];
  let n = 0;
  let buf = '';
  const sock = net.connect({ host: ip, port });
  sock.setNoDelay(true);
  const say = (line: string): void => {
    process.stdout.write(line + '\n');
  };
  let ticker: NodeJS.Timeout | undefined;
  sock.on('connect', () => {
    say(`connected ${sock.localAddress ?? ''}:${sock.localPort ?? ''}`);
    const tick = (): void => {
      const now = Date.now();
      for (const r of open) {
        if (!r.reported && now - r.sent >= timeoutMs) {
          r.reported = true;
          say(`timeout ${r.n}`);
        }
      }
      n++;
      open.push({ n, sent: now, reported: false });
      sock.write(`GET /hold/${n} HTTP/1.1\r\nHost: ${ip}\r\nConnection: keep-alive\r\n\r\n`);
    };
    tick();
    ticker = setInterval(tick, intervalMs);
  });
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    // Each answer is a head with Content-Length and a body; settle one request per complete answer.
    for (;;) {
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = /\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, head));
      const total = head + 4 + (len ? Number(len[1]) : 0);
      if (buf.length < total) return;
      buf = buf.slice(total);
      const r = open.shift();
      if (r && !r.reported) say(`ok ${r.n}`);
    }
  });
  const stop = (code: number): void => {
    clearInterval(ticker);
    sock.destroy();
    process.exit(code);
  };
  sock.on('error', (err: NodeJS.ErrnoException) => {
    say(`error ${err.code ?? err.message}`);
    stop(1);
  });
  sock.on('close', () => {
    say(`closed ${n}`);
    stop(1);
  });
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
}

function opt(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function positiveInt(text: string | undefined, name: string, dflt: number): number {
  if (text === undefined) return dflt;
  const v = Number(text);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`Invalid ${name} "${text}": expected a positive integer`);
  return v;
}

async function main(args: string[]): Promise<void> {
  const timeoutMs = positiveInt(opt(args, '--timeout'), '--timeout', 800);
  const holdAt = opt(args, '--hold');
  if (holdAt !== undefined) {
    const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(holdAt);
    if (!m) throw new Error(`Invalid --hold "${holdAt}": expected IP:PORT`);
    hold(m[1]!, Number(m[2]), positiveInt(opt(args, '--interval'), '--interval', 100), timeoutMs);
    return;
  }
  const flagged = new Set(['--timeout', '--interval']);
  const positional = args.filter((a, i) => !a.startsWith('--') && !flagged.has(args[i - 1] ?? ''));
  if (positional.length !== 1) throw new Error('Usage: probe.js --timeout MS \'[{"ip": ..., "port": ..., "proto": "tcp"|"udp"}]\' | --hold IP:PORT');
  const targets = parseTargets(positional[0]!);
  const results = await Promise.all(targets.map((t) => probe(t, timeoutMs)));
  process.stdout.write(JSON.stringify(results) + '\n');
}

// Only as a program: importing the module (for probe() or its types) starts nothing.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`probe: ${(err as Error).message}\n`);
    process.exit(2);
  });
}
