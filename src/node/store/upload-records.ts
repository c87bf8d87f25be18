// The upload ledger of replicas (rpc/upload-ledger.ts) in the shared database: one `uploads` row per
// upload in flight (migration 6). Every write names the claim it was made under, so a replica that lost
// an upload to another (its client reconnected elsewhere) learns it at its next write instead of
// recording progress over the new holder's.

import type { UploadLedger, UploadRecord } from '../rpc/upload-ledger';
import type { Row, Store } from './sql';

const COLUMNS = 'id, owner, size, chunk_size, received, claim, touched_ms';

function toRecord(r: Row): UploadRecord {
  return {
    id: String(r.id), owner: String(r.owner), size: Number(r.size), chunkSize: Number(r.chunk_size),
    received: Number(r.received), claim: Number(r.claim), touchedMs: Number(r.touched_ms),
  };
}

export class UploadRecords implements UploadLedger {
  /** `holder`: this replica, for the row (which replica writes an upload now: for people reading the table). */
  constructor(private readonly db: Store, private readonly holder: string) {}

  async create(u: { id: string; owner: string; size: number; chunkSize: number }): Promise<UploadRecord> {
    const now = Date.now();
    const row = await this.db.get(`INSERT INTO uploads (id, owner, size, chunk_size, received, sha256, holder, claim, created_ms, touched_ms)
      VALUES (?, ?, ?, ?, 0, NULL, ?, 1, ?, ?) RETURNING ${COLUMNS}`, [u.id, u.owner, u.size, u.chunkSize, this.holder, now, now]);
    return toRecord(row!);
  }

  async claim(id: string, owner: string, size: number, chunkSize: number): Promise<UploadRecord | undefined> {
    const row = await this.db.get(`UPDATE uploads SET holder = ?, claim = claim + 1, touched_ms = ?
      WHERE id = ? AND owner = ? AND size = ? AND chunk_size = ? RETURNING ${COLUMNS}`, [this.holder, Date.now(), id, owner, size, chunkSize]);
    return row === undefined ? undefined : toRecord(row);
  }

  async get(id: string): Promise<UploadRecord | undefined> {
    const row = await this.db.get(`SELECT ${COLUMNS} FROM uploads WHERE id = ?`, [id]);
    return row === undefined ? undefined : toRecord(row);
  }

  async progress(id: string, claim: number, received: number, sha256?: string): Promise<boolean> {
    // Never backwards: two writes of one holder may be recorded out of order if a statement is retried.
    const changed = await this.db.run(`UPDATE uploads SET received = CASE WHEN received > ? THEN received ELSE ? END, touched_ms = ?, sha256 = COALESCE(?, sha256)
      WHERE id = ? AND claim = ?`, [received, received, Date.now(), sha256 ?? null, id, claim]);
    return changed > 0;
  }

  async remove(id: string): Promise<void> {
    await this.db.run('DELETE FROM uploads WHERE id = ?', [id]);
  }

  /** Every upload's id and when it last moved (for the sweeper). */
  async list(): Promise<{ id: string; touchedMs: number }[]> {
    return (await this.db.all('SELECT id, touched_ms FROM uploads')).map((r) => ({ id: String(r.id), touchedMs: Number(r.touched_ms) }));
  }

  /** Removes the record if it has not moved since `before`; true when it did (the caller then removes the file). */
  async expire(id: string, before: number): Promise<boolean> {
    return await this.db.run('DELETE FROM uploads WHERE id = ? AND touched_ms < ?', [id, before]) > 0;
  }
}
