// The node's metadata database (SQLite through node-sqlite3-wasm: no native addon, so it also loads in
// VS Code's extension host). WAL + exclusive locking + synchronous=FULL: a committed transaction survives
// a power cut, and a kill -9 in the middle of a commit leaves the last committed state.
//
// Not the rollback journal: node-sqlite3-wasm's VFS answers "is the db reserved?" by looking for its own
// lock directory, which this connection has itself just created, so SQLite never rolls a hot journal back
// and a kill between two page writes of a commit left a torn database ("database disk image is
// malformed", or a row without its index entry). WAL recovery does not ask that question, and in
// exclusive mode WAL needs no shared memory (which the wasm VFS lacks).

import { Database, type Statement } from 'node-sqlite3-wasm';
import { AsyncLocalStorage } from 'node:async_hooks';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../../core/errors';
import { MIGRATIONS } from './migrations';
import { Channels, SET_META_SQL, type Row, type SqlParams, type Store } from './sql';


/** Prepared statements kept (by SQL text): the node's statements are a few dozen fixed texts. */
const MAX_STATEMENTS = 256;

/** What node-sqlite3-wasm's Statement does not type: ends a statement's run so it holds no read snapshot. */
type Resettable = Statement & { _reset?(): boolean };

/** An open transaction: statements in its async context run in it; everyone else waits for `done`. */
interface Scope {
  done: Promise<void>;
  notes: [string, string][];
}

/**
 * The embedded store. Its statements run synchronously underneath (node-sqlite3-wasm), so the promises
 * it returns are already settled and the node's hot paths cost a microtask, not a round trip. A
 * transaction holds the one connection: statements from outside it wait until it ends, so a write of
 * another request never lands in (or is rolled back with) someone else's transaction.
 */
export class EmbeddedStore implements Store {
  readonly kind = 'embedded' as const;
  readonly file: string;
  readonly where: string;

  /** SQLite compares text with BINARY unless told otherwise: code point order already. */
  textOrder(column: string): string {
    return column;
  }
  private readonly db: Database;
  private readonly scopes = new AsyncLocalStorage<Scope>();
  private active: Scope | undefined;
  private readonly channels = new Channels();
  /**
   * Statements prepared once and reused, least recently used first: preparing one (parsing and planning
   * the SQL in WebAssembly) cost as much as running it, on every query of every report.
   */
  private readonly statements = new Map<string, Statement>();

  constructor(file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.file = file;
    this.where = file;
    this.db = new Database(file);
    // EXCLUSIVE: the node owns its data dir (store/lock.ts), so it keeps the file lock for its lifetime.
    // SQLite then keeps its page cache between statements instead of re-checking the file (and the wasm
    // VFS creating and removing its lock directory) on every read, which made each query cost ~0.2 ms.
    // locking_mode first: WAL without shared memory is allowed only in exclusive mode.
    this.db.exec('PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;');
    const mode = String((this.db.get('PRAGMA journal_mode = WAL') as Row).journal_mode);
    if (mode !== 'wal') {
      this.db.close();
      throw gridError('INTERNAL', `the node's database ${file} could not switch to write-ahead logging (journal_mode is ${mode}); it needs a file system that allows it`);
    }
    this.migrate();
  }

  /** The directory node-sqlite3-wasm creates while it holds a lock on `file`. */
  static lockDirOf(file: string): string { return `${file}.lock`; }

  private migrate(): void {
    const version = Number((this.db.get('PRAGMA user_version') as Row).user_version);
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        this.db.exec(MIGRATIONS[v]!.embedded);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
        this.db.exec('COMMIT');
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
    }
  }

  // A statement outside a transaction waits until no transaction of another async context holds the
  // connection, and runs in the same synchronous step as the check that found it free: after an await of
  // its own (a helper's promise) another waiting transaction could take the connection first and the
  // statement would run inside it, lost with its rollback.

  async all(sql: string, values?: SqlParams): Promise<Row[]> {
    while (this.active !== undefined && this.scopes.getStore() !== this.active) await this.active.done;
    return this.use(sql, (st) => st.all(values as never) as Row[]);
  }

  async get(sql: string, values?: SqlParams): Promise<Row | undefined> {
    while (this.active !== undefined && this.scopes.getStore() !== this.active) await this.active.done;
    return this.use(sql, (st) => (st.get(values as never) as Row | null) ?? undefined);
  }

  async run(sql: string, values?: SqlParams): Promise<number> {
    while (this.active !== undefined && this.scopes.getStore() !== this.active) await this.active.done;
    return this.use(sql, (st) => st.run(values as never).changes);
  }

  /** Runs `fn` on the cached statement of `sql`; one that threw is finalized, not reused. */
  private use<T>(sql: string, fn: (st: Statement) => T): T {
    let st = this.statements.get(sql);
    if (st === undefined) {
      st = this.db.prepare(sql);
      if (this.statements.size >= MAX_STATEMENTS) {
        const [oldest, old] = this.statements.entries().next().value!;
        this.statements.delete(oldest);
        old.finalize();
      }
    } else {
      this.statements.delete(sql);
    }
    let result: T;
    try {
      result = fn(st);
    } catch (err) {
      try { st.finalize(); } catch { /* already gone */ }
      throw err;
    }
    // Reset and unbound before it is kept: a read stopped at its first row would keep its read snapshot
    // open, and SQLite's copy of the values bound last (an FL asset's bytes, megabytes) would stay in its heap.
    (st as Resettable)._reset?.();
    this.statements.set(sql, st);
    return result;
  }

  /** Runs `fn` in one IMMEDIATE transaction: all of it is committed or none of it. */
  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active !== undefined && this.scopes.getStore() === this.active) return fn();
    // Checked and taken in one synchronous step: after an await of its own another transaction that
    // waited alongside could already hold the connection (two BEGINs, "a transaction within a transaction").
    while (this.active !== undefined) await this.active.done;
    let end!: () => void;
    const scope: Scope = { done: new Promise<void>((resolve) => { end = resolve; }), notes: [] };
    this.active = scope;
    try {
      this.db.exec('BEGIN IMMEDIATE');
      const result = await this.scopes.run(scope, fn);
      this.db.exec('COMMIT');
      for (const [channel, payload] of scope.notes) this.channels.deliver(channel, payload);
      return result;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      this.active = undefined;
      // While any AsyncLocalStorage is enabled, Node (before AsyncContextFrame) runs hooks on every promise
      // and native callback of the process: ~10 µs of a batch-1 inference request's node CPU. The scope
      // matters only while a transaction holds the connection; run() enables it again for the next one.
      this.scopes.disable();
      end();
    }
  }

  async getMeta(key: string): Promise<string | undefined> {
    const row = await this.get('SELECT value FROM meta WHERE key = ?', [key]);
    return row === undefined ? undefined : String(row.value);
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.run(SET_META_SQL, [key, value]);
  }

  async notify(channel: string, payload: string): Promise<void> {
    const scope = this.scopes.getStore();
    if (scope !== undefined && scope === this.active) scope.notes.push([channel, payload]);
    else this.channels.deliver(channel, payload);
  }

  listen(channel: string, listener: (payload: string) => void): () => void {
    return this.channels.listen(channel, listener);
  }

  async close(): Promise<void> {
    if (this.active !== undefined) await this.active.done;
    for (const st of this.statements.values()) st.finalize();
    this.statements.clear();
    if (this.db.isOpen) this.db.close();
  }
}
