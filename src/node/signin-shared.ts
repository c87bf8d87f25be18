// Sign-in failures shared by the replicas of one node (PostgreSQL): without it a guesser spreading attempts
// over N replicas gets N times the free failures, and a lock set on one replica is unknown to the others.
// Each replica still keeps its own copy (signin-limits.ts) and takes the larger of the two, so its own
// attempts never wait on a read to see each other; attempts in flight are counted per replica only.
// The embedded store has one process, whose memory is exact: it does not use this.

import { createHash } from 'node:crypto';
import type { Store } from './store/sql';

/** A key's failures as the replicas together counted them. */
export interface SharedFailure { failures: number; lockedUntil: number }

/** Where the replicas of one node count sign-in failures (a key is the limiter's: a pair or an address). */
export interface SharedSignInFailures {
  /** The keys' current counts; a key forgotten (unlocked and idle past `forgetMs`) or never failed is absent. */
  read(keys: readonly string[], now: number, forgetMs: number): Promise<Map<string, SharedFailure>>;
  /** Counts one failure of `key` and returns its new count; `lockFor(failures)` says how long it then locks (0: not at all). */
  fail(key: string, now: number, forgetMs: number, lockFor: (failures: number) => number): Promise<number>;
  /** `key` starts afresh (a success of its pair). */
  clear(key: string): Promise<void>;
}

/** Keys hold arbitrary user names and NUL separators, which PostgreSQL text cannot: rows are keyed by a digest. */
const rowKey = (key: string) => createHash('sha256').update(key).digest('base64url');

/** The signin_failures table (store/migrations.ts). */
export class StoreSignInFailures implements SharedSignInFailures {
  private readonly db: Store;
  private lastSweep = 0;

  constructor(db: Store) {
    this.db = db;
  }

  async read(keys: readonly string[], now: number, forgetMs: number): Promise<Map<string, SharedFailure>> {
    const byRow = new Map(keys.map((k) => [rowKey(k), k]));
    const rows = await this.db.all(
      `SELECT key, failures, locked_until_ms FROM signin_failures WHERE key IN (${keys.map(() => '?').join(', ')}) AND (locked_until_ms > ? OR last_ms >= ?)`,
      [...byRow.keys(), now, now - forgetMs]);
    return new Map(rows.map((r) => [byRow.get(String(r.key))!, { failures: Number(r.failures), lockedUntil: Number(r.locked_until_ms) }]));
  }

  async fail(key: string, now: number, forgetMs: number, lockFor: (failures: number) => number): Promise<number> {
    const k = rowKey(key);
    // One statement counts the failure, so replicas failing together each get their own number.
    const row = await this.db.get(
      `INSERT INTO signin_failures (key, failures, locked_until_ms, last_ms) VALUES (?, 1, 0, ?)
       ON CONFLICT (key) DO UPDATE SET
         failures = CASE WHEN signin_failures.locked_until_ms <= ? AND signin_failures.last_ms < ? THEN 1 ELSE signin_failures.failures + 1 END,
         last_ms = excluded.last_ms
       RETURNING failures`, [k, now, now, now - forgetMs]);
    const failures = Number(row!.failures);
    const ms = lockFor(failures);
    if (ms > 0) {
      await this.db.run('UPDATE signin_failures SET locked_until_ms = CASE WHEN locked_until_ms < ? THEN ? ELSE locked_until_ms END WHERE key = ?', [now + ms, now + ms, k]);
    }
    // Forgotten rows go, at most once a minute: the table holds about the last half hour of failures.
    if (now - this.lastSweep > 60_000) {
      this.lastSweep = now;
      await this.db.run('DELETE FROM signin_failures WHERE locked_until_ms <= ? AND last_ms < ?', [now, now - forgetMs]);
    }
    return failures;
  }

  async clear(key: string): Promise<void> {
    await this.db.run('DELETE FROM signin_failures WHERE key = ?', [rowKey(key)]);
  }
}
