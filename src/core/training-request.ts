// One mapping from a caller's words (camelCase options: the CLI's flags, the palette's answers, a
// notebook cell's options, a FedAvg round) to the train message, so the four callers cannot drift apart.
// A field left out stays out of the message: the node's own default (or inheritance) applies.

import type { DatasetInfo } from './protocol/messages';
import type { NamedTensors } from './protocol/tensor';
import { TRAINING_DEFAULTS } from './protocol/training-defaults';
import type { TrainRequest } from './protocol/training-messages';
import type { NodeTrainOptions } from './training-client';

export interface TrainOptions {
  /** A hosted model (`name` or `name@N`) or ONNX bytes to upload. */
  model: string | Uint8Array;
  /** Starting parameters replacing the model's initializers (an FL round's global model). */
  params?: NamedTensors;
  datasetId: string;
  loss: TrainRequest['loss'];
  /** Default TRAINING_DEFAULTS.optimizer. */
  optimizer?: TrainRequest['optimizer'];
  lr?: number;
  momentum?: number;
  /** Default TRAINING_DEFAULTS.batchSize. */
  batchSize?: number;
  /** Default TRAINING_DEFAULTS.epochs. */
  epochs?: number;
  label?: string;
  featureScale?: number;
  seed?: number;
  splitSeed?: number;
  validationSplit?: number;
  testSplit?: number;
  progressEvery?: number;
  /** Differential privacy on the returned update. */
  privacy?: { clipNorm: number; noiseMultiplier: number };
  fedProxMu?: number;
  output?: TrainRequest['output'];
  /** A new model id for the result, instead of the next version of the model trained. */
  outputId?: string;
  /** Left out unless given: the node then copies the flags of the hosted model trained from (core/permissions). */
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
}

/** The train message for `o` (with the model and parameters as TrainingClient.start takes them). */
export function trainRequest(o: TrainOptions): NodeTrainOptions {
  const req: NodeTrainOptions = {
    model: o.model, dataset_id: o.datasetId, loss: o.loss,
    optimizer: o.optimizer ?? TRAINING_DEFAULTS.optimizer, batch_size: o.batchSize ?? TRAINING_DEFAULTS.batchSize, epochs: o.epochs ?? TRAINING_DEFAULTS.epochs,
  };
  if (o.params !== undefined) req.params = o.params;
  if (o.lr !== undefined) req.lr = o.lr;
  if (o.momentum !== undefined) req.momentum = o.momentum;
  if (o.label !== undefined) req.label = o.label;
  if (o.featureScale !== undefined) req.feature_scale = o.featureScale;
  if (o.seed !== undefined) req.seed = o.seed;
  if (o.splitSeed !== undefined) req.split_seed = o.splitSeed;
  if (o.validationSplit !== undefined) req.validation_split = o.validationSplit;
  if (o.testSplit !== undefined) req.test_split = o.testSplit;
  if (o.progressEvery !== undefined) req.progress_every = o.progressEvery;
  if (o.privacy !== undefined) req.privacy = { clip_norm: o.privacy.clipNorm, noise_multiplier: o.privacy.noiseMultiplier };
  if (o.fedProxMu !== undefined) req.fedprox_mu = o.fedProxMu;
  if (o.output !== undefined) req.output = o.output;
  if (o.outputId !== undefined) req.output_model_id = o.outputId;
  if (o.allowDownload !== undefined) req.allow_download = o.allowDownload;
  if (o.allowRemoteInference !== undefined) req.allow_remote_inference = o.allowRemoteInference;
  return req;
}

/** The loss a dataset wants when the caller names none: cross-entropy for classes, else squared error. */
export function lossFor(d: Pick<DatasetInfo, 'schema' | 'tags'>): TrainRequest['loss'] {
  return d.schema.classes !== undefined || d.tags.includes('classification') ? 'cross_entropy' : 'mse';
}
