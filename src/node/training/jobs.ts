// Training jobs on a node: rows of its database (training/rows.ts), claimed and run by one replica at a
// time. The replica that takes a train request runs the job itself when it has room (at most `maxRunning`
// at once); otherwise the job waits in the queue for whichever replica has room first. Each replica renews
// the leases of the jobs it runs; when one dies, its jobs' leases expire and another replica claims them
// and runs them again from their start, under the same job id. Events (with a bounded history) go through
// the database, so a client watches, lists and cancels a job through any replica. A finished job stores
// its model as the next version of the model it trained (lineage: parent name@version and job id), or
// keeps its parameters for job-params (an FL update), in the same transaction that ends the job and only
// while its run still holds it: a result is stored once, whichever replicas ran it.

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, gridError, GridError, toGridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { redactError } from '../rpc/redact';
import { modelRef, type ModelInfo } from '../../core/protocol/messages';
import { decodeNamedTensors, encodeNamedTensors, type NamedTensors } from '../../core/protocol/tensor';
import type { JobEvent, JobInfo, JobProgress, JobResult } from '../../core/protocol/training-messages';
import type { Dataset } from '../../compute/data';
import { modelParams } from '../../compute/plan';
import { evaluateModel, trainSteps, type TrainProgress, type TrainResult } from '../../compute/train';
import type { DatasetStore } from '../datasets';
import type { NodeEvents } from '../events';
import type { ModelStore } from '../models';
import { RECONNECTED, type Store } from '../store/sql';
import { loadDataset, selectionOf } from './data';
import { CANCEL_CHANNEL, EVENTS_CHANNEL, FINISHED_STATES, isLost, jobInfo, JobRows, WAKE_CHANNEL, type Claim, type Finish, type JobRow, type JobSpec } from './rows';
import type { TrainingRecords } from './records';


/** What a job trains with, loaded by the replica that runs it. */
export interface JobInputs {
  /** The forward model (ONNX bytes). */
  model: Uint8Array;
  /** Starting parameters replacing the model's initializers. */
  params?: NamedTensors;
  train: Dataset;
  test?: Dataset;
}

/** The bytes a request uploaded: kept in the job's row, so any replica can run it. */
export interface UploadedInputs {
  model?: Uint8Array;
  params?: Uint8Array;
}

export const DEFAULT_CLAIM_LEASE_MS = 15_000;

export interface TrainingJobsOptions {
  db: Store;
  models: ModelStore;
  datasets: DatasetStore;
  events: NodeEvents;
  records: TrainingRecords;
  /** Where trained models are written before the model store adopts them. */
  dir: string;
  log: Logger;
  /** This replica's id in the jobs it claims; new per process. */
  replica?: string;
  /** How long a claim holds without a heartbeat; its replica renews it every third of that. */
  leaseMs?: number;
  /** onnxruntime threads per training session; 1 keeps the node responsive on small machines. */
  threads?: number;
  /** Jobs this replica runs at once. */
  maxRunning?: number;
  /** Jobs queued on the node (all replicas). */
  maxQueued?: number;
  /** Events kept per job for clients that reattach. */
  maxEvents?: number;
  /** Finished jobs kept (with their results) before the oldest is forgotten. */
  maxFinished?: number;
  /** Called when a stored model changes the model count. */
  onModelAdded?(model: ModelInfo): void;
}

/** A job event before its run numbers it. */
type NewEvent = JobEvent extends infer E ? (E extends JobEvent ? Omit<E, 'seq' | 'job_id'> : never) : never;

/** Progress events are written at most this often (a batch every few ms would be a commit each). */
const FLUSH_EVERY_MS = 200;

/** Why a run stops without ending its job: the replica shuts down and gives it back to the queue. */
const RELEASE = 'release';

/** A job running on this replica: its claim, its abort, and the events not yet written. */
class Run {
  readonly claim: Claim;
  readonly row: JobRow;
  readonly controller = new AbortController();
  /** When the claim was committed (a heartbeat that started before it cannot know of it). */
  readonly claimedAt = Date.now();
  seq: number;
  progress: JobProgress | undefined;
  pending: JobEvent[] = [];
  flushTimer: NodeJS.Timeout | undefined;
  lastFlush = 0;
  /** Writes of this run, one after another. */
  writes: Promise<void> = Promise.resolve();
  done: Promise<void> = Promise.resolve();

  constructor(row: JobRow, claim: Claim) {
    this.row = row;
    this.claim = claim;
    this.seq = row.lastSeq;
  }

  record(ev: NewEvent): void {
    this.pending.push({ ...ev, seq: ++this.seq, job_id: this.claim.id } as JobEvent);
  }

  take(): JobEvent[] {
    const out = this.pending;
    this.pending = [];
    return out;
  }
}

type Watcher = { event(ev: JobEvent): void; resync(): void };

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
 * (which moves it into its blobs, or removes it, before the job ends); a job interrupted while storing is
 * run again (it is still `running` in the database), so no committed model refers to one.
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
  readonly replica: string;
  readonly leaseMs: number;
  private readonly opts: Required<Omit<TrainingJobsOptions, 'onModelAdded' | 'replica' | 'leaseMs'>> & Pick<TrainingJobsOptions, 'onModelAdded'>;
  private readonly rows: JobRows;
  private readonly running = new Map<string, Run>();
  /** Slots promised to submits still writing their row. */
  private reserved = 0;
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly unlisten: (() => void)[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  /** Jobs this replica left alone because it cannot read their dataset (warned once each). */
  private readonly unreadable = new Set<string>();
  private pumping: Promise<void> | undefined;
  private pumpAgain = false;
  private heartbeating = false;
  private closed = false;

  private constructor(opts: TrainingJobsOptions) {
    const { replica, leaseMs, ...rest } = opts;
    this.opts = { threads: 1, maxRunning: 2, maxQueued: 64, maxEvents: 1000, maxFinished: 100, ...rest };
    this.replica = replica ?? `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.leaseMs = leaseMs ?? DEFAULT_CLAIM_LEASE_MS;
    this.rows = new JobRows(opts.db);
  }

  /** Starts claiming: on the embedded store, jobs that were running when the node last stopped run again. */
  static async open(opts: TrainingJobsOptions): Promise<TrainingJobs> {
    const jobs = new TrainingJobs(opts);
    const log = jobs.opts.log;
    const swept = sweepResults(jobs.opts.dir);
    if (swept > 0) log.info({ swept }, 'removed training results left by a job interrupted while storing its model');
    const db = jobs.opts.db;
    // One process owns an embedded store: whatever ran is from a process that is gone.
    if (db.kind === 'embedded') {
      const resumed = await jobs.rows.expireAll();
      if (resumed > 0) log.info({ jobs: resumed }, 'training jobs that were running when the node stopped run again from their start');
    }
    jobs.unlisten.push(
      db.listen(WAKE_CHANNEL, () => jobs.pump()),
      db.listen(CANCEL_CHANNEL, (id) => jobs.running.get(id)?.controller.abort(gridError('ABORTED', 'cancelled while running'))),
      db.listen(EVENTS_CHANNEL, (payload) => jobs.deliver(payload)),
      db.listen(RECONNECTED, () => {
        for (const set of jobs.watchers.values()) for (const w of set) w.resync();
        jobs.pump();
      }),
    );
    const every = (ms: number, fn: () => void) => { const t = setInterval(fn, ms); t.unref(); jobs.timers.push(t); };
    every(Math.max(50, Math.floor(jobs.leaseMs / 3)), () => { void jobs.heartbeat(); });
    // Looks for jobs whose replica died (their lease expired): nobody announces that.
    every(Math.max(50, Math.floor(jobs.leaseMs / 2)), () => jobs.pump());
    jobs.pump();
    return jobs;
  }

  async get(id: string): Promise<JobRow | undefined> {
    return this.rows.get(id);
  }

  /** Newest first; `owner` undefined: everyone's. */
  async list(owner: string | undefined): Promise<JobRow[]> {
    return this.rows.list(owner, this.opts.maxFinished + this.opts.maxQueued + 64);
  }

  async outputPending(modelId: string): Promise<boolean> {
    return this.rows.outputPending(modelId);
  }

  async params(id: string): Promise<Uint8Array | undefined> {
    return this.rows.resultParams(id);
  }

  /**
   * Writes the job's row; runs it here at once when this replica has room (with the inputs the request
   * already loaded), else leaves it queued for the first replica with room.
   */
  async submit(spec: JobSpec, inputs: JobInputs, uploaded: UploadedInputs): Promise<JobInfo> {
    if (this.closed) throw gridError('NOT_CONNECTED', 'the node is shutting down');
    const queued = await this.rows.countQueued();
    if (queued >= this.opts.maxQueued) throw gridError('BUSY', `the node already has ${queued} training jobs queued; wait for some to finish`);
    const id = `job-${randomBytes(6).toString('hex')}`;
    const here = this.running.size + this.reserved < this.opts.maxRunning;
    if (here) this.reserved++;
    let row: JobRow;
    try {
      row = await this.rows.insert(id, spec, uploaded, { kind: 'state', state: 'queued', seq: 1, job_id: id }, here ? { replica: this.replica, leaseMs: this.leaseMs } : undefined);
    } finally {
      if (here) this.reserved--;
    }
    if (here) this.start(row, { id, replica: this.replica, attempt: row.attempts }, inputs);
    await this.rows.forgetOld(this.opts.maxFinished).catch((err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'forgetting old training jobs failed'));
    return jobInfo(row);
  }

  /** Stops a job from any replica; resolves with it once it has stopped (or the wait ran out). */
  async cancel(id: string): Promise<JobRow> {
    const row = await this.rows.get(id);
    if (row === undefined || FINISHED_STATES.has(row.state)) return row!;
    const stopped = this.untilFinished(id, this.leaseMs * 2 + 30_000);
    try {
      const ended = await this.rows.cancel(id, (seq) => ({ kind: 'state', state: 'cancelled', seq, job_id: id }),
        { code: ErrorCodes.ABORTED, message: row.state === 'queued' ? 'cancelled before it started' : 'cancelled while running' }, this.opts.maxEvents);
      if (!ended) this.running.get(id)?.controller.abort(gridError('ABORTED', 'cancelled while running'));
      await stopped.done;
    } finally {
      stopped.off();
    }
    return (await this.rows.get(id)) ?? row;
  }

  /**
   * Emits the job's events after `afterSeq` (a gap first when older ones were dropped), then live ones,
   * until the job ends or `signal` aborts; from any replica.
   */
  async watch(id: string, afterSeq: number, emit: (ev: JobEvent) => void, signal: AbortSignal): Promise<void> {
    let last = afterSeq;
    let live = false;
    let done = false;
    let wake: () => void = () => {};
    const buffered: JobEvent[] = [];
    const deliver = (ev: JobEvent) => {
      if (done || ev.seq <= last) return;
      last = ev.seq;
      emit(ev);
      if (ev.kind === 'state' && FINISHED_STATES.has(ev.state)) { done = true; wake(); }
    };
    const catchUp = async () => { for (const ev of (await this.rows.since(id, last)).events) deliver(ev); };
    const off = this.subscribe(id, {
      event: (ev) => { if (live) deliver(ev); else buffered.push(ev); },
      resync: () => { if (live) void catchUp().catch(() => undefined); },
    });
    try {
      const { missed, events } = await this.rows.since(id, afterSeq);
      if (missed > 0) emit({ kind: 'gap', seq: events[0]!.seq - 1, job_id: id, missed });
      for (const ev of events) deliver(ev);
      live = true;
      for (const ev of buffered.splice(0)) deliver(ev);
      const row = await this.rows.get(id);
      if (!done && (row === undefined || FINISHED_STATES.has(row.state))) {
        await catchUp();
        done = true;
      }
      if (!done) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (signal.aborted) return resolve();
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
      }
    } finally {
      off();
    }
  }

  private subscribe(id: string, w: Watcher): () => void {
    let set = this.watchers.get(id);
    if (set === undefined) this.watchers.set(id, set = new Set());
    set.add(w);
    return () => {
      set.delete(w);
      if (set.size === 0 && this.watchers.get(id) === set) this.watchers.delete(id);
    };
  }

  /** Resolves when the job reaches a final state, or after `ms`. */
  private untilFinished(id: string, ms: number): { done: Promise<void>; off(): void } {
    let off: () => void = () => {};
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      off = this.subscribe(id, {
        event: (ev) => { if (ev.kind === 'state' && FINISHED_STATES.has(ev.state)) resolve(); },
        resync: () => { void this.rows.get(id).then((r) => { if (r === undefined || FINISHED_STATES.has(r.state)) resolve(); }, () => undefined); },
      });
    });
    return { done, off: () => { clearTimeout(timer); off(); } };
  }

  /** Events committed by any replica (this one too), to this replica's watchers. */
  private deliver(payload: string): void {
    let events: JobEvent[];
    try { events = JSON.parse(payload) as JobEvent[]; } catch { return; }
    for (const ev of events) for (const w of [...this.watchers.get(ev.job_id) ?? []]) w.event(ev);
  }

  /** Claims jobs while this replica has room; one claimer at a time, re-run when asked meanwhile. */
  private pump(): void {
    if (this.closed) return;
    if (this.pumping !== undefined) { this.pumpAgain = true; return; }
    this.pumping = (async () => {
      do {
        this.pumpAgain = false;
        while (!this.closed && this.running.size + this.reserved < this.opts.maxRunning) {
          // Not the jobs running here: a lease that lapsed while this replica was alive (a stalled loop, a
          // suspended machine, a database outage) is renewed by the next heartbeat; claiming it again would
          // start a second run of the same job here.
          const got = await this.rows.claim(this.replica, this.leaseMs, (row) => this.canRun(row), new Set(this.running.keys()));
          if (got === undefined) break;
          if (this.closed) {
            // Claimed while shutting down: give it straight back.
            await this.rows.release(got.claim, [{ kind: 'state', state: 'queued', seq: got.row.lastSeq + 1, job_id: got.row.id }], this.opts.maxEvents).catch(() => undefined);
            break;
          }
          if (got.row.attempts > 1) this.opts.log.warn({ job: got.row.id, run: got.row.attempts, replica: this.replica }, 'took over a training job whose replica stopped renewing its claim; running it again from its start');
          this.start(got.row, got.claim, got.inputs);
        }
      } while (this.pumpAgain && !this.closed);
    })().catch((err: unknown) => {
      this.opts.log.warn({ err: (err as Error).message }, 'claiming training jobs failed; trying again at the next look');
    }).finally(() => { this.pumping = undefined; });
  }

  /**
   * Whether this replica can read the job's dataset (a dataset's file must be on storage every replica
   * mounts). The embedded node is the only replica: it runs the job, which then fails naming the dataset.
   */
  private async canRun(row: JobRow): Promise<boolean> {
    if (this.opts.db.kind === 'embedded') return true;
    const file = await this.opts.datasets.pathOf(row.spec.request.dataset_id);
    if (file === undefined) return true; // removed since: the run fails with NOT_FOUND, which the owner should see
    try {
      await fsp.access(file, fs.constants.R_OK);
      return true;
    } catch {
      if (!this.unreadable.has(row.id) && this.unreadable.size < 1000) {
        this.unreadable.add(row.id);
        this.opts.log.warn({ job: row.id, dataset: row.spec.request.dataset_id, replica: this.replica },
          'left a training job to another replica: this replica cannot read its dataset\'s file (register datasets on storage every replica mounts at the same path)');
      }
      return false;
    }
  }

  /** Renews this replica's leases; a job another replica took over (or that was cancelled) stops here. */
  private async heartbeat(): Promise<void> {
    if (this.heartbeating || this.closed || this.running.size === 0) return;
    this.heartbeating = true;
    const started = Date.now();
    try {
      const held = await this.rows.heartbeat(this.replica, this.leaseMs);
      for (const run of this.running.values()) {
        if (run.claimedAt >= started) continue;
        const h = held.get(run.claim.id);
        if (h === undefined || h.attempt !== run.claim.attempt) {
          run.controller.abort(gridError('ABORTED', `training job ${run.claim.id} was taken over by another replica`, { reason: 'claim-lost' }));
        } else if (h.cancel) {
          run.controller.abort(gridError('ABORTED', 'cancelled while running'));
        }
      }
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'renewing training job claims failed; another replica takes them over if this lasts beyond the lease');
    } finally {
      this.heartbeating = false;
    }
  }

  private start(row: JobRow, claim: Claim, inputs: JobInputs | UploadedInputs): void {
    const run = new Run(row, claim);
    this.running.set(claim.id, run);
    run.done = this.run(run, inputs).finally(() => {
      clearTimeout(run.flushTimer);
      // Only this run's entry: never one of a later run of the same job here.
      if (this.running.get(claim.id) === run) this.running.delete(claim.id);
      this.pump();
    });
  }

  /** Writes the run's progress events now, or (after a recent progress write) in one write at most 200 ms later. */
  private scheduleFlush(run: Run): void {
    if (run.flushTimer !== undefined) return;
    const now = Date.now();
    const wait = run.lastFlush + FLUSH_EVERY_MS - now;
    if (wait <= 0) { run.lastFlush = now; void this.flush(run); return; }
    run.flushTimer = setTimeout(() => {
      run.flushTimer = undefined;
      run.lastFlush = Date.now();
      void this.flush(run);
    }, wait);
  }

  private flush(run: Run): Promise<void> {
    run.writes = run.writes.then(async () => {
      const events = run.take();
      if (events.length === 0) return;
      try {
        await this.rows.append(run.claim, events, run.progress, this.opts.maxEvents);
      } catch (err) {
        if (isLost(err)) { run.controller.abort(err); return; }
        // The database is away: keep them for the next write.
        run.pending.unshift(...events);
        this.opts.log.warn({ job: run.claim.id, err: (err as Error).message }, 'writing training job events failed; retrying with the next ones');
      }
    });
    return run.writes;
  }

  /** Writes the end of a run (with its pending events and a final state event) through `write`. */
  private async end(run: Run, state: 'succeeded' | 'failed' | 'cancelled' | 'queued', write: (events: JobEvent[]) => Promise<void>): Promise<void> {
    clearTimeout(run.flushTimer);
    run.flushTimer = undefined;
    await run.writes;
    run.record({ kind: 'state', state });
    const events = run.take();
    await write(events);
  }

  private async finish(run: Run, finish: Finish): Promise<void> {
    await this.end(run, finish.state, (events) => this.rows.finish(run.claim, finish, events, run.progress, this.opts.maxEvents));
  }

  /** The inputs of a job claimed from the queue: uploaded bytes from its row, a hosted model from the shared store, the dataset from its file. */
  private async load(run: Run, uploaded: UploadedInputs): Promise<JobInputs> {
    const { spec } = run.row;
    const r = spec.request;
    let model = uploaded.model;
    if (model === undefined) {
      const parent = spec.parent!;
      try {
        model = await this.opts.models.read(parent.sha256, 0, parent.size);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw gridError('NOT_FOUND', `model "${modelRef(parent)}", which this job trains, was deleted before the job ran`, { model_id: modelRef(parent) });
        throw err;
      }
      if (model.length !== parent.size) throw gridError('NOT_FOUND', `model "${modelRef(parent)}", which this job trains, was deleted before the job ran`, { model_id: modelRef(parent) });
    }
    const file = await this.opts.datasets.pathOf(r.dataset_id);
    if (file !== undefined) {
      try {
        await fsp.access(file, fs.constants.R_OK);
      } catch (err) {
        throw gridError('NOT_FOUND', `dataset "${r.dataset_id}", which this job trains on, can no longer be read on this node (${(err as NodeJS.ErrnoException).code ?? 'unreadable'}); re-register it or restore its file`, { dataset_id: r.dataset_id });
      }
    }
    const loaded = await loadDataset(this.opts.datasets, selectionOf(r), r.loss);
    return {
      model, train: loaded.train,
      ...(uploaded.params && { params: decodeNamedTensors(uploaded.params) }),
      ...(loaded.test && { test: loaded.test }),
    };
  }

  private async run(run: Run, given: JobInputs | UploadedInputs): Promise<void> {
    const spec = run.row.spec;
    const r = spec.request;
    const log = this.opts.log;
    const id = run.claim.id;
    const signal = run.controller.signal;
    try {
      run.record({ kind: 'state', state: 'running' });
      void this.flush(run);
      log.info({ job: id, owner: spec.owner, dataset: r.dataset_id, model: spec.parent && modelRef(spec.parent), epochs: r.epochs, run: run.claim.attempt }, 'training job started');
      if (run.row.cancelRequested) throw gridError('ABORTED', 'cancelled while running');
      const input = 'train' in given ? given : await this.load(run, given);
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
        signal,
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
        run.progress = toProgress(p);
        if (p.kind === 'epoch' || p.batch % every === 0) {
          run.record({ kind: p.kind, ...run.progress });
          this.scheduleFlush(run);
        }
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
      if (signal.aborted) throw signal.reason;
      if ((r.output ?? 'model') === 'model') {
        const model = await this.store(run, trained.model, result);
        log.info({ job: id, seconds: result.seconds, accuracy: result.metrics.accuracy, test: result.test?.accuracy, model: modelRef(model) }, 'training job succeeded');
      } else {
        result.params = Object.entries(trained.params).map(([name, t]) => ({ name, dtype: t.dtype, dims: [...t.dims] }));
        await this.finish(run, { state: 'succeeded', result, params: encodeNamedTensors(trained.params) });
        log.info({ job: id, seconds: result.seconds, accuracy: result.metrics.accuracy }, 'training job succeeded');
      }
    } catch (err) {
      await this.failed(run, err);
    }
  }

  /** Ends a run that threw: given back (shutdown), dropped (taken over), cancelled or failed. */
  private async failed(run: Run, err: unknown): Promise<void> {
    const log = this.opts.log;
    const id = run.claim.id;
    const signal = run.controller.signal;
    const reason: unknown = signal.aborted ? signal.reason : err;
    if (isLost(reason) || isLost(err)) {
      log.warn({ job: id, replica: this.replica, run: run.claim.attempt }, 'stopped a training job here: another replica took it over (this replica did not renew its claim in time)');
      return;
    }
    try {
      if (reason === RELEASE) {
        await this.end(run, 'queued', (events) => this.rows.release(run.claim, events, this.opts.maxEvents));
        log.info({ job: id }, 'training job given back to the queue: the node is shutting down');
        return;
      }
      const e = toGridError(reason, 'JOB_FAILED');
      // job-info and watch-job show this error to the client: no server paths in it (the log keeps them).
      const shown = redactError(e, [path.dirname(this.opts.dir)]);
      const error = shown.code === ErrorCodes.INTERNAL ? new GridError(ErrorCodes.JOB_FAILED, shown.message, shown.details) : shown;
      const cancelled = e.code === ErrorCodes.ABORTED;
      await this.finish(run, { state: cancelled ? 'cancelled' : 'failed', error: { code: error.code, message: error.message } });
      if (cancelled) log.info({ job: id }, 'training job cancelled');
      else log.warn({ job: id, code: e.code, err: e.message }, 'training job failed');
    } catch (end) {
      // Not written (the database is away, or the job was taken over meanwhile): its lease runs out and
      // a replica runs it again.
      if (isLost(end)) log.warn({ job: id, replica: this.replica }, 'stopped a training job here: another replica took it over');
      else log.error({ job: id, err: (end as Error).message }, 'could not write the end of a training job; it runs again once its claim expires');
    }
  }

  /**
   * Stores the trained model as the next version of the model it came from (or as `output_model_id`, or
   * `trained-<job>` for uploaded bytes), with its lineage, and ends the job in the same transaction, only
   * while this run still holds it: a replica that lost the job stores nothing.
   */
  private async store(run: Run, bytes: Uint8Array, result: JobResult): Promise<ModelInfo> {
    const spec = run.row.spec;
    const id = run.claim.id;
    const r = spec.request;
    const models = this.opts.models;
    const parent = spec.parent;
    const admin = spec.role === 'admin';
    // Another replica may have added versions since this one last looked.
    await models.fresh();
    // Events still being written go first: the transaction below ends the job after them (and, embedded,
    // holds the one connection a write waiting on its own would need).
    clearTimeout(run.flushTimer);
    run.flushTimer = undefined;
    await this.flush(run);
    // The next version of the parent, if this user may add one (its owner or an admin); else a model of their own.
    const asVersion = r.output_model_id === undefined && parent !== undefined && models.mayAddVersion(parent.id, spec.owner, admin);
    const modelId = r.output_model_id ?? (asVersion ? parent!.id : `trained-${id}`);
    const hyper: Record<string, number> = {};
    if (r.lr !== undefined) hyper.lr = r.lr;
    if (r.momentum !== undefined) hyper.momentum = r.momentum;
    if (r.weight_decay !== undefined) hyper.weight_decay = r.weight_decay;
    if (r.fedprox_mu !== undefined) hyper.fedprox_mu = r.fedprox_mu;
    // The result file is handed to the model store, which moves it into its blobs or removes it; one left
    // here by a kill is swept at the next start (sweepResults).
    await fsp.mkdir(this.opts.dir, { recursive: true });
    const file = path.join(this.opts.dir, `${id}-${run.claim.attempt}.onnx`);
    await fsp.writeFile(file, bytes);
    const model = await models.host({
      id: modelId, newVersion: asVersion, jobId: id, owner: spec.owner, admin,
      ...(parent && { name: parent.name, parent: modelRef(parent) }),
      allowDownload: r.allow_download ?? parent?.allow_download ?? false,
      allowRemoteInference: r.allow_remote_inference ?? parent?.allow_remote_inference ?? false,
      file, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'),
      // Committed with the model's row: a trained model is never listed without how it was made, and the
      // job ends in the same transaction, only if this run still holds it.
      alongside: async (info) => {
        await this.opts.records.put({
          model_id: info.id, model_version: info.version, job_id: id, parent_model_id: parent ? modelRef(parent) : null, dataset_id: r.dataset_id, label: spec.label,
          loss: r.loss, optimizer: r.optimizer, hyper, epochs: r.epochs, batch_size: r.batch_size, seed: r.seed ?? 0,
          samples: result.samples, metrics: result.metrics,
          ...(result.validation && { validation: result.validation }),
          ...(result.test && { test: result.test }),
          ...(result.privacy && { privacy: result.privacy }),
          created: info.created,
        }, Number(info.version), info.sha256);
        // As the model store will describe it once committed: with its version count, this the latest.
        const versions = models.list({ allVersions: true }).filter((m) => m.id === info.id).length + 1;
        await this.finish(run, { state: 'succeeded', result: { ...result, model: { ...info, versions, latest_version: info.version } } });
      },
    });
    this.opts.events.emit({ event: 'model-added', model });
    this.opts.onModelAdded?.(model);
    return model;
  }

  /** Stops claiming; jobs running here go back to the queue (another replica, or the next start, runs them). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const off of this.unlisten) off();
    await this.pumping;
    const runs = [...this.running.values()];
    for (const run of runs) run.controller.abort(RELEASE);
    await Promise.all(runs.map((r) => r.done));
  }
}
