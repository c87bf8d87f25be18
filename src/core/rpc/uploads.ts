// The node's side of chunked uploads: chunks are written in order to a temp file under `dir`,
// hashed as they arrive, acknowledged every `ackBytes`, and kept for a while after a dropped
// connection so the client can resume from the last acknowledged byte. A committed upload is handed
// to exactly one handler (takeUpload), which then owns the file.

import { createHash, randomBytes, type Hash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { gridError } from '../errors';

export interface CommittedUpload {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

interface Upload {
  readonly id: string;
  readonly path: string;
  readonly size: number;
  readonly chunkSize: number;
  /** Bytes on disk from offset 0 with no gap: what a resume starts from. */
  written: number;
  /** Bytes accepted for writing (written + in flight). */
  accepted: number;
  /** Bytes fed to the hash, in order; re-sent bytes below this are not hashed twice. */
  hashed: number;
  hash: Hash;
  file: Promise<FileHandle>;
  /** Writes in flight, in offset order; the head's completion advances `written`. */
  inflight: { end: number; done: boolean; promise: Promise<void> }[];
  failure: Error | undefined;
  committed: CommittedUpload | undefined;
  closed: boolean;
  touched: number;
}

export interface UploadStoreOptions {
  dir: string;
  /** An upload idle this long (uncommitted or unclaimed) is deleted. */
  ttlMs?: number;
  /** The largest upload accepted, in bytes. */
  maxBytes?: number;
  /** Uploads at once; a bound on open files and disk use. */
  maxUploads?: number;
}

export class UploadStore {
  readonly dir: string;
  readonly ttlMs: number;
  readonly maxBytes: number;
  readonly maxUploads: number;
  private readonly uploads = new Map<string, Upload>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(options: UploadStoreOptions) {
    this.dir = options.dir;
    this.ttlMs = options.ttlMs ?? 10 * 60_000;
    this.maxBytes = options.maxBytes ?? 64 * 1024 ** 3;
    this.maxUploads = options.maxUploads ?? 64;
    mkdirSync(this.dir, { recursive: true });
    // Uploads do not survive a node restart (their hash state is in memory): start clean.
    for (const name of readdirSync(this.dir)) rmSync(join(this.dir, name), { force: true, recursive: true });
    this.sweeper = setInterval(() => void this.sweep(), Math.max(1000, Math.min(this.ttlMs, 60_000)));
    this.sweeper.unref();
  }

  get size(): number {
    return this.uploads.size;
  }

  /** Starts a new upload or resumes one; returns the bytes already held. */
  begin(transferId: string | undefined, size: number, chunkSize: number): { transfer_id: string; received: number } {
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    if (transferId !== undefined) {
      const up = this.uploads.get(transferId);
      if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired; start it again`);
      if (up.size !== size || up.chunkSize !== chunkSize) {
        throw gridError('INVALID_MESSAGE', `upload ${transferId} was begun with size ${up.size} and chunk size ${up.chunkSize}, not ${size} / ${chunkSize}`);
      }
      if (up.failure) throw up.failure;
      up.touched = Date.now();
      // Resume from what is on disk without a gap; writes still in flight may advance `written` further,
      // and the client's re-sent chunks for those bytes are simply written again.
      up.accepted = up.written;
      return { transfer_id: up.id, received: up.written };
    }
    if (size > this.maxBytes) throw gridError('PAYLOAD_TOO_LARGE', `upload of ${size} bytes exceeds this node's limit of ${this.maxBytes} bytes`);
    if (this.uploads.size >= this.maxUploads) throw gridError('PAYLOAD_TOO_LARGE', `the node already holds ${this.uploads.size} unfinished uploads; finish or wait for them`);
    const id = randomBytes(12).toString('base64url');
    const path = join(this.dir, `${id}.part`);
    const up: Upload = {
      id, path, size, chunkSize,
      written: 0, accepted: 0, hashed: 0, hash: createHash('sha256'),
      file: open(path, 'w'), inflight: [],
      failure: undefined, committed: undefined, closed: false, touched: Date.now(),
    };
    // A failed open is reported by the first write or the commit, not as an unhandled rejection.
    up.file.catch((err: Error) => { up.failure = gridError('INTERNAL', `upload ${id}: cannot create ${path}: ${err.message}`); });
    this.uploads.set(id, up);
    return { transfer_id: id, received: 0 };
  }

  /**
   * Takes one chunk: hashes it (chunks arrive in order), starts its positional write without waiting
   * for earlier ones, and calls `onWritten(written)` when the contiguous bytes on disk cross an ack
   * boundary or complete the upload. Chunks re-sent after a resume are written again but not re-hashed.
   */
  chunk(transferId: string, index: number, body: Buffer, onWritten: (received: number) => void, ackBytes: number): void {
    const up = this.uploads.get(transferId);
    if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `chunk ${index} for unknown upload ${transferId}`);
    if (up.committed) return;
    if (up.failure) throw up.failure;
    const offset = index * up.chunkSize;
    if (offset + body.length <= up.accepted) return; // already have it
    if (offset !== up.accepted) throw gridError('MALFORMED_FRAME', `upload ${transferId}: chunk ${index} starts at byte ${offset}, expected ${up.accepted}`);
    if (offset + body.length > up.size) throw gridError('PAYLOAD_TOO_LARGE', `upload ${transferId}: chunk ${index} goes past the announced size ${up.size}`);
    if (body.length !== up.chunkSize && offset + body.length !== up.size) throw gridError('MALFORMED_FRAME', `upload ${transferId}: chunk ${index} has ${body.length} bytes, expected ${up.chunkSize}`);
    const end = offset + body.length;
    up.accepted = end;
    up.touched = Date.now();
    if (offset === up.hashed) {
      up.hash.update(body);
      up.hashed = end;
    }
    const entry = { end, done: false, promise: Promise.resolve() };
    entry.promise = up.file.then(async (fh) => {
      let done = 0;
      while (done < body.length) done += (await fh.write(body, done, body.length - done, offset + done)).bytesWritten;
    }).then(() => {
      entry.done = true;
      const before = up.written;
      while (up.inflight.length > 0 && up.inflight[0]!.done) up.written = Math.max(up.written, up.inflight.shift()!.end);
      if (end <= before) {
        // Re-sent after a resume, and already on disk from the old connection's writes: acknowledge what
        // is there, or the client's window would wait for acks that went to the dead connection.
        onWritten(up.written);
      } else if (up.written !== before && (up.written === up.size || Math.floor(up.written / ackBytes) !== Math.floor(before / ackBytes))) {
        onWritten(up.written);
      }
    }, (err: Error) => {
      up.failure ??= gridError('INTERNAL', `upload ${transferId}: writing to ${this.dir} failed: ${err.message}`);
    });
    up.inflight.push(entry);
  }

  /** Finishes an upload: waits for its writes, checks size and checksum, fsyncs. */
  async commit(transferId: string, sha256: string): Promise<CommittedUpload> {
    const up = this.uploads.get(transferId);
    if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired`);
    if (up.committed) return up.committed;
    await Promise.all(up.inflight.map((e) => e.promise));
    if (up.failure) throw up.failure;
    if (up.written !== up.size || up.hashed !== up.size) throw gridError('INVALID_MESSAGE', `upload ${transferId} holds ${up.written} of ${up.size} bytes; send the rest before committing`);
    const actual = up.hash.digest('hex');
    if (actual !== sha256) {
      await this.discard(up);
      throw gridError('CHECKSUM_MISMATCH', `upload ${transferId}: sha256 of the received bytes is ${actual}, the client announced ${sha256}; upload it again`);
    }
    const fh = await up.file;
    await fh.sync();
    await fh.close();
    up.closed = true;
    up.committed = { path: up.path, size: up.size, sha256: actual };
    up.touched = Date.now();
    return up.committed;
  }

  /** Hands a committed upload to its consumer, who now owns (and must move or delete) the file. */
  take(transferId: string): CommittedUpload {
    const up = this.uploads.get(transferId);
    if (up === undefined || up.committed === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown, unfinished or already used`);
    this.uploads.delete(transferId);
    return up.committed;
  }

  private async discard(up: Upload): Promise<void> {
    this.uploads.delete(up.id);
    await Promise.all(up.inflight.map((e) => e.promise));
    if (!up.closed) {
      up.closed = true;
      await up.file.then((fh) => fh.close(), () => {}).catch(() => {});
    }
    await rm(up.path, { force: true });
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const up of [...this.uploads.values()]) if (now - up.touched > this.ttlMs) await this.discard(up);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    await Promise.all([...this.uploads.values()].map((up) => this.discard(up)));
  }
}
