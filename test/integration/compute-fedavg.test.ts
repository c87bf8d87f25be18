// FedAvg of locally trained updates, simulated in one process with the same trainer and averaging the
// grid's nodes use: digits split across 3 parties, IID and by label.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { partitionDataset, readCsvDataset, splitDataset, type Dataset } from '../../src/compute/data';
import { fedAvg } from '../../src/compute/fedavg';
import { mlp, modelParams, withParams } from '../../src/compute/plan';
import { evaluateModel, train } from '../../src/compute/train';
import type { NamedTensors } from '../../src/core/protocol/tensor';

const DIGITS = join(__dirname, '../../media/datasets/digits.csv.gz');
const single = { intraOpNumThreads: 1 };

async function federate(parts: Dataset[], test: Dataset, rounds: number, proxMu?: number): Promise<number[]> {
  const model = mlp([64, 64, 10], { seed: 1 });
  let global: NamedTensors = modelParams(model);
  const accuracy: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const updates = [];
    for (const [i, part] of parts.entries()) {
      const res = await train(part, {
        model, params: global, loss: 'cross_entropy', optimizer: 'sgd', hyper: { lr: 0.1, proxMu }, epochs: 2, batchSize: 16, seed: r * 10 + i, loadOptions: single,
        ...(proxMu !== undefined ? { fedProxGlobal: global } : {}),
      });
      updates.push({ params: res.params, samples: part.features.dims[0]! });
    }
    global = fedAvg(updates);
    accuracy.push((await evaluateModel(withParams(model, global), test, { loss: 'cross_entropy', loadOptions: single })).accuracy);
  }
  return accuracy;
}

test('FedAvg over 3 IID parties reaches at least 95% test accuracy on digits within 20 rounds', async (t) => {
  const ds = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  const { train: tr, test: te } = splitDataset(ds, 0.2, 42);
  const acc = await federate(partitionDataset(tr, 3, 'iid', 7), te, 20);
  const first = acc.findIndex((a) => a >= 0.95);
  t.diagnostic(`IID: test accuracy per round ${acc.map((a) => (a * 100).toFixed(1)).join(' ')}; ≥95% first at round ${first + 1}`);
  assert.ok(first >= 0, `best ${Math.max(...acc)}`);
});

test('FedAvg over 3 parties split by label (non-IID) still learns, and so does FedProx', async (t) => {
  const ds = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  const { train: tr, test: te } = splitDataset(ds, 0.2, 42);
  const parts = partitionDataset(tr, 3, 'label', 7);
  const acc = await federate(parts, te, 20);
  const prox = await federate(parts, te, 20, 0.1);
  t.diagnostic(`non-IID by label: FedAvg final ${(acc.at(-1)! * 100).toFixed(1)}% (best ${(Math.max(...acc) * 100).toFixed(1)}%), FedProx μ=0.1 final ${(prox.at(-1)! * 100).toFixed(1)}%`);
  // Each party sees only 3-4 of the 10 digits, so no party alone can pass 40%.
  assert.ok(acc.at(-1)! > 0.6, `final ${acc.at(-1)}`);
  assert.ok(prox.at(-1)! > 0.6, `FedProx final ${prox.at(-1)}`);
});

/** Euclidean distance between two sets of parameters, over every tensor of `b`. */
function distance(a: NamedTensors, b: NamedTensors): number {
  let sum = 0;
  for (const [name, t] of Object.entries(b)) {
    const x = a[name]!.data as Float32Array, y = t.data as Float32Array;
    assert.equal(x.length, y.length, name);
    for (let i = 0; i < y.length; i++) sum += (x[i]! - y[i]!) ** 2;
  }
  return Math.sqrt(sum);
}

test('FedProx keeps a party\'s local model closer to the global one than plain local SGD on the same data, the more so the larger μ', async (t) => {
  const ds = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  const { train: tr } = splitDataset(ds, 0.2, 42);
  // One party of a by-label split: its local optimum is far from a model good for all digits.
  const party = partitionDataset(tr, 3, 'label', 7)[0]!;
  const model = mlp([64, 64, 10], { seed: 1 });
  const global = modelParams(model);
  const local = async (proxMu?: number) => (await train(party, {
    model, params: global, loss: 'cross_entropy', optimizer: 'sgd', hyper: { lr: 0.1, proxMu }, epochs: 2, batchSize: 16, seed: 3, loadOptions: single,
    ...(proxMu !== undefined ? { fedProxGlobal: global } : {}),
  })).params;
  const plain = await local(), mu0 = await local(0);
  const drift = { plain: distance(plain, global), mu0: distance(mu0, global), mu01: distance(await local(0.1), global), mu1: distance(await local(1), global) };
  t.diagnostic(`‖local − global‖ after 2 epochs: plain SGD ${drift.plain.toFixed(3)}, FedProx μ=0 ${drift.mu0.toFixed(3)}, μ=0.1 ${drift.mu01.toFixed(3)}, μ=1 ${drift.mu1.toFixed(3)}`);
  assert.ok(drift.plain > 0.5, `local training moved the model by ${drift.plain} only; the comparison below would say nothing`);
  // μ = 0 is plain SGD: same batches (same seed), same steps, the same parameters bit for bit.
  assert.deepEqual(mu0, plain);
  assert.ok(drift.mu01 < 0.95 * drift.plain, `FedProx μ=0.1 drifted ${drift.mu01}, plain SGD ${drift.plain}`);
  assert.ok(drift.mu1 < 0.8 * drift.mu01, `FedProx μ=1 drifted ${drift.mu1}, μ=0.1 ${drift.mu01}`);
});
