// Where a share holder keeps its shares, so they survive a restart: one metadata row per encrypted model
// (its public plan and pairing; no share values) and the share bytes as a blob in <data>/smpc/blobs (its
// own blob dir: the model store sweeps <data>/blobs of anything its rows do not name). The blob holds
// this holder's share of the parameters, then its shares of the weights' masks (masks.ts), int64 LE.
// Rows are written after their blob and removed before it, so a crash leaves at most an unreferenced
// blob, swept at the next start.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { paramCount, ringOf, weightIndices, type SmpcPlan } from '../../compute/smpc';
import type { Logger } from '../../core/logger';
import { SmpcModelInfo, SmpcPlanSchema } from '../../core/protocol/smpc-messages';
import { BlobStore } from '../store/blobs';
import type { Store } from '../store/sql';

export interface StoredShare {
  info: SmpcModelInfo;
  plan: SmpcPlan;
  maskNonce: string;
  params: BigInt64Array;
  /** This holder's shares of the weights' masks, by parameter index. */
  masks: Map<number, BigInt64Array>;
  /** Bytes of share held (parameters and masks): what the owner is charged. */
  bytes: number;
}

export class ShareStore {
  private readonly blobs: BlobStore;

  private constructor(private readonly db: Store, dataDir: string, private readonly log: Logger) {
    this.blobs = new BlobStore(path.join(dataDir, 'smpc'));
  }

  /** The store, its blobs no row names swept (embedded only: replicas' rows name blobs in their own data dirs). */
  static async open(db: Store, dataDir: string, log: Logger): Promise<ShareStore> {
    const store = new ShareStore(db, dataDir, log);
    if (db.kind === 'embedded') {
      const swept = store.blobs.sweep(new Set((await db.all('SELECT sha256 FROM smpc_shares')).map((r) => String(r.sha256))));
      if (swept > 0) log.info({ swept }, 'removed share blobs no encrypted model refers to (left by a crash)');
    }
    return store;
  }

  /** Every stored share; a row whose blob is missing or altered is dropped (logged), never served. */
  async load(): Promise<StoredShare[]> {
    const out: StoredShare[] = [];
    for (const row of await this.db.all('SELECT model_id, info, plan, mask_nonce, sha256 FROM smpc_shares ORDER BY model_id')) {
      const id = String(row.model_id);
      try {
        const info = SmpcModelInfo.parse(JSON.parse(String(row.info)));
        const plan = SmpcPlanSchema.parse(JSON.parse(String(row.plan))) as SmpcPlan;
        const bytes = new Uint8Array(fs.readFileSync(this.blobs.pathOf(String(row.sha256))));
        if (createHash('sha256').update(bytes).digest('hex') !== String(row.sha256)) throw new Error('its share blob does not match its sha256');
        const n = paramCount(plan);
        const weights = weightIndices(plan);
        const total = n + weights.reduce((t, i) => t + plan.params[i]!.size, 0);
        const all = ringOf(bytes, total);
        const masks = new Map<number, BigInt64Array>();
        let off = n;
        for (const i of weights) { masks.set(i, all.slice(off, off + plan.params[i]!.size)); off += plan.params[i]!.size; }
        out.push({ info, plan, maskNonce: String(row.mask_nonce), params: all.slice(0, n), masks, bytes: bytes.length });
      } catch (err) {
        this.log.error({ model_id: id, err: (err as Error).message }, 'a stored encrypted model share cannot be read; it is dropped (serve the model again)');
        // Another replica's share (its blob is in that replica's data dir) is only skipped here.
        if (this.db.kind === 'embedded') await this.db.run('DELETE FROM smpc_shares WHERE model_id = ?', [id]);
      }
    }
    return out;
  }

  /** Writes a share durably (blob, then row). */
  async put(s: StoredShare): Promise<void> {
    const parts = [s.params, ...weightIndices(s.plan).map((i) => s.masks.get(i)!)].map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    const blob = await this.blobs.write((async function* () { yield* parts; })());
    await this.db.run('INSERT INTO smpc_shares (model_id, info, plan, mask_nonce, owner, bytes, sha256) VALUES (?, ?, ?, ?, ?, ?, ?)', [
      s.info.model_id, JSON.stringify(s.info), JSON.stringify(s.plan), s.maskNonce, s.info.owner, blob.size, blob.sha256,
    ]);
  }

  /** Removes a share (row, then blob). */
  async delete(modelId: string): Promise<void> {
    const row = await this.db.get('SELECT sha256 FROM smpc_shares WHERE model_id = ?', [modelId]);
    if (row === undefined) return;
    await this.db.run('DELETE FROM smpc_shares WHERE model_id = ?', [modelId]);
    const sha = String(row.sha256);
    if (await this.db.get('SELECT 1 AS x FROM smpc_shares WHERE sha256 = ?', [sha]) === undefined) await this.blobs.remove(sha);
  }
}
