// Training on a node, from the client side: start a job, follow or reattach to its events, cancel it,
// fetch an FL update's parameters, evaluate on a node's data. GridClient exposes it as `client.training`.

import { ErrorCodes, gridError, GridError, toGridError } from './errors';
import type { ReplyOf, RequestOf } from './protocol/catalogue';
import { decodeNamedTensors, encodeNamedTensors, type NamedTensors } from './protocol/tensor';
import {
  CancelJob, Evaluate, GetJob, JobParams, ListJobs, ModelTraining, Train, WatchJob,
  type JobEvent, type JobInfo, type Metrics, type TrainingRecord, type TrainRequest,
} from './protocol/training-messages';
import type { GridSocket } from './socket/grid-socket';
import { bufferSource } from './socket/transfer';

type ModelRef = {
  /** A hosted model's id, or ONNX bytes uploaded with the request. */
  model: string | Uint8Array;
  /** Starting parameters replacing the model's initializers (sent with the binary tensor codec). */
  params?: NamedTensors;
};

/** The train message's fields, with the model and starting parameters given directly. */
export type NodeTrainOptions = Omit<TrainRequest, 'model_id' | 'model_transfer_id' | 'params_transfer_id'> & ModelRef;

export type NodeEvaluateOptions = Omit<RequestOf<typeof Evaluate>, 'model_id' | 'model_transfer_id' | 'params_transfer_id'> & ModelRef;

export interface WatchOptions {
  /** Events after this sequence number (0: the job's whole kept history). */
  afterSeq?: number;
  signal?: AbortSignal;
  onEvent?(ev: JobEvent): void;
}

export interface FollowOptions extends WatchOptions {
  /** Aborting this cancels the job on the node; following goes on until the node says it stopped (unless `signal` stops it first). */
  cancel?: AbortSignal;
  /** The job as it changes: after each state or progress event, and once more as it ended (succeeded, failed or cancelled). */
  onUpdate?(job: JobInfo, ev?: JobEvent): void;
  /** The cancel request failed (the job may run on); the follow itself goes on. */
  onCancelFailed?(error: GridError): void;
}

/** `job` after `ev`: a state or progress event changes it; a gap does not (undefined). */
export function foldJobEvent(job: JobInfo, ev: JobEvent): JobInfo | undefined {
  if (ev.kind === 'state') return { ...job, state: ev.state };
  if (ev.kind === 'gap') return undefined;
  const { kind: _k, seq: _s, job_id: _j, ...progress } = ev;
  return { ...job, state: 'running', progress };
}

export interface JobUpdate {
  params: NamedTensors;
  samples: number;
  privacy?: ReplyOf<typeof JobParams>['privacy'];
}

/** A job that ended other than by succeeding, as the error its caller sees. */
export function jobError(job: JobInfo): GridError {
  if (job.state === 'cancelled') {
    // The node's reason already says "cancelled …" (before it started, while running): do not say it twice.
    const why = job.error?.message.replace(/^(the job was )?cancelled\s*/i, '').trim();
    return new GridError(ErrorCodes.ABORTED, `training job ${job.id} was cancelled${why ? ` ${why.startsWith('(') || /^(before|while|by|in)\b/.test(why) ? why : `(${why})`}` : ''}`, { job_id: job.id });
  }
  const code = job.error?.code;
  const known = code !== undefined && (Object.values(ErrorCodes) as string[]).includes(code);
  return new GridError(known ? (code as GridError['code']) : ErrorCodes.JOB_FAILED, `training job ${job.id} failed: ${job.error?.message ?? 'no reason given'}`, { job_id: job.id });
}

export class TrainingClient {
  private readonly socket: GridSocket;

  constructor(socket: GridSocket) {
    this.socket = socket;
  }

  private async uploadBytes(bytes: Uint8Array, signal: AbortSignal | undefined): Promise<string> {
    return (await this.socket.upload(bufferSource(bytes), signal ? { signal } : {})).transfer_id;
  }

  private async modelFields(ref: ModelRef, signal?: AbortSignal): Promise<Pick<TrainRequest, 'model_id' | 'model_transfer_id' | 'params_transfer_id'>> {
    const out: Pick<TrainRequest, 'model_id' | 'model_transfer_id' | 'params_transfer_id'> = {};
    if (typeof ref.model === 'string') out.model_id = ref.model;
    else if (ref.model instanceof Uint8Array) out.model_transfer_id = await this.uploadBytes(ref.model, signal);
    else throw new TypeError('opts.model must be a hosted model id or ONNX bytes');
    if (ref.params !== undefined) out.params_transfer_id = await this.uploadBytes(encodeNamedTensors(ref.params), signal);
    return out;
  }

  /** Queues a training job on the node; follow it with watch() or wait(). */
  async start(opts: NodeTrainOptions, o: { signal?: AbortSignal } = {}): Promise<JobInfo> {
    const { model, params, ...rest } = opts;
    const ids = await this.modelFields({ model, ...(params !== undefined && { params }) }, o.signal);
    const { job } = await this.socket.request(Train, { ...rest, ...ids }, { timeout: 120_000, ...(o.signal && { signal: o.signal }) });
    return job;
  }

  /**
   * Follows a job until it ends, calling onEvent for each event not seen before (a reconnect re-sends
   * the watch, and the node repeats its history: duplicates are dropped by sequence number). Resolves
   * with the finished job; a failed or cancelled job rejects with its coded error. Aborting `signal`
   * stops watching; the job runs on.
   */
  async wait(jobId: string, opts: WatchOptions = {}): Promise<JobInfo> {
    const job = await this.watch(jobId, opts);
    if (job.state !== 'succeeded') throw jobError(job);
    return job;
  }

  /** The job's events to onEvent, once each, until it ends; resolves with it however it ended. */
  private watch(jobId: string, opts: WatchOptions): Promise<JobInfo> {
    let last = opts.afterSeq ?? 0;
    const stream = this.socket.stream(WatchJob, { job_id: jobId, ...(opts.afterSeq !== undefined && { after_seq: opts.afterSeq }) }, {
      resubscribe: true, ...(opts.signal && { signal: opts.signal }),
    });
    stream.subscribe({
      next: (ev) => {
        if (ev.seq <= last) return;
        last = ev.seq;
        opts.onEvent?.(ev);
      },
    });
    return stream.done.then(({ job }) => job);
  }

  /**
   * Follows a job the caller shows as it goes (the palette's notification and Jobs group, a notebook
   * cell's live output): like wait(), with each event folded into the job (onUpdate), the job's final
   * state reported however it ended, and cancellation on `cancel`.
   */
  async follow(job: JobInfo, opts: FollowOptions = {}): Promise<JobInfo> {
    let current = job;
    const update = (j: JobInfo, ev?: JobEvent) => {
      current = j;
      opts.onUpdate?.(j, ev);
    };
    let cancelling: Promise<JobInfo | undefined> | undefined;
    const cancel = () => {
      cancelling ??= this.cancelJob(job.id).catch((err: unknown) => {
        opts.onCancelFailed?.(toGridError(err));
        return undefined;
      });
    };
    opts.cancel?.addEventListener('abort', cancel, { once: true });
    if (opts.cancel?.aborted) cancel(); // cancelled while the job was being queued
    let done: JobInfo;
    try {
      done = await this.watch(job.id, {
        ...(opts.afterSeq !== undefined && { afterSeq: opts.afterSeq }),
        ...(opts.signal && { signal: opts.signal }),
        onEvent: (ev) => {
          opts.onEvent?.(ev);
          const next = foldJobEvent(current, ev);
          if (next) update(next, ev);
        },
      });
    } catch (err) {
      // Following stopped (by `signal`, or the connection gave up) before the job ended. A cancel under way
      // still reports the job's final state when the node answers it; otherwise the job runs on.
      void cancelling?.then((last) => { if (last) update(last); });
      throw err;
    } finally {
      opts.cancel?.removeEventListener('abort', cancel);
    }
    // The final state (succeeded, failed, cancelled) belongs wherever the job is shown.
    update(done);
    if (done.state !== 'succeeded') throw jobError(done);
    return done;
  }

  /**
   * The job's events as an async iterable (history after `afterSeq`, then live, without duplicates);
   * its return value is the finished job. Breaking out stops watching; the job runs on.
   */
  async *events(jobId: string, opts: Omit<WatchOptions, 'onEvent'> = {}): AsyncGenerator<JobEvent, JobInfo> {
    let last = opts.afterSeq ?? 0;
    const stream = this.socket.stream(WatchJob, { job_id: jobId, ...(opts.afterSeq !== undefined && { after_seq: opts.afterSeq }) }, {
      resubscribe: true, ...(opts.signal && { signal: opts.signal }),
    });
    for await (const ev of stream) {
      if (ev.seq <= last) continue;
      last = ev.seq;
      yield ev;
    }
    const { job } = await stream.done;
    return job;
  }

  /** Starts a job and waits for it (see start and wait). */
  async train(opts: NodeTrainOptions, o: Omit<WatchOptions, 'afterSeq'> = {}): Promise<JobInfo> {
    const job = await this.start(opts, o.signal ? { signal: o.signal } : {});
    return this.wait(job.id, o);
  }

  async listJobs(): Promise<JobInfo[]> {
    return (await this.socket.request(ListJobs, {})).jobs;
  }

  async jobInfo(jobId: string): Promise<JobInfo> {
    return (await this.socket.request(GetJob, { job_id: jobId })).job;
  }

  /** Stops a job; resolves with it once it has stopped. */
  async cancelJob(jobId: string): Promise<JobInfo> {
    return (await this.socket.request(CancelJob, { job_id: jobId }, { timeout: 60_000 })).job;
  }

  /** The trained parameters and sample count of a finished output:'update' job. */
  async jobParams(jobId: string, o: { signal?: AbortSignal } = {}): Promise<JobUpdate> {
    const { data, attachment } = await this.socket.call(JobParams, { job_id: jobId }, { timeout: 120_000, ...(o.signal && { signal: o.signal }) });
    if (attachment === undefined) throw gridError('INVALID_MESSAGE', `the node answered job-params for ${jobId} without the parameter tensors`);
    const out: JobUpdate = { params: decodeNamedTensors(attachment), samples: data.samples };
    if (data.privacy) out.privacy = data.privacy;
    return out;
  }

  /** Loss and accuracy of a model (with optional parameters) on a node dataset or its test split. */
  async evaluate(opts: NodeEvaluateOptions, o: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ metrics: Metrics; samples: number }> {
    const { model, params, ...rest } = opts;
    const ids = await this.modelFields({ model, ...(params !== undefined && { params }) }, o.signal);
    return this.socket.request(Evaluate, { ...rest, ...ids }, { timeout: o.timeoutMs ?? 120_000, ...(o.signal && { signal: o.signal }) });
  }

  /** How a model version was trained on this node (parent, dataset, metrics, privacy). */
  async modelTraining(modelId: string): Promise<TrainingRecord> {
    return (await this.socket.request(ModelTraining, { model_id: modelId })).record;
  }
}
