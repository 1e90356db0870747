// `tendril observe -f -o json` as a child of the bench: its output is counted as it streams, never kept.
import { CLI_JS } from '../src/lab/paths.js';
import { BenchError, inNs, kill, run, sleep, start, type Done, type Started } from './proc.js';

const NL = 0x0a;
const FLOW = Buffer.from('{"flow":');
const LOST = Buffer.from('{"lost_events":');

export interface TallySnapshot {
  /** Flow lines received. */
  flows: number;
  /** Flows the server dropped for this follower (lost_events lines, summed). */
  lost: number;
  /** Lines that are neither (should stay 0: json output has no other kind on stdout). */
  other: number;
  /** performance.now() of the last flow line, 0 before the first. */
  lastFlowAt: number;
}

/**
 * Counts the lines of `observe -o json` from raw stdout chunks: flows by their prefix (no parsing: a follower may
 * get tens of thousands a second and the bench shares the CPUs with what it measures), lost_events by parsing
 * (rare). `watch(s)` resolves when a later flow line contains `s`.
 */
export class FlowTally {
  private flows = 0;
  private lost = 0;
  private other = 0;
  private lastFlowAt = 0;
  private rest: Buffer = Buffer.alloc(0);
  private readonly watches = new Map<string, { needle: Buffer; resolve: () => void }>();
  /** By lost_events source (OBSERVER_EVENTS_QUEUE: the node's per-follower queue, PERF_EVENT_RING_BUFFER: …). */
  readonly lostBySource = new Map<string, number>();

  push(chunk: Buffer, now: number = performance.now()): void {
    const buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    let from = 0;
    for (let nl = buf.indexOf(NL, from); nl >= 0; nl = buf.indexOf(NL, from)) {
      this.line(buf.subarray(from, nl), now);
      from = nl + 1;
    }
    // A copy: the chunk's memory is not ours to keep.
    this.rest = Buffer.from(buf.subarray(from));
  }

  private line(l: Buffer, now: number): void {
    if (l.length === 0) return;
    if (startsWith(l, FLOW)) {
      this.flows++;
      this.lastFlowAt = now;
      for (const [key, w] of this.watches) {
        if (l.includes(w.needle)) {
          this.watches.delete(key);
          w.resolve();
        }
      }
      return;
    }
    if (startsWith(l, LOST)) {
      try {
        const j = JSON.parse(l.toString('utf8')) as { lost_events?: { source?: string; num_events_lost?: string | number } };
        const n = Number(j.lost_events?.num_events_lost ?? 0);
        const src = j.lost_events?.source ?? 'UNKNOWN';
        this.lost += n;
        this.lostBySource.set(src, (this.lostBySource.get(src) ?? 0) + n);
        return;
      } catch {
        // counted as other
      }
    }
    this.other++;
  }

  snapshot(): TallySnapshot {
    return { flows: this.flows, lost: this.lost, other: this.other, lastFlowAt: this.lastFlowAt };
  }

  /** Resolves when a flow line containing `needle` arrives (after this call). */
  watch(needle: string): Promise<void> {
    return new Promise((resolve) => this.watches.set(needle, { needle: Buffer.from(needle), resolve }));
  }

  unwatch(needle: string): void {
    this.watches.delete(needle);
  }
}

function startsWith(b: Buffer, prefix: Buffer): boolean {
  return b.length >= prefix.length && b.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** Where the readiness probe goes: a UDP datagram from the client pod to a fresh port of the server pod. */
export interface ProbePath {
  client: string;
  serverIp: string;
}

/** A UDP destination port the bench's probes use, so a probe's flow can be told from every other flow. */
export function probePort(attempt: number): number {
  return 40000 + ((process.pid * 7 + attempt) % 20000);
}

let probes = 0;

/**
 * A running `tendril --lab LAB observe -f -o json`, counted by a FlowTally: through the lab's relay, or with
 * `node` straight from that node's flow server (`--node NODE`).
 */
export class Follower {
  readonly tally = new FlowTally();
  private proc: Started | undefined;
  private done: Done | undefined;

  private constructor(readonly lab: string) {}

  /**
   * Starts the follower and returns once it has printed a flow that happened after it started (a probe
   * datagram between the pods): from then on every flow of the node reaches it.
   */
  static async start(lab: string, probe: ProbePath, o: { node?: string; timeoutMs?: number } = {}): Promise<Follower> {
    const timeoutMs = o.timeoutMs ?? 20_000;
    const f = new Follower(lab);
    const node = o.node ? ['--node', o.node] : [];
    f.proc = start([process.execPath, CLI_JS, '--lab', lab, ...node, 'observe', '-f', '-o', 'json'], { onStdout: (c) => f.tally.push(c) });
    void f.proc.exited.then((d) => (f.done = d));
    try {
      const deadline = performance.now() + timeoutMs;
      while (performance.now() < deadline) {
        f.assertRunning();
        const port = probePort(probes++);
        const needle = `"destination_port":${port}}`;
        const seen = f.tally.watch(needle);
        run(inNs(probe.client, ['bash', '-c', `echo tendril-bench-probe > /dev/udp/${probe.serverIp}/${port}`]), { allowFail: true });
        const got = await Promise.race([seen.then(() => true), sleep(1000).then(() => false)]);
        f.tally.unwatch(needle);
        if (got) return f;
      }
      f.assertRunning();
      throw new BenchError(`"tendril --lab ${lab} observe -f" printed no flow of a probe within ${timeoutMs} ms`);
    } catch (err) {
      await f.stop().catch(() => undefined);
      throw err;
    }
  }

  /** Throws if the follower has exited (a test it should have watched would then be an idle one). */
  assertRunning(): void {
    if (this.done) {
      const why = (this.done.stderr || this.done.stdout).trim().split('\n').slice(-3).join(' ');
      throw new BenchError(`"tendril --lab ${this.lab} observe -f" exited (status ${this.done.status})${why ? `: ${why}` : ''}`);
    }
  }

  /**
   * Waits until no flow has arrived for `quietMs` (what the test produced has made it through the relay),
   * at most `maxMs`; returns the tally then.
   */
  async settle(quietMs: number, maxMs: number): Promise<TallySnapshot> {
    const deadline = performance.now() + maxMs;
    for (;;) {
      const s = this.tally.snapshot();
      const now = performance.now();
      if (now - s.lastFlowAt >= quietMs || now >= deadline) return s;
      await sleep(Math.min(100, quietMs));
    }
  }

  /** SIGTERM (it cancels its stream), SIGKILL after 3 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || this.done) return;
    kill(p.pid, 'SIGTERM');
    const timer = setTimeout(() => kill(p.pid), 3000);
    await p.exited;
    clearTimeout(timer);
  }

  get pid(): number | undefined {
    return this.done ? undefined : this.proc?.pid;
  }
}
