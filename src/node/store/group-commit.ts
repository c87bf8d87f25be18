// Group commit over the node's database: work queued within one event-loop turn runs in one transaction,
// so a burst of N requests costs one fsync instead of N (the database syncs every commit), and each caller
// is answered only after that commit, so what a reply promises is on disk as before. The work of a batch
// runs in the order it was queued, each inside its own savepoint: it sees the rows of the ones before it
// (a capacity counted inside a batch stays exact), and one that throws undoes only its own writes.

import type { MetaDb } from './db';

export interface GroupCommitHooks {
  /** Inside the transaction, after the batch's work and before COMMIT; a throw fails the whole batch. */
  beforeCommit?(): void;
  /** After COMMIT, before the callers are answered; a throw still answers them (and reaches flush's caller). */
  committed?(): void;
  /** After a batch failed and was rolled back, before its callers get the error. */
  rolledBack?(err: unknown): void;
}

interface Queued {
  work(): unknown;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export class GroupCommit {
  private readonly db: MetaDb;
  private readonly hooks: GroupCommitHooks;
  private queue: Queued[] = [];
  private scheduled = false;

  constructor(db: MetaDb, hooks: GroupCommitHooks = {}) {
    this.db = db;
    this.hooks = hooks;
  }

  /** Runs `work` in the next batch's transaction; resolves with its value once that transaction committed. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits what is queued now (also called at close, so nothing queued is lost). */
  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    const results: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    try {
      this.db.transaction(() => {
        for (const q of batch) {
          this.db.run('SAVEPOINT grouped');
          try {
            results.push({ ok: true, value: q.work() });
            this.db.run('RELEASE grouped');
          } catch (err) {
            this.db.run('ROLLBACK TO grouped');
            this.db.run('RELEASE grouped');
            results.push({ ok: false, err });
          }
        }
        this.hooks.beforeCommit?.();
      });
    } catch (err) {
      this.hooks.rolledBack?.(err);
      for (const q of batch) q.reject(err);
      return;
    }
    // The batch is committed whatever the hook does: every caller is answered even if it throws.
    try {
      this.hooks.committed?.();
    } finally {
      batch.forEach((q, i) => {
        const r = results[i]!;
        if (r.ok) q.resolve(r.value);
        else q.reject(r.err);
      });
    }
  }
}
