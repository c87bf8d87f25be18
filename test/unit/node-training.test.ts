// Node training pieces without sockets: a job's bounded event history (what a reattaching client gets)
// and how a train request's label names a dataset column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Job } from '../../src/node/training/jobs';
import { labelColumn } from '../../src/node/training/data';
import type { DatasetInfo } from '../../src/node/datasets';
import { GridError } from '../../src/core/errors';

const emptyInputs = {
  model: new Uint8Array(0),
  train: { features: { dtype: 'float32' as const, dims: [0, 1], data: new Float32Array(0) }, labels: { dtype: 'int64' as const, dims: [0], data: new BigInt64Array(0) } },
};
const request = { dataset_id: 'd', loss: 'cross_entropy' as const, optimizer: 'sgd' as const, batch_size: 1, epochs: 1 };
const progress = (batch: number) => ({ kind: 'batch' as const, epoch: 1, epochs: 1, batch, batches: 100, loss: 1, accuracy: 0, samples_per_second: 1, eta_seconds: 1 });

test('a job keeps its last maxEvents events; a client behind them is told how many it missed', () => {
  const job = new Job({ owner: 'u', request, label: 'y' }, emptyInputs, 5);
  job.setState('queued');
  job.setState('running');
  for (let b = 1; b <= 8; b++) job.record(progress(b));
  assert.equal(job.lastSeq, 10);
  const fromStart = job.since(0);
  assert.equal(fromStart.missed, 5);
  assert.deepEqual(fromStart.events.map((e) => e.seq), [6, 7, 8, 9, 10]);
  const caughtUp = job.since(7);
  assert.equal(caughtUp.missed, 0);
  assert.deepEqual(caughtUp.events.map((e) => e.seq), [8, 9, 10]);
  assert.deepEqual(job.since(10), { missed: 0, events: [] });
});

test('watchers get live events until the job ends; a finished job drops its inputs and settles', async () => {
  const job = new Job({ owner: 'u', request, label: 'y' }, emptyInputs, 100);
  const seen: number[] = [];
  job.subscribe((e) => seen.push(e.seq));
  job.setState('running');
  job.record(progress(1));
  job.setState('succeeded');
  await job.settled;
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(job.inputs, undefined);
  assert.equal(job.info().state, 'succeeded');
  assert.ok(job.info().finished);
});

const info = (columns: string[], label?: string): DatasetInfo => ({
  id: 'd', name: 'd', description: '', tags: [], format: 'csv', size: 1, created: '',
  schema: { rows: 1, columns: columns.map((name) => ({ name, dtype: 'int64' as const })), ...(label !== undefined && { label }) },
});

test('the label column is named, indexed, the dataset\'s own label, or else the last column', () => {
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), undefined), { index: 2, name: 'c' });
  assert.deepEqual(labelColumn(info(['a', 'target', 'c'], 'target'), undefined), { index: 1, name: 'target' });
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), 'a'), { index: 0, name: 'a' });
  assert.deepEqual(labelColumn(info(['a', 'b', 'c']), '1'), { index: 1, name: 'b' });
  assert.throws(() => labelColumn(info(['a', 'b']), 'species'), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_INPUT' && /no column "species".*columns are a, b/.test(e.message));
  assert.throws(() => labelColumn(info(['a', 'b']), '2'), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_INPUT');
});
