// Correlated randomness dealt by the crypto provider: per step of an evaluation, a matrix Beaver triple
// (Gemm/MatMul) or the comparison material and an elementwise triple (ReLU). Each party gets its half
// as one byte bundle laid out in schedule order; the provider keeps only MSB(r) of each comparison, for
// its online step. A bundle serves one query and is deleted once used: triples are never reused.

import { randomBytes } from 'node:crypto';
import { matmul, mul, randomRing } from './ring';
import { share, type Party } from './shares';
import { BITS, P } from './compare';

/**
 * One step that needs dealt randomness: a [m,k]×[k,n] product, or `n` ReLUs. A product with `mask` (the
 * weight's parameter index) multiplies by a weight masked once per model (masks.ts): its triple reuses
 * the model's mask B, so only A and C = A·B are dealt and only X − A is opened.
 */
export type Step = { kind: 'matmul'; m: number; k: number; n: number; mask?: number } | { kind: 'relu'; n: number };

export interface MatmulPart { a: BigInt64Array; b: BigInt64Array; c: BigInt64Array }
export interface ReluPart { r: BigInt64Array; rBits: Uint8Array; triple: MatmulPart }
export type StepPart = MatmulPart | ReluPart;

const pad8 = (n: number) => (n + 7) & ~7;

/** Bytes of one party's bundle for a schedule. */
export function bundleSize(schedule: readonly Step[]): number {
  let size = 0;
  for (const s of schedule) size += s.kind === 'matmul' ? 8 * (s.m * s.k + (s.mask === undefined ? s.k * s.n : 0) + s.m * s.n) : 8 * 4 * s.n + pad8(s.n * BITS);
  return size;
}

/** What the provider keeps until the online comparison: MSB(r) per element of each ReLU step (by step index). */
export type DealerSecrets = Map<number, Uint8Array>;

/**
 * Deals a schedule: the two parties' bundles and the provider's secrets. `maskOf(index, size)` gives the
 * model's mask B (in the clear, the provider's own) for products that have one.
 */
export function deal(schedule: readonly Step[], maskOf?: (index: number, size: number) => BigInt64Array): { bundles: [Uint8Array, Uint8Array]; secrets: DealerSecrets } {
  const size = bundleSize(schedule);
  const out: [Uint8Array, Uint8Array] = [new Uint8Array(size), new Uint8Array(size)];
  const secrets: DealerSecrets = new Map();
  let off = 0;
  const put = (pair: [BigInt64Array, BigInt64Array]) => {
    for (const p of [0, 1] as const) out[p].set(new Uint8Array(pair[p].buffer, pair[p].byteOffset, pair[p].byteLength), off);
    off += pair[0].byteLength;
  };
  schedule.forEach((s, index) => {
    if (s.kind === 'matmul') {
      const a = randomRing(s.m * s.k);
      if (s.mask !== undefined) {
        if (maskOf === undefined) throw new RangeError(`step ${index} multiplies by masked weight ${s.mask}, and no mask was given`);
        put(share(a)); put(share(matmul(a, maskOf(s.mask, s.k * s.n), s.m, s.k, s.n)));
        return;
      }
      const b = randomRing(s.k * s.n);
      put(share(a)); put(share(b)); put(share(matmul(a, b, s.m, s.k, s.n)));
      return;
    }
    const r = randomRing(s.n);
    const a = randomRing(s.n), b = randomRing(s.n);
    put(share(r)); put(share(a)); put(share(b)); put(share(mul(a, b)));
    const words = new Uint32Array(r.buffer, r.byteOffset, s.n * 2);
    const msb = new Uint8Array(s.n);
    const x0 = randomModP(s.n * BITS);
    for (let e = 0; e < s.n; e++) {
      const lo = words[2 * e]!, hi = words[2 * e + 1]!;
      msb[e] = hi >>> 31;
      for (let i = 0; i < BITS; i++) {
        const bit = i < 32 ? (lo >>> i) & 1 : (hi >>> (i - 32)) & 1;
        const k = e * BITS + i;
        out[0][off + k] = x0[k]!;
        out[1][off + k] = (bit - x0[k]! + P) % P;
      }
    }
    off += pad8(s.n * BITS);
    secrets.set(index, msb);
  });
  return { bundles: out, secrets };
}

/** Ring multiplications a schedule's dealing costs (the products C = A·B and the ReLU triples). */
export function dealCost(schedule: readonly Step[]): number {
  let ops = 0;
  for (const s of schedule) ops += s.kind === 'matmul' ? s.m * s.k * s.n : s.n * (1 + BITS);
  return ops;
}

/** Work done between two yields to the event loop while dealing (ring multiplications). */
const DEAL_SLICE = 1 << 18;

/**
 * `deal`, in slices of about DEAL_SLICE multiplications with the event loop served between them, so a
 * large schedule does not stall the provider node; stops (rejecting with `signal`'s reason) between two
 * slices once `signal` aborts.
 */
export async function dealAsync(schedule: readonly Step[], maskOf?: (index: number, size: number) => BigInt64Array, signal?: AbortSignal): Promise<{ bundles: [Uint8Array, Uint8Array]; secrets: DealerSecrets }> {
  const pause = async () => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    signal?.throwIfAborted();
  };
  signal?.throwIfAborted();
  const size = bundleSize(schedule);
  const out: [Uint8Array, Uint8Array] = [new Uint8Array(size), new Uint8Array(size)];
  const secrets: DealerSecrets = new Map();
  let off = 0;
  const put = (pair: [BigInt64Array, BigInt64Array]) => {
    for (const p of [0, 1] as const) out[p].set(new Uint8Array(pair[p].buffer, pair[p].byteOffset, pair[p].byteLength), off);
    off += pair[0].byteLength;
  };
  /** A·B by blocks of rows, a pause after each. */
  const product = async (a: BigInt64Array, b: BigInt64Array, m: number, k: number, n: number) => {
    const c = new BigInt64Array(m * n);
    const rows = Math.max(1, Math.floor(DEAL_SLICE / Math.max(1, k * n)));
    for (let r = 0; r < m; r += rows) {
      const r1 = Math.min(m, r + rows);
      c.set(matmul(a.subarray(r * k, r1 * k), b, r1 - r, k, n), r * n);
      if (r1 < m) await pause();
    }
    return c;
  };
  for (let index = 0; index < schedule.length; index++) {
    const s = schedule[index]!;
    if (s.kind === 'matmul') {
      const a = randomRing(s.m * s.k);
      if (s.mask !== undefined) {
        if (maskOf === undefined) throw new RangeError(`step ${index} multiplies by masked weight ${s.mask}, and no mask was given`);
        put(share(a)); put(share(await product(a, maskOf(s.mask, s.k * s.n), s.m, s.k, s.n)));
      } else {
        const b = randomRing(s.k * s.n);
        put(share(a)); put(share(b)); put(share(await product(a, b, s.m, s.k, s.n)));
      }
      await pause();
      continue;
    }
    const r = randomRing(s.n);
    const a = randomRing(s.n), b = randomRing(s.n);
    put(share(r)); put(share(a)); put(share(b)); put(share(mul(a, b)));
    const words = new Uint32Array(r.buffer, r.byteOffset, s.n * 2);
    const msb = new Uint8Array(s.n);
    const x0 = randomModP(s.n * BITS);
    const slice = Math.max(1, Math.floor(DEAL_SLICE / BITS));
    for (let e = 0; e < s.n; e++) {
      const lo = words[2 * e]!, hi = words[2 * e + 1]!;
      msb[e] = hi >>> 31;
      for (let i = 0; i < BITS; i++) {
        const bit = i < 32 ? (lo >>> i) & 1 : (hi >>> (i - 32)) & 1;
        const k = e * BITS + i;
        out[0][off + k] = x0[k]!;
        out[1][off + k] = (bit - x0[k]! + P) % P;
      }
      if ((e + 1) % slice === 0) await pause();
    }
    off += pad8(s.n * BITS);
    secrets.set(index, msb);
    await pause();
  }
  return { bundles: out, secrets };
}

/** Reads one party's bundle back into per-step parts (views, no copy when aligned). */
export function parseBundle(schedule: readonly Step[], bundle: Uint8Array): StepPart[] {
  if (bundle.length !== bundleSize(schedule)) {
    throw new RangeError(`a bundle of ${bundle.length} bytes does not fit this schedule (${bundleSize(schedule)} bytes)`);
  }
  const bytes = bundle.byteOffset % 8 === 0 ? bundle : new Uint8Array(bundle); // a copy (Buffer.slice would not copy)
  let off = 0;
  const ring = (n: number) => {
    const v = new BigInt64Array(bytes.buffer, bytes.byteOffset + off, n);
    off += 8 * n;
    return v;
  };
  return schedule.map((s) => {
    // A masked product's b is the model's mask share, filled in by the evaluation.
    if (s.kind === 'matmul') return { a: ring(s.m * s.k), b: s.mask === undefined ? ring(s.k * s.n) : new BigInt64Array(0), c: ring(s.m * s.n) };
    const r = ring(s.n);
    const triple = { a: ring(s.n), b: ring(s.n), c: ring(s.n) };
    const rBits = bytes.subarray(off, off + s.n * BITS);
    off += pad8(s.n * BITS);
    return { r, rBits, triple };
  });
}

/** Uniform values in Z_67, by rejection from crypto randomness. */
function randomModP(n: number): Uint8Array {
  const out = new Uint8Array(n);
  const limit = 256 - (256 % P);
  let filled = 0;
  while (filled < n) {
    const raw = randomBytes(Math.max(64, Math.ceil((n - filled) * 1.3)));
    for (let i = 0; i < raw.length && filled < n; i++) if (raw[i]! < limit) out[filled++] = raw[i]! % P;
  }
  return out;
}

export type { Party };
