// Where the time of a CNI call goes: each call laps named phases on a clock; the handler keeps the last calls per
// verb and answers p50/p99 per phase (the agent shows them in `tendril status --verbose`, as Cilium shows an
// endpoint's regeneration timings).
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';

/** A call's clock: lap(name) charges the time since the previous lap (or the start) to `name`. */
export class PhaseClock {
  private last: number;
  private readonly started: number;
  readonly phases: Record<string, number> = {};

  constructor(now = performance.now()) {
    this.started = now;
    this.last = now;
  }

  lap(name: string): void {
    const now = performance.now();
    this.phases[name] = (this.phases[name] ?? 0) + (now - this.last);
    this.last = now;
  }

  /** ms since the clock started. */
  total(): number {
    return performance.now() - this.started;
  }

  /** The phases rounded to 0.01 ms, for a log line. */
  rounded(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.phases)) out[k] = round(v);
    return out;
  }
}

/** Header the shim sets: when it started (epoch microseconds, CLOCK_REALTIME). */
export const SHIM_START_HEADER = 'x-cni-shim-start';
/** A shim start further back than this (or in the future) is a clock step, not a transport time. */
const MAX_TRANSPORT_MS = 600_000;

/**
 * A call's clock started when the shim started (its X-Cni-Shim-Start header), with the time until now charged to
 * 'transport': the shim's exec, connect and send, the agent's accept and body read, and any wait for the agent's
 * event loop. Without a usable header the clock starts now (no 'transport' phase).
 */
export function clockFromShim(headers: Record<string, string | undefined>, nowEpochMs = performance.timeOrigin + performance.now()): PhaseClock {
  let v: string | undefined;
  for (const [k, x] of Object.entries(headers)) if (k.toLowerCase() === SHIM_START_HEADER) v = x;
  const us = v !== undefined && /^\d{1,17}$/.test(v) ? Number(v) : NaN;
  const age = nowEpochMs - us / 1000;
  if (!Number.isFinite(age) || age < 0 || age > MAX_TRANSPORT_MS) return new PhaseClock();
  const clock = new PhaseClock(performance.now() - age);
  clock.lap('transport');
  return clock;
}

/** The clock's surface a backend gets: it may lap its own steps. */
export type Lap = Pick<PhaseClock, 'lap'>;

export interface PhaseStats {
  phase: string;
  p50: number;
  p99: number;
  max: number;
}

/** GET /v1/healthz `cni-timings`: per verb, the last `calls` calls' phases (ms). */
export interface CniTimingsView {
  verb: string;
  calls: number;
  total: Omit<PhaseStats, 'phase'>;
  phases: PhaseStats[];
  /**
   * The agent's event-loop delay sampled while calls of this verb were in flight (ms, since the agent started): how
   * long a ready callback (the next call's request, a netlink answer) waited for the loop, i.e. blocking work.
   */
  'event-loop-delay'?: Omit<PhaseStats, 'phase'>;
}

/** The last `window` calls of each verb. */
export class CniTimings {
  private readonly window: number;
  private readonly byVerb = new Map<string, { totals: number[]; phases: Map<string, number[]>; next: number }>();

  constructor(window = 256) {
    this.window = window;
  }

  /** Per verb: calls in flight, and the event-loop delay sampled while there are any (begin() .. the last end()). */
  private inFlight = new Map<string, number>();
  private loopVerb = new Map<string, IntervalHistogram>();

  /** A call of `verb` starts: the event-loop delay is sampled until the matching end(). */
  begin(verb: string): void {
    const n = (this.inFlight.get(verb) ?? 0) + 1;
    this.inFlight.set(verb, n);
    if (n > 1) return;
    let h = this.loopVerb.get(verb);
    if (!h) {
      h = monitorEventLoopDelay({ resolution: 10 });
      this.loopVerb.set(verb, h);
    }
    h.enable();
  }

  end(verb: string): void {
    const n = (this.inFlight.get(verb) ?? 1) - 1;
    this.inFlight.set(verb, n);
    if (n === 0) this.loopVerb.get(verb)?.disable();
  }

  record(verb: string, clock: PhaseClock): void {
    let v = this.byVerb.get(verb);
    if (!v) {
      v = { totals: [], phases: new Map(), next: 0 };
      this.byVerb.set(verb, v);
    }
    const slot = v.next;
    v.totals[slot] = clock.total();
    // A phase a call did not reach counts 0 for it, so every phase's list lines up with the calls.
    for (const name of Object.keys(clock.phases)) if (!v.phases.has(name)) v.phases.set(name, new Array<number>(v.totals.length).fill(0));
    for (const [name, list] of v.phases) list[slot] = clock.phases[name] ?? 0;
    v.next = (slot + 1) % this.window;
  }

  view(): CniTimingsView[] {
    return [...this.byVerb].map(([verb, v]) => ({
      verb,
      calls: v.totals.length,
      total: stats(v.totals),
      phases: [...v.phases].map(([phase, list]) => ({ phase, ...stats(list) })),
      ...loopStats(this.loopVerb.get(verb)),
    }));
  }
}

function loopStats(h: IntervalHistogram | undefined): Pick<CniTimingsView, 'event-loop-delay'> {
  if (!h || h.count === 0) return {};
  return { 'event-loop-delay': { p50: round(h.percentile(50) / 1e6), p99: round(h.percentile(99) / 1e6), max: round(h.max / 1e6) } };
}

function stats(xs: number[]): Omit<PhaseStats, 'phase'> {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
  return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(s[s.length - 1] ?? 0) };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
