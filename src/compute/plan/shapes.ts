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

/** Tracks shape arithmetic on int64 values so a Reshape fed by it still has a known output shape. */
function propagateSymbolic(b: GraphBuilder, node: OnnxNode): void {
  const out = node.output?.[0];
  if (!out) return;
  const ins = node.input ?? [];
  const put = (dims: Dim[], scalar = false) => b.symbolic.set(out, { dims, scalar });
  switch (node.opType) {
    case 'Shape': {
      const x = b.shape(ins[0]!);
      if (!x) return;
      const r = x.length;
      const start = normAxis(Math.max(-r, Math.min(r, attrInt(node, 'start', 0))), r);
      const end = normAxis(Math.max(-r, Math.min(r, attrInt(node, 'end', r))), r);
      put(x.slice(start, end));
      return;
    }
    case 'Constant': {
      const t = b.consts.get(out);
      if (t && (t.dtype === 'int64' || t.dtype === 'int32') && t.data.length <= 16) put(Array.from(t.data as ArrayLike<number | bigint>, Number), t.dims.length === 0);
      return;
    }
    case 'Gather': {
      const data = symbolicValue(b, ins[0]), idx = symbolicValue(b, ins[1]);
      if (!data || !idx || attrInt(node, 'axis', 0) !== 0) return;
      const picked = idx.dims.map((i) => data.dims[normAxis(Number(i), data.dims.length)]!);
      put(picked, idx.scalar);
      return;
    }
    case 'Unsqueeze': {
      const v = symbolicValue(b, ins[0]);
      if (v?.scalar) put(v.dims);
      return;
    }
    case 'Squeeze': {
      const v = symbolicValue(b, ins[0]);
      if (v && v.dims.length === 1) put(v.dims, true);
      return;
    }
    case 'Concat': {
      const vs = ins.map((i) => symbolicValue(b, i));
      if (vs.every((v) => v && !v.scalar)) put(vs.flatMap((v) => v!.dims));
      return;
    }
    case 'Cast': case 'Identity': {
      const v = symbolicValue(b, ins[0]);
      if (v) put(v.dims, v.scalar);
      return;
    }
    case 'Mul': {
      const [x, y] = [symbolicValue(b, ins[0]), symbolicValue(b, ins[1])];
      if (x?.scalar && y?.scalar) put([mulDims([x.dims[0]!, y.dims[0]!])], true);
      return;
    }
  }
}

/** Sets the shapes of `node`'s outputs from its inputs' shapes. */
export function inferShapes(b: GraphBuilder, node: OnnxNode): void {
  propagateSymbolic(b, node);
  const ins = (node.input ?? []).map((n) => (n === '' ? null : b.shape(n)));
  const x = ins[0] ?? null;
  const outs = node.output ?? [];
  const set = (s: Shape, i = 0, elemType?: number) => { if (outs[i]) b.setShape(outs[i]!, s, elemType); };
  const rank = x?.length ?? 0;
  switch (node.opType) {
    case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Where': case 'Equal': case 'Greater': case 'Less':
    case 'GreaterOrEqual': case 'LessOrEqual': case 'And': {
      let s: Shape = ins[0] ?? null;
      for (let i = 1; i < ins.length; i++) s = broadcastShapes(s, ins[i] ?? null, nodeLabel(node));
      set(s);
      break;
    }
    case 'Sum': {
      let s: Shape = ins[0] ?? null;
      for (let i = 1; i < ins.length; i++) s = broadcastShapes(s, ins[i] ?? null, nodeLabel(node));
      set(s);
      break;
    }
    case 'Split': {
      const axis = normAxis(attrInt(node, 'axis', 0), rank);
      let sizes = constInts(b, node.input?.[1]) ?? attrInts(node, 'split');
      const whole = x?.[axis];
      if (!sizes && typeof whole === 'number' && whole % outs.length === 0) sizes = outs.map(() => whole / outs.length);
      outs.forEach((_, i) => set(x && sizes ? x.map((d, k) => (k === axis ? sizes[i]! : d)) : null, i));
      break;
    }
    case 'Gather': {
      const data = ins[0], idx = ins[1];
      if (!data || !idx) { set(null); break; }
      const axis = normAxis(attrInt(node, 'axis', 0), data.length);
      set([...data.slice(0, axis), ...idx, ...data.slice(axis + 1)]);
      break;
    }
    case 'ScatterND':
      set(x);
      break;
    case 'Pad': {
      const pads = constInts(b, node.input?.[1]);
      if (!x || !pads) { set(null); break; }
      set(x.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + rank]! : pads[i]! + pads[i + rank]! === 0 ? d : `${d}+${pads[i]! + pads[i + rank]!}`)));
      break;
    }
    case 'Clip': case 'Sign': case 'CastLike':
      set(x);
      break;
    case 'Relu': case 'LeakyRelu': case 'Sigmoid': case 'Tanh': case 'Softmax': case 'LogSoftmax': case 'Identity':
    case 'Neg': case 'Exp': case 'Log': case 'Sqrt': case 'Reciprocal': case 'Cast': case 'Abs': case 'Elu': case 'Selu':
    case 'RandomUniformLike': case 'Not':
      set(x);
      break;
    case 'Dropout':
      set(x);
      set(x, 1);
      break;
    case 'Gemm': {
      const a = ins[0], w = ins[1];
      if (!a || !w) { set(null); break; }
      const tA = attrInt(node, 'transA', 0), tB = attrInt(node, 'transB', 0);
      set([tA ? a[1]! : a[0]!, tB ? w[0]! : w[1]!]);
      break;
    }
    case 'MatMul': {
      const a = ins[0], w = ins[1];
      if (!a || !w) { set(null); break; }
      // numpy matmul: a 1-D left operand is a row, a 1-D right operand a column, both dropped again.
      const a2 = a.length === 1 ? [1, a[0]!] : a, w2 = w.length === 1 ? [w[0]!, 1] : w;
      const batch = broadcastShapes(a2.slice(0, -2), w2.slice(0, -2), nodeLabel(node))!;
      const out: Dim[] = [...batch];
      if (a.length > 1) out.push(a2[a2.length - 2]!);
      if (w.length > 1) out.push(w2[w2.length - 1]!);
      set(out);
      break;
    }
    case 'Reshape': {
      const src = b.shapeSource.get(node.input?.[1] ?? '');
      if (src !== undefined) { set(b.shape(src)); break; }
      const target = symbolicValue(b, node.input?.[1])?.dims;
      if (!target) { set(null); break; }
      const allowZero = attrInt(node, 'allowzero', 0);
      const out: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? (x?.[i] ?? 0) : d));
      const neg = out.indexOf(-1);
      if (neg >= 0) {
        if (!x) { set(null); break; }
        const known = mulDims(out.filter((_, i) => i !== neg));
        const rest = divDims(mulDims(x), known);
        if (rest === null) throw gridError('INVALID_MODEL', `${nodeLabel(node)}: cannot reshape [${x.join(', ')}] to [${target.join(', ')}]`);
        out[neg] = rest;
      }
      set(out);
      break;
    }
    case 'Flatten': {
      if (!x) { set(null); break; }
      const axis = normAxis(attrInt(node, 'axis', 1), rank);
      set([mulDims(x.slice(0, axis)), mulDims(x.slice(axis))]);
      break;
    }
    case 'Transpose': {
      if (!x) { set(null); break; }
      const perm = attrInts(node, 'perm') ?? x.map((_, i) => rank - 1 - i);
      set(perm.map((p) => x[p]!));
      break;
    }
    case 'Concat': {
      if (ins.some((s) => s === null)) { set(null); break; }
      const axis = normAxis(attrInt(node, 'axis', 0), rank);
      const out = [...x!];
      out[axis] = ins.slice(1).reduce<Dim>((acc, s) => addDims(acc, s![axis]!), x![axis]!);
      set(out);
      break;
    }
    case 'Conv': {
      const w = ins[1];
      if (!x || !w) { set(null); break; }
      const kernel = (attrInts(node, 'kernel_shape') ?? w.slice(2)) as number[];
      set(spatialOut(node, x, kernel, w[0]!));
      break;
    }
    case 'MaxPool': case 'AveragePool': {
      if (!x) { set(null); break; }
      const kernel = attrInts(node, 'kernel_shape')!;
      const s = spatialOut(node, x, kernel, x[1]!, attrInt(node, 'ceil_mode', 0) === 1);
      set(s);
      set(s, 1, 7);
      break;
    }
    case 'GlobalAveragePool': case 'GlobalMaxPool':
      set(x ? [x[0]!, x[1]!, ...x.slice(2).map(() => 1)] : null);
      break;
    case 'ReduceMean': case 'ReduceSum': case 'ReduceMax': {
      if (!x) { set(null); break; }
      if (node.opType === 'ReduceSum' && node.input?.[1] && !constInts(b, node.input[1])) { set(null); break; }
      const axes = (node.opType === 'ReduceSum' && node.input?.[1] ? constInts(b, node.input[1]) : attrInts(node, 'axes'))?.map((a) => normAxis(a, rank))
        ?? x.map((_, i) => i);
      const keep = attrInt(node, 'keepdims', 1);
      set(keep ? x.map((d, i) => (axes.includes(i) ? 1 : d)) : x.filter((_, i) => !axes.includes(i)));
      break;
    }
    case 'Squeeze': {
      if (!x) { set(null); break; }
      const axes = (constInts(b, node.input?.[1]) ?? attrInts(node, 'axes'))?.map((a) => normAxis(a, rank));
      set(axes ? x.filter((_, i) => !axes.includes(i)) : x.filter((d) => d !== 1));
      break;
    }
    case 'Unsqueeze': {
      if (!x) { set(null); break; }
      const axes = constInts(b, node.input?.[1]) ?? attrInts(node, 'axes');
      if (!axes) { set(null); break; }
      const r = rank + axes.length;
      const norm = axes.map((a) => normAxis(a, r));
      const out: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) out.push(norm.includes(i) ? 1 : x[j++]!);
      set(out);
      break;
    }
    case 'Shape': {
      const start = attrInt(node, 'start', 0), end = attrInt(node, 'end', rank);
      const len = x ? Math.max(0, normAxis(Math.min(end, rank), rank) - normAxis(Math.max(start, -rank), rank)) : 0;
      set(x ? [len] : null, 0, 7);
      if (start === 0 && end >= rank && node.output?.[0]) b.shapeSource.set(node.output[0], node.input![0]!);
      break;
    }
    case 'Size':
      set([], 0, 7);
      break;
    case 'Expand': case 'ConstantOfShape': {
      const src = b.shapeSource.get(node.input?.[node.opType === 'Expand' ? 1 : 0] ?? '');
      set(src !== undefined ? b.shape(src) : null);
      break;
    }
    case 'ArgMax': {
      if (!x) { set(null); break; }
      const axis = normAxis(attrInt(node, 'axis', 0), rank);
      set(attrInt(node, 'keepdims', 1) ? x.map((d, i) => (i === axis ? 1 : d)) : x.filter((_, i) => i !== axis), 0, 7);
      break;
    }
    case 'Slice': {
      // Only what gradient rules need: slices of static dims with constant bounds.
      const starts = constInts(b, node.input?.[1]), ends = constInts(b, node.input?.[2]);
      const axes = constInts(b, node.input?.[3]) ?? starts?.map((_, i) => i);
      if (!x || !starts || !ends || !axes) { set(null); break; }
      const out = [...x];
      axes.forEach((a, i) => {
        const ax = normAxis(a, rank);
        const d = x[ax];
        if (typeof d !== 'number') { out[ax] = `slice${i}`; return; }
        const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
        out[ax] = Math.max(0, clamp(ends[i]!) - clamp(starts[i]!));
      });
      set(out);
      break;
    }
    case 'ConvTranspose': {
      const w = ins[1];
      if (!x || !w) { set(null); break; }
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
      break;
    }
    case 'Constant':
      set(null);
      break;
    default:
      for (let i = 0; i < outs.length; i++) set(null, i);
  }
}
