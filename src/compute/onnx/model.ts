// ModelProto decode/encode and small helpers to read and build graphs.

import { gridError } from '../../core/errors';
import { ModelProtoType } from './schema';
import { fromProtoObject } from './normalize';
import { AttributeType, type OnnxAttribute, type OnnxModel, type OnnxNode, type OnnxValueInfo, type OnnxGraph } from './types';

/** Decodes ONNX model bytes; malformed protobuf is GRID_ERR_INVALID_MODEL. Initializer raw data stays a view of `bytes`. */
export function decodeModel(bytes: Uint8Array): OnnxModel {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array holding an ONNX model');
  let model: OnnxModel;
  try {
    model = fromProtoObject(ModelProtoType, ModelProtoType.decode(bytes)) as OnnxModel;
  } catch (err) {
    throw gridError('INVALID_MODEL', `not an ONNX model: ${(err as Error).message}`);
  }
  if (!model.graph) throw gridError('INVALID_MODEL', 'not an ONNX model: it has no graph');
  return model;
}

/** Serializes a model object (as decodeModel returns, or built in code). */
export function encodeModel(model: OnnxModel): Uint8Array {
  if (model === null || typeof model !== 'object') throw new TypeError('model must be an ONNX model object');
  return ModelProtoType.encode(model).finish();
}

/** The opset version of the default (ai.onnx) domain. */
export function defaultOpset(model: OnnxModel): number {
  const op = (model.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  return op?.version ?? 1;
}

/** Graph inputs that are not initializers: what a caller feeds. */
export function graphFeedInputs(graph: OnnxGraph): OnnxValueInfo[] {
  const inits = new Set((graph.initializer ?? []).map((t) => t.name));
  return (graph.input ?? []).filter((i) => !inits.has(i.name));
}

export function getAttribute(node: OnnxNode, name: string): OnnxAttribute | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

export function attrInt(node: OnnxNode, name: string, fallback: number): number {
  const a = getAttribute(node, name);
  return a?.i ?? fallback;
}

export function attrFloat(node: OnnxNode, name: string, fallback: number): number {
  const a = getAttribute(node, name);
  return a?.f ?? fallback;
}

export function attrInts(node: OnnxNode, name: string): number[] | undefined {
  const a = getAttribute(node, name);
  return a?.ints;
}

export function attrString(node: OnnxNode, name: string, fallback: string): string {
  const a = getAttribute(node, name);
  return a?.s ? new TextDecoder().decode(a.s) : fallback;
}

export type AttrValue = number | string | number[] | { floats: number[] } | { tensor: NonNullable<OnnxAttribute['t']> };

/** Builds an attribute: integers as INT, non-integers as FLOAT, arrays as INTS, `{floats}` as FLOATS. */
export function makeAttribute(name: string, value: AttrValue): OnnxAttribute {
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') return Number.isInteger(value) ? { name, type: AttributeType.INT, i: value } : { name, type: AttributeType.FLOAT, f: value };
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  if ('floats' in value) return { name, type: AttributeType.FLOATS, floats: value.floats };
  return { name, type: AttributeType.TENSOR, t: value.tensor };
}

/** Builds a float attribute even for integral values (alpha = 1.0 must stay FLOAT). */
export function floatAttribute(name: string, value: number): OnnxAttribute {
  return { name, type: AttributeType.FLOAT, f: value };
}

export function makeNode(opType: string, inputs: string[], outputs: string[], attrs: OnnxAttribute[] = [], name?: string): OnnxNode {
  const node: OnnxNode = { opType, input: inputs, output: outputs };
  if (attrs.length) node.attribute = attrs;
  if (name !== undefined) node.name = name;
  return node;
}

/** A tensor ValueInfo; dims entries are sizes, symbolic names, or null for unknown. */
export function makeValueInfo(name: string, elemType: number, dims: readonly (number | string | null)[] | undefined): OnnxValueInfo {
  const tensorType: NonNullable<NonNullable<OnnxValueInfo['type']>['tensorType']> = { elemType };
  if (dims) tensorType.shape = { dim: dims.map((d) => (d === null ? {} : typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return { name, type: { tensorType } };
}
