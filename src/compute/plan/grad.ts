// Reverse-mode gradient rules: for one forward node, given the gradients of its outputs, emit the ONNX
// nodes computing the gradients of its inputs. Broadcast inputs get their gradient summed back to
// their own shape.

import { gridError } from '../../core/errors';
import { attrFloat, attrInt, attrInts } from '../onnx/model';
import { tensorToProto } from '../onnx/tensor-proto';
import type { OnnxNode } from '../onnx/types';
import { describeShape, sameDim, type Dim, type GraphBuilder } from './ir';
import { nodeLabel, spatialParams } from './shapes';

/** Gradients of a node's inputs (undefined where none flows), from the gradients of its outputs. */
export type GradRule = (b: GraphBuilder, node: OnnxNode, dy: (string | undefined)[], need: boolean[]) => (string | undefined)[];

const inputs = (node: OnnxNode) => node.input ?? [];
const outputs = (node: OnnxNode) => node.output ?? [];

function requireShape(b: GraphBuilder, node: OnnxNode, name: string, why: string): Dim[] {
  const s = b.shape(name);
  if (s === null) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(node)}: the shape of "${name}" is not known when the plan is built, and ${why}`);
  return s;
}

/**
 * The sum of the rows of a [N, C] gradient (a bias's), as ones[N]·g: onnxruntime's MatMul does it several
 * times faster than its ReduceSum over the leading axis (13 against 74 µs for [128, 512] at 2 threads).
 */
/** Per plan being built: the ones vector of each batch size sumRows has used, made once. */
const onesOf = new WeakMap<GraphBuilder, Map<string, string>>();

function sumRows(b: GraphBuilder, g: string, [n, c]: [Dim, Dim]): string {
  const made = onesOf.get(b) ?? new Map<string, string>();
  onesOf.set(b, made);
  let ones = made.get(String(n));
  if (ones === undefined) {
    const one = tensorToProto('', b.floatType === 'float32' ? { dtype: 'float32', dims: [1], data: new Float32Array([1]) } : { dtype: 'float64', dims: [1], data: new Float64Array([1]) });
    ones = typeof n === 'number' ? b.scalar(1, [n]) : b.op('ConstantOfShape', [b.op('Shape', [g], { start: 0, end: 1 })], { value: { tensor: one } });
    b.setShape(ones, [n], b.floatCode);
    made.set(String(n), ones);
  }
  const sum = b.op('MatMul', [ones, g]);
  b.setShape(sum, [c], b.floatCode);
  return sum;
}

/** Sums gradient `g` (of broadcast shape) back to the shape of `target`. */
export function reduceTo(b: GraphBuilder, node: OnnxNode, g: string, target: string): string {
  const gs = requireShape(b, node, g, 'its broadcast gradient needs it');
  const ts = requireShape(b, node, target, 'its broadcast gradient needs it');
  if (gs.length === ts.length && gs.every((d, i) => sameDim(d, ts[i]!))) return g;
  const lead = gs.length - ts.length;
  if (lead < 0) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(node)}: cannot sum a gradient of shape ${describeShape(gs)} back to ${describeShape(ts)}`);
  let out = g;
  if (lead === 1 && gs.length === 2 && sameDim(gs[1]!, ts[0]!)) out = sumRows(b, g, gs as [Dim, Dim]);
  else if (lead > 0) out = b.op('ReduceSum', [out, b.int64s(Array.from({ length: lead }, (_, i) => i))], { keepdims: 0 });
  const axes: number[] = [];
  let atRunTime = false;
  ts.forEach((d, i) => {
    const gd = gs[lead + i]!;
    if (d === 1 && gd !== 1) axes.push(i);
    else if (!sameDim(d, gd)) {
      if (typeof d === 'number' && typeof gd === 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(node)}: cannot sum a gradient of shape ${describeShape(gs)} back to ${describeShape(ts)}`);
      atRunTime = true;
    }
  });
  if (atRunTime) {
    // Sizes unknown until run time: sum the axes where the gradient's size differs from the target's.
    const differs = b.op('Not', [b.op('Equal', [b.op('Shape', [out]), b.op('Shape', [target])])]);
    const runAxes = b.op('Reshape', [b.op('NonZero', [differs]), b.int64s([-1])]);
    const summed = b.op('ReduceSum', [out, runAxes], { keepdims: 1, noop_with_empty_axes: 1 });
    return b.op('Reshape', [summed, b.op('Shape', [target])]);
  }
  if (axes.length) out = b.op('ReduceSum', [out, b.int64s(axes)], { keepdims: 1 });
  return out;
}

const rank = (b: GraphBuilder, node: OnnxNode, name: string) => requireShape(b, node, name, 'the gradient needs its rank').length;
const normAxis = (a: number, r: number) => (a < 0 ? a + r : a);

function swapLast2(r: number): number[] {
  const perm = Array.from({ length: r }, (_, i) => i);
  [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
  return perm;
}

function reshapeLike(b: GraphBuilder, g: string, like: string): string {
  return b.op('Reshape', [g, b.op('Shape', [like])]);
}

const rules: Record<string, GradRule> = {
  Identity: (_b, _n, dy) => [dy[0]],
  Add: (b, n, dy, need) => [need[0] ? reduceTo(b, n, dy[0]!, inputs(n)[0]!) : undefined, need[1] ? reduceTo(b, n, dy[0]!, inputs(n)[1]!) : undefined],
  Sub: (b, n, dy, need) => [need[0] ? reduceTo(b, n, dy[0]!, inputs(n)[0]!) : undefined, need[1] ? reduceTo(b, n, b.op('Neg', [dy[0]!]), inputs(n)[1]!) : undefined],
  Mul: (b, n, dy, need) => {
    const [x, y] = inputs(n) as [string, string];
    return [need[0] ? reduceTo(b, n, b.op('Mul', [dy[0]!, y]), x) : undefined, need[1] ? reduceTo(b, n, b.op('Mul', [dy[0]!, x]), y) : undefined];
  },
  Div: (b, n, dy, need) => {
    const [x, y] = inputs(n) as [string, string];
    const out = outputs(n)[0]!;
    return [
      need[0] ? reduceTo(b, n, b.op('Div', [dy[0]!, y]), x) : undefined,
      need[1] ? reduceTo(b, n, b.op('Neg', [b.op('Div', [b.op('Mul', [dy[0]!, out]), y])]), y) : undefined,
    ];
  },
  Neg: (b, _n, dy) => [b.op('Neg', [dy[0]!])],
  Exp: (b, n, dy) => [b.op('Mul', [dy[0]!, outputs(n)[0]!])],
  Log: (b, n, dy) => [b.op('Div', [dy[0]!, inputs(n)[0]!])],
  Sqrt: (b, n, dy) => [b.op('Div', [dy[0]!, b.op('Mul', [outputs(n)[0]!, b.scalar(2)])])],
  Reciprocal: (b, n, dy) => {
    const y = outputs(n)[0]!;
    return [b.op('Neg', [b.op('Mul', [dy[0]!, b.op('Mul', [y, y])])])];
  },
  // Masked by the output (y > 0 exactly where x > 0): the forward Gemm or Conv then feeds the Relu alone,
  // and onnxruntime fuses the two.
  Relu: (b, n, dy) => [b.op('Where', [b.op('Greater', [outputs(n)[0]!, b.scalar(0)]), dy[0]!, b.scalar(0)])],
  LeakyRelu: (b, n, dy) => {
    const alpha = attrFloat(n, 'alpha', 0.01);
    return [b.op('Where', [b.op('Greater', [inputs(n)[0]!, b.scalar(0)]), dy[0]!, b.op('Mul', [dy[0]!, b.scalar(alpha)])])];
  },
  Sigmoid: (b, n, dy) => {
    const y = outputs(n)[0]!;
    return [b.op('Mul', [dy[0]!, b.op('Mul', [y, b.op('Sub', [b.scalar(1), y])])])];
  },
  Tanh: (b, n, dy) => {
    const y = outputs(n)[0]!;
    return [b.op('Mul', [dy[0]!, b.op('Sub', [b.scalar(1), b.op('Mul', [y, y])])])];
  },
  Softmax: (b, n, dy) => {
    const y = outputs(n)[0]!;
    const axis = normAxis(attrInt(n, 'axis', -1), rank(b, n, y));
    const s = b.op('ReduceSum', [b.op('Mul', [dy[0]!, y]), b.int64s([axis])], { keepdims: 1 });
    return [b.op('Mul', [y, b.op('Sub', [dy[0]!, s])])];
  },
  LogSoftmax: (b, n, dy) => {
    const y = outputs(n)[0]!;
    const axis = normAxis(attrInt(n, 'axis', -1), rank(b, n, y));
    const s = b.op('ReduceSum', [dy[0]!, b.int64s([axis])], { keepdims: 1 });
    return [b.op('Sub', [dy[0]!, b.op('Mul', [b.op('Exp', [y]), s])])];
  },
  Reshape: (b, n, dy) => [reshapeLike(b, dy[0]!, inputs(n)[0]!)],
  Flatten: (b, n, dy) => [reshapeLike(b, dy[0]!, inputs(n)[0]!)],
  Squeeze: (b, n, dy) => [reshapeLike(b, dy[0]!, inputs(n)[0]!)],
  Unsqueeze: (b, n, dy) => [reshapeLike(b, dy[0]!, inputs(n)[0]!)],
  Cast: (b, n, dy) => {
    const from = b.values.get(inputs(n)[0]!)?.elemType ?? b.floatCode;
    return [from === b.floatCode ? dy[0] : b.op('Cast', [dy[0]!], { to: from })];
  },
  Transpose: (b, n, dy) => {
    const r = rank(b, n, inputs(n)[0]!);
    const perm = attrInts(n, 'perm') ?? Array.from({ length: r }, (_, i) => r - 1 - i);
    const inv = new Array<number>(r);
    perm.forEach((p, i) => { inv[p] = i; });
    return [b.op('Transpose', [dy[0]!], { perm: inv })];
  },
  Concat: (b, n, dy, need) => {
    const ins = inputs(n);
    const axis = normAxis(attrInt(n, 'axis', 0), rank(b, n, ins[0]!));
    const axes = b.int64s([axis]);
    let start = b.int64s([0]);
    return ins.map((x, i) => {
      const size = b.op('Slice', [b.op('Shape', [x]), b.int64s([axis]), b.int64s([axis + 1])]);
      const end = b.op('Add', [start, size]);
      const g = need[i] ? b.op('Slice', [dy[0]!, start, end, axes]) : undefined;
      start = end;
      return g;
    });
  },
  Gemm: (b, n, dy, need) => {
    const [a, w, c] = inputs(n) as [string, string, string | undefined];
    const alpha = attrFloat(n, 'alpha', 1), beta = attrFloat(n, 'beta', 1);
    const tA = attrInt(n, 'transA', 0), tB = attrInt(n, 'transB', 0);
    const g = dy[0]!;
    const fa = { alpha };
    const dA = !need[0] ? undefined : !tA
      ? b.op('Gemm', [g, w], { transB: tB ? 0 : 1 }, fa)
      : b.op('Gemm', [w, g], { transA: tB, transB: 1 }, fa);
    const dB = !need[1] ? undefined : !tB
      ? b.op('Gemm', [a, g], { transA: tA ? 0 : 1 }, fa)
      : b.op('Gemm', [g, a], { transA: 1, transB: tA }, fa);
    let dC: string | undefined;
    if (c && need[2]) dC = reduceTo(b, n, beta === 1 ? g : b.op('Mul', [g, b.scalar(beta)]), c);
    return [dA, dB, dC];
  },
  MatMul: (b, n, dy, need) => {
    const [a0, w0] = inputs(n) as [string, string];
    const ra0 = rank(b, n, a0), rw0 = rank(b, n, w0);
    // 1-D operands: work on their 2-D forms (row / column), as numpy defines matmul, then reshape back.
    const a = ra0 === 1 ? b.op('Unsqueeze', [a0, b.int64s([0])]) : a0;
    const w = rw0 === 1 ? b.op('Unsqueeze', [w0, b.int64s([1])]) : w0;
    let g = dy[0]!;
    if (rw0 === 1) g = b.op('Unsqueeze', [g, b.int64s([-1])]);
    if (ra0 === 1) g = b.op('Unsqueeze', [g, b.int64s([rank(b, n, g) - 1])]);
    const ra = Math.max(2, ra0), rw = Math.max(2, rw0);
    const back = (grad: string, like: string, original: string) => (like === original ? grad : reshapeLike(b, grad, original));
    const dA = need[0] ? back(reduceTo(b, n, b.op('MatMul', [g, b.op('Transpose', [w], { perm: swapLast2(rw) })]), a), a, a0) : undefined;
    const dB = need[1] ? back(reduceTo(b, n, b.op('MatMul', [b.op('Transpose', [a], { perm: swapLast2(ra) }), g]), w), w, w0) : undefined;
    return [dA, dB];
  },
  Slice: (b, n, dy) => {
    const [x, startsIn, endsIn, axesIn, stepsIn] = inputs(n) as [string, string, string, string | undefined, string | undefined];
    const xs = requireShape(b, n, x, 'Slice gradients need it');
    const consts = (v: string | undefined) => (v ? b.consts.get(v) : undefined);
    const read = (v: string | undefined) => { const t = consts(v); return t ? Array.from(t.data as ArrayLike<number | bigint>, Number) : undefined; };
    const starts = read(startsIn), ends = read(endsIn);
    const axes = axesIn ? read(axesIn) : starts?.map((_, i) => i);
    const steps = stepsIn ? read(stepsIn) : starts?.map(() => 1);
    if (!starts || !ends || !axes || !steps) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: Slice gradients need constant starts, ends, axes and steps`);
    if (steps.some((st) => st !== 1)) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: Slice gradients support step 1 only`);
    // The gradient is the output gradient padded back with zeros to the input's extent.
    const r = xs.length;
    const pads = new Array<number>(2 * r).fill(0);
    axes.forEach((a0, i) => {
      const a = normAxis(a0, r);
      const d = xs[a];
      if (typeof d !== 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: Slice gradients need a static size on sliced axis ${a}`);
      const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
      const s0 = clamp(starts[i]!), e0 = Math.max(s0, clamp(ends[i]!));
      pads[a] = s0;
      pads[a + r] = d - e0;
    });
    return [b.op('Pad', [dy[0]!, b.int64s(pads)], { mode: 'constant' })];
  },
  Split: (b, n, dy) => {
    const x = inputs(n)[0]!;
    const axis = normAxis(attrInt(n, 'axis', 0), rank(b, n, x));
    const parts = outputs(n).map((o, i) => dy[i] ?? zerosLike(b, o));
    return [b.op('Concat', parts, { axis })];
  },
  Gather: (b, n, dy, need) => {
    if (!need[0]) return [undefined, undefined];
    const [data, idx] = inputs(n) as [string, string];
    if (attrInt(n, 'axis', 0) !== 0) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: Gather gradients are supported along axis 0 (embedding lookups) only`);
    // Rows looked up several times get the sum of their gradients; negative indices count from the end.
    const i64 = b.op('Cast', [idx], { to: 7 });
    const rows = b.op('Slice', [b.op('Shape', [data]), b.int64s([0]), b.int64s([1])]);
    const norm = b.op('Where', [b.op('Less', [i64, b.int64s([0], [])]), b.op('Add', [i64, rows]), i64]);
    const zeros = b.op('ConstantOfShape', [b.op('Shape', [data])], { value: { tensor: tensorToProto('', b.floatType === 'float32' ? { dtype: 'float32', dims: [1], data: new Float32Array(1) } : { dtype: 'float64', dims: [1], data: new Float64Array(1) }) } });
    return [b.op('ScatterND', [zeros, b.op('Unsqueeze', [norm, b.int64s([-1])]), dy[0]!], { reduction: 'add' }), undefined];
  },
  Conv: (b, n, dy, need) => {
    const [x, w, bias] = inputs(n) as [string, string, string | undefined];
    const xs = requireShape(b, n, x, 'Conv gradients need static spatial dims');
    const ws = requireShape(b, n, w, 'Conv gradients need the kernel shape');
    const group = attrInt(n, 'group', 1);
    const kernel = ws.slice(2) as number[];
    const p = spatialParams(n, xs, kernel);
    const k = kernel.length;
    const g = dy[0]!;
    let dX: string | undefined;
    if (need[0]) {
      const outPad = kernel.map((kk, i) => {
        const eff = (kk - 1) * p.dilations[i]! + 1;
        return ((xs[2 + i] as number) + p.pads[i]! + p.pads[i + k]! - eff) % p.strides[i]!;
      });
      dX = b.op('ConvTranspose', [g, w], { strides: p.strides, pads: p.pads, dilations: p.dilations, group, output_padding: outPad, kernel_shape: kernel });
    }
    let dW: string | undefined;
    if (need[1]) {
      const perm = [1, 0, ...kernel.map((_, i) => i + 2)];
      // Correlating the input with the output gradient, batch as channels, gives the weight gradient.
      const weightGrad = (xg: string, gg: string): string => {
        let r = b.op('Conv', [b.op('Transpose', [xg], { perm }), b.op('Transpose', [gg], { perm })], { strides: p.dilations, dilations: p.strides, pads: p.pads });
        const rs = b.shape(r)!;
        if (rs.slice(2).some((d, i) => d !== kernel[i])) {
          r = b.op('Slice', [r, b.int64s(kernel.map(() => 0)), b.int64s(kernel), b.int64s(kernel.map((_, i) => i + 2))]);
        }
        return b.op('Transpose', [r], { perm });
      };
      if (group === 1) {
        dW = weightGrad(x, g);
      } else {
        // Per group: its input channels against its output channels, stacked along the output axis.
        const cin = xs[1], cout = ws[0];
        if (typeof cin !== 'number' || typeof cout !== 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: grouped Conv gradients need static channel counts`);
        const xsplit = b.emit('Split', [x, b.int64s(new Array(group).fill(cin / group))], { axis: 1 }, group);
        const gsplit = b.emit('Split', [g, b.int64s(new Array(group).fill(cout / group))], { axis: 1 }, group);
        dW = b.op('Concat', xsplit.map((xg, i) => weightGrad(xg, gsplit[i]!)), { axis: 0 });
      }
    }
    const dBias = bias && need[2] ? b.op('ReduceSum', [g, b.int64s([0, ...kernel.map((_, i) => i + 2)])], { keepdims: 0 }) : undefined;
    return [dX, dW, dBias];
  },
  MaxPool: (b, n, dy) => {
    const x = inputs(n)[0]!;
    const idx = outputs(n)[1];
    if (!idx) throw gridError('INTERNAL', `${nodeLabel(n)}: MaxPool indices were not requested`);
    const flat = b.int64s([-1]);
    const zeros = b.op('Reshape', [b.op('ConstantOfShape', [b.op('Shape', [x])], { value: { tensor: tensorToProto('', b.floatType === 'float32' ? { dtype: 'float32', dims: [1], data: new Float32Array(1) } : { dtype: 'float64', dims: [1], data: new Float64Array(1) }) } }), flat]);
    const scattered = b.op('ScatterElements', [zeros, b.op('Reshape', [idx, flat]), b.op('Reshape', [dy[0]!, flat])], { axis: 0, reduction: 'add' });
    return [reshapeLike(b, scattered, x)];
  },
  AveragePool: (b, n, dy) => {
    const x = inputs(n)[0]!;
    const xs = requireShape(b, n, x, 'AveragePool gradients need static dims');
    const kernel = attrInts(n, 'kernel_shape')!;
    const p = spatialParams(n, xs, kernel);
    const k = kernel.length;
    if (attrInt(n, 'ceil_mode', 0)) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: AveragePool with ceil_mode=1 has no gradient rule here`);
    if (p.pads.some((v) => v !== 0) && !attrInt(n, 'count_include_pad', 0)) {
      throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: padded AveragePool needs count_include_pad=1 for its gradient here`);
    }
    const c = xs[1];
    if (typeof c !== 'number') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: AveragePool gradients need a static channel count`);
    const size = kernel.reduce((s, v) => s * v, 1);
    const wName = b.constTensor(b.floatType === 'float32'
      ? { dtype: 'float32', dims: [c, 1, ...kernel], data: new Float32Array(c * size).fill(1 / size) }
      : { dtype: 'float64', dims: [c, 1, ...kernel], data: new Float64Array(c * size).fill(1 / size) }, 'avgpool_w');
    const outPad = kernel.map((kk, i) => ((xs[2 + i] as number) + p.pads[i]! + p.pads[i + k]! - kk) % p.strides[i]!);
    return [b.op('ConvTranspose', [dy[0]!, wName], { strides: p.strides, pads: p.pads, group: c, output_padding: outPad, kernel_shape: kernel })];
  },
  GlobalAveragePool: (b, n, dy) => {
    const x = inputs(n)[0]!;
    const xs = requireShape(b, n, x, 'GlobalAveragePool gradients need static spatial dims');
    const spatial = xs.slice(2);
    if (spatial.some((d) => typeof d !== 'number')) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: spatial dims must be static`);
    const count = (spatial as number[]).reduce((s, v) => s * v, 1);
    return [b.op('Expand', [b.op('Mul', [dy[0]!, b.scalar(1 / count)]), b.op('Shape', [x])])];
  },
  ReduceSum: (b, n, dy) => reduceGrad(b, n, dy[0]!, false),
  ReduceMean: (b, n, dy) => reduceGrad(b, n, dy[0]!, true),
  Sum: (b, n, dy, need) => inputs(n).map((x, i) => (need[i] ? reduceTo(b, n, dy[0]!, x) : undefined)),
  Abs: (b, n, dy) => [b.op('Mul', [dy[0]!, b.op('Sign', [inputs(n)[0]!])])],
  Pow: (b, n, dy, need) => {
    const [x, p] = inputs(n) as [string, string];
    if (need[1]) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: gradients with respect to a Pow exponent are not supported`);
    // d(x^p)/dx = p·x^(p−1)
    const pm1 = b.op('Sub', [p, b.op('CastLike', [b.scalar(1), p])]);
    return [reduceTo(b, n, b.op('Mul', [dy[0]!, b.op('Mul', [b.op('CastLike', [p, x]), b.op('Pow', [x, pm1])])]), x), undefined];
  },
  Clip: (b, n, dy) => {
    const [x, lo, hi] = inputs(n) as [string, string | undefined, string | undefined];
    let keep: string | undefined;
    if (lo) keep = b.op('GreaterOrEqual', [x, lo]);
    if (hi) { const under = b.op('LessOrEqual', [x, hi]); keep = keep ? b.op('And', [keep, under]) : under; }
    return [keep ? b.op('Where', [keep, dy[0]!, b.scalar(0)]) : dy[0]];
  },
  Where: (b, n, dy, need) => {
    const [cond, x, y] = inputs(n) as [string, string, string];
    const zero = b.scalar(0);
    return [undefined, need[1] ? reduceTo(b, n, b.op('Where', [cond, dy[0]!, zero]), x) : undefined, need[2] ? reduceTo(b, n, b.op('Where', [cond, zero, dy[0]!]), y) : undefined];
  },
};

function zerosLike(b: GraphBuilder, like: string): string {
  const zero = tensorToProto('', b.floatType === 'float32' ? { dtype: 'float32', dims: [1], data: new Float32Array(1) } : { dtype: 'float64', dims: [1], data: new Float64Array(1) });
  return b.op('ConstantOfShape', [b.op('Shape', [like])], { value: { tensor: zero } });
}

function reduceGrad(b: GraphBuilder, n: OnnxNode, g: string, mean: boolean): (string | undefined)[] {
  const x = inputs(n)[0]!;
  const r = rank(b, n, x);
  const axesIn = n.opType === 'ReduceSum' ? inputs(n)[1] : undefined;
  let axes: number[] | undefined = attrInts(n, 'axes');
  if (axesIn) {
    const t = b.consts.get(axesIn);
    if (!t) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: reduction axes must be constant`);
    axes = Array.from(t.data as BigInt64Array, Number);
  }
  const all = Array.from({ length: r }, (_, i) => i);
  const ax = (axes && axes.length ? axes : all).map((a) => normAxis(a, r));
  let gk = g;
  if (!attrInt(n, 'keepdims', 1)) gk = b.op('Unsqueeze', [g, b.int64s(ax)]);
  let out = b.op('Expand', [gk, b.op('Shape', [x])]);
  if (mean) {
    const count = b.op('Cast', [b.op('Div', [b.op('Size', [x]), b.op('Size', [outputs(n)[0]!])])], { to: b.floatCode });
    out = b.op('Div', [out, count]);
  }
  return [out];
}

/** Input slots through which no gradient flows (shapes, axes, indices, conditions). */
const NON_DIFF_SLOTS: Record<string, number[]> = {
  Reshape: [1], Squeeze: [1], Unsqueeze: [1], ReduceSum: [1], Where: [0], Dropout: [1, 2], Slice: [1, 2, 3, 4], Expand: [1], Clip: [1, 2], Pow: [1], BatchNormalization: [3, 4], Gather: [1], Split: [1],
};

/** Operators whose outputs never carry a gradient (integer or boolean results, random numbers, shapes). */
export const NON_DIFFERENTIABLE_OPS = new Set([
  'Shape', 'Size', 'ArgMax', 'ArgMin', 'Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'Not', 'And', 'Or',
  'Constant', 'ConstantOfShape', 'Range', 'RandomUniformLike', 'RandomNormalLike', 'RandomUniform', 'RandomNormal', 'NonZero',
]);

export function gradRule(node: OnnxNode): GradRule | undefined {
  return rules[node.opType ?? ''];
}

export function isDifferentiableSlot(node: OnnxNode, slot: number): boolean {
  return !(NON_DIFF_SLOTS[node.opType ?? ''] ?? []).includes(slot);
}

export const SUPPORTED_GRADIENT_OPS = Object.keys(rules);

