// An ONNX model read as a chain of operators the share holders can evaluate on shares. The plan (the
// architecture: operators and shapes) is public to the share holders; the parameters are not, and are
// returned apart for the owner to encode and share. A model with any other operator is refused here,
// before anything is shared.

import { gridError } from '../../core/errors';
import { attrInt, attrInts, attrFloat, attrString, decodeModel, graphFeedInputs, tensorFromProto } from '../onnx';
import { slide, tournamentRounds } from './conv';
import type { OnnxNode } from '../onnx';
import type { Step } from './correlations';
import { transpose } from './ring';

export type SmpcLayer =
  /** x [batch, in] · W [in, out] (+ bias [out]); W and bias index plan.params. */
  | { op: 'linear'; in: number; out: number; weight: number; bias?: number }
  | { op: 'relu' }
  /** Per-row shape change (Flatten, Reshape): no computation on shares. */
  | { op: 'reshape'; shape: number[] }
  /** x [batch, C, H, W] ⊛ W → [batch, out, oh, ow]; W laid out [C·kh·kw, out] (im2col order). */
  | { op: 'conv'; in: number[]; out: number; kernel: number[]; pads: number[]; strides: number[]; weight: number; bias?: number }
  /** Non-overlapping or overlapping windows without padding. */
  | { op: 'maxpool' | 'avgpool'; in: number[]; kernel: number[]; strides: number[] };

export interface SmpcPlan {
  input: { name: string; shape: number[] };
  output: { name: string; shape: number[] };
  layers: SmpcLayer[];
  /** Parameter sizes, in the order of the shared parameter vector. */
  params: { name: string; size: number }[];
}

export const SUPPORTED_OPERATORS = ['Gemm', 'MatMul', 'Conv', 'Add', 'Relu', 'MaxPool', 'AveragePool', 'Flatten', 'Reshape', 'Identity', 'Dropout'] as const;

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
      const shapeInit = node.input?.[1] === undefined ? undefined : inits.get(node.input[1]);
      const target = shapeInit === undefined ? undefined : tensorFromProto(shapeInit);
      if (target === undefined || target.dtype !== 'int64') throw unsupported(`${label} takes its shape from a computation; only a constant int64 shape is supported`);
      const want = Array.from(target.data as BigInt64Array, Number);
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
    } else if (op === 'Conv') {
      if (shape.length !== 3) throw unsupported(`${label} takes [batch, ${shape.join(', ')}]; only 2-D convolution of [batch, C, H, W] is supported`);
      const w = initializer(node, node.input?.[1]);
      const [outC, inC, kh, kw] = w.dims as [number, number, number, number];
      if (w.dims.length !== 4 || inC !== shape[0]) throw unsupported(`${label} has a weight [${w.dims}] for ${shape[0]} input channels`);
      if (attrInt(node, 'group', 1) !== 1 || (attrInts(node, 'dilations') ?? [1, 1]).some((d) => d !== 1) || attrString(node, 'auto_pad', 'NOTSET') !== 'NOTSET') {
        throw unsupported(`${label} uses groups, dilations or auto_pad; only plain convolution is supported`);
      }
      const pads = attrInts(node, 'pads') ?? [0, 0, 0, 0];
      const strides = attrInts(node, 'strides') ?? [1, 1];
      const k = inC * kh * kw;
      const weight = param(node.input![1]!, transpose(w.data, outC, k));
      let bias: number | undefined;
      if (node.input?.[2]) {
        const b = initializer(node, node.input[2]);
        if (b.data.length !== outC) throw unsupported(`${label} has a bias of ${b.data.length} values for ${outC} channels`);
        bias = param(node.input[2], b.data);
      }
      const inShape = shape;
      shape = [outC, slide(shape[1]!, kh, pads[0]!, pads[2]!, strides[0]!), slide(shape[2]!, kw, pads[1]!, pads[3]!, strides[1]!)];
      if (shape[1]! < 1 || shape[2]! < 1) throw unsupported(`${label} leaves no output`);
      layers.push({ op: 'conv', in: inShape, out: outC, kernel: [kh, kw], pads, strides, weight, ...(bias !== undefined && { bias }) });
    } else if (op === 'MaxPool' || op === 'AveragePool') {
      if (shape.length !== 3) throw unsupported(`${label} takes [batch, ${shape.join(', ')}]; only 2-D pooling of [batch, C, H, W] is supported`);
      const kernel = attrInts(node, 'kernel_shape') ?? [];
      const strides = attrInts(node, 'strides') ?? [1, 1];
      if (kernel.length !== 2 || (attrInts(node, 'pads') ?? [0, 0, 0, 0]).some((p) => p !== 0) || attrInt(node, 'ceil_mode', 0) !== 0 || (attrInts(node, 'dilations') ?? [1, 1]).some((d) => d !== 1) || attrString(node, 'auto_pad', 'NOTSET') !== 'NOTSET') {
        throw unsupported(`${label} uses padding, ceil_mode, dilations or a non-2-D kernel; only unpadded 2-D pooling is supported`);
      }
      const inShape = shape;
      shape = [shape[0]!, slide(shape[1]!, kernel[0]!, 0, 0, strides[0]!), slide(shape[2]!, kernel[1]!, 0, 0, strides[1]!)];
      layers.push({ op: op === 'MaxPool' ? 'maxpool' : 'avgpool', in: inShape, kernel, strides });
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
    } else if (l.op === 'conv' || l.op === 'maxpool' || l.op === 'avgpool') {
      if (l.in.length !== 3 || l.in.some((d, k) => d !== shape[k]) || shape.length !== 3) throw new RangeError(`layer ${i}: ${l.op} takes [${l.in}], gets [${shape}]`);
      shape = outShape(l);
      if (shape.some((d) => !Number.isInteger(d) || d < 1)) throw new RangeError(`layer ${i}: ${l.op} leaves no output`);
      if (l.op === 'conv' && plan.params[l.weight]?.size !== l.in[0]! * l.kernel[0]! * l.kernel[1]! * l.out) throw new RangeError(`layer ${i}: conv weight ${l.weight} has the wrong size`);
      if (l.op === 'conv' && l.bias !== undefined && plan.params[l.bias]?.size !== l.out) throw new RangeError(`layer ${i}: bias ${l.bias} is not ${l.out} values`);
    }
  }
  if (size(shape) !== size(plan.output.shape)) throw new RangeError(`the layers end at [${shape}], the output is [${plan.output.shape}]`);
}

/** Per-row output shape of a conv or pooling layer. */
export function outShape(l: Extract<SmpcLayer, { op: 'conv' | 'maxpool' | 'avgpool' }>): number[] {
  const pads = l.op === 'conv' ? l.pads : [0, 0, 0, 0];
  return [l.op === 'conv' ? l.out : l.in[0]!, slide(l.in[1]!, l.kernel[0]!, pads[0]!, pads[2]!, l.strides[0]!), slide(l.in[2]!, l.kernel[1]!, pads[1]!, pads[3]!, l.strides[1]!)];
}

/** The parameter indices of the weights that products multiply by (masked once per model), in layer order. */
export function weightIndices(plan: SmpcPlan): number[] {
  return plan.layers.flatMap((l) => (l.op === 'linear' || l.op === 'conv' ? [l.weight] : []));
}

/** Total parameter elements: the length of the shared parameter vector. */
export function paramCount(plan: SmpcPlan): number {
  return plan.params.reduce((s, p) => s + p.size, 0);
}

export function rowSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The dealt randomness an evaluation of `batch` rows uses, step by step; `masked`: weights masked once per model (masks.ts). */
export function scheduleOf(plan: SmpcPlan, batch: number, masked = false): Step[] {
  const steps: Step[] = [];
  let width = rowSize(plan.input.shape);
  for (const l of plan.layers) {
    if (l.op === 'linear') { steps.push({ kind: 'matmul', m: batch, k: l.in, n: l.out, ...(masked && { mask: l.weight }) }); width = l.out; }
    else if (l.op === 'relu') steps.push({ kind: 'relu', n: batch * width });
    else if (l.op === 'reshape') width = rowSize(l.shape);
    else if (l.op === 'conv') {
      const [, oh, ow] = outShape(l) as [number, number, number];
      steps.push({ kind: 'matmul', m: batch * oh * ow, k: l.in[0]! * l.kernel[0]! * l.kernel[1]!, n: l.out, ...(masked && { mask: l.weight }) });
      width = l.out * oh * ow;
    } else {
      width = rowSize(outShape(l));
      if (l.op === 'maxpool') for (const pairs of tournamentRounds(l.kernel[0]! * l.kernel[1]!)) steps.push({ kind: 'relu', n: batch * width * pairs });
    }
  }
  return steps;
}
