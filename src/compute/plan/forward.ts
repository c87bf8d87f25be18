// The forward half of a plan: the model's data input and loss output, the nodes the loss needs, which
// initializers are trained, and the forward graph rewritten for training (batch-statistics
// BatchNormalization, masked Dropout).

import { gridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { attrFloat } from '../onnx/model';
import { ONNX_DTYPE_CODES, tensorFromProto } from '../onnx/tensor-proto';
import type { OnnxGraph, OnnxNode, OnnxTensorProto, OnnxValueInfo } from '../onnx/types';
import { isDifferentiableSlot, NON_DIFFERENTIABLE_OPS } from './grad';
import type { LossKind, PlanOptions } from './info';
import { GraphBuilder, type Dim, type FloatType } from './ir';
import { normalizeNode } from './normalize';
import { inferShapes, nodeLabel } from './shapes';

/** The model's ends as a plan sees them: its one data input and the output the loss is taken on. */
export interface ModelEnds {
  readonly inits: ReadonlyMap<string, OnnxTensorProto>;
  readonly inputInfo: OnnxValueInfo;
  /** ONNX elem type of the data input. */
  readonly elem: number;
  readonly floatType: FloatType;
  readonly outName: string;
}

export function modelEnds(graph: OnnxGraph, opts: PlanOptions): ModelEnds {
  const inits = new Map<string, OnnxTensorProto>();
  for (const t of graph.initializer ?? []) inits.set(t.name ?? '', t);
  const feedInputs = (graph.input ?? []).filter((i) => !inits.has(i.name ?? ''));
  const inputInfo = opts.input === undefined ? feedInputs[0] : feedInputs.find((i) => i.name === opts.input);
  if (!inputInfo) throw gridError('INVALID_MODEL', opts.input === undefined ? 'the model has no data input' : `the model has no input "${opts.input}"`);
  if (feedInputs.length > 1) throw gridError('UNSUPPORTED_OPERATOR', `plans take one data input; the model has ${feedInputs.map((i) => `"${i.name}"`).join(', ')}`);
  const elem = inputInfo.type?.tensorType?.elemType;
  const floatType: FloatType = elem === 11 ? 'float64' : elem === 1 ? 'float32' : (() => { throw gridError('INVALID_MODEL', `the data input "${inputInfo.name}" must be float32 or float64`); })();
  const outName = opts.output ?? graph.output?.[0]?.name;
  if (!outName || !(graph.output ?? []).some((o) => o.name === outName)) throw gridError('INVALID_MODEL', `the model has no output "${outName ?? ''}"`);
  return { inits, inputInfo, elem: elem!, floatType, outName };
}

/**
 * A builder that knows every name the model uses (so emitted names never collide) and the data input's
 * shape, whose symbolic dims keep the model's names and name the unnamed. Returns the input's dims too.
 */
export function planBuilder(graph: OnnxGraph, ends: ModelEnds): { b: GraphBuilder; inputDims: Dim[] } {
  const allNames = new Set<string>();
  for (const n of graph.node ?? []) for (const v of [...(n.input ?? []), ...(n.output ?? [])]) allNames.add(v);
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) allNames.add(v.name ?? '');
  for (const k of ends.inits.keys()) allNames.add(k);
  const b = new GraphBuilder(ends.floatType, allNames);
  b.onEmit = (node) => inferShapes(b, node);
  for (const n of graph.node ?? []) {
    if (n.domain && n.domain !== 'ai.onnx') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)} is in domain "${n.domain}"; plans support the standard ONNX operators only`);
  }
  let symCounter = 0;
  const fresh = () => `d${symCounter++}`;
  const inputDims = valueDims(ends.inputInfo, fresh);
  if (!inputDims) throw gridError('INVALID_MODEL', `the data input "${ends.inputInfo.name}" has no shape`);
  b.setShape(ends.inputInfo.name!, inputDims, ends.elem);
  return { b, inputDims };
}

function valueDims(v: OnnxValueInfo | undefined, fresh: () => string): Dim[] | null {
  const dims = v?.type?.tensorType?.shape?.dim;
  if (!dims) return null;
  return dims.map((d) => (d.dimValue !== undefined ? d.dimValue : d.dimParam ? d.dimParam : fresh()));
}

/**
 * The nodes the loss needs, in the model's order, found by walking back from the loss's input: the
 * output, or for cross-entropy the logits under a trailing Softmax/LogSoftmax (the loss folds it in).
 */
export function neededNodes(graph: OnnxGraph, outName: string, loss: LossKind): { logits: string; forward: OnnxNode[] } {
  const producer = new Map<string, OnnxNode>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  let logits = outName;
  const tail = producer.get(outName);
  if (loss === 'cross_entropy' && tail && (tail.opType === 'Softmax' || tail.opType === 'LogSoftmax')) logits = tail.input![0]!;
  const needed = new Set<OnnxNode>();
  const stack = [logits];
  const seen = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const p = producer.get(v);
    if (p && !needed.has(p)) {
      needed.add(p);
      for (const i of p.input ?? []) if (i) stack.push(i);
    }
  }
  return { logits, forward: (graph.node ?? []).filter((n) => needed.has(n)) };
}

/** The initializers the forward graph uses, sorted into what trains, what the plan updates, and constants. */
export interface Initializers {
  /** Float initializers a gradient can reach, and that the caller lets train: the parameters, unless the loss turns out not to depend on one. */
  readonly candidates: ReadonlySet<string>;
  /** BatchNormalization running statistics, updated by the plan in 'train' mode (buffers). */
  readonly bnStats: ReadonlySet<string>;
  /** Values of every used initializer (copies, so the plan's initial params do not alias the model). */
  readonly values: ReadonlyMap<string, Tensor>;
}

/** Sorts the used initializers and registers their shapes; constants become known to shape inference. */
export function sortInitializers(b: GraphBuilder, ends: ModelEnds, forward: readonly OnnxNode[], mode: 'train' | 'eval', trainable: readonly string[] | undefined): Initializers {
  const { inits, floatType } = ends;
  const bnStats = new Set<string>();
  if (mode === 'train') for (const n of forward) if (n.opType === 'BatchNormalization') { bnStats.add(n.input![3]!); bnStats.add(n.input![4]!); }
  const used = new Set(forward.flatMap((n) => n.input ?? []));
  const diffUse = new Set<string>();
  for (const n of forward) {
    if (NON_DIFFERENTIABLE_OPS.has(n.opType ?? '')) continue;
    (n.input ?? []).forEach((v, slot) => { if (isDifferentiableSlot(n, slot)) diffUse.add(v); });
  }
  const floatCode = ONNX_DTYPE_CODES[floatType];
  const candidates = new Set<string>();
  for (const [name, t] of inits) {
    if (!diffUse.has(name)) continue;
    if (t.dataType === floatCode && !bnStats.has(name) && (trainable === undefined || trainable.includes(name))) candidates.add(name);
  }
  for (const name of trainable ?? []) {
    if (!inits.has(name)) throw gridError('INVALID_INPUT', `trainable "${name}" is not an initializer of the model`, { param: name });
    if (inits.get(name)!.dataType !== floatCode) throw gridError('INVALID_INPUT', `trainable "${name}" is not ${floatType}`, { param: name });
  }
  const values = new Map<string, Tensor>();
  for (const [name, tp] of inits) {
    if (!used.has(name)) continue;
    const t = copyTensor(tensorFromProto(tp, `initializer "${name}"`));
    values.set(name, t);
    b.setShape(name, [...t.dims], tp.dataType);
    if (!candidates.has(name) && !bnStats.has(name)) b.consts.set(name, t);
  }
  return { candidates, bnStats, values };
}

function copyTensor(t: Tensor): Tensor {
  if (t.dtype === 'string') return { ...t, data: [...(t.data as string[])] } as Tensor;
  const d = t.data as Float32Array;
  return { dtype: t.dtype, dims: [...t.dims], data: d.slice() } as Tensor;
}

export interface ForwardOptions {
  readonly opset: number;
  readonly mode: 'train' | 'eval';
  /** An evaluation graph keeps BatchNormalization as the model infers with it. */
  readonly evaluateOnly: boolean;
  readonly seed: number | undefined;
}

/**
 * Emits the forward nodes, rewritten for training, and returns the buffers' updates (running statistic →
 * the value holding its new value).
 */
export function emitForward(b: GraphBuilder, forward: readonly OnnxNode[], opts: ForwardOptions): Record<string, string> {
  const bufferUpdates: Record<string, string> = {};
  for (const orig of forward) {
    const n = normalizeNode(orig, opts.opset, b);
    const op = n.opType;
    if (op === 'BatchNormalization' && opts.mode === 'train') {
      emitTrainingBatchNorm(b, n, bufferUpdates);
      continue;
    }
    if (op === 'BatchNormalization' && !opts.evaluateOnly) {
      // Frozen statistics (mode 'eval'): the affine form, so scale and bias still train.
      emitFrozenBatchNorm(b, n);
      continue;
    }
    if (op === 'Dropout') {
      emitDropout(b, n, opts.opset, opts.mode, opts.seed);
      continue;
    }
    if (op === 'MaxPool' && (n.output!.length < 2 || !n.output![1])) {
      n.output = [n.output![0]!, b.fresh('maxpool_indices')];
    }
    if (op === 'Constant') {
      const t = n.attribute?.find((a) => a.name === 'value')?.t;
      if (t) b.consts.set(n.output![0]!, tensorFromProto(t));
    }
    b.nodes.push(n);
    inferShapes(b, n);
  }
  return bufferUpdates;
}

function emitTrainingBatchNorm(b: GraphBuilder, n: OnnxNode, bufferUpdates: Record<string, string>): void {
  const [x, scale, bias, mean, variance] = n.input as [string, string, string, string, string];
  const xs = b.shape(x);
  if (!xs) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: the input's rank must be known`);
  const eps = attrFloat(n, 'epsilon', 1e-5);
  const momentum = attrFloat(n, 'momentum', 0.9);
  const r = xs.length;
  const axes = [0, ...Array.from({ length: r - 2 }, (_, i) => i + 2)];
  const bshape = b.int64s([1, -1, ...Array.from({ length: r - 2 }, () => 1)]);
  const mu = b.op('ReduceMean', [x], { axes, keepdims: 1 });
  const xc = b.op('Sub', [x, mu]);
  const v = b.op('ReduceMean', [b.op('Mul', [xc, xc])], { axes, keepdims: 1 });
  const inv = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [v, b.scalar(eps)])])]);
  const xhat = b.op('Mul', [xc, inv]);
  b.emit('Add', [b.op('Mul', [xhat, b.op('Reshape', [scale, bshape])]), b.op('Reshape', [bias, bshape])], {}, [n.output![0]!]);
  // Running statistics, ONNX's convention: running = running·momentum + batch·(1 − momentum).
  const flat = b.int64s([-1]);
  const keep = b.scalar(momentum), take = b.scalar(1 - momentum);
  const newMean = b.op('Add', [b.op('Mul', [mean, keep]), b.op('Mul', [b.op('Reshape', [mu, flat]), take])]);
  const newVar = b.op('Add', [b.op('Mul', [variance, keep]), b.op('Mul', [b.op('Reshape', [v, flat]), take])]);
  bufferUpdates[mean] = newMean;
  bufferUpdates[variance] = newVar;
}

function emitFrozenBatchNorm(b: GraphBuilder, n: OnnxNode): void {
  const [x, scale, bias, mean, variance] = n.input as [string, string, string, string, string];
  const xs = b.shape(x);
  if (!xs) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: the input's rank must be known`);
  const bshape = b.int64s([1, -1, ...Array.from({ length: xs.length - 2 }, () => 1)]);
  const inv = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [variance, b.scalar(attrFloat(n, 'epsilon', 1e-5))])])]);
  const xhat = b.op('Mul', [b.op('Sub', [x, b.op('Reshape', [mean, bshape])]), b.op('Reshape', [inv, bshape])]);
  b.emit('Add', [b.op('Mul', [xhat, b.op('Reshape', [scale, bshape])]), b.op('Reshape', [bias, bshape])], {}, [n.output![0]!]);
}

function emitDropout(b: GraphBuilder, n: OnnxNode, opset: number, mode: 'train' | 'eval', seed: number | undefined): void {
  const x = n.input![0]!;
  let ratio = 0.5;
  if (opset < 12) ratio = attrFloat(n, 'ratio', 0.5);
  else if (n.input![1]) {
    const t = b.consts.get(n.input![1]);
    if (!t) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: the dropout ratio must be a constant`);
    ratio = Number((t.data as Float32Array)[0]);
  }
  const out = n.output![0]!;
  if (mode === 'eval' || ratio === 0) {
    b.emit('Identity', [x], {}, [out]);
    return;
  }
  const u = b.emit('RandomUniformLike', [x], { dtype: b.floatCode }, 1, seed !== undefined ? { seed } : {})[0]!;
  const mask = b.op('Mul', [b.op('Cast', [b.op('Greater', [u, b.scalar(ratio)])], { to: b.floatCode }), b.scalar(1 / (1 - ratio))]);
  b.emit('Mul', [x, mask], {}, [out]);
}
