// Differential privacy on a model update (the difference between trained and starting parameters):
// clip its global L2 norm to C, add Gaussian noise N(0, (σ·C)²) to every coordinate. The report says
// which C and σ were applied so they can be recorded with the model version.

import { randomBytes } from 'node:crypto';
import type { NamedTensors, Tensor } from '../core/protocol/tensor';
import { seededRandom } from './plan/models';

export interface PrivacyOptions {
  /** C: the largest L2 norm the update may have. */
  clipNorm: number;
  /** σ: noise standard deviation in units of C. */
  noiseMultiplier: number;
  /** Only for tests and reproducible experiments; real use draws noise from the OS CSPRNG. */
  seed?: number;
}

export interface PrivacyReport {
  clipNorm: number;
  noiseMultiplier: number;
  /** L2 norm of the update before clipping. */
  updateNorm: number;
  clipped: boolean;
}

function uniformSource(seed: number | undefined): () => number {
  if (seed !== undefined) return seededRandom(seed);
  let pool = randomBytes(0);
  let at = 0;
  return () => {
    if (at + 4 > pool.length) { pool = randomBytes(65536); at = 0; }
    const v = pool.readUInt32LE(at);
    at += 4;
    return v / 4294967296;
  };
}

/** Returns starting + clip(update) + noise for every float tensor in `trained`. */
export function privatizeUpdate(start: NamedTensors, trained: NamedTensors, opts: PrivacyOptions): { params: NamedTensors; report: PrivacyReport } {
  if (!(opts.clipNorm > 0)) throw new RangeError(`opts.clipNorm must be positive, got ${opts.clipNorm}`);
  if (!(opts.noiseMultiplier >= 0)) throw new RangeError(`opts.noiseMultiplier must be non-negative, got ${opts.noiseMultiplier}`);
  let sq = 0;
  for (const [name, t] of Object.entries(trained)) {
    const s = start[name];
    if (!s || s.data.length !== t.data.length) throw new RangeError(`start has no tensor "${name}" of the same size`);
    const a = t.data as Float32Array, b = s.data as Float32Array;
    for (let i = 0; i < a.length; i++) { const d = a[i]! - b[i]!; sq += d * d; }
  }
  const norm = Math.sqrt(sq);
  const scale = norm > opts.clipNorm ? opts.clipNorm / norm : 1;
  const sigma = opts.noiseMultiplier * opts.clipNorm;
  const u = uniformSource(opts.seed);
  const gauss = () => {
    // Box–Muller; 1 − u avoids log(0).
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    return r * Math.cos(2 * Math.PI * u());
  };
  const params: NamedTensors = {};
  for (const [name, t] of Object.entries(trained)) {
    const a = t.data as Float32Array, b = start[name]!.data as Float32Array;
    const out = t.dtype === 'float64' ? new Float64Array(a.length) : new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = b[i]! + (a[i]! - b[i]!) * scale + (sigma > 0 ? sigma * gauss() : 0);
    params[name] = { dtype: t.dtype, dims: [...t.dims], data: out } as Tensor;
  }
  return { params, report: { clipNorm: opts.clipNorm, noiseMultiplier: opts.noiseMultiplier, updateNorm: norm, clipped: scale < 1 } };
}
