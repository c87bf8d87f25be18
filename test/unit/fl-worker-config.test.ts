// Pure parts of our FL worker: reading client_config into training settings (with refusals that name
// the key), the diff's convention and order, and the CLI's process names and local .npy datasets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { processArg, readWorkerDataset } from '../../src/cli/fl';
import { mlp } from '../../src/compute/plan';
import { writeNpy } from '../../src/core/npy';
import { flDiff, flParams, flTrainConfig } from '../../src/federation';

test('flTrainConfig: PySyft\'s keys and ours, defaults for the rest, refusals that name the key', () => {
  assert.deepEqual(flTrainConfig({ name: 'm', version: '1', batch_size: 8, lr: 0.05, max_updates: 3 }), {
    epochs: 1, batchSize: 8, lr: 0.05, maxUpdates: 3, loss: 'cross_entropy', optimizer: 'sgd', momentum: undefined, fedProxMu: undefined, privacy: undefined,
  });
  // KotlinSyft hosts send planArgs as strings.
  assert.equal(flTrainConfig({ batch_size: '16' }).batchSize, 16);
  assert.deepEqual(flTrainConfig({ privacy: { clip_norm: 1 } }).privacy, { clipNorm: 1, noiseMultiplier: 0 });
  assert.throws(() => flTrainConfig({ batch_size: 0 }), { code: 'GRID_ERR_INVALID_INPUT', message: /client_config\.batch_size must be a positive whole number, got 0/ });
  assert.throws(() => flTrainConfig({ optimizer: 'rmsprop' }), { message: /client_config\.optimizer must be one of sgd, momentum, adam/ });
  assert.throws(() => flTrainConfig({ lr: -1 }), { message: /client_config\.lr must be a number ≥ 0/ });
  assert.throws(() => flTrainConfig({ privacy: { noise_multiplier: 1 } }), { message: /clip_norm must be a positive number/ });
});

test('flDiff is old − new, one tensor per float32 initializer in graph order; untrained ones give zeros', () => {
  const model = mlp([3, 2], { seed: 1 });
  const params = flParams(model);
  assert.ok(params.length >= 2);
  const first = params[0]!;
  const moved = { [first.name]: { dtype: 'float32' as const, dims: first.tensor.dims, data: first.tensor.data.map((v) => v - 0.5) } };
  const diff = flDiff(model, moved);
  assert.deepEqual(diff.map((d) => d.dims), params.map((p) => p.tensor.dims));
  for (const v of diff[0]!.data) assert.ok(Math.abs(v - 0.5) < 1e-6);
  for (const v of diff[1]!.data) assert.equal(v, 0);
});

test('processArg and readWorkerDataset (.npy features with labels in a file or in the last column)', async (t) => {
  assert.deepEqual(processArg('digits@1.0', undefined), { name: 'digits', version: '1.0' });
  assert.deepEqual(processArg('digits', '2'), { name: 'digits', version: '2' });
  assert.throws(() => processArg('digits@1', '2'), { message: /names a version already/ });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-fl-unit-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'xy.npy'), writeNpy({ dtype: 'float64', dims: [2, 3], data: Float64Array.from([1, 2, 0, 3, 4, 2]) }));
  const d = await readWorkerDataset(path.join(dir, 'xy.npy'), { featureScale: 0.5 });
  assert.deepEqual(d.features.dims, [2, 2]);
  assert.deepEqual([...d.features.data], [0.5, 1, 1.5, 2]);
  assert.deepEqual([...d.labels.data as BigInt64Array], [0n, 2n]);
  fs.writeFileSync(path.join(dir, 'y.npy'), writeNpy({ dtype: 'int32', dims: [3], data: Int32Array.from([0, 1, 1]) }));
  await assert.rejects(readWorkerDataset(path.join(dir, 'xy.npy'), { labels: path.join(dir, 'y.npy') }), { code: 'GRID_ERR_INVALID_DATASET', message: /labels must be \[2\]/ });
  fs.writeFileSync(path.join(dir, 'bad.npy'), writeNpy({ dtype: 'float32', dims: [1, 2], data: Float32Array.from([1, 0.5]) }));
  await assert.rejects(readWorkerDataset(path.join(dir, 'bad.npy'), {}), { message: /label 0.5 is not a class number/ });
});
