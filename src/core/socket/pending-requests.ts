// The requests a GridSocket is waiting on, by request id, with their deadlines. One timer serves every
// deadline, armed for the earliest: a request costs one record and no timer of its own.

import type { GridError } from '../errors';
import type { RequestDef } from '../protocol/catalogue';
import type { Envelope } from '../protocol/envelope';

export interface Reply<T> {
  data: T;
  attachment: Buffer | undefined;
}

export interface PendingRequest {
  readonly id: string;
  readonly env: Envelope;
  /**
   * Bytes sent with the request. Given in parts (views of the caller's tensors), they are replaced by the
   * copy in the first frame sent, so a re-send after a reconnect carries the bytes of the original call.
   */
  attachment: Uint8Array | readonly Uint8Array[] | undefined;
  readonly idempotent: boolean;
  readonly def: RequestDef | undefined;
  /** `call()` resolves with the whole Reply; `request()` with its data only. */
  readonly whole: boolean;
  /** performance.now() after which the request times out (Infinity: never). */
  readonly deadline: number;
  readonly timeout: number;
  readonly resolve: (r: unknown) => void;
  readonly reject: (e: GridError) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Written to the connection now open; false again when a drop leaves an idempotent request to re-send. */
  sent: boolean;
  /** Called once the request settles through this table (reply, failure, timeout); an abort does not. */
  onSettled?: () => void;
}

/**
 * Settles a request on the caller's side (removed from the table first): the abort listener goes and
 * the promise resolves or rejects.
 */
function settle(p: PendingRequest, err: GridError | undefined, reply?: Reply<unknown>): void {
  if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
  p.onSettled?.();
  if (err) p.reject(err);
  else p.resolve(p.whole ? reply : reply!.data);
}

/**
 * A request that expires fails with `timedOut(p)`; its late reply is then dropped as unmatched, never
 * mis-delivered. A request that settles leaves the timer alone: when it fires it fails what has expired
 * and re-arms for the next deadline. Unref'd: waiting requests do not keep the process alive.
 */
export class PendingRequests {
  private readonly table = new Map<string, PendingRequest>();
  private readonly timedOut: (p: PendingRequest) => GridError;
  private timer: NodeJS.Timeout | undefined;
  /** The deadline the timer is armed for (Infinity: not armed). */
  private timerAt = Infinity;

  constructor(timedOut: (p: PendingRequest) => GridError) {
    this.timedOut = timedOut;
    this.onTimer = this.onTimer.bind(this);
  }

  get size(): number {
    return this.table.size;
  }

  add(p: PendingRequest): void {
    this.table.set(p.id, p);
    if (p.deadline < this.timerAt) this.arm(p.deadline);
  }

  /** Forgets a request without settling it (its caller settles it, e.g. on abort); false if it was not waiting. */
  delete(id: string): boolean {
    return this.table.delete(id);
  }

  /** Removes and returns the request a reply names, if it is still waiting. */
  take(id: string): PendingRequest | undefined {
    const p = this.table.get(id);
    if (p !== undefined) this.table.delete(id);
    return p;
  }

  /** Settles a request already taken out of the table. */
  resolve(p: PendingRequest, reply: Reply<unknown>): void {
    settle(p, undefined, reply);
  }

  /** Removes a request and fails it with `err`. */
  reject(p: PendingRequest, err: GridError): void {
    this.table.delete(p.id);
    settle(p, err);
  }

  /** A snapshot of the waiting requests, oldest first: safe to settle them while iterating. */
  list(): PendingRequest[] {
    return [...this.table.values()];
  }

  /** Fails every waiting request with `err` and stops the timer (giving up, reset, dispose). */
  rejectAll(err: GridError): void {
    for (const p of this.list()) this.reject(p, err);
    this.disarm();
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(at - performance.now())));
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const p of this.table.values()) {
      if (p.deadline <= now) this.reject(p, this.timedOut(p));
      else if (p.deadline < next) next = p.deadline;
    }
    if (next < Infinity) this.arm(next);
  }
}
