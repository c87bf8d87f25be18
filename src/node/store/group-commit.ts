// Group commit over the node's database: work queued within one event-loop turn runs in one transaction,
// so a burst of N requests costs one fsync instead of N (the database syncs every commit), and each caller
// is answered only after that commit, so what a reply promises is on disk as before. The work of a batch
// runs in the order it was queued, one item at a time (the next starts when the one before it settled),
// each inside its own savepoint: it sees the rows of the ones before it (a capacity counted inside a batch
// stays exact), and one that throws undoes only its own writes.
//
// One batch at a time: what is queued while a batch runs waits for its COMMIT and forms the next batch,
// so two batches never count the same capacity in two open transactions. The store scopes a transaction
// by async context (store/sql.ts): only the batch's work runs in it; everyone else's statements wait for
// it (embedded) or run on another connection (PostgreSQL). Work must not wait for something started
// outside the batch that itself needs the database (the embedded store would wait for the batch forever):
// load what it needs before queueing it.

import type { Store } from './sql';

export interface GroupCommitHooks {
  /** Inside the transaction, after the batch's work and before COMMIT; a throw fails the whole batch. */
  beforeCommit?(): void | Promise<void>;
  /** After COMMIT, before the callers are answered; a throw still answers them (and reaches flush's caller). */
  committed?(): void;
  /** After a batch failed and was rolled back, before its callers get the error. */
  rolledBack?(err: unknown): void | Promise<void>;
}

interface Queued {
  work(): unknown;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export class GroupCommit {
  private readonly db: Store;
  private readonly hooks: GroupCommitHooks;
  private queue: Queued[] = [];
  private scheduled = false;
  /** The batch being committed, when one is. */
  private running: Promise<void> | undefined;

  constructor(db: Store, hooks: GroupCommitHooks = {}) {
    this.db = db;
    this.hooks = hooks;
  }

  /** Runs `work` in a batch's transaction; resolves with its value once that transaction committed. */
  run<T>(work: () => T | Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running !== undefined) return;
    this.scheduled = true;
    setImmediate(() => { void this.flush(); });
  }

  /** Commits what is queued now, after the batch in flight (also called at close, so nothing queued is lost). */
  async flush(): Promise<void> {
    this.scheduled = false;
    while (this.running !== undefined) await this.running;
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    const running = this.commit(batch);
    this.running = running;
    try {
      await running;
    } finally {
      this.running = undefined;
      // What was queued meanwhile is the next batch.
      if (this.queue.length > 0) this.schedule();
    }
  }

  private async commit(batch: Queued[]): Promise<void> {
    const results: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = [];
    try {
      await this.db.transaction(async () => {
        for (const q of batch) {
          await this.db.run('SAVEPOINT grouped');
          try {
            results.push({ ok: true, value: await q.work() });
            await this.db.run('RELEASE SAVEPOINT grouped');
          } catch (err) {
            await this.db.run('ROLLBACK TO SAVEPOINT grouped');
            await this.db.run('RELEASE SAVEPOINT grouped');
            results.push({ ok: false, err });
          }
        }
        await this.hooks.beforeCommit?.();
      });
    } catch (err) {
      // The callers get the batch's error whatever the hook does.
      await Promise.resolve().then(() => this.hooks.rolledBack?.(err)).catch(() => undefined);
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
