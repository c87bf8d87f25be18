// Tabular datasets as tensors: CSV parsing (pure), gzip, splits and partitions for training and
// federated experiments. Features are float32 [N, F]; class labels int64 [N].

import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { gridError } from '../core/errors';
import type { Tensor } from '../core/protocol/tensor';
import { seededRandom } from './plan/models';

export interface Dataset {
  features: Tensor<'float32'>;
  /** Class indices (int64 [N]) or regression targets (float32 [N] / [N, K]). */
  labels: Tensor<'int64'> | Tensor<'float32'>;
}

export interface CsvOptions {
  /** Column holding the label; negative counts from the end. The last column by default. */
  labelColumn?: number;
  /** Whether the first line is a header; 'auto' (default) treats a first line with a non-numeric field as one. */
  header?: boolean | 'auto';
  /** 'class' (default): integer labels as int64; 'value': float32 targets. */
  labelKind?: 'class' | 'value';
  /** Multiply every feature by this (e.g. 1/16 for the 0..16 digits pixels). */
  featureScale?: number;
}

export interface ParsedDataset extends Dataset {
  /** Header fields when the file had a header line. */
  header?: string[];
  /** Number of classes (max label + 1) for class labels. */
  classes?: number;
}

/** Parses CSV text (one sample a line, numeric fields) into tensors; bad rows are GRID_ERR_INVALID_DATASET naming the line. */
export function parseCsvDataset(text: string, opts: CsvOptions = {}): ParsedDataset {
  if (typeof text !== 'string') throw new TypeError('text must be a string');
  const lines = text.split(/\r?\n/);
  while (lines.length && lines[lines.length - 1]!.trim() === '') lines.pop();
  if (lines.length === 0) throw gridError('INVALID_DATASET', 'the CSV file is empty');
  let first = 0;
  let header: string[] | undefined;
  const firstFields = lines[0]!.split(',').map((s) => s.trim());
  const numeric = (s: string) => s !== '' && Number.isFinite(Number(s));
  if (opts.header === true || (opts.header !== false && firstFields.some((f) => !numeric(f)))) {
    header = firstFields;
    first = 1;
  }
  const n = lines.length - first;
  if (n <= 0) throw gridError('INVALID_DATASET', 'the CSV file has a header but no rows');
  const cols = lines[first]!.split(',').length;
  if (cols < 2) throw gridError('INVALID_DATASET', 'each row needs at least one feature and a label');
  const labelCol = (opts.labelColumn ?? -1) < 0 ? cols + (opts.labelColumn ?? -1) : opts.labelColumn!;
  if (!Number.isInteger(labelCol) || labelCol < 0 || labelCol >= cols) throw new RangeError(`opts.labelColumn ${opts.labelColumn} is outside the ${cols} columns`);
  const f = cols - 1;
  const features = new Float32Array(n * f);
  const kind = opts.labelKind ?? 'class';
  const classLabels = kind === 'class' ? new BigInt64Array(n) : undefined;
  const valueLabels = kind === 'value' ? new Float32Array(n) : undefined;
  const scale = opts.featureScale ?? 1;
  let maxLabel = -1;
  for (let r = 0; r < n; r++) {
    const line = lines[first + r]!;
    const fields = line.split(',');
    if (fields.length !== cols) throw gridError('INVALID_DATASET', `line ${first + r + 1} has ${fields.length} fields, expected ${cols}`, { line: first + r + 1 });
    let k = 0;
    for (let c = 0; c < cols; c++) {
      const v = Number(fields[c]);
      if (!Number.isFinite(v) || fields[c]!.trim() === '') throw gridError('INVALID_DATASET', `line ${first + r + 1}, column ${c + 1}: ${JSON.stringify(fields[c])} is not a number`, { line: first + r + 1, column: c + 1 });
      if (c === labelCol) {
        if (classLabels) {
          if (!Number.isInteger(v) || v < 0) throw gridError('INVALID_DATASET', `line ${first + r + 1}: class label ${fields[c]} is not a non-negative integer`, { line: first + r + 1 });
          classLabels[r] = BigInt(v);
          if (v > maxLabel) maxLabel = v;
        } else valueLabels![r] = v;
      } else {
        features[r * f + k++] = v * scale;
      }
    }
  }
  const out: ParsedDataset = {
    features: { dtype: 'float32', dims: [n, f], data: features },
    labels: classLabels ? { dtype: 'int64', dims: [n], data: classLabels } : { dtype: 'float32', dims: [n], data: valueLabels! },
  };
  if (header) out.header = header;
  if (classLabels) out.classes = maxLabel + 1;
  return out;
}

/** Reads a .csv or .csv.gz file into a dataset. */
export async function readCsvDataset(path: string, opts: CsvOptions = {}): Promise<ParsedDataset> {
  let bytes: Buffer = await readFile(path);
  if (path.endsWith('.gz') || (bytes[0] === 0x1f && bytes[1] === 0x8b)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw gridError('INVALID_DATASET', `${path}: not a readable gzip file (${(err as Error).message})`);
    }
  }
  return parseCsvDataset(bytes.toString('utf8'), opts);
}

export function datasetSize(d: Dataset): number {
  return d.features.dims[0]!;
}

/** The rows `idx` of a dataset, copied into new tensors. */
export function takeRows(d: Dataset, idx: ArrayLike<number>): Dataset {
  const f = d.features.dims[1]!;
  const n = idx.length;
  const features = new Float32Array(n * f);
  const lw = d.labels.data.length / datasetSize(d);
  const labels = d.labels.dtype === 'int64' ? new BigInt64Array(n * lw) : new Float32Array(n * lw);
  for (let i = 0; i < n; i++) {
    const r = idx[i]!;
    features.set(d.features.data.subarray(r * f, r * f + f), i * f);
    (labels as Float32Array).set((d.labels.data as Float32Array).subarray(r * lw, r * lw + lw), i * lw);
  }
  return {
    features: { dtype: 'float32', dims: [n, f], data: features },
    labels: { dtype: d.labels.dtype, dims: [n, ...d.labels.dims.slice(1)], data: labels } as Dataset['labels'],
  };
}

/** A seeded permutation of 0..n-1. */
export function shuffledIndices(n: number, seed: number): Uint32Array {
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const rand = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = idx[i]!; idx[i] = idx[j]!; idx[j] = t;
  }
  return idx;
}

/** Shuffles (seeded) and splits off the last `testFraction` of rows. */
export function splitDataset(d: Dataset, testFraction: number, seed = 0): { train: Dataset; test: Dataset } {
  if (!(testFraction >= 0 && testFraction < 1)) throw new RangeError(`testFraction must be in [0, 1), got ${testFraction}`);
  const n = datasetSize(d);
  const idx = shuffledIndices(n, seed);
  const nTest = Math.round(n * testFraction);
  return { train: takeRows(d, idx.subarray(0, n - nTest)), test: takeRows(d, idx.subarray(n - nTest)) };
}

/** Splits rows into k parts: 'iid' deals shuffled rows round-robin; 'label' sorts by class first (non-IID: each part sees few classes). */
export function partitionDataset(d: Dataset, k: number, how: 'iid' | 'label', seed = 0): Dataset[] {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
  const n = datasetSize(d);
  let idx = Array.from(shuffledIndices(n, seed));
  if (how === 'label') {
    if (d.labels.dtype !== 'int64') throw new TypeError('a by-label partition needs class labels');
    const lab = d.labels.data as BigInt64Array;
    idx = idx.sort((a, b) => Number(lab[a]! - lab[b]!) || a - b);
    const per = Math.ceil(n / k);
    return Array.from({ length: k }, (_, p) => takeRows(d, idx.slice(p * per, Math.min(n, (p + 1) * per))));
  }
  return Array.from({ length: k }, (_, p) => takeRows(d, idx.filter((_, i) => i % k === p)));
}

export interface FeatureStats {
  mean: Float32Array;
  std: Float32Array;
}

/** Per-feature mean and standard deviation (a constant feature gets std 1, so it maps to 0). */
export function featureStats(d: Dataset): FeatureStats {
  const n = datasetSize(d), f = d.features.dims[1]!;
  const x = d.features.data;
  const mean = new Float64Array(f), sq = new Float64Array(f);
  for (let r = 0; r < n; r++) for (let c = 0; c < f; c++) { const v = x[r * f + c]!; mean[c] += v; sq[c] += v * v; }
  const m = new Float32Array(f), s = new Float32Array(f);
  for (let c = 0; c < f; c++) {
    const mu = mean[c]! / Math.max(1, n);
    const variance = Math.max(0, sq[c]! / Math.max(1, n) - mu * mu);
    m[c] = mu;
    s[c] = variance > 1e-12 ? Math.sqrt(variance) : 1;
  }
  return { mean: m, std: s };
}

/**
 * (x − mean) / std per feature, with the statistics of `stats` (compute them on the training split and
 * apply the same to validation and test rows). Returns a new dataset; labels are shared.
 */
export function standardize(d: Dataset, stats: FeatureStats = featureStats(d)): Dataset {
  const n = datasetSize(d), f = d.features.dims[1]!;
  if (stats.mean.length !== f || stats.std.length !== f) throw new RangeError(`stats are for ${stats.mean.length} features, the dataset has ${f}`);
  const x = d.features.data;
  const out = new Float32Array(n * f);
  for (let r = 0; r < n; r++) for (let c = 0; c < f; c++) out[r * f + c] = (x[r * f + c]! - stats.mean[c]!) / stats.std[c]!;
  return { features: { dtype: 'float32', dims: [n, f], data: out }, labels: d.labels };
}
