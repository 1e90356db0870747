// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of `size` slots in which every backend
// owns an almost equal share, and which changes little when a backend comes or goes. Every node computes the same
// table from the same backend names, so a connection hashes to the same backend wherever it is translated.
import { LbError } from './errors.js';

/** Cilium's default table size; must be prime. */
export const DEFAULT_MAGLEV_TABLE_SIZE = 16381;
/** Sizes accepted by --maglev-table-size (primes, as Cilium's list), small ones for small labs. */
export const MAGLEV_TABLE_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521] as const;

function fnv1a(text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function checkMaglevSize(size: number): number {
  if (!(MAGLEV_TABLE_SIZES as readonly number[]).includes(size)) {
    throw new LbError('TENDRIL_ERR_LB_INVALID', `Invalid Maglev table size ${size}: expected one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  }
  return size;
}

/**
 * The Maglev table for backends named `names` (e.g. "10.0.1.5:8080"): slot -> index into `names`. Order of
 * `names` does not matter (they are sorted first); an empty list gives an empty table.
 */
export function maglevTable(names: readonly string[], size: number): number[] {
  if (names.length === 0) return [];
  const sorted = [...new Set(names)].sort();
  const order = sorted.map((n) => names.indexOf(n));
  const offset = sorted.map((n) => fnv1a(n, 0x5bd1e995) % size);
  const skip = sorted.map((n) => (fnv1a(n, 0x27d4eb2f) % (size - 1)) + 1);
  const next = sorted.map(() => 0);
  const table = new Array<number>(size).fill(-1);
  let filled = 0;
  for (;;) {
    for (let i = 0; i < sorted.length; i++) {
      let c = (offset[i]! + next[i]! * skip[i]!) % size;
      while (table[c]! >= 0) {
        next[i]!++;
        c = (offset[i]! + next[i]! * skip[i]!) % size;
      }
      table[c] = order[i]!;
      next[i]!++;
      if (++filled === size) return table;
    }
  }
}
