// Acceptance: models built in code train on the real UCI digits through derived plans in onnxruntime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { featureStats, readCsvDataset, splitDataset, standardize, type Dataset } from '../../src/compute/data';
import { cnn, mlp, modelParams } from '../../src/compute/plan';
import { evaluateModel, train, trainSteps, type TrainProgress } from '../../src/compute/train';
import { loadModel } from '../../src/compute/backend';
import { GridError } from '../../src/core/errors';

const DIGITS = join(__dirname, '../../media/datasets/digits.csv.gz');
const single = { intraOpNumThreads: 1 };

async function digits(): Promise<{ train: Dataset; test: Dataset }> {
  const ds = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  assert.deepEqual(ds.features.dims, [1797, 64]);
  assert.equal(ds.classes, 10);
  return splitDataset(ds, 0.2, 42);
}

test('an MLP 64-64-10 trained centrally through its plan reaches at least 96% test accuracy on digits (80/20)', async (t) => {
  const { train: tr, test: te } = await digits();
  const model = mlp([64, 64, 10], { seed: 1 });
  const events: TrainProgress[] = [];
  const r = await train(tr, {
    model, loss: 'cross_entropy', optimizer: 'adam', hyper: { lr: 0.002 }, epochs: 40, batchSize: 32, seed: 1,
    validationSplit: 0.1, loadOptions: single, onProgress: (p) => events.push(p),
  });
  const m = await evaluateModel(r.model, te, { loss: 'cross_entropy', loadOptions: single });
  t.diagnostic(`digits MLP 64-64-10: test accuracy ${(m.accuracy * 100).toFixed(2)}%, loss ${m.loss.toFixed(4)}, ${Math.round(r.samples / r.seconds)} samples/s`);
  assert.ok(m.accuracy >= 0.96, `test accuracy ${m.accuracy}`);
  // Progress: every epoch reported once with validation metrics, ETA reaching zero, loss going down.
  const epochs = events.filter((e) => e.kind === 'epoch');
  assert.equal(epochs.length, 40);
  assert.ok(epochs.every((e) => e.validation && e.validation.accuracy > 0));
  assert.ok(events.some((e) => e.kind === 'batch'));
  assert.equal(epochs.at(-1)!.etaSeconds, 0);
  assert.ok(epochs.at(-1)!.loss < epochs[0]!.loss / 4, 'training loss falls');
  assert.ok(r.validation!.accuracy > 0.9);
  // The trained model is a plain model: same graph, new initializers, servable by onnxruntime.
  const h = await loadModel(r.model, single);
  assert.deepEqual(h.signature.inputs, [{ name: 'input', dtype: 'float32', dims: ['N', 64] }]);
  const out = await h.run({ input: { dtype: 'float32', dims: [1, 64], data: te.features.data.subarray(0, 64) } });
  assert.deepEqual(out.logits!.dims, [1, 10]);
  await h.dispose();
  const before = modelParams(model)['fc1.weight']!.data as Float32Array, after = modelParams(r.model)['fc1.weight']!.data as Float32Array;
  assert.notDeepEqual(after, before);
});

test('a small CNN on the 8x8 digits trains well above chance', async (t) => {
  const { train: tr, test: te } = await digits();
  const r = await train(tr, { model: cnn({ seed: 1 }), loss: 'cross_entropy', optimizer: 'adam', hyper: { lr: 0.005 }, epochs: 8, batchSize: 32, seed: 1, loadOptions: single });
  const m = await evaluateModel(r.model, te, { loss: 'cross_entropy', loadOptions: single });
  t.diagnostic(`digits CNN (conv8-pool-conv16-pool-fc): test accuracy ${(m.accuracy * 100).toFixed(2)}% after 8 epochs`);
  assert.ok(m.accuracy > 0.85, `test accuracy ${m.accuracy}`);
});

test('a CNN taking [N, 1, 8, 8] images trains on the flat digits rows', async () => {
  const { train: tr, test: te } = await digits();
  const model = cnn({ seed: 2, imageInput: true, channels: [4, 8] });
  const r = await train(tr, { model, loss: 'cross_entropy', optimizer: 'adam', hyper: { lr: 0.01 }, epochs: 2, batchSize: 64, loadOptions: single });
  const m = await evaluateModel(r.model, te, { loss: 'cross_entropy', loadOptions: single });
  assert.ok(m.accuracy > 0.6, `test accuracy ${m.accuracy}`);
  await assert.rejects(train(tr, { model: cnn({ side: 4, imageInput: true }), loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batchSize: 8 }), (e: unknown) => e instanceof GridError && /rows of shape \[1, 4, 4\] \(16 values\), the dataset has 64 features/.test(e.message));
});

test('training is cancelled by its AbortSignal between batches', async () => {
  const { train: tr } = await digits();
  const ac = new AbortController();
  const it = trainSteps(tr, { model: mlp([64, 16, 10]), loss: 'cross_entropy', optimizer: 'sgd', epochs: 50, batchSize: 16, progressEvery: 1, signal: ac.signal, loadOptions: single });
  const first = await it.next();
  assert.equal(first.done, false);
  ac.abort();
  await assert.rejects(it.next(), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_ABORTED' && /epoch 1, batch 2/.test(e.message));
});

test('differential privacy clips and noises the returned update, and says how', async () => {
  const { train: tr } = await digits();
  const model = mlp([64, 16, 10], { seed: 3 });
  const start = modelParams(model);
  const r = await train(tr, { model, loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batchSize: 64, loadOptions: single, privacy: { clipNorm: 0.5, noiseMultiplier: 0 } });
  assert.equal(r.privacy!.clipNorm, 0.5);
  assert.ok(r.privacy!.clipped && r.privacy!.updateNorm > 0.5);
  let sq = 0;
  for (const [name, t] of Object.entries(r.params)) {
    const a = t.data as Float32Array, b = start[name]!.data as Float32Array;
    for (let i = 0; i < a.length; i++) sq += (a[i]! - b[i]!) ** 2;
  }
  assert.ok(Math.abs(Math.sqrt(sq) - 0.5) < 1e-3, `clipped update norm ${Math.sqrt(sq)}`);
});

test('bad training input is a coded error before any work', async () => {
  const { train: tr } = await digits();
  await assert.rejects(train(tr, { model: mlp([32, 10]), loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batchSize: 8 }), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_INPUT' && /takes 32 features per row, the dataset has 64/.test(e.message));
  await assert.rejects(train(tr, { model: mlp([64, 10]), loss: 'cross_entropy', optimizer: 'sgd', epochs: 0, batchSize: 8 }), { name: 'RangeError', message: /opts.epochs/ });
});

test('the other bundled UCI sets train through plans once standardized (iris, wine, breast cancer)', async (t) => {
  for (const [file, classes, want] of [['iris.csv', 3, 0.9], ['wine_data.csv', 3, 0.9], ['breast_cancer.csv', 2, 0.9]] as const) {
    const ds = await readCsvDataset(join(__dirname, '../../media/datasets', file));
    assert.equal(ds.classes, classes);
    const { train: tr0, test: te0 } = splitDataset(ds, 0.2, 3);
    const stats = featureStats(tr0);
    const tr = standardize(tr0, stats), te = standardize(te0, stats);
    const r = await train(tr, { model: mlp([ds.features.dims[1]!, 16, classes], { seed: 4 }), loss: 'cross_entropy', optimizer: 'adam', hyper: { lr: 0.01 }, epochs: 30, batchSize: 16, loadOptions: single });
    const m = await evaluateModel(r.model, te, { loss: 'cross_entropy', loadOptions: single });
    t.diagnostic(`${file}: test accuracy ${(m.accuracy * 100).toFixed(1)}%`);
    assert.ok(m.accuracy >= want, `${file}: ${m.accuracy}`);
  }
});
