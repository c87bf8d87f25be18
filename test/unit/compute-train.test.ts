import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fedAvg } from '../../src/compute/fedavg';
import { privatizeUpdate } from '../../src/compute/privacy';
import { parseCsvDataset, partitionDataset, splitDataset } from '../../src/compute/data';
import { buildPlan, cnn, mlp, modelParams, withParams } from '../../src/compute/plan';
import { PlanRunner, evaluateModel, train } from '../../src/compute/train';
import { loadModel } from '../../src/compute/backend';
import { decodeModel, encodeModel, makeAttribute, makeNode, makeValueInfo, tensorToProto } from '../../src/compute/onnx';
import { GridError } from '../../src/core/errors';
import type { NamedTensors, Tensor } from '../../src/core/protocol/tensor';

const f32 = (dims: number[], values: number[]): Tensor => ({ dtype: 'float32', dims, data: Float32Array.from(values) });
const isCode = (code: string, re?: RegExp) => (e: unknown) => e instanceof GridError && e.code === code && (!re || re.test(e.message));

test('FedAvg weights each update by its sample count', () => {
  const a: NamedTensors = { w: f32([2, 2], [1, 2, 3, 4]), b: f32([1], [10]) };
  const b: NamedTensors = { w: f32([2, 2], [5, 6, 7, 8]), b: f32([1], [20]) };
  const c: NamedTensors = { w: f32([2, 2], [0, 0, 0, 0]), b: f32([1], [0]) };
  const avg = fedAvg([{ params: a, samples: 1 }, { params: b, samples: 3 }]);
  assert.deepEqual([...(avg.w!.data as Float32Array)], [4, 5, 6, 7]);
  assert.deepEqual([...(avg.b!.data as Float32Array)], [17.5]);
  // Five updates exercise the four-at-a-time pass and its remainder.
  const five = fedAvg([a, b, c, a, b].map((params, i) => ({ params, samples: i + 1 })));
  const want = [0, 1, 2, 3].map((i) => ((1 + 4) * [1, 2, 3, 4][i]! + (2 + 5) * [5, 6, 7, 8][i]!) / 15);
  (five.w!.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6));
});

test('FedAvg of large tensors (the SIMD path) matches the weighted sum for 1 to 9 updates and ragged lengths', () => {
  for (const k of [1, 2, 3, 4, 5, 8, 9]) {
    for (const n of [4096, 40003, 16384 * 2 + 5]) {
      const updates = Array.from({ length: k }, (_, u) => ({
        params: { w: { dtype: 'float32', dims: [n], data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + u) * (u + 1)) } as Tensor },
        samples: u + 1,
      }));
      const total = (k * (k + 1)) / 2;
      const got = fedAvg(updates).w!.data as Float32Array;
      for (let i = 0; i < n; i += 1 + (i % 7)) {
        let want = 0;
        for (let u = 0; u < k; u++) want += ((u + 1) / total) * (updates[u]!.params.w!.data as Float32Array)[i]!;
        assert.ok(Math.abs(got[i]! - want) < 1e-5 * (1 + Math.abs(want)), `k=${k} n=${n} [${i}]: ${got[i]} vs ${want}`);
      }
      assert.ok(Number.isFinite(got[n - 1]!));
    }
  }
  // An infinite value stays infinite rather than turning into NaN through unused SIMD lanes.
  const inf = fedAvg([{ params: { w: f32([5000], new Array(5000).fill(Infinity)) }, samples: 1 }]).w!.data as Float32Array;
  assert.equal(inf[4999], Infinity);
});

test('FedAvg refuses updates that do not line up', () => {
  const a = { w: f32([2], [1, 2]) };
  assert.throws(() => fedAvg([{ params: a, samples: 1 }, { params: { w: f32([1, 2], [1, 2]) }, samples: 1 }]), isCode('GRID_ERR_INVALID_INPUT', /tensor "w" of update 1 is float32 \[1, 2\]/));
  assert.throws(() => fedAvg([{ params: a, samples: 1 }, { params: { v: f32([2], [1, 2]) }, samples: 1 }]), isCode('GRID_ERR_INVALID_INPUT', /update 1 has tensors \[v\]/));
  assert.throws(() => fedAvg([]), RangeError);
  assert.throws(() => fedAvg([{ params: a, samples: -1 }]), { name: 'RangeError', message: /samples/ });
});

test('privacy noise has the requested scale and the update is clipped to C', () => {
  const n = 20000;
  const start = { w: f32([n], new Array(n).fill(0)) };
  const trained = { w: f32([n], new Array(n).fill(0.01)) }; // norm 0.01·√n ≈ 1.41
  const { params, report } = privatizeUpdate(start, trained, { clipNorm: 1, noiseMultiplier: 0.001, seed: 4 });
  assert.equal(report.clipped, true);
  assert.ok(Math.abs(report.updateNorm - 0.01 * Math.sqrt(n)) < 1e-4);
  const d = params.w!.data as Float32Array;
  let mean = 0;
  for (const v of d) mean += v / n;
  let varSum = 0;
  for (const v of d) varSum += (v - mean) ** 2 / n;
  assert.ok(Math.abs(mean - 1 / Math.sqrt(n)) < 1e-4, `mean ${mean}`);
  assert.ok(Math.abs(Math.sqrt(varSum) - 0.001) < 0.0001, `std ${Math.sqrt(varSum)}`);
});

test('CSV datasets parse with or without a header, and bad rows name their line', () => {
  const iris = parseCsvDataset('3,2,a,b\n1.5,2,0\n3,4.5,1\n5,6,1\n');
  assert.deepEqual(iris.header, ['3', '2', 'a', 'b']);
  assert.deepEqual(iris.features.dims, [3, 2]);
  assert.deepEqual([...iris.features.data], [1.5, 2, 3, 4.5, 5, 6]);
  assert.deepEqual([...iris.labels.data], [0n, 1n, 1n]);
  assert.equal(iris.classes, 2);
  const first = parseCsvDataset('7,1,2\n8,3,4', { labelColumn: 0, featureScale: 0.5 });
  assert.deepEqual([...first.features.data], [0.5, 1, 1.5, 2]);
  assert.deepEqual([...first.labels.data], [7n, 8n]);
  assert.throws(() => parseCsvDataset('1,2,0\n1,x,1\n'), isCode('GRID_ERR_INVALID_DATASET', /line 2, column 2: "x" is not a number/));
  assert.throws(() => parseCsvDataset('1,2,0\n1,1\n'), isCode('GRID_ERR_INVALID_DATASET', /line 2 has 2 fields, expected 3/));
  assert.throws(() => parseCsvDataset('1,2,0.5\n'), isCode('GRID_ERR_INVALID_DATASET', /class label 0.5/));
  assert.throws(() => parseCsvDataset(''), isCode('GRID_ERR_INVALID_DATASET', /empty/));
});

test('splits and partitions keep every row exactly once', () => {
  const rows = Array.from({ length: 30 }, (_, i) => `${i},${i % 3}`).join('\n');
  const ds = parseCsvDataset(rows);
  const { train, test: te } = splitDataset(ds, 0.2, 1);
  assert.equal(te.features.dims[0], 6);
  const all = [...train.features.data, ...te.features.data].sort((a, b) => a - b);
  assert.deepEqual(all, Array.from({ length: 30 }, (_, i) => i));
  const byLabel = partitionDataset(ds, 3, 'label', 2);
  assert.deepEqual(byLabel.map((p) => new Set(Array.from(p.labels.data as BigInt64Array, Number)).size), [1, 1, 1]);
  const iid = partitionDataset(ds, 4, 'iid', 2);
  assert.equal(iid.reduce((s, p) => s + p.features.dims[0]!, 0), 30);
});

async function oneStep(optimizer: 'sgd' | 'momentum' | 'adam', extra: Record<string, unknown> = {}) {
  const model = mlp([3, 2], { seed: 5 });
  const plan = buildPlan(model, { loss: 'mse', optimizer, emitGradients: true, ...extra });
  const runner = await PlanRunner.create(plan, undefined, { intraOpNumThreads: 1 });
  return { plan, runner };
}

test('fused Adam (the WebAssembly kernel) trains the same bits as the plan graph\'s Adam nodes', async () => {
  // Odd sizes leave each parameter a remainder past the kernel's four floats; the CNN adds BatchNorm buffers;
  // fc1 of the wide MLP (37·1030 floats) takes the kernel three gradient chunks, the last a ragged one.
  const cases = [
    { model: mlp([5, 7, 3], { seed: 2 }), features: 5, classes: 3 },
    { model: mlp([37, 1030, 3], { seed: 6 }), features: 37, classes: 3 },
    { model: cnn({ seed: 3, side: 4, classes: 3, channels: [3, 5], batchNorm: true }), features: 16, classes: 3 },
  ];
  for (const { model, features, classes } of cases) {
    const plan = buildPlan(model, { loss: 'cross_entropy', optimizer: 'adam', emitGradients: true });
    const fused = await PlanRunner.create(plan, undefined, { intraOpNumThreads: 1 });
    const graph = await PlanRunner.create(plan, undefined, { intraOpNumThreads: 1 }, { fusedAdam: false });
    assert.equal(fused.fused, true);
    assert.equal(graph.fused, false);
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    for (let step = 1; step <= 6; step++) {
      const x = f32([8, features], Array.from({ length: 8 * features }, rnd));
      const y: Tensor = { dtype: 'int64', dims: [8], data: BigInt64Array.from({ length: 8 }, (_, i) => BigInt((i + step) % classes)) };
      const hyper = { lr: 0.05, beta1: 0.8, beta2: 0.99, epsilon: 1e-6 };
      const a = await fused.step(x, y, hyper);
      const b = await graph.step(x, y, hyper);
      assert.deepEqual(a, b, `step ${step}: loss and accuracy`);
      for (const [kind, got, want] of [['param', fused.params, graph.params], ['state', fused.state, graph.state]] as const) {
        assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
        for (const name of Object.keys(want)) {
          assert.deepEqual(got[name]!.dims, want[name]!.dims);
          assert.deepEqual(got[name]!.data, want[name]!.data, `step ${step}: ${kind} ${name} differs`);
        }
      }
    }
    // What a caller holds is a copy: the next steps do not change it.
    const name = plan.info.params[0]!.name;
    const held = fused.params[name]!.data, heldM = fused.state[plan.info.state[0]!.name]!.data;
    const before = held.slice(), beforeM = heldM.slice();
    for (let i = 0; i < 2; i++) await fused.step(f32([8, features], Array.from({ length: 8 * features }, rnd)), { dtype: 'int64', dims: [8], data: new BigInt64Array(8) }, { lr: 0.05 });
    assert.notDeepEqual(fused.params[name]!.data, before);
    assert.deepEqual(held, before);
    assert.deepEqual(heldM, beforeM);
    await fused.dispose();
    await graph.dispose();
  }
});

test('SGD folded into the backward pass trains what a separate update per parameter trains (also with weight decay and FedProx)', async () => {
  // A weight shared by two MatMuls (its gradient a Sum, updated by an Add), Gemm weights (updated inside
  // their gradient's Gemm), Conv weights and BatchNorm buffers.
  const shared = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'shared', node: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('Add', ['h', 'b'], ['hb']), makeNode('Relu', ['hb'], ['r']), makeNode('MatMul', ['r', 'w'], ['y'])],
      initializer: [tensorToProto('w', f32([4, 4], Array.from({ length: 16 }, (_, i) => Math.sin(i + 1) / 2))), tensorToProto('b', f32([4], [0.1, -0.2, 0.3, 0]))],
      input: [makeValueInfo('x', 1, ['N', 4])], output: [makeValueInfo('y', 1, ['N', 4])],
    },
  });
  // Two parameters summed into one Gemm weight share one gradient: neither update may take over its Gemm.
  const summed = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'summed', node: [makeNode('Add', ['w0', 'w1'], ['w']), makeNode('Gemm', ['x', 'w', 'b'], ['y'], [makeAttribute('transB', 1)])],
      initializer: [
        tensorToProto('w0', f32([3, 4], Array.from({ length: 12 }, (_, i) => Math.sin(i + 2) / 2))),
        tensorToProto('w1', f32([3, 4], Array.from({ length: 12 }, (_, i) => Math.cos(i) / 4))),
        tensorToProto('b', f32([3], [0.1, -0.1, 0])),
      ],
      input: [makeValueInfo('x', 1, ['N', 4])], output: [makeValueInfo('y', 1, ['N', 3])],
    },
  });
  const cases = [
    { model: mlp([5, 7, 3], { seed: 2 }), features: 5, classes: 3 },
    { model: summed, features: 4, classes: 3 },
    { model: cnn({ seed: 3, side: 4, classes: 3, channels: [3, 5], batchNorm: true }), features: 16, classes: 3 },
    { model: shared, features: 4, classes: 4 },
    { model: mlp([5, 7, 3], { seed: 4 }), features: 5, classes: 3, extra: { weightDecay: true, fedProx: true } },
  ];
  for (const { model, features, classes, extra } of cases) {
    const foldedPlan = buildPlan(model, { loss: 'cross_entropy', optimizer: 'sgd', fuseSgd: true, ...extra });
    const folded = await PlanRunner.create(foldedPlan, undefined, { intraOpNumThreads: 1 });
    const apart = await PlanRunner.create(buildPlan(model, { loss: 'cross_entropy', optimizer: 'sgd', ...extra }), undefined, { intraOpNumThreads: 1 });
    // Without decay or FedProx the folded plan has no per-parameter multiply by lr left.
    const nodes = decodeModel(foldedPlan.bytes).graph!.node!;
    if (!extra) assert.equal(nodes.filter((n) => n.input?.includes(foldedPlan.info.hyper[0]!)).length, 1, 'lr is read once, by the seed');
    const global = Object.fromEntries(Object.entries(foldedPlan.initialParams).map(([k, t]) => [k, { ...t, data: (t.data as Float32Array).map((v) => v * 0.5) } as Tensor]));
    let seed = 5;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
    for (let step = 1; step <= 5; step++) {
      const x = f32([8, features], Array.from({ length: 8 * features }, rnd));
      const y: Tensor = { dtype: 'int64', dims: [8], data: BigInt64Array.from({ length: 8 }, (_, i) => BigInt((i * 3 + step) % classes)) };
      const hyper = { lr: 0.3, weightDecay: 0.1, proxMu: 0.5 };
      const a = await folded.step(x, y, hyper, extra && global);
      const b = await apart.step(x, y, hyper, extra && global);
      assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * (1 + Math.abs(b.loss)), `step ${step}: loss ${a.loss} vs ${b.loss}`);
      assert.deepEqual(Object.keys(folded.params).sort(), Object.keys(apart.params).sort());
      for (const [name, want] of Object.entries(apart.params)) {
        const got = folded.params[name]!;
        assert.deepEqual(got.dims, want.dims);
        (want.data as Float32Array).forEach((w, i) => {
          const g = (got.data as Float32Array)[i]!;
          assert.ok(Math.abs(g - w) < 1e-5 * (1 + Math.abs(w)), `step ${step}: ${name}[${i}] ${g} vs ${w}`);
        });
      }
    }
    assert.notDeepEqual(folded.params, foldedPlan.initialParams, 'the parameters moved');
    await folded.dispose();
    await apart.dispose();
  }
  // Folded (fuseSgd), the MLP's weights are updated by their gradient's Gemm itself.
  const mlpNodes = decodeModel(buildPlan(mlp([5, 7, 3]), { loss: 'cross_entropy', optimizer: 'sgd', fuseSgd: true }).bytes).graph!.node!;
  for (const w of ['fc1.weight', 'fc2.weight']) assert.equal(mlpNodes.find((n) => n.output?.[0] === `new.${w}`)?.opType, 'Gemm', w);
});

test('SGD, momentum and Adam apply their update rules to the plan gradient', async () => {
  const x = f32([2, 3], [1, 2, 3, -1, 0.5, 2]);
  const y = f32([2, 2], [0.5, -1, 2, 0]);
  for (const optimizer of ['sgd', 'momentum', 'adam'] as const) {
    const { plan, runner } = await oneStep(optimizer);
    // The gradient at the current parameters comes from a second, lr = 0 plan run on the same batch.
    const probe = await loadModel(plan.bytes, { intraOpNumThreads: 1 });
    let v = 0, m = 0, s = 0;
    for (let step = 1; step <= 3; step++) {
      const w = runner.params['fc1.weight']!.data as Float32Array;
      const feeds: NamedTensors = { input: x, labels: y, ...runner.params, ...runner.state };
      const hyper: Record<string, number> = { lr: 0, momentum: 0.9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, step };
      for (const h of plan.info.hyper) feeds[h] = f32([], [hyper[h]!]);
      const g = ((await probe.run(feeds))[plan.info.outputs.gradients['fc1.weight']!]!.data as Float32Array)[0]!;
      const w0 = w[0]!;
      await runner.step(x, y, { lr: 0.1, momentum: 0.9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 });
      let want: number;
      if (optimizer === 'sgd') want = w0 - 0.1 * g;
      else if (optimizer === 'momentum') { v = 0.9 * v + g; want = w0 - 0.1 * v; }
      else {
        m = 0.9 * m + 0.1 * g; s = 0.999 * s + 0.001 * g * g;
        want = w0 - 0.1 * (m / (1 - 0.9 ** step)) / (Math.sqrt(s / (1 - 0.999 ** step)) + 1e-8);
      }
      const got = (runner.params['fc1.weight']!.data as Float32Array)[0]!;
      assert.ok(Math.abs(got - want) < 1e-5 * Math.max(1, Math.abs(want)), `${optimizer} step ${step}: ${got} vs ${want}`);
    }
    await probe.dispose();
    await runner.dispose();
  }
});

test('FedProx pulls towards the global parameters; weight decay towards zero', async () => {
  const x = f32([1, 3], [0, 0, 0]);
  const model = mlp([3, 2], { seed: 5 });
  const params = modelParams(model);
  // With x = 0 the data gradient of the weight is 0, so only the proximal term moves it.
  const y = f32([1, 2], [0, 0]);
  const prox = await PlanRunner.create(buildPlan(model, { loss: 'mse', optimizer: 'sgd', fedProx: true }), undefined, { intraOpNumThreads: 1 });
  const global = { ...params, 'fc1.weight': f32([2, 3], [0, 0, 0, 0, 0, 0]) };
  await prox.step(x, y, { lr: 0.5, proxMu: 1 }, global);
  const w0 = params['fc1.weight']!.data as Float32Array;
  (prox.params['fc1.weight']!.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - w0[i]! * 0.5) < 1e-6));
  await assert.rejects(prox.step(x, y, { lr: 0.5, proxMu: 1 }), isCode('GRID_ERR_INVALID_INPUT', /global value of "fc1.weight"/));
  await prox.dispose();
  const wd = await PlanRunner.create(buildPlan(model, { loss: 'mse', optimizer: 'sgd', weightDecay: true }), undefined, { intraOpNumThreads: 1 });
  await wd.step(x, y, { lr: 0.1, weightDecay: 1 });
  (wd.params['fc1.weight']!.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - w0[i]! * 0.9) < 1e-6));
  await wd.dispose();
});

test('trained parameters written back give a model whose inference matches the plan', async () => {
  const model = mlp([4, 5, 3], { seed: 9 });
  const plan = buildPlan(model, { loss: 'cross_entropy', optimizer: 'sgd' });
  const runner = await PlanRunner.create(plan, undefined, { intraOpNumThreads: 1 });
  const x = f32([6, 4], Array.from({ length: 24 }, (_, i) => Math.sin(i)));
  const labels: Tensor = { dtype: 'int64', dims: [6], data: BigInt64Array.from([0n, 1n, 2n, 0n, 1n, 2n]) };
  for (let i = 0; i < 20; i++) await runner.step(x, labels, { lr: 0.5 });
  const { accuracy } = await runner.step(x, labels, { lr: 0 });
  const trained = withParams(model, runner.params);
  const h = await loadModel(trained, { intraOpNumThreads: 1 });
  const logits = (await h.run({ input: x })).logits!.data as Float32Array;
  let correct = 0;
  for (let r = 0; r < 6; r++) {
    const row = Array.from(logits.subarray(r * 3, r * 3 + 3));
    if (row.indexOf(Math.max(...row)) === Number(labels.data[r])) correct++;
  }
  assert.equal(correct / 6, accuracy);
  assert.deepEqual(modelParams(trained)['fc2.bias'], runner.params['fc2.bias']);
  assert.throws(() => withParams(model, { 'fc1.weight': f32([1], [0]) }), isCode('GRID_ERR_INVALID_INPUT', /"fc1.weight" is float32 \[1\]/));
  assert.throws(() => withParams(model, { nope: f32([1], [0]) }), isCode('GRID_ERR_INVALID_INPUT', /no initializer "nope"/));
  await h.dispose();
  await runner.dispose();
});

test('class labels train an MSE model through one-hot targets; out-of-range labels are refused', async () => {
  // Two separable blobs.
  const rows: string[] = [];
  for (let i = 0; i < 60; i++) { const c = i % 2; rows.push(`${c * 2 + Math.sin(i) * 0.3},${c * 2 + Math.cos(i) * 0.3},${c}`); }
  const ds = parseCsvDataset(rows.join('\n'));
  const model = mlp([2, 8, 2], { seed: 2 });
  const r = await train(ds, { model, loss: 'mse', optimizer: 'adam', hyper: { lr: 0.05 }, epochs: 30, batchSize: 10, loadOptions: { intraOpNumThreads: 1 } });
  assert.ok(r.metrics.accuracy > 0.95, `accuracy ${r.metrics.accuracy}`);
  const m = await evaluateModel(r.model, ds, { loss: 'mse', loadOptions: { intraOpNumThreads: 1 } });
  assert.ok(m.accuracy > 0.95 && m.loss < 0.1, JSON.stringify(m));
  const bad = parseCsvDataset('0,0,0\n1,1,5\n');
  await assert.rejects(train(bad, { model, loss: 'cross_entropy', optimizer: 'sgd', epochs: 1, batchSize: 2 }), isCode('GRID_ERR_INVALID_INPUT', /label 5 of row 1 is outside the model's 2 classes/));
});

test('parameters travel as named tensors: decoded views feed a plan and write a model back', async () => {
  const { encodeNamedTensors, decodeNamedTensors } = await import('../../src/core/protocol/tensor');
  const model = mlp([3, 4, 2], { seed: 8 });
  const wire = decodeNamedTensors(encodeNamedTensors(modelParams(model)));
  assert.ok(Object.values(wire).some((t) => (t.data as Float32Array).byteOffset > 0), 'decoded tensors are views into the frame');
  const plan = buildPlan(model, { loss: 'cross_entropy', optimizer: 'sgd' });
  const runner = await PlanRunner.create(plan, wire, { intraOpNumThreads: 1 });
  const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
  const labels: Tensor = { dtype: 'int64', dims: [2], data: BigInt64Array.from([0n, 1n]) };
  const first = await runner.step(x, labels, { lr: 0 });
  const fresh = await PlanRunner.create(plan, undefined, { intraOpNumThreads: 1 });
  const again = await fresh.step(x, labels, { lr: 0 });
  await fresh.dispose();
  assert.equal(first.loss, again.loss, 'same parameters, same loss');
  const back = decodeNamedTensors(encodeNamedTensors(runner.params));
  assert.deepEqual(modelParams(withParams(model, back)), modelParams(withParams(model, runner.params)));
  await runner.dispose();
});
