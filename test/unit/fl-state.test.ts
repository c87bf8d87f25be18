// The syft-proto State codec, the lenient text decoding PyGrid clients need, the FedAvg running sum,
// server_config checks and Python's timedelta text, from bytes and values (no sockets).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GridError } from '../../src/core/errors';
import { RunningSum, packDiff, unpackDiff } from '../../src/node/fl/averaging';
import * as protobuf from 'protobufjs/light';
import { checkServerConfig } from '../../src/node/fl/config';
import { timedeltaString } from '../../src/node/fl/cycles';
import { checkShapes, decodeState, decodeText, encodeState, SERIALIZER_ALL } from '../../src/node/fl/state';

const model = [{ dims: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }, { dims: [1], data: Float32Array.from([-1]) }];

test('a State round-trips, and holds what syft.js reads: serializer 4, float32 contents_data, tagged placeholders', () => {
  const bytes = encodeState(model);
  const back = decodeState(bytes);
  assert.deepEqual(back.map((t) => [t.dims, Array.from(t.data)]), model.map((t) => [t.dims, Array.from(t.data)]));
  const text = Buffer.from(bytes).toString('latin1');
  assert.ok(text.includes('#state-1') && text.includes('float32'));
  // serializer is field 8 (varint): tag 0x40, value 4.
  assert.ok(Buffer.from(bytes).includes(Buffer.from([0x40, SERIALIZER_ALL])));
});

test('decodeText takes hex and base64 (with line breaks, or url-safe), refuses other text; reports take base64 only', () => {
  const bytes = Buffer.from(encodeState(model));
  assert.deepEqual(decodeText(bytes.toString('hex')), bytes);
  assert.deepEqual(decodeText(bytes.toString('hex').toUpperCase()), bytes);
  assert.deepEqual(decodeText(bytes.toString('base64').replace(/(.{20})/g, '$1\r\n')), bytes);
  assert.deepEqual(decodeText(bytes.toString('base64url')), bytes);
  assert.equal(decodeText('not hex!'), undefined);
  assert.equal(decodeText('   '), undefined);
  // "abcd" is both hex and base64: a host's model is read as hex (PySyft hexlifies), a report as base64.
  assert.deepEqual(decodeText('abcd'), Buffer.from([0xab, 0xcd]));
  assert.deepEqual(decodeText('abcd', 'base64'), Buffer.from('abcd', 'base64'));
  // A report's base64, canonical or not, and what is not base64 at all (Buffer.from alone would skip it).
  const b64 = bytes.toString('base64');
  assert.deepEqual(decodeText(b64, 'base64'), bytes);
  assert.deepEqual(decodeText(b64.replace(/(.{76})/g, '$1\n'), 'base64'), bytes);
  assert.deepEqual(decodeText(bytes.toString('base64url'), 'base64'), bytes);
  for (const bad of [`${b64.slice(0, 8)}!${b64.slice(8)}`, `${b64.slice(0, 8)}=${b64.slice(8)}`, `${b64}*`, `${b64}===`, `${b64}A`, 'é'.repeat(8), '']) {
    assert.equal(decodeText(bad, 'base64'), undefined, `accepted ${JSON.stringify(bad.slice(0, 12))}…`);
  }
});

/** A one-tensor State written by hand: shape [n], float32 contents as the given packed chunks and unpacked values. */
function handState(n: number, packed: number[][], unpacked: number[], packedBytes?: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((2 << 3) | 2).fork() // State.tensors
    .uint32((1 << 3) | 2).fork() // StateTensor.torchTensor
    .uint32(8 << 3).int32(SERIALIZER_ALL)
    .uint32((2 << 3) | 2).fork() // TorchTensor.contentsData
    .uint32((1 << 3) | 2).fork().uint32(1 << 3).int32(n).ldelim() // shape, dims unpacked
    .uint32((2 << 3) | 2).string('float32');
  for (const chunk of packed) {
    w.uint32((22 << 3) | 2).fork();
    for (const v of chunk) w.float(v);
    w.ldelim();
  }
  if (packedBytes) w.uint32((22 << 3) | 2).bytes(packedBytes);
  for (const v of unpacked) w.uint32((22 << 3) | 5).float(v);
  return w.ldelim().ldelim().ldelim().finish();
}

test('decodeState reads float contents packed in chunks, unpacked, or both, to the same values; a torn packed field is refused', () => {
  const values = (b: Uint8Array) => decodeState(b).map((t) => [t.dims, Array.from(t.data)]);
  assert.deepEqual(values(handState(3, [[1.5, -2, 3]], [])), [[[3], [1.5, -2, 3]]]);
  assert.deepEqual(values(handState(3, [[1.5], [-2, 3]], [])), [[[3], [1.5, -2, 3]]]);
  assert.deepEqual(values(handState(3, [], [1.5, -2, 3])), [[[3], [1.5, -2, 3]]]);
  assert.deepEqual(values(handState(3, [[1.5]], [-2, 3])), [[[3], [1.5, -2, 3]]]);
  const bad = (b: Uint8Array, re: RegExp) => assert.throws(() => decodeState(b, 'the diff'), (e: GridError) => e.code === 'GRID_ERR_INVALID_TENSOR' && re.test(e.message));
  bad(handState(3, [[1.5, -2, 3]], [4]), /\(3 values\) but carries 4/);
  bad(handState(2, [], [], new Uint8Array(6)), /not a syft-proto State/);
});

test('decodeState refuses truncated bytes, bad shapes, other dtypes and non-finite values with INVALID_TENSOR', () => {
  const bytes = encodeState(model);
  const bad = (b: Uint8Array, re: RegExp) => assert.throws(() => decodeState(b, 'the diff'), (e: GridError) => e.code === 'GRID_ERR_INVALID_TENSOR' && re.test(e.message));
  bad(bytes.subarray(0, bytes.length - 3), /not a syft-proto State|carries/);
  bad(new Uint8Array(0), /holds no tensors/);
  bad(encodeState([{ dims: [2, 2], data: Float32Array.from([1, 2, 3]) }]), /shape \[2, 2\] \(4 values\) but carries 3/);
  bad(encodeState([{ dims: [1], data: Float32Array.from([NaN]) }]), /holds NaN/);
  bad(encodeState([{ dims: [1], data: Float32Array.from([-Infinity]) }]), /holds -Infinity/);
  assert.throws(() => checkShapes(decodeState(bytes), [[3, 2], [1]]), /tensor 0 has shape \[2, 3\]; the model's is \[3, 2\]/);
  assert.throws(() => checkShapes(decodeState(bytes), [[2, 3]]), /holds 2 tensors; the model has 1/);
});

/** One tensor whose shape is the given dims (packed), float32, no values. */
function shapeOnly(dims: number[]): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork().uint32(8 << 3).int32(SERIALIZER_ALL)
    .uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork().uint32((1 << 3) | 2).fork();
  for (const d of dims) w.int32(d);
  return w.ldelim().ldelim().uint32((2 << 3) | 2).string('float32').ldelim().ldelim().ldelim().finish();
}

test('decodeState checks what a State claims on its raw bytes first: tensor count, values by shape and carried, fields, nesting; the caller may lower the limits', () => {
  const bad = (b: Uint8Array, re: RegExp, limits?: { maxTensors?: number; maxValues?: number }) =>
    assert.throws(() => decodeState(b, 'the diff', limits), (e: GridError) => e.code === 'GRID_ERR_INVALID_TENSOR' && re.test(e.message), re.source);
  // 5000 empty tensors (2 bytes each), 5000 empty placeholders.
  bad(Buffer.from(new Uint8Array(10_000).map((_, i) => (i % 2 === 0 ? 0x12 : 0))), /the diff holds more than 4096 tensors; at most 4096/);
  bad(Buffer.from(new Uint8Array(10_000).map((_, i) => (i % 2 === 0 ? 0x0a : 0))), /holds more than 4096 placeholders/);
  bad(shapeOnly([65536, 65536, 65536]), /has a tensor whose shape holds more than 67108864 values/);
  bad(shapeOnly(new Array(33).fill(1)), /more than 32 dimensions/);
  bad(shapeOnly([2, -3]), /negative dimension/);
  // Two tensors of 40 Mi values each: each fits, together they do not.
  const two = Buffer.concat([shapeOnly([40 << 20]), shapeOnly([40 << 20])]);
  bad(two, /holds more than 67108864 values in all/);
  // A shape of 3 carrying 100 unpacked values, against a limit of 10.
  bad(handState(3, [], new Array(100).fill(1)), /carries more than 10 values in all/, { maxValues: 10 });
  // 100 unknown fields in one TorchTensor (each would become an object).
  const w = protobuf.Writer.create();
  w.uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork();
  for (let i = 0; i < 100; i++) w.uint32(99 << 3).uint32(0);
  bad(w.ldelim().ldelim().finish(), /has a TorchTensor message of more than 64 fields/);
  // chain within chain within chain...
  let nested = protobuf.Writer.create().finish();
  for (let i = 0; i < 12; i++) nested = protobuf.Writer.create().uint32((4 << 3) | 2).bytes(nested).finish();
  bad(protobuf.Writer.create().uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).bytes(nested).ldelim().finish(), /nests tensors more than 8 deep/);
  bad(encodeState(model), /holds more than 1 (placeholders|tensors); at most 1/, { maxTensors: 1 });
  bad(encodeState(model), /holds more than 6 values in all/, { maxValues: 6 });
  assert.equal(decodeState(encodeState(model), 'the diff', { maxTensors: 2, maxValues: 7 }).length, 2);
});

test('a hostile State of 4 million empty tensors (8 MB) is refused without building them: a node with a 48 MB heap answers INVALID_TENSOR', () => {
  const script = join(mkdtempSync(join(tmpdir(), 'fl-state-')), 'hostile.cjs');
  writeFileSync(script, `
    const { decodeState } = require(${JSON.stringify(join(__dirname, '../../src/core/protocol/syft-state.ts'))});
    const n = 4000000, bytes = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) bytes[2 * i] = 0x12;
    try { decodeState(bytes, 'the diff'); console.log('decoded'); } catch (e) { console.log(e.code); }
  `);
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--max-old-space-size=48', script], { encoding: 'utf8', timeout: 60_000 });
  rmSync(dirname(script), { recursive: true, force: true });
  assert.equal(run.status, 0, `the child died (${run.signal ?? run.status}): ${run.stderr.slice(0, 300)}`);
  assert.equal(run.stdout.trim(), 'GRID_ERR_INVALID_TENSOR');
});

test('RunningSum adds exactly as a float64 loop over tensors of any length: chunk edges, tails of 1-3, a following tensor untouched by padding', () => {
  const shapes = [[3], [2, 16384 + 5], [1], [7], [16384 * 2]];
  let seed = 11;
  const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff - 0.5; };
  const old = shapes.map((dims) => ({ dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, rand) }));
  const diffs = Array.from({ length: 5 }, () => old.map((t) => ({ dims: t.dims, data: t.data.map(() => rand() * 1e3) })));
  const weights = [1, 3.5, 1e-3, 250, 7];
  const sum = new RunningSum(shapes);
  diffs.forEach((d, k) => sum.add(d, weights[k]!));
  const total = weights.reduce((a, b) => a + b, 0);
  const got = sum.apply(old);
  old.forEach((t, i) => {
    const want = new Float32Array(t.data.length);
    for (let k = 0; k < want.length; k++) {
      let s = 0;
      diffs.forEach((d, j) => { s += weights[j]! * d[i]!.data[k]!; });
      want[k] = t.data[k]! - s / total;
    }
    assert.deepEqual(got[i]!.dims, t.dims);
    assert.ok(got[i]!.data.every((v, k) => v === want[k]), `tensor ${i} differs from the float64 loop`);
  });
});

test('RunningSum: new = old − Σwᵢdᵢ/Σwᵢ; packed diffs unpack to the same tensors', () => {
  const sum = new RunningSum(model.map((t) => t.dims));
  const d1 = [{ dims: [2, 3], data: new Float32Array(6).fill(1) }, { dims: [1], data: Float32Array.from([2]) }];
  const d2 = [{ dims: [2, 3], data: new Float32Array(6).fill(4) }, { dims: [1], data: Float32Array.from([-2]) }];
  sum.add(d1, 2);
  sum.add(unpackDiff(packDiff(d2), [[2, 3], [1]]), 1);
  const out = sum.apply(model);
  assert.deepEqual(Array.from(out[0]!.data), [1, 2, 3, 4, 5, 6].map((v) => v - 2));
  assert.deepEqual(Array.from(out[1]!.data), [-1 - 2 / 3].map((v) => Math.fround(v)));
  assert.deepEqual(Array.from(new RunningSum([[1]]).apply([{ dims: [1], data: Float32Array.from([7]) }])[0]!.data), [7]);
});

test('server_config: PyGrid\'s keys checked, unknown keys kept', () => {
  assert.deepEqual(checkServerConfig({ cycle_length: 28800, num_cycles: 5, max_diffs: 1, minimum_download_speed: 0, something: 'kept' }),
    { cycle_length: 28800, num_cycles: 5, max_diffs: 1, minimum_download_speed: 0, something: 'kept' });
  assert.throws(() => checkServerConfig({ max_diffs: 1.5 }), /max_diffs must be a whole number/);
  assert.throws(() => checkServerConfig({ max_diffs: 1, min_workers: 3, max_workers: 2 }), /min_workers \(3\) is more than max_workers/);
  assert.throws(() => checkServerConfig({ max_diffs: 1, iterative_plan: 'yes' }), /iterative_plan must be true or false/);
  assert.throws(() => checkServerConfig({ max_diffs: 1, authentication: 'jwt' }), /authentication must be an object/);
});

test('timedeltaString writes what Python\'s str(timedelta) writes', () => {
  assert.equal(timedeltaString(0), '0:00:00');
  assert.equal(timedeltaString(28_798_123.456), '7:59:58.123456');
  assert.equal(timedeltaString(90_000_000), '1 day, 1:00:00');
  assert.equal(timedeltaString(2 * 86_400_000 + 61_000), '2 days, 0:01:01');
});

test('RunningSum.merge: partial sums of the reports (one per replica, from their stored bytes, unaligned too) add up to the sum of all reports', () => {
  const shapes = [[2, 3], [1]];
  const diff = (v: number) => [{ dims: [2, 3], data: Float32Array.from([v, 2 * v, 3 * v, 4 * v, 5 * v, 6 * v]) }, { dims: [1], data: Float32Array.from([-v]) }];
  const all = new RunningSum(shapes);
  const parts = [new RunningSum(shapes), new RunningSum(shapes)];
  [[1, 2], [0.5, 1], [-3, 4]].forEach(([v, w], i) => { all.add(diff(v!), w!); parts[i % 2]!.add(diff(v!), w!); });
  const merged = new RunningSum(shapes);
  for (const p of parts) {
    // Stored bytes read back from a file need not be 8-byte aligned.
    const unaligned = Buffer.alloc(p.bytes().length + 1).subarray(1);
    unaligned.set(p.bytes());
    merged.merge(unaligned, p.reports, p.weight);
  }
  assert.equal(merged.reports, 3);
  assert.equal(merged.weight, 7);
  assert.deepEqual(Array.from(new Float64Array(merged.bytes().slice().buffer)), Array.from(new Float64Array(all.bytes().slice().buffer)));
  assert.throws(() => merged.merge(new Uint8Array(8), 1, 1), RangeError);
});
