// How many forwarding loops the proxy process runs (main.ts).
import os from 'node:os';

/**
 * Forwarding loops: TENDRIL_PROXY_WORKERS (1 to the CPU count), else one. More than one did not pay on the 2-CPU
 * lab box under load (bench/l7-profile.ts: 2977 vs 3616 req/s keep-alive, 119 vs 66 proxy µs per request: the
 * loops wake for fewer events each and compete with the pods they serve); a node with spare CPUs may differ.
 */
export function proxyWorkers(env: NodeJS.ProcessEnv = process.env, cpus = os.availableParallelism()): number {
  const n = Number(env['TENDRIL_PROXY_WORKERS'] ?? '');
  if (Number.isInteger(n) && n >= 1) return Math.min(n, Math.max(1, cpus));
  return 1;
}
