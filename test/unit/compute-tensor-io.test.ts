// Binding one value to a model's inputs (compute/tensor-io.ts), the rule the notebook's grid.infer and
// the palette's JSON input share: each case here was once true of only one of their two copies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bindInputValues, halfToFloat } from '../../src/compute/tensor-io';
import type { ModelSignature } from '../../src/core/protocol/messages';
import { tensorFromValues } from '../../src/core/protocol/tensor';

function model(inputs: ModelSignature['inputs']): { id: string; signature: ModelSignature } {
  return { id: 'm', signature: { inputs, outputs: [{ name: 'y', dtype: 'float32', dims: [1] }] } };
}
const one = model([{ name: 'x', dtype: 'float32', dims: [null, 2] }]);
const two = model([{ name: 'a', dtype: 'float32', dims: [1] }, { name: 'b', dtype: 'int64', dims: [1] }]);

test('a tensor already in memory (as the kernel sends it) is bound as it is, alone or by name', () => {
  const t = tensorFromValues('float32', [1, 2], [0.5, 2]);
  assert.equal(bindInputValues(one, t, 'grid.infer').x, t);
  const b = tensorFromValues('int64', [1], [7n]);
  const feeds = bindInputValues(two, { a: [1], b }, 'grid.infer');
  assert.equal(feeds.b, b);
  assert.deepEqual([...(feeds.a!.data as Float32Array)], [1]);
});

test('a tensor\'s JSON form is read with the model\'s dtype, whether it says {dtype, dims, data}, only {data}, or is nested numbers', () => {
  const full = bindInputValues(one, { dtype: 'float32', dims: [1, 2], data: [1, 2] }, 'grid.infer').x!;
  assert.deepEqual([full.dims, [...(full.data as Float32Array)]], [[1, 2], [1, 2]]);
  const dataOnly = bindInputValues(one, { data: [[3, 4]] }, 'grid.infer').x!;
  assert.deepEqual([dataOnly.dtype, dataOnly.dims], ['float32', [1, 2]]);
  const nested = bindInputValues(one, [[5, 6]], 'grid.infer').x!;
  assert.deepEqual([...(nested.data as Float32Array)], [5, 6]);
});

test('an input named like a tensor field ("data") is still bound by name', () => {
  const m = model([{ name: 'data', dtype: 'float32', dims: [2] }, { name: 'mask', dtype: 'bool', dims: [2] }]);
  const feeds = bindInputValues(m, { data: [1, 2], mask: [true, false] }, 'editor');
  assert.deepEqual([...(feeds.data!.data as Float32Array)], [1, 2]);
  assert.deepEqual([...(feeds.mask!.data as Uint8Array)], [1, 0]);
});

test('a name the model lacks, a missing input and an unkeyed value for a two-input model are coded errors that name the inputs', () => {
  assert.throws(() => bindInputValues(two, { a: [1], b: [2], zzz: [3] }, 'editor'), { code: 'GRID_ERR_INVALID_INPUT', message: /model "m" has no input "zzz"; its inputs are "a", "b"/ });
  assert.throws(() => bindInputValues(one, { nope: [1] }, 'grid.infer'), { code: 'GRID_ERR_INVALID_INPUT', message: /model "m" has no input "nope"; its inputs are "x"/ });
  assert.throws(() => bindInputValues(two, { a: [1] }, 'grid.infer'), { code: 'GRID_ERR_INVALID_INPUT', message: /^grid\.infer has no value for input "b" of model "m"/ });
  assert.throws(() => bindInputValues(two, {}, 'grid.infer'), { code: 'GRID_ERR_INVALID_INPUT', message: /no value for input "a", "b"/ });
  assert.throws(() => bindInputValues(two, tensorFromValues('float32', [1], [1]), 'grid.infer'), { code: 'GRID_ERR_INVALID_INPUT', message: /has 2 inputs; grid\.infer must be an object keyed by "a", "b"/ });
});

test('a bad value names where it came from and which input it was for', () => {
  assert.throws(() => bindInputValues(two, { a: ['x'], b: [1] }, 'input.json'), { code: 'GRID_ERR_INVALID_TENSOR', message: /^input\.json: input "a": "x" is not a number/ });
  assert.throws(() => bindInputValues(one, [[1, 2], [3]], 'grid.infer'), { code: 'GRID_ERR_INVALID_TENSOR', message: /^grid\.infer: ragged/ });
});

test('half floats decode with their sign, subnormals, infinities and NaN', () => {
  assert.deepEqual([0x3c00, 0xc000, 0x3800, 0x0001, 0x8000, 0x7c00, 0xfc00].map(halfToFloat), [1, -2, 0.5, 2 ** -24, -0, Infinity, -Infinity]);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
});
