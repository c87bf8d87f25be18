// Training on a node's data (data-centric): one schema per message, shared by the TrainingClient and the
// node's training handlers (src/node/training). Only metrics and parameters ever travel; rows never do.
// Job lifecycle and FedAvg design: docs/training.md.

import { z } from 'zod';
import { defineRequest, defineStream, TRANSFER_ID } from './catalogue';
import { DTYPES } from './tensor';
import { ModelInfo } from './messages';

const Id = z.string().min(1).max(1024);
const JobId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const Fraction = z.number().min(0).lt(1);

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const Metrics = z.object({ loss: z.number(), accuracy: z.number() });
export type Metrics = z.infer<typeof Metrics>;

/** Where the training rows come from: a dataset registered on the node, read there. */
const DataSelection = {
  dataset_id: Id,
  /** CSV column holding the label: its name or 0-based index. The dataset's label, else the last column. */
  label: z.string().min(1).max(256).optional(),
  /** Every feature is multiplied by this (e.g. 0.0625 for the 0..16 digits pixels). */
  feature_scale: z.number().positive().finite().optional(),
  /** Rows held out (seeded shuffle) and never trained on; a train job reports its metrics at the end. */
  test_split: Fraction.optional(),
  /** Seed of shuffling (and of the splits unless split_seed is given). */
  seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  /** Seed of the test split alone, so FL rounds can reshuffle while the test rows stay put. */
  split_seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
};

/** The model to start from: a hosted model (`name` or `name@N`) or uploaded ONNX bytes; parameters optionally replaced. */
const ModelSelection = {
  model_id: Id.optional(),
  model_transfer_id: TRANSFER_ID.optional(),
  /** Starting parameters (encodeNamedTensors bytes, uploaded), e.g. an FL round's global model. */
  params_transfer_id: TRANSFER_ID.optional(),
};

export { TRAINING_DEFAULTS } from './training-defaults';

export const TrainRequest = z.object({
  ...ModelSelection,
  ...DataSelection,
  loss: z.enum(['cross_entropy', 'mse']),
  optimizer: z.enum(['sgd', 'momentum', 'adam']),
  lr: z.number().positive().finite().optional(),
  momentum: z.number().min(0).lt(1).optional(),
  weight_decay: z.number().min(0).finite().optional(),
  batch_size: z.number().int().min(1).max(65536),
  epochs: z.number().int().min(1).max(100_000),
  /** Rows held out of the training part for per-epoch validation metrics. */
  validation_split: Fraction.optional(),
  /** A batch progress event every this many batches (epoch events always come). Default 10. */
  progress_every: z.number().int().min(1).max(1_000_000).optional(),
  /** Differential privacy on the returned update: clip its L2 norm, add Gaussian noise σ·C. */
  privacy: z.object({ clip_norm: z.number().positive().finite(), noise_multiplier: z.number().min(0).finite() }).strict().optional(),
  /** FedProx: proximal term μ towards the starting parameters. */
  fedprox_mu: z.number().positive().finite().optional(),
  /** 'model' (default): store the trained model as a new model version. 'update': keep the parameters for job-params (FL). */
  output: z.enum(['model', 'update']).optional(),
  /**
   * A new model id for the result (version 1; refused if taken). By default the result is the next version
   * of the hosted model trained (`trained-<job>` for uploaded bytes).
   */
  output_model_id: Id.optional(),
  /** Permissions of the stored model; inherited from the hosted parent unless given. */
  allow_download: z.boolean().optional(),
  allow_remote_inference: z.boolean().optional(),
}).strict();
export type TrainRequest = z.infer<typeof TrainRequest>;

export const TensorSpec = z.object({ name: z.string(), dtype: z.enum(DTYPES), dims: z.array(z.number()) });

export const PrivacyRecord = z.object({ clip_norm: z.number(), noise_multiplier: z.number(), update_norm: z.number(), clipped: z.boolean() });

export const JobResult = z.object({
  /** Last epoch's training metrics. */
  metrics: Metrics,
  validation: Metrics.optional(),
  /** Metrics on the held-out test split, when one was asked for. */
  test: Metrics.optional(),
  /** Rows trained on in each epoch (an FL update's weight). */
  samples: z.number(),
  seconds: z.number(),
  privacy: PrivacyRecord.optional(),
  /** output 'model': the stored model version. */
  model: ModelInfo.optional(),
  /** output 'update': the tensors job-params returns. */
  params: z.array(TensorSpec).optional(),
});
export type JobResult = z.infer<typeof JobResult>;

export const JobProgress = z.object({
  epoch: z.number(),
  epochs: z.number(),
  batch: z.number(),
  batches: z.number(),
  loss: z.number(),
  accuracy: z.number(),
  samples_per_second: z.number(),
  eta_seconds: z.number(),
  validation: Metrics.optional(),
});
export type JobProgress = z.infer<typeof JobProgress>;

export const JobInfo = z.object({
  id: JobId,
  state: z.enum(JOB_STATES),
  owner: z.string(),
  dataset_id: z.string(),
  /** The hosted model version trained from (`name@N`), if any. */
  model_id: z.string().optional(),
  output: z.enum(['model', 'update']),
  epochs: z.number(),
  /** ISO 8601. */
  created: z.string(),
  started: z.string().optional(),
  finished: z.string().optional(),
  /** The latest progress. */
  progress: JobProgress.optional(),
  /** Sequence number of the job's latest event. */
  last_seq: z.number(),
  result: JobResult.optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
});
export type JobInfo = z.infer<typeof JobInfo>;

export const JobEvent = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('state'), seq: z.number(), job_id: z.string(), state: z.enum(JOB_STATES) }),
  z.object({ kind: z.enum(['batch', 'epoch']), seq: z.number(), job_id: z.string(), ...JobProgress.shape }),
  /** Events older than the node's bounded history were dropped; `missed` of them. */
  z.object({ kind: z.literal('gap'), seq: z.number(), job_id: z.string(), missed: z.number() }),
]);
export type JobEvent = z.infer<typeof JobEvent>;

// client → node: start a training job on a dataset of the node. Answers at once with the queued job;
// follow it with watch-job.
export const Train = defineRequest('train', {
  request: TrainRequest,
  reply: z.object({ job: JobInfo }),
});

// client → node: the job's events after `after_seq` (its history first, then live), ending with the
// final job. Reattaching after a disconnect or from another client works the same way.
export const WatchJob = defineStream('watch-job', {
  request: z.object({ job_id: JobId, after_seq: z.number().int().min(0).optional() }).strict(),
  event: JobEvent,
  end: z.object({ job: JobInfo }),
  resubscribe: true,
});

// client → node: the caller's jobs (an admin sees every job), newest first.
export const ListJobs = defineRequest('list-jobs', {
  request: z.object({}).strict().optional(),
  reply: z.object({ jobs: z.array(JobInfo) }),
  idempotent: true,
});

// client → node: one job.
export const GetJob = defineRequest('job-info', {
  request: z.object({ job_id: JobId }).strict(),
  reply: z.object({ job: JobInfo }),
  idempotent: true,
});

// client → node: stop a queued or running job; answers once it has stopped.
export const CancelJob = defineRequest('cancel-job', {
  request: z.object({ job_id: JobId }).strict(),
  reply: z.object({ job: JobInfo }),
  idempotent: true,
});

// client → node: the trained parameters of a finished output:'update' job, as the reply's binary
// attachment (encodeNamedTensors), with the sample count that weighs them in FedAvg.
export const JobParams = defineRequest('job-params', {
  request: z.object({ job_id: JobId }).strict(),
  reply: z.object({ job_id: z.string(), samples: z.number(), params: z.array(TensorSpec), privacy: PrivacyRecord.optional() }),
  idempotent: true,
});

// client → node: loss and accuracy of a model (with optional replacement parameters) on a node dataset,
// or on its held-out test split.
export const Evaluate = defineRequest('evaluate', {
  request: z.object({
    ...ModelSelection,
    ...DataSelection,
    loss: z.enum(['cross_entropy', 'mse']),
  }).strict(),
  reply: z.object({ metrics: Metrics, samples: z.number() }),
  idempotent: true,
});

/** How a stored model version came to be (recorded by the node when a job stores its model). */
export const TrainingRecord = z.object({
  model_id: z.string(),
  /** The stored version (absent in records written before versions). */
  model_version: z.string().optional(),
  job_id: z.string(),
  /** The version trained from, `name@N` (a plain id in records written before versions). */
  parent_model_id: z.string().nullable(),
  dataset_id: z.string(),
  label: z.string(),
  loss: z.string(),
  optimizer: z.string(),
  hyper: z.record(z.string(), z.number()),
  epochs: z.number(),
  batch_size: z.number(),
  seed: z.number(),
  samples: z.number(),
  metrics: Metrics,
  validation: Metrics.optional(),
  test: Metrics.optional(),
  privacy: PrivacyRecord.optional(),
  created: z.string(),
});
export type TrainingRecord = z.infer<typeof TrainingRecord>;

// client → node: the training record of a model version.
export const ModelTraining = defineRequest('model-training', {
  request: z.object({ model_id: Id }).strict(),
  reply: z.object({ record: TrainingRecord }),
  idempotent: true,
});
