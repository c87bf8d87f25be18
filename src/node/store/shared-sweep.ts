// Sweeping a blob dir that several replicas share (docs/replicas.md, "Sweeping the shared blob dir"). The
// embedded node sweeps its own dirs at start, of everything no row names; a replica cannot: another one may
// have just written a blob whose row it has not committed yet, or be in the middle of an upload. So here a
// partial upload goes only when its record has not moved for `uploadExpiryMs` (or it has no record and its
// file has not changed for as long), and a blob only when no row names it, its file is older than
// `blobGraceMs`, and no replica pinned it within `blobGraceMs`.
//
// The race with a replica about to commit a row for a blob is closed by a row lock, not by timing: the
// writer pins the blob (an upsert of its `blob_pins` row, committed) before it places or reuses the file,
// and the sweeper decides and unlinks while it holds that same row locked in a transaction. Either the
// pin came first (the sweeper sees it and keeps the blob) or the sweeper's transaction did (the pin waits
// for it, and the writer then finds no file and places its own).

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Logger } from '../../core/logger';
import type { Store } from './sql';
import type { UploadRecords } from './upload-records';

const SHA256 = /^[0-9a-f]{64}$/;
const PART = /^(.+)\.part$/;

/** Pins of blobs about to be referenced, in the shared database. */
export class BlobPins {
  constructor(private readonly db: Store) {}

  /** Keeps the sweep off `sha256` for its grace period from now; waits for a sweep deciding on it. */
  async pin(sha256: string): Promise<void> {
    await this.db.run('INSERT INTO blob_pins (sha256, pinned_ms) VALUES (?, ?) ON CONFLICT (sha256) DO UPDATE SET pinned_ms = excluded.pinned_ms', [sha256, Date.now()]);
  }
}

export interface SharedBlobDir {
  /** Content-addressed blobs, `<dir>/<sha[0:2]>/<sha>` (store/blobs.ts). */
  dir: string;
  /** The rows that keep a blob: a SELECT of one column `x` taking the sha256 as its one parameter. */
  referencedSql: string;
}

export interface SharedSweepOptions {
  db: Store;
  uploads: UploadRecords;
  uploadsDir: string;
  blobDirs: readonly SharedBlobDir[];
  uploadExpiryMs: number;
  blobGraceMs: number;
  log: Logger;
}

export interface SweepResult {
  /** Partial upload files removed (expired records, or files without one). */
  uploads: number;
  /** Records removed whose file was already gone. */
  records: number;
  blobs: number;
}

export class SharedSweep {
  private readonly o: SharedSweepOptions;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepResult> | undefined;
  private closed = false;

  constructor(o: SharedSweepOptions) {
    this.o = o;
  }

  /** Sweeps now and every `everyMs` (unref'd); a failed sweep is logged and tried again next time. */
  start(everyMs: number): void {
    const run = () => { if (this.running === undefined) void this.sweep().catch((err: unknown) => this.o.log.warn({ err: (err as Error).message }, 'sweeping the shared blob dir failed; trying again later')); };
    run();
    this.timer = setInterval(run, everyMs);
    this.timer.unref();
  }

  /** One sweep that starts after this call (after the one under way, if any). */
  async sweep(): Promise<SweepResult> {
    while (this.running !== undefined) await this.running.catch(() => {});
    const run = this.sweepOnce().finally(() => { if (this.running === run) this.running = undefined; });
    this.running = run;
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.running?.catch(() => {});
  }

  private async sweepOnce(): Promise<SweepResult> {
    const result: SweepResult = { uploads: 0, records: 0, blobs: 0 };
    await this.sweepUploads(result);
    for (const d of this.o.blobDirs) {
      if (this.closed) break;
      await this.sweepBlobs(d, result);
    }
    // Pins older than the grace period protect nothing any more.
    await this.o.db.run('DELETE FROM blob_pins WHERE pinned_ms < ?', [Date.now() - this.o.blobGraceMs]);
    if (result.uploads + result.records + result.blobs > 0) this.o.log.info({ ...result }, 'swept the shared blob dir');
    return result;
  }

  private async sweepUploads(result: SweepResult): Promise<void> {
    const { uploads, uploadsDir, uploadExpiryMs } = this.o;
    const before = Date.now() - uploadExpiryMs;
    const records = new Map((await uploads.list()).map((r) => [r.id, r.touchedMs]));
    const files = new Set<string>();
    for (const name of await readdirOrEmpty(uploadsDir)) {
      if (this.closed) return;
      const id = PART.exec(name)?.[1];
      const file = path.join(uploadsDir, name);
      if (id !== undefined) files.add(id);
      const touched = id === undefined ? undefined : records.get(id);
      if (touched !== undefined) {
        // The record decides, atomically: a replica resuming it now moves its touched time first, or finds it gone.
        if (touched < before && await uploads.expire(id!, before)) {
          await fsp.rm(file, { force: true });
          result.uploads++;
        }
        continue;
      }
      // No record: a new upload's record is written before its file, so this one's is gone (taken, or
      // expired by a sweep that did not get to the file), or it is not an upload (a crashed write's probe).
      const st = await statOrUndefined(file);
      if (st !== undefined && st.isFile() && st.mtimeMs < before) {
        // Read again: a record may have appeared since the listing (not for a file this old, but cheaply sure).
        if (id !== undefined && await uploads.get(id) !== undefined) continue;
        await fsp.rm(file, { force: true });
        result.uploads++;
      }
    }
    // Records whose file is gone (a replica died between taking an upload and removing its record).
    for (const [id, touched] of records) {
      if (!files.has(id) && touched < before && await uploads.expire(id, before)) result.records++;
    }
  }

  private async sweepBlobs(d: SharedBlobDir, result: SweepResult): Promise<void> {
    const { db, blobGraceMs } = this.o;
    for (const sub of await readdirOrEmpty(d.dir)) {
      const subDir = path.join(d.dir, sub);
      for (const name of await readdirOrEmpty(subDir)) {
        if (this.closed) return;
        const file = path.join(subDir, name);
        const st = await statOrUndefined(file);
        const before = Date.now() - blobGraceMs;
        if (st === undefined || !st.isFile() || st.mtimeMs >= before) continue;
        if (!SHA256.test(name)) {
          // A copy to shared storage that a crash interrupted (store/blobs.ts adopt): never a blob.
          await fsp.rm(file, { force: true });
          result.blobs++;
          continue;
        }
        const removed = await db.transaction(async () => {
          // Locks the blob's pin row (made if missing): a replica pinning it now waits for this decision.
          const pin = await db.get(`INSERT INTO blob_pins (sha256, pinned_ms) VALUES (?, 0)
            ON CONFLICT (sha256) DO UPDATE SET pinned_ms = blob_pins.pinned_ms RETURNING pinned_ms`, [name]);
          if (Number(pin!.pinned_ms) >= before) return false;
          if (await db.get(d.referencedSql, [name]) !== undefined) return false;
          // Checked again under the lock: a writer that reused the file before pinning is not possible
          // (it pins first), but the file may have been replaced since the stat above.
          const again = await statOrUndefined(file);
          if (again === undefined || again.mtimeMs >= before) return false;
          await fsp.rm(file, { force: true });
          await db.run('DELETE FROM blob_pins WHERE sha256 = ?', [name]);
          return true;
        });
        if (removed) result.blobs++;
      }
    }
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw err;
  }
}

async function statOrUndefined(file: string): Promise<fs.Stats | undefined> {
  try {
    return await fsp.stat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
