// Secure comparison for ReLU: the sign of a shared x, with help from the crypto provider, by
// SecureNN's PrivateCompare (Wagh, Gupta & Chandran 2019, Algorithm 3) over an edaBit-style mask.
//
// Offline the provider deals, per element, a random r ∈ Z_{2^64} shared in the ring, the 63 low bits of
// r shared bit by bit over Z_67, and it keeps MSB(r). Online:
//   1. The share holders open c = x + r (uniform: r masks x) to each other, never to the provider.
//      With c' = c mod 2^63, r' = r mod 2^63: MSB(x) = MSB(c) ⊕ MSB(r) ⊕ [r' > c'] (the borrow).
//   2. Each computes, bit by bit, shares over Z_67 of values c_i of which exactly one is zero iff
//      β ⊕ [r' > c'] = 1 (β a random bit both draw from their shared seed), multiplies each by a random
//      non-zero s_i and permutes them: the provider, summing the two messages, sees only whether a zero
//      is there, i.e. β' = β ⊕ [r' > c'], which β makes a uniform bit.
//   3. The provider returns fresh ring shares of β' ⊕ MSB(r); the holders fold in the public β ⊕ MSB(c)
//      and get shares of MSB(x). ReLU(x) = x · (1 − MSB(x)) is then one Beaver product.
// Neither share holder learns anything (all it sees is c, uniform, and fresh shares); the provider sees
// masked, permuted values and one uniform bit per element. Valid for |x| < 2^63.

import type { Party } from './shares';
import { randomRing } from './ring';
import { SharedPrg } from './prg';

/** The prime of the bit shares: larger than 63 + 2, so a sum of up to 65 ones never wraps to zero. */
export const P = 67;
/** Bits compared: the ring's 64 bits but the sign. */
export const BITS = 63;

/**
 * Step 2 for one party: the masked, permuted values to send to the provider (BITS bytes per element),
 * and γ = β ⊕ MSB(c) per element, kept for step 3. `c` is the opened x + r, `rBits` this party's bit
 * shares of r' (BITS per element, least significant first).
 */
export function maskCompare(party: Party, c: BigInt64Array, rBits: Uint8Array, prg: SharedPrg): { masked: Uint8Array; gamma: Uint8Array } {
  const n = c.length;
  if (rBits.length !== n * BITS) throw new RangeError(`bit shares hold ${rBits.length} values, not ${n}×${BITS}`);
  const words = new Uint32Array(c.buffer, c.byteOffset, n * 2);
  const masked = new Uint8Array(n * BITS);
  const gamma = new Uint8Array(n);
  const j = party;
  const ci = new Uint8Array(BITS);
  const s = new Uint8Array(BITS);
  const perm = new Uint8Array(BITS);
  for (let e = 0; e < n; e++) {
    const beta = prg.byte() & 1;
    for (let i = 0; i < BITS; i++) s[i] = prg.below(P - 1) + 1;
    for (let i = 0; i < BITS; i++) perm[i] = i;
    for (let i = BITS - 1; i > 0; i--) {
      const k = prg.below(i + 1);
      const t = perm[i]!; perm[i] = perm[k]!; perm[k] = t;
    }
    let lo = words[2 * e]!;
    let hi = words[2 * e + 1]! & 0x7fffffff;
    gamma[e] = beta ^ (words[2 * e + 1]! >>> 31);
    if (beta === 1) {
      // Compare against t = c' + 1 (x ≤ c' ⇔ x < t).
      if (lo === 0xffffffff && hi === 0x7fffffff) {
        // t = 2^63: every r' is ≤ c', so the provider must see exactly one zero (at a hidden place).
        for (let i = 0; i < BITS; i++) {
          const u = prg.below(P);
          ci[i] = j === 0 ? u : (P - u + (i === 0 ? 0 : 1)) % P;
        }
        writeMasked(masked, e, ci, s, perm);
        continue;
      }
      lo = (lo + 1) >>> 0;
      if (lo === 0) hi += 1;
    }
    let sumW = 0;
    for (let i = BITS - 1; i >= 0; i--) {
      const t = i < 32 ? (lo >>> i) & 1 : (hi >>> (i - 32)) & 1;
      const x = rBits[e * BITS + i]!;
      const w = t === 1 ? (j + P - x) % P : x;
      const v = beta === 0 ? j * t - x + j + sumW : -j * t + x + j + sumW;
      ci[i] = ((v % P) + P) % P;
      sumW = (sumW + w) % P;
    }
    writeMasked(masked, e, ci, s, perm);
  }
  return { masked, gamma };
}

function writeMasked(out: Uint8Array, e: number, ci: Uint8Array, s: Uint8Array, perm: Uint8Array): void {
  for (let i = 0; i < BITS; i++) out[e * BITS + perm[i]!] = (s[i]! * ci[i]!) % P;
}

/** The provider's step: β' per element from the two masked messages, returned as ring shares of β' ⊕ MSB(r). */
export function providerCompare(masked0: Uint8Array, masked1: Uint8Array, msbR: Uint8Array): [BigInt64Array, BigInt64Array] {
  const n = msbR.length;
  if (masked0.length !== n * BITS || masked1.length !== n * BITS) {
    throw new RangeError(`masked comparisons of ${masked0.length} and ${masked1.length} values, expected ${n}×${BITS}`);
  }
  const s0 = randomRing(n);
  const s1 = new BigInt64Array(n);
  for (let e = 0; e < n; e++) {
    let zero = 0;
    for (let i = e * BITS; i < (e + 1) * BITS; i++) if ((masked0[i]! + masked1[i]!) % P === 0) zero = 1;
    s1[e] = BigInt(zero ^ msbR[e]!) - s0[e]!;
  }
  return [s0, s1];
}

/** Step 3: this party's ring share of 1 − MSB(x) (the ReLU derivative), from the provider's share and γ. */
export function signShare(party: Party, fromProvider: BigInt64Array, gamma: Uint8Array): BigInt64Array {
  const n = gamma.length;
  if (fromProvider.length !== n) throw new RangeError(`the provider returned ${fromProvider.length} shares for ${n} comparisons`);
  const out = new BigInt64Array(n);
  for (let e = 0; e < n; e++) {
    const b = fromProvider[e]!;
    // MSB(x) = b ⊕ γ: b itself when γ = 0, 1 − b when γ = 1 (the constant goes to party 0 only).
    const msb = gamma[e] === 0 ? b : (party === 0 ? 1n - b : -b);
    out[e] = (party === 0 ? 1n : 0n) - msb;
  }
  return out;
}
