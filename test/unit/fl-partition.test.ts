// How an FL simulation deals a dataset out (src/federation/fl-simulation/partition.ts): every row goes to
// exactly one worker; IID parts are equal; by-label parts hold exactly K classes; Dirichlet with a small
// α skews the label mix and the sizes, a large α approaches IID; the same seed gives the same parts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Dataset } from '../../src/compute/data';
import { parsePartition, partitionRows } from '../../src/federation/fl-simulation';

/** 1000 rows, 10 classes of 100. */
function dataset(): Dataset {
  const n = 1000;
  return {
    features: { dtype: 'float32', dims: [n, 1], data: Float32Array.from({ length: n }, (_, i) => i) },
    labels: { dtype: 'int64', dims: [n], data: BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 10)) },
  };
}

const classesOf = (rows: number[]) => new Set(rows.map((r) => r % 10));

function assertCover(parts: number[][], n: number): void {
  const all = parts.flat().sort((a, b) => a - b);
  assert.deepEqual(all, Array.from({ length: n }, (_, i) => i), 'every row in exactly one part');
}

test('iid: equal parts, every class everywhere, all rows once', () => {
  const parts = partitionRows(dataset(), 8, { kind: 'iid' }, 1);
  assertCover(parts, 1000);
  assert.deepEqual(parts.map((p) => p.length), Array(8).fill(125));
  for (const p of parts) assert.equal(classesOf(p).size, 10);
});

test('label:K: each worker holds exactly K classes and every class is held', () => {
  for (const k of [1, 2, 3]) {
    const parts = partitionRows(dataset(), 10, { kind: 'label', labelsPerWorker: k }, 4);
    assertCover(parts, 1000);
    for (const p of parts) assert.equal(classesOf(p).size, k, `label:${k}`);
  }
  assert.throws(() => partitionRows(dataset(), 10, { kind: 'label', labelsPerWorker: 11 }), RangeError);
});

test('dirichlet: small α skews label mixes and sizes, large α is near IID; seeded', () => {
  const spread = (parts: number[][]) => {
    // Mean over workers of the share of its largest class.
    return parts.reduce((a, p) => a + Math.max(...Array.from({ length: 10 }, (_, c) => p.filter((r) => r % 10 === c).length)) / p.length, 0) / parts.length;
  };
  const skewed = partitionRows(dataset(), 10, { kind: 'dirichlet', alpha: 0.1 }, 7);
  const even = partitionRows(dataset(), 10, { kind: 'dirichlet', alpha: 100 }, 7);
  assertCover(skewed, 1000);
  assertCover(even, 1000);
  assert.ok(skewed.every((p) => p.length >= 1));
  assert.ok(spread(skewed) > 0.5, `α=0.1: a worker's largest class is ${spread(skewed)} of its rows`);
  assert.ok(spread(even) < 0.2, `α=100: a worker's largest class is ${spread(even)} of its rows`);
  const sizes = (ps: number[][]) => ps.map((p) => p.length);
  assert.ok(Math.max(...sizes(skewed)) - Math.min(...sizes(skewed)) > Math.max(...sizes(even)) - Math.min(...sizes(even)));
  assert.deepEqual(partitionRows(dataset(), 10, { kind: 'dirichlet', alpha: 0.1 }, 7), skewed, 'same seed, same parts');
});

test('parsePartition reads the CLI spelling and refuses anything else', () => {
  assert.deepEqual(parsePartition('iid'), { kind: 'iid' });
  assert.deepEqual(parsePartition('label:3'), { kind: 'label', labelsPerWorker: 3 });
  assert.deepEqual(parsePartition('dirichlet:0.3'), { kind: 'dirichlet', alpha: 0.3 });
  for (const bad of ['shards', 'label:0', 'dirichlet:-1', 'iid:2', 'label:x']) assert.throws(() => parsePartition(bad), RangeError, bad);
  assert.throws(() => partitionRows(dataset(), 2000, { kind: 'iid' }), /cannot give each of 2000 workers a row/);
});
