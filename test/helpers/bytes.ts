// Deterministic pseudo-random bytes by offset, so gigabyte payloads are produced and checked
// chunk by chunk without ever being held in memory. Each 64 KiB block is a pseudo-random base block
// rotated by an amount that depends on the block's index, so misplaced or repeated chunks change the hash.

import { createHash, randomBytes } from 'node:crypto';
import type { ByteSource } from '../../src/core/socket/transfer';

const BLOCK = 64 * 1024;
const bases = new Map<number, Buffer>();

function base(seed: number): Buffer {
  let b = bases.get(seed);
  if (!b) {
    // Seeded: the same seed gives the same block in every process.
    b = Buffer.allocUnsafe(BLOCK);
    let x = (seed * 2654435761) >>> 0 || 1;
    for (let i = 0; i < BLOCK; i += 4) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      b.writeUInt32LE(x, i);
    }
    bases.set(seed, b);
  }
  return b;
}

function fillBlock(seed: number, blockIndex: number, out: Buffer, outAt: number, from: number, to: number): void {
  const b = base(seed);
  const rot = (blockIndex * 7919) % BLOCK;
  // byte i of the block is base[(i + rot) % BLOCK]
  let i = from;
  while (i < to) {
    const src = (i + rot) % BLOCK;
    const n = Math.min(to - i, BLOCK - src);
    b.copy(out, outAt + (i - from), src, src + n);
    i += n;
  }
}

export function generatedBytes(seed: number, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let p = offset;
  while (p < offset + length) {
    const block = Math.floor(p / BLOCK);
    const from = p - block * BLOCK;
    const to = Math.min(BLOCK, offset + length - block * BLOCK);
    fillBlock(seed, block, out, p - offset, from, to);
    p += to - from;
  }
  return out;
}

export function generatedSource(seed: number, size: number): ByteSource {
  return { size, read: async (offset, length) => generatedBytes(seed, offset, length) };
}

export function generatedSha256(seed: number, size: number, chunk = 8 * 1024 * 1024): string {
  const h = createHash('sha256');
  for (let p = 0; p < size; p += chunk) h.update(generatedBytes(seed, p, Math.min(chunk, size - p)));
  return h.digest('hex');
}

export function randomSeed(): number {
  return randomBytes(4).readUInt32LE(0);
}
