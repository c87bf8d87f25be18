// Model serving end to end: the real node on 127.0.0.1:0, the real GridClient, real onnxruntime.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { loadModel } from '../../src/compute/backend';
import { checkModelFile } from '../../src/compute/model-worker';
import { DTYPES, type NamedTensors, type Tensor } from '../../src/core/protocol/tensor';
import type { NodeEvent } from '../../src/core/protocol/messages';
import { dtypesModel, mlpModel, sampleTensor, seededFloats, startTestNode, tempDir, writeBigModel } from '../helpers/node-fixtures';
import { fileSource } from '../../src/core/socket/transfer';
import type { GridClient } from '../../src/core/client';
import { HostModel } from '../../src/core/protocol/messages';

const bytesOf = (t: Tensor) => (t.dtype === 'string' ? Buffer.from(JSON.stringify(t.data)) : Buffer.from((t.data as Uint8Array).buffer, (t.data as Uint8Array).byteOffset, (t.data as Uint8Array).byteLength));

async function runLocally(model: Uint8Array, feeds: NamedTensors): Promise<NamedTensors> {
  const h = await loadModel(model);
  try { return await h.run(feeds); } finally { await h.dispose(); }
}

test('a hosted MLP answers remote inference bit for bit like local onnxruntime, at several batch sizes', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  const model = mlpModel();
  const info = await c.hostModel(model, { id: 'mlp', name: 'MNIST MLP', version: '3', allowRemoteInference: true });
  assert.equal(info.id, 'mlp');
  assert.equal(info.name, 'MNIST MLP');
  assert.equal(info.version, '3');
  assert.equal(info.size, model.length);
  assert.equal(info.sha256, createHash('sha256').update(model).digest('hex'));
  assert.equal(info.owner, 'admin');
  assert.deepEqual(info.signature.inputs, [{ name: 'x', dtype: 'float32', dims: ['batch', 784] }]);
  assert.deepEqual(info.signature.outputs, [{ name: 'y', dtype: 'float32', dims: ['batch', 10] }]);
  for (const batch of [1, 7, 256]) {
    const feeds: NamedTensors = { x: { dtype: 'float32', dims: [batch, 784], data: seededFloats(batch * 784, batch) } };
    const remote = await c.runInference('mlp', feeds);
    const local = await runLocally(model, feeds);
    assert.deepEqual(Object.keys(remote), ['y']);
    assert.deepEqual(remote.y!.dims, [batch, 10]);
    assert.ok(bytesOf(remote.y!).equals(bytesOf(local.y!)), `batch ${batch}: remote and local outputs differ`);
  }
});

test('every dtype travels to the model and back exactly, with several inputs and outputs', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(dtypesModel(), { id: 'dtypes', allowRemoteInference: true });
  const feeds: NamedTensors = {};
  for (const d of DTYPES) feeds[`in_${d}`] = sampleTensor(d, 5);
  feeds.a = { dtype: 'float32', dims: [5], data: Float32Array.from([1, 2, 3, 4, 5]) };
  feeds.b = { dtype: 'float32', dims: [5], data: Float32Array.from([10, 20, 30, 40, 50]) };
  const out = await c.runInference('dtypes', feeds);
  for (const d of DTYPES) {
    const o = out[`out_${d}`]!;
    assert.equal(o.dtype, d);
    assert.deepEqual(o.dims, [5]);
    assert.deepEqual(Array.from(o.data as ArrayLike<unknown>), Array.from(feeds[`in_${d}`]!.data as ArrayLike<unknown>), d);
  }
  assert.deepEqual(Array.from(out.sum!.data as Float32Array), [11, 22, 33, 44, 55]);
  // Asking for a subset of outputs computes only those.
  const some = await c.runInference('dtypes', feeds, { outputs: ['sum', 'out_int64'] });
  assert.deepEqual(Object.keys(some).sort(), ['out_int64', 'sum']);
});

test('list, info, download (sha256-checked, atomic) and delete; the file appears only when complete', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  const model = mlpModel(16, 8, 2);
  await c.hostModel(model, { id: 'small', allowDownload: true });
  await c.hostModel(mlpModel(4, 4, 4), { id: 'other' });
  assert.deepEqual((await c.listModels()).map((m) => m.id), ['other', 'small']);
  assert.equal((await c.modelInfo('small')).allow_download, true);
  const out = path.join(tempDir(), 'small.onnx');
  t.after(() => fs.rmSync(path.dirname(out), { recursive: true, force: true }));
  const seen: number[] = [];
  await c.downloadModel('small', out, { onProgress: (done) => seen.push(done) });
  assert.ok(fs.readFileSync(out).equals(Buffer.from(model)));
  assert.equal(seen.at(-1), model.length);
  assert.ok(!fs.existsSync(`${out}.partial`));
  await c.deleteModel('small');
  assert.deepEqual((await c.listModels()).map((m) => m.id), ['other']);
  await assert.rejects(c.modelInfo('small'), { code: 'GRID_ERR_NOT_FOUND' });
  // The blob went with the last model that used it.
  const blobs = fs.readdirSync(path.join(n.dir, 'blobs'), { recursive: true }).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(String(f))));
  assert.equal(blobs.length, 1);
});

test('a model file from disk is streamed up in chunks and hosted', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'wide.onnx');
  const model = mlpModel(784, 2048, 10); // ~6.5 MB: several 1 MiB chunks
  fs.writeFileSync(file, model);
  const progress: number[] = [];
  const info = await c.hostModel(file, { id: 'wide', allowRemoteInference: true, onProgress: (d) => progress.push(d) });
  assert.equal(info.size, model.length);
  assert.ok(progress.length >= 2, `expected progress before the end, got ${progress.join(', ')}`);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
  assert.equal(progress.at(-1), model.length);
  const y = await c.runInference('wide', { x: { dtype: 'float32', dims: [1, 784], data: seededFloats(784, 3) } });
  assert.deepEqual(y.y!.dims, [1, 10]);
});

test('subscribers hear model-added, model-removed and dataset-added without polling', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const watcher = await n.anonymous();
  const c = await n.admin();
  const stream = watcher.subscribe(['models', 'datasets']);
  const events: NodeEvent[] = [];
  const got = (count: number) => new Promise<void>((resolve) => {
    const check = () => { if (events.length >= count) resolve(); };
    stream.subscribe({ next: (ev) => { events.push(ev); check(); } });
  });
  const three = got(3);
  // The subscription is registered once any request after it has been answered (one socket, in order).
  await watcher.getId();
  await c.hostModel(mlpModel(4, 4, 2), { id: 'm1' });
  await c.deleteModel('m1');
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'd.csv'), 'a,b,label\n1,2,0\n3,4,1\n');
  await n.node.registerDataset({ name: 'tiny', path: path.join(dir, 'd.csv'), tags: ['demo'] });
  await three;
  assert.deepEqual(events.map((e) => e.event), ['model-added', 'model-removed', 'dataset-added']);
  assert.equal(events[0]!.event === 'model-added' && events[0]!.model.id, 'm1');
  stream.cancel();
});

test('a restart keeps models, users, sessions and the node id', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const model = mlpModel(8, 8, 3);
  let first = await startTestNode({ dataDir: dir });
  const c1 = await first.admin();
  await c1.hostModel(model, { id: 'keep', allowRemoteInference: true, allowDownload: true });
  const { token } = await c1.authenticate({ username: 'admin', password: 'correct horse battery staple' });
  const id1 = (await c1.getId()).id;
  await first.close();

  first = await startTestNode({ dataDir: dir });
  t.after(() => first.close());
  const c2 = await first.anonymous();
  assert.equal((await c2.getId()).id, id1);
  assert.deepEqual((await c2.listModels()).map((m) => m.id), ['keep']);
  await c2.authenticate({ token }); // the session survived the restart
  const y = await c2.runInference('keep', { x: { dtype: 'float32', dims: [1, 8], data: seededFloats(8, 1) } });
  const local = await runLocally(model, { x: { dtype: 'float32', dims: [1, 8], data: seededFloats(8, 1) } });
  assert.ok(bytesOf(y.y!).equals(bytesOf(local.y!)));
});

test("PyGrid's HTTP routes: /models/, /dataset-tags and POST /search", async (t) => {
  const n = await startTestNode({ datasets: [{ name: 'iris', path: path.join(__dirname, '../../media/datasets/iris.csv'), tags: ['uci', 'flowers'] }] });
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(mlpModel(4, 4, 2), { id: 'm1' });
  const http = n.node.url.replace('ws://', 'http://');
  assert.deepEqual(await fetch(`${http}/models/`).then((r) => r.json()), { success: true, models: ['m1'] });
  assert.deepEqual(await fetch(`${http}/dataset-tags`).then((r) => r.json()), ['flowers', 'uci']);
  const search = (query: unknown) => fetch(`${http}/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
  assert.deepEqual(await search(['uci', 'flowers']).then((r) => r.json()), { content: true });
  assert.deepEqual(await search(['genomes']).then((r) => r.json()), { content: false });
  const bad = await search('uci');
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'GRID_ERR_INVALID_MESSAGE');
  assert.equal((await fetch(`${http}/nothing-here`)).status, 404);
});

test('hosting and downloading can be cancelled; nothing half-done becomes visible', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  const model = mlpModel(784, 2048, 10); // several chunks
  const ac = new AbortController();
  await assert.rejects(c.hostModel(model, { id: 'cancelled', signal: ac.signal, onProgress: () => ac.abort() }), { code: 'GRID_ERR_ABORTED' });
  assert.deepEqual(await c.listModels(), []);
  await c.hostModel(model, { id: 'cancelled', allowDownload: true });
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dest = path.join(dir, 'm.onnx');
  const ac2 = new AbortController();
  await assert.rejects(c.downloadModel('cancelled', dest, { signal: ac2.signal, onProgress: () => ac2.abort() }), { code: 'GRID_ERR_ABORTED' });
  assert.deepEqual(fs.readdirSync(dir), [], 'no file and no .partial left behind');
  await c.downloadModel('cancelled', dest);
  assert.ok(fs.readFileSync(dest).equals(Buffer.from(model)));
});

/**
 * Another client asks over and over until `work` settles. Returns the longest it waited for an answer and
 * how long `work` took: a node busy on its event loop (loading or running a big model) would leave that
 * client waiting for all of it.
 */
async function waitsWhile(other: GridClient, work: Promise<unknown>): Promise<{ longest: number; total: number; answered: number }> {
  let settled = false;
  const started = performance.now();
  void work.then(() => { settled = true; }, () => { settled = true; });
  let longest = 0;
  let answered = 0;
  while (!settled) {
    const t0 = performance.now();
    await other.listModels();
    longest = Math.max(longest, performance.now() - t0);
    answered += 1;
  }
  await work;
  return { longest, total: performance.now() - started, answered };
}

test('while the node loads and runs a big model in onnxruntime, it keeps answering other clients', async (t) => {
  // Loading a model is seconds of native work for a big one (the node loads every upload to check it,
  // then again for its first inference); both happen off the node's event loop.
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'big.onnx');
  const { cols } = writeBigModel(file, 128 * 1024 * 1024);
  const owner = await n.admin();
  const other = await n.anonymous();
  const up = await owner.socket.upload(await fileSource(file));
  const hosting = owner.socket.request(HostModel, { model_id: 'big', transfer_id: up.transfer_id, allow_remote_inference: true }, { timeout: 120_000 });
  const h = await waitsWhile(other, hosting);
  assert.equal((await hosting).model.id, 'big');
  assert.ok(h.longest < h.total / 10, `a list-models request waited ${h.longest.toFixed(0)} ms while hosting took ${h.total.toFixed(0)} ms (${h.answered} answered)`);
  // The first inference loads the session (on the model thread), then runs it there.
  const first = owner.runInference('big', { i: { dtype: 'int64', dims: [1], data: BigInt64Array.from([321n]) } });
  const r = await waitsWhile(other, first);
  assert.ok(r.longest < r.total / 10, `a list-models request waited ${r.longest.toFixed(0)} ms while the first inference took ${r.total.toFixed(0)} ms (${r.answered} answered)`);
  const row = await first;
  assert.deepEqual(row.y!.dims, [1, cols]);
  assert.ok((row.y!.data as Float32Array).every((v) => v === 321), 'row 321 of the 128 MiB initializer came back');
  // Later runs reuse the session; a bad input is still refused with the input named.
  const again = await owner.runInference('big', { i: { dtype: 'int64', dims: [1], data: BigInt64Array.from([5n]) } });
  assert.ok((again.y!.data as Float32Array).every((v) => v === 5));
  await assert.rejects(owner.runInference('big', { i: { dtype: 'float32', dims: [1], data: Float32Array.from([5]) } }), { code: 'GRID_ERR_INVALID_INPUT', message: /input "i" must be int64/ });
});

test('a model check reads the signature and refuses bad bytes; a big model is checked on a worker thread that stops when aborted', async (t) => {
  const dir = tempDir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const good = path.join(dir, 'good.onnx');
  fs.writeFileSync(good, mlpModel(6, 4, 3));
  assert.deepEqual(await checkModelFile(good), {
    inputs: [{ name: 'x', dtype: 'float32', dims: ['batch', 6] }],
    outputs: [{ name: 'y', dtype: 'float32', dims: ['batch', 3] }],
  });
  const bad = path.join(dir, 'bad.onnx');
  fs.writeFileSync(bad, Buffer.from(mlpModel(6, 4, 3)).subarray(0, 100));
  await assert.rejects(checkModelFile(bad), (err: Error & { code?: string }) => err.code === 'GRID_ERR_INVALID_MODEL' && /protobuf|load/i.test(err.message));
  const big = path.join(dir, 'big.onnx');
  const { cols } = writeBigModel(big, 64 * 1024 * 1024);
  assert.deepEqual((await checkModelFile(big)).outputs, [{ name: 'y', dtype: 'float32', dims: [1, cols] }]);
  const noise = path.join(dir, 'noise.onnx');
  fs.writeFileSync(noise, Buffer.from(seededFloats(2 * 1024 * 1024, 9).buffer)); // 8 MiB: checked on a worker
  await assert.rejects(checkModelFile(noise), { code: 'GRID_ERR_INVALID_MODEL' });
  const ac = new AbortController();
  const checking = checkModelFile(big, {}, ac.signal);
  ac.abort();
  await assert.rejects(checking, { code: 'GRID_ERR_ABORTED' });
});

test('models hosted and deleted one after another are each listed once and deleted by their plain name', { timeout: 300_000 }, async (t) => {
  // On PostgreSQL the re-read that an upload's own commit notification starts could cache the new row
  // before the upload did, and the model showed two "version 1"s (its delete refused as ambiguous).
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  const model = mlpModel(4, 3, 2);
  for (let i = 0; i < 150; i++) {
    const id = `one-${i}`;
    await c.hostModel(model, { id });
    assert.deepEqual((await c.listModels({ allVersions: true })).map((m) => [m.id, m.version]), [[id, '1']], `${id} is listed once`);
    await c.deleteModel(id);
  }
});
