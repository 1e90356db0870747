// Reads the node's events ring on a timer (never blocking the event loop) and counts what the datapath lost.
import { RingBuffer, type BpfMap } from '../kernel/bpf/index.js';
import type { DatapathEvent } from './event-types.js';
import { EVENTS_LOST_DROP_RATE, EVENTS_LOST_RING_FULL, decodeEvent } from './events.js';

export interface EventReaderOptions {
  /** Poll period in milliseconds (default 20). The 1 MiB ring holds ~5900 events: 20 ms covers bursts of ~290k events/s. */
  intervalMs?: number;
  /** Gets what onEvent throws; without it the exception escapes from the timer (an uncaught exception). */
  onError?: (err: unknown) => void;
}

export interface EventStats {
  /** Events delivered to onEvent. */
  read: number;
  /** Events the datapath could not write since start because the ring was full (summed over CPUs). */
  lost: number;
  /** Drop events not written since start because of the per-CPU drop-event rate limit. */
  rateLimited: number;
  /** Records skipped because this reader cannot decode them (unknown type or version). */
  skipped: number;
}

export interface EventWatch {
  /** Stops polling after delivering what the ring holds now. Idempotent. */
  stop(): void;
  stats(): EventStats;
}

/** Records per consume() call, and the time one slice of reading may take before it yields to the event loop. */
const BATCH = 1024;
const POLL_BUDGET_MS = 10;

/** Sum over CPUs of one u64 slot of a per-CPU array. */
export function sumPerCpu(map: BpfMap, index: number): number {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(index);
  let sum = 0n;
  for (const v of map.lookupPerCpu(key) ?? []) sum += v.readBigUInt64LE(0);
  return Number(sum);
}

/**
 * Polls `ring` every intervalMs and hands each decoded event to onEvent. A poll that finds more than it can do in
 * POLL_BUDGET_MS continues in the next turn of the event loop (setImmediate), so a flood is read as fast as this
 * process can while timers and I/O still run between slices; what the reader cannot keep up with, the datapath
 * counts as lost (stats()). `ring` and `lost` must stay open until stop().
 */
export function watchEvents(ring: BpfMap, lost: BpfMap, onEvent: (e: DatapathEvent) => void, o: EventReaderOptions = {}): EventWatch {
  const intervalMs = o.intervalMs ?? 20;
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new RangeError(`Invalid intervalMs ${String(intervalMs)}: must be a positive number`);
  const base = { lost: sumPerCpu(lost, EVENTS_LOST_RING_FULL), rateLimited: sumPerCpu(lost, EVENTS_LOST_DROP_RATE) };
  let read = 0;
  let skipped = 0;
  const rb = RingBuffer.open(ring, (rec) => {
    const e = decodeEvent(rec);
    if (e === undefined) {
      skipped++;
      return;
    }
    read++;
    onEvent(e);
  });

  let timer: NodeJS.Timeout | undefined;
  let more: NodeJS.Immediate | undefined;
  /** One slice of reading; true when it ran out of time with records left. */
  const slice = (): boolean => {
    const until = performance.now() + POLL_BUDGET_MS;
    for (;;) {
      let n = 0;
      try {
        n = rb.consume(BATCH);
      } catch (err) {
        // The record that threw is consumed; go on with the rest.
        if (o.onError === undefined) throw err;
        o.onError(err);
        n = BATCH;
      }
      if (n < BATCH) return false;
      if (performance.now() >= until) return true;
    }
  };
  const poll = (): void => {
    more = undefined;
    if (timer !== undefined && slice()) more = setImmediate(poll);
  };
  const current = (): EventStats => ({
    read,
    lost: sumPerCpu(lost, EVENTS_LOST_RING_FULL) - base.lost,
    rateLimited: sumPerCpu(lost, EVENTS_LOST_DROP_RATE) - base.rateLimited,
    skipped,
  });
  timer = setInterval(() => {
    if (more === undefined) poll();
  }, intervalMs);
  // Once stopped, the maps may be closed by their owner: stats() then reports the final figures.
  let final: EventStats | undefined;

  return {
    stop(): void {
      if (timer === undefined) return;
      clearInterval(timer);
      timer = undefined;
      if (more !== undefined) clearImmediate(more);
      more = undefined;
      try {
        slice();
      } finally {
        rb.close();
        final = current();
      }
    },
    stats: (): EventStats => final ?? current(),
  };
}
