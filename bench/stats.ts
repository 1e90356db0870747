// Small statistics for the bench: medians over rounds, nearest-rank percentiles over latency samples.

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile: the smallest sample such that at least q of all samples are <= it. */
export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  if (!(q > 0 && q <= 1)) throw new RangeError(`percentile(): q must be in (0, 1], got ${q}`);
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(q * s.length) - 1)]!;
}

export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export function summarize(xs: readonly number[]): Summary {
  const mean = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
  return {
    count: xs.length,
    mean,
    p50: percentile(xs, 0.5),
    p95: percentile(xs, 0.95),
    p99: percentile(xs, 0.99),
    max: xs.length ? Math.max(...xs) : NaN,
  };
}
