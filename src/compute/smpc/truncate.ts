// Truncation after a fixed-point product, done locally by each share holder (SecureML, Mohassel & Zhang
// 2017, Theorem 1): party 0 shifts its share right arithmetically, party 1 shifts the negation of its
// share and negates back. Nothing is exchanged and the crypto provider is not involved.
//
// Why local rather than provider-assisted: it costs no round and no correlated randomness, and its
// failure is bounded and documented. For a shared x with |x| < 2^ℓx the result is ⌊x/2^f⌋ or
// ⌊x/2^f⌋ + 1 (±1 ulp = 2^-16) except with probability at most 2^(ℓx + 1 − 64), when the random share
// lands in the wrap-around window and the result is off by about 2^(64−f). A product of two values
// within ±2^7 (±128, far above a normalised MLP's activations) has ℓx ≤ 7 + 7 + 32 = 46 bits, so a
// failure per element is below 2^-17 — over the 7,000 truncations of a digits-MLP batch of 100, about
// 5% for the batch at worst, and in practice (|values| < 8) below 2^-23 per element. docs/smpc.md.

import { FRACTION_BITS } from './fixed';
import type { Party } from './shares';

const SHIFT = BigInt(FRACTION_BITS);

export function truncate(party: Party, x: BigInt64Array, bits: bigint = SHIFT): BigInt64Array {
  const out = new BigInt64Array(x.length);
  if (party === 0) {
    for (let i = 0; i < x.length; i++) out[i] = x[i]! >> bits;
  } else {
    // asIntN: the negation is read as a ring element (−(−2^63) is −2^63 in the ring, not 2^63).
    for (let i = 0; i < x.length; i++) out[i] = -(BigInt.asIntN(64, -x[i]!) >> bits);
  }
  return out;
}
