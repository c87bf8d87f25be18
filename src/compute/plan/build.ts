// Derives a training plan from a forward ONNX model: the forward graph (rewritten for training:
// batch-statistics BatchNormalization, masked Dropout), a loss, reverse-mode gradients, and an
// optimiser update, as one ONNX graph that onnxruntime runs like any model. Each phase lives in its own
// module, in the order buildPlan runs them: forward.ts, loss.ts, backward.ts (with grad.ts's rules),
// optimizer.ts, assemble.ts; shapes.ts infers shapes as nodes are emitted.

import { gridError } from '../../core/errors';
import { decodeModel, defaultOpset } from '../onnx/model';
import type { OnnxModel } from '../onnx/types';
import { assembleEvaluation, assemblePlan } from './assemble';
import { emitBackward, valuesNeedingGradients } from './backward';
import { emitForward, modelEnds, neededNodes, planBuilder, sortInitializers } from './forward';
import { HYPER, type PlanOptions, type TrainingPlan } from './info';
import { emitLoss } from './loss';
import { emitOptimizer, foldsSgd, hyperInputs, sgdSeed } from './optimizer';

export { PLAN_METADATA_KEY, PLAN_OPSET, readPlanInfo } from './info';
export type { LossKind, OptimizerKind, PlanInfo, PlanOptions, PlanTensorSpec, TrainingPlan } from './info';
export type { Shape } from './ir';

/** Derives a plan doing one optimisation step of `model` (bytes or decoded). */
export function buildPlan(model: OnnxModel | Uint8Array, opts: PlanOptions): TrainingPlan {
  checkOptions(opts);
  const m = model instanceof Uint8Array ? decodeModel(model) : model;
  const graph = m.graph ?? {};
  const opset = defaultOpset(m);
  if (opset < 7) throw gridError('INVALID_MODEL', `the model uses opset ${opset}; plans need opset 7 or newer`);
  const evaluateOnly = opts.evaluateOnly === true;
  const mode = evaluateOnly ? 'eval' : opts.mode ?? 'train';

  // The model: its data input and loss output, the nodes the loss needs, and its initializers sorted
  // into parameters, buffers and constants.
  const ends = modelEnds(graph, opts);
  const { b, inputDims } = planBuilder(graph, ends);
  const { logits, forward } = neededNodes(graph, ends.outName, opts.loss);
  const { candidates, values } = sortInitializers(b, ends, forward, mode, opts.trainable);

  // Forward, rewritten for training; then which of its values a gradient must reach.
  const bufferUpdates = emitForward(b, forward, { opset, mode, evaluateOnly, seed: opts.seed });
  const forwardCount = b.nodes.length;
  const requires = valuesNeedingGradients(b, forwardCount, evaluateOnly ? [] : candidates);

  const loss = emitLoss(b, opts.loss, logits);
  if (evaluateOnly) return assembleEvaluation(b, graph, opts, { ends, inputDims, logits, loss, values });

  const hyper = hyperInputs(b, opts);
  const grads = emitBackward(b, forwardCount, requires, logits, foldsSgd(opts) ? sgdSeed(b, loss.dLogits, hyper) : loss.dLogits);
  // Parameters that the loss does not depend on stay constants.
  const params = [...candidates].filter((p) => grads.has(p));
  for (const p of candidates) {
    if (grads.has(p)) continue;
    if (opts.trainable?.includes(p)) throw gridError('INVALID_INPUT', `trainable "${p}" does not affect the loss`, { param: p });
    b.consts.set(p, values.get(p)!);
  }

  const step = emitOptimizer(b, params, values, grads, opts, hyper);
  return assemblePlan(b, graph, opts, { ends, inputDims, logits, loss, step, bufferUpdates, values });
}

function checkOptions(opts: PlanOptions): void {
  if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
  if (opts.loss !== 'cross_entropy' && opts.loss !== 'mse') throw new RangeError(`opts.loss must be 'cross_entropy' or 'mse', got ${JSON.stringify(opts.loss)}`);
  if (!(opts.optimizer in HYPER)) throw new RangeError(`opts.optimizer must be 'sgd', 'momentum' or 'adam', got ${JSON.stringify(opts.optimizer)}`);
  if (opts.mode !== undefined && opts.mode !== 'train' && opts.mode !== 'eval') throw new RangeError(`opts.mode must be 'train' or 'eval'`);
  if (opts.trainable !== undefined && !Array.isArray(opts.trainable)) throw new TypeError('opts.trainable must be an array of initializer names');
}
