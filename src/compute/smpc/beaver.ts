// Beaver multiplication on shares (Beaver 1991), for matrices and elementwise. With a dealt triple
// (A, B, C = A·B) the parties open E = X − A and F = Y − B (uniform: A and B mask X and Y) and each
// computes its share of X·Y = E·F + E·B + A·F + C locally; E·F is added by party 0 only.

import { add, matmul, mul, sub } from './ring';
import type { MatmulPart } from './correlations';
import type { Party } from './shares';

/** This party's halves of E and F, to send to the other party (E first). */
export function beaverOpen(x: BigInt64Array, y: BigInt64Array, t: MatmulPart): Uint8Array {
  return concat(sub(x, t.a), sub(y, t.b));
}

/** Both parties' openings summed: E and F in the clear. */
export function beaverOpened(mine: Uint8Array, theirs: Uint8Array, eLength: number, fLength: number): { e: BigInt64Array; f: BigInt64Array } {
  if (theirs.length !== 8 * (eLength + fLength)) {
    throw new RangeError(`the other share holder opened ${theirs.length} bytes, expected ${8 * (eLength + fLength)}`);
  }
  const m = split(mine, eLength), t = split(theirs, eLength);
  return { e: add(m[0], t[0]), f: add(m[1], t[1]) };
}

/** Share of X·Y for X [m,k], Y [k,n] (still at doubled fixed-point scale: truncate after). */
export function beaverMatmul(party: Party, e: BigInt64Array, f: BigInt64Array, t: MatmulPart, m: number, k: number, n: number): BigInt64Array {
  // Party 0: E·(F + B0) + A0·F + C0; party 1: E·B1 + A1·F + C1.
  const left = matmul(e, party === 0 ? add(f, t.b) : t.b, m, k, n);
  const right = matmul(t.a, f, m, k, n);
  return add(add(left, right), t.c);
}

/** Share of the elementwise product X ⊙ Y. */
export function beaverMul(party: Party, e: BigInt64Array, f: BigInt64Array, t: MatmulPart): BigInt64Array {
  const z = add(add(mul(e, party === 0 ? add(f, t.b) : t.b), mul(t.a, f)), t.c);
  return z;
}

export function concat(...parts: BigInt64Array[]): Uint8Array {
  const size = parts.reduce((s, p) => s + p.byteLength, 0);
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) { out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), off); off += p.byteLength; }
  return out;
}

/** Ring elements from bytes (copied when misaligned); RangeError when the length is not a multiple of 8 or not `expected`. */
export function ringOf(bytes: Uint8Array, expected?: number): BigInt64Array {
  if (bytes.length % 8 !== 0 || (expected !== undefined && bytes.length !== expected * 8)) {
    throw new RangeError(`${bytes.length} bytes are not ${expected ?? 'a whole number of'} ring elements`);
  }
  const b = bytes.byteOffset % 8 === 0 ? bytes : new Uint8Array(bytes); // a copy (Buffer.slice would not copy)
  return new BigInt64Array(b.buffer, b.byteOffset, b.length / 8);
}

function split(bytes: Uint8Array, first: number): [BigInt64Array, BigInt64Array] {
  const all = ringOf(bytes);
  return [all.subarray(0, first), all.subarray(first)];
}
