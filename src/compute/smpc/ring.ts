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

/** [m, k] × [k, n] → [m, n], modulo 2^64. */
export function matmul(a: BigInt64Array, b: BigInt64Array, m: number, k: number, n: number): BigInt64Array {
  if (a.length !== m * k) throw new RangeError(`a holds ${a.length} elements, not ${m}×${k}`);
  if (b.length !== k * n) throw new RangeError(`b holds ${b.length} elements, not ${k}×${n}`);
  const out = new BigInt64Array(m * n);
  // Row of b read contiguously: accumulate a[i, p] * b[p, :] into a BigInt row, wrap when stored.
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

/** [rows, cols] → [cols, rows]. */
export function transpose<T extends BigInt64Array | Float32Array | Float64Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as new (n: number) => T)(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

function sameLength(a: BigInt64Array, b: BigInt64Array): void {
  if (a.length !== b.length) throw new RangeError(`ring vectors of different lengths: ${a.length} and ${b.length}`);
}
