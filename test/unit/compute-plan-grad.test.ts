// Every gradient rule of the plan builder against central finite differences of the plan's own loss,
// run through the real onnxruntime. float64 where ORT has double kernels, float32 (looser) elsewhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type ModelHandle } from '../../src/compute/backend';
import { decodeModel, encodeModel, floatAttribute, makeAttribute, makeNode, makeValueInfo, tensorToProto, ONNX_DTYPE_CODES } from '../../src/compute/onnx';
import { buildPlan, cnn, mlp, seededRandom, type PlanOptions, type TrainingPlan } from '../../src/compute/plan';
import type { OnnxNode } from '../../src/compute/onnx';
import type { NamedTensors, Tensor } from '../../src/core/protocol/tensor';
import { GridError } from '../../src/core/errors';

type F = 'float32' | 'float64';
const arr = (dtype: F, n: number, f: (i: number) => number) => { const a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n); for (let i = 0; i < n; i++) a[i] = f(i); return a; };
const count = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);

interface TinySpec {
  dtype: F;
  nodes: OnnxNode[];
  params: Record<string, { dims: number[]; fill?: (i: number) => number }>;
  consts?: Record<string, Tensor>;
  input: number[];
  outputDims: (number | string)[];
}

/** A model with data input "x" [N, …] and output "y" built from nodes. */
function tiny(spec: TinySpec, seed = 7): Uint8Array {
  const rand = seededRandom(seed);
  const inits = Object.entries(spec.params).map(([name, p]) => tensorToProto(name, { dtype: spec.dtype, dims: p.dims, data: arr(spec.dtype, count(p.dims), p.fill ?? (() => rand() * 2 - 1)) } as Tensor));
  for (const [name, t] of Object.entries(spec.consts ?? {})) inits.push(tensorToProto(name, t));
  const code = ONNX_DTYPE_CODES[spec.dtype];
  return encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
    graph: { name: 'tiny', node: spec.nodes, initializer: inits, input: [makeValueInfo('x', code, ['N', ...spec.input.slice(1)])], output: [makeValueInfo('y', code, spec.outputDims)] },
  });
}

interface Case { plan: TrainingPlan; handle: ModelHandle; feeds: NamedTensors }

async function prepare(model: Uint8Array, opts: Partial<PlanOptions> & { loss: PlanOptions['loss'] }, batch: Tensor, seed = 3): Promise<Case> {
  const plan = buildPlan(model, { optimizer: 'sgd', emitGradients: true, ...opts });
  const handle = await loadModel(plan.bytes, { intraOpNumThreads: 1 });
  const rand = seededRandom(seed);
  const dtype = plan.info.floatType;
  const n = batch.dims[0]!;
  const labels: Tensor = plan.info.loss === 'cross_entropy'
    ? { dtype: 'int64', dims: [n], data: BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rand() * (plan.info.labels.dims.length ? 3 : 1)))) }
    : (() => { const dims = plan.info.labels.dims.map((d) => (typeof d === 'number' ? d : n)); return { dtype, dims, data: arr(dtype, count(dims), () => rand() * 2 - 1) } as Tensor; })();
  const feeds: NamedTensors = { [plan.info.input.name]: batch, [plan.info.labels.name]: labels, lr: { dtype, dims: [], data: arr(dtype, 1, () => 0) } as Tensor };
  for (const p of [...plan.info.params, ...plan.info.buffers]) feeds[p.name] = plan.initialParams[p.name]!;
  return { plan, handle, feeds };
}

/** Compares each parameter's gradient with central differences of the loss at a few sampled entries. */
async function checkGradients(c: Case, { eps, rtol, atol, samples = 5 }: { eps: number; rtol: number; atol: number; samples?: number }): Promise<number> {
  const base = await c.handle.run(c.feeds);
  const rand = seededRandom(11);
  let checked = 0;
  for (const p of c.plan.info.params) {
    const g = base[c.plan.info.outputs.gradients[p.name]!]!.data as Float64Array;
    const orig = c.feeds[p.name]!;
    const n = orig.data.length;
    const idxs = n <= samples ? [...Array(n).keys()] : Array.from({ length: samples }, () => Math.floor(rand() * n));
    for (const i of idxs) {
      const at = (delta: number) => {
        const data = (orig.data as Float64Array).slice();
        data[i] = data[i]! + delta;
        return c.handle.run({ ...c.feeds, [p.name]: { ...orig, data } as Tensor }, { outputs: [c.plan.info.outputs.loss] });
      };
      const lp = (await at(eps))[c.plan.info.outputs.loss]!.data as Float64Array;
      const lm = (await at(-eps))[c.plan.info.outputs.loss]!.data as Float64Array;
      const numeric = (lp[0]! - lm[0]!) / (2 * eps);
      const analytic = g[i]!;
      assert.ok(Math.abs(numeric - analytic) <= atol + rtol * Math.abs(numeric),
        `d loss / d ${p.name}[${i}]: analytic ${analytic}, finite differences ${numeric}`);
      checked++;
    }
  }
  await c.handle.dispose();
  return checked;
}

const F64 = { eps: 1e-6, rtol: 1e-5, atol: 1e-8 };
const F32 = { eps: 1e-2, rtol: 3e-2, atol: 2e-3 };

function batchOf(dtype: F, dims: number[], seed = 5, scale = 1): Tensor {
  const rand = seededRandom(seed);
  return { dtype, dims, data: arr(dtype, count(dims), () => (rand() * 2 - 1) * scale) } as Tensor;
}

test('Gemm (all transpose flags, alpha/beta, broadcast bias) with softmax cross-entropy', async () => {
  for (const [tA, tB] of [[0, 0], [0, 1], [1, 0], [1, 1]]) {
    // transA needs x as [F, N]: transpose the input first so the data input stays [N, F].
    const nodes = [
      ...(tA ? [makeNode('Transpose', ['x'], ['xt'], [makeAttribute('perm', [1, 0])])] : []),
      makeNode('Gemm', [tA ? 'xt' : 'x', 'W', 'b'], ['y'], [makeAttribute('transA', tA), makeAttribute('transB', tB), floatAttribute('alpha', 0.7), floatAttribute('beta', 1.3)], 'fc'),
    ];
    const model = tiny({ dtype: 'float64', nodes, params: { W: { dims: tB ? [3, 4] : [4, 3] }, b: { dims: tA ? [1, 3] : [3] } }, input: [5, 4], outputDims: ['N', 3] });
    const n = await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float64', [5, 4])), F64);
    assert.ok(n >= 6);
  }
});

test('MatMul 2-D and batched 3-D with a broadcast weight, Add bias, mean squared error', async () => {
  const m2 = tiny({ dtype: 'float64', nodes: [makeNode('MatMul', ['x', 'W'], ['h']), makeNode('Add', ['h', 'b'], ['y'])], params: { W: { dims: [4, 2] }, b: { dims: [2] } }, input: [3, 4], outputDims: ['N', 2] });
  await checkGradients(await prepare(m2, { loss: 'mse' }, batchOf('float64', [3, 4])), F64);
  const m3 = tiny({
    dtype: 'float64',
    nodes: [makeNode('Reshape', ['x', 'shape3'], ['x3']), makeNode('MatMul', ['x3', 'W'], ['h']), makeNode('MatMul', ['A', 'h'], ['h2']), makeNode('Reshape', ['h2', 'shape2'], ['y'])],
    params: { W: { dims: [3, 2] }, A: { dims: [2, 2] } },
    consts: { shape3: { dtype: 'int64', dims: [3], data: new BigInt64Array([-1n, 2n, 3n]) }, shape2: { dtype: 'int64', dims: [2], data: new BigInt64Array([-1n, 4n]) } },
    input: [4, 6], outputDims: ['N', 4],
  });
  await checkGradients(await prepare(m3, { loss: 'mse' }, batchOf('float64', [4, 6])), F64);
});

test('Add, Sub, Mul, Div with numpy broadcasting in both directions', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Mul', ['x', 'P1'], ['a']), // [N,3] * [1,3]
      makeNode('Add', ['a', 'P2'], ['b']), // + [3]
      makeNode('Div', ['b', 'P3'], ['c']), // / [N?] no: [1,1]
      makeNode('Sub', ['P4', 'c'], ['d']), // [2,1,3] - [N,3] -> [2,N,3]
      makeNode('Div', ['P5', 'd'], ['e']), // [3] / [2,N,3]
      makeNode('ReduceSum', ['e', 'axis0'], ['y'], [makeAttribute('keepdims', 0)]),
    ],
    params: { P1: { dims: [1, 3] }, P2: { dims: [3] }, P3: { dims: [1, 1], fill: () => 1.7 }, P4: { dims: [2, 1, 3], fill: (i) => 3 + i * 0.25 }, P5: { dims: [3] } },
    consts: { axis0: { dtype: 'int64', dims: [1], data: new BigInt64Array([0n]) } },
    input: [4, 3], outputDims: ['N', 3],
  });
  await checkGradients(await prepare(model, { loss: 'mse' }, batchOf('float64', [4, 3])), F64);
});

test('Relu, LeakyRelu, Sigmoid and Tanh', async () => {
  for (const act of ['Relu', 'LeakyRelu', 'Sigmoid', 'Tanh']) {
    const attrs = act === 'LeakyRelu' ? [floatAttribute('alpha', 0.2)] : [];
    const model = tiny({ dtype: 'float64', nodes: [makeNode('Gemm', ['x', 'W', 'b'], ['h']), makeNode(act, ['h'], ['a'], attrs), makeNode('Gemm', ['a', 'W2'], ['y'])], params: { W: { dims: [4, 5] }, b: { dims: [5] }, W2: { dims: [5, 3] } }, input: [6, 4], outputDims: ['N', 3] });
    await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float64', [6, 4], 9, 2)), F64);
  }
});

test('Softmax and LogSoftmax inside the graph, and a Softmax tail folded into cross-entropy', async () => {
  for (const op of ['Softmax', 'LogSoftmax']) {
    for (const axis of [-1, 0]) {
      const model = tiny({ dtype: 'float64', nodes: [makeNode('Gemm', ['x', 'W'], ['h']), makeNode(op, ['h'], ['y'], [makeAttribute('axis', axis)])], params: { W: { dims: [4, 3] } }, input: [5, 4], outputDims: ['N', 3] });
      await checkGradients(await prepare(model, { loss: 'mse' }, batchOf('float64', [5, 4])), F64).catch((e: Error) => { throw new Error(`${op} axis ${axis}: ${e.message}`); });
    }
  }
  const folded = mlp([4, 6, 3], { softmax: true, dtype: 'float64' });
  const c = await prepare(folded, { loss: 'cross_entropy' }, batchOf('float64', [5, 4]));
  await checkGradients(c, F64);
});

test('Reshape, Flatten, Transpose, Concat, Squeeze and Unsqueeze', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Unsqueeze', ['x', 'ax1'], ['u']), // [N,1,6]
      makeNode('Concat', ['u', 'P'], ['c'], [makeAttribute('axis', 1)]), // P [N?]: broadcast not allowed in Concat, so P is Expand-free [? ] -> use Mul to make [N,2,6]
      makeNode('Transpose', ['c'], ['t'], [makeAttribute('perm', [0, 2, 1])]), // [N,6,3]
      makeNode('Reshape', ['t', 'shape'], ['r']), // [N,3,6]
      makeNode('Flatten', ['r'], ['f'], [makeAttribute('axis', 1)]), // [N,18]
      makeNode('Gemm', ['f', 'W'], ['g']), // [N,3]
      makeNode('Unsqueeze', ['g', 'ax1'], ['g3']),
      makeNode('Squeeze', ['g3', 'ax1'], ['y']),
    ],
    params: { W: { dims: [18, 3] }, P: { dims: [4, 2, 6] } },
    consts: { ax1: { dtype: 'int64', dims: [1], data: new BigInt64Array([1n]) }, shape: { dtype: 'int64', dims: [3], data: new BigInt64Array([0n, 3n, -1n]) } },
    input: [4, 6], outputDims: ['N', 3],
  });
  await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float64', [4, 6])), F64);
});

test('Conv (stride, padding, dilation), MaxPool, AveragePool and GlobalAveragePool', async () => {
  const conv = (attrs: Record<string, number[]>) => Object.entries(attrs).map(([k, v]) => makeAttribute(k, v));
  const variants: { name: string; nodes: OnnxNode[]; feat: number }[] = [
    { name: 'conv stride 2 pad 1 + maxpool', feat: 4 * 2 * 2, nodes: [makeNode('Conv', ['img', 'K', 'kb'], ['c'], conv({ kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })), makeNode('MaxPool', ['c'], ['p'], conv({ kernel_shape: [2, 2], strides: [2, 2] }))] },
    { name: 'conv dilation 2 + averagepool', feat: 4 * 3 * 3, nodes: [makeNode('Conv', ['img', 'K', 'kb'], ['c'], conv({ kernel_shape: [3, 3], dilations: [2, 2], pads: [1, 1, 1, 1] })), makeNode('AveragePool', ['c'], ['p'], conv({ kernel_shape: [3, 3], strides: [1, 1] }))] },
    { name: 'conv asymmetric pads + overlapping maxpool', feat: 4 * 2 * 2, nodes: [makeNode('Conv', ['img', 'K', 'kb'], ['c'], conv({ kernel_shape: [3, 3], pads: [0, 1, 1, 0], strides: [2, 2] })), makeNode('MaxPool', ['c'], ['p'], conv({ kernel_shape: [2, 2], strides: [1, 1] }))] },
    { name: 'conv + global average pool', feat: 4, nodes: [makeNode('Conv', ['img', 'K', 'kb'], ['c'], conv({ kernel_shape: [3, 3], pads: [1, 1, 1, 1] })), makeNode('GlobalAveragePool', ['c'], ['p'])] },
  ];
  for (const v of variants) {
    const model = tiny({
      dtype: 'float32',
      nodes: [makeNode('Reshape', ['x', 'ishape'], ['img']), ...v.nodes, makeNode('Flatten', ['p'], ['f']), makeNode('Gemm', ['f', 'W'], ['y'])],
      params: { K: { dims: [4, 2, 3, 3] }, kb: { dims: [4] }, W: { dims: [v.feat, 3] } },
      consts: { ishape: { dtype: 'int64', dims: [4], data: new BigInt64Array([-1n, 2n, 7n, 7n]) } },
      input: [3, 98], outputDims: ['N', 3],
    });
    await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float32', [3, 98], 4, 2)), { ...F32, samples: 8 });
  }
});

test('grouped Conv (group 2) weight and input gradients', async () => {
  const model = tiny({
    dtype: 'float32',
    nodes: [
      makeNode('Reshape', ['x', 'ishape'], ['img']),
      makeNode('Conv', ['img', 'K0', 'kb0'], ['c0'], [makeAttribute('kernel_shape', [3, 3]), makeAttribute('pads', [1, 1, 1, 1])]),
      makeNode('Conv', ['c0', 'K', 'kb'], ['c'], [makeAttribute('kernel_shape', [3, 3]), makeAttribute('group', 2), makeAttribute('strides', [2, 2])]),
      makeNode('Flatten', ['c'], ['f']),
      makeNode('Gemm', ['f', 'W'], ['y']),
    ],
    params: { K0: { dims: [4, 2, 3, 3] }, kb0: { dims: [4] }, K: { dims: [6, 2, 3, 3] }, kb: { dims: [6] }, W: { dims: [6 * 2 * 2, 3] } },
    consts: { ishape: { dtype: 'int64', dims: [4], data: new BigInt64Array([-1n, 2n, 5n, 5n]) } },
    input: [3, 50], outputDims: ['N', 3],
  });
  await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float32', [3, 50], 8, 2)), { ...F32, samples: 8 });
});

test('a PyTorch-style dynamic flatten (Shape, Gather, Unsqueeze, Concat, Reshape) keeps shapes known', async () => {
  const model = tiny({
    dtype: 'float32',
    nodes: [
      makeNode('Reshape', ['x', 'ishape'], ['img']),
      makeNode('Conv', ['img', 'K'], ['c'], [makeAttribute('kernel_shape', [3, 3])]),
      makeNode('Shape', ['c'], ['s']),
      makeNode('Gather', ['s', 'zero'], ['n'], [makeAttribute('axis', 0)]),
      makeNode('Unsqueeze', ['n', 'axes0'], ['n1']),
      makeNode('Concat', ['n1', 'minus1'], ['target'], [makeAttribute('axis', 0)]),
      makeNode('Reshape', ['c', 'target'], ['f']),
      makeNode('Gemm', ['f', 'W'], ['y']),
    ],
    params: { K: { dims: [2, 1, 3, 3] }, W: { dims: [2 * 3 * 3, 3] } },
    consts: {
      ishape: { dtype: 'int64', dims: [4], data: new BigInt64Array([-1n, 1n, 5n, 5n]) },
      zero: { dtype: 'int64', dims: [], data: new BigInt64Array([0n]) },
      axes0: { dtype: 'int64', dims: [1], data: new BigInt64Array([0n]) },
      minus1: { dtype: 'int64', dims: [1], data: new BigInt64Array([-1n]) },
    },
    input: [4, 25], outputDims: ['N', 3],
  });
  await checkGradients(await prepare(model, { loss: 'cross_entropy' }, batchOf('float32', [4, 25], 2, 2)), F32);
});

test('broadcasting between sizes only known at run time sums gradients with run-time axes', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Gemm', ['x', 'W1'], ['a']), // [N, 2]
      makeNode('Gemm', ['x', 'W2'], ['b']), // [N, 2]
      makeNode('Concat', ['a', 'b'], ['c'], [makeAttribute('axis', 0)]), // [(N+N), 2]
      makeNode('Gemm', ['x', 'W3'], ['d']), // [N, 4]
      makeNode('Reshape', ['d', 'to2'], ['r']), // [2*N, 2]
      makeNode('Mul', ['c', 'r'], ['m']), // sizes equal at run time, different symbols here
      makeNode('ReduceSum', ['m', 'axis0'], ['y'], [makeAttribute('keepdims', 1)]), // [1, 2]
    ],
    params: { W1: { dims: [3, 2] }, W2: { dims: [3, 2] }, W3: { dims: [3, 4] } },
    consts: { to2: { dtype: 'int64', dims: [2], data: new BigInt64Array([-1n, 2n]) }, axis0: { dtype: 'int64', dims: [1], data: new BigInt64Array([0n]) } },
    input: [5, 3], outputDims: [1, 2],
  });
  const c = await prepare(model, { loss: 'mse' }, batchOf('float64', [5, 3]));
  assert.ok(decodeModel(c.plan.bytes).graph!.node!.some((n) => n.opType === 'NonZero'), 'the run-time reduction is used');
  await checkGradients(c, F64);
});

test('MatMul with 1-D operands (numpy row/column semantics)', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('MatMul', ['x', 'W'], ['h']), // [N,3]
      makeNode('MatMul', ['u', 'M'], ['r']), // [4]·[4,3] -> [3]
      makeNode('Add', ['h', 'r'], ['s']),
      makeNode('MatMul', ['s', 'v'], ['y']), // [N,3]·[3] -> [N]
    ],
    params: { W: { dims: [4, 3] }, u: { dims: [4] }, M: { dims: [4, 3] }, v: { dims: [3] } },
    input: [5, 4], outputDims: ['N'],
  });
  await checkGradients(await prepare(model, { loss: 'mse' }, batchOf('float64', [5, 4])), F64);
});

test('Gather (embedding lookup) sums the gradients of repeated and negative indices', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Cast', ['x'], ['ids'], [makeAttribute('to', 7)]),
      makeNode('Gather', ['E', 'ids'], ['emb']), // [N,2,3]
      makeNode('Gather', ['E', 'fixed'], ['extra']), // [2,3]
      makeNode('Add', ['emb', 'extra'], ['s']),
      makeNode('Flatten', ['s'], ['f']),
      makeNode('Gemm', ['f', 'W'], ['y']),
    ],
    params: { E: { dims: [5, 3] }, W: { dims: [6, 3] } },
    consts: { fixed: { dtype: 'int64', dims: [2], data: new BigInt64Array([-1n, 1n]) } },
    input: [4, 2], outputDims: ['N', 3],
  });
  const ids: Tensor = { dtype: 'float64', dims: [4, 2], data: Float64Array.from([0, 4, 2, 2, 4, 1, 3, 0]) };
  await checkGradients(await prepare(model, { loss: 'cross_entropy' }, ids), { ...F64, samples: 15 });
});

test('Split (an output unused) and Slice (negative and clamped bounds)', async () => {
  const i64 = (v: number[]) => ({ dtype: 'int64', dims: [v.length], data: BigInt64Array.from(v.map(BigInt)) }) as Tensor;
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Gemm', ['x', 'W'], ['h']), // [N,6]
      makeNode('Split', ['h', 'sizes'], ['a', 'unused', 'c'], [makeAttribute('axis', 1)]), // [N,2] [N,1] [N,3]
      makeNode('Slice', ['c', 'st', 'en', 'ax'], ['s']), // c[:, -3:2] -> [N,2]
      makeNode('Slice', ['h', 'st2', 'en2', 'ax'], ['t']), // h[:, 4:100] -> [N,2]
      makeNode('Mul', ['a', 's'], ['m']),
      makeNode('Add', ['m', 't'], ['y']),
    ],
    params: { W: { dims: [3, 6] } },
    consts: { sizes: i64([2, 1, 3]), st: i64([-3]), en: i64([2]), ax: i64([1]), st2: i64([4]), en2: i64([100]) },
    input: [4, 3], outputDims: ['N', 2],
  });
  await checkGradients(await prepare(model, { loss: 'mse' }, batchOf('float64', [4, 3])), { ...F64, samples: 18 });
});

test('Sum, Pow with a constant exponent, Clip and Abs', async () => {
  const model = tiny({
    dtype: 'float64',
    nodes: [
      makeNode('Gemm', ['x', 'W'], ['h']),
      makeNode('Abs', ['h'], ['a']),
      makeNode('Pow', ['a', 'three'], ['p']),
      makeNode('Clip', ['h', 'lo', 'hi'], ['c']),
      makeNode('Sum', ['p', 'c', 'B'], ['y']),
    ],
    params: { W: { dims: [4, 3] }, B: { dims: [3] } },
    consts: {
      three: { dtype: 'float64', dims: [], data: new Float64Array([3]) },
      lo: { dtype: 'float64', dims: [], data: new Float64Array([-0.3]) },
      hi: { dtype: 'float64', dims: [], data: new Float64Array([0.4]) },
    },
    input: [6, 4], outputDims: ['N', 3],
  });
  await checkGradients(await prepare(model, { loss: 'mse' }, batchOf('float64', [6, 4])), { ...F64, samples: 12 });
});

test('BatchNormalization in training mode (batch statistics) in an MLP and a CNN', async () => {
  const m = mlp([4, 6, 3], { batchNorm: true, dtype: 'float64', activation: 'tanh' });
  const c = await prepare(m, { loss: 'cross_entropy' }, batchOf('float64', [8, 4]));
  assert.deepEqual(c.plan.info.buffers.map((b) => b.name), ['bn1.running_mean', 'bn1.running_var']);
  await checkGradients(c, F64);
  const k = cnn({ batchNorm: true, channels: [3, 4], seed: 2 });
  await checkGradients(await prepare(k, { loss: 'cross_entropy' }, batchOf('float32', [4, 64], 6, 4)), { ...F32, eps: 1e-3, samples: 4 });
});

test('BatchNormalization with frozen statistics (mode eval) trains its scale and bias', async () => {
  const m = mlp([4, 6, 3], { batchNorm: true, dtype: 'float64', activation: 'tanh' });
  const c = await prepare(m, { loss: 'cross_entropy', mode: 'eval' }, batchOf('float64', [5, 4]));
  assert.deepEqual(c.plan.info.buffers, []);
  assert.ok(c.plan.info.params.some((p) => p.name === 'bn1.weight'));
  assert.ok(!c.plan.info.params.some((p) => p.name.startsWith('bn1.running')), 'running statistics are not trained');
  await checkGradients(c, F64);
});

test('BatchNormalization updates its running statistics with the batch statistics', async () => {
  const m = mlp([3, 2, 2], { batchNorm: true, dtype: 'float64' });
  const x = batchOf('float64', [6, 3]);
  const c = await prepare(m, { loss: 'cross_entropy' }, x);
  const out = await c.handle.run(c.feeds);
  // Batch mean of fc1's output, computed here from the initial weights.
  const w = c.plan.initialParams['fc1.weight']!.data as Float64Array, b = c.plan.initialParams['fc1.bias']!.data as Float64Array;
  const xs = x.data as Float64Array;
  for (let j = 0; j < 2; j++) {
    let mean = 0;
    for (let i = 0; i < 6; i++) { let h = b[j]!; for (let f = 0; f < 3; f++) h += xs[i * 3 + f]! * w[j * 3 + f]!; mean += h / 6; }
    const got = (out[c.plan.info.outputs.updated['bn1.running_mean']!]!.data as Float64Array)[j]!;
    // momentum is a float attribute, so 1 − 0.9 carries float32 rounding.
    assert.ok(Math.abs(got - 0.1 * mean) < 1e-6 * Math.abs(mean), `running mean ${j}: ${got} vs ${0.1 * mean}`);
  }
  await c.handle.dispose();
});

test('Dropout drops the same units in the forward and backward pass, at its ratio', async () => {
  const n = 4000, ratio = 0.3;
  const model = tiny({ dtype: 'float32', nodes: [makeNode('Dropout', ['P', 'r'], ['y'])], params: { P: { dims: [1, n], fill: () => 1 } }, consts: { r: { dtype: 'float32', dims: [], data: new Float32Array([ratio]) } }, input: [1, 1], outputDims: [1, n] });
  const c = await prepare(model, { loss: 'mse', seed: 5 }, batchOf('float32', [1, 1]));
  const feeds = { ...c.feeds, [c.plan.info.labels.name]: { dtype: 'float32', dims: [1, n], data: new Float32Array(n) } as Tensor };
  const out = await c.handle.run(feeds);
  const g = out[c.plan.info.outputs.gradients.P!]!.data as Float32Array;
  // y = P·mask/(1−r) with P = 1, target 0: dL/dP = 2·mask/(1−r)² / n, so each entry is 0 or that value.
  const kept = 2 / (1 - ratio) ** 2 / n;
  let zeros = 0;
  for (const v of g) { if (v === 0) zeros++; else assert.ok(Math.abs(v - kept) < 1e-6 * kept * 10, `gradient ${v} is neither 0 nor ${kept}`); }
  const loss = (out[c.plan.info.outputs.loss]!.data as Float32Array)[0]!;
  assert.ok(Math.abs(loss - (n - zeros) / n / (1 - ratio) ** 2) < 1e-4, 'the loss sees the same mask');
  assert.ok(Math.abs(zeros / n - ratio) < 0.03, `dropped ${zeros / n}`);
  await c.handle.dispose();
});

test('an operator without a gradient rule is GRID_ERR_UNSUPPORTED_OPERATOR naming it and its node', () => {
  const model = tiny({ dtype: 'float32', nodes: [makeNode('Gemm', ['x', 'W'], ['h']), makeNode('Erf', ['h'], ['y'], [], 'my_erf')], params: { W: { dims: [2, 2] } }, input: [1, 2], outputDims: ['N', 2] });
  assert.throws(() => buildPlan(model, { loss: 'mse', optimizer: 'sgd' }), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_UNSUPPORTED_OPERATOR' && /operator Erf \(Erf node "my_erf"\)/.test(e.message));
  assert.throws(() => buildPlan(model, { loss: 'hinge' as never, optimizer: 'sgd' }), { name: 'RangeError', message: /opts.loss/ });
  assert.throws(() => buildPlan(model, { loss: 'mse', optimizer: 'rmsprop' as never }), { name: 'RangeError', message: /opts.optimizer/ });
});
