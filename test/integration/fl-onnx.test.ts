// An FL process hosted from an ONNX model (our hosts): the model arrives as an upload, workers report
// State diffs over its float32 initializers in graph order, and each checkpoint is the same ONNX graph
// with averaged initializers, which onnxruntime loads and runs.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { modelParams } from '../../src/compute/plan/params';
import { FlHostTraining } from '../../src/core/protocol/fl-messages';
import { bufferSource } from '../../src/core/socket/transfer';
import { mlpModel, startTestNode } from '../helpers/node-fixtures';
import { base64, httpBase, joinCycle, PyGridSocket } from '../helpers/fl-fixtures';

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
