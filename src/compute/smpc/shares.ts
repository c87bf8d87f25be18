// Additive 2-party secret sharing over Z_{2^64}: x = x0 + x1 (mod 2^64), x0 uniform from the OS's
// cryptographic random source. Either share alone is a uniform ring element, independent of x.

import { randomRing, sub, add } from './ring';

export type Party = 0 | 1;

/** Splits ring elements into two shares; the first is fresh crypto randomness. */
export function share(secret: BigInt64Array): [BigInt64Array, BigInt64Array] {
  const s0 = randomRing(secret.length);
  return [s0, sub(secret, s0)];
}

export function reconstruct(s0: BigInt64Array, s1: BigInt64Array): BigInt64Array {
  return add(s0, s1);
}

/**
 * Adds a public value to a sharing: only party 0 adds it, so the shares still sum to secret + value.
 */
export function addPublic(party: Party, s: BigInt64Array, value: BigInt64Array): BigInt64Array {
  return party === 0 ? add(s, value) : s;
}
