// Fixed-point encoding of real numbers into Z_{2^64}: x ↦ round(x · 2^16), negative numbers in two's
// complement.
//
// Why 2^16: a product of two encoded values carries scale 2^32 until it is truncated, and must stay
// below 2^63 in magnitude to be read back (and below ~2^62 for ReLU's sign test and for the local
// truncation to fail rarely, see truncate.ts). With 16 fractional bits that leaves ±2^31 for the real
// value of a product before truncation, far above what a normalised MLP computes, while
// the resolution is 2^-16 ≈ 1.5e-5 per value. Each Gemm adds at most Σ|w|·2^-17 of rounding error from the
// encoding of its inputs plus ±1 ulp (2^-16) from truncation, so a 64-wide layer stays around 1e-3,
// inside the 1e-2 parity budget. More fractional bits buy precision but shrink that headroom and raise
// the truncation failure probability (2^(bits of the value + 1 − 64)); fewer lose parity.

export const FRACTION_BITS = 16;
export const SCALE = 2 ** FRACTION_BITS;
/** Largest magnitude an encoded value may have (its product with another must stay far below 2^63). */
export const MAX_ABS = 2 ** 20;

/** Encodes reals at scale 2^16; refuses non-finite values and values beyond ±2^20 (the headroom above). */
export function encode(values: ArrayLike<number>, what = 'value'): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v) || Math.abs(v) > MAX_ABS) {
      throw new RangeError(`${what} ${i} is ${v}: encrypted inference encodes reals in fixed point at scale 2^${FRACTION_BITS} and takes finite values within ±${MAX_ABS}`);
    }
    out[i] = BigInt(Math.round(v * SCALE));
  }
  return out;
}

/** Decodes ring elements at scale 2^16 (two's complement) into float64. */
export function decode(values: BigInt64Array): Float64Array {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Number(values[i]!) / SCALE;
  return out;
}
