// Reads an ONNX backend-test case folder (model.onnx + test_data_set_N/{input,output}_K.pb).
// Each .pb is a TensorProto, or a SequenceProto / OptionalProto where the model's value is one; the
// model's graph says which.

import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { decodeModel, graphFeedInputs } from './model';
import { fromProtoObject } from './normalize';
import { OptionalProtoType, SequenceProtoType, ValueKind } from './schema';
import { decodeTensorProto, tensorFromProto } from './tensor-proto';
import type { OnnxTensorProto, OnnxTypeProto } from './types';

export type ConformanceValue =
  | { kind: 'tensor'; tensor: Tensor }
  | { kind: 'sequence'; elements: Tensor[] }
  | { kind: 'optional'; value: ConformanceValue | null };

export interface ConformanceDataSet {
  /** Inputs by the model's input names, in the model's order. */
  inputs: { name: string; value: ConformanceValue }[];
  outputs: { name: string; value: ConformanceValue }[];
}

export interface ConformanceCase {
  name: string;
  model: Uint8Array;
  dataSets: ConformanceDataSet[];
}

interface SeqLike { elemType?: number; tensorValues?: OnnxTensorProto[]; sequenceValues?: unknown[]; mapValues?: unknown[] }
interface OptLike { elemType?: number; tensorValue?: OnnxTensorProto; sequenceValue?: SeqLike; optionalValue?: OptLike }

function sequenceValue(seq: SeqLike, what: string): ConformanceValue {
  if (seq.elemType !== undefined && seq.elemType !== ValueKind.TENSOR && seq.elemType !== ValueKind.UNDEFINED) {
    throw gridError('INVALID_TENSOR', `${what}: sequences of non-tensors are not supported`);
  }
  return { kind: 'sequence', elements: (seq.tensorValues ?? []).map((t, i) => tensorFromProto(t, `${what}[${i}]`)) };
}

function optionalValue(opt: OptLike, what: string): ConformanceValue {
  if (opt.tensorValue) return { kind: 'optional', value: { kind: 'tensor', tensor: tensorFromProto(opt.tensorValue, what) } };
  if (opt.sequenceValue) return { kind: 'optional', value: sequenceValue(opt.sequenceValue, what) };
  if (opt.optionalValue) return { kind: 'optional', value: optionalValue(opt.optionalValue, what) };
  return { kind: 'optional', value: null };
}

/** Decodes one .pb file as the value the model's type says it is. */
export function decodeConformanceValue(bytes: Uint8Array, type: OnnxTypeProto | undefined, what: string): ConformanceValue {
  if (!type || type.tensorType) return { kind: 'tensor', tensor: decodeTensorProto(bytes).tensor };
  try {
    if (type.sequenceType) return sequenceValue(fromProtoObject(SequenceProtoType, SequenceProtoType.decode(bytes)) as SeqLike, what);
    if (type.optionalType) return optionalValue(fromProtoObject(OptionalProtoType, OptionalProtoType.decode(bytes)) as OptLike, what);
  } catch (err) {
    if ((err as { code?: string }).code) throw err;
    throw gridError('INVALID_TENSOR', `${what}: ${(err as Error).message}`);
  }
  throw gridError('INVALID_TENSOR', `${what}: values of this type (map / sparse tensor) are not supported`);
}

/** Reads a conformance case folder. */
export async function readConformanceCase(dir: string): Promise<ConformanceCase> {
  const model = new Uint8Array(await readFile(join(dir, 'model.onnx')));
  const graph = decodeModel(model).graph!;
  const ins = graphFeedInputs(graph);
  const outs = graph.output ?? [];
  const sets = (await readdir(dir)).filter((d) => d.startsWith('test_data_set_')).sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)));
  const dataSets: ConformanceDataSet[] = [];
  for (const set of sets) {
    const files = await readdir(join(dir, set));
    const read = async (prefix: string, infos: typeof ins) => {
      const out: { name: string; value: ConformanceValue }[] = [];
      for (let k = 0; ; k++) {
        const file = `${prefix}_${k}.pb`;
        if (!files.includes(file)) break;
        const info = infos[k];
        const name = info?.name ?? `${prefix}_${k}`;
        out.push({ name, value: decodeConformanceValue(new Uint8Array(await readFile(join(dir, set, file))), info?.type, `${set}/${file}`) });
      }
      return out;
    };
    dataSets.push({ inputs: await read('input', ins), outputs: await read('output', outs) });
  }
  return { name: dir.split('/').filter(Boolean).pop() ?? dir, model, dataSets };
}
