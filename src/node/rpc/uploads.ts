// The node's side of chunked uploads: chunks are written in order to a temp file under `dir`,
// hashed as they arrive, acknowledged every `ackBytes`, and kept for a while after a dropped
// connection so the client can resume from the last acknowledged byte. A committed upload is handed
// to exactly one handler (takeUpload), which then owns the file.
// Each upload is charged to an owner (the signed-in user): uploads and declared bytes per owner are bounded,
// and a new upload must fit the disk up front, next to what uploads in flight will still write, with a margin.
// No message names a server path: the client cannot use one, and it tells them about the node's disk.
// Replicas (a `ledger`, docs/replicas.md "Uploads"): the partial files are in a shared dir and each upload
// has a record there, so a client that reconnects to another replica resumes on it. An acknowledgement is
// sent once the bytes it names are recorded, and the dir is swept by the node (store/shared-sweep.ts), not
// here: a restart or close keeps the files for the other replicas.

import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, GridError, gridError } from '../../core/errors';
import { silentLogger, type Logger } from '../../core/logger';
import { DirectBuffers, openUploadFile, type UploadFile } from './upload-file';
import type { UploadLedger, UploadRecord } from './upload-ledger';

export interface CommittedUpload {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

interface Upload {
  readonly id: string;
  /** Whom the upload is charged to (quotas); '' when the caller named no one. */
  readonly owner: string;
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
  file: Promise<UploadFile>;
  /** Lets go of the upload's share of its chunk size's direct-write pool (idempotent). */
  releaseDirect: () => void;
  /** Writes in flight, in offset order; the head's completion advances `written`. */
  inflight: { end: number; done: boolean; promise: Promise<void> }[];
  /** The commit under way, if any (a retried commit waits for it). */
  committing?: Promise<CommittedUpload> | undefined;
  /** The sha256 once digested (at the first commit). */
  digest?: string | undefined;
  failure: Error | undefined;
  committed: CommittedUpload | undefined;
  closed: boolean;
  touched: number;
  /** With a ledger: the claim this replica writes the upload under, and the bytes recorded so far. */
  claim: number;
  recorded: number;
  /** With a ledger: the acknowledgements waiting for their bytes to be recorded, in order. */
  recording: Promise<void>;
  /** The bytes the last acknowledgement covered. */
  acked: number;
  /** Acknowledges what is on disk once the sender has been quiet for IDLE_ACK_MS (see chunk()). */
  idleAck?: NodeJS.Timeout | undefined;
}

/**
 * A sender that pauses (its source is slow, or it stalls) between ack boundaries still gets the bytes on
 * disk acknowledged after this quiet spell, so its progress — and the offset a resume starts from, on any
 * replica — does not lag by up to an ack interval while it waits. Chunks arriving sooner reset it.
 */
const IDLE_ACK_MS = 250;

export interface UploadStoreOptions {
  dir: string;
  /** An upload idle this long (uncommitted or unclaimed) is deleted. */
  ttlMs?: number;
  /** The largest upload accepted, in bytes. */
  maxBytes?: number;
  /** Uploads at once; a bound on open files and disk use. */
  maxUploads?: number;
  /** Whole 4 KiB blocks written with O_DIRECT where the filesystem takes it (upload-file.ts). Default true. */
  directIo?: boolean;
  /**
   * Replicas: `dir` is shared and uploads are recorded here, so any replica resumes them. Files are then
   * neither cleared at start nor removed when idle or at close (the node's shared sweep expires them).
   */
  ledger?: UploadLedger;
  log?: Logger;
}

/** Per-owner shares of the upload area, and the disk margin (docs/node.md, "Quotas and sign-in limits"). */
export interface UploadQuotas {
  /** Uploads one owner may hold at once (unfinished, or finished and not yet claimed). */
  maxUploadsPerOwner?: number;
  /** Declared bytes of one owner's uploads together. */
  maxBytesPerOwner?: number;
  /** Free space that must remain on the uploads disk after every upload in flight is written. */
  freeSpaceMarginBytes?: number;
  /** Free bytes on the disk holding `dir` (fs.statfs by default). */
  freeBytes?(dir: string): Promise<number>;
  /**
   * Replicas: a replica takes over (re-hashes from the shared file) an upload it began or took over at most
   * once per this many ms (default 2 s), and longer for a big one (`rehashBytesPerSecond`): a client
   * alternating resumes between replicas cannot make them read the upload's bytes again on every request.
   */
  takeoverIntervalMs?: number;
  /** Replicas: after re-hashing n bytes, the next takeover of that upload here waits n / this many seconds (default 64 MiB/s). */
  rehashBytesPerSecond?: number;
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** Chunk sizes up to this get a pool of aligned buffers for O_DIRECT writes; bigger ones write buffered. */
const DIRECT_MAX_CHUNK = 4 * MiB;
/** Chunk sizes holding a pool at once. */
const DIRECT_POOLS = 4;

async function statfsFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Free bytes, or a path-free INTERNAL error (the cause, for the log, names the folder). */
async function checkedFree(freeBytes: (dir: string) => Promise<number>, dir: string): Promise<number> {
  try {
    // Recreated if someone removed it while the node runs.
    await mkdir(dir, { recursive: true });
    return await freeBytes(dir);
  } catch (err) {
    if (err instanceof GridError) throw err;
    throw new GridError(ErrorCodes.INTERNAL, `the node cannot check the free space of its uploads folder (${(err as NodeJS.ErrnoException).code ?? 'error'}); see the node's log`, undefined, { cause: err });
  }
}

/** Bytes for a message: "1.5 GiB", "12 MiB", "300 bytes". */
export function formatBytes(n: number): string {
  if (n >= 1024 ** 5) return `${+(n / 1024 ** 5).toFixed(1)} PiB`;
  if (n >= 1024 ** 4) return `${+(n / 1024 ** 4).toFixed(1)} TiB`;
  if (n >= GiB) return `${+(n / GiB).toFixed(1)} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

export class UploadStore {
  readonly dir: string;
  readonly ttlMs: number;
  readonly maxBytes: number;
  readonly maxUploads: number;
  readonly maxUploadsPerOwner: number;
  readonly maxBytesPerOwner: number;
  readonly freeSpaceMarginBytes: number;
  readonly takeoverIntervalMs: number;
  readonly rehashBytesPerSecond: number;
  /** Replicas: bytes read back from the shared dir to resume uploads another replica wrote (an operator's counter). */
  rehashedBytes = 0;
  /** Replicas: per upload begun or taken over here, when this replica may next take it over (pruned by the sweep). */
  private readonly takeoverAfter = new Map<string, number>();
  private readonly freeBytes: (dir: string) => Promise<number>;
  private readonly uploads = new Map<string, Upload>();
  /** Aligned buffers per chunk size (undefined inside: no O_DIRECT for that size here), and the uploads using each. */
  private readonly direct = new Map<number, { pool: Promise<DirectBuffers | undefined>; users: number }>();
  private readonly directIo: boolean;
  private readonly ledger: UploadLedger | undefined;
  private readonly log: Logger;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(options: UploadStoreOptions & UploadQuotas) {
    this.dir = options.dir;
    this.ttlMs = options.ttlMs ?? 10 * 60_000;
    this.maxBytes = options.maxBytes ?? 64 * GiB;
    this.maxUploads = options.maxUploads ?? 64;
    this.maxUploadsPerOwner = options.maxUploadsPerOwner ?? 8;
    this.maxBytesPerOwner = options.maxBytesPerOwner ?? this.maxBytes;
    this.freeSpaceMarginBytes = options.freeSpaceMarginBytes ?? 512 * MiB;
    this.freeBytes = options.freeBytes ?? statfsFree;
    this.takeoverIntervalMs = options.takeoverIntervalMs ?? 2000;
    this.rehashBytesPerSecond = options.rehashBytesPerSecond ?? 64 * MiB;
    this.directIo = options.directIo ?? true;
    this.ledger = options.ledger;
    this.log = options.log ?? silentLogger;
    mkdirSync(this.dir, { recursive: true });
    // Uploads do not survive a node restart (their hash state is in memory): start clean. A shared dir
    // holds other replicas' uploads, and this one's are resumable from their records.
    if (this.ledger === undefined) for (const name of readdirSync(this.dir)) rmSync(join(this.dir, name), { force: true, recursive: true });
    this.sweeper = setInterval(() => void this.sweep(), Math.max(1000, Math.min(this.ttlMs, 60_000)));
    this.sweeper.unref();
  }

  get size(): number {
    return this.uploads.size;
  }

  /** Replicas: uploads are recorded in a ledger, and every step names its owner. */
  get shared(): boolean {
    return this.ledger !== undefined;
  }

  /** Uploads and declared bytes held by `owner` now (but `except`, a stale copy about to be let go). */
  usage(owner: string, except?: Upload): { uploads: number; bytes: number } {
    let uploads = 0;
    let bytes = 0;
    for (const up of this.uploads.values()) {
      if (up.owner !== owner || up === except) continue;
      uploads++;
      bytes += up.size;
    }
    return { uploads, bytes };
  }

  /**
   * Starts a new upload charged to `owner`, or resumes one of theirs; returns the bytes already held.
   * A new upload is refused up front (QUOTA_EXCEEDED, INSUFFICIENT_STORAGE) rather than after its bytes came.
   */
  async begin(transferId: string | undefined, size: number, chunkSize: number, owner = ''): Promise<{ transfer_id: string; received: number }> {
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    if (transferId !== undefined && this.ledger !== undefined) return this.resumeShared(this.ledger, transferId, size, chunkSize, owner);
    if (transferId !== undefined) {
      const up = this.uploads.get(transferId);
      // Someone else's upload is reported as unknown: transfer ids are not a way to reach other users' bytes.
      if (up === undefined || up.owner !== owner) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired; start it again`);
      if (up.size !== size || up.chunkSize !== chunkSize) {
        throw gridError('INVALID_MESSAGE', `upload ${transferId} was begun with size ${up.size} and chunk size ${up.chunkSize}, not ${size} / ${chunkSize}`);
      }
      return this.resumeHeld(up);
    }
    if (size > this.maxBytes) throw gridError('PAYLOAD_TOO_LARGE', `upload of ${size} bytes exceeds this node's limit of ${this.maxBytes} bytes`);
    await this.admit(size, size, owner);
    const id = randomBytes(12).toString('base64url');
    // Recorded before its file exists: a file in a shared dir without a record is an orphan (the sweep's rule).
    const claim = this.ledger === undefined ? 0 : (await this.ledger.create({ id, owner, size, chunkSize })).claim;
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    if (this.ledger !== undefined) this.takeoverAfter.set(id, Date.now() + this.takeoverIntervalMs);
    this.hold({ id, owner, size, chunkSize, received: 0, claim, touchedMs: Date.now() }, createHash('sha256'));
    return { transfer_id: id, received: 0 };
  }

  /** Makes `rec` an upload held in this store, its file opened (created when nothing is on disk yet). */
  private hold(rec: UploadRecord, hash: Hash): Upload {
    const { id, received } = rec;
    const path = join(this.dir, `${id}.part`);
    const { file, release } = this.openFile(path, rec.chunkSize, received > 0);
    const up: Upload = {
      id, owner: rec.owner, path, size: rec.size, chunkSize: rec.chunkSize,
      written: received, accepted: received, hashed: received, hash,
      file, releaseDirect: release, inflight: [],
      failure: undefined, committed: undefined, closed: false, touched: Date.now(),
      claim: rec.claim, recorded: received, recording: Promise.resolve(), acked: received,
    };
    // A failed open is reported by the first write or the commit, not as an unhandled rejection.
    up.file.catch((err: NodeJS.ErrnoException) => { up.failure = new GridError(ErrorCodes.INTERNAL, `upload ${id}: the node cannot create its file (${err.code ?? 'error'})`, undefined, { cause: err }); });
    this.uploads.set(id, up);
    return up;
  }

  /** Resumes an upload this store holds: from the bytes on disk, once its writes in flight settled. */
  private async resumeHeld(up: Upload): Promise<{ transfer_id: string; received: number }> {
    if (up.failure) throw up.failure;
    up.touched = Date.now();
    // Resume from what is on disk, once every write in flight has settled: then the bytes on disk are
    // exactly the bytes hashed, and no hashed byte can be sent (and written) a second time with other
    // content — which would store a file whose sha256 is not its own.
    // (A failed write leaves its entry not done and sets `failure`: stop waiting then.)
    while (up.failure === undefined && up.inflight.some((e) => !e.done)) await Promise.allSettled(up.inflight.map((e) => e.promise));
    while (up.inflight.length > 0 && up.inflight[0]!.done) up.written = Math.max(up.written, up.inflight.shift()!.end);
    if (up.failure) throw up.failure;
    if (up.written !== up.hashed) throw gridError('INTERNAL', `upload ${up.id}: ${up.written} bytes on disk but ${up.hashed} hashed; start it again`);
    up.accepted = up.written;
    return { transfer_id: up.id, received: up.written };
  }

  /** Replicas: a resume of upload `id`, begun with `size` and `chunkSize` by `owner`, through its record. */
  private async resumeShared(ledger: UploadLedger, id: string, size: number, chunkSize: number, owner: string): Promise<{ transfer_id: string; received: number }> {
    const known = await ledger.get(id);
    // Someone else's upload is reported as unknown: transfer ids are not a way to reach other users' bytes.
    if (known === undefined || known.owner !== owner) throw gridError('TRANSFER_NOT_FOUND', `upload ${id} is unknown or expired; start it again`);
    if (known.size !== size || known.chunkSize !== chunkSize) {
      throw gridError('INVALID_MESSAGE', `upload ${id} was begun with size ${known.size} and chunk size ${known.chunkSize}, not ${size} / ${chunkSize}`);
    }
    return this.claimShared(ledger, known);
  }

  /**
   * Replicas: claims the upload `known` (its record as just read, the caller's own) for this replica, and
   * resumes it from memory when nobody claimed it since this replica last did, else from its record and
   * the shared file. The file's bytes up to the recorded offset are hashed again from disk: a sha256's
   * running state cannot be saved, and hashing the file is hashing what will be stored (docs/replicas.md
   * says why not to persist the hash state).
   */
  private async claimShared(ledger: UploadLedger, known: UploadRecord): Promise<{ transfer_id: string; received: number }> {
    const { id, owner, size, chunkSize } = known;
    // A takeover (re-reading the shared file) is admitted before the claim, so a refused one leaves the
    // upload to the replica holding it.
    const before = this.uploads.get(id);
    const current = before !== undefined && before.claim === known.claim && before.failure === undefined;
    if (!current) await this.admitTakeover(id, size, known.received, owner, before);
    const rec = await ledger.claim(id, owner, size, chunkSize);
    if (rec === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${id} is unknown or expired; start it again`);
    const held = this.uploads.get(id);
    if (held !== undefined && held.claim === rec.claim - 1 && held.failure === undefined) {
      held.claim = rec.claim;
      return this.resumeHeld(held);
    }
    // Another replica claimed it between the look and the claim: a takeover after all.
    if (current) await this.admitTakeover(id, size, rec.received, owner, held);
    // Another replica wrote it since: what this one holds is stale.
    if (held !== undefined) await this.release(held);
    const hash = createHash('sha256');
    let onDisk = 0;
    if (rec.received > 0) {
      try {
        for await (const c of createReadStream(join(this.dir, `${id}.part`), { start: 0, end: rec.received - 1, highWaterMark: 1 << 20 })) {
          hash.update(c as Buffer);
          onDisk += (c as Buffer).length;
          this.rehashedBytes += (c as Buffer).length;
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw diskError(id, err as NodeJS.ErrnoException);
      }
    }
    if (onDisk !== rec.received) {
      await ledger.remove(id);
      await rm(join(this.dir, `${id}.part`), { force: true });
      throw gridError('TRANSFER_NOT_FOUND', `upload ${id}: the node holds ${onDisk} of the ${rec.received} bytes it recorded; start it again`);
    }
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    // A second resume of the same upload that raced this one: one holder per upload (the later claim's
    // progress is the one recorded; the other learns it at its next write).
    const raced = this.uploads.get(id);
    if (raced !== undefined) await this.release(raced);
    this.log.info({ transfer: id, received: rec.received, claim: rec.claim }, 'resuming an upload another replica began');
    const up = this.hold(rec, hash);
    return { transfer_id: up.id, received: up.written };
  }

  /**
   * Sends an acknowledgement of the bytes on disk. With a ledger, once they are recorded (one write covers
   * the acknowledgements queued behind it); a replica whose claim was taken stops holding the upload and
   * acknowledges nothing more. A database that fails to record leaves the record behind, not the client:
   * the acknowledgement goes out (a resume elsewhere re-sends from the older record), logged.
   */
  private acknowledge(up: Upload, onWritten: (received: number) => void): void {
    const received = up.written;
    up.acked = Math.max(up.acked, received);
    const ledger = this.ledger;
    if (ledger === undefined) { onWritten(received); return; }
    up.recording = up.recording.then(async () => {
      if (up.recorded < received) {
        const target = up.written;
        let mine = true;
        try {
          mine = await ledger.progress(up.id, up.claim, target);
        } catch (err) {
          this.log.warn({ transfer: up.id, err: (err as Error).message }, 'recording an upload\'s progress failed; acknowledging anyway');
        }
        if (!mine) {
          up.failure ??= gridError('TRANSFER_NOT_FOUND', `upload ${up.id} continued through another replica of this node`);
          if (this.uploads.get(up.id) === up) await this.release(up);
          return;
        }
        up.recorded = Math.max(up.recorded, target);
      }
      onWritten(received);
    });
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
    entry.promise = writeChunk(up.file, body, offset).then(() => {
      entry.done = true;
      const before = up.written;
      while (up.inflight.length > 0 && up.inflight[0]!.done) up.written = Math.max(up.written, up.inflight.shift()!.end);
      if (end <= before) {
        // Re-sent after a resume, and already on disk from the old connection's writes: acknowledge what
        // is there, or the client's window would wait for acks that went to the dead connection.
        this.acknowledge(up, onWritten);
      } else if (up.written !== before && (up.written === up.size || Math.floor(up.written / ackBytes) !== Math.floor(before / ackBytes))) {
        this.acknowledge(up, onWritten);
      } else if (up.inflight.length === 0 && up.written === up.accepted && up.written > up.acked) {
        this.ackWhenQuiet(up, onWritten);
      }
    }, (err: Error) => {
      up.failure ??= diskError(transferId, err);
    });
    up.inflight.push(entry);
  }

  /** Acknowledges what is on disk once no chunk has come for IDLE_ACK_MS (one timer per upload). */
  private ackWhenQuiet(up: Upload, onWritten: (received: number) => void): void {
    if (up.idleAck !== undefined) return;
    const check = () => {
      up.idleAck = undefined;
      if (up.closed || up.committed !== undefined || up.failure !== undefined || up.written <= up.acked) return;
      const quiet = Date.now() - up.touched;
      if (quiet < IDLE_ACK_MS || up.inflight.length > 0) {
        up.idleAck = setTimeout(check, Math.max(1, IDLE_ACK_MS - quiet));
        up.idleAck.unref();
        return;
      }
      this.acknowledge(up, onWritten);
    };
    up.idleAck = setTimeout(check, IDLE_ACK_MS);
    up.idleAck.unref();
  }

  /**
   * Finishes an upload: waits for its writes, checks size and checksum, fsyncs. A commit retried while
   * the first is still syncing (a client that reconnected) shares the first one's outcome.
   * Replicas: a commit may come to a replica that holds a stale copy of the upload, or none (a client's
   * socket re-sends a commit cut off with its connection on the next one, without a new begin): the
   * upload is claimed here first, as a resume would, on behalf of `owner`.
   */
  async commit(transferId: string, sha256: string, owner = ''): Promise<CommittedUpload> {
    if (this.ledger !== undefined) {
      const rec = await this.ledger.get(transferId);
      if (rec === undefined || rec.owner !== owner) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired`);
      if (this.uploads.get(transferId)?.claim !== rec.claim) await this.claimShared(this.ledger, rec);
    }
    const up = this.uploads.get(transferId);
    if (up === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown or expired`);
    if (up.committed) return up.committed;
    up.committing ??= this.finish(up, sha256).finally(() => { up.committing = undefined; });
    return up.committing;
  }

  private async finish(up: Upload, sha256: string): Promise<CommittedUpload> {
    await Promise.all(up.inflight.map((e) => e.promise));
    if (up.failure) throw up.failure;
    if (up.written !== up.size || up.hashed !== up.size) throw gridError('INVALID_MESSAGE', `upload ${up.id} holds ${up.written} of ${up.size} bytes; send the rest before committing`);
    // Digested once: a hash cannot be finalised twice, and a commit may be tried again after a failed sync.
    up.digest ??= up.hash.digest('hex');
    const actual = up.digest;
    if (actual !== sha256) {
      await this.discard(up);
      throw gridError('CHECKSUM_MISMATCH', `upload ${up.id}: sha256 of the received bytes is ${actual}, the client announced ${sha256}; upload it again`);
    }
    const f = await up.file;
    await f.sync();
    if (this.ledger !== undefined && !await this.ledger.progress(up.id, up.claim, up.size, actual)) {
      throw gridError('TRANSFER_NOT_FOUND', `upload ${up.id} continued through another replica of this node; commit it there`);
    }
    await f.close();
    up.closed = true;
    up.releaseDirect();
    up.committed = { path: up.path, size: up.size, sha256: actual };
    up.touched = Date.now();
    return up.committed;
  }

  /** Hands a committed upload to its consumer, who now owns (and must move or delete) the file. */
  take(transferId: string): CommittedUpload {
    const up = this.uploads.get(transferId);
    if (up === undefined || up.committed === undefined) throw gridError('TRANSFER_NOT_FOUND', `upload ${transferId} is unknown, unfinished or already used`);
    this.uploads.delete(transferId);
    // No replica may claim it any more. Its file, until the consumer moves it, is younger than the
    // shared sweep's expiry (it was written just now), which is what keeps the sweep off it.
    if (this.ledger !== undefined) {
      void this.ledger.remove(transferId).catch((err: unknown) => this.log.warn({ transfer: transferId, err: (err as Error).message }, 'removing a taken upload\'s record failed; the shared sweep expires it'));
    }
    return up.committed;
  }

  /**
   * Opens an upload's file, with the direct-write pool of its chunk size when there is one. At most
   * DIRECT_POOLS sizes hold pools at once (a bound on the aligned buffers kept); a size no upload uses any
   * more gives its place to a new one, so odd sizes seen once never keep the default size buffered.
   */
  private openFile(path: string, chunkSize: number, keep: boolean): { file: Promise<UploadFile>; release: () => void } {
    let entry: { pool: Promise<DirectBuffers | undefined>; users: number } | undefined;
    if (this.directIo && chunkSize <= DIRECT_MAX_CHUNK) {
      entry = this.direct.get(chunkSize);
      if (entry === undefined && this.direct.size >= DIRECT_POOLS) {
        const idle = [...this.direct].find(([, e]) => e.users === 0);
        if (idle !== undefined) {
          this.direct.delete(idle[0]);
          void idle[1].pool.then((p) => p?.close());
        }
      }
      if (entry === undefined && this.direct.size < DIRECT_POOLS) {
        entry = { pool: DirectBuffers.create(this.dir, chunkSize), users: 0 };
        this.direct.set(chunkSize, entry);
      }
    }
    if (entry === undefined) return { file: openUploadFile(path, undefined, keep), release: () => {} };
    const held = entry;
    held.users++;
    let released = false;
    return {
      file: held.pool.then((pool) => openUploadFile(path, pool, keep)),
      release: () => {
        if (!released) { released = true; held.users--; }
      },
    };
  }

  /**
   * Charges an upload of `size` bytes, `remaining` of them still to be written here, to this node's limits,
   * `owner`'s quotas and the free disk (QUOTA_EXCEEDED, INSUFFICIENT_STORAGE). `except`: a stale copy of the
   * same upload, let go if this one goes ahead.
   */
  private async admit(size: number, remaining: number, owner: string, except?: Upload): Promise<void> {
    this.checkQuotas(size, owner, except);
    const free = await checkedFree(this.freeBytes, this.dir);
    // Checked again after the await: other uploads may have begun meanwhile.
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    this.checkQuotas(size, owner, except);
    // What uploads in flight will still write is spoken for already.
    let pending = 0;
    for (const up of this.uploads.values()) if (up !== except) pending += up.size - up.written;
    const needed = remaining + pending + this.freeSpaceMarginBytes;
    if (needed > free) {
      throw gridError('INSUFFICIENT_STORAGE',
        `the node's disk has ${formatBytes(free)} free; an upload of ${formatBytes(size)} needs ${formatBytes(needed)} `
        + `(with ${formatBytes(pending)} still to come for uploads in flight and a ${formatBytes(this.freeSpaceMarginBytes)} margin); free space on the node or upload something smaller`,
        { free_bytes: free, needed_bytes: needed, size });
    }
  }

  /**
   * Replicas: admits taking over upload `id` (`received` bytes to re-read from the shared file) on this
   * replica: charged like a new upload, and at most once per interval per upload here (RATE_LIMITED with
   * retry_after_ms), the interval longer the more bytes the last one re-read. The interval starts now,
   * before the re-read, so resumes racing this one are refused too.
   */
  private async admitTakeover(id: string, size: number, received: number, owner: string, stale: Upload | undefined): Promise<void> {
    const now = Date.now();
    const after = this.takeoverAfter.get(id);
    if (after !== undefined && after > now) {
      const wait = after - now;
      throw gridError('RATE_LIMITED', `upload ${id} was begun or taken over on this node moments ago; taking it over again re-reads its ${formatBytes(received)} from disk: retry in ${Math.ceil(wait / 1000)} s`,
        { retry_after_ms: wait });
    }
    await this.admit(size, size - received, owner, stale);
    this.takeoverAfter.set(id, Date.now() + Math.max(this.takeoverIntervalMs, Math.ceil(received / this.rehashBytesPerSecond * 1000)));
  }

  private checkQuotas(size: number, owner: string, except?: Upload): void {
    const count = this.uploads.size - (except !== undefined && this.uploads.get(except.id) === except ? 1 : 0);
    if (count >= this.maxUploads) {
      throw gridError('QUOTA_EXCEEDED', `quota uploads_in_flight: the node already holds ${count} unfinished uploads (its limit); try again when some finish`, { quota: 'uploads_in_flight', limit: this.maxUploads });
    }
    const use = this.usage(owner, except);
    const who = owner === '' ? 'this session' : `user ${owner}`;
    if (use.uploads >= this.maxUploadsPerOwner) {
      throw gridError('QUOTA_EXCEEDED', `quota uploads_per_user: ${who} already has ${use.uploads} uploads in flight, the most this node allows; finish or abandon one first (an abandoned upload is dropped after ${Math.round(this.ttlMs / 1000)} s idle)`,
        { quota: 'uploads_per_user', limit: this.maxUploadsPerOwner, used: use.uploads });
    }
    if (use.bytes + size > this.maxBytesPerOwner) {
      throw gridError('QUOTA_EXCEEDED', `quota upload_bytes_per_user: ${who} has ${formatBytes(use.bytes)} in uploads in flight; ${formatBytes(size)} more would pass the ${formatBytes(this.maxBytesPerOwner)} this node allows per user`,
        { quota: 'upload_bytes_per_user', limit: this.maxBytesPerOwner, used: use.bytes, size });
    }
  }

  private async discard(up: Upload): Promise<void> {
    this.uploads.delete(up.id);
    await Promise.all(up.inflight.map((e) => e.promise));
    if (!up.closed) {
      up.closed = true;
      await up.file.then((fh) => fh.close(), () => {}).catch(() => {});
    }
    up.releaseDirect();
    await rm(up.path, { force: true });
    // A record without its file would let another replica claim an upload whose bytes are gone.
    await this.ledger?.remove(up.id).catch((err: unknown) => this.log.warn({ transfer: up.id, err: (err as Error).message }, 'removing a discarded upload\'s record failed; the shared sweep expires it'));
  }

  /** Replicas: stops holding an upload in memory; its file and record stay for whichever replica resumes it. */
  private async release(up: Upload): Promise<void> {
    if (this.uploads.get(up.id) === up) this.uploads.delete(up.id);
    await Promise.allSettled(up.inflight.map((e) => e.promise));
    if (!up.closed) {
      up.closed = true;
      await up.file.then((fh) => fh.close(), () => {}).catch(() => {});
    }
    up.releaseDirect();
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const [id, after] of this.takeoverAfter) if (after <= now) this.takeoverAfter.delete(id);
    for (const up of [...this.uploads.values()]) {
      if (now - up.touched <= this.ttlMs) continue;
      // A committed upload nobody took is this replica's to clean; an unfinished one may go on elsewhere.
      if (this.ledger !== undefined && up.committed === undefined) await this.release(up);
      else await this.discard(up);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    // Replicas: every upload, finished or not, stays for the replica its client reconnects to.
    await Promise.all([...this.uploads.values()].map((up) => (this.ledger !== undefined ? this.release(up) : this.discard(up))));
    await Promise.all([...this.direct.values()].map(async (e) => (await e.pool)?.close()));
  }
}

/**
 * Starts a chunk's write. Apart from chunk()'s closures, which live until the write is done: a body they
 * captured would stay in memory all that time, though the disk is written from an aligned copy of it.
 */
async function writeChunk(file: Promise<UploadFile>, body: Buffer, offset: number): Promise<void> {
  await (await file).write(body, offset);
}

/** A write failure as the client may see it: the errno code (ENOSPC says it all), never the path. */
function diskError(transferId: string, err: NodeJS.ErrnoException): GridError {
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
    return new GridError(ErrorCodes.INSUFFICIENT_STORAGE, `upload ${transferId}: the node's disk is full (${err.code}); free space on the node and upload again`, undefined, { cause: err });
  }
  return new GridError(ErrorCodes.INTERNAL, `upload ${transferId}: the node could not write it to disk (${err.code ?? 'error'}); see the node's log`, undefined, { cause: err });
}
