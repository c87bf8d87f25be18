// The storage seam: the node's metadata goes through a `Store`, with two implementations behind it:
// the embedded SQLite file (store/db.ts, the default) and PostgreSQL (store/postgres.ts, for replicas).
//
// One SQL dialect for the statements: `?` placeholders (PostgreSQL's are numbered from them), `INSERT …
// ON CONFLICT … DO UPDATE`, `RETURNING`, and no engine-only functions. Text listings are ordered through
// `textOrder(column)`, so both engines order them by code point whatever the database's collation. Only the schema differs per
// engine (store/migrations.ts): types (BIGINT, BYTEA, identity columns) are not portable.
//
// Transactions are scoped by async context: every statement through the store inside
// `transaction(fn)` runs in that transaction, so code keeps calling `db.run` / `db.get` inside it.

/** A value in a row: numbers (BIGINT read as numbers), text, bytes, or null. */
export type Row = Record<string, number | bigint | string | Uint8Array | null>;

export type SqlParams = readonly unknown[];

export interface Store {
  /** `embedded` (one process owns the file) or `postgres` (shared by replicas). */
  readonly kind: 'embedded' | 'postgres';
  /** Where the data lives, for logs (the file, or the database URL without its password). */
  readonly where: string;
  /**
   * `column` as an ORDER BY term that compares text byte by byte (code point order), as SQLite's default
   * BINARY collation does: a PostgreSQL database's default collation may be a locale's (en_US puts "a"
   * before "B" and ignores "_"), so a listing would otherwise come back in another order per engine.
   */
  textOrder(column: string): string;
  all(sql: string, params?: SqlParams): Promise<Row[]>;
  get(sql: string, params?: SqlParams): Promise<Row | undefined>;
  /** Runs a write; resolves to the number of rows it changed. */
  run(sql: string, params?: SqlParams): Promise<number>;
  /** Runs `fn` in one transaction (joined when already in one): all of it is committed or none of it. */
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * Tells every replica on the same database (this one included) `payload` on `channel`, after the
   * current transaction commits (at once outside one). The embedded store has one process: it delivers
   * locally.
   */
  notify(channel: string, payload: string): Promise<void>;
  /** Calls `listener` for every notification on `channel` until the returned function is called. */
  listen(channel: string, listener: (payload: string) => void): () => void;
  close(): Promise<void>;
}

/** Delivered locally when a store's notification connection came back: notifications may have been missed. */
export const RECONNECTED = 'reconnected';

export const SET_META_SQL = 'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value';

/** Local fan-out of notifications (the embedded store's whole NOTIFY; PostgreSQL's receiving end). */
export class Channels {
  private readonly listeners = new Map<string, Set<(payload: string) => void>>();

  listen(channel: string, listener: (payload: string) => void): () => void {
    let set = this.listeners.get(channel);
    if (set === undefined) this.listeners.set(channel, set = new Set());
    set.add(listener);
    return () => { set.delete(listener); };
  }

  deliver(channel: string, payload: string): void {
    for (const l of [...this.listeners.get(channel) ?? []]) l(payload);
  }

  channels(): string[] {
    return [...this.listeners.keys()];
  }
}
