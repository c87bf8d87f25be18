import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DType, Tensor } from '../../src/core/protocol/tensor';
import {
  decodeModel, decodeTensorProto, encodeModel, encodeTensorProto, dtypeFromOnnx, graphFeedInputs,
  readConformanceCase, decodeConformanceValue, makeNode, makeValueInfo, tensorToProto, ONNX_DTYPE_CODES,
} from '../../src/compute/onnx';
import { GridError } from '../../src/core/errors';
import { SequenceProtoType, TensorProtoType } from '../../src/compute/onnx/schema';

const CONFORMANCE = join(__dirname, '../fixtures/onnx-conformance');

const samples: Tensor[] = [
  { dtype: 'float32', dims: [2, 3], data: new Float32Array([1.5, -2, 3.25, Number.NaN, Infinity, -0]) },
  { dtype: 'float64', dims: [3], data: new Float64Array([Math.PI, -1e300, 5e-324]) },
  { dtype: 'float16', dims: [4], data: new Uint16Array([0x3c00, 0xc000, 0x7c00, 0x0001]) },
  { dtype: 'int8', dims: [3], data: new Int8Array([-128, 0, 127]) },
  { dtype: 'int16', dims: [3], data: new Int16Array([-32768, 1, 32767]) },
  { dtype: 'int32', dims: [2, 2], data: new Int32Array([-2147483648, 0, 7, 2147483647]) },
  { dtype: 'int64', dims: [3], data: new BigInt64Array([-(2n ** 63n), 2n ** 53n + 1n, 2n ** 63n - 1n]) },
  { dtype: 'uint8', dims: [3], data: new Uint8Array([0, 128, 255]) },
  { dtype: 'uint16', dims: [2], data: new Uint16Array([0, 65535]) },
  { dtype: 'uint32', dims: [2], data: new Uint32Array([0, 4294967295]) },
  { dtype: 'uint64', dims: [2], data: new BigUint64Array([0n, 2n ** 64n - 1n]) },
  { dtype: 'bool', dims: [3], data: new Uint8Array([1, 0, 1]) },
  { dtype: 'string', dims: [3], data: ['', 'grid', 'naïve ✓'] },
  { dtype: 'float32', dims: [0, 4], data: new Float32Array(0) },
  { dtype: 'int32', dims: [], data: new Int32Array([42]) },
];

function sameTensor(a: Tensor, b: Tensor): void {
  assert.equal(a.dtype, b.dtype);
  assert.deepEqual([...a.dims], [...b.dims]);
  if (a.dtype === 'string') assert.deepEqual(a.data, b.data);
  else {
    // Bitwise, so NaN and -0 count.
    const x = a.data as ArrayBufferView, y = b.data as ArrayBufferView;
    assert.deepEqual(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  }
}

for (const layout of ['raw', 'fields'] as const) {
  test(`every dtype round-trips exactly through TensorProto (${layout} layout)`, () => {
    for (const t of samples) {
      const bytes = encodeTensorProto(`x_${t.dtype}`, t, { layout });
      const back = decodeTensorProto(bytes);
      assert.equal(back.name, `x_${t.dtype}`);
      sameTensor(back.tensor, t);
    }
  });
}

test('decoding a TensorProto whose data length disagrees with dims is GRID_ERR_INVALID_TENSOR', () => {
  const w: Tensor = { dtype: 'float32', dims: [3], data: new Float32Array([1, 2, 3]) };
  const proto = tensorToProto('w', w);
  // Intact, the proto decodes to the tensor it was made from: what fails below is the length alone.
  sameTensor(decodeTensorProto(TensorProtoType.encode(proto).finish()).tensor, w);
  proto.rawData = proto.rawData!.subarray(0, 8);
  const bad = TensorProtoType.encode(proto).finish();
  assert.throws(() => decodeTensorProto(bad), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_TENSOR' && /needs 12 raw bytes, got 8/.test(e.message));
  assert.throws(() => decodeTensorProto(new Uint8Array([0xff, 0xff, 0xff])), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_TENSOR');
  assert.throws(() => dtypeFromOnnx(16), /BFLOAT16 is not supported/);
});

test('a model built in code survives encode/decode with nodes, attributes, shapes and initializers', () => {
  const w = tensorToProto('w', { dtype: 'float32', dims: [2, 2], data: new Float32Array([1, 2, 3, 4]) });
  const model = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'grid-workbench',
    graph: {
      name: 'g',
      node: [makeNode('Gemm', ['x', 'w'], ['y'], [{ name: 'transB', type: 2, i: 1 }, { name: 'alpha', type: 1, f: 0.5 }, { name: 'transA', type: 2, i: 0 }], 'fc')],
      initializer: [w],
      input: [makeValueInfo('x', ONNX_DTYPE_CODES.float32, ['batch', 2])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, ['batch', null])],
    },
  };
  const back = decodeModel(encodeModel(model));
  assert.equal(back.irVersion, 8);
  assert.deepEqual(back.opsetImport, [{ domain: '', version: 17 }]);
  const node = back.graph!.node![0]!;
  assert.equal(node.opType, 'Gemm');
  assert.equal(node.name, 'fc');
  assert.deepEqual(node.attribute!.map((a) => [a.name, a.i ?? a.f]), [['transB', 1], ['alpha', 0.5], ['transA', 0]], 'zero-valued attributes reach the wire (proto2 presence)');
  assert.deepEqual(back.graph!.input![0]!.type!.tensorType!.shape!.dim, [{ dimParam: 'batch' }, { dimValue: 2 }]);
  assert.deepEqual(back.graph!.output![0]!.type!.tensorType!.shape!.dim, [{ dimParam: 'batch' }, {}]);
  const init = back.graph!.initializer![0]!;
  assert.deepEqual(init.dims, [2, 2]);
  assert.deepEqual([...new Float32Array(Uint8Array.from(init.rawData!).buffer)], [1, 2, 3, 4]);
  assert.throws(() => decodeModel(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff])), (e: unknown) => e instanceof GridError && e.code === 'GRID_ERR_INVALID_MODEL');
});

const ELEM: Record<number, DType> = Object.fromEntries(Object.entries(ONNX_DTYPE_CODES).map(([k, v]) => [v, k as DType]));

test('the ONNX conformance .pb files decode to the dtype and shape their model declares', async () => {
  let tensors = 0;
  for (const suite of ['simple', 'pytorch-operator']) {
    for (const name of readdirSync(join(CONFORMANCE, suite))) {
      const dir = join(CONFORMANCE, suite, name);
      const c = await readConformanceCase(dir);
      const graph = decodeModel(c.model).graph!;
      const infos = [...graphFeedInputs(graph), ...graph.output!];
      assert.ok(c.dataSets.length > 0, `${name} has data sets`);
      for (const set of c.dataSets) {
        for (const { name: vname, value } of [...set.inputs, ...set.outputs]) {
          const info = infos.find((i) => i.name === vname)!;
          if (value.kind === 'tensor') {
            tensors++;
            const tt = info.type!.tensorType!;
            assert.equal(value.tensor.dtype, ELEM[tt.elemType!], `${name}/${vname} dtype`);
            const dims = tt.shape?.dim ?? [];
            assert.equal(value.tensor.dims.length, dims.length, `${name}/${vname} rank`);
            dims.forEach((d, i) => { if (d.dimValue !== undefined) assert.equal(value.tensor.dims[i], d.dimValue, `${name}/${vname} dim ${i}`); });
          } else {
            assert.ok(info.type!.sequenceType || info.type!.optionalType, `${name}/${vname} is a sequence or optional`);
          }
        }
      }
    }
  }
  assert.ok(tensors > 100, `decoded ${tensors} tensors`);
});

test('conformance input of test_operator_basic holds the values written by PyTorch', () => {
  const { tensor } = decodeTensorProto(readFileSync(join(CONFORMANCE, 'pytorch-operator/test_operator_basic/test_data_set_0/input_0.pb')));
  assert.equal(tensor.dtype, 'float32');
  assert.deepEqual(tensor.dims, [1]);
  assert.ok(Math.abs((tensor.data as Float32Array)[0]! - 0.4) < 1e-7);
});

test('a SequenceProto value decodes to its tensors when the model declares a sequence', () => {
  const a: Tensor = { dtype: 'int64', dims: [2], data: new BigInt64Array([1n, -2n]) };
  const b: Tensor = { dtype: 'int64', dims: [1], data: new BigInt64Array([3n]) };
  const bytes = SequenceProtoType.encode({ name: 's', elemType: 1, tensorValues: [tensorToProto('', a), tensorToProto('', b)] }).finish();
  const v = decodeConformanceValue(bytes, { sequenceType: { elemType: { tensorType: { elemType: 7 } } } }, 's');
  assert.equal(v.kind, 'sequence');
  if (v.kind !== 'sequence') return;
  assert.equal(v.elements.length, 2);
  sameTensor(v.elements[0]!, a);
  sameTensor(v.elements[1]!, b);
});
