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
  // 5: FL running sums per replica (src/node/fl/store.ts). Each replica keeps its own partial sum of an
  // open cycle; a row names the file (of its two) that holds exactly its committed reports. The record an
  // older node kept in meta (`fl.sum.<cycle>`) becomes the partial of replica '' (files `<cycle>.<slot>`).
  {
    embedded: `CREATE TABLE fl_partials (
       cycle_id INTEGER NOT NULL REFERENCES fl_cycles(id) ON DELETE CASCADE,
       replica TEXT NOT NULL,
       slot INTEGER NOT NULL,
       reports INTEGER NOT NULL,
       weight REAL NOT NULL,
       PRIMARY KEY (cycle_id, replica));
     INSERT INTO fl_partials (cycle_id, replica, slot, reports, weight)
       SELECT CAST(substr(key, 8) AS INTEGER), '', json_extract(value, '$.slot'), json_extract(value, '$.reports'), json_extract(value, '$.weight')
       FROM meta WHERE key LIKE 'fl.sum.%' AND CAST(substr(key, 8) AS INTEGER) IN (SELECT id FROM fl_cycles);
     DELETE FROM meta WHERE key LIKE 'fl.sum.%';`,
    postgres: `CREATE TABLE fl_partials (
       cycle_id BIGINT NOT NULL REFERENCES fl_cycles(id) ON DELETE CASCADE,
       replica TEXT NOT NULL,
       slot INTEGER NOT NULL,
       reports BIGINT NOT NULL,
       weight DOUBLE PRECISION NOT NULL,
       PRIMARY KEY (cycle_id, replica));
     INSERT INTO fl_partials (cycle_id, replica, slot, reports, weight)
       SELECT substr(key, 8)::bigint, '', (value::json->>'slot')::int, (value::json->>'reports')::bigint, (value::json->>'weight')::float8
       FROM meta WHERE key LIKE 'fl.sum.%' AND substr(key, 8)::bigint IN (SELECT id FROM fl_cycles);
     DELETE FROM meta WHERE key LIKE 'fl.sum.%';`,
  },
  // 6: uploads shared by replicas (--database with --blobs; src/node/store/upload-records.ts). An upload in
  // flight is a row (who owns it, its size, the bytes on disk with no gap before them, which replica writes
  // it now and its claim number, a fencing token: a replica whose claim is old can no longer record progress,
  // when it last moved) and a partial file in <blobs>/uploads, so a client that reconnects to
  // another replica resumes there. A blob pin is taken before a blob is placed in the shared blob dir and
  // keeps the sweeper away from it for a grace period (the row lock is what orders the two). The embedded
  // store has the tables too (one schema per version) but never writes them.
  {
    embedded: `CREATE TABLE uploads (
       id TEXT PRIMARY KEY,
       owner TEXT NOT NULL,
       size INTEGER NOT NULL,
       chunk_size INTEGER NOT NULL,
       received INTEGER NOT NULL,
       sha256 TEXT,
       holder TEXT NOT NULL,
       claim INTEGER NOT NULL,
       created_ms INTEGER NOT NULL,
       touched_ms INTEGER NOT NULL);
     CREATE TABLE blob_pins (sha256 TEXT PRIMARY KEY, pinned_ms INTEGER NOT NULL);`,
    postgres: `CREATE TABLE uploads (
       id TEXT PRIMARY KEY,
       owner TEXT NOT NULL,
       size BIGINT NOT NULL,
       chunk_size INTEGER NOT NULL,
       received BIGINT NOT NULL,
       sha256 TEXT,
       holder TEXT NOT NULL,
       claim INTEGER NOT NULL,
       created_ms BIGINT NOT NULL,
       touched_ms BIGINT NOT NULL);
     CREATE TABLE blob_pins (sha256 TEXT PRIMARY KEY, pinned_ms BIGINT NOT NULL);`,
  },
  // 7: training jobs as rows (src/node/training/rows.ts), so a job outlives the process that took it: its
  // spec and inputs (uploaded model and parameter bytes; a hosted parent by its record), the replica that
  // claimed it and until when (a lease it renews), its progress, result and the bounded history of its
  // events that watch-job replays on any replica.
  {
    embedded: `CREATE TABLE training_jobs (
       id TEXT PRIMARY KEY,
       owner TEXT NOT NULL,
       role TEXT NOT NULL,
       request TEXT NOT NULL,
       parent TEXT,
       label TEXT NOT NULL,
       output_model_id TEXT,
       model_bytes BLOB,
       params_bytes BLOB,
       state TEXT NOT NULL,
       created TEXT NOT NULL,
       created_ms INTEGER NOT NULL,
       started TEXT,
       finished TEXT,
       claimed_by TEXT,
       lease_expires INTEGER,
       attempts INTEGER NOT NULL DEFAULT 0,
       cancel_requested INTEGER NOT NULL DEFAULT 0,
       last_seq INTEGER NOT NULL DEFAULT 0,
       progress TEXT,
       result TEXT,
       error TEXT,
       result_params BLOB);
     CREATE INDEX training_jobs_state ON training_jobs(state, created_ms);
     CREATE INDEX training_jobs_claimed ON training_jobs(claimed_by);
     CREATE TABLE training_job_events (
       job_id TEXT NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
       seq INTEGER NOT NULL,
       event TEXT NOT NULL,
       PRIMARY KEY (job_id, seq));`,
    postgres: `CREATE TABLE training_jobs (
       id TEXT PRIMARY KEY,
       owner TEXT NOT NULL,
       role TEXT NOT NULL,
       request TEXT NOT NULL,
       parent TEXT,
       label TEXT NOT NULL,
       output_model_id TEXT,
       model_bytes BYTEA,
       params_bytes BYTEA,
       state TEXT NOT NULL,
       created TEXT NOT NULL,
       created_ms BIGINT NOT NULL,
       started TEXT,
       finished TEXT,
       claimed_by TEXT,
       lease_expires BIGINT,
       attempts INTEGER NOT NULL DEFAULT 0,
       cancel_requested INTEGER NOT NULL DEFAULT 0,
       last_seq INTEGER NOT NULL DEFAULT 0,
       progress TEXT,
       result TEXT,
       error TEXT,
       result_params BYTEA);
     CREATE INDEX training_jobs_state ON training_jobs(state, created_ms);
     CREATE INDEX training_jobs_claimed ON training_jobs(claimed_by);
     CREATE TABLE training_job_events (
       job_id TEXT NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
       seq INTEGER NOT NULL,
       event TEXT NOT NULL,
       PRIMARY KEY (job_id, seq));`,
  },
  // 8: sign-in failures counted across replicas (src/node/signin-shared.ts). Only PostgreSQL writes it (the
  // embedded node is one process and counts in memory); created in both so a version means the same tables.
  {
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
  // 9: an FL cycle's close in two short transactions (src/node/fl/cycles.ts closeCycle): the first marks
  // the cycle closing (when, and which replica closes it; reports are refused from then on), the averaging
  // runs outside any transaction, the second completes the cycle if that replica still holds the mark.
  {
    embedded: `ALTER TABLE fl_cycles ADD COLUMN closing_ms INTEGER;
     ALTER TABLE fl_cycles ADD COLUMN closer TEXT;`,
    postgres: `ALTER TABLE fl_cycles ADD COLUMN closing_ms BIGINT;
     ALTER TABLE fl_cycles ADD COLUMN closer TEXT;`,
  },
  // 10: a training job's bytes (uploaded model and parameters, an update job's result parameters) in a table of
  // their own, written at submit and at the end, read at claim, deleted with the job. In the job's row they
  // were rewritten by every lease renewal and progress write (SQLite rewrites a whole row, overflow pages
  // too). The old columns stay, empty: dropping a column needs a table rebuild on SQLite.
  {
    embedded: `CREATE TABLE training_job_blobs (
       job_id TEXT PRIMARY KEY REFERENCES training_jobs(id) ON DELETE CASCADE,
       model_bytes BLOB,
       params_bytes BLOB,
       result_params BLOB);
     INSERT INTO training_job_blobs (job_id, model_bytes, params_bytes, result_params)
       SELECT id, model_bytes, params_bytes, result_params FROM training_jobs;
     UPDATE training_jobs SET model_bytes = NULL, params_bytes = NULL, result_params = NULL;`,
    postgres: `CREATE TABLE training_job_blobs (
       job_id TEXT PRIMARY KEY REFERENCES training_jobs(id) ON DELETE CASCADE,
       model_bytes BYTEA,
       params_bytes BYTEA,
       result_params BYTEA);
     INSERT INTO training_job_blobs (job_id, model_bytes, params_bytes, result_params)
       SELECT id, model_bytes, params_bytes, result_params FROM training_jobs;
     UPDATE training_jobs SET model_bytes = NULL, params_bytes = NULL, result_params = NULL;`,
  },
];
