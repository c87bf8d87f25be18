// How each trained model version came to be: parent model, dataset, hyper-parameters, metrics and the
// differential-privacy settings, in the node's metadata database next to the models table.

import type { TrainingRecord } from '../../core/protocol/training-messages';
import type { MetaDb } from '../store/db';

export class TrainingRecords {
  private readonly db: MetaDb;

  constructor(db: MetaDb) {
    this.db = db;
    // Its own table, created on first use: the node's migrations stay the node's.
    this.db.run(`CREATE TABLE IF NOT EXISTS model_training (
      model_id TEXT PRIMARY KEY,
      model_sha256 TEXT NOT NULL,
      record TEXT NOT NULL)`);
  }

  put(record: TrainingRecord, sha256: string): void {
    this.db.run(`INSERT INTO model_training (model_id, model_sha256, record) VALUES (?, ?, ?)
      ON CONFLICT(model_id) DO UPDATE SET model_sha256 = excluded.model_sha256, record = excluded.record`,
    [record.model_id, sha256, JSON.stringify(record)]);
  }

  /** The record of a model, if it is still the model that was trained (same bytes). */
  get(modelId: string, sha256: string): TrainingRecord | undefined {
    const r = this.db.get('SELECT model_sha256, record FROM model_training WHERE model_id = ?', [modelId]);
    if (r === undefined || String(r.model_sha256) !== sha256) return undefined;
    return JSON.parse(String(r.record)) as TrainingRecord;
  }
}
