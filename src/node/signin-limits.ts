// Backoff for failed sign-ins (`authenticate`). Failures are counted per (user, address) pair and, more
// loosely, per address; a key past its free failures is locked for a time that doubles with each further
// failure, capped at minutes for remote addresses and at seconds on the loopback, so the local admin is
// never shut out for long. There is deliberately no lock per user across addresses: that would let anyone
// anywhere lock a user out (docs/node.md, "Quotas and sign-in limits").

import { isIP } from 'node:net';
import { gridError } from '../core/errors';

export interface SignInLimitOptions {
  /** Failures for one user from one address before lockouts start. */
  pairFreeFailures?: number;
  /** Failures from one address (any user names, wrong tokens) before that address is locked. */
  addressFreeFailures?: number;
  /** The first lockout; each further failure doubles it. */
  baseLockMs?: number;
  /** The longest lockout of a remote address. */
  maxLockMs?: number;
  /** The longest lockout of a local (loopback) address. */
  maxLocalLockMs?: number;
  /** A key's failures are forgotten this long after its last one. */
  forgetMs?: number;
  /** Keys tracked at most; the least recently failed are dropped beyond it. */
  maxEntries?: number;
  /** Which addresses get the short local cap; the loopback by default. Behind a reverse proxy on this host, every client looks local. */
  isLocal?(address: string): boolean;
  /** The clock (tests move it instead of sleeping). */
  now?(): number;
}

interface Entry { failures: number; lockedUntil: number; last: number }

/** 127.0.0.0/8, ::1, and their IPv4-mapped forms. */
export function isLoopback(address: string): boolean {
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1';
}

/** A sign-in attempt admitted by the limiter: report how it went. */
export interface SignInAttempt {
  succeeded(): void;
}

export class SignInLimiter {
  private readonly opts: Required<SignInLimitOptions>;
  private readonly entries = new Map<string, Entry>();

  constructor(options: SignInLimitOptions = {}) {
    this.opts = {
      pairFreeFailures: 5,
      addressFreeFailures: 20,
      baseLockMs: 1000,
      maxLockMs: 15 * 60_000,
      maxLocalLockMs: 5000,
      forgetMs: 30 * 60_000,
      maxEntries: 10_000,
      isLocal: isLoopback,
      now: Date.now,
      ...options,
    };
  }

  /**
   * Admits an attempt or throws RATE_LIMITED. An admitted attempt is charged as a failure at once (and
   * refunded by succeeded()), so many attempts sent together cannot all slip past the check.
   * `user` is undefined for a token, which only counts against the address.
   */
  begin(user: string | undefined, address: string): SignInAttempt {
    const now = this.opts.now();
    const local = this.opts.isLocal(address);
    const addrKey = `a\0${address}`;
    const pairKey = user === undefined ? undefined : `u\0${user}\0${address}`;
    const addr = this.current(addrKey, now);
    const pair = pairKey === undefined ? undefined : this.current(pairKey, now);
    const lockedUntil = Math.max(addr?.lockedUntil ?? 0, pair?.lockedUntil ?? 0);
    if (lockedUntil > now) {
      const ms = Math.ceil(lockedUntil - now);
      const who = pair !== undefined && pair.lockedUntil > now ? `for ${JSON.stringify(user)} from ${address}` : `from ${address}`;
      throw gridError('RATE_LIMITED', `too many failed sign-ins ${who}; try again in ${formatWait(ms)} (after ${new Date(lockedUntil).toISOString()})`, { retry_after_ms: ms });
    }
    this.charge(addrKey, this.opts.addressFreeFailures, local, now);
    if (pairKey !== undefined) this.charge(pairKey, this.opts.pairFreeFailures, local, now);
    return {
      succeeded: () => {
        // The pair starts afresh; the address only gets this attempt back, so a spray of guesses cannot be
        // reset by one good login in between.
        if (pairKey !== undefined) this.entries.delete(pairKey);
        const e = this.entries.get(addrKey);
        if (e !== undefined) {
          e.failures = Math.max(0, e.failures - 1);
          if (e.failures < this.opts.addressFreeFailures) e.lockedUntil = 0;
          if (e.failures === 0) this.entries.delete(addrKey);
        }
      },
    };
  }

  /** Keys tracked now (bounded by maxEntries). */
  get size(): number {
    return this.entries.size;
  }

  private current(key: string, now: number): Entry | undefined {
    const e = this.entries.get(key);
    if (e !== undefined && e.lockedUntil <= now && now - e.last > this.opts.forgetMs) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  private charge(key: string, free: number, local: boolean, now: number): void {
    const e = this.entries.get(key) ?? { failures: 0, lockedUntil: 0, last: now };
    e.failures++;
    e.last = now;
    if (e.failures >= free) {
      const cap = local ? this.opts.maxLocalLockMs : this.opts.maxLockMs;
      // 2^30 is far past any cap; the exponent is clamped so the number stays finite.
      e.lockedUntil = now + Math.min(cap, this.opts.baseLockMs * 2 ** Math.min(30, e.failures - free));
    }
    // Re-inserted so the map's order is least recently failed first: the oldest go when it is full.
    this.entries.delete(key);
    this.entries.set(key, e);
    while (this.entries.size > this.opts.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

function formatWait(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = Math.ceil(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.ceil(s / 60)} min`;
}
