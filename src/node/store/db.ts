// The node's metadata database (SQLite through node-sqlite3-wasm: no native addon, so it also loads in
// VS Code's extension host). WAL + exclusive locking + synchronous=FULL: a committed transaction survives
// a power cut, and a kill -9 in the middle of a commit leaves the last committed state.
//
// Not the rollback journal: node-sqlite3-wasm's VFS answers "is the db reserved?" by looking for its own
// lock directory, which this connection has itself just created, so SQLite never rolls a hot journal back
// and a kill between two page writes of a commit left a torn database ("database disk image is
// malformed", or a row without its index entry). WAL recovery does not ask that question, and in
// exclusive mode WAL needs no shared memory (which the wasm VFS lacks).

import { Database } from 'node-sqlite3-wasm';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../../core/errors';

export type Row = Record<string, number | bigint | string | Uint8Array | null>;

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE users (
     username TEXT PRIMARY KEY,
     password_hash TEXT NOT NULL,
     role TEXT NOT NULL,
     created TEXT NOT NULL);
   CREATE TABLE sessions (
     token_hash TEXT PRIMARY KEY,
     username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
     created TEXT NOT NULL,
     expires_at TEXT NOT NULL);
   CREATE TABLE models (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     version TEXT NOT NULL,
     signature TEXT NOT NULL,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     allow_download INTEGER NOT NULL,
     allow_remote_inference INTEGER NOT NULL,
     owner TEXT NOT NULL,
     created TEXT NOT NULL);
   CREATE INDEX models_sha256 ON models(sha256);
   CREATE TABLE datasets (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     description TEXT NOT NULL,
     tags TEXT NOT NULL,
     format TEXT NOT NULL,
     path TEXT NOT NULL,
     size INTEGER NOT NULL,
     schema TEXT NOT NULL,
     created TEXT NOT NULL);`,
  // 2: model versions. A model id (its name) has versions 1..N; every existing row becomes version 1 of
  // its id, so every id a user or script knew keeps resolving. Trained rows keep their lineage from their
  // training record (the parent was version 1 of its id then). Training records move to (id, version).
  `CREATE TABLE models_v (
     id TEXT NOT NULL,
     version INTEGER NOT NULL,
     name TEXT NOT NULL,
     signature TEXT NOT NULL,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     allow_download INTEGER NOT NULL,
     allow_remote_inference INTEGER NOT NULL,
     owner TEXT NOT NULL,
     created TEXT NOT NULL,
     parent TEXT,
     job_id TEXT,
     PRIMARY KEY (id, version));
   INSERT INTO models_v (id, version, name, signature, size, sha256, allow_download, allow_remote_inference, owner, created)
     SELECT id, 1, name, signature, size, sha256, allow_download, allow_remote_inference, owner, created FROM models;
   DROP TABLE models;
   ALTER TABLE models_v RENAME TO models;
   CREATE INDEX models_sha256 ON models(sha256);
   CREATE TABLE model_names (id TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
   INSERT INTO model_names (id, last_version) SELECT id, MAX(version) FROM models GROUP BY id;
   CREATE TABLE IF NOT EXISTS model_training (model_id TEXT PRIMARY KEY, model_sha256 TEXT NOT NULL, record TEXT NOT NULL);
   CREATE TABLE model_training_v (
     model_id TEXT NOT NULL,
     version INTEGER NOT NULL,
     model_sha256 TEXT NOT NULL,
     record TEXT NOT NULL,
     PRIMARY KEY (model_id, version));
   INSERT INTO model_training_v (model_id, version, model_sha256, record) SELECT model_id, 1, model_sha256, record FROM model_training;
   DROP TABLE model_training;
   ALTER TABLE model_training_v RENAME TO model_training;
   UPDATE models SET
     parent = (SELECT json_extract(t.record, '$.parent_model_id') || '@1' FROM model_training t WHERE t.model_id = models.id AND t.model_sha256 = models.sha256),
     job_id = (SELECT json_extract(t.record, '$.job_id') FROM model_training t WHERE t.model_id = models.id AND t.model_sha256 = models.sha256);`,
  // 3: model-centric federated learning (src/node/fl). Ids are integers because PyGrid clients read them
  // as JSON ints (SwiftSyft requires it). A report's diff stays in its assignment row until its cycle is
  // averaged, so a restart rebuilds the cycle's running sum; checkpoints' bytes live in <data>/fl/blobs.
  `CREATE TABLE fl_processes (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     name TEXT NOT NULL,
     version TEXT NOT NULL,
     owner TEXT NOT NULL,
     model_format TEXT NOT NULL,
     shapes TEXT NOT NULL,
     client_config TEXT NOT NULL,
     server_config TEXT NOT NULL,
     created TEXT NOT NULL,
     linked_model TEXT,
     UNIQUE (name, version));
   CREATE TABLE fl_assets (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     process_id INTEGER NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
     kind TEXT NOT NULL,
     name TEXT NOT NULL,
     variant TEXT NOT NULL,
     bytes BLOB NOT NULL);
   CREATE INDEX fl_assets_process ON fl_assets(process_id, kind, name);
   CREATE TABLE fl_checkpoints (
     process_id INTEGER NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
     number INTEGER NOT NULL,
     alias TEXT NOT NULL,
     sha256 TEXT NOT NULL,
     cycle INTEGER,
     reports INTEGER NOT NULL,
     created TEXT NOT NULL,
     model_version TEXT,
     PRIMARY KEY (process_id, number));
   CREATE TABLE fl_cycles (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     process_id INTEGER NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
     sequence INTEGER NOT NULL,
     start_ms INTEGER NOT NULL,
     end_ms INTEGER,
     completed_ms INTEGER,
     UNIQUE (process_id, sequence));
   CREATE TABLE fl_workers (
     id TEXT PRIMARY KEY,
     process_id INTEGER NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
     address TEXT NOT NULL,
     created_ms INTEGER NOT NULL);
   CREATE INDEX fl_workers_process ON fl_workers(process_id);
   CREATE TABLE fl_assignments (
     cycle_id INTEGER NOT NULL REFERENCES fl_cycles(id) ON DELETE CASCADE,
     worker_id TEXT NOT NULL REFERENCES fl_workers(id) ON DELETE CASCADE,
     request_key TEXT NOT NULL UNIQUE,
     assigned_ms INTEGER NOT NULL,
     reported_ms INTEGER,
     weight REAL,
     diff BLOB,
     PRIMARY KEY (cycle_id, worker_id));
   CREATE INDEX fl_assignments_worker ON fl_assignments(worker_id);`,
  // 4: encrypted serving (src/node/smpc). A share holder's shares survive a restart: one row per model
  // (its public plan and pairing, no share values) and the share bytes in <data>/smpc/blobs. The crypto
  // provider's record of the uploads it deals for (the holders and weight sizes of each), so a deal for
  // a model it never saw is refused, also after it restarted.
  `CREATE TABLE smpc_shares (
     model_id TEXT PRIMARY KEY,
     info TEXT NOT NULL,
     plan TEXT NOT NULL,
     mask_nonce TEXT NOT NULL,
     owner TEXT NOT NULL,
     bytes INTEGER NOT NULL,
     sha256 TEXT NOT NULL);
   CREATE INDEX smpc_shares_owner ON smpc_shares(owner);
   CREATE TABLE smpc_uploads (
     mask_nonce TEXT PRIMARY KEY,
     holder0 TEXT NOT NULL,
     holder1 TEXT NOT NULL,
     weights TEXT NOT NULL,
     created TEXT NOT NULL);
   CREATE INDEX smpc_uploads_holder0 ON smpc_uploads(holder0);`,
];

export class MetaDb {
  readonly file: string;
  private readonly db: Database;

  constructor(file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.file = file;
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
      this.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  all(sql: string, values?: Record<string, unknown> | unknown[]): Row[] {
    return this.db.all(sql, values as never) as Row[];
  }

  get(sql: string, values?: Record<string, unknown> | unknown[]): Row | undefined {
    return (this.db.get(sql, values as never) as Row | null) ?? undefined;
  }

  run(sql: string, values?: Record<string, unknown> | unknown[]): number {
    return this.db.run(sql, values as never).changes;
  }

  /** Runs `fn` in one IMMEDIATE transaction: all of it is committed or none of it. */
  transaction<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  getMeta(key: string): string | undefined {
    const row = this.get('SELECT value FROM meta WHERE key = ?', [key]);
    return row === undefined ? undefined : String(row.value);
  }

  setMeta(key: string, value: string): void {
    this.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', [key, value]);
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}
