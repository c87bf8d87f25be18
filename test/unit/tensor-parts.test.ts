// encodeNamedTensorsParts (big inference outputs held for download) must be byte for byte encodeNamedTensors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeNamedTensors, DTYPES, encodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../../src/core/protocol/tensor';
import { sampleTensor } from '../helpers/node-fixtures';

test('the parts of named tensors concatenate to their encoding, for every dtype, scalars and empty tensors', () => {
  const tensors: NamedTensors = {};
  for (const d of DTYPES) tensors[`x_${d}`] = sampleTensor(d, 5);
  tensors.scalar = { dtype: 'float32', dims: [], data: Float32Array.of(1.25) };
  tensors.empty = { dtype: 'int8', dims: [0, 3], data: new Int8Array(0) };
  tensors['naïve name'] = { dtype: 'uint8', dims: [3], data: Uint8Array.of(1, 2, 3) };
  const joined = Buffer.concat(encodeNamedTensorsParts(tensors));
  assert.ok(joined.equals(encodeNamedTensors(tensors)));
  assert.deepEqual(Object.keys(decodeNamedTensors(joined)), Object.keys(tensors));
  assert.ok(Buffer.concat(encodeNamedTensorsParts({})).equals(encodeNamedTensors({})));
});

test('numeric data is not copied into the parts', () => {
  const data = new Float64Array(1024).fill(3);
  const parts = encodeNamedTensorsParts({ y: { dtype: 'float64', dims: [1024], data } });
  assert.ok(parts.some((p) => p.buffer === data.buffer && p.byteLength === data.byteLength));
});
