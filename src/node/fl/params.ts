// An FL process's model in either form a host may give it, and its parameters: a syft-proto State
// (PyGrid hosts; its tensors are the parameters) or an ONNX model (ours; its float32 initializers, in
// graph order, are the parameters). Workers' diffs are States in both cases: the tensors in this order.

import { gridError, GridError } from '../../core/errors';
import { modelParams, withParams } from '../../compute/plan/params';
import type { NamedTensors } from '../../core/protocol/tensor';
import { decodeState, encodeState, type StateTensor } from './state';

export type ModelFormat = 'state' | 'onnx';

export interface ParamSpec { name: string; dims: number[] }

export function paramsOf(format: ModelFormat, bytes: Uint8Array): { specs: ParamSpec[]; tensors: StateTensor[] } {
  if (format === 'state') {
    const tensors = decodeState(bytes, 'the model');
    return { specs: tensors.map((t, i) => ({ name: `#${i}`, dims: t.dims })), tensors };
  }
  let named: NamedTensors;
  try {
    named = modelParams(bytes);
  } catch (err) {
    if (err instanceof GridError) throw err;
    throw gridError('INVALID_MODEL', `the model is neither a syft-proto State nor a loadable ONNX model (${(err as Error).message})`);
  }
  const specs: ParamSpec[] = [];
  const tensors: StateTensor[] = [];
  for (const [name, t] of Object.entries(named)) {
    if (t.dtype !== 'float32') continue;
    specs.push({ name, dims: [...t.dims] });
    tensors.push({ dims: [...t.dims], data: t.data as Float32Array });
  }
  if (tensors.length === 0) throw gridError('INVALID_MODEL', 'the ONNX model has no float32 initializers: there is nothing to train');
  return { specs, tensors };
}

/** The model bytes with new parameters: a State, or the ONNX model with its initializers replaced. */
export function withNewParams(format: ModelFormat, bytes: Uint8Array, specs: readonly ParamSpec[], tensors: readonly StateTensor[]): Uint8Array {
  if (format === 'state') return encodeState(tensors);
  const named: NamedTensors = {};
  specs.forEach((s, i) => { named[s.name] = { dtype: 'float32', dims: [...s.dims], data: tensors[i]!.data }; });
  return withParams(bytes, named);
}

/** True for bytes that decode as an ONNX ModelProto with a graph (an averaging plan we could run). */
export function looksLikeOnnx(bytes: Uint8Array): boolean {
  try {
    modelParams(bytes);
    return bytes.length > 0 && bytes[0] === 0x08; // ModelProto starts with ir_version (field 1, varint)
  } catch {
    return false;
  }
}
