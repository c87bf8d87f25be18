// The CLI's tensor files: JSON output format, half floats, binding `--input [NAME=]FILE` to model inputs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bindInputFiles, floatToHalf, halfToFloat, tensorFromJson, tensorToJson, writeOutputs } from '../../src/compute/tensor-io';
import { readNpy, writeNpy } from '../../src/core/npy';
import { tensorFromValues } from '../../src/core/protocol/tensor';
import { encodeTensorProto } from '../../src/compute/onnx';
import type { ModelSignature } from '../../src/core/protocol/messages';
import { tempDir } from '../helpers/node-fixtures';

test('float16 conversion matches numpy (round to nearest even, subnormals, overflow, NaN)', () => {
  // value → numpy's np.float16(value).view(np.uint16)
  const numpy: [number, number][] = [[1, 15360], [-2.5, 49408], [65504, 31743], [70000, 31744], [1e-7, 2], [6e-8, 1], [3e-5, 503],
    [0.1, 11878], [1 / 3, 13653], [Infinity, 31744], [2049, 26624], [2051, 26626], [1.00048828125, 15360]];
  for (const [v, bits] of numpy) assert.equal(floatToHalf(v), bits, String(v));
  assert.equal(floatToHalf(NaN) & 0x7c00, 0x7c00);
  assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))));
  for (const [, bits] of numpy) assert.equal(floatToHalf(halfToFloat(bits)), bits);
});

test('JSON output: int64 as numbers when exact, else strings; bools as booleans; non-finite floats as strings', () => {
  const big = tensorToJson({ dtype: 'int64', dims: [3], data: BigInt64Array.from([5n, 2n ** 53n - 1n, 2n ** 53n + 1n]) });
  assert.deepEqual(big.data, [5, 9007199254740991, '9007199254740993']);
  assert.deepEqual(tensorToJson({ dtype: 'uint64', dims: [1], data: BigUint64Array.from([2n ** 64n - 1n]) }).data, ['18446744073709551615']);
  assert.deepEqual(tensorToJson(tensorFromValues('bool', [2], [true, false])).data, [true, false]);
  assert.deepEqual(tensorToJson(tensorFromValues('float32', [3], [NaN, Infinity, 0.5])).data, ['NaN', 'Infinity', 0.5]);
  assert.deepEqual(tensorToJson(tensorFromValues('float16', [1], [0x3c00])).data, [1]);
  assert.deepEqual(tensorToJson(tensorFromValues('float32', [2, 1], [1, 2])).dims, [2, 1]);
});

test('JSON input: nested arrays take the model dtype; an object may say dtype/dims; bad values are coded errors', () => {
  const nested = tensorFromJson([[1, 2, 3], [4, 5, 6]], 'float32', 'x.json');
  assert.deepEqual(nested.dims, [2, 3]);
  assert.deepEqual([...(nested.data as Float32Array)], [1, 2, 3, 4, 5, 6]);
  const obj = tensorFromJson({ dtype: 'int64', dims: [2], data: ['9007199254740993', 1] }, undefined, 'y.json');
  assert.deepEqual([...(obj.data as BigInt64Array)], [9007199254740993n, 1n]);
  const half = tensorFromJson([0.5], 'float16', 'h.json');
  assert.deepEqual([...(half.data as Uint16Array)], [0x3800]);
  assert.throws(() => tensorFromJson([[1, 2], [3]], 'float32', 'r.json'), { code: 'GRID_ERR_INVALID_TENSOR' });
  assert.throws(() => tensorFromJson([1.5], 'int32', 'i.json'), /not an integer/);
  assert.throws(() => tensorFromJson({ dtype: 'complex64', data: [1] }, undefined, 'c.json'), /unknown dtype/);
  assert.throws(() => tensorFromJson([1], undefined, 'n.json'), /dtype/);
});

test('--input binds named files by name and the rest in model order; .npy, .pb and .json are read', (t) => {
  const dir = tempDir('grid-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sig: ModelSignature = {
    inputs: [{ name: 'a', dtype: 'float32', dims: [2] }, { name: 'b', dtype: 'int64', dims: [2] }, { name: 'c', dtype: 'bool', dims: [1] }],
    outputs: [],
  };
  fs.writeFileSync(path.join(dir, 'a.npy'), writeNpy(tensorFromValues('float32', [2], [1, 2])));
  fs.writeFileSync(path.join(dir, 'b.pb'), encodeTensorProto('whatever', tensorFromValues('int64', [2], [3, 4])));
  fs.writeFileSync(path.join(dir, 'c.json'), '[true]');
  const feeds = bindInputFiles([`c=${path.join(dir, 'c.json')}`, path.join(dir, 'a.npy'), path.join(dir, 'b.pb')], sig);
  assert.deepEqual(Object.keys(feeds).sort(), ['a', 'b', 'c']);
  assert.deepEqual([...(feeds.b!.data as BigInt64Array)], [3n, 4n]);
  assert.deepEqual([...(feeds.c!.data as Uint8Array)], [1]);
  assert.throws(() => bindInputFiles([`zzz=${path.join(dir, 'c.json')}`], sig), /no input "zzz"/);
  assert.throws(() => bindInputFiles([path.join(dir, 'a.npy'), path.join(dir, 'a.npy'), path.join(dir, 'a.npy'), path.join(dir, 'a.npy')], sig), /4 unnamed inputs/);
  assert.throws(() => bindInputFiles([path.join(dir, 'missing.npy')], sig), { code: 'GRID_ERR_INVALID_INPUT' });
  assert.throws(() => bindInputFiles([path.join(dir, 'a.txt')], sig), { code: 'GRID_ERR_INVALID_INPUT' });
});

test('-o DIR/ writes one .npy per output; -o FILE.json one JSON document', (t) => {
  const dir = tempDir('grid-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const outputs = { 'y/probs': tensorFromValues('float32', [1, 2], [0.25, 0.75]), label: tensorFromValues('int64', [1], [1]) };
  const files = writeOutputs(outputs, `${path.join(dir, 'out')}/`);
  assert.deepEqual(files.map((f) => path.basename(f)), ['y_probs.npy', 'label.npy']);
  assert.deepEqual([...(readNpy(fs.readFileSync(files[0]!)).data as Float32Array)], [0.25, 0.75]);
  const json = path.join(dir, 'o.json');
  writeOutputs(outputs, json);
  assert.deepEqual(JSON.parse(fs.readFileSync(json, 'utf8')), {
    'y/probs': { dtype: 'float32', dims: [1, 2], data: [0.25, 0.75] },
    label: { dtype: 'int64', dims: [1], data: [1] },
  });
});
