// Truncation after a fixed-point product, done locally by each share holder (SecureML, Mohassel & Zhang
// 2017, Theorem 1): party 0 shifts its share right arithmetically, party 1 shifts the negation of its
// share and negates back. Nothing is exchanged and the crypto provider is not involved.
//
// Why local rather than provider-assisted: it costs no round and no correlated randomness, and its
// failure is bounded and documented. For a shared x with |x| < 2^ℓx the result is ⌊x/2^f⌋ or
// ⌊x/2^f⌋ + 1 (±1 ulp = 2^-16) except with probability at most 2^(ℓx + 1 − 64), when the random share
// lands in the wrap-around window and the result is off by about 2^(64−f) (a wildly wrong value, not a
// small error). A product truncated here carries scale 2^32, so ℓx = 32 + log2|v| for its real value v:
// for |v| < 2^8 (a normalised MLP's pre-activations are far smaller) a failure is below 2^-23 ≈ 1.2e-7
// per element, and a 64-row query of the digits MLP (64·64 + 64·10 = 4,736 truncations) fails with
// probability below 5.6e-4. docs/smpc.md.

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
