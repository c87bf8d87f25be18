// The one mapping from callers' options to the train message, and the one rule for which datasets take
// part in a FedAvg run (the CLI, the palette and the notebook all go through these).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DatasetInfo } from '../../src/core/protocol/messages';
import { TRAINING_DEFAULTS, TrainRequest } from '../../src/core/protocol/training-messages';
import { lossFor, trainRequest } from '../../src/core/training-request';
import { datasetsByTag } from '../../src/federation/participants';

test('trainRequest fills the shared defaults and leaves the permission flags out unless given (the node then inherits them)', () => {
  const r = trainRequest({ model: 'digits-mlp', datasetId: 'digits', loss: 'cross_entropy' });
  assert.deepEqual(r, {
    model: 'digits-mlp', dataset_id: 'digits', loss: 'cross_entropy',
    optimizer: TRAINING_DEFAULTS.optimizer, batch_size: TRAINING_DEFAULTS.batchSize, epochs: TRAINING_DEFAULTS.epochs,
  });
  assert.ok(!('allow_download' in r) && !('allow_remote_inference' in r) && !('lr' in r));
  const { model: _m, ...wire } = r;
  assert.ok(TrainRequest.safeParse(wire).success, 'a valid train message');
});

test('trainRequest maps every option to its field of the train message', () => {
  const params = { w: { dtype: 'float32' as const, dims: [1], data: new Float32Array([1]) } };
  const { model, params: p, ...wire } = trainRequest({
    model: 'm@2', params, datasetId: 'd', loss: 'mse', optimizer: 'momentum', lr: 0.1, momentum: 0.9, batchSize: 8, epochs: 3,
    label: 'y', featureScale: 0.5, seed: 7, splitSeed: 8, validationSplit: 0.1, testSplit: 0.2, progressEvery: 4,
    privacy: { clipNorm: 1, noiseMultiplier: 0.5 }, fedProxMu: 0.01, output: 'update', outputId: 'out', allowDownload: false, allowRemoteInference: true,
  });
  assert.equal(model, 'm@2');
  assert.equal(p, params);
  assert.deepEqual(wire, {
    dataset_id: 'd', loss: 'mse', optimizer: 'momentum', lr: 0.1, momentum: 0.9, batch_size: 8, epochs: 3,
    label: 'y', feature_scale: 0.5, seed: 7, split_seed: 8, validation_split: 0.1, test_split: 0.2, progress_every: 4,
    privacy: { clip_norm: 1, noise_multiplier: 0.5 }, fedprox_mu: 0.01, output: 'update', output_model_id: 'out', allow_download: false, allow_remote_inference: true,
  });
  assert.ok(TrainRequest.safeParse(wire).success, 'a valid train message');
});

const dataset = (id: string, tags: string[], classes?: string[]): DatasetInfo => ({
  id, name: id, description: '', tags, format: 'csv', size: 100, created: '2026-01-01T00:00:00Z', schema: { rows: 10, ...(classes !== undefined && { classes }) },
});

test('lossFor: cross-entropy for a dataset with classes or the classification tag, else squared error', () => {
  assert.equal(lossFor(dataset('a', [], ['0', '1'])), 'cross_entropy');
  assert.equal(lossFor(dataset('b', ['classification'])), 'cross_entropy');
  assert.equal(lossFor(dataset('c', ['housing'])), 'mse');
});

test('datasetsByTag: every dataset carrying the tags; where none does, the dataset whose id or name is the one tag', () => {
  const ds = [dataset('digits-train', ['digits', 'train']), dataset('digits-test', ['digits', 'test']), dataset('iris', ['flowers'])];
  assert.deepEqual(datasetsByTag(ds, ['digits']).map((d) => d.id), ['digits-train', 'digits-test']);
  assert.deepEqual(datasetsByTag(ds, ['digits', 'train']).map((d) => d.id), ['digits-train']);
  assert.deepEqual(datasetsByTag(ds, ['iris']).map((d) => d.id), ['iris'], 'named by id');
  assert.deepEqual(datasetsByTag(ds, ['iris', 'flowers']).map((d) => d.id), [], 'a name is not a tag among several');
  assert.deepEqual(datasetsByTag([dataset('flowers', []), ...ds], ['flowers']).map((d) => d.id), ['iris'], 'a tag wins over a name');
  assert.deepEqual(datasetsByTag(ds, ['cats']), []);
});
