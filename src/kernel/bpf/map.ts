// A live BPF map (an fd we own): element verbs, iteration, typed views, pinning.
import fs from 'node:fs';
import { KernelError } from '../errors.js';
import type { Codec } from './codec.js';
import {
  BPF_MAP_DELETE_BATCH,
  BPF_MAP_DELETE_ELEM,
  BPF_MAP_GET_NEXT_KEY,
  BPF_MAP_LOOKUP_BATCH,
  BPF_MAP_LOOKUP_ELEM,
  BPF_MAP_TYPE_HASH,
  BPF_MAP_TYPE_LRU_HASH,
  BPF_MAP_TYPE_LRU_PERCPU_HASH,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
  BPF_MAP_TYPE_PERCPU_HASH,
  BPF_MAP_UPDATE_ELEM,
  bpfError,
  closeQuietly,
  mapInfo,
  objGet,
  objPin,
  ptr,
  sysBpf,
  type MapInfo,
} from './syscall.js';

export type UpdateFlags = 'any' | 'noexist' | 'exist';
const UPDATE_FLAGS: Record<UpdateFlags, bigint> = { any: 0n, noexist: 1n, exist: 2n };
const ENOENT = 2;
const EINVAL = 22;
const ENOSPC = 28;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524;

/** The hash family: BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH walk them by bucket (kernel 5.6+). */
const BATCH_TYPES = new Set([BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH]);
/** Elements per batch call: a GC walk of a 131,072-entry table is ~512 syscalls instead of 262,144. */
const BATCH_ELEMS = 256;

const PERCPU_TYPES = new Set([
  BPF_MAP_TYPE_PERCPU_HASH,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_MAP_TYPE_LRU_PERCPU_HASH,
  BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
]);

let possibleCpuCount: number | undefined;

/** Number of possible CPUs (not online ones): the kernel sizes per-CPU values by it. */
export function possibleCpus(): number {
  if (possibleCpuCount !== undefined) return possibleCpuCount;
  const text = fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let max = -1;
  for (const part of text.split(',')) {
    const [a, b] = part.split('-');
    max = Math.max(max, Number(b ?? a));
  }
  if (!Number.isInteger(max) || max < 0) {
    throw new KernelError('TENDRIL_ERR_SYSCALL', `Cannot parse /sys/devices/system/cpu/possible: "${text}"`);
  }
  possibleCpuCount = max + 1;
  return possibleCpuCount;
}

export class BpfMap {
  readonly name: string;
  readonly id: number;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  /** True for per-CPU maps: one value per possible CPU, each padded to 8 bytes. */
  readonly perCpu: boolean;
  private fdValue: number;

  /** Takes ownership of `fd`. `name` overrides the kernel's (15-character) name. */
  constructor(fd: number, info: MapInfo, name?: string) {
    this.fdValue = fd;
    this.name = name ?? info.name;
    this.id = info.id;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.perCpu = PERCPU_TYPES.has(info.type);
  }

  /** Wraps an fd we own, reading its properties from the kernel. */
  static fromFd(fd: number, name?: string): BpfMap {
    const info = mapInfo(fd, () => `Cannot get info of map fd ${fd}`);
    return new BpfMap(fd, info, name);
  }

  /** Opens a map pinned on a bpffs (BPF_OBJ_GET). */
  static openPinned(path: string): BpfMap {
    const fd = objGet(path, () => `Cannot open pinned map "${path}"`);
    try {
      return BpfMap.fromFd(fd);
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
  }

  get fd(): number {
    if (this.fdValue < 0) throw new KernelError('TENDRIL_ERR_BPF', `Cannot use map "${this.name}": it is closed`);
    return this.fdValue;
  }

  /** Bytes of a value as userspace sees it: valueSize, or for per-CPU maps round_up(valueSize, 8) * possible CPUs. */
  get valueBufferSize(): number {
    return this.perCpu ? Math.ceil(this.valueSize / 8) * 8 * possibleCpus() : this.valueSize;
  }

  /** The value under `key`, or undefined when the key is absent. */
  lookup(key: Buffer): Buffer | undefined {
    this.checkKey(key, 'look up');
    const value = Buffer.alloc(this.valueBufferSize);
    const r = sysBpf(BPF_MAP_LOOKUP_ELEM, this.elemAttr(key, value, 0n));
    if (r.ok) return value;
    if (r.errno === ENOENT) return undefined;
    throw bpfError(`Cannot look up key ${hex(key)} in map "${this.name}"`, r.errno);
  }

  /** The value under `key`; throws TENDRIL_ERR_BPF_KEY_NOT_EXIST when absent. */
  get(key: Buffer): Buffer {
    const v = this.lookup(key);
    if (v === undefined) throw keyNotExist(this.name, key);
    return v;
  }

  /** Writes `value` under `key`. 'noexist' fails with EEXIST, 'exist' with TENDRIL_ERR_BPF_KEY_NOT_EXIST. */
  update(key: Buffer, value: Buffer, flags: UpdateFlags = 'any'): void {
    this.checkKey(key, 'update');
    if (value.length !== this.valueBufferSize) {
      const hint = this.perCpu ? ` (per-CPU map: ${possibleCpus()} CPUs x ${Math.ceil(this.valueSize / 8) * 8} bytes; see updatePerCpu())` : '';
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot update map "${this.name}": value is ${value.length} bytes, expected ${this.valueBufferSize}${hint}`,
      );
    }
    const r = sysBpf(BPF_MAP_UPDATE_ELEM, this.elemAttr(key, value, UPDATE_FLAGS[flags]));
    if (r.ok) return;
    if (r.errno === ENOENT && flags === 'exist') throw keyNotExist(this.name, key);
    throw bpfError(`Cannot update key ${hex(key)} in map "${this.name}"`, r.errno);
  }

  /** Same as update(key, value, 'any'). */
  put(key: Buffer, value: Buffer): void {
    this.update(key, value, 'any');
  }

  /** Removes `key`; false when it was not there. */
  delete(key: Buffer): boolean {
    this.checkKey(key, 'delete from');
    const r = sysBpf(BPF_MAP_DELETE_ELEM, this.elemAttr(key, undefined, 0n));
    if (r.ok) return true;
    if (r.errno === ENOENT) return false;
    throw bpfError(`Cannot delete key ${hex(key)} from map "${this.name}"`, r.errno);
  }

  /** Per-CPU maps: one value (valueSize bytes) per possible CPU, or undefined when absent. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    this.requirePerCpu('lookupPerCpu');
    const raw = this.lookup(key);
    if (raw === undefined) return undefined;
    const stride = Math.ceil(this.valueSize / 8) * 8;
    const out: Buffer[] = [];
    for (let cpu = 0; cpu < possibleCpus(); cpu++) out.push(Buffer.from(raw.subarray(cpu * stride, cpu * stride + this.valueSize)));
    return out;
  }

  /** Per-CPU maps: writes one value per possible CPU. */
  updatePerCpu(key: Buffer, values: Buffer[], flags: UpdateFlags = 'any'): void {
    this.requirePerCpu('updatePerCpu');
    const n = possibleCpus();
    if (values.length !== n || values.some((v) => v.length !== this.valueSize)) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot update map "${this.name}": expected ${n} values of ${this.valueSize} bytes (one per possible CPU)`,
      );
    }
    const stride = Math.ceil(this.valueSize / 8) * 8;
    const raw = Buffer.alloc(stride * n);
    values.forEach((v, cpu) => v.copy(raw, cpu * stride));
    this.update(key, raw, flags);
  }

  /**
   * All keys (copies). Keys deleted while iterating are tolerated: for hash maps the kernel then restarts
   * from the first key, so a loop that deletes every key it sees still ends.
   */
  *keys(): Generator<Buffer> {
    let cur: Buffer | undefined;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const r = sysBpf(BPF_MAP_GET_NEXT_KEY, this.elemAttr(cur, next, 0n));
      if (!r.ok) {
        if (r.errno === ENOENT) return;
        throw bpfError(`Cannot iterate map "${this.name}"`, r.errno);
      }
      yield next;
      cur = next;
    }
  }

  /**
   * All [key, value] pairs (copies). Hash maps are read a batch of buckets per syscall (BPF_MAP_LOOKUP_BATCH), so a
   * walk of a full conntrack table costs a few hundred syscalls, not two per entry; other maps (and kernels without
   * batch verbs) walk the keys and look each one up, skipping entries deleted between the two.
   */
  *entries(): Generator<[Buffer, Buffer]> {
    if (BATCH_TYPES.has(this.type) && !this.noBatch) {
      const batched = this.lookupBatches();
      if (batched !== undefined) {
        yield* batched;
        return;
      }
    }
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v !== undefined) yield [k, v];
    }
  }

  /**
   * Deletes `keys`; returns how many were there. Hash maps take them in batches (BPF_MAP_DELETE_BATCH), a key that
   * is already gone (deleted or evicted meanwhile) is skipped; other maps delete one by one.
   */
  deleteMany(keys: readonly Buffer[]): number {
    for (const k of keys) this.checkKey(k, 'delete from');
    if (!BATCH_TYPES.has(this.type) || this.noBatch) return keys.reduce((n, k) => n + (this.delete(k) ? 1 : 0), 0);
    let deleted = 0;
    let i = 0;
    while (i < keys.length) {
      const n = Math.min(BATCH_ELEMS, keys.length - i);
      const buf = Buffer.concat(keys.slice(i, i + n) as Buffer[], n * this.keySize);
      const attr = this.batchAttr(undefined, undefined, buf, undefined, n);
      const r = sysBpf(BPF_MAP_DELETE_BATCH, attr);
      // count: keys processed before the one that failed (all of them on success).
      const done = r.ok ? n : attr.readUInt32LE(32);
      deleted += done;
      i += done;
      if (r.ok) continue;
      if (r.errno === ENOENT) {
        i++; // that key was already gone
        continue;
      }
      if (done === 0 && i === 0 && (r.errno === EINVAL || r.errno === EOPNOTSUPP || r.errno === ENOTSUPP)) {
        this.noBatch = true;
        return this.deleteMany(keys);
      }
      throw bpfError(`Cannot delete ${keys.length} keys from map "${this.name}"`, r.errno);
    }
    return deleted;
  }

  /** Set when the kernel refused a batch verb on this map: the element verbs are used from then on. */
  private noBatch = false;

  /** Every entry by BPF_MAP_LOOKUP_BATCH, or undefined when the kernel has no batch verbs for this map. */
  private lookupBatches(): Array<[Buffer, Buffer]> | undefined {
    const out: Array<[Buffer, Buffer]> = [];
    const vsize = this.valueBufferSize;
    let elems = BATCH_ELEMS;
    let inBatch: Buffer | undefined;
    for (;;) {
      // htab's batch token is a u32 bucket index; 8 bytes leave room.
      const outBatch = Buffer.alloc(8);
      const keys = Buffer.alloc(elems * this.keySize);
      const values = Buffer.alloc(elems * vsize);
      const attr = this.batchAttr(inBatch, outBatch, keys, values, elems);
      const r = sysBpf(BPF_MAP_LOOKUP_BATCH, attr);
      if (!r.ok && r.errno === ENOSPC) {
        // A bucket holds more entries than the batch: retry it with room for them.
        elems *= 2;
        continue;
      }
      if (!r.ok && r.errno !== ENOENT) {
        if (out.length === 0 && inBatch === undefined && (r.errno === EINVAL || r.errno === EOPNOTSUPP || r.errno === ENOTSUPP)) {
          this.noBatch = true;
          return undefined;
        }
        throw bpfError(`Cannot iterate map "${this.name}"`, r.errno);
      }
      const count = attr.readUInt32LE(32);
      for (let j = 0; j < count; j++) {
        out.push([Buffer.from(keys.subarray(j * this.keySize, (j + 1) * this.keySize)), Buffer.from(values.subarray(j * vsize, (j + 1) * vsize))]);
      }
      if (!r.ok) return out; // ENOENT: that was the last bucket
      inBatch = outBatch;
    }
  }

  /** union bpf_attr for batch commands: in_batch@0 out_batch@8 keys@16 values@24 count@32 map_fd@36 elem_flags@40 flags@48. */
  private batchAttr(inBatch: Buffer | undefined, outBatch: Buffer | undefined, keys: Buffer, values: Buffer | undefined, count: number): Buffer {
    const attr = Buffer.alloc(56);
    attr.writeBigUInt64LE(ptr(inBatch), 0);
    attr.writeBigUInt64LE(ptr(outBatch), 8);
    attr.writeBigUInt64LE(ptr(keys), 16);
    attr.writeBigUInt64LE(ptr(values), 24);
    attr.writeUInt32LE(count, 32);
    attr.writeUInt32LE(this.fd, 36);
    return attr;
  }

  /** A view of this map that encodes keys and values with codecs whose sizes match the map's. */
  typed<K, V>(key: Codec<K>, value: Codec<V>): TypedMap<K, V> {
    if (this.perCpu) {
      throw new KernelError(
        'TENDRIL_ERR_NOT_SUPPORTED',
        `Cannot make a typed view of per-CPU map "${this.name}": use lookupPerCpu()/updatePerCpu()`,
      );
    }
    if (key.size !== this.keySize || value.size !== this.valueSize) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot make a typed view of map "${this.name}": codecs are ${key.size}/${value.size} bytes, ` +
          `map key/value are ${this.keySize}/${this.valueSize}`,
      );
    }
    return new TypedMap(this, key, value);
  }

  /** Pins the map at `path` (on a bpffs) so it outlives this process. */
  pin(path: string): void {
    objPin(this.fd, path, () => `Cannot pin map "${this.name}" at "${path}"`);
  }

  close(): void {
    closeQuietly(this.fdValue);
    this.fdValue = -1;
  }

  private checkKey(key: Buffer, verb: string): void {
    // The kernel reads keySize bytes from the pointer: a short buffer would leak or fault.
    if (key.length !== this.keySize) {
      throw new KernelError(
        'TENDRIL_ERR_BPF',
        `Cannot ${verb} map "${this.name}": key is ${key.length} bytes, expected ${this.keySize}`,
      );
    }
  }

  private requirePerCpu(verb: string): void {
    if (!this.perCpu) throw new KernelError('TENDRIL_ERR_BPF', `Cannot ${verb} on map "${this.name}": it is not per-CPU`);
  }

  /** union bpf_attr for element commands: map_fd@0 key@8 value/next_key@16 flags@24. */
  private elemAttr(key: Buffer | undefined, value: Buffer | undefined, flags: bigint): Buffer {
    const attr = Buffer.alloc(32);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeBigUInt64LE(ptr(key), 8);
    attr.writeBigUInt64LE(ptr(value), 16);
    attr.writeBigUInt64LE(flags, 24);
    return attr;
  }
}

/** A BpfMap seen through codecs. */
export class TypedMap<K, V> {
  constructor(
    readonly map: BpfMap,
    private readonly keyCodec: Codec<K>,
    private readonly valueCodec: Codec<V>,
  ) {}

  lookup(key: K): V | undefined {
    const v = this.map.lookup(this.keyCodec.encode(key));
    return v === undefined ? undefined : this.valueCodec.decode(v);
  }

  /** Throws TENDRIL_ERR_BPF_KEY_NOT_EXIST when absent. */
  get(key: K): V {
    return this.valueCodec.decode(this.map.get(this.keyCodec.encode(key)));
  }

  update(key: K, value: V, flags: UpdateFlags = 'any'): void {
    this.map.update(this.keyCodec.encode(key), this.valueCodec.encode(value), flags);
  }

  put(key: K, value: V): void {
    this.update(key, value, 'any');
  }

  delete(key: K): boolean {
    return this.map.delete(this.keyCodec.encode(key));
  }

  /** Deletes `keys` (batched on hash maps); returns how many were there. */
  deleteMany(keys: readonly K[]): number {
    return this.map.deleteMany(keys.map((k) => this.keyCodec.encode(k)));
  }

  *keys(): Generator<K> {
    for (const k of this.map.keys()) yield this.keyCodec.decode(k);
  }

  *entries(): Generator<[K, V]> {
    for (const [k, v] of this.map.entries()) yield [this.keyCodec.decode(k), this.valueCodec.decode(v)];
  }
}

function keyNotExist(map: string, key: Buffer): KernelError {
  return new KernelError('TENDRIL_ERR_BPF_KEY_NOT_EXIST', `Key ${hex(key)} does not exist in map "${map}"`, {
    errno: ENOENT,
  });
}

function hex(b: Buffer): string {
  return b.length <= 32 ? `0x${b.toString('hex')}` : `0x${b.subarray(0, 32).toString('hex')}...`;
}
