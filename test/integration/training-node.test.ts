// Training on a node's data: jobs with progress, validation and test metrics, the trained model stored as
// a new version, reattaching after a disconnect, cancelling, coded errors, DP updates, and no rows leaving.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cnn, mlp, modelParams } from '../../src/compute/plan';
import { encodeModel, makeNode, makeValueInfo, ONNX_DTYPE_CODES, tensorToProto } from '../../src/compute/onnx';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import type { JobEvent, JobInfo } from '../../src/core/protocol/training-messages';
import { trainRequest } from '../../src/core/training-request';
import { ADMIN_PASSWORD, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { startProxy } from '../helpers/proxy';
import { assertNoRows, DIGITS, recordMessages } from '../helpers/training-fixtures';

let tn: TestNode;
const scale = 1 / 16;

before(async () => {
  tn = await startTestNode({ datasets: [
    { name: 'digits', path: DIGITS, tags: ['digits', 'uci'] },
    { name: 'iris', path: path.join(path.dirname(DIGITS), 'iris.csv'), tags: ['iris', 'uci'] },
  ] });
});
after(async () => { await tn.close(); });

const code = (c: string) => (e: unknown) => e instanceof GridError && e.code === c;

test('an MLP 64-64-10 trained on a node reaches >= 96% test accuracy; the node answers while it trains; the model is stored as a new version', async (t) => {
  const admin = await tn.admin();
  const seen = recordMessages(admin);
  const model = mlp([64, 64, 10], { seed: 1 });
  await admin.hostModel(model, { id: 'digits-mlp', allowRemoteInference: true });
  const events: JobEvent[] = [];
  let answeredWhileRunning: Promise<string> | undefined;
  const job = await admin.training.start({
    model: 'digits-mlp', dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'adam', lr: 0.002,
    epochs: 40, batch_size: 32, seed: 1, validation_split: 0.1, test_split: 0.2, split_seed: 42,
  });
  assert.ok(job.state === 'queued' || job.state === 'running', job.state);
  const done = await admin.training.wait(job.id, {
    onEvent: (ev) => {
      events.push(ev);
      // Once training is under way, ask the node something else: it must answer before the job ends.
      if (ev.kind === 'batch' && answeredWhileRunning === undefined) {
        answeredWhileRunning = (async () => {
          const started = performance.now();
          const info = await admin.training.jobInfo(job.id);
          await admin.listModels();
          t.diagnostic(`job-info + list-models answered in ${(performance.now() - started).toFixed(1)} ms during training`);
          return info.state;
        })();
      }
    },
  });
  assert.equal(await answeredWhileRunning, 'running');
  const r = done.result!;
  t.diagnostic(`central (one node): test accuracy ${(r.test!.accuracy * 100).toFixed(2)}%, validation ${(r.validation!.accuracy * 100).toFixed(2)}%, ${r.seconds.toFixed(1)} s, ${r.samples} rows/epoch`);
  assert.ok(r.test!.accuracy >= 0.96, `test accuracy ${r.test!.accuracy}`);
  // Progress: states, batch events, one epoch event per epoch with validation metrics, ETA reaching zero.
  assert.deepEqual(events.filter((e) => e.kind === 'state').map((e) => e.kind === 'state' && e.state), ['queued', 'running', 'succeeded']);
  const epochs = events.filter((e) => e.kind === 'epoch');
  assert.equal(epochs.length, 40);
  assert.ok(epochs.every((e) => e.kind === 'epoch' && e.validation !== undefined && e.samples_per_second > 0));
  const lastEpoch = epochs.at(-1)!;
  assert.equal(lastEpoch.kind === 'epoch' ? lastEpoch.eta_seconds : -1, 0);
  assert.ok(events.some((e) => e.kind === 'batch'));
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), 'events arrive once each, in order');
  // A new model version: same model, next version, permissions inherited, lineage recorded.
  const stored = r.model!;
  assert.equal(stored.id, 'digits-mlp');
  assert.equal(stored.name, 'digits-mlp');
  assert.equal(stored.version, '2');
  assert.equal(stored.parent, 'digits-mlp@1');
  assert.equal(stored.job_id, job.id);
  assert.equal(stored.allow_remote_inference, true);
  assert.equal(stored.allow_download, false);
  const record = await admin.training.modelTraining('digits-mlp@2');
  assert.equal(record.parent_model_id, 'digits-mlp@1');
  assert.equal(record.dataset_id, 'digits');
  assert.equal(record.label, 'column_64');
  assert.equal(record.test!.accuracy, r.test!.accuracy);
  assert.equal(record.privacy, undefined);
  assertNoRows(seen, new Set(Object.keys(modelParams(model))), 1797);
  // The stored model serves like any other (inputs scaled the way it was trained).
  const row = new Float32Array(64).fill(0.5);
  const out = await admin.runInference('digits-mlp@2', { input: { dtype: 'float32', dims: [1, 64], data: row } });
  assert.deepEqual(out.logits!.dims, [1, 10]);
});

test('a job keeps running after its client disconnects; another client reattaches and gets the missed events and the result', async () => {
  const first = await tn.admin();
  const job = await first.training.start({
    model: mlp([64, 16, 10], { seed: 2 }), dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'momentum',
    lr: 0.05, epochs: 6, batch_size: 16, progress_every: 5,
  });
  // Watch until a few events arrived, then drop the connection.
  const firstEvents: JobEvent[] = [];
  const ac = new AbortController();
  const watching = first.training.wait(job.id, { signal: ac.signal, onEvent: (ev) => { firstEvents.push(ev); if (firstEvents.length === 4) ac.abort(); } });
  await assert.rejects(watching, code('GRID_ERR_ABORTED'));
  const lastSeen = firstEvents.at(-1)!.seq;
  first.dispose();

  const second = await GridClient.connect(tn.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  try {
    const listed = (await second.training.listJobs()).find((j) => j.id === job.id);
    assert.ok(listed, 'the job is listed for its owner');
    const missed: JobEvent[] = [];
    const done = await second.training.wait(job.id, { afterSeq: lastSeen, onEvent: (ev) => missed.push(ev) });
    assert.equal(missed[0]!.seq, lastSeen + 1, 'reattaching starts right after the last event seen');
    assert.deepEqual(missed.map((e) => e.seq), missed.map((_, i) => lastSeen + 1 + i), 'nothing is missing');
    assert.ok(missed.some((e) => e.kind === 'epoch' && e.epoch === 6));
    assert.equal(done.state, 'succeeded');
    assert.ok(done.result!.model!.id.startsWith('trained-job-'), 'uploaded bytes become a new model');
    // Watching a finished job (here as an async iterable) gives its whole kept history and the same result.
    const again: JobEvent[] = [];
    const it = second.training.events(job.id);
    let step = await it.next();
    for (; !step.done; step = await it.next()) again.push(step.value);
    assert.equal(again.length, done.last_seq);
    assert.deepEqual(step.value.result, done.result);
  } finally {
    second.dispose();
  }
});

test('watching survives a dropped connection: the watch is re-sent after the reconnect and no event is lost or repeated', async () => {
  const proxy = await startProxy(tn.node.port);
  const c = await GridClient.connect(`ws://127.0.0.1:${proxy.port}`, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  try {
    const events: JobEvent[] = [];
    let reconnected = false;
    c.socket.on('status', (st: { state: string }) => { if (st.state === 'open') reconnected = true; });
    const job = await c.training.start({
      model: mlp([64, 16, 10], { seed: 5 }), dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'sgd',
      epochs: 4, batch_size: 16, progress_every: 4,
    });
    const done = await c.training.wait(job.id, { onEvent: (ev) => { events.push(ev); if (events.length === 3) proxy.cut(); } });
    assert.ok(reconnected, 'the socket reconnected');
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(events.map((e) => e.seq), Array.from({ length: done.last_seq }, (_, i) => i + 1));
  } finally {
    c.dispose();
    await proxy.close();
  }
});

test('cancel-job stops a running job: no model is stored and its watcher gets GRID_ERR_ABORTED', async () => {
  const admin = await tn.admin();
  const before = (await admin.listModels()).length;
  const job = await admin.training.start({
    model: mlp([64, 32, 10], { seed: 3 }), dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'sgd',
    epochs: 1000, batch_size: 8, progress_every: 1,
  });
  let cancelled: Promise<unknown> | undefined;
  const watching = admin.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'batch') cancelled ??= admin.training.cancelJob(job.id); } });
  await assert.rejects(watching, (e: Error) => {
    assert.equal((e as { code?: string }).code, 'GRID_ERR_ABORTED');
    // Said once, with when: not "was cancelled: the job was cancelled".
    assert.equal(e.message, `training job ${job.id} was cancelled while running`);
    return true;
  });
  const info = (await cancelled) as { state: string; progress?: { epoch: number } };
  assert.equal(info.state, 'cancelled');
  assert.equal(info.progress!.epoch, 1);
  assert.equal((await admin.listModels()).length, before);
  assert.equal((await admin.training.jobInfo(job.id)).state, 'cancelled');
});

test('follow() shows the job as it goes and as it ended: progress folded into the job, then succeeded; cancelled on its signal, then cancelled', async () => {
  const admin = await tn.admin();
  const request = trainRequest({ model: mlp([64, 16, 10], { seed: 4 }), datasetId: 'digits', featureScale: scale, loss: 'cross_entropy', optimizer: 'sgd', epochs: 2, batchSize: 64, progressEvery: 1, outputId: 'followed' });
  const seen: JobInfo[] = [];
  const done = await admin.training.follow(await admin.training.start(request), { onUpdate: (j) => seen.push(j) });
  assert.equal(done.state, 'succeeded');
  const running = seen.filter((j) => j.state === 'running' && j.progress !== undefined);
  assert.ok(running.length >= 2, `${running.length} progress updates`);
  assert.ok(running.every((j, i) => i === 0 || j.progress!.epoch > running[i - 1]!.progress!.epoch || j.progress!.batch >= running[i - 1]!.progress!.batch), 'progress only moves forward');
  assert.equal(running.at(-1)!.progress!.epoch, 2);
  assert.equal(seen.at(-1)!.state, 'succeeded', 'the last update is the job as it ended');
  assert.equal(seen.at(-1)!.result?.model?.id, 'followed');

  // Cancelled once it runs: the follow goes on until the node has stopped it, and says so.
  const cancel = new AbortController();
  const updates: JobInfo[] = [];
  const long = await admin.training.start({ ...request, epochs: 1000, output_model_id: 'never-stored' });
  await assert.rejects(admin.training.follow(long, {
    cancel: cancel.signal,
    onUpdate: (j) => { updates.push(j); if (j.progress) cancel.abort(); },
  }), { code: 'GRID_ERR_ABORTED' });
  assert.equal(updates.at(-1)!.state, 'cancelled', `the updates ended with ${updates.at(-1)!.state}`);
  assert.equal((await admin.training.jobInfo(long.id)).state, 'cancelled');
  await assert.rejects(admin.modelInfo('never-stored'), { code: 'GRID_ERR_NOT_FOUND' });
});

test('bad training requests get coded errors naming what was wrong', async () => {
  const admin = await tn.admin();
  const jobsBefore = (await admin.training.listJobs()).length;
  const base = { model: mlp([64, 8, 10]), dataset_id: 'digits', loss: 'cross_entropy' as const, optimizer: 'sgd' as const, epochs: 1, batch_size: 32 };
  await assert.rejects(admin.training.start({ ...base, dataset_id: 'no-such-data' }), (e: unknown) => code('GRID_ERR_NOT_FOUND')(e) && /no dataset "no-such-data"/.test((e as Error).message));
  await assert.rejects(admin.training.start({ ...base, label: 'species' }), (e: unknown) => code('GRID_ERR_INVALID_INPUT')(e) && /no column "species"/.test((e as Error).message));
  await assert.rejects(admin.training.start({ ...base, label: '99' }), code('GRID_ERR_INVALID_INPUT'));
  await assert.rejects(admin.training.start({ ...base, model: mlp([10, 8, 10]) }), (e: unknown) => code('GRID_ERR_INVALID_INPUT')(e) && /takes 10 features/.test((e as Error).message));
  await assert.rejects(admin.training.start({ ...base, model: 'no-such-model' }), code('GRID_ERR_NOT_FOUND'));
  await assert.rejects(admin.training.start({ ...base, model: new Uint8Array([1, 2, 3]) }), code('GRID_ERR_INVALID_MODEL'));
  await assert.rejects(admin.training.start({ ...base, epochs: 0 }), code('GRID_ERR_INVALID_MESSAGE'));
  const withSin = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'sin', node: [makeNode('MatMul', ['input', 'w'], ['h']), makeNode('Sin', ['h'], ['logits'], [], 'the_sin')],
      initializer: [tensorToProto('w', { dtype: 'float32', dims: [64, 10], data: new Float32Array(640).fill(0.01) })],
      input: [makeValueInfo('input', ONNX_DTYPE_CODES.float32, ['N', 64])], output: [makeValueInfo('logits', ONNX_DTYPE_CODES.float32, ['N', 10])],
    },
  });
  await assert.rejects(admin.training.start({ ...base, model: withSin }), (e: unknown) => code('GRID_ERR_UNSUPPORTED_OPERATOR')(e) && /Sin/.test((e as Error).message));
  await assert.rejects(admin.training.wait('job-nope'), code('GRID_ERR_NOT_FOUND'));
  const anon = await tn.anonymous();
  await assert.rejects(anon.training.start({ ...base, model: 'digits-mlp' }), code('GRID_ERR_UNAUTHENTICATED'));
  await assert.rejects(anon.training.listJobs(), code('GRID_ERR_UNAUTHENTICATED'));
  // Every one was refused before a job existed, and the node is fine afterwards.
  assert.equal((await admin.training.listJobs()).length, jobsBefore);
});

test('an update job returns clipped, noised parameters and its sample count; a stored model records its DP settings', async () => {
  const admin = await tn.admin();
  const seen = recordMessages(admin);
  const model = mlp([64, 16, 10], { seed: 4 });
  const start = modelParams(model);
  const job = await admin.training.train({
    model, params: start, dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'sgd', lr: 0.1,
    epochs: 1, batch_size: 64, output: 'update', test_split: 0.25, privacy: { clip_norm: 0.5, noise_multiplier: 0 },
  });
  const update = await admin.training.jobParams(job.id);
  assert.equal(update.samples, 1797 - Math.round(1797 * 0.25));
  assert.equal(update.privacy!.clip_norm, 0.5);
  assert.ok(update.privacy!.clipped);
  let sq = 0;
  for (const [name, t] of Object.entries(update.params)) {
    const a = t.data as Float32Array, b = start[name]!.data as Float32Array;
    for (let i = 0; i < a.length; i++) sq += (a[i]! - b[i]!) ** 2;
  }
  assert.ok(Math.abs(Math.sqrt(sq) - 0.5) < 1e-3, `update norm ${Math.sqrt(sq)}`);
  assert.ok(job.result!.test !== undefined && job.result!.model === undefined);
  assertNoRows(seen, new Set(Object.keys(start)), 1797);

  const stored = await admin.training.train({
    model, dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batch_size: 64,
    privacy: { clip_norm: 1, noise_multiplier: 0.01 }, output_model_id: 'dp-digits', allow_download: true,
  });
  const record = await admin.training.modelTraining('dp-digits');
  assert.equal(stored.result!.model!.allow_download, true);
  assert.deepEqual([record.privacy!.clip_norm, record.privacy!.noise_multiplier], [1, 0.01]);
  await assert.rejects(admin.training.jobParams(stored.id), code('GRID_ERR_INVALID_INPUT'));
});

test('a dataset with a scikit-learn header line trains on its own label column (iris)', async () => {
  const admin = await tn.admin();
  const job = await admin.training.train({
    model: mlp([4, 16, 3], { seed: 1 }), dataset_id: 'iris', feature_scale: 0.25, loss: 'cross_entropy', optimizer: 'adam', lr: 0.02,
    epochs: 60, batch_size: 16, test_split: 0.2, seed: 1,
  });
  assert.equal(job.result!.samples, 120);
  assert.ok(job.result!.test!.accuracy >= 0.8, `iris test accuracy ${job.result!.test!.accuracy}`);
  assert.equal((await admin.training.modelTraining(job.result!.model!.id)).label, 'target');
});

test('a small CNN trains on the node\'s 8x8 digits too', async (t) => {
  const admin = await tn.admin();
  const job = await admin.training.train({
    model: cnn({ seed: 1 }), dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'adam', lr: 0.005,
    epochs: 2, batch_size: 32, test_split: 0.2, split_seed: 42, seed: 1,
  });
  t.diagnostic(`CNN on a node: test accuracy ${(job.result!.test!.accuracy * 100).toFixed(1)}% after 2 epochs, ${job.result!.seconds.toFixed(1)} s`);
  assert.ok(job.result!.test!.accuracy > 0.7, `test accuracy ${job.result!.test!.accuracy}`);
});

test('closing a node stops its running job and gives it back to the queue; the next start on the same data dir runs it again', async () => {
  const dir = tempDir();
  const datasets = [{ name: 'digits', path: DIGITS }];
  const own = await startTestNode({ dataDir: dir, datasets });
  const admin = await own.admin();
  const job = await admin.training.start({
    model: mlp([64, 32, 10]), dataset_id: 'digits', feature_scale: scale, loss: 'cross_entropy', optimizer: 'sgd', epochs: 1000, batch_size: 8, progress_every: 1,
  });
  const firstBatch = new Promise<void>((resolve) => { void admin.training.wait(job.id, { onEvent: (ev) => { if (ev.kind === 'batch') resolve(); } }).catch(() => {}); });
  await firstBatch;
  await own.close();

  const again = await startTestNode({ dataDir: dir, datasets });
  try {
    const admin2 = await again.admin();
    // The job is the same one (same id), and it runs again: a 'running' state after the 'queued' it was given back as.
    const states: string[] = [];
    const runningAgain = new Promise<void>((resolve) => {
      void admin2.training.wait(job.id, { onEvent: (ev) => {
        if (ev.kind === 'state') states.push(ev.state);
        if (ev.kind === 'batch' && states.at(-1) === 'running' && states.includes('queued') && states.indexOf('queued', 1) > 0) resolve();
      } }).catch(() => {});
    });
    await runningAgain;
    assert.deepEqual(states, ['queued', 'running', 'queued', 'running'], 'queued, ran, given back at the close, ran again after the start');
    const cancelled = await admin2.training.cancelJob(job.id);
    assert.equal(cancelled.state, 'cancelled');
    assert.equal(cancelled.error?.code, 'GRID_ERR_ABORTED');
  } finally {
    await again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
