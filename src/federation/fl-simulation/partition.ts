// How a simulation deals a dataset out to its workers (Flower's partitioners are the anchor): IID
// (shuffled rows dealt round-robin), non-IID by label (each worker holds k classes, Flower's
// PathologicalPartitioner), or Dirichlet α over each class's rows (Hsu et al. 2019, Flower's
// DirichletPartitioner; small α: skewed label mixes and unequal sizes). Seeded, so a run repeats.

import { datasetSize, shuffledIndices, takeRows, type Dataset } from '../../compute/data';
import { seededRandom } from '../../compute/plan/models';

export type Partition =
  | { kind: 'iid' }
  /** Each worker holds `labelsPerWorker` distinct classes; a class held by several is split evenly among them. */
  | { kind: 'label'; labelsPerWorker: number }
  /** Each class's rows split by proportions drawn from Dirichlet(α, …, α) over the workers. */
  | { kind: 'dirichlet'; alpha: number; minRows?: number };

/** `iid`, `label:2`, `dirichlet:0.5` (the CLI's and the notebook's spelling). */
export function parsePartition(spec: string): Partition {
  const [kind, arg] = spec.split(':', 2) as [string, string | undefined];
  if (kind === 'iid' && arg === undefined) return { kind: 'iid' };
  if (kind === 'label') {
    const k = Number(arg ?? '2');
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`partition ${spec}: label:K needs a whole number of classes per worker ≥ 1`);
    return { kind: 'label', labelsPerWorker: k };
  }
  if (kind === 'dirichlet') {
    const a = Number(arg ?? '0.5');
    if (!(Number.isFinite(a) && a > 0)) throw new RangeError(`partition ${spec}: dirichlet:α needs α > 0`);
    return { kind: 'dirichlet', alpha: a };
  }
  throw new RangeError(`partition ${JSON.stringify(spec)}: expected iid, label:K or dirichlet:α`);
}

function classLabels(d: Dataset, how: string): { labels: number[]; classes: number } {
  if (d.labels.dtype !== 'int64' || d.labels.dims.length !== 1) throw new TypeError(`a ${how} partition needs class labels (int64 [N])`);
  const labels = Array.from(d.labels.data as BigInt64Array, Number);
  return { labels, classes: Math.max(...labels) + 1 };
}

/** Rows of each class, each list shuffled (seeded). */
function rowsByClass(d: Dataset, how: string, seed: number): number[][] {
  const { labels, classes } = classLabels(d, how);
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (const r of shuffledIndices(labels.length, seed)) byClass[labels[r]!]!.push(r);
  return byClass;
}

/** Gamma(shape, 1) by Marsaglia–Tsang (shape < 1 boosted), from a uniform source. */
function gamma(shape: number, rand: () => number): number {
  if (shape < 1) return gamma(shape + 1, rand) * Math.pow(rand() || Number.MIN_VALUE, 1 / shape);
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do {
      // Box–Muller normal.
      x = Math.sqrt(-2 * Math.log(rand() || Number.MIN_VALUE)) * Math.cos(2 * Math.PI * rand());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rand();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u || Number.MIN_VALUE) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

function dirichlet(alpha: number, k: number, rand: () => number): number[] {
  const g = Array.from({ length: k }, () => gamma(alpha, rand));
  const s = g.reduce((a, b) => a + b, 0);
  return s > 0 ? g.map((x) => x / s) : g.map(() => 1 / k);
}

/** Row indices of each of `workers` partitions. */
export function partitionRows(d: Dataset, workers: number, how: Partition, seed = 0): number[][] {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers must be a positive integer, got ${workers}`);
  const n = datasetSize(d);
  if (n < workers) throw new RangeError(`${n} rows cannot give each of ${workers} workers a row`);
  if (how.kind === 'iid') {
    const parts: number[][] = Array.from({ length: workers }, () => []);
    shuffledIndices(n, seed).forEach((r, i) => parts[i % workers]!.push(r));
    return parts;
  }
  if (how.kind === 'label') {
    const byClass = rowsByClass(d, 'by-label', seed);
    const classes = byClass.length;
    const k = how.labelsPerWorker;
    if (!Number.isInteger(k) || k < 1 || k > classes) throw new RangeError(`labelsPerWorker must be a whole number in [1, ${classes}], got ${k}`);
    // Worker i holds classes order[(i·k + j) mod C], j < k: k distinct classes each, and every class held
    // by someone as soon as workers·k ≥ C.
    const order = Array.from(shuffledIndices(classes, seed + 1));
    const holders: number[][] = Array.from({ length: classes }, () => []);
    for (let w = 0; w < workers; w++) for (let j = 0; j < k; j++) holders[order[(w * k + j) % classes]!]!.push(w);
    const parts: number[][] = Array.from({ length: workers }, () => []);
    byClass.forEach((rows, c) => {
      const hs = holders[c]!;
      if (hs.length === 0) return;
      rows.forEach((r, i) => parts[hs[Math.floor((i * hs.length) / rows.length)]!]!.push(r));
    });
    if (parts.some((p) => p.length === 0)) throw new RangeError(`a by-label partition with ${k} classes per worker left a worker without rows (its classes have too few rows for ${workers} workers)`);
    return parts;
  }
  const alpha = how.alpha;
  if (!(Number.isFinite(alpha) && alpha > 0)) throw new RangeError(`alpha must be > 0, got ${alpha}`);
  const minRows = how.minRows ?? 1;
  const byClass = rowsByClass(d, 'Dirichlet', seed);
  const rand = seededRandom(seed + 2);
  // Flower resamples until every partition has its minimum; so do we, a bounded number of times.
  for (let attempt = 0; attempt < 100; attempt++) {
    const parts: number[][] = Array.from({ length: workers }, () => []);
    for (const rows of byClass) {
      const p = dirichlet(alpha, workers, rand);
      let at = 0, acc = 0;
      p.forEach((q, w) => {
        acc += q;
        const end = w === workers - 1 ? rows.length : Math.round(acc * rows.length);
        for (; at < end; at++) parts[w]!.push(rows[at]!);
      });
    }
    if (parts.every((x) => x.length >= minRows)) return parts;
  }
  throw new RangeError(`Dirichlet α=${alpha} over ${workers} workers left a worker with fewer than ${minRows} rows in 100 draws; raise α or use fewer workers`);
}

export function partitionFor(d: Dataset, workers: number, how: Partition, seed = 0): Dataset[] {
  return partitionRows(d, workers, how, seed).map((rows) => takeRows(d, rows));
}
