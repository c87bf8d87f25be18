// Training jobs on a node: a bounded queue, at most `maxRunning` at once, each with an id, a bounded event
// history (so a client that reattaches gets what it missed), cancellation, and a result that outlives
// the connection that started it. A finished job stores its model as the next version of the model it
// trained (lineage: parent name@version and job id), or keeps its parameters for job-params (an FL update).

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ErrorCodes, gridError, GridError, toGridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { redactError } from '../rpc/redact';
import { modelRef, type ModelInfo } from '../../core/protocol/messages';
import type { NamedTensors } from '../../core/protocol/tensor';
import type { JobEvent, JobInfo, JobProgress, JobResult, JobState, TrainRequest } from '../../core/protocol/training-messages';
import type { Dataset } from '../../compute/data';
import { modelParams } from '../../compute/plan';
import { evaluateModel, trainSteps, type TrainProgress, type TrainResult } from '../../compute/train';
import type { NodeEvents } from '../events';
import type { ModelStore } from '../models';
import type { TrainingRecords } from './records';

export interface JobSpec {
  owner: string;
  /** The owner's role: an admin may add versions to anyone's model. */
  role?: string;
  request: TrainRequest;
  /** The hosted model it came from. */
  parent?: ModelInfo;
  /** The label column's name. */
  label: string;
}

/** What a job trains with; dropped when it ends, so a finished job holds only its result. */
export interface JobInputs {
  /** The forward model (ONNX bytes). */
  model: Uint8Array;
  /** Starting parameters replacing the model's initializers. */
  params?: NamedTensors;
  train: Dataset;
  test?: Dataset;
}

export interface TrainingJobsOptions {
  models: ModelStore;
  events: NodeEvents;
  records: TrainingRecords;
  /** Where trained models are written before the model store adopts them. */
  dir: string;
  log: Logger;
  /** onnxruntime threads per training session; 1 keeps the node responsive on small machines. */
  threads?: number;
  maxRunning?: number;
  maxQueued?: number;
  /** Events kept per job for clients that reattach. */
  maxEvents?: number;
  /** Finished jobs kept (with their results) before the oldest is forgotten. */
  maxFinished?: number;
  /** Called when a stored model changes the model count. */
  onModelAdded?(model: ModelInfo): void;
}

type Listener = (ev: JobEvent) => void;
/** A job event before the job numbers it. */
type NewEvent = JobEvent extends infer E ? (E extends JobEvent ? Omit<E, 'seq' | 'job_id'> : never) : never;

const finishedStates: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

export class Job {
  readonly id = `job-${randomBytes(6).toString('hex')}`;
  readonly spec: JobSpec;
  inputs: JobInputs | undefined;
  readonly created = new Date().toISOString();
  readonly controller = new AbortController();
  state: JobState = 'queued';
  started: string | undefined;
  finished: string | undefined;
  progress: JobProgress | undefined;
  result: JobResult | undefined;
  error: GridError | undefined;
  /** Trained parameters of an output:'update' job, for job-params. */
  params: NamedTensors | undefined;
  private seq = 0;
  private readonly history: JobEvent[] = [];
  private readonly maxEvents: number;
  private readonly listeners = new Set<Listener>();
  private settle!: () => void;
  /** Resolves when the job reaches a final state. */
  readonly settled: Promise<void>;

  constructor(spec: JobSpec, inputs: JobInputs, maxEvents: number) {
    this.spec = spec;
    this.inputs = inputs;
    this.maxEvents = maxEvents;
    this.settled = new Promise((r) => { this.settle = r; });
  }

  get isFinished(): boolean {
    return finishedStates.has(this.state);
  }

  get lastSeq(): number {
    return this.seq;
  }

  /** Appends an event to the bounded history and tells the watchers. */
  record(ev: NewEvent): void {
    const full = { ...ev, seq: ++this.seq, job_id: this.id } as JobEvent;
    this.history.push(full);
    if (this.history.length > this.maxEvents) this.history.shift();
    for (const l of [...this.listeners]) l(full);
  }

  setState(state: JobState): void {
    this.state = state;
    this.record({ kind: 'state', state });
    if (this.isFinished) {
      this.finished = new Date().toISOString();
      this.inputs = undefined;
      this.listeners.clear();
      this.settle();
    }
  }

  /** Events after `afterSeq` still held, and how many newer than it were already dropped. */
  since(afterSeq: number): { missed: number; events: JobEvent[] } {
    const first = this.history[0]?.seq ?? this.seq + 1;
    const missed = Math.max(0, first - afterSeq - 1);
    return { missed, events: this.history.filter((e) => e.seq > afterSeq) };
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  info(): JobInfo {
    const r = this.spec.request;
    const out: JobInfo = {
      id: this.id, state: this.state, owner: this.spec.owner, dataset_id: r.dataset_id,
      output: r.output ?? 'model', epochs: r.epochs, created: this.created, last_seq: this.seq,
    };
    if (this.spec.parent) out.model_id = modelRef(this.spec.parent);
    if (this.started) out.started = this.started;
    if (this.finished) out.finished = this.finished;
    if (this.progress) out.progress = this.progress;
    if (this.result) out.result = this.result;
    if (this.error) out.error = { code: this.error.code, message: this.error.message };
    return out;
  }
}

function toProgress(p: TrainProgress): JobProgress {
  const out: JobProgress = {
    epoch: p.epoch, epochs: p.epochs, batch: p.batch, batches: p.batches, loss: p.loss, accuracy: p.accuracy,
    samples_per_second: p.samplesPerSecond, eta_seconds: p.etaSeconds,
  };
  if (p.validation) out.validation = p.validation;
  return out;
}

/**
 * Empties the results dir at start. A file there is only ever a result on its way into the model store
 * (which moves it into its blobs, or removes it, before the job ends), and jobs do not survive a restart:
 * no committed model refers to one, so anything found is from a process killed while storing.
 */
export function sweepResults(dir: string): number {
  fs.mkdirSync(dir, { recursive: true });
  let removed = 0;
  for (const name of fs.readdirSync(dir)) {
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

export class TrainingJobs {
  private readonly opts: Required<Omit<TrainingJobsOptions, 'onModelAdded'>> & Pick<TrainingJobsOptions, 'onModelAdded'>;
  private readonly jobs = new Map<string, Job>();
  private readonly queue: Job[] = [];
  private running = 0;
  private closed = false;

  constructor(opts: TrainingJobsOptions) {
    this.opts = { threads: 1, maxRunning: 2, maxQueued: 64, maxEvents: 1000, maxFinished: 100, ...opts };
    const swept = sweepResults(this.opts.dir);
    if (swept > 0) this.opts.log.info({ swept }, 'removed training results left by a job interrupted while storing its model');
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  list(): Job[] {
    return [...this.jobs.values()].reverse();
  }

  submit(spec: JobSpec, inputs: JobInputs): Job {
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    if (this.queue.length >= this.opts.maxQueued) throw gridError('BUSY', `the node already has ${this.queue.length} training jobs queued; wait for some to finish`);
    const job = new Job(spec, inputs, this.opts.maxEvents);
    this.jobs.set(job.id, job);
    job.setState('queued');
    this.queue.push(job);
    this.forgetOld();
    this.pump();
    return job;
  }

  /** Stops a job; resolves once it has stopped. */
  async cancel(job: Job): Promise<void> {
    if (job.isFinished) return;
    const queued = this.queue.indexOf(job);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      job.error = gridError('ABORTED', 'cancelled before it started');
      job.setState('cancelled');
      return;
    }
    job.controller.abort(gridError('ABORTED', 'cancelled while running'));
    await job.settled;
  }

  private pump(): void {
    while (!this.closed && this.running < this.opts.maxRunning && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      void this.run(job).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private forgetOld(): void {
    const finished = [...this.jobs.values()].filter((j) => j.isFinished);
    for (const j of finished.slice(0, Math.max(0, finished.length - this.opts.maxFinished))) this.jobs.delete(j.id);
  }

  private async run(job: Job): Promise<void> {
    const { spec } = job;
    const input = job.inputs!;
    const r = spec.request;
    const log = this.opts.log;
    job.started = new Date().toISOString();
    job.setState('running');
    log.info({ job: job.id, owner: spec.owner, dataset: r.dataset_id, model: spec.parent && modelRef(spec.parent), epochs: r.epochs }, 'training job started');
    try {
      const it = trainSteps(input.train, {
        model: input.model,
        loss: r.loss,
        optimizer: r.optimizer,
        hyper: {
          ...(r.lr !== undefined && { lr: r.lr }),
          ...(r.momentum !== undefined && { momentum: r.momentum }),
          ...(r.weight_decay !== undefined && { weightDecay: r.weight_decay }),
          ...(r.fedprox_mu !== undefined && { proxMu: r.fedprox_mu }),
        },
        epochs: r.epochs,
        batchSize: r.batch_size,
        seed: r.seed ?? 0,
        ...(r.validation_split !== undefined && { validationSplit: r.validation_split }),
        ...(input.params !== undefined && { params: input.params }),
        // FedProx pulls towards where this round started: the given parameters, else the model's own.
        ...(r.fedprox_mu !== undefined && { fedProxGlobal: { ...modelParams(input.model), ...input.params } }),
        ...(r.privacy !== undefined && { privacy: { clipNorm: r.privacy.clip_norm, noiseMultiplier: r.privacy.noise_multiplier } }),
        // Every batch comes back here so the node can yield to other requests between batches; only every
        // progress_every-th is reported.
        progressEvery: 1,
        signal: job.controller.signal,
        loadOptions: { intraOpNumThreads: this.opts.threads },
        ...(r.weight_decay !== undefined && { plan: { weightDecay: true } }),
      });
      const every = r.progress_every ?? 10;
      let trained: TrainResult;
      for (;;) {
        const step = await it.next();
        if (step.done) { trained = step.value; break; }
        const p = step.value;
        if (!Number.isFinite(p.loss)) {
          await it.return(undefined as never);
          throw gridError('JOB_FAILED', `the training loss became ${p.loss} in epoch ${p.epoch}, batch ${p.batch}; lower the learning rate or scale the features`);
        }
        job.progress = toProgress(p);
        if (p.kind === 'epoch' || p.batch % every === 0) job.record({ kind: p.kind, ...job.progress });
        // Let the node answer other requests between batches even if onnxruntime resolved synchronously.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // samples: rows trained on per epoch, the update's FedAvg weight (trainSteps counts all epochs).
      const result: JobResult = { metrics: trained.metrics, samples: Math.round(trained.samples / r.epochs), seconds: trained.seconds };
      if (trained.validation) result.validation = trained.validation;
      if (trained.privacy) {
        const p = trained.privacy;
        result.privacy = { clip_norm: p.clipNorm, noise_multiplier: p.noiseMultiplier, update_norm: p.updateNorm, clipped: p.clipped };
      }
      if (input.test) result.test = await evaluateModel(trained.model, input.test, { loss: r.loss, loadOptions: { intraOpNumThreads: this.opts.threads } });
      if (job.controller.signal.aborted) throw job.controller.signal.reason;
      if ((r.output ?? 'model') === 'model') {
        result.model = await this.store(job, trained.model, result);
      } else {
        job.params = trained.params;
        result.params = Object.entries(trained.params).map(([name, t]) => ({ name, dtype: t.dtype, dims: [...t.dims] }));
      }
      job.result = result;
      job.setState('succeeded');
      log.info({ job: job.id, seconds: result.seconds, accuracy: result.metrics.accuracy, test: result.test?.accuracy, model: result.model && modelRef(result.model) }, 'training job succeeded');
    } catch (err) {
      const e = job.controller.signal.aborted ? toGridError(job.controller.signal.reason) : toGridError(err, 'JOB_FAILED');
      // job-info and watch-job show this error to the client: no server paths in it (the log keeps them).
      const shown = redactError(e, [path.dirname(this.opts.dir)]);
      job.error = shown.code === ErrorCodes.INTERNAL ? new GridError(ErrorCodes.JOB_FAILED, shown.message, shown.details) : shown;
      job.setState(e.code === ErrorCodes.ABORTED ? 'cancelled' : 'failed');
      if (e.code === ErrorCodes.ABORTED) log.info({ job: job.id }, 'training job cancelled');
      else log.warn({ job: job.id, code: e.code, err: e.message }, 'training job failed');
    }
  }

  /**
   * Stores the trained model as the next version of the model it came from (or as `output_model_id`, or
   * `trained-<job>` for uploaded bytes), with its lineage, and records how it was made.
   */
  private async store(job: Job, bytes: Uint8Array, result: JobResult): Promise<ModelInfo> {
    const { spec } = job;
    const r = spec.request;
    const models = this.opts.models;
    const parent = spec.parent;
    const admin = spec.role === 'admin';
    // The next version of the parent, if this user may add one (its owner or an admin); else a model of their own.
    const asVersion = r.output_model_id === undefined && parent !== undefined && models.mayAddVersion(parent.id, spec.owner, admin);
    const id = r.output_model_id ?? (asVersion ? parent!.id : `trained-${job.id}`);
    const hyper: Record<string, number> = {};
    if (r.lr !== undefined) hyper.lr = r.lr;
    if (r.momentum !== undefined) hyper.momentum = r.momentum;
    if (r.weight_decay !== undefined) hyper.weight_decay = r.weight_decay;
    if (r.fedprox_mu !== undefined) hyper.fedprox_mu = r.fedprox_mu;
    // The result file is handed to the model store, which moves it into its blobs or removes it; one left
    // here by a kill is swept at the next start (sweepResults).
    await fsp.mkdir(this.opts.dir, { recursive: true });
    const file = path.join(this.opts.dir, `${job.id}.onnx`);
    await fsp.writeFile(file, bytes);
    const model = await models.host({
      id, newVersion: asVersion, jobId: job.id, owner: spec.owner, admin,
      ...(parent && { name: parent.name, parent: modelRef(parent) }),
      allowDownload: r.allow_download ?? parent?.allow_download ?? false,
      allowRemoteInference: r.allow_remote_inference ?? parent?.allow_remote_inference ?? false,
      file, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'),
      // Committed with the model's row: a trained model is never listed without how it was made.
      alongside: (info) => this.opts.records.put({
        model_id: info.id, model_version: info.version, job_id: job.id, parent_model_id: parent ? modelRef(parent) : null, dataset_id: r.dataset_id, label: spec.label,
        loss: r.loss, optimizer: r.optimizer, hyper, epochs: r.epochs, batch_size: r.batch_size, seed: r.seed ?? 0,
        samples: result.samples, metrics: result.metrics,
        ...(result.validation && { validation: result.validation }),
        ...(result.test && { test: result.test }),
        ...(result.privacy && { privacy: result.privacy }),
        created: info.created,
      }, Number(info.version), info.sha256),
    });
    this.opts.events.emit({ event: 'model-added', model });
    this.opts.onModelAdded?.(model);
    return model;
  }

  /** Cancels every job and waits for running ones to stop; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) {
      job.error = gridError('ABORTED', 'the node shut down before the job started');
      job.setState('cancelled');
    }
    const running = [...this.jobs.values()].filter((j) => !j.isFinished);
    for (const j of running) j.controller.abort(gridError('ABORTED', 'the node is shutting down'));
    await Promise.all(running.map((j) => j.settled));
  }
}
