// The last N flows of a node (Hubble's ring buffer, default 4095), oldest overwritten first, plus a seen counter.

export const DEFAULT_MAX_FLOWS = 4095;

export class FlowRing<T> {
  readonly capacity: number;
  private readonly items: Array<T | undefined>;
  /** Index where the next item goes. */
  private next = 0;
  private count = 0;
  private total = 0;

  constructor(capacity = DEFAULT_MAX_FLOWS) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`Invalid flow ring capacity ${capacity}: expected a positive integer`);
    this.capacity = capacity;
    this.items = new Array<T | undefined>(capacity);
  }

  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    this.total++;
  }

  /** Flows currently held. */
  get size(): number {
    return this.count;
  }

  /** Flows pushed since creation, including overwritten ones. */
  get seen(): number {
    return this.total;
  }

  /** Oldest first. */
  *values(): IterableIterator<T> {
    const start = (this.next - this.count + this.capacity) % this.capacity;
    for (let i = 0; i < this.count; i++) yield this.items[(start + i) % this.capacity] as T;
  }

  /** Newest first. */
  *reversed(): IterableIterator<T> {
    for (let i = 1; i <= this.count; i++) yield this.items[(this.next - i + this.capacity) % this.capacity] as T;
  }

  toArray(): T[] {
    return [...this.values()];
  }

  /** The newest item, or undefined when empty. */
  last(): T | undefined {
    return this.count === 0 ? undefined : (this.items[(this.next - 1 + this.capacity) % this.capacity] as T);
  }

  clear(): void {
    this.items.fill(undefined);
    this.next = 0;
    this.count = 0;
  }
}
