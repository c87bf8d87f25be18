// A bound on what one address may ask of the FL engine: authenticate and cycle-request each cost a
// token from that address's bucket (refilled at `perMinute` a minute, holding at most `perMinute`). A
// flood from one address is refused with RATE_LIMITED; workers at other addresses do not notice it, and
// the worker rows a flood could create are bounded with it.

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
