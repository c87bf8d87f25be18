// Inference limits (issue 11, defects 6 and 7): a request's cost is bounded by the node, not by what a
// model or a tensor header asks for. The real node on 127.0.0.1:0, the real GridClient, real onnxruntime.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeModel, makeAttribute, makeNode, makeValueInfo, ONNX_DTYPE_CODES, tensorToProto } from '../../src/compute/onnx';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, GridError } from '../../src/core/errors';
import { RunInference } from '../../src/core/protocol/messages';
import { decodeNamedTensors, encodeNamedTensors, type NamedTensors } from '../../src/core/protocol/tensor';
import type { GridNode } from '../../src/node/server';
import { ADMIN_PASSWORD, mlpModel, startTestNode } from '../helpers/node-fixtures';

const MiB = 1024 * 1024;

/** y = ConstantOfShape(shape) filled with 1.5: a few bytes of input ask for any amount of output. */
function constantOfShapeModel(): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'constant-of-shape',
      node: [makeNode('ConstantOfShape', ['shape'], ['y'], [makeAttribute('value', { tensor: tensorToProto('', { dtype: 'float32', dims: [1], data: Float32Array.of(1.5) }) })])],
      input: [makeValueInfo('shape', ONNX_DTYPE_CODES.int64, ['rank'])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, undefined)],
    },
  });
}

/** y = ConstantOfShape(shape × 2): the size is computed inside the graph, so only the run can tell it. */
function doubledShapeModel(): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'doubled-shape',
      node: [
        makeNode('Mul', ['shape', 'two'], ['doubled']),
        makeNode('ConstantOfShape', ['doubled'], ['y'], [makeAttribute('value', { tensor: tensorToProto('', { dtype: 'float32', dims: [1], data: Float32Array.of(1.5) }) })]),
      ],
      initializer: [tensorToProto('two', { dtype: 'int64', dims: [], data: BigInt64Array.of(2n) })],
      input: [makeValueInfo('shape', ONNX_DTYPE_CODES.int64, ['rank'])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, undefined)],
    },
  });
}

/** y = Range(0, limit, 1) as int32: every element differs, so a reassembled output can be checked. */
function rangeModel(): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'range',
      node: [makeNode('Range', ['start', 'limit', 'delta'], ['y'])],
      input: [makeValueInfo('start', ONNX_DTYPE_CODES.int32, []), makeValueInfo('limit', ONNX_DTYPE_CODES.int32, []), makeValueInfo('delta', ONNX_DTYPE_CODES.int32, [])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.int32, [null])],
    },
  });
}

/** o = Identity(s) over strings of shape `dims`. */
function stringModel(dims: (number | string)[]): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'strings',
      node: [makeNode('Identity', ['s'], ['o'])],
      input: [makeValueInfo('s', ONNX_DTYPE_CODES.string, dims)],
      output: [makeValueInfo('o', ONNX_DTYPE_CODES.string, dims)],
    },
  });
}

const shapeInput = (dims: number[]): NamedTensors => ({ shape: { dtype: 'int64', dims: [dims.length], data: BigInt64Array.from(dims, BigInt) } });
const scalar = (v: number) => ({ dtype: 'int32' as const, dims: [], data: Int32Array.of(v) });

/** run-inference requests the node has answered (any outcome), from its own metrics. */
async function inferenceRequests(node: GridNode): Promise<number> {
  const { values } = await node.metrics.requests.get();
  return values.filter((v) => v.labels.type === 'run-inference').reduce((sum, v) => sum + v.value, 0);
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<GridError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GridError, `expected a GridError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}, but the request succeeded`);
}

/** Pings the node over `client` until `until` settles; returns the slowest round trip in ms. */
async function slowestPing(client: GridClient, until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => { done = true; }).catch(() => {});
  let worst = 0;
  while (!done) {
    const t0 = performance.now();
    await client.socket.request('ping', undefined, { timeout: 30_000 });
    worst = Math.max(worst, performance.now() - t0);
  }
  return worst;
}

test('a 56-byte request for a 512 MiB output is refused before the model runs, and reaches the node once', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(constantOfShapeModel(), { id: 'cos', allowRemoteInference: true });
  const small = await c.runInference('cos', shapeInput([2, 3]));
  assert.deepEqual([...(small.y!.data as Float32Array)], [1.5, 1.5, 1.5, 1.5, 1.5, 1.5]);
  const before = await inferenceRequests(n.node);
  const rss = process.memoryUsage().rss;
  let peak = rss;
  const sample = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 5);
  t.after(() => clearInterval(sample));
  const started = performance.now();
  const input = encodeNamedTensors(shapeInput([8192, 16384]));
  assert.equal(input.length, 56);
  const err = await rejectsWith(c.socket.call(RunInference, { model_id: 'cos' }, { attachment: input, timeout: 60_000 }), ErrorCodes.PAYLOAD_TOO_LARGE);
  const ms = performance.now() - started;
  peak = Math.max(peak, process.memoryUsage().rss);
  t.diagnostic(`refused after ${ms.toFixed(0)} ms; RSS grew ${((peak - rss) / MiB).toFixed(0)} MiB`);
  assert.match(err.message, /output "y" would take 512 MiB/);
  assert.match(err.message, /limit of 256 MiB/);
  assert.ok(peak - rss < 128 * MiB, `RSS grew by ${((peak - rss) / MiB).toFixed(0)} MiB: the output was allocated`);
  assert.equal(await inferenceRequests(n.node) - before, 1, 'the request reached the node exactly once');
});

test('an output over the limit that only the run reveals fails with PAYLOAD_TOO_LARGE naming it, runs once, and never stalls other clients', async (t) => {
  const n = await startTestNode({ inference: { maxOutputBytes: 32 * MiB } });
  t.after(() => n.close());
  const c = await n.admin();
  const other = await n.anonymous();
  await c.hostModel(doubledShapeModel(), { id: 'cos2', allowRemoteInference: true });
  // A small output still works (and loads the model, so the timing below is the run alone).
  const small = await c.runInference('cos2', shapeInput([1, 3]));
  assert.deepEqual(small.y!.dims, [2, 6]);
  const before = await inferenceRequests(n.node);

  const started = performance.now();
  // A few bytes of input asking for 128 MiB of float32.
  const run = rejectsWith(c.runInference('cos2', shapeInput([1024, 8192]), { timeoutMs: 60_000 }), ErrorCodes.PAYLOAD_TOO_LARGE);
  const worstPing = await slowestPing(other, run);
  const err = await run;
  const ms = performance.now() - started;
  assert.match(err.message, /output "y" came to 128 MiB/);
  assert.equal(err.details?.output, 'y');
  t.diagnostic(`refused after ${ms.toFixed(0)} ms; slowest ping of another client meanwhile ${worstPing.toFixed(0)} ms`);
  assert.ok(ms < 20_000, `refused after ${ms.toFixed(0)} ms`);
  assert.ok(worstPing < 250, `another client's ping took ${worstPing.toFixed(0)} ms while the oversized run was refused`);
  assert.equal(await inferenceRequests(n.node) - before, 1, 'the request reached the node exactly once');
  // The connection and the model are still fine.
  assert.deepEqual((await c.runInference('cos2', shapeInput([4]))).y!.dims, [8]);
});

test('an output whose size the signature fixes is refused before the model runs', async (t) => {
  const n = await startTestNode({ inference: { maxOutputBytes: MiB } });
  t.after(() => n.close());
  const c = await n.admin();
  const model = encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'tile',
      node: [makeNode('Tile', ['x', 'reps'], ['y'])],
      initializer: [tensorToProto('reps', { dtype: 'int64', dims: [2], data: BigInt64Array.of(1n, 1024n) })],
      input: [makeValueInfo('x', ONNX_DTYPE_CODES.float32, ['batch', 256])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, ['batch', 262144])],
    },
  });
  await c.hostModel(model, { id: 'tile', allowRemoteInference: true });
  const ok = await c.runInference('tile', { x: { dtype: 'float32', dims: [1, 256], data: new Float32Array(256).fill(2) } });
  assert.equal(ok.y!.data.length, 262144);
  const err = await rejectsWith(c.runInference('tile', { x: { dtype: 'float32', dims: [2, 256], data: new Float32Array(512) } }), ErrorCodes.PAYLOAD_TOO_LARGE);
  assert.match(err.message, /output "y" would take 2 MiB/);
});

test('a 30 MiB output arrives intact as a chunked download, even for a client whose frame limit is 16 MiB', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await GridClient.connect(n.node.url, {
    credentials: { username: 'admin', password: ADMIN_PASSWORD }, connect: { maxPayload: 16 * MiB }, reconnect: { maxAttempts: 0 },
  });
  t.after(() => c.dispose());
  await c.hostModel(rangeModel(), { id: 'range', allowRemoteInference: true });
  const count = 30 * MiB / 4;
  const out = await c.runInference('range', { start: scalar(0), limit: scalar(count), delta: scalar(1) }, { timeoutMs: 60_000 });
  const y = out.y!;
  assert.equal(y.dtype, 'int32');
  assert.deepEqual(y.dims, [count]);
  const data = y.data as Int32Array;
  let wrong = -1;
  for (let i = 0; i < count; i++) if (data[i] !== i) { wrong = i; break; }
  assert.equal(wrong, -1, `element ${wrong} is ${data[wrong]}`);
  // The reply itself was a frame of a few hundred bytes: it offered the outputs as a download.
  const { data: reply, attachment } = await c.socket.call(RunInference, { model_id: 'range' }, { attachment: encodeNamedTensors({ start: scalar(0), limit: scalar(count), delta: scalar(1) }) });
  assert.equal(attachment, undefined);
  assert.ok(reply.download !== undefined && reply.download.size > 30 * MiB);
});

test('a reply bigger than the client\'s frame limit fails that request with PAYLOAD_TOO_LARGE; it is not sent again after the reconnect', async (t) => {
  // Outputs stay in the reply frame up to 64 MiB here, so a 4 MiB reply meets a client that accepts 1 MiB.
  const n = await startTestNode({ inference: { transferOutputBytes: 64 * MiB } });
  t.after(() => n.close());
  const c = await GridClient.connect(n.node.url, {
    credentials: { username: 'admin', password: ADMIN_PASSWORD }, connect: { maxPayload: MiB }, reconnect: { maxAttempts: 10, initialDelayMs: 10, maxDelayMs: 50 },
  });
  t.after(() => c.dispose());
  await c.hostModel(constantOfShapeModel(), { id: 'cos', allowRemoteInference: true });
  const before = await inferenceRequests(n.node);
  const err = await rejectsWith(c.runInference('cos', shapeInput([1024, 1024]), { timeoutMs: 30_000 }), ErrorCodes.PAYLOAD_TOO_LARGE);
  assert.match(err.message, /maxPayload/);
  // The socket reconnects by itself; a request re-sent on reconnect would reach the node before this one.
  const probe = await c.runInference('cos', shapeInput([8]));
  assert.equal(probe.y!.data.length, 8);
  assert.equal(await inferenceRequests(n.node) - before, 2, 'the oversized request ran once, then only the probe');
});

test('a request bigger than the node\'s frame limit fails with PAYLOAD_TOO_LARGE and is not sent again', async (t) => {
  const n = await startTestNode({ maxPayload: MiB });
  t.after(() => n.close());
  const c = await GridClient.connect(n.node.url, {
    credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 10, initialDelayMs: 10, maxDelayMs: 50 },
  });
  t.after(() => c.dispose());
  await c.hostModel(stringModel(['n']), { id: 'strings', allowRemoteInference: true });
  const before = await inferenceRequests(n.node);
  const big = Array.from({ length: 2048 }, () => 'x'.repeat(1024));
  await rejectsWith(c.runInference('strings', { s: { dtype: 'string', dims: [big.length], data: big } }, { timeoutMs: 30_000 }), ErrorCodes.PAYLOAD_TOO_LARGE);
  const ok = await c.runInference('strings', { s: { dtype: 'string', dims: [2], data: ['a', 'b'] } });
  assert.deepEqual(ok.o!.data, ['a', 'b']);
  assert.equal(await inferenceRequests(n.node) - before, 1, 'only the small request was handled');
});

/** The wire form of one string tensor input "s" of `count` one-letter strings, built without a JS string per element. */
function oneLetterStrings(count: number): Buffer {
  const name = Buffer.from('s');
  const tensorBytes = 16 + 5 * count;
  const out = Buffer.alloc(8 + 8 + 8 + tensorBytes);
  out.writeUInt32LE(1, 0);
  out.writeUInt16LE(name.length, 8);
  name.copy(out, 10);
  out.writeDoubleLE(tensorBytes, 16);
  out.writeUInt8(12, 24); // dtype code of 'string'
  out.writeUInt16LE(1, 26); // rank 1
  out.writeDoubleLE(count, 32);
  for (let p = 40; p < out.length; p += 5) { out.writeUInt32LE(1, p); out[p + 4] = 0x61; }
  return out;
}

test('a request that repeats accepted shapes runs; one that differs from them in any way is checked again', async (t) => {
  // The node remembers the inputs a model last accepted, and answers a repeat with a comparison instead of the checks.
  const n = await startTestNode({ inference: { maxOutputBytes: 64 } });
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(mlpModel(4, 3, 2), { id: 'mlp', allowRemoteInference: true });
  const x = (rows: number): NamedTensors => ({ x: { dtype: 'float32', dims: [rows, 4], data: new Float32Array(rows * 4).fill(0.5) } });
  for (let i = 0; i < 3; i++) assert.equal((await c.runInference('mlp', x(1))).y!.data.length, 2);
  assert.match((await rejectsWith(c.runInference('mlp', { x: { dtype: 'float64', dims: [1, 4], data: new Float64Array(4) } }), ErrorCodes.INVALID_INPUT)).message, /input "x" must be float32, got float64/);
  assert.match((await rejectsWith(c.runInference('mlp', { x: { dtype: 'float32', dims: [1, 5], data: new Float32Array(5) } }), ErrorCodes.INVALID_INPUT)).message, /input "x" must have shape/);
  assert.match((await rejectsWith(c.runInference('mlp', { x: { dtype: 'float32', dims: [4], data: new Float32Array(4) } }), ErrorCodes.INVALID_INPUT)).message, /input "x" must have shape/);
  assert.match((await rejectsWith(c.runInference('mlp', { ...x(1), extra: { dtype: 'float32', dims: [1], data: new Float32Array(1) } }), ErrorCodes.INVALID_INPUT)).message, /no input "extra"/);
  assert.match((await rejectsWith(c.runInference('mlp', {}), ErrorCodes.INVALID_INPUT)).message, /input "x" is missing/);
  assert.match((await rejectsWith(c.runInference('mlp', { z: x(1).x! }), ErrorCodes.INVALID_INPUT)).message, /no input "z"/);
  assert.match((await rejectsWith(c.runInference('mlp', x(9)), ErrorCodes.PAYLOAD_TOO_LARGE)).message, /output "y" would take 72 bytes/);
  assert.equal((await c.runInference('mlp', x(1), { outputs: ['y'] })).y!.data.length, 2);
  assert.match((await rejectsWith(c.runInference('mlp', x(1), { outputs: ['y', 'nope'] }), ErrorCodes.INVALID_INPUT)).message, /no output "nope"/);
  assert.equal((await c.runInference('mlp', x(1))).y!.data.length, 2);
  // The accepted shapes still run, after all those refusals and between them.
  assert.equal((await c.runInference('mlp', x(1))).y!.data.length, 2);
  assert.equal((await c.runInference('mlp', x(8))).y!.data.length, 16);
});

test('a huge string tensor is refused from its header: wrong element count, or over the string budget', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(stringModel([4]), { id: 'four-strings', allowRemoteInference: true });
  await c.hostModel(stringModel(['n']), { id: 'strings', allowRemoteInference: true });
  const count = 4_000_000; // 19 MiB of one-letter strings
  const wire = oneLetterStrings(count);
  const send = async (model: string, code: string) => {
    const t0 = performance.now();
    const err = await rejectsWith(c.socket.call(RunInference, { model_id: model }, { attachment: wire, timeout: 60_000 }), code);
    return { err, ms: performance.now() - t0 };
  };
  // What decoding it costs (the node's first step before), and what moving 19 MiB to the node and
  // back costs (refused before its tensors are looked at: no such model).
  const t0 = performance.now();
  assert.equal(decodeNamedTensors(wire).s!.data.length, count);
  const decodeMs = performance.now() - t0;
  const floorBefore = await send('no-such-model', ErrorCodes.NOT_FOUND);

  const shape = await send('four-strings', ErrorCodes.INVALID_INPUT);
  assert.match(shape.err.message, /input "s" must have shape \[4\], got \[4000000\]/);
  const budget = await send('strings', ErrorCodes.PAYLOAD_TOO_LARGE);
  assert.match(budget.err.message, /input "s"/);
  assert.match(budget.err.message, /1048576 string elements/);
  const floorAfter = await send('no-such-model', ErrorCodes.NOT_FOUND);
  const floor = floorBefore.ms < floorAfter.ms ? floorBefore : floorAfter;
  t.diagnostic(`decoding ${count} strings: ${decodeMs.toFixed(0)} ms; 19 MiB there and back: ${floor.ms.toFixed(0)} ms; refused for shape in ${shape.ms.toFixed(0)} ms, for the budget in ${budget.ms.toFixed(0)} ms`);
  for (const [what, r] of [['shape', shape], ['budget', budget]] as const) {
    assert.ok(r.ms - floor.ms < decodeMs / 4, `${what} refusal took ${r.ms.toFixed(0)} ms (transport ${floor.ms.toFixed(0)} ms); decoding takes ${decodeMs.toFixed(0)} ms`);
  }
  // Within its budget, a string tensor still runs.
  const ok = await c.runInference('strings', { s: { dtype: 'string', dims: [3], data: ['', 'ü', 'grid'] } });
  assert.deepEqual(ok.o!.data, ['', 'ü', 'grid']);
});
