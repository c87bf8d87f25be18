// What a training plan is to its callers: the options it is built with, the PlanInfo describing its inputs
// and outputs (also stored in the plan's metadata), and the hyper-parameters each optimiser takes.

import { gridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { decodeModel } from '../onnx/model';
import type { Dim, FloatType } from './ir';

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
  /**
   * SGD only: fold the update into the backward pass (seeded with −lr·dLoss/dLogits, so each update is one
   * addition, done by the weight gradient's Gemm where there is one). Off by default: on a quiet machine
   * it was never faster than the Mul and Sub per parameter (bench:train, 256-512-512-10, batch 128, four
   * runs: 116/124, 117/124, 122/122, 130/129 GFLOP/s folded/not; it won only under heavy load). Not with emitGradients, whose
   * gradients are handed out unscaled.
   */
  fuseSgd?: boolean;
  /** Also output each parameter's gradient as `grad.<param>` (and Adam's bias-corrected step size as `adam.step_size`). */
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
    /** Adam with emitGradients: the bias-corrected step size lr·√(1 − β2^t) / (1 − β1^t), a scalar. */
    stepSize?: string;
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

/** Scalar hyper-parameter inputs each optimiser takes, in input order. */
export const HYPER: Record<OptimizerKind, string[]> = { sgd: ['lr'], momentum: ['lr', 'momentum'], adam: ['lr', 'beta1', 'beta2', 'epsilon', 'step'] };

/** Reads the PlanInfo a plan carries in its metadata. */
export function readPlanInfo(bytes: Uint8Array): PlanInfo {
  const m = decodeModel(bytes);
  const entry = (m.metadataProps ?? []).find((p) => p.key === PLAN_METADATA_KEY);
  if (!entry?.value) throw gridError('INVALID_MODEL', 'the model is not a training plan (no grid.plan metadata)');
  return JSON.parse(entry.value) as PlanInfo;
}
