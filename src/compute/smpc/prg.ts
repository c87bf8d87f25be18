// Randomness the two share holders draw in step without the crypto provider seeing it: AES-256-CTR
// keyed by a per-query seed that the leading share holder sends to the other over their link. Used for
// the masks and permutation of the comparison protocol (compare.ts).

import { createCipheriv, createHash } from 'node:crypto';

export class SharedPrg {
  private readonly cipher;
  private buf = new Uint8Array(0);
  private pos = 0;

  constructor(seed: Uint8Array, label: string) {
    if (seed.length !== 32) throw new RangeError(`a shared seed is 32 bytes, got ${seed.length}`);
    const iv = createHash('sha256').update(label).digest().subarray(0, 16);
    this.cipher = createCipheriv('aes-256-ctr', seed, iv);
  }

  byte(): number {
    if (this.pos === this.buf.length) {
      this.buf = this.cipher.update(new Uint8Array(8192));
      this.pos = 0;
    }
    return this.buf[this.pos++]!;
  }

  /** Uniform in [0, n) for n ≤ 256, by rejection (no modulo bias: the masks must be exactly uniform). */
  below(n: number): number {
    const limit = 256 - (256 % n);
    for (;;) {
      const b = this.byte();
      if (b < limit) return b % n;
    }
  }
}
