// Weights masked once per model. A Beaver product X·W opens E = X − A and F = W − B; with a fresh B per
// query the holders would re-open W's mask every time, which is most of a small query's traffic. Instead
// the crypto provider derives one mask B per (model upload, weight) from its own node key, hands each
// holder its share of B, and the holders open F = W − B once and keep it; each query then deals only
// A and C = A·B and opens only X − A. F reveals nothing (B is uniform and used for W alone); E stays
// uniform (A is fresh per query). The provider keeps no state: it derives B again when it deals.

import { createCipheriv, createHash } from 'node:crypto';
import { sub } from './ring';

/** What the provider signs to derive a model's mask key: deterministic (Ed25519), bound to the upload and its two holders. */
export function maskKeyMessage(nonce: string, holders: readonly [string, string]): Buffer {
  return Buffer.from(`grid-smpc-mask/v1\n${nonce}\n${holders[0]}\n${holders[1]}`, 'utf8');
}

/** `size` pseudo-random ring elements from a 32-byte key and a label (AES-256-CTR). */
export function expandRing(key: Uint8Array, label: string, size: number): BigInt64Array {
  const iv = createHash('sha256').update(label).digest().subarray(0, 16);
  const bytes = createCipheriv('aes-256-ctr', key, iv).update(new Uint8Array(size * 8));
  return new BigInt64Array(bytes.buffer, bytes.byteOffset, size);
}

/** The provider's mask of weight `index` and the holders' shares of it, from the mask key. */
export function maskOf(key: Uint8Array, index: number, size: number): { b: BigInt64Array; shares: [BigInt64Array, BigInt64Array] } {
  const b = expandRing(key, `B/${index}`, size);
  const s0 = expandRing(key, `B0/${index}`, size);
  return { b, shares: [s0, sub(b, s0)] };
}

/** The mask key from the provider's signature over maskKeyMessage. */
export function maskKey(signature: Uint8Array): Uint8Array {
  return createHash('sha256').update(signature).digest();
}
