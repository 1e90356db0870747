// Reader of a BPF ring buffer map: non-blocking consume, records copied out. The ring is mmap()ed and read here,
// as libbpf's ring_buffer__consume() reads it (consumer page read-write, producer page and the twice-mapped data
// read-only), so a record costs a header load and a copy instead of a native-to-JavaScript callback through koffi
// (~3 µs each: at 100k events/s a third of a CPU). libbpf's reader remains the fallback when the mapping fails.
import { KernelError, errnoText } from '../errors.js';
import * as libbpf from '../native/libbpf.js';
import * as libc from '../native/libc.js';
import type { BpfMap } from './map.js';

// include/uapi/linux/bpf.h: the record header's length word (u32) and the header size.
const BPF_RINGBUF_BUSY_BIT = 0x80000000;
const BPF_RINGBUF_DISCARD_BIT = 0x40000000;
const BPF_RINGBUF_LEN_MASK = 0x3fffffff;
const BPF_RINGBUF_HDR_SZ = 8;

/** The ring read in place: positions are u64 byte counters, the data area is mapped twice so no record wraps. */
class MappedRing {
  private readonly consumerPos: BigUint64Array;
  private readonly producerPos: BigUint64Array;
  private readonly words: Int32Array;
  private readonly data: Uint8Array;

  private constructor(
    private readonly consumerMap: libc.Mapping,
    private readonly dataMap: libc.Mapping,
    page: number,
    private readonly size: number,
  ) {
    this.consumerPos = new BigUint64Array(consumerMap.bytes, 0, 1);
    this.producerPos = new BigUint64Array(dataMap.bytes, 0, 1);
    this.words = new Int32Array(dataMap.bytes, page, (2 * size) / 4);
    this.data = new Uint8Array(dataMap.bytes, page, 2 * size);
  }

  /** Maps the ring of `fd` (`size` = max_entries, a power of two); undefined when mmap() fails. */
  static tryOpen(fd: number, size: number): MappedRing | undefined {
    let page: number;
    try {
      page = libc.pageSize();
    } catch {
      return undefined;
    }
    if (!(page > 0) || size <= 0 || (size & (size - 1)) !== 0 || size % page !== 0) return undefined;
    let consumer: libc.Mapping | undefined;
    try {
      consumer = libc.mmapShared(fd, page, libc.PROT_READ | libc.PROT_WRITE, 0);
      const data = libc.mmapShared(fd, page + 2 * size, libc.PROT_READ, page);
      return new MappedRing(consumer, data, page, size);
    } catch {
      if (consumer) libc.munmap(consumer);
      return undefined;
    }
  }

  /**
   * Hands each committed record to `deliver` (a copy), at most `limit`, re-reading the producer position until it
   * stops moving; stops at a record still being written. The consumer position is published on return, also when
   * `deliver` throws (that record counts as consumed).
   */
  consume(limit: number, deliver: (record: Buffer) => void): number {
    const size = this.size; // positions grow past 2^32: Number arithmetic and %, not 32-bit &
    let cons = Number(Atomics.load(this.consumerPos, 0));
    let n = 0;
    try {
      for (;;) {
        const prod = Number(Atomics.load(this.producerPos, 0));
        if (cons >= prod) return n;
        while (cons < prod) {
          const off = cons % size;
          const len = Atomics.load(this.words, off / 4);
          if (len & BPF_RINGBUF_BUSY_BIT) return n;
          const bytes = len & BPF_RINGBUF_LEN_MASK;
          cons += (bytes + BPF_RINGBUF_HDR_SZ + 7) & ~7;
          if (len & BPF_RINGBUF_DISCARD_BIT) continue;
          n++;
          deliver(Buffer.copyBytesFrom(this.data, off + BPF_RINGBUF_HDR_SZ, bytes));
          if (n >= limit) return n;
        }
      }
    } finally {
      Atomics.store(this.consumerPos, 0, BigInt(cons));
    }
  }

  close(): void {
    libc.munmap(this.dataMap);
    libc.munmap(this.consumerMap);
  }
}

/** enum bpf_map_type: BPF_MAP_TYPE_RINGBUF. */
export const BPF_MAP_TYPE_RINGBUF = 27;

// Negative sample-callback results that end a consume early (errno values, as libbpf passes them through).
const EAGAIN = 11;
const ECANCELED = 125;

export class RingBuffer {
  private handle: libbpf.RingBufferHandle | undefined;
  private mapped: MappedRing | undefined;
  private readonly map: BpfMap;
  private readonly onRecord: (record: Buffer) => void;

  private constructor(handle: libbpf.RingBufferHandle | MappedRing, map: BpfMap, onRecord: (record: Buffer) => void) {
    if (handle instanceof MappedRing) this.mapped = handle;
    else this.handle = handle;
    this.map = map;
    this.onRecord = onRecord;
  }

  /** How the ring is read: in place ('mmap'), or through libbpf's ring_buffer ('libbpf', the fallback). */
  get reader(): 'mmap' | 'libbpf' {
    return this.handle === undefined ? 'mmap' : 'libbpf';
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
    const mapped = MappedRing.tryOpen(map.fd, map.maxEntries);
    if (mapped) return new RingBuffer(mapped, map, onRecord);
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
    if (this.mapped !== undefined) return limit <= 0 ? 0 : this.mapped.consume(limit, this.onRecord);
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
    this.mapped?.close();
    this.mapped = undefined;
  }
}
