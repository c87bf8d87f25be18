// Backoff for failed sign-ins (`authenticate`). Failures are counted per (user, address) pair and, more
// loosely, per address; a key past its free failures is locked for a time that doubles with each further
// failure, capped at minutes for remote addresses and at seconds on the loopback, so the local admin is
// never shut out for long. There is deliberately no lock per user across addresses: that would let anyone
// anywhere lock a user out (docs/node.md, "Quotas and sign-in limits").
//
// Attempts sent together: a key admits a new attempt only while its failures plus its attempts in flight
// stay below its free failures (or when none is in flight), so no more guesses than that are ever being
// checked at once. A further attempt waits (a bounded queue, a bounded time) for those in flight to settle,
// rather than counting as a failure: 24 clients of one service signing in together all get in, while 24
// guesses sent together get 5 checked and the rest refused by the lock those 5 set.

import { isIP } from 'node:net';
import { gridError } from '../core/errors';
import type { SharedFailure, SharedSignInFailures } from './signin-shared';

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
  /** Which addresses get the short local cap; the loopback by default. Behind a reverse proxy on this host, every client looks local unless the node trusts it (--trust-proxy). */
  isLocal?(address: string): boolean;
  /** Attempts that may wait at once for one key's attempts in flight; one more is refused (RATE_LIMITED). */
  maxWaiting?: number;
  /** How long an attempt waits for a key's attempts in flight before it is refused (RATE_LIMITED); real time. */
  maxWaitMs?: number;
  /** The clock (tests move it instead of sleeping). */
  now?(): number;
  /** Failures counted with the other replicas of this node (signin-shared.ts); this process's memory only when absent. */
  shared?: SharedSignInFailures;
}

interface Entry { failures: number; lockedUntil: number; last: number }

/** A key's attempts being checked now, and the attempts waiting for one of them to settle. */
interface Flight { count: number; waiters: Set<() => void> }

/** 127.0.0.0/8, ::1, and their IPv4-mapped forms. */
function isLoopback(address: string): boolean {
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1';
}

/** A sign-in attempt admitted by the limiter: report how it went, exactly once (later calls are ignored). */
export interface SignInAttempt {
  /** Resolves once the success is recorded (at once without shared failures). */
  succeeded(): Promise<void>;
  /**
   * Anything but a success (wrong credentials, or the check itself failed): counts as a failure. Resolves
   * once recorded, shared failures included: answer the client only then, so the next replica knows.
   */
  failed(): Promise<void>;
}

export class SignInLimiter {
  private readonly opts: Required<Omit<SignInLimitOptions, 'shared'>>;
  private readonly shared: SharedSignInFailures | undefined;
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new Map<string, Flight>();
  /** Settled attempts so far (each key's landing), to tell whether one settled during a shared read. */
  private landed = 0;

  constructor({ shared, ...options }: SignInLimitOptions = {}) {
    this.shared = shared;
    this.opts = {
      pairFreeFailures: 5,
      addressFreeFailures: 20,
      baseLockMs: 1000,
      maxLockMs: 15 * 60_000,
      maxLocalLockMs: 5000,
      forgetMs: 30 * 60_000,
      maxEntries: 10_000,
      maxWaiting: 64,
      maxWaitMs: 10_000,
      isLocal: isLoopback,
      now: Date.now,
      ...options,
    };
  }

  /**
   * Admits an attempt, or rejects with RATE_LIMITED (details.retry_after_ms) while the user or address is
   * locked, or when it waited too long (or in too long a queue) for attempts in flight to settle.
   * `user` is undefined for a token, which only counts against the address.
   */
  async begin(user: string | undefined, address: string): Promise<SignInAttempt> {
    const addrKey = `a\0${address}`;
    const pairKey = user === undefined ? undefined : `u\0${user}\0${address}`;
    const keys = pairKey === undefined ? [addrKey] : [pairKey, addrKey];
    const deadline = performance.now() + this.opts.maxWaitMs;
    for (;;) {
      const landed = this.landed;
      const seen = this.shared === undefined ? undefined : await this.shared.read(keys, this.opts.now(), this.opts.forgetMs);
      // An attempt that settled while the shared counts were read may be missing from them, and no longer
      // counts as in flight here: its failure is in this replica's own count, so take the larger of both.
      const raced = this.landed !== landed;
      const now = this.opts.now();
      const entry = (key: string): Entry | undefined => {
        const mine = this.current(key, now);
        if (seen === undefined) return mine;
        // The shared count holds every failure of this replica's settled attempts (a success on another
        // replica may have cleared them); only those of attempts still settling may be missing from it.
        const shared = seen.get(key);
        if (raced || (this.flights.get(key)?.count ?? 0) > 0) return merged(mine, shared);
        return shared === undefined ? undefined : { failures: shared.failures, lockedUntil: shared.lockedUntil, last: now };
      };
      const addr = entry(addrKey);
      const pair = pairKey === undefined ? undefined : entry(pairKey);
      const lockedUntil = Math.max(addr?.lockedUntil ?? 0, pair?.lockedUntil ?? 0);
      if (lockedUntil > now) {
        const ms = Math.ceil(lockedUntil - now);
        const who = pair !== undefined && pair.lockedUntil > now ? `for ${JSON.stringify(user)} from ${address}` : `from ${address}`;
        throw gridError('RATE_LIMITED', `too many failed sign-ins ${who}; try again in ${formatWait(ms)} (after ${new Date(lockedUntil).toISOString()})`, { retry_after_ms: ms });
      }
      const full = keys.find((k, i) => !this.hasRoom(k, i === keys.length - 1 ? addr : pair));
      if (full === undefined) break;
      await this.waitFor(full, deadline, user, address);
    }
    for (const k of keys) {
      const f = this.flights.get(k) ?? { count: 0, waiters: new Set() };
      f.count++;
      this.flights.set(k, f);
    }
    let settled = false;
    const local = this.opts.isLocal(address);
    const settle = (outcome: 'succeeded' | 'failed'): Promise<void> => {
      if (settled) return Promise.resolve();
      settled = true;
      const now = this.opts.now();
      if (outcome === 'failed') {
        this.charge(addrKey, this.opts.addressFreeFailures, local, now);
        if (pairKey !== undefined) this.charge(pairKey, this.opts.pairFreeFailures, local, now);
      } else if (pairKey !== undefined) {
        // The pair starts afresh; the address keeps its failures, so a spray of guesses cannot be reset by
        // one good login in between.
        this.entries.delete(pairKey);
      }
      const shared = this.shared;
      if (shared === undefined) {
        for (const k of keys) this.land(k);
        return Promise.resolve();
      }
      return (async () => {
        try {
          if (outcome === 'succeeded') {
            if (pairKey !== undefined) await shared.clear(pairKey);
            return;
          }
          for (const [key, free] of [[addrKey, this.opts.addressFreeFailures], ...(pairKey === undefined ? [] : [[pairKey, this.opts.pairFreeFailures]])] as [string, number][]) {
            const failures = await shared.fail(key, now, this.opts.forgetMs, (n) => this.lockMs(n, free, local));
            // What the other replicas counted too: this replica's copy takes the larger.
            const e = this.entries.get(key);
            if (e !== undefined && failures > e.failures) {
              e.failures = failures;
              e.lockedUntil = Math.max(e.lockedUntil, now + this.lockMs(failures, free, local));
            }
          }
        } finally {
          for (const k of keys) this.land(k);
        }
      })();
    };
    return { succeeded: () => settle('succeeded'), failed: () => settle('failed') };
  }

  /** Attempts in flight now, over all keys (0 when idle). */
  get inFlight(): number {
    let n = 0;
    for (const [k, f] of this.flights) if (k.startsWith('a\0')) n += f.count;
    return n;
  }

  /** Keys tracked now (bounded by maxEntries). */
  get size(): number {
    return this.entries.size;
  }

  /** How long `failures` lock a key with `free` free failures (0: not yet). */
  private lockMs(failures: number, free: number, local: boolean): number {
    if (failures < free) return 0;
    const cap = local ? this.opts.maxLocalLockMs : this.opts.maxLockMs;
    // 2^30 is far past any cap; the exponent is clamped so the number stays finite.
    return Math.min(cap, this.opts.baseLockMs * 2 ** Math.min(30, failures - free));
  }

  /** Whether `key` may admit one more attempt: none in flight, or failures and flights below the free count. */
  private hasRoom(key: string, entry: Entry | undefined): boolean {
    const inFlight = this.flights.get(key)?.count ?? 0;
    if (inFlight === 0) return true;
    const free = key.startsWith('a\0') ? this.opts.addressFreeFailures : this.opts.pairFreeFailures;
    return (entry?.failures ?? 0) + inFlight < free;
  }

  /** Waits until an attempt of `key` settles; rejects with RATE_LIMITED when the queue is full or at `deadline`. */
  private waitFor(key: string, deadline: number, user: string | undefined, address: string): Promise<void> {
    const f = this.flights.get(key)!;
    const who = key.startsWith('a\0') ? `from ${address}` : `for ${JSON.stringify(user)} from ${address}`;
    const refuse = (why: string) => gridError('RATE_LIMITED', `too many sign-ins in flight ${who} (${why}); try again in ${formatWait(this.opts.baseLockMs)}`, { retry_after_ms: this.opts.baseLockMs });
    if (f.waiters.size >= this.opts.maxWaiting) return Promise.reject(refuse(`${f.waiters.size} already waiting`));
    const left = deadline - performance.now();
    if (left <= 0) return Promise.reject(refuse(`waited ${formatWait(this.opts.maxWaitMs)} for them`));
    return new Promise<void>((resolve, reject) => {
      const wake = () => { clearTimeout(timer); f.waiters.delete(wake); resolve(); };
      const timer = setTimeout(() => { f.waiters.delete(wake); reject(refuse(`waited ${formatWait(this.opts.maxWaitMs)} for them`)); }, left);
      f.waiters.add(wake);
    });
  }

  /** An attempt of `key` settled: wake its waiters, who check again. */
  private land(key: string): void {
    this.landed++;
    const f = this.flights.get(key);
    if (f === undefined) return;
    f.count--;
    for (const wake of [...f.waiters]) wake();
    if (f.count === 0 && f.waiters.size === 0) this.flights.delete(key);
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
    if (e.failures >= free) e.lockedUntil = now + this.lockMs(e.failures, free, local);
    // Re-inserted so the map's order is least recently failed first: the oldest go when it is full.
    this.entries.delete(key);
    this.entries.set(key, e);
    while (this.entries.size > this.opts.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

/** A key's copy in this process and what the replicas counted together: the larger of each. */
function merged(mine: Entry | undefined, seen: SharedFailure | undefined): Entry | undefined {
  if (seen === undefined) return mine;
  if (mine === undefined) return { failures: seen.failures, lockedUntil: seen.lockedUntil, last: 0 };
  return { failures: Math.max(mine.failures, seen.failures), lockedUntil: Math.max(mine.lockedUntil, seen.lockedUntil), last: mine.last };
}

function formatWait(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = Math.ceil(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.ceil(s / 60)} min`;
}
