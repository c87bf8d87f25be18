// Shape inference for the operators a plan can contain. Dims stay symbolic where the batch size is
// unknown; an operator whose output shape cannot be known here gets a null (unknown) shape, which is
// only a problem if a gradient rule downstream needs it.

import { gridError } from '../../core/errors';
import { attrInt, attrInts, attrString } from '../onnx/model';
import type { OnnxNode } from '../onnx/types';
import { broadcastShapes, divDims, mulDims, addDims, type Dim, type GraphBuilder, type Shape } from './ir';

export function nodeLabel(node: OnnxNode): string {
  return `${node.opType} node "${node.name ?? node.output?.[0] ?? ''}"`;
}

export function constInts(b: GraphBuilder, name: string | undefined): number[] | undefined {
  if (!name) return undefined;
  const t = b.consts.get(name);
  if (!t || (t.dtype !== 'int64' && t.dtype !== 'int32')) return undefined;
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);

export interface SpatialParams { kernel: number[]; strides: number[]; pads: number[]; dilations: number[] }

/** Kernel, strides, explicit pads (auto_pad resolved) and dilations of a Conv or pooling node. */
export function spatialParams(node: OnnxNode, x: Dim[], kernel: number[]): SpatialParams {
  const k = kernel.length;
  const strides = attrInts(node, 'strides') ?? new Array(k).fill(1);
  const dilations = attrInts(node, 'dilations') ?? new Array(k).fill(1);
  let pads = attrInts(node, 'pads') ?? new Array(2 * k).fill(0);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  if (autoPad === 'VALID') pads = new Array(2 * k).fill(0);
  else if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    pads = new Array(2 * k).fill(0);
    for (let i = 0; i < k; i++) {
      const inp = x[2 + i];
      if (typeof inp !== 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(node)}: auto_pad ${autoPad} needs static spatial dims`);
      const out = Math.ceil(inp / strides[i]!);
      const total = Math.max(0, (out - 1) * strides[i]! + (kernel[i]! - 1) * dilations[i]! + 1 - inp);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + k] = total - pads[i]!;
    }
  }
  return { kernel, strides, pads, dilations };
}

function spatialOut(node: OnnxNode, x: Shape, kernel: number[], channels: Dim, ceil = false): Shape {
  if (x === null) return null;
  const p = spatialParams(node, x, kernel);
  const out: Dim[] = [x[0]!, channels];
  for (let i = 0; i < kernel.length; i++) {
    const inp = x[2 + i]!;
    if (typeof inp !== 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(node)}: spatial dims must be static, got ${inp}`);
    const eff = (kernel[i]! - 1) * p.dilations[i]! + 1;
    const span = inp + p.pads[i]! + p.pads[i + kernel.length]! - eff;
    out.push((ceil ? Math.ceil(span / p.strides[i]!) : Math.floor(span / p.strides[i]!)) + 1);
  }
  return out;
}

/** The value of a small int64 tensor when known at build time: constant or symbolic shape arithmetic. */
function symbolicValue(b: GraphBuilder, name: string | undefined): { dims: Dim[]; scalar: boolean } | undefined {
  if (!name) return undefined;
  const sym = b.symbolic.get(name);
  if (sym) return sym;
  const t = b.consts.get(name);
  if (t && (t.dtype === 'int64' || t.dtype === 'int32') && t.data.length <= 16) return { dims: Array.from(t.data as ArrayLike<number | bigint>, Number), scalar: t.dims.length === 0 };
  return undefined;
}

/** What a symbolic rule sees of a node: its inputs, and a setter for the value of its first output. */
interface SymbolicContext {
  readonly b: GraphBuilder;
  readonly node: OnnxNode;
  readonly ins: readonly string[];
  readonly out: string;
  put(dims: Dim[], scalar?: boolean): void;
}

/**
 * Shape arithmetic on int64 values, per operator, so a Reshape fed by it (PyTorch exports
 * Shape→Gather→Concat→Reshape) still has a known output shape. Other operators leave values unknown.
 */
const symbolicRules: Readonly<Record<string, (c: SymbolicContext) => void>> = {
  Shape: ({ b, node, ins, put }) => {
    const x = b.shape(ins[0]!);
    if (!x) return;
    const r = x.length;
    const start = normAxis(Math.max(-r, Math.min(r, attrInt(node, 'start', 0))), r);
    const end = normAxis(Math.max(-r, Math.min(r, attrInt(node, 'end', r))), r);
    put(x.slice(start, end));
  },
  Constant: ({ b, out, put }) => {
    const t = b.consts.get(out);
    if (t && (t.dtype === 'int64' || t.dtype === 'int32') && t.data.length <= 16) put(Array.from(t.data as ArrayLike<number | bigint>, Number), t.dims.length === 0);
  },
  Gather: ({ b, node, ins, put }) => {
    const data = symbolicValue(b, ins[0]), idx = symbolicValue(b, ins[1]);
    if (!data || !idx || attrInt(node, 'axis', 0) !== 0) return;
    const picked = idx.dims.map((i) => data.dims[normAxis(Number(i), data.dims.length)]!);
    put(picked, idx.scalar);
  },
  Unsqueeze: ({ b, ins, put }) => {
    const v = symbolicValue(b, ins[0]);
    if (v?.scalar) put(v.dims);
  },
  Squeeze: ({ b, ins, put }) => {
    const v = symbolicValue(b, ins[0]);
    if (v && v.dims.length === 1) put(v.dims, true);
  },
  Concat: ({ b, ins, put }) => {
    const vs = ins.map((i) => symbolicValue(b, i));
    if (vs.every((v) => v && !v.scalar)) put(vs.flatMap((v) => v!.dims));
  },
  Cast: passSymbolic,
  Identity: passSymbolic,
  Mul: ({ b, ins, put }) => {
    const [x, y] = [symbolicValue(b, ins[0]), symbolicValue(b, ins[1])];
    if (x?.scalar && y?.scalar) put([mulDims([x.dims[0]!, y.dims[0]!])], true);
  },
};

function passSymbolic({ b, ins, put }: SymbolicContext): void {
  const v = symbolicValue(b, ins[0]);
  if (v) put(v.dims, v.scalar);
}

function propagateSymbolic(b: GraphBuilder, node: OnnxNode): void {
  const out = node.output?.[0];
  if (!out) return;
  const rule = Object.hasOwn(symbolicRules, node.opType ?? '') ? symbolicRules[node.opType!] : undefined;
  rule?.({ b, node, ins: node.input ?? [], out, put: (dims, scalar = false) => b.symbolic.set(out, { dims, scalar }) });
}

/** What a shape rule sees of a node: its inputs' shapes (null where unknown or absent) and a setter for its outputs'. */
interface ShapeContext {
  readonly b: GraphBuilder;
  readonly node: OnnxNode;
  readonly ins: readonly Shape[];
  /** The first input's shape, and its rank (0 when unknown). */
  readonly x: Shape;
  readonly rank: number;
  readonly outs: readonly string[];
  set(s: Shape, i?: number, elemType?: number): void;
}

type ShapeRule = (c: ShapeContext) => void;

const INT64 = 7;

/** numpy broadcast of all inputs. */
const broadcast: ShapeRule = ({ node, ins, set }) => {
  let s: Shape = ins[0] ?? null;
  for (let i = 1; i < ins.length; i++) s = broadcastShapes(s, ins[i] ?? null, nodeLabel(node));
  set(s);
};

/** The output has the first input's shape. */
const likeInput: ShapeRule = ({ x, set }) => set(x);

const conv: ShapeRule = ({ node, ins, x, set }) => {
  const w = ins[1];
  if (!x || !w) { set(null); return; }
  const kernel = (attrInts(node, 'kernel_shape') ?? w.slice(2)) as number[];
  set(spatialOut(node, x, kernel, w[0]!));
};

const pool: ShapeRule = ({ node, x, set }) => {
  if (!x) { set(null); return; }
  const kernel = attrInts(node, 'kernel_shape')!;
  const s = spatialOut(node, x, kernel, x[1]!, attrInt(node, 'ceil_mode', 0) === 1);
  set(s);
  set(s, 1, INT64);
};

const globalPool: ShapeRule = ({ x, set }) => set(x ? [x[0]!, x[1]!, ...x.slice(2).map(() => 1)] : null);

const reduce: ShapeRule = ({ b, node, x, rank, set }) => {
  if (!x) { set(null); return; }
  // ReduceSum takes its axes as an input (opset 13 on); the others have theirs as an attribute (normalizeNode sees to it).
  if (node.opType === 'ReduceSum' && node.input?.[1] && !constInts(b, node.input[1])) { set(null); return; }
  const axes = (node.opType === 'ReduceSum' && node.input?.[1] ? constInts(b, node.input[1]) : attrInts(node, 'axes'))?.map((a) => normAxis(a, rank))
    ?? x.map((_, i) => i);
  const keep = attrInt(node, 'keepdims', 1);
  set(keep ? x.map((d, i) => (axes.includes(i) ? 1 : d)) : x.filter((_, i) => !axes.includes(i)));
};

/** Expand and ConstantOfShape: the shape held by their shape input, when a Shape node produced it. */
const shapeFromShapeInput: ShapeRule = ({ b, node, set }) => {
  const src = b.shapeSource.get(node.input?.[node.opType === 'Expand' ? 1 : 0] ?? '');
  set(src !== undefined ? b.shape(src) : null);
};

function rulesFor(ops: readonly string[], rule: ShapeRule): Record<string, ShapeRule> {
  return Object.fromEntries(ops.map((op) => [op, rule]));
}

/** Output shapes per operator type. An operator not listed gets unknown (null) output shapes. */
const shapeRules: Readonly<Record<string, ShapeRule>> = {
  ...rulesFor(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Where', 'Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'And', 'Sum'], broadcast),
  ...rulesFor([
    'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Softmax', 'LogSoftmax', 'Identity', 'Neg', 'Exp', 'Log', 'Sqrt', 'Reciprocal',
    'Cast', 'Abs', 'Elu', 'Selu', 'RandomUniformLike', 'Not', 'Clip', 'Sign', 'CastLike', 'ScatterND',
  ], likeInput),
  ...rulesFor(['MaxPool', 'AveragePool'], pool),
  ...rulesFor(['GlobalAveragePool', 'GlobalMaxPool'], globalPool),
  ...rulesFor(['ReduceMean', 'ReduceSum', 'ReduceMax'], reduce),
  ...rulesFor(['Expand', 'ConstantOfShape'], shapeFromShapeInput),
  Conv: conv,

  Split: ({ b, node, x, rank, outs, set }) => {
    const axis = normAxis(attrInt(node, 'axis', 0), rank);
    let sizes = constInts(b, node.input?.[1]) ?? attrInts(node, 'split');
    const whole = x?.[axis];
    if (!sizes && typeof whole === 'number' && whole % outs.length === 0) sizes = outs.map(() => whole / outs.length);
    outs.forEach((_, i) => set(x && sizes ? x.map((d, k) => (k === axis ? sizes[i]! : d)) : null, i));
  },

  Gather: ({ node, ins, set }) => {
    const data = ins[0], idx = ins[1];
    if (!data || !idx) { set(null); return; }
    const axis = normAxis(attrInt(node, 'axis', 0), data.length);
    set([...data.slice(0, axis), ...idx, ...data.slice(axis + 1)]);
  },

  Pad: ({ b, node, x, rank, set }) => {
    const pads = constInts(b, node.input?.[1]);
    if (!x || !pads) { set(null); return; }
    set(x.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + rank]! : pads[i]! + pads[i + rank]! === 0 ? d : `${d}+${pads[i]! + pads[i + rank]!}`)));
  },

  Dropout: ({ x, set }) => {
    set(x);
    set(x, 1);
  },

  Gemm: ({ node, ins, set }) => {
    const a = ins[0], w = ins[1];
    if (!a || !w) { set(null); return; }
    const tA = attrInt(node, 'transA', 0), tB = attrInt(node, 'transB', 0);
    set([tA ? a[1]! : a[0]!, tB ? w[0]! : w[1]!]);
  },

  MatMul: ({ node, ins, set }) => {
    const a = ins[0], w = ins[1];
    if (!a || !w) { set(null); return; }
    // numpy matmul: a 1-D left operand is a row, a 1-D right operand a column, both dropped again.
    const a2 = a.length === 1 ? [1, a[0]!] : a, w2 = w.length === 1 ? [w[0]!, 1] : w;
    const batch = broadcastShapes(a2.slice(0, -2), w2.slice(0, -2), nodeLabel(node))!;
    const out: Dim[] = [...batch];
    if (a.length > 1) out.push(a2[a2.length - 2]!);
    if (w.length > 1) out.push(w2[w2.length - 1]!);
    set(out);
  },

  Reshape: ({ b, node, x, set }) => {
    const src = b.shapeSource.get(node.input?.[1] ?? '');
    if (src !== undefined) { set(b.shape(src)); return; }
    const target = symbolicValue(b, node.input?.[1])?.dims;
    if (!target) { set(null); return; }
    const allowZero = attrInt(node, 'allowzero', 0);
    const out: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? (x?.[i] ?? 0) : d));
    const neg = out.indexOf(-1);
    if (neg >= 0) {
      if (!x) { set(null); return; }
      const known = mulDims(out.filter((_, i) => i !== neg));
      const rest = divDims(mulDims(x), known);
      if (rest === null) throw gridError('INVALID_MODEL', `${nodeLabel(node)}: cannot reshape [${x.join(', ')}] to [${target.join(', ')}]`);
      out[neg] = rest;
    }
    set(out);
  },

  Flatten: ({ node, x, rank, set }) => {
    if (!x) { set(null); return; }
    const axis = normAxis(attrInt(node, 'axis', 1), rank);
    set([mulDims(x.slice(0, axis)), mulDims(x.slice(axis))]);
  },

  Transpose: ({ node, x, rank, set }) => {
    if (!x) { set(null); return; }
    const perm = attrInts(node, 'perm') ?? x.map((_, i) => rank - 1 - i);
    set(perm.map((p) => x[p]!));
  },

  Concat: ({ node, ins, x, rank, set }) => {
    if (ins.some((s) => s === null)) { set(null); return; }
    const axis = normAxis(attrInt(node, 'axis', 0), rank);
    const out = [...x!];
    out[axis] = ins.slice(1).reduce<Dim>((acc, s) => addDims(acc, s![axis]!), x![axis]!);
    set(out);
  },

  Squeeze: ({ b, node, x, rank, set }) => {
    if (!x) { set(null); return; }
    const axes = (constInts(b, node.input?.[1]) ?? attrInts(node, 'axes'))?.map((a) => normAxis(a, rank));
    set(axes ? x.filter((_, i) => !axes.includes(i)) : x.filter((d) => d !== 1));
  },

  Unsqueeze: ({ b, node, x, rank, set }) => {
    if (!x) { set(null); return; }
    const axes = constInts(b, node.input?.[1]) ?? attrInts(node, 'axes');
    if (!axes) { set(null); return; }
    const r = rank + axes.length;
    const norm = axes.map((a) => normAxis(a, r));
    const out: Dim[] = [];
    let j = 0;
    for (let i = 0; i < r; i++) out.push(norm.includes(i) ? 1 : x[j++]!);
    set(out);
  },

  Shape: ({ b, node, x, rank, set }) => {
    const start = attrInt(node, 'start', 0), end = attrInt(node, 'end', rank);
    const len = x ? Math.max(0, normAxis(Math.min(end, rank), rank) - normAxis(Math.max(start, -rank), rank)) : 0;
    set(x ? [len] : null, 0, INT64);
    // A whole shape: Reshape/Expand/ConstantOfShape fed by it take the shape of this node's input.
    if (start === 0 && end >= rank && node.output?.[0]) b.shapeSource.set(node.output[0], node.input![0]!);
  },

  Size: ({ set }) => set([], 0, INT64),

  ArgMax: ({ node, x, rank, set }) => {
    if (!x) { set(null); return; }
    const axis = normAxis(attrInt(node, 'axis', 0), rank);
    set(attrInt(node, 'keepdims', 1) ? x.map((d, i) => (i === axis ? 1 : d)) : x.filter((_, i) => i !== axis), 0, INT64);
  },

  Slice: ({ b, node, x, rank, set }) => {
    // Only what gradient rules need: slices of static dims with constant bounds.
    const starts = constInts(b, node.input?.[1]), ends = constInts(b, node.input?.[2]);
    const axes = constInts(b, node.input?.[3]) ?? starts?.map((_, i) => i);
    if (!x || !starts || !ends || !axes) { set(null); return; }
    const out = [...x];
    axes.forEach((a, i) => {
      const ax = normAxis(a, rank);
      const d = x[ax];
      if (typeof d !== 'number') { out[ax] = `slice${i}`; return; }
      const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
      out[ax] = Math.max(0, clamp(ends[i]!) - clamp(starts[i]!));
    });
    set(out);
  },

  ConvTranspose: ({ node, ins, x, set }) => {
    const w = ins[1];
    if (!x || !w) { set(null); return; }
    const kernel = (attrInts(node, 'kernel_shape') ?? w.slice(2)) as number[];
    const k = kernel.length;
    const strides = attrInts(node, 'strides') ?? new Array(k).fill(1);
    const dil = attrInts(node, 'dilations') ?? new Array(k).fill(1);
    const pads = attrInts(node, 'pads') ?? new Array(2 * k).fill(0);
    const outPad = attrInts(node, 'output_padding') ?? new Array(k).fill(0);
    const group = attrInt(node, 'group', 1);
    const out: Dim[] = [x[0]!, typeof w[1] === 'number' ? w[1] * group : mulDims([w[1]!, group])];
    for (let i = 0; i < k; i++) {
      const inp = x[2 + i];
      if (typeof inp !== 'number') { set(null); return; }
      out.push(strides[i]! * (inp - 1) + outPad[i]! + (kernel[i]! - 1) * dil[i]! + 1 - pads[i]! - pads[i + k]!);
    }
    set(out);
  },

  // Its value is known (b.consts) but its shape is left to whoever reads the value.
  Constant: ({ set }) => set(null),
};

/** Unknown operators: every output's shape unknown. */
const unknownShapes: ShapeRule = ({ outs, set }) => {
  for (let i = 0; i < outs.length; i++) set(null, i);
};

/** Sets the shapes of `node`'s outputs from its inputs' shapes, by the rule for its operator type. */
export function inferShapes(b: GraphBuilder, node: OnnxNode): void {
  propagateSymbolic(b, node);
  const ins = (node.input ?? []).map((n) => (n === '' ? null : b.shape(n)));
  const x = ins[0] ?? null;
  const outs = node.output ?? [];
  const set = (s: Shape, i = 0, elemType?: number) => { if (outs[i]) b.setShape(outs[i]!, s, elemType); };
  const rule = Object.hasOwn(shapeRules, node.opType ?? '') ? shapeRules[node.opType!]! : unknownShapes;
  rule({ b, node, ins, x, rank: x?.length ?? 0, outs, set });
}
