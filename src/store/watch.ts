// A watch that survives connection loss: reopens its stream with backoff from the last delivered revision,
// drops replayed duplicates, and hands over to onResync when the backend cannot resume.
import { Backoff } from './http.js';
import { eventRevision } from './validate.js';
import { logger } from '../util/log.js';
import type { WatchEvent, WatchHandle, WatchOptions } from './types.js';

/** What a backend's stream reports to the watch. Calls after the stream was cancelled are ignored. */
export interface StreamSink {
  /** The server accepted the watch; `idleTimeoutMs`: reconnect if nothing arrives for this long. */
  opened(info?: { idleTimeoutMs?: number }): void;
  event(ev: WatchEvent<unknown>): void;
  /** Every event with a revision <= `revision` has been delivered (keepalive, progress notification). */
  progress(revision: number): void;
  /** The stream cannot continue from where it was; the watch ends. */
  resync(reason: string): void;
  /** The stream ended or failed; the watch reopens it. */
  closed(err?: unknown): void;
}

/**
 * Opens a stream delivering events with revision > fromRevision. Returns its cancel function, called with `dead`
 * true when the watch gives up on a stream that stayed silent (its server is hung or gone: try another).
 */
export type StreamOpener = (fromRevision: number, sink: StreamSink) => (dead?: boolean) => void;

export class ResumableWatch implements WatchHandle {
  private last: number;
  private closedByUser = false;
  private connected = false;
  private generation = 0;
  private cancelStream: ((dead?: boolean) => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastActivity = 0;
  private readonly backoff: Backoff;

  constructor(
    private readonly opts: WatchOptions,
    private readonly open: StreamOpener,
    maxBackoffMs: number,
    /** How long opening a stream may take before it is abandoned and retried. */
    private readonly openTimeoutMs: number,
    private readonly onFinish: (w: ResumableWatch) => void = () => {},
  ) {
    this.last = opts.fromRevision;
    this.backoff = new Backoff(50, maxBackoffMs);
    this.connect();
  }

  /** Revision of the last event (or progress mark) delivered; a reconnect resumes after it. */
  get lastRevision(): number {
    return this.last;
  }

  close(): void {
    if (this.closedByUser) return;
    this.closedByUser = true;
    this.teardown();
    this.onFinish(this);
  }

  private connect(): void {
    if (this.closedByUser) return;
    const gen = ++this.generation;
    const live = (): boolean => gen === this.generation && !this.closedByUser;
    const sink: StreamSink = {
      opened: (info) => {
        if (!live()) return;
        this.backoff.reset();
        this.touch();
        this.armDeadline(info?.idleTimeoutMs);
        this.setConnected(true);
      },
      event: (ev) => {
        if (!live()) return;
        this.touch();
        const rev = eventRevision(ev);
        // A resumed stream may repeat what was delivered before the break.
        if (rev <= this.last) return;
        this.last = rev;
        try {
          this.opts.onEvent(ev);
        } catch (err) {
          logger('store').error({ err, revision: rev }, 'store watch handler threw');
        }
      },
      progress: (revision) => {
        if (!live()) return;
        this.touch();
        if (revision > this.last) this.last = revision;
      },
      resync: (reason) => {
        if (!live()) return;
        this.closedByUser = true;
        this.teardown();
        this.onFinish(this);
        this.opts.onResync?.(reason);
      },
      closed: () => {
        if (!live()) return;
        this.generation++;
        this.cancelStream = undefined;
        this.clearIdle();
        this.setConnected(false);
        this.scheduleReconnect();
      },
    };
    this.touch();
    this.armDeadline(this.openTimeoutMs);
    const cancel = this.open(this.last, sink);
    if (live()) this.cancelStream = cancel;
    else cancel();
  }

  private scheduleReconnect(): void {
    if (this.closedByUser) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, this.backoff.delay());
  }

  /** Notes activity; the dead-stream timer compares against it instead of being re-armed per event. */
  private touch(): void {
    this.lastActivity = Date.now();
  }

  /** Reopens the stream if it stays silent for `ms` (no answer to the open, or no keepalive once open). */
  private armDeadline(ms: number | undefined): void {
    this.clearIdle();
    if (ms === undefined) return;
    const gen = this.generation;
    const check = (): void => {
      if (gen !== this.generation || this.closedByUser) return;
      const quiet = Date.now() - this.lastActivity;
      if (quiet < ms) {
        this.idleTimer = setTimeout(check, ms - quiet);
        return;
      }
      // Silent too long: the connection is dead even if the socket does not know (peer frozen or gone).
      this.generation++;
      this.idleTimer = undefined;
      this.cancelStream?.(true);
      this.cancelStream = undefined;
      this.setConnected(false);
      this.scheduleReconnect();
    };
    this.idleTimer = setTimeout(check, ms);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private setConnected(c: boolean): void {
    if (this.connected === c) return;
    this.connected = c;
    try {
      this.opts.onConnection?.(c);
    } catch (err) {
      logger('store').error({ err }, 'store watch onConnection handler threw');
    }
  }

  private teardown(): void {
    this.generation++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.clearIdle();
    this.cancelStream?.();
    this.cancelStream = undefined;
    this.connected = false;
  }
}
