// SMPC arithmetic against plaintext: ring products, fixed point, truncation, the secure comparison and
// whole evaluations on shares, with random matrices; and statistics of a share against its secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import {
  compileSmpcModel, decode, encode, FRACTION_BITS, matmul, matmulBigInt, randomRing, reconstruct, share, truncate, SCALE,
  type SmpcPlan,
} from '../../src/compute/smpc';
import { cnn, mlp } from '../../src/compute/plan';
import { loadModel } from '../../src/compute/backend';
import { encodeModel, makeNode, makeValueInfo, ONNX_DTYPE_CODES } from '../../src/compute/onnx';
import { GridError, ErrorCodes } from '../../src/core/errors';
import { evaluateLocally, localMasks } from '../helpers/smpc-local';
import { randomBytes } from 'node:crypto';

const M64 = 1n << 64n;
const wrap = (v: bigint) => BigInt.asIntN(64, ((v % M64) + M64) % M64);

test('ring matmul wraps modulo 2^64 exactly like BigInt arithmetic, on random matrices', () => {
  for (let trial = 0; trial < 20; trial++) {
    const m = randomInt(1, 6), k = randomInt(1, 9), n = randomInt(1, 6);
    const a = randomRing(m * k), b = randomRing(k * n);
    const c = matmul(a, b, m, k, n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let s = 0n;
      for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
      assert.equal(c[i * n + j], wrap(s));
    }
  }
});

test('the limb-split matmul equals the BigInt reference on wide random matrices (exact float sums)', () => {
  for (const [m, k, n] of [[3, 300, 4], [64, 64, 64], [1, 2000, 3]] as const) {
    const a = randomRing(m * k), b = randomRing(k * n);
    assert.deepEqual(matmul(a, b, m, k, n), matmulBigInt(a, b, m, k, n));
  }
});

test('shares reconstruct, and a product on shares truncated locally is the plaintext product within ±1 ulp', () => {
  for (let trial = 0; trial < 50; trial++) {
    const m = randomInt(1, 5), k = randomInt(1, 30), n = randomInt(1, 5);
    const xf = Array.from({ length: m * k }, () => (Math.random() - 0.5) * 8);
    const wf = Array.from({ length: k * n }, () => (Math.random() - 0.5) * 2);
    const x = encode(xf), w = encode(wf);
    assert.deepEqual(reconstruct(...share(x)), x);
    const exact = matmul(x, w, m, k, n);
    const [z0, z1] = share(exact);
    const got = reconstruct(truncate(0, z0), truncate(1, z1));
    for (let i = 0; i < got.length; i++) {
      const want = exact[i]! >> BigInt(FRACTION_BITS);
      const diff = got[i]! - want;
      assert.ok(diff >= -1n && diff <= 1n, `element ${i}: ${got[i]} vs ${want}`);
      // And in reals: close to the float product.
      let real = 0;
      for (let p = 0; p < k; p++) real += xf[(i / n | 0) * k + p]! * wf[p * n + (i % n)]!;
      assert.ok(Math.abs(decode(got.subarray(i, i + 1))[0]! - real) < k * 2 / SCALE + 2 / SCALE);
    }
  }
});

test('a share is uniform over the ring and uncorrelated with the secret it hides', () => {
  // Secrets: structured weights (small reals, many equal), the worst case for a leaky split.
  const n = 40_000;
  const secret = encode(Array.from({ length: n }, (_, i) => (i % 7 === 0 ? 0 : Math.sin(i) * 0.3)));
  for (const s of share(secret)) {
    // Byte histogram of the share: chi-square over 256 bins, 255 degrees of freedom (p ≈ 1e-6 cut at 370).
    const bytes = new Uint8Array(s.buffer);
    const counts = new Array<number>(256).fill(0);
    for (const b of bytes) counts[b]! += 1;
    const expected = bytes.length / 256;
    const chi = counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
    assert.ok(chi < 370, `chi-square ${chi.toFixed(1)} over 255 degrees of freedom`);
    // Top bit (the sign a leaky split would keep) is a fair coin: |ones − n/2| within 5σ.
    let ones = 0;
    for (let i = 0; i < n; i++) if (s[i]! < 0n) ones++;
    assert.ok(Math.abs(ones - n / 2) < 5 * Math.sqrt(n) / 2, `${ones} negative shares of ${n}`);
    // Pearson correlation between the share (as a real in [-1, 1)) and the secret: |r| < 5/√n.
    const xs = Array.from(s, (v) => Number(v) / 2 ** 63), ys = Array.from(secret, (v) => Number(v));
    const mean = (a: number[]) => a.reduce((p, q) => p + q, 0) / a.length;
    const mx = mean(xs), my = mean(ys);
    let sxy = 0, sxx = 0, syy = 0;
    for (let i = 0; i < n; i++) { sxy += (xs[i]! - mx) * (ys[i]! - my); sxx += (xs[i]! - mx) ** 2; syy += (ys[i]! - my) ** 2; }
    const r = sxy / Math.sqrt(sxx * syy);
    assert.ok(Math.abs(r) < 5 / Math.sqrt(n), `correlation ${r}`);
  }
});

/** A plan of one ReLU over `n` values: the comparison protocol alone. */
const reluPlan = (n: number): SmpcPlan => ({ input: { name: 'x', shape: [n] }, output: { name: 'y', shape: [n] }, layers: [{ op: 'relu' }], params: [] });

test('ReLU by secure comparison is exact on shares, at zero, at the extremes and on random values', async () => {
  const edge = [0n, 1n, -1n, (1n << 62n) - 1n, -(1n << 62n), (1n << 63n) - 1n, -(1n << 63n) + 1n, 12345n, -12345n];
  const random = Array.from(randomRing(500), (v) => v >> BigInt(randomInt(0, 60)));
  const values = BigInt64Array.from([...edge, ...random]);
  const [y0, y1] = await evaluateLocally(reluPlan(values.length), 1, [new BigInt64Array(0), new BigInt64Array(0)], share(values));
  const y = reconstruct(y0, y1);
  for (let i = 0; i < values.length; i++) assert.equal(y[i], values[i]! > 0n ? values[i] : 0n, `ReLU(${values[i]})`);
});

test('an MLP evaluated on shares matches onnxruntime within 1e-2 on random inputs', async () => {
  const model = mlp([64, 32, 16, 10], { seed: 3 });
  const { plan, params } = compileSmpcModel(model);
  const flat = new Float64Array(params.reduce((s, p) => s + p.length, 0));
  params.reduce((off, p) => { flat.set(p, off); return off + p.length; }, 0);
  const batch = 8;
  const input = Float32Array.from({ length: batch * 64 }, () => Math.random());
  const [y0, y1] = await evaluateLocally(plan, batch, share(encode(flat)), share(encode(input)));
  const got = decode(reconstruct(y0, y1));
  const h = await loadModel(model, { intraOpNumThreads: 1 });
  const want = (await h.run({ input: { dtype: 'float32', dims: [batch, 64], data: input } })).logits!.data as Float32Array;
  await h.dispose();
  const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!)));
  assert.ok(err < 1e-2, `max abs error ${err}`);
});

test('a model with an unsupported operator is refused naming it; MatMul+Add, Flatten and Reshape compile', () => {
  const conv = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'c', node: [makeNode('Flatten', ['x'], ['f']), makeNode('Sigmoid', ['f'], ['y'], [], 'squash')],
      input: [makeValueInfo('x', ONNX_DTYPE_CODES.float32, ['N', 4])], output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, ['N', 4])],
    },
  });
  assert.throws(() => compileSmpcModel(conv), (e: unknown) => e instanceof GridError && e.code === ErrorCodes.SMPC_UNSUPPORTED && /Sigmoid/.test(e.message) && /squash/.test(e.message));
  const { plan } = compileSmpcModel(mlp([8, 4, 2], { seed: 1 }));
  assert.deepEqual(plan.layers.map((l) => l.op), ['linear', 'relu', 'linear']);
  assert.deepEqual(plan.params.map((p) => p.size), [32, 4, 8, 2]);
});

test('a CNN (Conv, ReLU, MaxPool or AveragePool, Flatten, Gemm) evaluated on shares matches onnxruntime within 1e-2', async () => {
  for (const pool of ['max', 'average'] as const) {
    const model = cnn({ seed: 2, pool, channels: [4, 8] });
    const { plan, params } = compileSmpcModel(model);
    assert.deepEqual(plan.layers.map((l) => l.op), ['reshape', 'conv', 'relu', pool === 'max' ? 'maxpool' : 'avgpool', 'conv', 'relu', pool === 'max' ? 'maxpool' : 'avgpool', 'reshape', 'linear']);
    const flat = new Float64Array(params.reduce((s, p) => s + p.length, 0));
    params.reduce((off, p) => { flat.set(p, off); return off + p.length; }, 0);
    const batch = 3;
    const input = Float32Array.from({ length: batch * 64 }, () => Math.random());
    const [y0, y1] = await evaluateLocally(plan, batch, share(encode(flat)), share(encode(input)));
    const got = decode(reconstruct(y0, y1));
    const h = await loadModel(model, { intraOpNumThreads: 1 });
    const want = (await h.run({ input: { dtype: 'float32', dims: [batch, 64], data: input } })).logits!.data as Float32Array;
    await h.dispose();
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!)));
    assert.ok(err < 1e-2, `${pool} pooling: max abs error ${err}`);
  }
});

test('with weights masked once per model, the first query opens W − B and later ones reuse it: same results, no weight opening', async () => {
  for (const model of [mlp([64, 32, 10], { seed: 4 }), cnn({ seed: 4, channels: [4, 8] })]) {
    const { plan, params } = compileSmpcModel(model);
    const flat = new Float64Array(params.reduce((s, p) => s + p.length, 0));
    params.reduce((off, p) => { flat.set(p, off); return off + p.length; }, 0);
    const shares = share(encode(flat));
    const masks = localMasks(plan, randomBytes(32));
    const h = await loadModel(model, { intraOpNumThreads: 1 });
    for (const batch of [2, 5]) {
      const input = Float32Array.from({ length: batch * 64 }, () => Math.random());
      const got = decode(reconstruct(...await evaluateLocally(plan, batch, shares, share(encode(input)), masks)));
      const want = (await h.run({ input: { dtype: 'float32', dims: [batch, 64], data: input } })).logits!.data as Float32Array;
      const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!)));
      assert.ok(err < 1e-2, `batch ${batch}: max abs error ${err}`);
      assert.ok(masks.parties.every((m) => m.f.size === plan.layers.filter((l) => l.op === 'linear' || l.op === 'conv').length && !m.open));
    }
    await h.dispose();
  }
});

test('dealAsync deals what deal does, in slices: the triples multiply out, the comparison bits encode r, and an abort stops it', async () => {
  const { dealAsync, parseBundle } = await import('../../src/compute/smpc');
  // Rows enough that the product takes several slices.
  const schedule = [{ kind: 'matmul' as const, m: 300, k: 40, n: 50 }, { kind: 'relu' as const, n: 5000 }];
  const { bundles, secrets } = await dealAsync(schedule);
  const [p0, p1] = bundles.map((b) => parseBundle(schedule, b));
  const mm0 = p0![0] as { a: BigInt64Array; b: BigInt64Array; c: BigInt64Array }, mm1 = p1![0] as typeof mm0;
  const a = reconstruct(mm0.a, mm1.a), b = reconstruct(mm0.b, mm1.b), c = reconstruct(mm0.c, mm1.c);
  assert.deepEqual(c, matmul(a, b, 300, 40, 50));
  const r0 = p0![1] as { r: BigInt64Array; rBits: Uint8Array }, r1 = p1![1] as typeof r0;
  const r = reconstruct(r0.r, r1.r);
  const msb = secrets.get(1)!;
  for (let e = 0; e < 5000; e += 499) {
    assert.equal(msb[e], r[e]! < 0n ? 1 : 0);
    // Bit i of r (its low 63 bits), shared additively mod 67.
    for (const i of [0, 31, 62]) assert.equal((r0.rBits[e * 63 + i]! + r1.rBits[e * 63 + i]!) % 67, Number((BigInt.asUintN(64, r[e]!) >> BigInt(i)) & 1n));
  }
  const stop = new AbortController();
  const big = dealAsync([{ kind: 'matmul', m: 4096, k: 64, n: 64 }], undefined, stop.signal);
  stop.abort(new GridError(ErrorCodes.ABORTED, 'released'));
  await assert.rejects(big, (e: unknown) => e instanceof GridError && e.code === ErrorCodes.ABORTED);
});
