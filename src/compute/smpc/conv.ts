// Convolution and pooling on shares. Rearranging shares by public indices (im2col, pooling windows,
// zero padding: 0 = 0 + 0) is local, so Conv becomes one Beaver matrix product, AveragePool a sum times
// a public fixed-point constant, and MaxPool a tournament of max(a, b) = b + ReLU(a − b), each round one
// batched secure comparison.

/** Output size of a sliding window along one axis. */
export function slide(size: number, kernel: number, padBefore: number, padAfter: number, stride: number): number {
  return Math.floor((size + padBefore + padAfter - kernel) / stride) + 1;
}

/**
 * x [batch, C, H, W] → columns [batch·oh·ow, C·kh·kw], column index (c·kh + i)·kw + j: the layout of
 * an ONNX Conv weight [outC, C, kh, kw] flattened per output channel.
 */
export function im2col(x: BigInt64Array, batch: number, c: number, h: number, w: number, kh: number, kw: number, pads: readonly number[], strides: readonly number[]): { cols: BigInt64Array; oh: number; ow: number } {
  const [pt, pl, pb, pr] = pads as [number, number, number, number];
  const [sh, sw] = strides as [number, number];
  const oh = slide(h, kh, pt, pb, sh), ow = slide(w, kw, pl, pr, sw);
  const k = c * kh * kw;
  const cols = new BigInt64Array(batch * oh * ow * k);
  for (let b = 0; b < batch; b++) for (let y = 0; y < oh; y++) for (let x0 = 0; x0 < ow; x0++) {
    const row = ((b * oh + y) * ow + x0) * k;
    for (let ch = 0; ch < c; ch++) for (let i = 0; i < kh; i++) {
      const yy = y * sh + i - pt;
      if (yy < 0 || yy >= h) continue;
      for (let j = 0; j < kw; j++) {
        const xx = x0 * sw + j - pl;
        if (xx < 0 || xx >= w) continue;
        cols[row + (ch * kh + i) * kw + j] = x[((b * c + ch) * h + yy) * w + xx]!;
      }
    }
  }
  return { cols, oh, ow };
}

/** [batch·oh·ow, outC] (rows of positions) → [batch, outC, oh, ow]. */
export function rowsToChannels(y: BigInt64Array, batch: number, outC: number, oh: number, ow: number): BigInt64Array {
  const out = new BigInt64Array(y.length);
  for (let b = 0; b < batch; b++) for (let p = 0; p < oh * ow; p++) for (let o = 0; o < outC; o++) {
    out[(b * outC + o) * oh * ow + p] = y[(b * oh * ow + p) * outC + o]!;
  }
  return out;
}

/**
 * The pooling windows of x [batch, C, H, W] (no padding): kh·kw vectors, vector q holding window
 * element q of every output [batch, C, oh, ow].
 */
export function poolWindows(x: BigInt64Array, batch: number, c: number, h: number, w: number, kh: number, kw: number, sh: number, sw: number): { windows: BigInt64Array[]; oh: number; ow: number } {
  const oh = slide(h, kh, 0, 0, sh), ow = slide(w, kw, 0, 0, sw);
  const n = batch * c * oh * ow;
  const windows = Array.from({ length: kh * kw }, () => new BigInt64Array(n));
  for (let bc = 0; bc < batch * c; bc++) for (let y = 0; y < oh; y++) for (let x0 = 0; x0 < ow; x0++) {
    const o = (bc * oh + y) * ow + x0;
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) windows[i * kw + j]![o] = x[(bc * h + y * sh + i) * w + x0 * sw + j]!;
  }
  return { windows, oh, ow };
}

/** How many comparisons each round of a max tournament over `count` values compares, per output. */
export function tournamentRounds(count: number): number[] {
  const rounds: number[] = [];
  while (count > 1) {
    const pairs = Math.floor(count / 2);
    rounds.push(pairs);
    count = pairs + (count % 2);
  }
  return rounds;
}
