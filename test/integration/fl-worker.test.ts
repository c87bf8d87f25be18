// Our own FL worker (src/core/fl-worker.ts + src/federation/fl-worker-training.ts) against a real node:
// two workers train an ONNX process on different partitions of the real UCI digits with onnxruntime, and
// the checkpoint the node serves is old − the sample-weighted mean of their diffs; the refusals a worker
// meets (a full cycle, an unknown process, a foreign request key) reach it with their reasons.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readCsvDataset, shuffledIndices, takeRows, type Dataset } from '../../src/compute/data';
import { mlp } from '../../src/compute/plan';
import { evaluateModel } from '../../src/compute/train';
import { FL_DEFAULT_TIMEOUT_MS, FlWorker, type FlCycle, type FlRejection } from '../../src/core/fl-worker';
import { FlHostTraining, FlListProcesses } from '../../src/core/protocol/fl-messages';
import { flParams, flTrainConfig, joinFl, runFlCycle, trainFlCycle } from '../../src/federation';
import { startTestNode, type TestNode } from '../helpers/node-fixtures';
import { hostProcess, httpBase } from '../helpers/fl-fixtures';

const DIGITS = join(__dirname, '../../media/datasets/digits.csv.gz');
const single = { intraOpNumThreads: 1 };

async function digits(): Promise<Dataset> {
  return readCsvDataset(DIGITS, { featureScale: 1 / 16 });
}

async function host(n: TestNode, model: Uint8Array, client: Record<string, unknown>, server: Record<string, unknown>) {
  const admin = await n.admin();
  return admin.socket.request(FlHostTraining, { client_config: { name: 'digits', version: '1.0', ...client }, server_config: server }, { attachment: model });
}

async function checkpoint(n: TestNode, name: string, version: string, which: string | number = 'latest'): Promise<Uint8Array> {
  const res = await fetch(`${httpBase(n.node.url)}/model-centric/retrieve-model?name=${name}&version=${version}&checkpoint=${which}`);
  assert.equal(res.status, 200, await res.clone().text());
  return new Uint8Array(await res.arrayBuffer());
}

test('two FlWorkers on different partitions of digits complete a cycle: the checkpoint is old − the sample-weighted mean of their diffs, and it fits the data better', { timeout: 180_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const all = await digits();
  const order = shuffledIndices(all.features.dims[0]!, 7);
  // Unequal partitions, so a plain mean and the sample-weighted mean differ.
  const parts = [takeRows(all, order.subarray(0, 1200)), takeRows(all, order.subarray(1200))];
  const model = mlp([64, 24, 10], { seed: 3 });
  const hosted = await host(n, model, { batch_size: 32, lr: 0.2, epochs: 1 }, { max_diffs: 2, num_cycles: 3, cycle_length: 3600 });
  assert.equal(hosted.status, 'success');

  const workers = [await FlWorker.connect(n.node.url), await FlWorker.connect(n.node.url)];
  t.after(() => { for (const w of workers) w.dispose(); });
  assert.equal(workers[0]!.timeoutMs, FL_DEFAULT_TIMEOUT_MS);
  assert.equal(FL_DEFAULT_TIMEOUT_MS, 20_000);

  const jobs = workers.map((w) => w.newJob({ modelName: 'digits', modelVersion: '1.0' }));
  const accepted: FlCycle[] = [];
  for (const j of jobs) j.on('accepted', (c) => accepted.push(c));
  const closed = once(n.node.fl.engine, 'cycle-closed');
  const outcomes = await Promise.all(jobs.map((j, i) => runFlCycle(j, parts[i]!, { seed: i, loadOptions: single })));
  await closed;

  for (const o of outcomes) assert.equal(o.status, 'reported', JSON.stringify(o));
  assert.equal(accepted.length, 2, "each job emitted 'accepted'");
  const results = outcomes.map((o) => (o.status === 'reported' ? o.result : assert.fail('not reported')));
  // Each downloaded the hosted model itself, and the client_config's settings came with it.
  for (const c of accepted) {
    assert.deepEqual(Buffer.from(c.model), Buffer.from(model));
    assert.equal(c.clientConfig.batch_size, 32);
  }
  assert.deepEqual(results.map((r) => r.numSamples), [1200, all.features.dims[0]! - 1200]);
  assert.deepEqual(results.map((r) => r.steps), [Math.ceil(1200 / 32), Math.ceil(597 / 32)]);

  const old = flParams(model);
  const latest = flParams(await checkpoint(n, 'digits', '1.0'));
  assert.deepEqual(latest.map((p) => p.name), old.map((p) => p.name));
  const [wa, wb] = results.map((r) => r.numSamples) as [number, number];
  let maxErr = 0, weightedVsPlain = 0;
  latest.forEach((p, i) => {
    const da = results[0]!.diff[i]!.data, db = results[1]!.diff[i]!.data;
    for (let k = 0; k < p.tensor.data.length; k++) {
      const expected = old[i]!.tensor.data[k]! - (wa * da[k]! + wb * db[k]!) / (wa + wb);
      maxErr = Math.max(maxErr, Math.abs(p.tensor.data[k]! - expected));
      weightedVsPlain = Math.max(weightedVsPlain, Math.abs(p.tensor.data[k]! - (old[i]!.tensor.data[k]! - (da[k]! + db[k]!) / 2)));
    }
  });
  t.diagnostic(`checkpoint vs old − weighted mean(diff): max |err| ${maxErr.toExponential(2)}; vs the plain mean: ${weightedVsPlain.toExponential(2)}`);
  assert.ok(maxErr < 1e-5, `checkpoint differs from old − weighted mean(diff) by ${maxErr}`);
  assert.ok(weightedVsPlain > 1e-4, 'the average is weighted by samples, not a plain mean');

  // The averaged model fits the data better than the model the cycle started from.
  const before = await evaluateModel(model, all, { loss: 'cross_entropy', loadOptions: single });
  const after = await evaluateModel(await checkpoint(n, 'digits', '1.0'), all, { loss: 'cross_entropy', loadOptions: single });
  t.diagnostic(`digits loss ${before.loss.toFixed(3)} → ${after.loss.toFixed(3)}, accuracy ${(before.accuracy * 100).toFixed(1)}% → ${(after.accuracy * 100).toFixed(1)}% after one cycle`);
  assert.ok(after.loss < before.loss * 0.8, `loss ${before.loss} → ${after.loss}`);
  assert.ok(after.accuracy > before.accuracy + 0.2, `accuracy ${before.accuracy} → ${after.accuracy}`);
  // Checkpoint 1 is still the hosted model.
  assert.deepEqual(Buffer.from(await checkpoint(n, 'digits', '1.0', 1)), Buffer.from(model));
});

test('a worker is rejected with the reason and the time left when the cycle is full; max_updates bounds its training', { timeout: 120_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const all = await digits();
  const model = mlp([64, 10], { seed: 5 });
  await host(n, model, { batch_size: 16, lr: 0.1, max_updates: 2 }, { max_workers: 1, max_diffs: 1, num_cycles: 2, cycle_length: 600 });
  const [a, b] = [await FlWorker.connect(n.node.url), await FlWorker.connect(n.node.url)];
  t.after(() => { a.dispose(); b.dispose(); });

  const jobA = a.newJob({ modelName: 'digits', modelVersion: '1.0' });
  const first = await jobA.start();
  assert.equal(first.status, 'accepted');

  const jobB = b.newJob({ modelName: 'digits', modelVersion: '1.0' });
  const rejections: FlRejection[] = [];
  jobB.on('rejected', (r) => rejections.push(r));
  jobB.on('accepted', () => assert.fail('a full cycle accepted a second worker'));
  const second = await jobB.start();
  assert.equal(second.status, 'rejected');
  assert.equal(rejections.length, 1);
  assert.match(rejections[0]!.reason, /the cycle is full \(1 of 1 workers\)/);
  assert.ok(rejections[0]!.timeoutS! > 500 && rejections[0]!.timeoutS! <= 600, `timeout_s ${rejections[0]!.timeoutS}`);
  assert.match(rejections[0]!.timeout!, /^0:(09|10):\d\d/);

  // A's request key is A's: B cannot download the model with it.
  const cycle = jobA.currentCycle!;
  await assert.rejects(b.downloadModel({ workerId: jobB.workerId!, requestKey: cycle.requestKey, modelId: cycle.accepted.model_id }),
    { code: 'GRID_ERR_FORBIDDEN', message: 'Invalid request key!' });

  // max_updates: 2 → two optimisation steps of 16 rows, and those 32 rows are the report's weight.
  const closed = once(n.node.fl.engine, 'cycle-closed');
  const r = await trainFlCycle(cycle.model, all, flTrainConfig(cycle.clientConfig), { loadOptions: single });
  assert.equal(r.steps, 2);
  assert.equal(r.numSamples, 32);
  await jobA.report(r.diff, r.numSamples);
  const ev = (await closed)[0] as { reports: number };
  assert.equal(ev.reports, 1);
  await assert.rejects(jobA.report(r.diff, r.numSamples), { code: 'GRID_ERR_INVALID_MESSAGE', message: /no accepted cycle to report/ });
  // A disposed job asks for nothing more, and says why.
  jobB.dispose();
  const disposed = await jobB.start();
  assert.equal(disposed.status === 'error' && disposed.error.code, 'GRID_ERR_DISPOSED', JSON.stringify(disposed));
});

test('errors reach the worker as coded errors with PyGrid\'s strings; a disposed worker refuses work', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const w = await FlWorker.connect(n.node.url, { timeoutMs: 5_000 });
  t.after(() => w.dispose());
  const all = await digits();

  const job = w.newJob({ modelName: 'no-such-process', modelVersion: '1.0' });
  const errors: Error[] = [];
  job.on('error', (e) => errors.push(e));
  const out = await job.start();
  assert.equal(out.status, 'error');
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as { code?: string }).code, 'GRID_ERR_NOT_FOUND');
  assert.equal(errors[0]!.message, 'Not found any process related with this cycle and worker ID.');
  // Without an 'error' listener the outcome says it all; nothing is thrown at the caller.
  const quiet = await joinFl(w, { modelName: 'no-such-process' }, all);
  assert.equal(quiet.status, 'error');

  assert.equal(w.isDisposed, false);
  w.dispose();
  w.dispose();
  assert.equal(w.isDisposed, true);
  assert.equal(w.socket.isDisposed, true, 'a worker that opened its socket closes it');
  await assert.rejects(w.authenticate({ modelName: 'digits' }), { code: 'GRID_ERR_DISPOSED' });

  assert.throws(() => w.newJob({ modelName: 'digits' }), { code: 'GRID_ERR_DISPOSED' });
});

test('a process hosted with a syft-proto State (PyGrid\'s format) is refused by our worker before it asks for a cycle: GRID_ERR_FL_NOT_TRAINABLE, and the node never counts it', { timeout: 60_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  await hostProcess(admin, { name: 'pysyft-mnist', version: '1.0', server: { max_diffs: 1, num_cycles: 1 } });
  const w = await FlWorker.connect(n.node.url, { timeoutMs: 5_000 });
  t.after(() => w.dispose());

  assert.equal((await w.processInfo({ modelName: 'pysyft-mnist' }))?.format, 'state');
  const out = await joinFl(w, { modelName: 'pysyft-mnist', modelVersion: '1.0' }, await digits());
  assert.equal(out.status, 'error');
  const e = (out as Extract<typeof out, { status: 'error' }>).error;
  assert.equal(e.code, 'GRID_ERR_FL_NOT_TRAINABLE');
  assert.match(e.message, /^FL process pysyft-mnist@1\.0 has no ONNX training plan for this worker: it was hosted with a syft-proto State model \(PyGrid's format\)/);
  assert.match(e.message, /Join it with a PySyft-family worker \(syft\.js, KotlinSyft, SwiftSyft\), or host the model as ONNX/);
  // Asked nothing of the process: no worker authenticated, no place in the cycle taken from a device that could train it.
  const p = (await admin.socket.request(FlListProcesses, {})).processes.find((q) => q.name === 'pysyft-mnist')!;
  assert.deepEqual([p.workers, p.cycle?.assigned], [0, 0]);
  // Without a version: the last process hosted with that name is the one checked.
  const latest = await joinFl(w, { modelName: 'pysyft-mnist' }, await digits());
  assert.equal(latest.status === 'error' && latest.error.code, 'GRID_ERR_FL_NOT_TRAINABLE');
});

function l2(tensors: readonly { data: Float32Array }[]): number {
  let sq = 0;
  for (const t of tensors) for (const v of t.data) sq += v * v;
  return Math.sqrt(sq);
}

test('client_config privacy clips a worker\'s update before it leaves (the checkpoint moves by at most clip_norm); fedprox_mu keeps it closer to the checkpoint', { timeout: 120_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const data = takeRows(await digits(), shuffledIndices(1797, 3).subarray(0, 600));
  const model = mlp([64, 16, 10], { seed: 9 });
  const base = { batch_size: 32, lr: 0.2, epochs: 2 };
  const server = { max_diffs: 1, num_cycles: 1 };
  const admin = await n.admin();
  for (const [version, extra] of [['plain', {}], ['prox', { fedprox_mu: 2 }], ['dp', { privacy: { clip_norm: 0.25, noise_multiplier: 0 } }]] as const) {
    await admin.socket.request(FlHostTraining, { client_config: { name: 'digits', version, ...base, ...extra }, server_config: server }, { attachment: model });
  }
  const w = await FlWorker.connect(n.node.url);
  t.after(() => w.dispose());
  const norms: Record<string, number> = {};
  for (const version of ['plain', 'prox', 'dp']) {
    const closed = once(n.node.fl.engine, 'cycle-closed');
    const out = await joinFl(w, { modelName: 'digits', modelVersion: version }, data, { seed: 1, loadOptions: single });
    assert.equal(out.status, 'reported', JSON.stringify(out));
    await closed;
    norms[version] = l2(out.status === 'reported' ? out.result.diff : []);
  }
  t.diagnostic(`update L2 norms: plain ${norms.plain!.toFixed(3)}, FedProx μ=2 ${norms.prox!.toFixed(3)}, DP clip 0.25 ${norms.dp!.toFixed(3)}`);
  assert.ok(norms.plain! > 0.5, 'the plain update is larger than the clip norm, so clipping does something');
  assert.ok(norms.prox! < norms.plain! * 0.9, `FedProx ${norms.prox} vs plain ${norms.plain}`);
  assert.ok(norms.dp! <= 0.25 + 1e-5, `DP update norm ${norms.dp}`);
  // What the node averaged is that clipped update: the checkpoint moved by at most clip_norm.
  const old = flParams(model), latest = flParams(await checkpoint(n, 'digits', 'dp'));
  const moved = l2(latest.map((p, i) => ({ data: p.tensor.data.map((v, k) => v - old[i]!.tensor.data[k]!) })));
  assert.ok(moved <= 0.25 + 1e-5 && moved > 0.2, `the checkpoint moved by ${moved}`);
});

test('a process with minimum speeds: the job runs the speed test itself, is accepted on loopback and rejected below a minimum it cannot reach', { timeout: 120_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  // The node routes /model-centric/speed-test (src/node/fl/speed-test.ts): unknown worker → 401, never 404.
  const probe = await fetch(`${httpBase(n.node.url)}/model-centric/speed-test?is_ping=1`);
  assert.notEqual(probe.status, 404, 'the node routes /model-centric/speed-test');
  const model = mlp([64, 10], { seed: 5 });
  const admin = await n.admin();
  for (const [version, min] of [['fast', 1], ['impossible', 1e9]] as const) {
    await admin.socket.request(FlHostTraining, { client_config: { name: 'digits', version }, server_config: { max_diffs: 1, cycle_length: 600, minimum_download_speed: min, minimum_upload_speed: min } }, { attachment: model });
  }
  const w = await FlWorker.connect(n.node.url);
  t.after(() => w.dispose());
  const ok = w.newJob({ modelName: 'digits', modelVersion: 'fast' });
  const accepted = await ok.start({ speedTestBytes: 2 * 1024 * 1024 });
  assert.equal(accepted.status, 'accepted', JSON.stringify(accepted));
  t.diagnostic(`loopback: ping ${ok.speeds!.ping.toFixed(2)} ms, download ${ok.speeds!.download.toFixed(0)} Mbit/s, upload ${ok.speeds!.upload.toFixed(0)} Mbit/s`);
  assert.ok(ok.speeds!.download > 1 && ok.speeds!.upload > 1 && ok.speeds!.ping >= 0);
  const slow = await w.newJob({ modelName: 'digits', modelVersion: 'impossible' }).start({ speedTestBytes: 1024 * 1024 });
  assert.equal(slow.status, 'rejected');
  assert.match(slow.status === 'rejected' ? slow.reason : '', /speed [\d.]+ is below the minimum of 1000000000/);
});
