// A stream's consumer side: one request, many events, one end. The GridSocket feeds it (push, finish,
// fail); the caller iterates it or subscribes to it, and cancelling it tells the node.

import { ErrorCodes, gridError, type GridError } from '../errors';

export interface StreamOptions {
  signal?: AbortSignal;
  /** Re-send the request after a reconnect so the stream continues. Default: the definition's `resubscribe`. */
  resubscribe?: boolean;
  /** Tell the node when the stream is cancelled (the default); false = the "without teardown" variant. */
  teardown?: boolean;
  /** Most events held for a slow consumer before the stream fails. Default 10 000. */
  maxBuffered?: number;
}

/**
 * A stream's events, as an async iterable (break or cancel() stops it and, by default, tells the
 * node) or through `subscribe`. `done` settles with the end message's data.
 */
export class GridStream<Ev, End> implements AsyncIterable<Ev> {
  readonly type: string;
  readonly done: Promise<End>;
  private readonly queue: Ev[] = [];
  private readonly maxBuffered: number;
  private readonly onCancel: () => void;
  private wake: (() => void) | undefined;
  private settled = false;
  private error: GridError | undefined;
  private resolveDone!: (v: End) => void;
  private rejectDone!: (e: GridError) => void;
  private observers: { next?(ev: Ev): void; error?(e: GridError): void; complete?(end: End): void }[] = [];
  /** A `for await` is reading: events go to the queue even when observers are subscribed. */
  private iterating = false;

  constructor(type: string, maxBuffered: number, onCancel: () => void) {
    this.type = type;
    this.maxBuffered = maxBuffered;
    this.onCancel = onCancel;
    this.done = new Promise<End>((res, rej) => { this.resolveDone = res; this.rejectDone = rej; });
    // Nobody is obliged to await `done`; a failure is still delivered to whoever does.
    this.done.catch(() => {});
  }

  get isSettled(): boolean {
    return this.settled;
  }

  subscribe(observer: { next?(ev: Ev): void; error?(e: GridError): void; complete?(end: End): void }): () => void {
    this.observers.push(observer);
    return () => { this.observers = this.observers.filter((o) => o !== observer); };
  }

  /** Stops the stream; the node is told unless the stream was opened without teardown. */
  cancel(): void {
    if (this.settled) return;
    this.onCancel();
    this.fail(gridError('ABORTED', `the ${this.type} stream was cancelled`));
  }

  /** @internal */
  push(ev: Ev): void {
    if (this.settled) return;
    for (const o of this.observers) o.next?.(ev);
    if (this.observers.length > 0 && !this.iterating) return;
    if (this.queue.length >= this.maxBuffered) {
      this.onCancel();
      this.fail(gridError('PAYLOAD_TOO_LARGE', `the ${this.type} stream buffered ${this.maxBuffered} unread events; read it faster or raise maxBuffered`));
      return;
    }
    this.queue.push(ev);
    this.wake?.();
  }

  /** @internal */
  finish(end: End): void {
    if (this.settled) return;
    this.settled = true;
    for (const o of this.observers) o.complete?.(end);
    this.resolveDone(end);
    this.wake?.();
  }

  /** @internal */
  fail(err: GridError): void {
    if (this.settled) return;
    this.settled = true;
    this.error = err;
    for (const o of this.observers) o.error?.(err);
    this.rejectDone(err);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Ev> {
    this.iterating = true;
    try {
      for (;;) {
        if (this.queue.length > 0) {
          yield this.queue.shift()!;
          continue;
        }
        if (this.settled) {
          // A cancel by the consumer ends iteration quietly; a failure from the node is thrown.
          if (this.error && this.error.code !== ErrorCodes.ABORTED) throw this.error;
          return;
        }
        await new Promise<void>((r) => { this.wake = r; });
        this.wake = undefined;
      }
    } finally {
      this.iterating = false;
      if (!this.settled) this.cancel();
    }
  }
}
