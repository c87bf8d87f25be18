// Where an upload's bytes go on disk. On Linux, whole blocks are written with O_DIRECT: the node's disk
// takes them straight from a small pool of reused, aligned buffers, instead of the kernel copying every
// byte into freshly allocated page cache. On this 2-vCPU VM that copy cost 1.5 s of CPU per GiB (more
// than sha256 and the WebSocket together); the direct path costs ~0.15 s (measured in the same run).
// Chunks that are not whole 4 KiB blocks (an upload's last one, or uploads with odd chunk sizes) go
// through an ordinary buffered handle of the same file. Where O_DIRECT is not supported (tmpfs, other
// systems), every write is buffered, as before.

import { constants, type PathLike } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** O_DIRECT offsets, lengths and buffer addresses are multiples of this (a filesystem block; 512 often suffices). */
const BLOCK = 4096;
/** Aligned buffers kept for reuse: bounds the node's memory for direct writes in flight (libuv runs 4 at once). */
const POOL_MAX = 4;

export interface UploadFile {
  /** Writes all of `body` at `position`. `body` is not used after the returned promise settles. */
  write(body: Buffer, position: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Aligned buffers of one size, shared by the uploads of a store, and the probe file that finds how to
 * align them: JavaScript cannot see a buffer's address, so a new buffer writes one block from each of its
 * 16-byte offsets until the kernel takes one (malloc returns differently aligned memory from one call to
 * the next, so every buffer is probed once, when made).
 */
export class DirectBuffers {
  private readonly free: Buffer[] = [];
  private made = 0;
  private readonly waiters: ((b: Buffer | undefined) => void)[] = [];

  private constructor(readonly size: number, private readonly probe: FileHandle) {}

  /** The pool for `dir`, or undefined where its filesystem (or this system) has no O_DIRECT. */
  static async create(dir: string, size: number): Promise<DirectBuffers | undefined> {
    const O_DIRECT = (constants as { O_DIRECT?: number }).O_DIRECT;
    if (O_DIRECT === undefined || process.platform !== 'linux' || size % BLOCK !== 0 || size < BLOCK) return undefined;
    const path = join(dir, `.direct-probe-${size}`);
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | O_DIRECT, 0o600);
      // Unlinked at once: the open handle still probes, and the uploads folder holds only uploads.
      await rm(path, { force: true });
      const pool = new DirectBuffers(size, fh);
      const first = await pool.make();
      if (first === undefined) throw new Error('no aligned offset');
      pool.free.push(first);
      return pool;
    } catch {
      await fh?.close().catch(() => {});
      await rm(path, { force: true }).catch(() => {});
      return undefined;
    }
  }

  /** An aligned buffer, or undefined when none could be aligned (the caller writes buffered). */
  async take(): Promise<Buffer | undefined> {
    const b = this.free.pop();
    if (b) return b;
    if (this.made < POOL_MAX) return this.make();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  give(b: Buffer): void {
    const w = this.waiters.shift();
    if (w) w(b);
    else this.free.push(b);
  }

  async close(): Promise<void> {
    for (const w of this.waiters.splice(0)) w(undefined);
    await this.probe.close().catch(() => {});
  }

  private async make(): Promise<Buffer | undefined> {
    this.made++;
    const raw = Buffer.allocUnsafeSlow(this.size + BLOCK);
    for (let at = 0; at < BLOCK; at += 16) {
      try {
        await this.probe.write(raw, at, BLOCK, 0);
        return raw.subarray(at, at + this.size);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') break;
      }
    }
    this.made--;
    return undefined;
  }
}

/**
 * Opens an upload's file: direct for whole blocks when `pool` is given, buffered otherwise. `keep`: the
 * file exists and its bytes stay (an upload resumed on another replica), else it is created empty.
 */
export async function openUploadFile(path: PathLike, pool: DirectBuffers | undefined, keep = false): Promise<UploadFile> {
  const buffered = await open(path, keep ? 'r+' : 'w');
  let direct: FileHandle | undefined;
  if (pool) {
    try {
      direct = await open(path, constants.O_WRONLY | (constants as { O_DIRECT?: number }).O_DIRECT!);
    } catch {
      direct = undefined;
    }
  }
  const writeAll = async (fh: FileHandle, b: Buffer, position: number) => {
    let done = 0;
    while (done < b.length) done += (await fh.write(b, done, b.length - done, position + done)).bytesWritten;
  };
  return {
    async write(body, position) {
      if (direct === undefined || pool === undefined || body.length !== pool.size || position % BLOCK !== 0) {
        await writeAll(buffered, body, position);
        return;
      }
      const b = await pool.take();
      if (b === undefined) {
        await writeAll(buffered, body, position);
        return;
      }
      try {
        // From here on only the aligned copy is used: the received buffer can be collected while the
        // disk works (bounds the node's memory when writes queue behind the pool).
        body.copy(b);
        try {
          await writeAll(direct, b, position);
        } catch (err) {
          // EINVAL: this buffer or the filesystem refuses O_DIRECT after all; buffered still works.
          if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
          await writeAll(buffered, b, position);
        }
      } finally {
        pool.give(b);
      }
    },
    // One fsync covers the file, whichever handle wrote its bytes.
    sync: () => buffered.sync(),
    async close() {
      await Promise.all([buffered.close(), direct?.close()]);
    },
  };
}
