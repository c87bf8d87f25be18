// ONNX TensorProto <-> the grid's Tensor. Numeric data is written as raw_data (little-endian, what ORT
// and PyTorch write); every typed field (float_data, int32_data, int64_data, …) is read.

import { gridError } from '../../core/errors';
import { elementCount, type DType, type Tensor } from '../../core/protocol/tensor';
import { TensorProtoType } from './schema';
import type { OnnxTensorProto } from './types';
import { fromProtoObject } from './normalize';

/** TensorProto.DataType codes for the dtypes the grid carries. */
export const ONNX_DTYPE_CODES: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, string: 8, bool: 9,
  float16: 10, float64: 11, uint32: 12, uint64: 13,
};

const CODE_TO_DTYPE = new Map<number, DType>(Object.entries(ONNX_DTYPE_CODES).map(([k, v]) => [v, k as DType]));
const UNSUPPORTED_NAMES: Record<number, string> = {
  0: 'UNDEFINED', 14: 'COMPLEX64', 15: 'COMPLEX128', 16: 'BFLOAT16', 17: 'FLOAT8E4M3FN', 18: 'FLOAT8E4M3FNUZ',
  19: 'FLOAT8E5M2', 20: 'FLOAT8E5M2FNUZ', 21: 'UINT4', 22: 'INT4', 23: 'FLOAT4E2M1',
};

/** The grid dtype of an ONNX element type code; throws GRID_ERR_INVALID_TENSOR for types we do not carry. */
export function dtypeFromOnnx(code: number, what = 'tensor'): DType {
  const d = CODE_TO_DTYPE.get(code);
  if (d === undefined) throw gridError('INVALID_TENSOR', `${what}: ONNX data type ${UNSUPPORTED_NAMES[code] ?? code} is not supported by the grid's tensor codec`);
  return d;
}

type NumericCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => ArrayBufferView & { length: number };
const CTORS: Record<Exclude<DType, 'string'>, NumericCtor & { BYTES_PER_ELEMENT: number; new (n: number): ArrayBufferView }> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, int8: Int8Array, int16: Int16Array, int32: Int32Array,
  int64: BigInt64Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array, bool: Uint8Array,
} as never;

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8enc = new TextEncoder();

function fromRaw(dtype: Exclude<DType, 'string'>, raw: Uint8Array, n: number, what: string): Tensor['data'] {
  const Ctor = CTORS[dtype];
  const need = n * Ctor.BYTES_PER_ELEMENT;
  if (raw.byteLength !== need) throw gridError('INVALID_TENSOR', `${what}: ${dtype} with ${n} elements needs ${need} raw bytes, got ${raw.byteLength}`);
  if (raw.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(raw.buffer, raw.byteOffset, n) as unknown as Tensor['data'];
  const out = new Ctor(n);
  new Uint8Array(out.buffer).set(raw);
  return out as unknown as Tensor['data'];
}

function checkCount(len: number, n: number, field: string, what: string): void {
  if (len !== n) throw gridError('INVALID_TENSOR', `${what}: ${field} holds ${len} values but dims hold ${n}`);
}

/** Converts a decoded TensorProto object to a Tensor. Raw data stays a view of the decoded bytes when aligned. */
export function tensorFromProto(tp: OnnxTensorProto, what = `tensor "${tp.name ?? ''}"`): Tensor {
  if (tp.dataLocation === 1 || (tp.externalData?.length ?? 0) > 0) {
    throw gridError('INVALID_TENSOR', `${what}: data stored outside the model file (external data) is not supported`);
  }
  if (tp.segment) throw gridError('INVALID_TENSOR', `${what}: segmented tensors are not supported`);
  const dtype = dtypeFromOnnx(tp.dataType ?? 0, what);
  const dims = (tp.dims ?? []).map(Number);
  for (const d of dims) if (!Number.isSafeInteger(d) || d < 0) throw gridError('INVALID_TENSOR', `${what}: dimension ${d} is not a non-negative integer`);
  const n = elementCount(dims);
  if (dtype === 'string') {
    const s = tp.stringData ?? [];
    checkCount(s.length, n, 'string_data', what);
    return { dtype, dims, data: s.map((b) => utf8.decode(b)) };
  }
  if (tp.rawData !== undefined && (tp.rawData.byteLength > 0 || n === 0)) return { dtype, dims, data: fromRaw(dtype, tp.rawData, n, what) } as Tensor;
  let data: Tensor['data'];
  switch (dtype) {
    case 'float32': {
      const src = tp.floatData ?? [];
      checkCount(src.length, n, 'float_data', what);
      data = Float32Array.from(src);
      break;
    }
    case 'float64': {
      const src = tp.doubleData ?? [];
      checkCount(src.length, n, 'double_data', what);
      data = Float64Array.from(src);
      break;
    }
    case 'int64': {
      const src = tp.int64Data ?? [];
      checkCount(src.length, n, 'int64_data', what);
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt.asIntN(64, BigInt(src[i]!));
      data = out;
      break;
    }
    case 'uint64':
    case 'uint32': {
      const src = tp.uint64Data ?? [];
      checkCount(src.length, n, 'uint64_data', what);
      if (dtype === 'uint64') {
        const out = new BigUint64Array(n);
        for (let i = 0; i < n; i++) out[i] = BigInt.asUintN(64, BigInt(src[i]!));
        data = out;
      } else {
        const out = new Uint32Array(n);
        for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
        data = out;
      }
      break;
    }
    default: {
      // int32, int16, int8, uint16, uint8, bool and float16 (as its bits) all travel in int32_data.
      const src = tp.int32Data ?? [];
      checkCount(src.length, n, 'int32_data', what);
      const out = new CTORS[dtype](n) as unknown as Int32Array;
      for (let i = 0; i < n; i++) out[i] = src[i]!;
      data = out as unknown as Tensor['data'];
    }
  }
  return { dtype, dims, data } as Tensor;
}

export interface TensorProtoWriteOptions {
  /** 'raw' (default) writes raw_data; 'fields' writes the typed repeated fields (float_data, int32_data, …). */
  layout?: 'raw' | 'fields';
}

/** Builds a TensorProto object from a Tensor. Raw data is a view of the tensor's bytes (no copy). */
export function tensorToProto(name: string, t: Tensor, opts: TensorProtoWriteOptions = {}): OnnxTensorProto {
  if (typeof name !== 'string') throw new TypeError('name must be a string');
  const tp: OnnxTensorProto = { name, dims: [...t.dims], dataType: ONNX_DTYPE_CODES[t.dtype] };
  if (tp.dataType === undefined) throw new TypeError(`t.dtype ${String(t.dtype)} is not a grid dtype`);
  if (t.dtype === 'string') {
    tp.stringData = (t.data as string[]).map((s) => utf8enc.encode(s));
    return tp;
  }
  const data = t.data as Exclude<Tensor['data'], string[]>;
  if ((opts.layout ?? 'raw') === 'raw') {
    tp.rawData = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return tp;
  }
  switch (t.dtype) {
    case 'float32': tp.floatData = Array.from(data as Float32Array); break;
    case 'float64': tp.doubleData = Array.from(data as Float64Array); break;
    case 'int64': tp.int64Data = Array.from(data as BigInt64Array, (v) => v.toString()); break;
    case 'uint64': tp.uint64Data = Array.from(data as BigUint64Array, (v) => v.toString()); break;
    case 'uint32': tp.uint64Data = Array.from(data as Uint32Array); break;
    default: tp.int32Data = Array.from(data as Int32Array);
  }
  return tp;
}

/** Decodes a serialized TensorProto (an ONNX `input_K.pb`, a `.pb` dataset file). */
export function decodeTensorProto(bytes: Uint8Array): { name: string; tensor: Tensor } {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array');
  let msg: OnnxTensorProto;
  try {
    msg = fromProtoObject(TensorProtoType, TensorProtoType.decode(bytes)) as OnnxTensorProto;
  } catch (err) {
    throw gridError('INVALID_TENSOR', `not an ONNX TensorProto: ${(err as Error).message}`);
  }
  const name = msg.name ?? '';
  return { name, tensor: tensorFromProto(msg, `TensorProto "${name}"`) };
}

/** Serializes a Tensor as an ONNX TensorProto. */
export function encodeTensorProto(name: string, t: Tensor, opts?: TensorProtoWriteOptions): Uint8Array {
  return TensorProtoType.encode(tensorToProto(name, t, opts)).finish();
}
