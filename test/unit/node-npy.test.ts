import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readNpy, readNpyHeader, writeNpy } from '../../src/core/npy';
import { tensorFromValues, DTYPES, type Tensor } from '../../src/core/protocol/tensor';
import { GridError } from '../../src/core/errors';

// Bytes produced by numpy 2.4 `np.save` (kept verbatim: they pin us to numpy's real format).
const NUMPY_F2 = '934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2032292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a003e00c000420044';
const NUMPY_B1 = '934e554d5059010076007b276465736372273a20277c6231272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a010001';
const NUMPY_BE_I4 = '934e554d5059010076007b276465736372273a20273e6934272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000000000100000002000000030000000400000005';
const NUMPY_U5 = '934e554d5059010076007b276465736372273a20273c5535272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a610000006200000000000000000000000000000068000000e90000006c0000006c0000006f000000';

test('reads numpy float16 as raw half bits with its shape', () => {
  const t = readNpy(Buffer.from(NUMPY_F2, 'hex'));
  assert.equal(t.dtype, 'float16');
  assert.deepEqual(t.dims, [2, 2]);
  // 1.5, -2, 3, 4 in IEEE half precision
  assert.deepEqual([...(t.data as Uint16Array)], [0x3e00, 0xc000, 0x4200, 0x4400]);
});

test('reads numpy bool', () => {
  const t = readNpy(Buffer.from(NUMPY_B1, 'hex'));
  assert.equal(t.dtype, 'bool');
  assert.deepEqual([...(t.data as Uint8Array)], [1, 0, 1]);
});

test('reads big-endian int32 into native values', () => {
  const t = readNpy(Buffer.from(NUMPY_BE_I4, 'hex'));
  assert.equal(t.dtype, 'int32');
  assert.deepEqual(t.dims, [2, 3]);
  assert.deepEqual([...(t.data as Int32Array)], [0, 1, 2, 3, 4, 5]);
});

test('reads numpy unicode strings', () => {
  const t = readNpy(Buffer.from(NUMPY_U5, 'hex'));
  assert.equal(t.dtype, 'string');
  assert.deepEqual(t.data, ['ab', 'héllo']);
});

test('writes byte-for-byte what numpy writes', () => {
  const f2 = tensorFromValues('float16', [2, 2], [0x3e00, 0xc000, 0x4200, 0x4400]);
  assert.equal(writeNpy(f2).toString('hex'), NUMPY_F2);
  const b1 = tensorFromValues('bool', [3], [true, false, true]);
  assert.equal(writeNpy(b1).toString('hex'), NUMPY_B1);
  const u = tensorFromValues('string', [2], ['ab', 'héllo']);
  assert.equal(writeNpy(u).toString('hex'), NUMPY_U5);
});

test('every dtype round-trips exactly, including scalars and empty arrays', () => {
  for (const dtype of DTYPES) {
    const values = dtype === 'string' ? ['x', '', 'ünï'] : dtype === 'bool' ? [true, false, true] : [1, 0, 7];
    for (const dims of [[3], [1, 3, 1]]) {
      const t = tensorFromValues(dtype, dims, values);
      const back = readNpy(writeNpy(t));
      assert.equal(back.dtype, dtype);
      assert.deepEqual(back.dims, dims);
      assert.deepEqual(Array.from(back.data as ArrayLike<unknown>), Array.from(t.data as ArrayLike<unknown>), dtype);
    }
  }
  const scalar = readNpy(writeNpy(tensorFromValues('float64', [], [Math.PI])));
  assert.deepEqual(scalar.dims, []);
  assert.equal((scalar.data as Float64Array)[0], Math.PI);
  const empty = readNpy(writeNpy(tensorFromValues('int64', [0, 4], [])));
  assert.deepEqual(empty.dims, [0, 4]);
  assert.equal(empty.data.length, 0);
});

test('int64 extremes survive', () => {
  const t: Tensor = { dtype: 'int64', dims: [2], data: BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n]) };
  assert.deepEqual([...(readNpy(writeNpy(t)).data as BigInt64Array)], [-(2n ** 63n), 2n ** 63n - 1n]);
});

test('Fortran-order arrays are refused with a clear error', () => {
  const fortran = Buffer.from(NUMPY_F2, 'hex').toString('latin1').replace("'fortran_order': False", "'fortran_order': True ");
  assert.throws(() => readNpy(Buffer.from(fortran, 'latin1')), (e: unknown) =>
    e instanceof GridError && e.code === 'GRID_ERR_INVALID_TENSOR' && /Fortran-order/.test(e.message));
});

test('truncated data, bad magic and structured dtypes are coded errors', () => {
  const full = Buffer.from(NUMPY_BE_I4, 'hex');
  assert.throws(() => readNpy(full.subarray(0, full.length - 1)), /needs 24 data bytes, got 23/);
  assert.throws(() => readNpy(Buffer.from('not an npy file')), /magic/);
  const structured = full.toString('latin1').replace("'descr': '>i4'", "'descr': [('a', '<f4')]".slice(0, 14));
  assert.throws(() => readNpy(Buffer.from(structured, 'latin1')), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_TENSOR');
  const complex = full.toString('latin1').replace("'>i4'", "'<c8'");
  assert.throws(() => readNpy(Buffer.from(complex, 'latin1')), /<c8 is not supported/);
});

test('header-only read gives dtype and shape', () => {
  const h = readNpyHeader(Buffer.from(NUMPY_BE_I4, 'hex').subarray(0, 128));
  assert.deepEqual(h, { dtype: 'int32', dims: [2, 3], dataOffset: 128 });
});
