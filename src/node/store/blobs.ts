// Content-addressed model bytes: blobs/<sha[0:2]>/<sha>. A blob appears only by rename of a complete,
// fsynced file, so a reader never sees a half-written one; metadata rows are written after the blob and
// removed before it, so the only crash leftovers are unreferenced blobs, which `sweep` removes at start.
// A blob dir shared by replicas is swept by store/shared-sweep.ts instead, and blobs are pinned before they
// are placed (docs/replicas.md, "Sweeping the shared blob dir").

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';

const SHA256 = /^[0-9a-f]{64}$/;

/** Replicas: what keeps the shared sweep off a blob about to be referenced (store/shared-sweep.ts). */
export interface BlobPinner {
  pin(sha256: string): Promise<void>;
}

export class BlobStore {
  readonly dir: string;
  readonly tmpDir: string;
  private readonly pins: BlobPinner | undefined;

  /**
   * `tmpDir`: where blobs are written before their rename (`<root>/tmp` by default); cleared here.
   * `pins`: a shared blob dir's, taken before a blob is placed or reused.
   */
  constructor(root: string, opts: { tmpDir?: string; pins?: BlobPinner } = {}) {
    this.dir = path.join(root, 'blobs');
    this.tmpDir = opts.tmpDir ?? path.join(root, 'tmp');
    this.pins = opts.pins;
    fs.mkdirSync(this.dir, { recursive: true });
    fs.mkdirSync(this.tmpDir, { recursive: true });
    // Temp files are never referenced; anything here is from a process that died mid-write.
    for (const f of fs.readdirSync(this.tmpDir)) fs.rmSync(path.join(this.tmpDir, f), { force: true, recursive: true });
  }

  /**
   * A blob dir shared by replicas (pinned): a blob is then never removed here but left to the shared sweep,
   * which decides under the pin's row lock (store/shared-sweep.ts). Removing it on a model's delete could
   * unlink bytes another replica just pinned and reused for a row it is about to commit.
   */
  get shared(): boolean {
    return this.pins !== undefined;
  }

  pathOf(sha256: string): string {
    if (!SHA256.test(sha256)) throw new RangeError(`sha256 must be 64 lowercase hex digits, got ${JSON.stringify(sha256)}`);
    return path.join(this.dir, sha256.slice(0, 2), sha256);
  }

  has(sha256: string): boolean {
    return fs.existsSync(this.pathOf(sha256));
  }

  size(sha256: string): number {
    return fs.statSync(this.pathOf(sha256)).size;
  }

  /**
   * Moves a complete file (already sha256-verified by its producer) into the store. The file must be on
   * the same file system (the node's uploads and tmp dirs are under its data dir).
   */
  async adopt(file: string, sha256: string): Promise<string> {
    const dest = this.pathOf(sha256);
    // Before looking: a shared sweep deciding on this blob finishes first (and the file is then gone or kept).
    await this.pins?.pin(sha256);
    if (fs.existsSync(dest)) { await fsp.rm(file, { force: true }); return dest; }
    await fsync(file);
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    try {
      await fsp.rename(file, dest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      // A blob dir on another file system (shared storage): copy next to the blob, then rename there.
      const near = `${dest}.${randomBytes(6).toString('hex')}.part`;
      try {
        await fsp.copyFile(file, near);
        await fsync(near);
        await fsp.rename(near, dest);
      } finally {
        await fsp.rm(near, { force: true });
      }
      await fsp.rm(file, { force: true });
    }
    await fsyncDir(path.dirname(dest));
    return dest;
  }

  /** Writes bytes from a stream into the store, hashing on the way; returns their sha256 and size. */
  async write(source: NodeJS.ReadableStream | AsyncIterable<Uint8Array>): Promise<{ sha256: string; size: number; path: string }> {
    const tmp = this.tempPath();
    const hash = createHash('sha256');
    let size = 0;
    try {
      await pipeline(source as AsyncIterable<Uint8Array>, async function* (chunks: AsyncIterable<Uint8Array>) {
        for await (const c of chunks) { hash.update(c); size += c.length; yield c; }
      }, fs.createWriteStream(tmp));
      const sha256 = hash.digest('hex');
      return { sha256, size, path: await this.adopt(tmp, sha256) };
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  tempPath(): string {
    return path.join(this.tmpDir, `${Date.now()}-${randomBytes(6).toString('hex')}.part`);
  }

  async remove(sha256: string): Promise<void> {
    await fsp.rm(this.pathOf(sha256), { force: true });
  }

  /** Removes every blob whose sha256 is not in `referenced`; returns how many went. */
  sweep(referenced: ReadonlySet<string>): number {
    let removed = 0;
    for (const sub of fs.readdirSync(this.dir)) {
      const subDir = path.join(this.dir, sub);
      if (!fs.statSync(subDir).isDirectory()) continue;
      for (const f of fs.readdirSync(subDir)) {
        if (!referenced.has(f)) { fs.rmSync(path.join(subDir, f), { force: true }); removed++; }
      }
    }
    return removed;
  }
}

async function fsync(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try { await fh.sync(); } finally { await fh.close(); }
}

async function fsyncDir(dir: string): Promise<void> {
  // Directory fsync makes the rename durable; not every platform allows opening a directory.
  try {
    const fh = await fsp.open(dir, 'r');
    try { await fh.sync(); } finally { await fh.close(); }
  } catch { /* Windows: renames are durable enough once the file itself is synced */ }
}
