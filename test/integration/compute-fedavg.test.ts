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

test('FedAvg over 3 parties split by label (non-IID) still learns; FedProx reported beside it', async (t) => {
  const ds = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  const { train: tr, test: te } = splitDataset(ds, 0.2, 42);
  const parts = partitionDataset(tr, 3, 'label', 7);
  const acc = await federate(parts, te, 20);
  const prox = await federate(parts, te, 20, 0.1);
  t.diagnostic(`non-IID by label: FedAvg final ${(acc.at(-1)! * 100).toFixed(1)}% (best ${(Math.max(...acc) * 100).toFixed(1)}%), FedProx μ=0.1 final ${(prox.at(-1)! * 100).toFixed(1)}%`);
  // Each party sees only 3-4 of the 10 digits, so no party alone can pass 40%.
  assert.ok(acc.at(-1)! > 0.6, `final ${acc.at(-1)}`);
});
