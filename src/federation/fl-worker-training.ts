// The training half of our FL worker: an accepted cycle's ONNX model trained on local data through our
// derived training plan (src/compute/train.ts, as data-centric training jobs do), for client_config's
// epochs / batch_size / lr / max_updates, and the diff the node averages: old − new (PyGrid's
// convention), one tensor per float32 initializer in graph order (the node's parameter order,
// src/node/fl/params.ts), with the number of samples trained on as its FedAvg weight.

import { gridError, toGridError, type GridError } from '../core/errors';
import type { FlCycle, FlJob, FlRejection, FlSpeeds, FlWorker } from '../core/fl-worker';
import type { StateTensor } from '../core/protocol/syft-state';
import type { NamedTensors } from '../core/protocol/tensor';
import type { LoadModelOptions } from '../compute/backend';
import { datasetSize, type Dataset } from '../compute/data';
import { modelParams } from '../compute/plan';
import { trainSteps, type Metrics, type TrainProgress, type TrainResult } from '../compute/train';

/** How a worker trains a cycle: client_config's keys (PyGrid's names), with defaults for what it leaves out. */
export interface FlTrainConfig {
  epochs: number;
  batchSize: number;
  lr: number | undefined;
  /** Optimisation steps at most (PyGrid's `max_updates`); none: every batch of every epoch. */
  maxUpdates: number | undefined;
  loss: 'cross_entropy' | 'mse';
  optimizer: 'sgd' | 'momentum' | 'adam';
  momentum: number | undefined;
  /** FedProx μ (client_config.fedprox_mu): each step is pulled towards the cycle's starting parameters. */
  fedProxMu: number | undefined;
  /** Differential privacy on the update before it is reported (client_config.privacy: {clip_norm, noise_multiplier}). */
  privacy: { clipNorm: number; noiseMultiplier: number } | undefined;
}

const LOSSES = ['cross_entropy', 'mse'] as const;
const OPTIMIZERS = ['sgd', 'momentum', 'adam'] as const;

function positiveInt(cfg: Record<string, unknown>, key: string): number | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw gridError('INVALID_INPUT', `client_config.${key} must be a positive whole number, got ${JSON.stringify(v)}`);
  return n;
}

function positiveNum(cfg: Record<string, unknown>, key: string): number | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw gridError('INVALID_INPUT', `client_config.${key} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  return n;
}

function oneOf<T extends string>(cfg: Record<string, unknown>, key: string, allowed: readonly T[], fallback: T): T {
  const v = cfg[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw gridError('INVALID_INPUT', `client_config.${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

function privacyOf(cfg: Record<string, unknown>): FlTrainConfig['privacy'] {
  const v = cfg.privacy;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw gridError('INVALID_INPUT', 'client_config.privacy must be {"clip_norm": C, "noise_multiplier": σ}');
  const p = v as Record<string, unknown>;
  const clipNorm = positiveNum(p, 'clip_norm');
  if (clipNorm === undefined || clipNorm === 0) throw gridError('INVALID_INPUT', 'client_config.privacy.clip_norm must be a positive number');
  return { clipNorm, noiseMultiplier: positiveNum(p, 'noise_multiplier') ?? 0 };
}

/**
 * The training settings of a process's client_config: PySyft's keys (batch_size, lr, max_updates) and
 * ours, named as for data-centric training (epochs, loss, optimizer, momentum, fedprox_mu, privacy).
 */
export function flTrainConfig(clientConfig: Record<string, unknown>): FlTrainConfig {
  return {
    epochs: positiveInt(clientConfig, 'epochs') ?? 1,
    batchSize: positiveInt(clientConfig, 'batch_size') ?? 32,
    lr: positiveNum(clientConfig, 'lr'),
    maxUpdates: positiveInt(clientConfig, 'max_updates'),
    loss: oneOf(clientConfig, 'loss', LOSSES, 'cross_entropy'),
    optimizer: oneOf(clientConfig, 'optimizer', OPTIMIZERS, 'sgd'),
    momentum: positiveNum(clientConfig, 'momentum'),
    fedProxMu: positiveNum(clientConfig, 'fedprox_mu'),
    privacy: privacyOf(clientConfig),
  };
}

/** The model's parameters as the node counts them: its float32 initializers, in graph order. */
export function flParams(model: Uint8Array): { name: string; tensor: StateTensor }[] {
  const out: { name: string; tensor: StateTensor }[] = [];
  for (const [name, t] of Object.entries(modelParams(model))) {
    if (t.dtype !== 'float32') continue;
    out.push({ name, tensor: { dims: [...t.dims], data: t.data as Float32Array } });
  }
  return out;
}

/** old − new for each parameter (unchanged ones, e.g. not trained, give zeros). */
export function flDiff(model: Uint8Array, trained: NamedTensors): StateTensor[] {
  return flParams(model).map(({ name, tensor }) => {
    const now = trained[name];
    const data = new Float32Array(tensor.data.length);
    if (now === undefined) return { dims: tensor.dims, data };
    const n = now.data as Float32Array;
    for (let i = 0; i < data.length; i++) data[i] = tensor.data[i]! - n[i]!;
    return { dims: tensor.dims, data };
  });
}

export interface FlTrainResult {
  diff: StateTensor[];
  /** The FedAvg weight: rows of the local data trained on (each counted once, whatever the epochs). */
  numSamples: number;
  steps: number;
  metrics: Metrics;
  /**
   * Wall time of the local training: deriving the plan, loading it into onnxruntime, the updates and the
   * diff (the updates of a small model take milliseconds; what a person waits for is all of it).
   */
  seconds: number;
  /** The model with the trained parameters (for evaluation before reporting). */
  trained: Uint8Array;
}

export interface FlTrainOptions {
  seed?: number;
  /** Only for tests: reproducible DP noise (real use draws it from the OS CSPRNG). */
  privacySeed?: number;
  loadOptions?: LoadModelOptions;
  signal?: AbortSignal;
  onProgress?(p: TrainProgress): void;
}

/** Trains an accepted cycle's ONNX model on local data and gives the diff to report. */
export async function trainFlCycle(model: Uint8Array, data: Dataset, cfg: FlTrainConfig, opts: FlTrainOptions = {}): Promise<FlTrainResult> {
  const started = performance.now();
  if (model.length === 0 || model[0] !== 0x08) {
    throw gridError('FL_NOT_TRAINABLE', 'this FL process serves a syft-proto State, not an ONNX model: our worker trains processes hosted from an ONNX model (a PySyft plan cannot run here)');
  }
  const it = trainSteps(data, {
    model, loss: cfg.loss, optimizer: cfg.optimizer, epochs: cfg.epochs, batchSize: cfg.batchSize,
    hyper: {
      ...(cfg.lr !== undefined && { lr: cfg.lr }),
      ...(cfg.momentum !== undefined && { momentum: cfg.momentum }),
      ...(cfg.fedProxMu !== undefined && { proxMu: cfg.fedProxMu }),
    },
    // FedProx pulls towards the model this cycle started from: the checkpoint the node served.
    ...(cfg.fedProxMu !== undefined && { fedProxGlobal: modelParams(model) }),
    ...(cfg.privacy !== undefined && { privacy: { ...cfg.privacy, ...(opts.privacySeed !== undefined && { seed: opts.privacySeed }) } }),
    ...(cfg.maxUpdates !== undefined && { maxSteps: cfg.maxUpdates }),
    seed: opts.seed ?? 0,
    progressEvery: 1,
    ...(opts.signal !== undefined && { signal: opts.signal }),
    ...(opts.loadOptions !== undefined && { loadOptions: opts.loadOptions }),
  });
  let result: TrainResult;
  let steps = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) { result = r.value; break; }
    steps = (r.value.epoch - 1) * r.value.batches + r.value.batch;
    if (!Number.isFinite(r.value.loss)) {
      await it.return(undefined as never);
      throw gridError('JOB_FAILED', `the training loss became ${r.value.loss} in epoch ${r.value.epoch}, batch ${r.value.batch}; lower client_config.lr or scale the features`);
    }
    opts.onProgress?.(r.value);
  }
  return {
    diff: flDiff(model, result.params),
    numSamples: Math.min(datasetSize(data), result.samples),
    steps, metrics: result.metrics, seconds: (performance.now() - started) / 1000, trained: result.model,
  };
}

export type FlCycleOutcome =
  | { status: 'reported'; cycle: FlCycle; result: FlTrainResult }
  | ({ status: 'rejected' } & FlRejection)
  | { status: 'error'; error: GridError };

/** Jobs whose process was found trainable here (checked once per job, before its first cycle request). */
const trainable = new WeakSet<FlJob>();

/**
 * Refuses, before a cycle is asked for, a process this worker could only fail at after taking a place in
 * it: one hosted with a syft-proto State (PyGrid's format) has no ONNX model, so no training plan can be
 * derived here (its plans are PySyft's). Nodes that do not describe their processes are not checked.
 */
async function checkTrainable(job: FlJob): Promise<void> {
  if (trainable.has(job)) return;
  const p = await job.processInfo();
  if (p?.format === 'state') {
    throw gridError('FL_NOT_TRAINABLE', `FL process ${p.name}@${p.version} has no ONNX training plan for this worker: it was hosted with a syft-proto State model (PyGrid's format), so there is no ONNX model to derive one from, and its own plans are PySyft's. Join it with a PySyft-family worker (syft.js, KotlinSyft, SwiftSyft), or host the model as ONNX (grid fl host MODEL.onnx)`, { process: `${p.name}@${p.version}`, format: p.format });
  }
  trainable.add(job);
}

/**
 * One cycle of a job: ask, and when accepted train on `data` and report. Never rejects: a refusal or a
 * failure is the outcome (the job's own events fire as well).
 */
export async function runFlCycle(job: FlJob, data: Dataset, opts: FlCycleOptions = {}): Promise<FlCycleOutcome> {
  try {
    await checkTrainable(job);
  } catch (err) {
    return { status: 'error', error: toGridError(err) };
  }
  const outcome = await job.start({ ...(opts.speeds !== undefined && { speeds: opts.speeds }), ...(opts.speedTestBytes !== undefined && { speedTestBytes: opts.speedTestBytes }) });
  if (outcome.status === 'rejected') return outcome;
  if (outcome.status === 'error') return outcome;
  const cycle = outcome.cycle;
  try {
    const cfg = flTrainConfig(cycle.clientConfig);
    opts.onAccepted?.(cycle, cfg);
    const result = await trainFlCycle(cycle.model, data, cfg, opts);
    await job.report(result.diff, result.numSamples);
    return { status: 'reported', cycle, result };
  } catch (err) {
    return { status: 'error', error: toGridError(err) };
  }
}

export type FlCycleOptions = FlTrainOptions & { speeds?: FlSpeeds; speedTestBytes?: number; onAccepted?(cycle: FlCycle, cfg: FlTrainConfig): void };

export interface FlCyclesOptions extends FlCycleOptions {
  /** Cycles to take part in. Default 1. */
  cycles?: number;
  /**
   * How long to keep asking while the node turns the worker away (the cycle is full, this worker is in it
   * already, the reuse rule…), in ms; 0 (the default): stop at the first refusal.
   */
  maxWaitMs?: number;
  /** Between two asks: this, or the time left in the cycle when that is shorter. Default 2000 ms. */
  pollMs?: number;
  /** Each cycle's outcome as it comes (rejections included, once per wait). */
  onOutcome?(outcome: FlCycleOutcome): void;
}

export interface FlCyclesResult {
  /** Cycles this worker reported, in order. */
  reported: Extract<FlCycleOutcome, { status: 'reported' }>[];
  /** What ended the run: the last report when every cycle was done, else the refusal or error. */
  last: FlCycleOutcome;
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const timer = setTimeout(done, ms);
    function done() { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Several cycles of one job (one worker id), as a device that stays in a process: after each report it
 * asks again, waiting while the node turns it away (the next cycle opens only when this one closes), for
 * at most `maxWaitMs` per cycle. Never rejects.
 */
export async function runFlCycles(job: FlJob, data: Dataset, opts: FlCyclesOptions = {}): Promise<FlCyclesResult> {
  const cycles = opts.cycles ?? 1;
  if (!(Number.isInteger(cycles) && cycles >= 1)) throw new RangeError(`opts.cycles must be a positive integer, got ${opts.cycles}`);
  const pollMs = opts.pollMs ?? 2000;
  const reported: FlCyclesResult['reported'] = [];
  let last: FlCycleOutcome | undefined;
  while (reported.length < cycles) {
    const waitUntil = performance.now() + (opts.maxWaitMs ?? 0);
    for (;;) {
      last = await runFlCycle(job, data, opts);
      opts.onOutcome?.(last);
      if (last.status !== 'rejected' || opts.signal?.aborted) break;
      const left = waitUntil - performance.now();
      if (left <= 0) break;
      await pause(Math.min(left, pollMs, last.timeoutS !== undefined ? Math.max(100, last.timeoutS * 1000) : Infinity), opts.signal);
    }
    if (last.status !== 'reported') break;
    reported.push(last);
  }
  return { reported, last: last! };
}

/** A worker's job for `name@version`, run for one cycle on `data`. */
export function joinFl(worker: FlWorker, req: { modelName: string; modelVersion?: string; authToken?: string }, data: Dataset, opts: FlCycleOptions = {}): Promise<FlCycleOutcome> {
  const job = worker.newJob(req);
  return runFlCycle(job, data, opts).finally(() => job.dispose());
}
