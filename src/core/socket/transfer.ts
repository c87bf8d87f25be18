// Where upload bytes come from and download bytes go. Both work on ranges, so a 1 GiB model is
// never held in memory: a source is read chunk by chunk, a sink written chunk by chunk.

import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { gridError } from '../errors';

export interface ByteSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Fills `target` with the bytes at `offset` (target.length of them): saves a buffer and a copy per chunk. */
  readInto?(target: Uint8Array, offset: number): Promise<void>;
  close?(): Promise<void>;
}

export interface ByteSink {
  /** Writes bytes at `offset`; offsets only grow, except after a resume, when they restart at what was acknowledged. */
  write(bytes: Uint8Array, offset: number): Promise<void>;
}

export function bufferSource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
  };
}

/** Reads a file by ranges; `size` is taken when opened. */
export async function fileSource(path: string): Promise<ByteSource> {
  const fh = await open(path, 'r');
  const { size } = await fh.stat();
  const readInto = async (target: Uint8Array, offset: number) => {
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await fh.read(target, done, target.length - done, offset + done);
      if (bytesRead === 0) throw gridError('INTERNAL', `${path} shrank while it was being sent (read ${offset + done} of ${size} bytes)`);
      done += bytesRead;
    }
  };
  return {
    size,
    async read(offset, length) {
      const buf = Buffer.allocUnsafe(length);
      await readInto(buf, offset);
      return buf;
    },
    readInto,
    close: () => fh.close(),
  };
}

/** Collects a (small) download in memory. */
export function memorySink(): ByteSink & { bytes(): Buffer } {
  const parts: Buffer[] = [];
  let size = 0;
  return {
    async write(bytes, offset) {
      if (offset < size) {
        // Resumed: drop what came after the acknowledged point.
        let keep = offset;
        while (parts.length > 0 && size > keep) {
          const last = parts.pop()!;
          size -= last.length;
          if (size < keep) { parts.push(last.subarray(0, keep - size)); size = keep; keep = -1; }
        }
      }
      parts.push(Buffer.from(bytes));
      size += bytes.length;
    },
    bytes: () => Buffer.concat(parts, size),
  };
}

/**
 * Writes into `dest + ".partial"`; `commit()` fsyncs and renames it into place, `abort()` removes it.
 * Nobody ever sees a half-written file at `dest`.
 */
export async function fileSink(dest: string): Promise<ByteSink & { commit(): Promise<void>; abort(): Promise<void> }> {
  const temp = `${dest}.partial`;
  const fh: FileHandle = await open(temp, 'w');
  let open_ = true;
  return {
    async write(bytes, offset) {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, offset + done);
        done += bytesWritten;
      }
    },
    async commit() {
      await fh.sync();
      await fh.close();
      open_ = false;
      await rename(temp, dest);
    },
    async abort() {
      if (open_) await fh.close().catch(() => {});
      open_ = false;
      await rm(temp, { force: true });
    },
  };
}
