// An FL process hosted from an ONNX model (our hosts): the model arrives as an upload, workers report
// State diffs over its float32 initializers in graph order, and each checkpoint is the same ONNX graph
// with averaged initializers, which onnxruntime loads and runs.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { modelParams } from '../../src/compute/plan/params';
import { FlHostTraining, FlListProcesses } from '../../src/core/protocol/fl-messages';
import { GridClient } from '../../src/core/client';
import type { GridError } from '../../src/core/errors';
import { bufferSource } from '../../src/core/socket/transfer';
import type { Dataset } from '../../src/compute/data';
import { encodeModel, makeNode, makeValueInfo, ONNX_DTYPE_CODES } from '../../src/compute/onnx';
import { FlWorker } from '../../src/core/fl-worker';
import { joinFl } from '../../src/federation';
import { mlpModel, seededFloats, startTestNode } from '../helpers/node-fixtures';
import { base64, decodeState, diffOf, hostProcess, httpBase, joinCycle, PyGridSocket, serverLrPlan, smallModel } from '../helpers/fl-fixtures';

test('an ONNX model hosted by upload trains: the checkpoint is the ONNX graph with old − mean(diff) initializers, and it still runs', { timeout: 120_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  const onnx = mlpModel(4, 3, 2, 7);
  const upload = await admin.socket.upload(bufferSource(onnx));
  const hosted = await admin.socket.request(FlHostTraining, { model_transfer_id: upload.transfer_id, client_config: { name: 'mlp', version: '1.0' }, server_config: { max_diffs: 2 } });
  assert.equal(hosted.name, 'mlp');

  const old = modelParams(onnx);
  const names = Object.keys(old);
  assert.deepEqual(names, ['w1', 'b1', 'w2', 'b2']);
  const diffFor = (scale: number) => base64(names.map((n) => ({ dims: [...old[n]!.dims], data: (old[n]!.data as Float32Array).map((_, k) => scale * (k + 1)) })));
  const sockets = [await PyGridSocket.open(node.node.url), await PyGridSocket.open(node.node.url)];
  t.after(() => { for (const s of sockets) s.close(); });
  const closed = once(node.node.fl.engine, 'cycle-closed');
  for (const [i, s] of sockets.entries()) {
    const j = await joinCycle(s, 'mlp');
    assert.equal(j.cycle.status, 'accepted');
    // The worker downloads the ONNX model itself.
    const got = await fetch(`${httpBase(node.node.url)}/model-centric/get-model?worker_id=${j.workerId}&request_key=${j.cycle.request_key}&model_id=${j.cycle.model_id}`);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(Buffer.from(onnx)));
    assert.deepEqual(await s.call('model-centric/report', { worker_id: j.workerId, request_key: j.cycle.request_key, diff: diffFor(i === 0 ? 0.01 : 0.03) }), { status: 'success' });
  }
  await closed;
  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=mlp&version=1.0`);
  const next = new Uint8Array(await res.arrayBuffer());
  const params = modelParams(next);
  for (const n of names) {
    const before = old[n]!.data as Float32Array;
    const after = params[n]!.data as Float32Array;
    for (let k = 0; k < before.length; k++) assert.ok(Math.abs(after[k]! - (before[k]! - 0.02 * (k + 1))) < 1e-6, `${n}[${k}]`);
  }
  // The checkpoint is a model onnxruntime runs: host it as a plain model and infer.
  const m = await admin.hostModel(next, { id: 'mlp-checkpoint', allowRemoteInference: true });
  const y = await admin.runInference(m.id, { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([1, 0, -1, 0.5]) } });
  assert.deepEqual(y.y!.dims, [1, 2]);
});

test('a process hosted from a hosted model (model_ref): each checkpoint becomes the model\'s next version with lineage; only its owner or an admin may link it', { timeout: 120_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  await admin.addUser('bob', 'bob-long-password');
  const onnx = mlpModel(4, 3, 2, 11);
  const hostedModel = await admin.hostModel(onnx, { id: 'digits', allowDownload: true });
  const hosted = await admin.socket.request(FlHostTraining, { model_ref: 'digits', client_config: { name: 'digits-fl', version: '1' }, server_config: { max_diffs: 1, num_cycles: 2 } });
  const bob = await GridClient.connect(node.node.url, { credentials: { username: 'bob', password: 'bob-long-password' }, reconnect: { maxAttempts: 0 } });
  t.after(() => bob.dispose());
  await assert.rejects(bob.socket.request(FlHostTraining, { model_ref: 'digits', client_config: { name: 'stolen', version: '1' }, server_config: { max_diffs: 1 } }),
    (e: GridError) => e.code === 'GRID_ERR_FORBIDDEN' && /belongs to admin/.test(e.message));

  const old = modelParams(onnx);
  const names = Object.keys(old);
  const socket = await PyGridSocket.open(node.node.url);
  t.after(() => socket.close());
  for (let cycle = 1; cycle <= 2; cycle++) {
    const closed = once(node.node.fl.engine, 'cycle-closed');
    const j = await joinCycle(socket, 'digits-fl', '1');
    const diff = base64(names.map((n) => ({ dims: [...old[n]!.dims], data: new Float32Array(old[n]!.data.length).fill(0.5) })));
    await socket.call('model-centric/report', { worker_id: j.workerId, request_key: j.cycle.request_key, diff });
    await closed;
  }
  await node.node.fl.engine.published(hosted.model_id);
  const versions = (await admin.listModels({ allVersions: true })).filter((m) => m.id === 'digits');
  assert.deepEqual(versions.map((m) => [m.version, m.parent ?? null]), [[hostedModel.version, null], ['2', 'digits@1'], ['3', 'digits@2']]);
  // Version 3 is checkpoint 3: every parameter moved by −0.5 twice.
  const { bytes } = await admin.downloadModelBytes('digits@3');
  const w1 = modelParams(bytes).w1!.data as Float32Array;
  (old.w1!.data as Float32Array).forEach((v, k) => assert.ok(Math.abs(w1[k]! - (v - 1)) < 1e-6));
  const status = (await admin.socket.request(FlListProcesses, {})).processes[0]!;
  assert.deepEqual(status.checkpoints.map((c) => c.model), ['digits@1', 'digits@2', 'digits@3']);
  assert.equal(status.linked_model, 'digits');
});

/** Two classes from 4 features (class 1 when x0 + x1 > x2 + x3), `n` rows. */
function rows(n: number, seed: number): Dataset {
  const x = seededFloats(n * 4, seed);
  const y = new BigInt64Array(n);
  for (let r = 0; r < n; r++) y[r] = x[r * 4]! + x[r * 4 + 1]! > x[r * 4 + 2]! + x[r * 4 + 3]! ? 1n : 0n;
  return { features: { dtype: 'float32', dims: [n, 4], data: x }, labels: { dtype: 'int64', dims: [n], data: y } };
}

test('an ONNX averaging plan runs when the cycle closes: two FlWorkers train, and the checkpoint is what the plan computes (old − 0.5 · weighted mean diff), not FedAvg', { timeout: 180_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  const onnx = mlpModel(4, 3, 2, 5);
  const old = modelParams(onnx);
  const params = Object.entries(old).map(([name, v]) => ({ name, dims: [...v.dims] }));
  const hosted = await admin.socket.request(FlHostTraining, {
    averaging_plan: Buffer.from(serverLrPlan(params, 0.5)).toString('base64'),
    client_config: { name: 'server-lr', version: '1', batch_size: 4, lr: 0.5, epochs: 2 }, server_config: { max_diffs: 2, num_cycles: 1 },
  }, { attachment: onnx });
  assert.equal(hosted.status, 'success');

  const workers = [await FlWorker.connect(node.node.url), await FlWorker.connect(node.node.url)];
  t.after(() => { for (const w of workers) w.dispose(); });
  const closed = once(node.node.fl.engine, 'cycle-closed');
  // Unequal data, so the weighted mean is not the plain one.
  const outcomes = await Promise.all(workers.map((w, i) => joinFl(w, { modelName: 'server-lr', modelVersion: '1' }, rows(i === 0 ? 12 : 40, 100 + i), { seed: i, loadOptions: { intraOpNumThreads: 1 } })));
  await closed;
  const reported = outcomes.map((o) => { assert.equal(o.status, 'reported', JSON.stringify(o)); return (o as Extract<typeof o, { status: 'reported' }>).result; });
  assert.deepEqual(reported.map((r) => r.numSamples), [12, 40]);

  const next = modelParams(await workers[0]!.retrieveModel({ name: 'server-lr', version: '1' }));
  const total = 12 + 40;
  let fromFedAvg = 0;
  params.forEach(({ name }, i) => {
    const before = old[name]!.data as Float32Array;
    const after = next[name]!.data as Float32Array;
    for (let k = 0; k < before.length; k++) {
      const mean = (12 * reported[0]!.diff[i]!.data[k]! + 40 * reported[1]!.diff[i]!.data[k]!) / total;
      assert.ok(Math.abs(after[k]! - (before[k]! - 0.5 * mean)) < 1e-5, `${name}[${k}] = ${after[k]}, the plan gives ${before[k]! - 0.5 * mean}`);
      fromFedAvg = Math.max(fromFedAvg, Math.abs(after[k]! - (before[k]! - mean)));
    }
  });
  assert.ok(fromFedAvg > 1e-3, `the checkpoint differs from plain FedAvg (old − mean) by ${fromFedAvg}`);
});

test('an averaging plan that does not fit the parameters is refused at hosting, naming what does not match; a PySyft plan is refused as one this node cannot run', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  const onnx = mlpModel(4, 3, 2, 5);
  const params = Object.entries(modelParams(onnx)).map(([name, v]) => ({ name, dims: [...v.dims] }));
  const host = (name: string, plan: Uint8Array) => admin.socket.request(FlHostTraining, {
    averaging_plan: Buffer.from(plan).toString('hex'), client_config: { name, version: '1' }, server_config: { max_diffs: 1 },
  }, { attachment: onnx });
  const refused = (pattern: RegExp) => (e: GridError) => e.code === 'GRID_ERR_INVALID_AVERAGING_PLAN' && pattern.test(e.message);

  // An output named for no parameter (b2 spelt "bias2").
  await assert.rejects(host('a', serverLrPlan(params, 0.5, { outputs: [...params.slice(0, 3), { name: 'bias2', dims: [2] }] })),
    refused(/^averaging_plan: output "bias2" is not a parameter of the model; the outputs must be named as its parameters: "w1", "b1", "w2", "b2"$/));
  // The right names, a wrong shape.
  await assert.rejects(host('b', serverLrPlan(params, 0.5, { outputs: [params[0]!, { name: 'b1', dims: [4] }, ...params.slice(2)] })),
    refused(/output "b1" has shape \[4\], but parameter "b1" is \[3\]/));
  // A parameter left without an output.
  await assert.rejects(host('c', serverLrPlan(params.slice(0, 3), 0.5)), refused(/no output for parameter "b2"/));
  // A model, not an averaging plan: its input "x" is nothing the node feeds.
  await assert.rejects(host('d', mlpModel(2, 2, 2)), refused(/input "x" is none the node feeds; inputs are "old\/<param>" and "diff\/<param>"/));
  // Declared shapes fit, but the graph computes another: only the trial run shows it.
  const wrongAxis = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'transposed',
      node: params.map((p) => makeNode(p.dims.length === 2 ? 'Transpose' : 'Identity', [`old/${p.name}`], [p.name])),
      input: params.map((p) => makeValueInfo(`old/${p.name}`, ONNX_DTYPE_CODES.float32, p.dims)),
      output: params.map((p) => makeValueInfo(p.name, ONNX_DTYPE_CODES.float32, p.dims.map(() => null))),
    },
  });
  await assert.rejects(host('e', wrongAxis), refused(/the run gave output "w1" the shape \[3, 4\], but parameter "w1" is \[4, 3\]/));
  await assert.rejects(host('f', Buffer.from('a pysyft plan, protobuf of operations')), (e: GridError) => e.code === 'GRID_ERR_INVALID_MODEL' && /PySyft-serialized Plan, which only PySyft can run: this node cannot run it/.test(e.message));
  assert.deepEqual((await admin.socket.request(FlListProcesses, {})).processes, [], 'nothing was hosted');
  // The fitting plan hosts.
  assert.equal((await host('g', serverLrPlan(params, 0.5))).status, 'success');
});

test('a PyGrid-style process (State model, workers weigh 1) with an averaging plan that reads num_reports: the checkpoint is old − Σ diff, the plan\'s rule, from the diffs the workers sent', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const admin = await node.admin();
  const f32 = ONNX_DTYPE_CODES.float32;
  const shapes = smallModel().map((s) => s.dims);
  // #i = old/#i − diff/#i · num_reports: the sum of the diffs instead of their mean.
  const plan = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'sum-of-diffs',
      node: shapes.flatMap((_, i) => [makeNode('Mul', [`diff/#${i}`, 'num_reports'], [`step${i}`]), makeNode('Sub', [`old/#${i}`, `step${i}`], [`#${i}`])]),
      input: [...shapes.flatMap((d, i) => [makeValueInfo(`old/#${i}`, f32, d), makeValueInfo(`diff/#${i}`, f32, d)]), makeValueInfo('num_reports', f32, [1])],
      output: shapes.map((d, i) => makeValueInfo(`#${i}`, f32, d)),
    },
  });
  await hostProcess(admin, { name: 'pygrid-sum', server: { max_diffs: 2, num_cycles: 1 }, averagingPlan: Buffer.from(plan).toString('hex') });
  const sockets = [await PyGridSocket.open(node.node.url), await PyGridSocket.open(node.node.url)];
  t.after(() => { for (const s of sockets) s.close(); });
  const closed = once(node.node.fl.engine, 'cycle-closed');
  const deltas = [[[0.5, 1, -1, 2], [0.25, 0]], [[1.5, -1, 3, 0], [-0.75, 1]]];
  for (const [i, s] of sockets.entries()) {
    const j = await joinCycle(s, 'pygrid-sum');
    assert.deepEqual(await s.call('model-centric/report', { worker_id: j.workerId, request_key: j.cycle.request_key, diff: diffOf(deltas[i]!) }), { status: 'success' });
  }
  await closed;
  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=pygrid-sum&version=1.0`);
  const next = decodeState(new Uint8Array(await res.arrayBuffer()), 'the checkpoint');
  const old = smallModel();
  // PyGrid's FedAvg would give old − mean: w[0] = 1.5 − 1 = 0.5; the plan gives 1.5 − 2 = −0.5.
  assert.deepEqual(next.map((x) => Array.from(x.data)), old.map((x, i) => Array.from(x.data, (v, k) => v - (deltas[0]![i]![k]! + deltas[1]![i]![k]!))));
});
