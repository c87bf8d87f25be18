// An ONNX model read as a chain of operators the share holders can evaluate on shares. The plan (the
// architecture: operators and shapes) is public to the share holders; the parameters are not, and are
// returned apart for the owner to encode and share. A model with any other operator is refused here,
// before anything is shared.

import { gridError } from '../../core/errors';
import { attrInt, attrFloat, decodeModel, graphFeedInputs, tensorFromProto } from '../onnx';
import type { OnnxNode } from '../onnx';
import type { Step } from './correlations';
import { transpose } from './ring';

export type SmpcLayer =
  /** x [batch, in] · W [in, out] (+ bias [out]); W and bias index plan.params. */
  | { op: 'linear'; in: number; out: number; weight: number; bias?: number }
  | { op: 'relu' }
  /** Per-row shape change (Flatten, Reshape): no computation on shares. */
  | { op: 'reshape'; shape: number[] };

export interface SmpcPlan {
  input: { name: string; shape: number[] };
  output: { name: string; shape: number[] };
  layers: SmpcLayer[];
  /** Parameter sizes, in the order of the shared parameter vector. */
  params: { name: string; size: number }[];
}

export const SUPPORTED_OPERATORS = ['Gemm', 'MatMul', 'Add', 'Relu', 'Flatten', 'Reshape', 'Identity', 'Dropout'] as const;

const unsupported = (what: string) => gridError('SMPC_UNSUPPORTED', `${what}; nothing was shared. Encrypted inference evaluates chains of ${SUPPORTED_OPERATORS.join(', ')}`);

/** Reads a model into a plan and its parameters (float64, weights laid out [in, out]). */
export function compileSmpcModel(bytes: Uint8Array): { plan: SmpcPlan; params: Float64Array[] } {
  const model = decodeModel(bytes);
  const graph = model.graph ?? {};
  const nodes = graph.node ?? [];
  // Every operator is checked first, so the error names the first unsupported one wherever it is.
  for (const node of nodes) {
    if (!(SUPPORTED_OPERATORS as readonly string[]).includes(node.opType ?? '') || (node.domain ?? '') !== '') {
      throw unsupported(`the model uses operator ${node.domain ? `${node.domain}.` : ''}${node.opType ?? '?'} (node "${node.name ?? node.output?.[0] ?? ''}"), which encrypted inference does not support`);
    }
  }
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  const inputs = graphFeedInputs(graph);
  if (inputs.length !== 1) throw unsupported(`the model takes ${inputs.length} inputs; encrypted inference takes exactly one`);
  const input = inputs[0]!;
  const dims = input.type?.tensorType?.shape?.dim ?? [];
  if (input.type?.tensorType?.elemType !== 1) throw unsupported(`input "${input.name}" is not float32`);
  const rowShape = dims.slice(1).map((d, i) => {
    if (typeof d.dimValue !== 'number' || d.dimValue <= 0) throw unsupported(`input "${input.name}" has an open dimension ${i + 1}; only the batch dimension may be open`);
    return Number(d.dimValue);
  });
  if (dims.length < 2) throw unsupported(`input "${input.name}" has no batch dimension`);
  const outputs = graph.output ?? [];
  if (outputs.length !== 1) throw unsupported(`the model has ${outputs.length} outputs; encrypted inference returns exactly one`);

  const params: Float64Array[] = [];
  const paramInfo: SmpcPlan['params'] = [];
  const param = (name: string, data: Float64Array) => { params.push(data); paramInfo.push({ name, size: data.length }); return params.length - 1; };
  const initializer = (node: OnnxNode, name: string | undefined) => {
    const t = name === undefined ? undefined : inits.get(name);
    if (t === undefined) throw unsupported(`${node.opType} "${node.name ?? ''}" takes "${name}" from another computation; only constant (initializer) weights are supported there`);
    const tensor = tensorFromProto(t);
    if (tensor.dtype !== 'float32' && tensor.dtype !== 'float64') throw unsupported(`initializer "${name}" is ${tensor.dtype}, not float`);
    return { dims: tensor.dims.map(Number), data: Float64Array.from(tensor.data as Float32Array) };
  };

  const layers: SmpcLayer[] = [];
  let current = input.name ?? '';
  let shape = rowShape;
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  for (const node of nodes) {
    const op = node.opType!;
    const label = `${op} "${node.name ?? node.output?.[0] ?? ''}"`;
    const dataInputs = (node.input ?? []).filter((n) => n !== '' && !inits.has(n));
    if (dataInputs.length !== 1 || dataInputs[0] !== current) {
      throw unsupported(`${label} does not continue the chain from "${current}" (encrypted inference evaluates one operator after the other)`);
    }
    const next = node.output?.[0] ?? '';
    if (op === 'Identity' || op === 'Dropout') {
      // Inference: Dropout is the identity.
    } else if (op === 'Relu') {
      layers.push({ op: 'relu' });
    } else if (op === 'Flatten') {
      if (attrInt(node, 'axis', 1) !== 1) throw unsupported(`${label} flattens at axis ${attrInt(node, 'axis', 1)}; only axis 1 is supported`);
      shape = [size(shape)];
      layers.push({ op: 'reshape', shape });
    } else if (op === 'Reshape') {
      const target = initializer(node, node.input?.[1]);
      const want = Array.from(target.data);
      if (want[0] !== 0 && want[0] !== -1) throw unsupported(`${label} changes the batch dimension`);
      const rest = want.slice(1).map((d, i) => (d === 0 ? shape[i]! : d));
      const known = rest.filter((d) => d !== -1);
      if (rest.length - known.length > 1) throw unsupported(`${label} has more than one -1`);
      const filled = rest.map((d) => (d === -1 ? size(shape) / size(known) : d));
      if (size(filled) !== size(shape) || filled.some((d) => !Number.isInteger(d) || d <= 0)) throw unsupported(`${label} cannot reshape [${shape}] to [${rest}]`);
      shape = filled;
      layers.push({ op: 'reshape', shape });
    } else if (op === 'Gemm' || op === 'MatMul') {
      if (shape.length !== 1) throw unsupported(`${label} multiplies a [batch, ${shape.join(', ')}] tensor; only [batch, features] is supported (Flatten first)`);
      if (op === 'Gemm' && (attrInt(node, 'transA', 0) !== 0 || attrFloat(node, 'alpha', 1) !== 1 || attrFloat(node, 'beta', 1) !== 1)) {
        throw unsupported(`${label} uses transA, alpha or beta; only plain x·W(ᵀ) + b is supported`);
      }
      const w = initializer(node, node.input?.[1]);
      if (w.dims.length !== 2) throw unsupported(`${label} has a ${w.dims.length}-D weight`);
      const transB = op === 'Gemm' && attrInt(node, 'transB', 0) === 1;
      const [k, n] = transB ? [w.dims[1]!, w.dims[0]!] : [w.dims[0]!, w.dims[1]!];
      if (k !== shape[0]) throw unsupported(`${label} takes ${k} features, the tensor before it has ${shape[0]}`);
      const weight = param(node.input![1]!, transB ? transpose(w.data, n, k) : w.data);
      let bias: number | undefined;
      if (op === 'Gemm' && node.input?.[2]) {
        const b = initializer(node, node.input[2]);
        if (b.data.length !== n) throw unsupported(`${label} has a bias of ${b.data.length} values for ${n} outputs; only a per-output bias is supported`);
        bias = param(node.input[2], b.data);
      }
      layers.push({ op: 'linear', in: k, out: n, weight, ...(bias !== undefined && { bias }) });
      shape = [n];
    } else if (op === 'Add') {
      const b = initializer(node, (node.input ?? []).find((n) => inits.has(n)));
      const last = layers.at(-1);
      if (b.data.length !== shape.at(-1) || shape.length !== 1 || last?.op !== 'linear' || last.bias !== undefined) {
        throw unsupported(`${label} is not a bias added right after a MatMul/Gemm; only that Add is supported`);
      }
      last.bias = param((node.input ?? []).find((n) => inits.has(n))!, b.data);
    }
    current = next;
  }
  if (current !== outputs[0]!.name) throw unsupported(`the chain ends at "${current}", not at the output "${outputs[0]!.name}"`);
  return { plan: { input: { name: input.name ?? '', shape: rowShape }, output: { name: current, shape }, layers, params: paramInfo }, params };
}

/** Checks a plan received over the wire (shapes chain, parameter indices exist); RangeError naming what is wrong. */
export function checkPlan(plan: SmpcPlan): void {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  let shape = plan.input.shape;
  for (const [i, l] of plan.layers.entries()) {
    if (l.op === 'linear') {
      if (shape.length !== 1 || shape[0] !== l.in) throw new RangeError(`layer ${i}: linear takes ${l.in} features, gets [${shape}]`);
      if (plan.params[l.weight]?.size !== l.in * l.out) throw new RangeError(`layer ${i}: weight ${l.weight} is not ${l.in}×${l.out}`);
      if (l.bias !== undefined && plan.params[l.bias]?.size !== l.out) throw new RangeError(`layer ${i}: bias ${l.bias} is not ${l.out} values`);
      shape = [l.out];
    } else if (l.op === 'reshape') {
      if (size(l.shape) !== size(shape)) throw new RangeError(`layer ${i}: cannot reshape [${shape}] to [${l.shape}]`);
      shape = l.shape;
    }
  }
  if (size(shape) !== size(plan.output.shape)) throw new RangeError(`the layers end at [${shape}], the output is [${plan.output.shape}]`);
}

/** Total parameter elements: the length of the shared parameter vector. */
export function paramCount(plan: SmpcPlan): number {
  return plan.params.reduce((s, p) => s + p.size, 0);
}

export function rowSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The dealt randomness an evaluation of `batch` rows uses, step by step. */
export function scheduleOf(plan: SmpcPlan, batch: number): Step[] {
  const steps: Step[] = [];
  let width = rowSize(plan.input.shape);
  for (const l of plan.layers) {
    if (l.op === 'linear') { steps.push({ kind: 'matmul', m: batch, k: l.in, n: l.out }); width = l.out; }
    else if (l.op === 'relu') steps.push({ kind: 'relu', n: batch * width });
    else width = rowSize(l.shape);
  }
  return steps;
}
