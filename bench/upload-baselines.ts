// What an upload cannot beat, measured on this machine in the same run: the disk's best write rate,
// sha256's CPU cost, and raw `ws` carrying the same bytes with the same flow control. Shared by
// bench/socket.ts and bench/node-upload.ts.

import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { isLocalUrl } from '../src/core/shm';
import { DRAIN_THRESHOLD_BYTES } from '../src/core/socket/drain';
import { DirectBuffers, openUploadFile } from '../src/node/rpc/upload-file';
import { generatedBytes } from '../test/helpers/bytes';

const MiB = 1024 * 1024;
const CHUNK = MiB;

/**
 * What this machine's disk takes at best, the upload's floor: the bytes are generated before the clock
 * starts (held in a 64 MiB ring of distinct buffers, written over and over at new offsets), a warm-up
 * write of the same size comes first, then each write pattern writes `size` bytes and fsyncs once; the
 * best pattern's rate is the floor. Patterns: 1 MiB writes awaited one by one, 1 MiB positional writes
 * with 16 in flight, 8 MiB writes with 4 in flight. The files go in `dir` (the node's disk).
 */
export async function diskWrite(dir: string, size: number): Promise<{ mbps: number; pattern: string; all: Record<string, number> }> {
  const RING = 64 * MiB;
  const ring = Array.from({ length: RING / CHUNK }, (_, i) => generatedBytes(4, i * CHUNK, CHUNK));
  const bigRing = Buffer.concat(ring);
  // A write never spans ring buffers when len ≤ CHUNK; bigger writes are served from the joined ring.
  const pieceOf = (pos: number, len: number): Buffer => (len <= CHUNK ? ring[(pos / CHUNK) % ring.length]!.subarray(0, len) : bigRing.subarray(pos % RING, (pos % RING) + len));
  async function pass(name: string, block: number, inFlight: number): Promise<number> {
    const path = join(dir, `grid-bench-disk-${process.pid}-${name}`);
    const fh = await open(path, 'w');
    try {
      const t0 = performance.now();
      let next = 0;
      await Promise.all(Array.from({ length: inFlight }, async () => {
        while (next < size) {
          const pos = next;
          const len = Math.min(block, size - pos);
          next += len;
          let done = 0;
          while (done < len) done += (await fh.write(pieceOf(pos, len), done, len - done, pos + done)).bytesWritten;
        }
      }));
      await fh.sync();
      return size / MiB / ((performance.now() - t0) / 1000);
    } finally {
      await fh.close();
      await rm(path, { force: true });
    }
  }
  await pass('warm-up', CHUNK, 16);
  const all: Record<string, number> = {};
  all['1 MiB, 1 in flight'] = await pass('seq', CHUNK, 1);
  all['1 MiB, 16 in flight'] = await pass('par', CHUNK, 16);
  all['8 MiB, 4 in flight'] = await pass('big', 8 * CHUNK, 4);
  const [pattern, mbps] = Object.entries(all).sort((x, y) => y[1] - x[1])[0]!;
  return { mbps, pattern, all };
}

/** CPU seconds sha256 takes per GiB here (bytes in memory, one thread): what each side of an upload must add. */
export function sha256CpuPerGiB(): number {
  const b = generatedBytes(5, 0, CHUNK);
  const h = createHash('sha256');
  const n = 256;
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) h.update(b);
  h.digest();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6 / (n * CHUNK / 1024 ** 3);
}

/**
 * A raw `ws` client as good as GridSocket's transport: the all-zero mask on loopback (ws then skips
 * masking, and the receiver unmasking), like GridSocket; so the baseline gets every trick it could use.
 */
export function rawWs(url: string): WebSocket {
  return new WebSocket(url, { perMessageDeflate: false, ...(isLocalUrl(url) && { generateMask: (m: Buffer) => { m.fill(0); } }) });
}

/**
 * Sends `size` bytes as 1 MiB binary frames, filled by `fill` into reused buffers (the upload's frames
 * are reused alike), with GridSocket's flow control: wait for the socket only when it holds
 * DRAIN_THRESHOLD_BYTES. `last` marks the final frame (its first byte set to 1) for sinks that need it.
 */
export async function rawSend(ws: WebSocket, size: number, fill: (into: Buffer, offset: number) => Promise<void> | void, markLast = false): Promise<void> {
  const free: Buffer[] = [];
  let made = 0;
  let wake: (() => void) | undefined;
  const give = (b: Buffer) => { free.push(b); const w = wake; wake = undefined; w?.(); };
  for (let pos = 0; pos < size; pos += CHUNK) {
    const len = Math.min(CHUNK, size - pos);
    let b = free.pop();
    if (b === undefined && made < DRAIN_THRESHOLD_BYTES / CHUNK + 2) { made++; b = Buffer.allocUnsafeSlow(CHUNK); }
    while (b === undefined) { await new Promise<void>((r) => { wake = r; }); b = free.pop(); }
    const piece = b.subarray(0, len);
    await fill(piece, pos);
    if (markLast) piece[0] = pos + len === size ? 1 : 0;
    const buf = b;
    if (ws.bufferedAmount < DRAIN_THRESHOLD_BYTES) ws.send(piece, () => give(buf));
    else await new Promise<void>((r) => ws.send(piece, () => { give(buf); r(); }));
  }
}

/**
 * CPU seconds per GiB the node's own store path takes with nothing else running: 1 MiB chunks copied into
 * aligned buffers and written with O_DIRECT where `dir`'s filesystem takes it (node/rpc/upload-file.ts),
 * 4 in flight, then one fsync. Process CPU, so the libuv threads doing the writes count too.
 */
export async function storeCpuPerGiB(dir: string, size: number): Promise<number> {
  const pool = await DirectBuffers.create(dir, CHUNK);
  const path = join(dir, `grid-bench-store-${process.pid}`);
  const file = await openUploadFile(path, pool);
  const ring = Array.from({ length: 16 }, (_, i) => generatedBytes(6, i * CHUNK, CHUNK));
  try {
    const c0 = process.cpuUsage();
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < size) {
        const pos = next;
        next += CHUNK;
        await file.write(ring[(pos / CHUNK) % ring.length]!.subarray(0, Math.min(CHUNK, size - pos)), pos);
      }
    }));
    await file.sync();
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1e6 / (size / 1024 ** 3);
  } finally {
    await file.close();
    await pool?.close();
    await rm(path, { force: true });
  }
}
