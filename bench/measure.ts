// One test under the noise rules: wait for a quiet box, meter foreign load, repeat a noisy test within a time budget.
import { foreignMeter, waitQuiet } from './load.js';
import type { Measured } from './report.js';

/** Before a test, wait (within the budget) until the whole box is at most this busy. */
export const QUIET_BUSY_PCT = 15;
/**
 * A test during which other processes used more than this % of all CPUs ran next to foreign load: it is
 * repeated (at most maxRetries times, within the budget) and the quietest attempt is kept, whatever its result.
 */
export const NOISY_PCT = 10;

/** Time the run may spend waiting for quiet and repeating noisy tests, so the whole bench keeps its duration. */
export class NoiseBudget {
  private leftMs: number;
  constructor(ms: number) {
    this.leftMs = ms;
  }
  left(): number {
    return Math.max(0, this.leftMs);
  }
  spend(ms: number): void {
    this.leftMs -= ms;
  }
}

/** How a phase applies the noise rules: --quick gives a small budget and no repeats. */
export interface NoisePolicy {
  budget: NoiseBudget;
  maxRetries: number;
  quietWaitMs: number;
}

export function noisePolicy(quick: boolean): NoisePolicy {
  return { budget: new NoiseBudget(quick ? 15_000 : 300_000), maxRetries: quick ? 0 : 2, quietWaitMs: quick ? 3_000 : 10_000 };
}

export async function measure<T>(p: NoisePolicy, fn: () => Promise<T>): Promise<Measured<T>> {
  const { budget, maxRetries, quietWaitMs } = p;
  let best: Measured<T> | undefined;
  let attempts = 0;
  for (;;) {
    attempts++;
    const w0 = performance.now();
    await waitQuiet(QUIET_BUSY_PCT, Math.min(quietWaitMs, budget.left()));
    budget.spend(performance.now() - w0);
    const t0 = performance.now();
    const meter = foreignMeter();
    const value = await fn();
    const foreignPct = meter();
    if (!best || foreignPct < best.foreignPct) best = { value, foreignPct, attempts };
    if (foreignPct <= NOISY_PCT || attempts > maxRetries || budget.left() <= 0) return { ...best, attempts };
    budget.spend(performance.now() - t0); // the repeat costs the budget, the first attempt does not
  }
}

/** Runs `fn` while a 1 ms ticker measures the event loop's longest wait: [wall ms, longest wait ms, result]. */
export async function withLoopStall<T>(fn: () => Promise<T> | T): Promise<[number, number, T]> {
  const t0 = performance.now();
  let last = t0;
  let worst = 0;
  const tick = setInterval(() => {
    const t = performance.now();
    worst = Math.max(worst, t - last);
    last = t;
  }, 1);
  try {
    const r = await fn();
    const wall = performance.now() - t0;
    worst = Math.max(worst, performance.now() - last);
    return [wall, worst, r];
  } finally {
    clearInterval(tick);
  }
}
