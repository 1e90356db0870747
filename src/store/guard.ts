// A Store that never makes its caller wait on a store that does not answer: every call has a short deadline, a
// store found unreachable fails the next calls fast (coded TENDRIL_ERR_STORE_UNAVAILABLE: each waits at most a short
// re-check for a probe to see the store back) until a background probe sees it answer again, and ping() answers
// from the last probe without a round trip. Watches pass through
// (they reconnect by themselves). What an agent wraps its store client in, so its API and CNI calls stay fast
// whatever the store does.
import { StoreError, describeCause } from './errors.js';
import type { DeleteOptions, Kind, PutOptions, Resource, Store, WatchHandle, WatchOptions } from './types.js';

export interface GuardOptions {
  /** Longest a call (or a probe) may take before the store counts as unavailable. Default 1500 ms. */
  callTimeoutMs?: number;
  /** Probe period while the store answers. Default 2000 ms. */
  probeUpMs?: number;
  /** Probe period while it does not (how soon its return is noticed). Default 250 ms. */
  probeDownMs?: number;
  /** How long a call to a store known away waits for a probe (started at once) to find it back. Default 500 ms. */
  recheckMs?: number;
  /** Reachability changed (not called for the first probe when the store answers). */
  onChange?: (up: boolean, error: string | undefined) => void;
}

export interface StoreHealth {
  /** undefined until the first call or probe settled. */
  ok: boolean | undefined;
  /** When the current state began and when it was last confirmed (ISO). */
  since: string | undefined;
  checkedAt: string | undefined;
  error: string | undefined;
  revision: number | undefined;
}

export class GuardedStore implements Store {
  private readonly inner: Store;
  private readonly callTimeoutMs: number;
  private readonly probeUpMs: number;
  private readonly probeDownMs: number;
  private readonly recheckMs: number;
  private readonly onChange: GuardOptions['onChange'];
  private state: StoreHealth = { ok: undefined, since: undefined, checkedAt: undefined, error: undefined, revision: undefined };
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  private closed = false;
  /** Deadlines of calls in flight (close() clears them: the closed client settles those calls itself). */
  private readonly deadlines = new Set<NodeJS.Timeout>();
  /** Calls waiting for the store to be seen back. */
  private readonly waiters = new Set<() => void>();

  /** The inner store's, asked each time: an etcd client's names the member it uses now. */
  get description(): string {
    return this.inner.description;
  }

  constructor(inner: Store, opts: GuardOptions = {}) {
    this.inner = inner;
    this.callTimeoutMs = opts.callTimeoutMs ?? 1500;
    this.probeUpMs = opts.probeUpMs ?? 2000;
    this.probeDownMs = opts.probeDownMs ?? 250;
    this.recheckMs = opts.recheckMs ?? 500;
    this.onChange = opts.onChange;
  }

  /** Starts the background probe (the first one now). */
  start(): void {
    if (this.closed || this.timer) return;
    this.schedule(0);
  }

  /** What the last call or probe found; no round trip. */
  health(): StoreHealth {
    return { ...this.state };
  }

  get up(): boolean {
    return this.state.ok !== false;
  }

  get<T>(kind: Kind, name: string): Promise<Resource<T> | undefined> {
    return this.call(`get ${kind} "${name}"`, () => this.inner.get<T>(kind, name));
  }

  list<T>(kind: Kind): Promise<{ items: Resource<T>[]; revision: number }> {
    return this.call(`list ${kind}`, () => this.inner.list<T>(kind));
  }

  put<T>(kind: Kind, name: string, value: T, opts?: PutOptions): Promise<Resource<T>> {
    return this.call(`put ${kind} "${name}"`, () => this.inner.put<T>(kind, name, value, opts));
  }

  delete(kind: Kind, name: string, opts?: DeleteOptions): Promise<boolean> {
    return this.call(`delete ${kind} "${name}"`, () => this.inner.delete(kind, name, opts));
  }

  watch(kind: Kind, opts: WatchOptions): WatchHandle {
    return this.inner.watch(kind, opts);
  }

  /** The last probe's answer (no round trip: a status page must not wait on the store). */
  async ping(): Promise<{ ok: boolean; revision?: number; error?: string }> {
    const s = this.state;
    return {
      ok: s.ok === true,
      ...(s.revision !== undefined ? { revision: s.revision } : {}),
      ...(s.ok === true ? {} : { error: s.error ?? 'not checked yet' }),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const t of this.deadlines) clearTimeout(t);
    this.deadlines.clear();
    for (const w of [...this.waiters]) w();
    await this.inner.close();
  }

  private async call<R>(what: string, fn: () => Promise<R>): Promise<R> {
    if (this.state.ok === false) await this.recheck();
    if (this.state.ok === false) {
      throw new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', `Cannot ${what}: cluster store ${this.description} unavailable since ${this.state.since} (${this.state.error}); try again later`);
    }
    try {
      const r = await this.deadline(fn(), this.callTimeoutMs, `Cannot ${what}: cluster store ${this.description} did not answer within ${this.callTimeoutMs} ms`);
      this.mark(true);
      return r;
    } catch (err) {
      if (isUnavailable(err)) this.mark(false, describeCause(err));
      else if (err instanceof StoreError) this.mark(true); // it answered, with a coded refusal
      throw err;
    }
  }

  /** Probes now (unless a probe is under way) and waits up to recheckMs for the store to be seen back. */
  private async recheck(): Promise<void> {
    if (this.closed) return;
    if (!this.probing) this.schedule(0);
    let done: () => void = () => {};
    const timer = setTimeout(() => done(), this.recheckMs);
    await new Promise<void>((resolve) => {
      done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      this.waiters.add(done);
    });
  }

  /** @p, or a TENDRIL_ERR_STORE_UNAVAILABLE rejection after @ms (the call itself is left to its own timeout). */
  private deadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreError('TENDRIL_ERR_STORE_UNAVAILABLE', message)), ms);
      this.deadlines.add(timer);
    });
    p.catch(() => undefined); // settles after the deadline: nobody listens any more
    return Promise.race([p, late]).finally(() => {
      clearTimeout(timer);
      this.deadlines.delete(timer!);
    });
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.probe(), ms);
    this.timer.unref();
  }

  private async probe(): Promise<void> {
    if (this.closed) return;
    // One probe at a time, however long the store takes to fail it: a frozen store must not collect sockets.
    if (this.probing) {
      this.schedule(this.probeDownMs);
      return;
    }
    this.probing = true;
    const p = this.inner.ping().finally(() => {
      this.probing = false;
    });
    try {
      const r = await this.deadline(p, this.callTimeoutMs, `no answer within ${this.callTimeoutMs} ms`);
      if (r.ok) this.mark(true, undefined, r.revision);
      else this.mark(false, r.error ?? 'unreachable');
    } catch (err) {
      this.mark(false, describeCause(err));
    }
    this.schedule(this.up ? this.probeUpMs : this.probeDownMs);
  }

  private mark(ok: boolean, error?: string, revision?: number): void {
    const now = new Date().toISOString();
    const prev = this.state.ok;
    if (prev !== ok) this.state.since = now;
    this.state.ok = ok;
    this.state.checkedAt = now;
    this.state.error = ok ? undefined : error;
    if (revision !== undefined) this.state.revision = revision;
    if (ok) for (const w of [...this.waiters]) w();
    if (prev !== ok && !(prev === undefined && ok)) {
      // Noticed by a call: probe again soon to see it come back.
      if (!ok) this.schedule(this.probeDownMs);
      this.onChange?.(ok, error);
    }
  }
}

function isUnavailable(err: unknown): boolean {
  return (err as { code?: unknown }).code === 'TENDRIL_ERR_STORE_UNAVAILABLE';
}

