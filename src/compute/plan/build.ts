// Derives a training plan from a forward ONNX model: the forward graph (rewritten for training:
// batch-statistics BatchNormalization, masked Dropout), a loss, reverse-mode gradients, and an
// optimiser update, as one ONNX graph that onnxruntime runs like any model.

import { gridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { attrFloat, attrInt, attrInts, decodeModel, defaultOpset, encodeModel, makeAttribute, makeValueInfo } from '../onnx/model';
import { ONNX_DTYPE_CODES, tensorFromProto } from '../onnx/tensor-proto';
import type { OnnxGraph, OnnxModel, OnnxNode, OnnxTensorProto, OnnxValueInfo } from '../onnx/types';
import { GraphBuilder, type Dim, type FloatType, type Shape } from './ir';
import { gradRule, isDifferentiableSlot, NON_DIFFERENTIABLE_OPS, SUPPORTED_GRADIENT_OPS } from './grad';
import { inferShapes, nodeLabel } from './shapes';

export type LossKind = 'cross_entropy' | 'mse';
export type OptimizerKind = 'sgd' | 'momentum' | 'adam';

export interface PlanOptions {
  /** cross_entropy: integer class labels [N] against logits [N, C] (a trailing Softmax/LogSoftmax is folded in); mse: float targets shaped like the output. */
  loss: LossKind;
  optimizer: OptimizerKind;
  /** The model output the loss applies to; the first output by default. */
  output?: string;
  /** The data input; the first non-initializer input by default. */
  input?: string;
  /** Initializers to train; by default every float initializer the loss depends on (BatchNormalization running statistics excepted). */
  trainable?: readonly string[];
  /** Adds a `weight_decay` input: L2 penalty added to each gradient. */
  weightDecay?: boolean;
  /** Adds a `prox_mu` input and `global.<param>` inputs: FedProx's proximal term mu·(w − w_global) added to each gradient. */
  fedProx?: boolean;
  /** Also output each parameter's gradient as `grad.<param>`. */
  emitGradients?: boolean;
  /** 'train' (default): BatchNormalization uses batch statistics and updates its running ones, Dropout drops. 'eval': the model as it infers. */
  mode?: 'train' | 'eval';
  /** Seed of the Dropout masks' random generator. */
  seed?: number;
  /**
   * Build an evaluation graph instead: the model as it infers (mode 'eval'), loss and accuracy only, with
   * every float initializer (weights and normalisation statistics) as an input, so current values can be fed.
   */
  evaluateOnly?: boolean;
}

export interface PlanTensorSpec { name: string; dtype: Tensor['dtype']; dims: Dim[] }

/** Everything a caller needs to feed a plan and read its results; also stored in the plan's metadata. */
export interface PlanInfo {
  format: 'grid-plan/1';
  loss: LossKind;
  optimizer: OptimizerKind;
  floatType: FloatType;
  /** The data input (named as in the forward model). */
  input: PlanTensorSpec;
  /** The model output the loss is taken on (the logits when a Softmax tail was folded into cross-entropy). */
  output: PlanTensorSpec;
  labels: PlanTensorSpec;
  /** Scalar hyper-parameter inputs of the float type: lr, momentum, beta1, beta2, epsilon, step, weight_decay, prox_mu. */
  hyper: string[];
  /** Trained parameters: plan input name = the forward model's initializer name. */
  params: PlanTensorSpec[];
  /** Non-trained tensors the plan updates (BatchNormalization running statistics). */
  buffers: PlanTensorSpec[];
  /** Optimiser state (zeros at the start), e.g. `adam.m.<param>`. */
  state: PlanTensorSpec[];
  /** `global.<param>` inputs when fedProx is on. */
  globals: string[];
  outputs: {
    loss: string;
    accuracy: string;
    /** input name → output name of its updated value, for params, buffers and state alike. */
    updated: Record<string, string>;
    /** param → gradient output, when emitGradients is on. */
    gradients: Record<string, string>;
  };
}

export interface TrainingPlan {
  /** The plan as ONNX model bytes. */
  bytes: Uint8Array;
  info: PlanInfo;
  /** Initial values of params and buffers, from the forward model's initializers. */
  initialParams: Record<string, Tensor>;
}

export const PLAN_OPSET = 17;
export const PLAN_METADATA_KEY = 'grid.plan';

const HYPER: Record<OptimizerKind, string[]> = { sgd: ['lr'], momentum: ['lr', 'momentum'], adam: ['lr', 'beta1', 'beta2', 'epsilon', 'step'] };

function copyTensor(t: Tensor): Tensor {
  if (t.dtype === 'string') return { ...t, data: [...(t.data as string[])] } as Tensor;
  const d = t.data as Float32Array;
  return { dtype: t.dtype, dims: [...t.dims], data: d.slice() } as Tensor;
}

function valueDims(v: OnnxValueInfo | undefined, fresh: () => string): Dim[] | null {
  const dims = v?.type?.tensorType?.shape?.dim;
  if (!dims) return null;
  return dims.map((d) => (d.dimValue !== undefined ? d.dimValue : d.dimParam ? d.dimParam : fresh()));
}

function checkOptions(opts: PlanOptions): void {
  if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
  if (opts.loss !== 'cross_entropy' && opts.loss !== 'mse') throw new RangeError(`opts.loss must be 'cross_entropy' or 'mse', got ${JSON.stringify(opts.loss)}`);
  if (!(opts.optimizer in HYPER)) throw new RangeError(`opts.optimizer must be 'sgd', 'momentum' or 'adam', got ${JSON.stringify(opts.optimizer)}`);
  if (opts.mode !== undefined && opts.mode !== 'train' && opts.mode !== 'eval') throw new RangeError(`opts.mode must be 'train' or 'eval'`);
  if (opts.trainable !== undefined && !Array.isArray(opts.trainable)) throw new TypeError('opts.trainable must be an array of initializer names');
}

/** Brings nodes of older/newer opsets to the opset-17 forms the plan is written in. */
function normalizeNode(node: OnnxNode, opset: number, b: GraphBuilder): OnnxNode {
  const n: OnnxNode = { ...node, input: [...(node.input ?? [])], output: [...(node.output ?? [])], attribute: [...(node.attribute ?? [])] };
  const dropAttr = (name: string) => { n.attribute = n.attribute!.filter((a) => a.name !== name); };
  const op = n.opType ?? '';
  if (opset < 13 && (op === 'Squeeze' || op === 'Unsqueeze' || op === 'ReduceSum')) {
    const axes = attrInts(n, 'axes');
    dropAttr('axes');
    if (axes) n.input!.push(b.int64s(axes));
  }
  if (opset < 13 && op === 'Split') {
    const split = attrInts(n, 'split');
    dropAttr('split');
    if (split) n.input!.push(b.int64s(split));
  }
  if (opset < 10 && op === 'Slice') {
    const starts = attrInts(n, 'starts') ?? [], ends = attrInts(n, 'ends') ?? [], axes = attrInts(n, 'axes');
    for (const a of ['starts', 'ends', 'axes']) dropAttr(a);
    n.input!.push(b.int64s(starts), b.int64s(ends));
    if (axes) n.input!.push(b.int64s(axes));
  }
  if (opset < 13 && (op === 'Softmax' || op === 'LogSoftmax')) {
    const x = b.shape(n.input![0]!);
    const axis = attrInt(n, 'axis', 1);
    const r = x?.length ?? 2;
    if ((axis < 0 ? axis + r : axis) !== r - 1) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: opset-${opset} ${op} over axis ${axis} of a rank-${r} input is not supported`);
    dropAttr('axis');
    n.attribute!.push(makeAttribute('axis', -1));
  }
  if (opset >= 18 && (op === 'ReduceMean' || op === 'ReduceMax') && n.input!.length > 1) {
    const t = b.consts.get(n.input![1]!);
    if (!t) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: reduction axes must be constant`);
    n.input = [n.input![0]!];
    n.attribute!.push(makeAttribute('axes', Array.from(t.data as BigInt64Array, Number)));
  }
  if (n.attribute!.length === 0) delete n.attribute;
  return n;
}

/** Derives a plan doing one optimisation step of `model` (bytes or decoded). */
export function buildPlan(model: OnnxModel | Uint8Array, opts: PlanOptions): TrainingPlan {
  checkOptions(opts);
  const m = model instanceof Uint8Array ? decodeModel(model) : model;
  const graph: OnnxGraph = m.graph ?? {};
  const opset = defaultOpset(m);
  if (opset < 7) throw gridError('INVALID_MODEL', `the model uses opset ${opset}; plans need opset 7 or newer`);
  const evaluateOnly = opts.evaluateOnly === true;
  const mode = evaluateOnly ? 'eval' : opts.mode ?? 'train';

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

  const allNames = new Set<string>();
  for (const n of graph.node ?? []) for (const v of [...(n.input ?? []), ...(n.output ?? [])]) allNames.add(v);
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) allNames.add(v.name ?? '');
  for (const k of inits.keys()) allNames.add(k);
  const b = new GraphBuilder(floatType, allNames);
  b.onEmit = (node) => inferShapes(b, node);
  for (const n of graph.node ?? []) {
    if (n.domain && n.domain !== 'ai.onnx') throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)} is in domain "${n.domain}"; plans support the standard ONNX operators only`);
  }

  // Symbolic dims: keep the model's names, name the unnamed.
  let symCounter = 0;
  const fresh = () => `d${symCounter++}`;
  const inputDims = valueDims(inputInfo, fresh);
  if (!inputDims) throw gridError('INVALID_MODEL', `the data input "${inputInfo.name}" has no shape`);
  b.setShape(inputInfo.name!, inputDims, elem);

  // Which nodes are needed: walk back from the loss's input.
  const producer = new Map<string, OnnxNode>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  let logits = outName;
  const tail = producer.get(outName);
  if (opts.loss === 'cross_entropy' && tail && (tail.opType === 'Softmax' || tail.opType === 'LogSoftmax')) logits = tail.input![0]!;
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
  const forward = (graph.node ?? []).filter((n) => needed.has(n));

  // Parameters, buffers and constants among the initializers.
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
    if (t.dataType === floatCode && !bnStats.has(name) && (opts.trainable === undefined || opts.trainable.includes(name))) candidates.add(name);
  }
  for (const name of opts.trainable ?? []) {
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

  // Forward, rewritten for training.
  const bufferUpdates: Record<string, string> = {};
  for (const orig of forward) {
    const n = normalizeNode(orig, opset, b);
    const op = n.opType;
    if (op === 'BatchNormalization' && mode === 'train') {
      emitTrainingBatchNorm(b, n, bufferUpdates);
      continue;
    }
    if (op === 'BatchNormalization' && !evaluateOnly) {
      // Frozen statistics (mode 'eval'): the affine form, so scale and bias still train.
      emitFrozenBatchNorm(b, n);
      continue;
    }
    if (op === 'Dropout') {
      emitDropout(b, n, opset, mode, opts.seed);
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
  const forwardCount = b.nodes.length;

  // Which values depend on a trainable parameter.
  const requires = new Set(evaluateOnly ? [] : candidates);
  for (let i = 0; i < forwardCount; i++) {
    const n = b.nodes[i]!;
    if (NON_DIFFERENTIABLE_OPS.has(n.opType ?? '')) continue;
    if (!(n.input ?? []).some((v, slot) => requires.has(v) && isDifferentiableSlot(n, slot))) continue;
    (n.output ?? []).forEach((o, k) => {
      if (n.opType === 'MaxPool' && k === 1) return;
      if (n.opType === 'Cast' && attrInt(n, 'to', floatCode) !== floatCode) return;
      requires.add(o);
    });
    // Fail early, before the loss needs shapes an unknown operator could not give.
    if (!gradRule(n)) throw unsupported(n);
  }

  // Loss and metrics.
  const logitShape = b.shape(logits);
  if (!logitShape) throw gridError('UNSUPPORTED_OPERATOR', `the shape of the model output "${logits}" cannot be inferred; plans need it`);
  const labelsName = uniqueName(b, 'labels');
  const lossName = uniqueName(b, 'loss');
  const accName = uniqueName(b, 'accuracy');
  let dLogits: string;
  let labelsSpec: PlanTensorSpec;
  if (opts.loss === 'cross_entropy') {
    if (logitShape.length !== 2) throw gridError('INVALID_MODEL', `cross-entropy needs logits of shape [N, C]; "${logits}" is [${logitShape.join(', ')}]`);
    labelsSpec = { name: labelsName, dtype: 'int64', dims: [logitShape[0]!] };
    b.setShape(labelsName, labelsSpec.dims, 7);
    const c = logitShape[1];
    const classes = typeof c === 'number' ? b.int64s(Array.from({ length: c }, (_, i) => i)) : b.op('Range', [b.int64s([0], []), b.op('Squeeze', [b.op('Shape', [logits], { start: 1, end: 2 }), b.int64s([0])]), b.int64s([1], [])]);
    const onehot = b.op('Cast', [b.op('Equal', [b.op('Unsqueeze', [labelsName, b.int64s([1])]), classes])], { to: floatCode });
    const logp = b.op('LogSoftmax', [logits], { axis: 1 });
    const count = b.op('Cast', [b.op('Shape', [logits], { start: 0, end: 1 })], { to: floatCode });
    b.emit('Neg', [b.op('ReduceSum', [b.op('Div', [b.op('Mul', [onehot, logp]), count])], { keepdims: 0 })], {}, [lossName]);
    dLogits = b.op('Div', [b.op('Sub', [b.op('Exp', [logp]), onehot]), count]);
    b.emit('ReduceMean', [b.op('Cast', [b.op('Equal', [b.op('ArgMax', [logits], { axis: 1, keepdims: 0 }), labelsName])], { to: floatCode })], { keepdims: 0 }, [accName]);
  } else {
    labelsSpec = { name: labelsName, dtype: floatType, dims: [...logitShape] };
    b.setShape(labelsName, labelsSpec.dims, floatCode);
    const diff = b.op('Sub', [logits, labelsName]);
    b.emit('ReduceMean', [b.op('Mul', [diff, diff])], { keepdims: 0 }, [lossName]);
    dLogits = b.op('Div', [b.op('Mul', [diff, b.scalar(2)]), b.op('Cast', [b.op('Size', [logits])], { to: floatCode })]);
    const last = logitShape[logitShape.length - 1];
    const correct = logitShape.length >= 2 && typeof last === 'number' && last > 1
      ? b.op('Equal', [b.op('ArgMax', [logits], { axis: -1, keepdims: 0 }), b.op('ArgMax', [labelsName], { axis: -1, keepdims: 0 })])
      : b.op('Less', [b.op('Abs', [diff]), b.scalar(0.5)]);
    b.emit('ReduceMean', [b.op('Cast', [correct], { to: floatCode })], { keepdims: 0 }, [accName]);
  }

  if (evaluateOnly) return assembleEvaluation(b, graph, opts, { inputInfo, inputDims, floatType, labelsSpec, lossName, accName, inits, values, logits, logitShape });

  // Backward.
  const grads = new Map<string, string[]>();
  const addGrad = (v: string, g: string) => { const l = grads.get(v); if (l) l.push(g); else grads.set(v, [g]); };
  const gradOf = (v: string): string | undefined => {
    const l = grads.get(v);
    if (!l) return undefined;
    if (l.length > 1) grads.set(v, [b.op('Sum', l)]);
    return grads.get(v)![0];
  };
  if (requires.has(logits)) addGrad(logits, dLogits);
  for (let i = forwardCount - 1; i >= 0; i--) {
    const n = b.nodes[i]!;
    const dy = (n.output ?? []).map((o) => gradOf(o));
    if (dy.every((g) => g === undefined)) continue;
    const need = (n.input ?? []).map((v, slot) => v !== '' && requires.has(v) && isDifferentiableSlot(n, slot));
    if (!need.some(Boolean)) continue;
    const rule = gradRule(n);
    if (!rule) throw unsupported(n);
    const dx = rule(b, n, dy, need);
    (n.input ?? []).forEach((v, slot) => { if (need[slot] && dx[slot]) addGrad(v, dx[slot]!); });
  }

  // Parameters that the loss does not depend on stay constants.
  const params = [...candidates].filter((p) => grads.has(p));
  for (const p of candidates) {
    if (grads.has(p)) continue;
    if (opts.trainable?.includes(p)) throw gridError('INVALID_INPUT', `trainable "${p}" does not affect the loss`, { param: p });
    b.consts.set(p, values.get(p)!);
  }

  // Optimiser.
  const hyper = [...HYPER[opts.optimizer]];
  if (opts.weightDecay) hyper.push('weight_decay');
  if (opts.fedProx) hyper.push('prox_mu');
  const hyperName: Record<string, string> = {};
  for (const h of hyper) { hyperName[h] = uniqueName(b, h); b.setShape(hyperName[h], [], floatCode); }
  const updated: Record<string, string> = {};
  const gradients: Record<string, string> = {};
  const state: PlanTensorSpec[] = [];
  const globals: string[] = [];
  const paramSpecs: PlanTensorSpec[] = [];
  let lrT: string | undefined;
  if (opts.optimizer === 'adam') {
    const { beta1, beta2, step, lr } = hyperName as Record<string, string>;
    const one = b.scalar(1);
    lrT = b.op('Div', [b.op('Mul', [lr!, b.op('Sqrt', [b.op('Sub', [one, b.op('Pow', [beta2!, step!])])])]), b.op('Sub', [one, b.op('Pow', [beta1!, step!])])]);
  }
  for (const p of params) {
    const dims = [...values.get(p)!.dims];
    paramSpecs.push({ name: p, dtype: floatType, dims });
    let g = gradOf(p)!;
    if (opts.emitGradients) {
      gradients[p] = uniqueName(b, `grad.${p}`);
      b.emit('Identity', [g], {}, [gradients[p]!]);
    }
    if (opts.weightDecay) g = b.op('Add', [g, b.op('Mul', [hyperName.weight_decay!, p])]);
    if (opts.fedProx) {
      const gp = uniqueName(b, `global.${p}`);
      globals.push(gp);
      b.setShape(gp, dims, floatCode);
      g = b.op('Add', [g, b.op('Mul', [hyperName.prox_mu!, b.op('Sub', [p, gp])])]);
    }
    const out = uniqueName(b, `new.${p}`);
    updated[p] = out;
    if (opts.optimizer === 'sgd') {
      b.emit('Sub', [p, b.op('Mul', [hyperName.lr!, g])], {}, [out]);
    } else if (opts.optimizer === 'momentum') {
      const v = uniqueName(b, `momentum.${p}`);
      const vOut = uniqueName(b, `new.momentum.${p}`);
      state.push({ name: v, dtype: floatType, dims });
      updated[v] = vOut;
      b.emit('Add', [b.op('Mul', [hyperName.momentum!, v]), g], {}, [vOut]);
      b.emit('Sub', [p, b.op('Mul', [hyperName.lr!, vOut])], {}, [out]);
    } else {
      const mName = uniqueName(b, `adam.m.${p}`), vName = uniqueName(b, `adam.v.${p}`);
      const mOut = uniqueName(b, `new.adam.m.${p}`), vOut = uniqueName(b, `new.adam.v.${p}`);
      state.push({ name: mName, dtype: floatType, dims }, { name: vName, dtype: floatType, dims });
      updated[mName] = mOut;
      updated[vName] = vOut;
      const one = b.scalar(1);
      const { beta1, beta2, epsilon } = hyperName as Record<string, string>;
      b.emit('Add', [b.op('Mul', [beta1!, mName]), b.op('Mul', [b.op('Sub', [one, beta1!]), g])], {}, [mOut]);
      b.emit('Add', [b.op('Mul', [beta2!, vName]), b.op('Mul', [b.op('Sub', [one, beta2!]), b.op('Mul', [g, g])])], {}, [vOut]);
      b.emit('Sub', [p, b.op('Mul', [lrT!, b.op('Div', [mOut, b.op('Add', [b.op('Sqrt', [vOut]), epsilon!])])])], {}, [out]);
    }
  }
  const bufferSpecs: PlanTensorSpec[] = [];
  for (const [buf, out] of Object.entries(bufferUpdates)) {
    bufferSpecs.push({ name: buf, dtype: floatType, dims: [...values.get(buf)!.dims] });
    updated[buf] = out;
  }

  // Assemble the model.
  const inputSpec: PlanTensorSpec = { name: inputInfo.name!, dtype: floatType, dims: inputDims };
  const specInfo = (s: PlanTensorSpec) => makeValueInfo(s.name, ONNX_DTYPE_CODES[s.dtype], s.dims);
  const scalarInfo = (name: string) => makeValueInfo(name, floatCode, []);
  const planInputs: OnnxValueInfo[] = [
    specInfo(inputSpec), specInfo(labelsSpec), ...hyper.map((h) => scalarInfo(hyperName[h]!)),
    ...paramSpecs.map(specInfo), ...bufferSpecs.map(specInfo), ...state.map(specInfo),
    ...globals.map((gname, i) => specInfo({ ...paramSpecs[i]!, name: gname })),
  ];
  const shapeOf = (name: string): Dim[] => (b.shape(name) ?? []) as Dim[];
  const planOutputs: OnnxValueInfo[] = [
    scalarInfo(lossName), scalarInfo(accName),
    ...Object.entries(updated).map(([, out]) => makeValueInfo(out, floatCode, shapeOf(out))),
    ...Object.values(gradients).map((gname) => makeValueInfo(gname, floatCode, shapeOf(gname))),
  ];
  const inputNames = new Set(planInputs.map((i) => i.name));
  const initializers: OnnxTensorProto[] = [...b.initializers];
  for (const name of b.consts.keys()) {
    if (inits.has(name) && !inputNames.has(name)) initializers.push(inits.get(name)!);
  }
  const info: PlanInfo = {
    format: 'grid-plan/1',
    loss: opts.loss,
    optimizer: opts.optimizer,
    floatType,
    input: inputSpec,
    output: { name: logits, dtype: floatType, dims: [...logitShape] },
    labels: labelsSpec,
    hyper,
    params: paramSpecs,
    buffers: bufferSpecs,
    state,
    globals,
    outputs: { loss: lossName, accuracy: accName, updated, gradients },
  };
  // Hyper-parameter inputs are named as listed unless the model already used the name.
  info.hyper = hyper.map((h) => hyperName[h]!);
  const planModel: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: PLAN_OPSET }],
    producerName: 'grid-workbench plan',
    graph: { name: `${graph.name ?? 'model'}_plan`, node: b.nodes, initializer: initializers, input: planInputs, output: planOutputs },
    metadataProps: [{ key: PLAN_METADATA_KEY, value: JSON.stringify(info) }],
  };
  const initialParams: Record<string, Tensor> = {};
  for (const s of [...paramSpecs, ...bufferSpecs]) initialParams[s.name] = values.get(s.name)!;
  return { bytes: encodeModel(planModel), info, initialParams };
}

interface EvalParts {
  inputInfo: OnnxValueInfo; inputDims: Dim[]; floatType: FloatType; labelsSpec: PlanTensorSpec; lossName: string; accName: string;
  inits: Map<string, OnnxTensorProto>; values: Map<string, Tensor>; logits: string; logitShape: Dim[];
}

function assembleEvaluation(b: GraphBuilder, graph: OnnxGraph, opts: PlanOptions, p: EvalParts): TrainingPlan {
  const floatCode = ONNX_DTYPE_CODES[p.floatType];
  const fed: PlanTensorSpec[] = [];
  const initializers: OnnxTensorProto[] = [...b.initializers];
  for (const [name, tp] of p.inits) {
    if (!p.values.has(name)) continue;
    if (tp.dataType === floatCode) fed.push({ name, dtype: p.floatType, dims: [...p.values.get(name)!.dims] });
    else initializers.push(tp);
  }
  const inputSpec: PlanTensorSpec = { name: p.inputInfo.name!, dtype: p.floatType, dims: p.inputDims };
  const specInfo = (s: PlanTensorSpec) => makeValueInfo(s.name, ONNX_DTYPE_CODES[s.dtype], s.dims);
  const predictions = uniqueName(b, 'predictions');
  b.emit('Identity', [p.logits], {}, [predictions]);
  const info: PlanInfo = {
    format: 'grid-plan/1', loss: opts.loss, optimizer: opts.optimizer, floatType: p.floatType, input: inputSpec,
    output: { name: p.logits, dtype: p.floatType, dims: [...p.logitShape] }, labels: p.labelsSpec,
    hyper: [], params: fed, buffers: [], state: [], globals: [],
    outputs: { loss: p.lossName, accuracy: p.accName, updated: {}, gradients: {} },
  };
  const planModel: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: PLAN_OPSET }],
    producerName: 'grid-workbench evaluation',
    graph: {
      name: `${graph.name ?? 'model'}_evaluation`, node: b.nodes, initializer: initializers,
      input: [specInfo(inputSpec), specInfo(p.labelsSpec), ...fed.map(specInfo)],
      output: [makeValueInfo(p.lossName, floatCode, []), makeValueInfo(p.accName, floatCode, []), makeValueInfo(predictions, floatCode, b.shape(p.logits) ?? undefined)],
    },
    metadataProps: [{ key: PLAN_METADATA_KEY, value: JSON.stringify(info) }],
  };
  const initialParams: Record<string, Tensor> = {};
  for (const s of fed) initialParams[s.name] = p.values.get(s.name)!;
  return { bytes: encodeModel(planModel), info, initialParams };
}

function unsupported(n: OnnxNode): Error {
  const known = [...SUPPORTED_GRADIENT_OPS, 'BatchNormalization', 'Dropout'].sort().join(', ');
  return gridError('UNSUPPORTED_OPERATOR', `no gradient rule for operator ${n.opType} (${nodeLabel(n)}); plans differentiate ${known}`, { opType: n.opType, node: n.name ?? '' });
}

function uniqueName(b: GraphBuilder, want: string): string {
  if (!b.isUsed(want)) {
    b.reserve(want);
    return want;
  }
  return b.fresh(want);
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

/** Reads the PlanInfo a plan carries in its metadata. */
export function readPlanInfo(bytes: Uint8Array): PlanInfo {
  const m = decodeModel(bytes);
  const entry = (m.metadataProps ?? []).find((p) => p.key === PLAN_METADATA_KEY);
  if (!entry?.value) throw gridError('INVALID_MODEL', 'the model is not a training plan (no grid.plan metadata)');
  return JSON.parse(entry.value) as PlanInfo;
}

export type { Shape };
