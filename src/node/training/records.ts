// How each trained model version came to be: parent model, dataset, hyper-parameters, metrics and the
// differential-privacy settings, in the node's metadata database next to the models table (one row per
// model version; the table comes with the node's migrations, store/db.ts).

import type { TrainingRecord } from '../../core/protocol/training-messages';
import type { Store } from '../store/sql';

export class TrainingRecords {
  private readonly db: Store;

  constructor(db: Store) {
    this.db = db;
  }

  async put(record: TrainingRecord, version: number, sha256: string): Promise<void> {
    await this.db.run(`INSERT INTO model_training (model_id, version, model_sha256, record) VALUES (?, ?, ?, ?)
      ON CONFLICT(model_id, version) DO UPDATE SET model_sha256 = excluded.model_sha256, record = excluded.record`,
    [record.model_id, version, sha256, JSON.stringify(record)]);
  }

  /** The record of a model version, if it is still the model that was trained (same bytes). */
  async get(modelId: string, version: number, sha256: string): Promise<TrainingRecord | undefined> {
    const r = await this.db.get('SELECT model_sha256, record FROM model_training WHERE model_id = ? AND version = ?', [modelId, version]);
    if (r === undefined || String(r.model_sha256) !== sha256) return undefined;
    return JSON.parse(String(r.record)) as TrainingRecord;
  }
}
