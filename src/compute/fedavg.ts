// Federated averaging: the sample-weighted mean of K parameter sets. Plain loops over typed arrays,
// four sources per pass so the output is read and written ceil(K/4) times instead of K.

import { gridError } from '../core/errors';
import type { NamedTensors, Tensor } from '../core/protocol/tensor';

export interface ClientUpdate {
  /** Parameters after local training (all float32, or all float64). */
  params: NamedTensors;
  /** Samples trained on; the update's weight. */
  samples: number;
}

type FloatArray = Float32Array | Float64Array;

function weightedSum(out: FloatArray, srcs: FloatArray[], w: number[]): void {
  const n = out.length;
  let k = 0;
  // First pass writes, later passes accumulate.
  for (let first = true; k < srcs.length; first = false) {
    const take = Math.min(4, srcs.length - k);
    const a = srcs[k]!, wa = w[k]!;
    if (take === 4) {
      const b = srcs[k + 1]!, c = srcs[k + 2]!, d = srcs[k + 3]!, wb = w[k + 1]!, wc = w[k + 2]!, wd = w[k + 3]!;
      if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
    } else if (take === 3) {
      const b = srcs[k + 1]!, c = srcs[k + 2]!, wb = w[k + 1]!, wc = w[k + 2]!;
      if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]! + wb * b[i]! + wc * c[i]!;
      else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]! + wb * b[i]! + wc * c[i]!;
    } else if (take === 2) {
      const b = srcs[k + 1]!, wb = w[k + 1]!;
      if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]! + wb * b[i]!;
      else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]! + wb * b[i]!;
    } else {
      if (first) for (let i = 0; i < n; i++) out[i] = wa * a[i]!;
      else for (let i = 0; i < n; i++) out[i] = out[i]! + wa * a[i]!;
    }
    k += take;
  }
}

/**
 * FedAvg: Σ_k (n_k / Σn) · params_k for every tensor. All updates must carry the same names, dtypes and
 * dims (GRID_ERR_INVALID_INPUT naming the first mismatch).
 */
export function fedAvg(updates: readonly ClientUpdate[]): NamedTensors {
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
    const data = t0.dtype === 'float32' ? new Float32Array(t0.data.length) : new Float64Array(t0.data.length);
    weightedSum(data, srcs, weights);
    out[name] = { dtype: t0.dtype, dims: [...t0.dims], data } as Tensor;
  }
  return out;
}
