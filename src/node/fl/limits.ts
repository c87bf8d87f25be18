// Bounds on what one address may ask of the FL engine. AddressLimiter: authenticate and cycle-request each
// cost a token from that address's bucket (refilled at `perMinute` a minute, holding at most `perMinute`);
// a flood from one address is refused with RATE_LIMITED and workers at other addresses do not notice it.
// WorkerRows: the worker rows authentication creates, which a rate alone bounds only per minute.

import { gridError } from '../../core/errors';

/** Addresses remembered at once; past this the longest-idle are forgotten (a full bucket anyway). */
const MAX_ADDRESSES = 10_000;

export class AddressLimiter {
  private readonly perMinute: number;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly now: () => number;

  constructor(perMinute: number, now: () => number = Date.now) {
    if (!(perMinute > 0)) throw new RangeError(`perMinute must be a positive number, got ${perMinute}`);
    this.perMinute = perMinute;
    this.now = now;
  }

  /** Takes one token for `address`, or throws RATE_LIMITED with `retry_after_ms`. */
  take(address: string, what: string): void {
    const now = this.now();
    const b = this.buckets.get(address) ?? { tokens: this.perMinute, at: now };
    b.tokens = Math.min(this.perMinute, b.tokens + ((now - b.at) * this.perMinute) / 60_000);
    b.at = now;
    // Re-inserted so the map's order is least recently used first.
    this.buckets.delete(address);
    this.buckets.set(address, b);
    if (this.buckets.size > MAX_ADDRESSES) this.buckets.delete(this.buckets.keys().next().value!);
    if (b.tokens < 1) {
      const retry = Math.ceil(((1 - b.tokens) * 60_000) / this.perMinute);
      throw gridError('RATE_LIMITED', `too many ${what} requests from ${address || 'this address'} (more than ${this.perMinute} a minute); retry in ${Math.ceil(retry / 1000)} s`, { retry_after_ms: retry });
    }
    b.tokens -= 1;
  }
}

/** Distinct (process, token) workers one connection may authenticate. */
export const MAX_WORKERS_PER_CONNECTION = 64;

/**
 * Bounds the FL worker rows (one per successful authenticate in PyGrid, for ever). A connection that
 * authenticates again for the same process with the same token gets its worker back (a socket is one
 * device; PyGrid clients authenticate once per job, so none notices). Rows from one address are capped
 * per process: at the cap the oldest row from that address that is stale (created before the open cycle
 * began and not in it) is deleted to make room; when none is, or the cycle is closing, authenticate is
 * refused (QUOTA_EXCEEDED) until the next cycle.
 */
export class WorkerRows {
  private readonly maxPerAddress: number;
  private readonly byConnection = new WeakMap<object, Map<string, string>>();

  constructor(maxPerAddress: number) {
    if (!(Number.isInteger(maxPerAddress) && maxPerAddress > 0)) throw new RangeError(`maxWorkersPerAddress must be a whole number ≥ 1, got ${maxPerAddress}`);
    this.maxPerAddress = maxPerAddress;
  }

  /** The worker this connection already authenticated for the process with this token, if any. */
  known(connection: object | undefined, processId: number, token: string | undefined): string | undefined {
    return connection === undefined ? undefined : this.byConnection.get(connection)?.get(key(processId, token));
  }

  /**
   * Throws QUOTA_EXCEEDED unless the connection and the address may have one more worker row (evicting a
   * stale one if need be). `openCycle` is asked only before an eviction: the process's open cycle, locked
   * against assignments until the eviction commits (on PostgreSQL another replica could otherwise assign
   * the row chosen for eviction before its delete, which then takes that assignment with it), or
   * 'closing' (no eviction then: the next cycle decides what is stale).
   */
  async makeRoom(store: {
    workersAt(processId: number, address: string): Promise<number>;
    evictStaleWorker(processId: number, address: string, beforeMs: number, cycleId: number | undefined): Promise<boolean>;
  }, connection: object | undefined, p: { id: number; name: string; version: string }, address: string, openCycle: () => Promise<{ id: number; startMs: number } | 'closing' | undefined>, now: number): Promise<void> {
    const mine = connection === undefined ? undefined : this.byConnection.get(connection);
    if (mine !== undefined && mine.size >= MAX_WORKERS_PER_CONNECTION) {
      throw gridError('QUOTA_EXCEEDED', `this connection already authenticated ${mine.size} workers, the most the node allows on one connection; open another connection`);
    }
    if (await store.workersAt(p.id, address) < this.maxPerAddress) return;
    const cycle = await openCycle();
    if (cycle !== 'closing' && await store.evictStaleWorker(p.id, address, cycle?.startMs ?? now, cycle?.id)) return;
    throw gridError('QUOTA_EXCEEDED', `${address || 'this address'} already has ${this.maxPerAddress} workers for FL process ${p.name} ${p.version}, the most the node allows from one address; try again in the next cycle`);
  }

  remember(connection: object | undefined, processId: number, token: string | undefined, workerId: string): void {
    if (connection === undefined) return;
    let mine = this.byConnection.get(connection);
    if (mine === undefined) this.byConnection.set(connection, mine = new Map());
    mine.set(key(processId, token), workerId);
  }
}

function key(processId: number, token: string | undefined): string {
  return `${processId}\n${token ?? ''}`;
}
