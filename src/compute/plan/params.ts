// Parameters in and out of ONNX models: read a model's float initializers, and write trained values
// back as a normal ONNX model (same graph, new initializers) that can be served and inferred.

import { gridError } from '../../core/errors';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import { decodeModel, encodeModel } from '../onnx/model';
import { ONNX_DTYPE_CODES, tensorFromProto, tensorToProto } from '../onnx/tensor-proto';

/** The model's float initializers (weights, biases, normalisation statistics), copied out of the bytes. */
export function modelParams(model: Uint8Array): NamedTensors {
  const out: NamedTensors = {};
  for (const tp of decodeModel(model).graph?.initializer ?? []) {
    if (tp.dataType !== ONNX_DTYPE_CODES.float32 && tp.dataType !== ONNX_DTYPE_CODES.float64) continue;
    const t = tensorFromProto(tp);
    out[tp.name ?? ''] = { dtype: t.dtype, dims: [...t.dims], data: (t.data as Float32Array).slice() } as Tensor;
  }
  return out;
}

/**
 * The model with `params` as its initializers. Every name must be an initializer of the same dtype and
 * dims (GRID_ERR_INVALID_INPUT otherwise); initializers not named keep their values.
 */
export function withParams(model: Uint8Array, params: NamedTensors): Uint8Array {
  const m = decodeModel(model);
  const inits = m.graph!.initializer ?? [];
  const byName = new Map(inits.map((t, i) => [t.name ?? '', i]));
  for (const [name, t] of Object.entries(params)) {
    const i = byName.get(name);
    if (i === undefined) throw gridError('INVALID_INPUT', `the model has no initializer "${name}"`, { param: name });
    const old = inits[i]!;
    const dims = (old.dims ?? []).map(Number);
    if (old.dataType !== ONNX_DTYPE_CODES[t.dtype] || dims.length !== t.dims.length || dims.some((d, k) => d !== t.dims[k])) {
      throw gridError('INVALID_INPUT', `parameter "${name}" is ${t.dtype} [${t.dims.join(', ')}] but the model's initializer is [${dims.join(', ')}] of ONNX type ${old.dataType}`, { param: name });
    }
    inits[i] = tensorToProto(name, t);
  }
  return encodeModel(m);
}
