// Reader of a BPF ring buffer map through libbpf's ring_buffer: non-blocking consume, records copied out.
import { KernelError, errnoText } from '../errors.js';
import * as libbpf from '../native/libbpf.js';
import type { BpfMap } from './map.js';

/** enum bpf_map_type: BPF_MAP_TYPE_RINGBUF. */
export const BPF_MAP_TYPE_RINGBUF = 27;

// Negative sample-callback results that end a consume early (errno values, as libbpf passes them through).
const EAGAIN = 11;
const ECANCELED = 125;

export class RingBuffer {
  private handle: libbpf.RingBufferHandle | undefined;
  private readonly map: BpfMap;
  private readonly onRecord: (record: Buffer) => void;

  private constructor(handle: libbpf.RingBufferHandle, map: BpfMap, onRecord: (record: Buffer) => void) {
    this.handle = handle;
    this.map = map;
    this.onRecord = onRecord;
  }

  /**
   * Maps the ring of `map` (which must stay open until close()). `onRecord` gets a copy of each record, called
   * synchronously from consume().
   */
  static open(map: BpfMap, onRecord: (record: Buffer) => void): RingBuffer {
    if (map.type !== BPF_MAP_TYPE_RINGBUF) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot read map "${map.name}" as a ring buffer: its type is ${map.type}, not BPF_MAP_TYPE_RINGBUF (${BPF_MAP_TYPE_RINGBUF})`,
      );
    }
    const rb = libbpf.ringBufferNew(map.fd);
    if (typeof rb === 'number') {
      throw new KernelError('TENDRIL_ERR_BPF', `Cannot open ring buffer "${map.name}": ${errnoText(-rb)}`, { errno: -rb });
    }
    return new RingBuffer(rb, map, onRecord);
  }

  /**
   * Delivers the records available now (at most `limit`) and returns how many; never waits. Records the producer
   * adds meanwhile are delivered too, so `limit` is what bounds the time spent here. An exception of onRecord
   * stops the call and is rethrown; the record that threw counts as consumed.
   */
  consume(limit = Number.POSITIVE_INFINITY): number {
    const rb = this.handle;
    if (rb === undefined) throw new KernelError('TENDRIL_ERR_BPF', `Cannot consume ring buffer "${this.map.name}": it is closed`);
    if (limit <= 0) return 0;
    let delivered = 0;
    let failure: { error: unknown } | undefined;
    const ret = libbpf.ringBufferConsume(rb, (record) => {
      try {
        this.onRecord(record);
      } catch (error) {
        failure = { error };
        return -ECANCELED;
      }
      delivered++;
      return delivered >= limit ? -EAGAIN : 0;
    });
    if (failure !== undefined) throw failure.error;
    if (ret < 0 && ret !== -EAGAIN) {
      throw new KernelError('TENDRIL_ERR_BPF', `Cannot consume ring buffer "${this.map.name}": ${errnoText(-ret)}`, { errno: -ret });
    }
    return delivered;
  }

  /** Unmaps the ring; the map itself stays open (it is the caller's). */
  close(): void {
    if (this.handle !== undefined) libbpf.ringBufferFree(this.handle);
    this.handle = undefined;
  }
}
