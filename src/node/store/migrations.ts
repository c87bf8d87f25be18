// The node's schema, one entry per version, in both engines' dialects. Both run the same list on start
// (SQLite's user_version, PostgreSQL's grid_schema table), so a version number means the same tables in
// either. Statements elsewhere are portable (store/sql.ts); only the schema is not: PostgreSQL needs
// BIGINT for sizes and millisecond times, BYTEA for bytes, identity columns for AUTOINCREMENT, and has no
// json_extract. A PostgreSQL database is always new (there is no pre-version data to carry over), so its
// migration 1 is already the versioned layout and its migration 2 is empty.
//
// Adding a migration: append one entry with both texts; never edit a released one.

export interface Migration {
  /** SQLite (node-sqlite3-wasm), the embedded store. */
  embedded: string;
  /** PostgreSQL 13+. */
  postgres: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    embedded: `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    postgres: `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
       id TEXT NOT NULL,
       version INTEGER NOT NULL,
       name TEXT NOT NULL,
       signature TEXT NOT NULL,
       size BIGINT NOT NULL,
       sha256 TEXT NOT NULL,
       allow_download INTEGER NOT NULL,
       allow_remote_inference INTEGER NOT NULL,
       owner TEXT NOT NULL,
       created TEXT NOT NULL,
       parent TEXT,
       job_id TEXT,
       PRIMARY KEY (id, version));
     CREATE INDEX models_sha256 ON models(sha256);
     CREATE TABLE model_names (id TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
     CREATE TABLE model_training (
       model_id TEXT NOT NULL,
       version INTEGER NOT NULL,
       model_sha256 TEXT NOT NULL,
       record TEXT NOT NULL,
       PRIMARY KEY (model_id, version));
     CREATE TABLE datasets (
       id TEXT PRIMARY KEY,
       name TEXT NOT NULL,
       description TEXT NOT NULL,
       tags TEXT NOT NULL,
       format TEXT NOT NULL,
       path TEXT NOT NULL,
       size BIGINT NOT NULL,
       schema TEXT NOT NULL,
       created TEXT NOT NULL);`,
  },
  // 2: model versions. A model id (its name) has versions 1..N; every existing row becomes version 1 of
  // its id, so every id a user or script knew keeps resolving. Trained rows keep their lineage from their
  // training record (the parent was version 1 of its id then). Training records move to (id, version).
  {
    embedded: `CREATE TABLE models_v (
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
    // A PostgreSQL database starts with versioned models (its migration 1): nothing to reshape.
    postgres: '',
  },
  // 3: model-centric federated learning (src/node/fl). Ids are integers because PyGrid clients read them
  // as JSON ints (SwiftSyft requires it). A report's diff stays in its assignment row until its cycle is
  // averaged, so a restart rebuilds the cycle's running sum; checkpoints' bytes live in <data>/fl/blobs.
  {
    embedded: `CREATE TABLE fl_processes (
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
    postgres: `CREATE TABLE fl_processes (
       id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
       id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
       process_id BIGINT NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
       kind TEXT NOT NULL,
       name TEXT NOT NULL,
       variant TEXT NOT NULL,
       bytes BYTEA NOT NULL);
     CREATE INDEX fl_assets_process ON fl_assets(process_id, kind, name);
     CREATE TABLE fl_checkpoints (
       process_id BIGINT NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
       number INTEGER NOT NULL,
       alias TEXT NOT NULL,
       sha256 TEXT NOT NULL,
       cycle INTEGER,
       reports INTEGER NOT NULL,
       created TEXT NOT NULL,
       model_version TEXT,
       PRIMARY KEY (process_id, number));
     CREATE TABLE fl_cycles (
       id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
       process_id BIGINT NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
       sequence INTEGER NOT NULL,
       start_ms BIGINT NOT NULL,
       end_ms BIGINT,
       completed_ms BIGINT,
       UNIQUE (process_id, sequence));
     CREATE TABLE fl_workers (
       id TEXT PRIMARY KEY,
       process_id BIGINT NOT NULL REFERENCES fl_processes(id) ON DELETE CASCADE,
       address TEXT NOT NULL,
       created_ms BIGINT NOT NULL);
     CREATE INDEX fl_workers_process ON fl_workers(process_id);
     CREATE TABLE fl_assignments (
       cycle_id BIGINT NOT NULL REFERENCES fl_cycles(id) ON DELETE CASCADE,
       worker_id TEXT NOT NULL REFERENCES fl_workers(id) ON DELETE CASCADE,
       request_key TEXT NOT NULL UNIQUE,
       assigned_ms BIGINT NOT NULL,
       reported_ms BIGINT,
       weight DOUBLE PRECISION,
       diff BYTEA,
       PRIMARY KEY (cycle_id, worker_id));
     CREATE INDEX fl_assignments_worker ON fl_assignments(worker_id);`,
  },
  // 4: encrypted serving (src/node/smpc). A share holder's shares survive a restart: one row per model
  // (its public plan and pairing, no share values) and the share bytes in <data>/smpc/blobs. The crypto
  // provider's record of the uploads it deals for (the holders and weight sizes of each), so a deal for
  // a model it never saw is refused, also after it restarted.
  {
    embedded: `CREATE TABLE smpc_shares (
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
    postgres: `CREATE TABLE smpc_shares (
       model_id TEXT PRIMARY KEY,
       info TEXT NOT NULL,
       plan TEXT NOT NULL,
       mask_nonce TEXT NOT NULL,
       owner TEXT NOT NULL,
       bytes BIGINT NOT NULL,
       sha256 TEXT NOT NULL);
     CREATE INDEX smpc_shares_owner ON smpc_shares(owner);
     CREATE TABLE smpc_uploads (
       mask_nonce TEXT PRIMARY KEY,
       holder0 TEXT NOT NULL,
       holder1 TEXT NOT NULL,
       weights TEXT NOT NULL,
       created TEXT NOT NULL);
     CREATE INDEX smpc_uploads_holder0 ON smpc_uploads(holder0);`,
  },
  {
    // Sign-in failures counted across replicas (src/node/signin-shared.ts). Only PostgreSQL writes it (the
    // embedded node is one process and counts in memory); created in both so a version means the same tables.
    embedded: `CREATE TABLE signin_failures (
       key TEXT PRIMARY KEY,
       failures INTEGER NOT NULL,
       locked_until_ms INTEGER NOT NULL,
       last_ms INTEGER NOT NULL);`,
    postgres: `CREATE TABLE signin_failures (
       key TEXT PRIMARY KEY,
       failures INTEGER NOT NULL,
       locked_until_ms BIGINT NOT NULL,
       last_ms BIGINT NOT NULL);`,
  },
];
