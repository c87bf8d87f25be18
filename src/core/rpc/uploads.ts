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
  /** Bytes written to the file, in order. */
  written: number;
  /** Bytes accepted for writing (written + queued). */
  accepted: number;
  hash: Hash;
  file: FileHandle | undefined;
  chain: Promise<void>;
  failure: Error | undefined;
  committed: CommittedUpload | undefined;
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
      // Chunks queued but not yet written are kept: the client resumes after them only once they are on disk.
      up.accepted = up.written;
      return { transfer_id: up.id, received: up.written };
    }
    if (size > this.maxBytes) throw gridError('PAYLOAD_TOO_LARGE', `upload of ${size} bytes exceeds this node's limit of ${this.maxBytes} bytes`);
    if (this.uploads.size >= this.maxUploads) throw gridError('PAYLOAD_TOO_LARGE', `the node already holds ${this.uploads.size} unfinished uploads; finish or wait for them`);
    const id = randomBytes(12).toString('base64url');
    const up: Upload = {
      id, path: join(this.dir, `${id}.part`), size, chunkSize,
      written: 0, accepted: 0, hash: createHash('sha256'), file: undefined,
      chain: Promise.resolve(), failure: undefined, committed: undefined, touched: Date.now(),
    };
    up.chain = open(up.path, 'w').then((fh) => { up.file = fh; }, (err: Error) => { up.failure = err; });
    this.uploads.set(id, up);
    return { transfer_id: id, received: 0 };
  }

  /**
   * Queues one chunk. `onWritten(received)` is called after it is on disk when `received` crossed an ack
   * boundary or the upload is complete. Duplicates (re-sent after a resume) are ignored.
   */
  chunk(transferId: string, index: number, body: Buffer, onWritten: (received: number) => void, ackBytes: number): void {
    const up = this.uploads.get(transferId);
    if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `chunk ${index} for unknown upload ${transferId}`);
    if (up.committed) return;
    const offset = index * up.chunkSize;
    if (offset + body.length <= up.accepted) return; // already have it
    if (offset !== up.accepted) throw gridError('MALFORMED_FRAME', `upload ${transferId}: chunk ${index} starts at byte ${offset}, expected ${up.accepted}`);
    if (offset + body.length > up.size) throw gridError('PAYLOAD_TOO_LARGE', `upload ${transferId}: chunk ${index} goes past the announced size ${up.size}`);
    if (body.length !== up.chunkSize && offset + body.length !== up.size) throw gridError('MALFORMED_FRAME', `upload ${transferId}: chunk ${index} has ${body.length} bytes, expected ${up.chunkSize}`);
    up.accepted = offset + body.length;
    up.touched = Date.now();
    up.chain = up.chain.then(async () => {
      if (up.failure || up.file === undefined) return;
      if (offset !== up.written) {
        // A resume raced this chunk: the bytes were already written from the old connection's queue.
        // Acknowledge what is on disk so the client's window moves on.
        if (offset < up.written) onWritten(up.written);
        return;
      }
      try {
        await up.file.write(body, 0, body.length, offset);
      } catch (err) {
        up.failure = gridError('INTERNAL', `upload ${transferId}: writing to ${this.dir} failed: ${(err as Error).message}`);
        return;
      }
      up.hash.update(body);
      const before = up.written;
      up.written += body.length;
      if (up.written === up.size || Math.floor(up.written / ackBytes) !== Math.floor(before / ackBytes)) onWritten(up.written);
    });
  }

  /** Finishes an upload: waits for its writes, checks size and checksum, fsyncs. */
  async commit(transferId: string, sha256: string): Promise<CommittedUpload> {
    const up = this.uploads.get(transferId);
    if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired`);
    if (up.committed) return up.committed;
    await up.chain;
    if (up.failure) throw up.failure;
    if (up.written !== up.size) throw gridError('INVALID_MESSAGE', `upload ${transferId} holds ${up.written} of ${up.size} bytes; send the rest before committing`);
    const actual = up.hash.digest('hex');
    if (actual !== sha256) {
      await this.discard(up);
      throw gridError('CHECKSUM_MISMATCH', `upload ${transferId}: sha256 of the received bytes is ${actual}, the client announced ${sha256}; upload it again`);
    }
    await up.file!.sync();
    await up.file!.close();
    up.file = undefined;
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
    await up.chain;
    await up.file?.close().catch(() => {});
    up.file = undefined;
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
