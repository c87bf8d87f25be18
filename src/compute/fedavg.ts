// Federated averaging: the sample-weighted mean of K parameter sets. Large float32 tensors go through
// WebAssembly SIMD (./fedavg-wasm.ts); the rest through plain loops, four sources per pass so the output
// is read and written about K/4 times instead of K.

import { gridError } from '../core/errors';
import type { NamedTensors, Tensor } from '../core/protocol/tensor';
import { simdSummer } from './fedavg-wasm';

export interface ClientUpdate {
  /** Parameters after local training (all float32, or all float64). */
  params: NamedTensors;
  /** Samples trained on; the update's weight. */
  samples: number;
}

type FloatArray = Float32Array | Float64Array;

// float32 is the common case and gets its own monomorphic loops: four sources per pass, two elements
// per iteration (measured ~1.5x faster than the plain loop in V8).
function sum4f32(out: Float32Array, a: Float32Array, b: Float32Array, c: Float32Array, d: Float32Array, wa: number, wb: number, wc: number, wd: number, first: boolean): void {
  const n = out.length;
  let i = 0;
  if (first) {
    for (; i + 1 < n; i += 2) {
      out[i] = wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      out[i + 1] = wa * a[i + 1]! + wb * b[i + 1]! + wc * c[i + 1]! + wd * d[i + 1]!;
    }
    for (; i < n; i++) out[i] = wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
  } else {
    for (; i + 1 < n; i += 2) {
      out[i] = out[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      out[i + 1] = out[i + 1]! + wa * a[i + 1]! + wb * b[i + 1]! + wc * c[i + 1]! + wd * d[i + 1]!;
    }
    for (; i < n; i++) out[i] = out[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
  }
}

function sum1f32(out: Float32Array, a: Float32Array, wa: number, first: boolean): void {
  const n = out.length;
  if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]!;
  else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]!;
}

function sum1f64(out: Float64Array, a: Float64Array, wa: number, first: boolean): void {
  const n = out.length;
  if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]!;
  else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]!;
}

function weightedSum(out: FloatArray, srcs: FloatArray[], w: number[]): void {
  let k = 0;
  const simd = out instanceof Float32Array && out.length >= 4096 ? simdSummer() : null;
  if (simd) {
    simd.sum(out as Float32Array, srcs as Float32Array[], w);
  } else if (out instanceof Float32Array) {
    const s = srcs as Float32Array[];
    for (; k + 4 <= s.length; k += 4) sum4f32(out, s[k]!, s[k + 1]!, s[k + 2]!, s[k + 3]!, w[k]!, w[k + 1]!, w[k + 2]!, w[k + 3]!, k === 0);
    for (; k < s.length; k++) sum1f32(out, s[k]!, w[k]!, k === 0);
  } else {
    for (; k < srcs.length; k++) sum1f64(out, srcs[k] as Float64Array, w[k]!, k === 0);
  }
}

/**
 * FedAvg: Σ_k (n_k / Σn) · params_k for every tensor. All updates must carry the same names, dtypes and
 * dims (GRID_ERR_INVALID_INPUT naming the first mismatch). `into` reuses output tensors of the same
 * shapes (a round loop's global model), sparing a fresh allocation and its page faults per round.
 */
export function fedAvg(updates: readonly ClientUpdate[], opts: { into?: NamedTensors } = {}): NamedTensors {
  if (!Array.isArray(updates) || updates.length === 0) throw new RangeError('updates must be a non-empty array');
  let total = 0;
  updates.forEach((u, k) => {
    if (u === null || typeof u !== 'object' || typeof u.params !== 'object') throw new TypeError(`updates[${k}] must be { params, samples }`);
    if (!Number.isFinite(u.samples) || u.samples < 0) throw new RangeError(`updates[${k}].samples must be a non-negative number, got ${u.samples}`);
    total += u.samples;
  });
  if (total <= 0) throw new RangeError('the updates were trained on 0 samples in total');
  const weights = updates.map((u) => u.samples / total);
  const ref = updates[0]!.params;
  const names = Object.keys(ref);
  for (let k = 1; k < updates.length; k++) {
    const other = Object.keys(updates[k]!.params);
    if (other.length !== names.length || other.some((n) => !(n in ref))) {
      throw gridError('INVALID_INPUT', `update ${k} has tensors [${other.join(', ')}] but update 0 has [${names.join(', ')}]`, { update: k });
    }
  }
  const out: NamedTensors = {};
  for (const name of names) {
    const t0 = ref[name]!;
    if (t0.dtype !== 'float32' && t0.dtype !== 'float64') throw gridError('INVALID_INPUT', `tensor "${name}" is ${t0.dtype}; FedAvg averages float32/float64 tensors`, { param: name });
    const srcs: FloatArray[] = updates.map((u, k) => {
      const t = u.params[name]!;
      if (t.dtype !== t0.dtype || t.dims.length !== t0.dims.length || t.dims.some((d: number, i: number) => d !== t0.dims[i]) || t.data.length !== t0.data.length) {
        throw gridError('INVALID_INPUT', `tensor "${name}" of update ${k} is ${t.dtype} [${t.dims.join(', ')}], update 0 has ${t0.dtype} [${t0.dims.join(', ')}]`, { param: name, update: k });
      }
      return t.data as FloatArray;
    });
    const reuse = opts.into?.[name];
    if (reuse && (reuse.dtype !== t0.dtype || reuse.data.length !== t0.data.length)) throw new RangeError(`opts.into["${name}"] does not match the updates' ${t0.dtype} [${t0.dims.join(', ')}]`);
    const data = (reuse?.data as FloatArray | undefined) ?? (t0.dtype === 'float32' ? new Float32Array(t0.data.length) : new Float64Array(t0.data.length));
    weightedSum(data, srcs, weights);
    out[name] = reuse ?? ({ dtype: t0.dtype, dims: [...t0.dims], data } as Tensor);
  }
  return out;
}
