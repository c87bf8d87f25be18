// FedAvg over a cycle's reports in PyGrid's diff convention (diff = old − new, SJS syft-model.js):
// new = old − Σ wᵢ·diffᵢ / Σ wᵢ. A running sum in float64, one model's worth whatever the number of
// reports; PyGrid workers weigh 1, ours weigh their sample count.

import { SimdRunningSum } from '../../compute/runsum-wasm';
import type { StateTensor } from './state';

export class RunningSum {
  /** One float64 per parameter, all tensors end to end (in WebAssembly memory where SIMD is available). */
  private readonly sum: Float64Array;
  private readonly length: number;
  private readonly simd: SimdRunningSum | null;
  private readonly offsets: number[];
  private readonly shapes: number[][];
  weight = 0;
  reports = 0;

  constructor(shapes: readonly (readonly number[])[]) {
    this.shapes = shapes.map((s) => [...s]);
    this.offsets = [];
    let n = 0;
    for (const s of shapes) {
      this.offsets.push(n);
      n += s.reduce((a, b) => a * b, 1);
    }
    this.length = n;
    this.simd = SimdRunningSum.create(n);
    this.sum = this.simd?.sum ?? new Float64Array(n);
  }

  /** Adds one diff (already checked: shapes match, values finite) with its weight (> 0). */
  add(diff: readonly StateTensor[], weight: number): void {
    const sum = this.sum;
    for (let i = 0; i < diff.length; i++) {
      const at = this.offsets[i]!;
      const d = diff[i]!.data;
      if (this.simd !== null) this.simd.add(at, d, weight);
      else for (let k = 0; k < d.length; k++) sum[at + k]! += weight * d[k]!;
    }
    this.weight += weight;
    this.reports += 1;
  }

  /** The weighted mean diff Σ wᵢ·diffᵢ / Σ wᵢ, per parameter (zeros with no reports): what an averaging plan is fed. */
  mean(): StateTensor[] {
    const w = this.weight;
    return this.shapes.map((dims, i) => {
      const at = this.offsets[i]!;
      const out = new Float32Array(dims.reduce((a, b) => a * b, 1));
      if (w > 0) for (let k = 0; k < out.length; k++) out[k] = this.sum[at + k]! / w;
      return { dims: [...dims], data: out };
    });
  }

  /** The sum's float64 values as bytes (a view, not a copy: what the node stores to keep the sum durable). */
  bytes(): Uint8Array {
    return new Uint8Array(this.sum.buffer, this.sum.byteOffset, this.length * 8);
  }

  /** Replaces the sum with stored `bytes` (from bytes()) covering `reports` reports of total `weight`. */
  load(bytes: Uint8Array, reports: number, weight: number): void {
    if (bytes.length !== this.length * 8) throw new RangeError(`a stored running sum of ${this.length} values must be ${this.length * 8} bytes, got ${bytes.length}`);
    this.bytes().set(bytes);
    this.reports = reports;
    this.weight = weight;
  }

  /**
   * Adds another stored sum (bytes from bytes(), e.g. another replica's partial sum of the same cycle)
   * covering `reports` reports of total `weight`: the sum of all reports, whichever sum took each in.
   */
  merge(bytes: Uint8Array, reports: number, weight: number): void {
    if (bytes.length !== this.length * 8) throw new RangeError(`a stored running sum of ${this.length} values must be ${this.length * 8} bytes, got ${bytes.length}`);
    // A copy: a file's bytes need not be 8-byte aligned.
    const other = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const sum = this.sum;
    for (let k = 0; k < this.length; k++) sum[k]! += other[k]!;
    this.reports += reports;
    this.weight += weight;
  }

  /** old − mean(diff): the parameters after averaging. With no reports, the old parameters. */
  apply(old: readonly StateTensor[]): StateTensor[] {
    const w = this.weight;
    return old.map((t, i) => {
      const at = this.offsets[i]!;
      const out = new Float32Array(t.data.length);
      for (let k = 0; k < out.length; k++) out[k] = w > 0 ? t.data[k]! - this.sum[at + k]! / w : t.data[k]!;
      return { dims: [...this.shapes[i]!], data: out };
    });
  }
}

/** A diff as stored in its report row: float32 tensors end to end (shapes come from the process). */
export function packDiff(diff: readonly StateTensor[]): Uint8Array {
  const n = diff.reduce((a, t) => a + t.data.length, 0);
  const out = new Float32Array(n);
  let at = 0;
  for (const t of diff) { out.set(t.data, at); at += t.data.length; }
  return new Uint8Array(out.buffer);
}

export function unpackDiff(bytes: Uint8Array, shapes: readonly (readonly number[])[]): StateTensor[] {
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  let at = 0;
  return shapes.map((s) => {
    const n = s.reduce((a, b) => a * b, 1);
    const data = all.subarray(at, at + n);
    at += n;
    return { dims: [...s], data };
  });
}

/**
 * Buffers for the floats of decoded diffs, reused from report to report (decodeState's `place`): a
 * report's diff is garbage once its batch committed, and a new half-megabyte ArrayBuffer per report kept
 * V8 running full collections for memory that was free again. At most `max` are kept; a buffer of
 * another size (another process's model) is dropped rather than kept.
 */
export class DiffBuffers {
  private readonly free: ArrayBuffer[] = [];
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  /** A buffer of exactly `byteLength` bytes, reused when one is free. */
  take(byteLength: number): ArrayBuffer {
    const b = this.free.pop();
    return b !== undefined && b.byteLength === byteLength ? b : new ArrayBuffer(byteLength);
  }

  /** Gives back a buffer from take(); nothing may read or write it afterwards. */
  give(buffer: ArrayBuffer): void {
    if (this.free.length < this.max) this.free.push(buffer);
  }
}
