// The node's handlers for training (core/protocol/training-messages.ts). Every training message needs an
// authenticated session; a job is visible to its owner and to admins. Bad requests are refused before a
// job exists, so the client gets the coded error from `train` itself.

import * as fsp from 'node:fs/promises';
import { gridError, GridError, ErrorCodes } from '../../core/errors';
import { ID_PATTERN, modelRef, type ModelInfo } from '../../core/protocol/messages';
import { decodeNamedTensors, type NamedTensors } from '../../core/protocol/tensor';
import { CancelJob, Evaluate, GetJob, JobParams, ListJobs, ModelTraining, Train, WatchJob, type TrainRequest } from '../../core/protocol/training-messages';
import { withAttachment, type GridRouter, type HandlerContext } from '../rpc/server';
import { buildPlan, modelParams } from '../../compute/plan';
import { evaluateModel } from '../../compute/train';
import type { DatasetStore } from '../datasets';
import { sessionOf, type SessionUser } from '../handlers';
import { checkModelId, checkModelRef, type ModelStore } from '../models';
import { loadDataset, selectionOf, type LoadedData } from './data';
import type { TrainingJobs } from './jobs';
import { FINISHED_STATES, jobInfo, type JobRow } from './rows';
import type { TrainingRecords } from './records';

export interface TrainingDeps {
  jobs: TrainingJobs;
  models: ModelStore;
  datasets: DatasetStore;
  records: TrainingRecords;
  where(): string;
}

/** An id field of a request (`ref`: a model ref, `name` or `name@N`): INVALID_ID naming the field, so the user knows which flag to fix. */
function checkIdField(field: string, id: string, ref = false): void {
  try {
    if (ref) checkModelRef(id);
    else checkModelId(id);
  } catch (err) {
    const shown = JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id);
    throw gridError('INVALID_ID', `${field} ${shown} must be 1-128 characters of A-Z a-z 0-9 . _ - (no slashes, spaces or path parts)${ref ? ', optionally with @VERSION (e.g. digits-mlp@2)' : ''}`, { field, cause: (err as Error).message });
  }
}

function requireUser(ctx: HandlerContext, what: string): SessionUser {
  const s = sessionOf(ctx);
  if (s === undefined) throw gridError('UNAUTHENTICATED', `${what} needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)`);
  return s;
}

/** Claims an upload and reads it; the file is removed whatever happens. */
async function uploadedBytes(ctx: HandlerContext, transferId: string): Promise<Buffer> {
  const up = ctx.takeUpload(transferId);
  try {
    return await fsp.readFile(up.path);
  } finally {
    await fsp.rm(up.path, { force: true });
  }
}

interface Selection { model_id?: string | undefined; model_transfer_id?: string | undefined; params_transfer_id?: string | undefined }

export function registerTrainingHandlers(router: GridRouter, deps: TrainingDeps): GridRouter {
  const { jobs, models, datasets, records } = deps;

  /** The model bytes and starting parameters a request names; uploads are claimed first so none is left behind. */
  async function resolveModel(sel: Selection, ctx: HandlerContext, user: SessionUser, use: 'train' | 'evaluate'): Promise<{ bytes: Uint8Array; parent?: ModelInfo; params?: NamedTensors; uploaded: { model?: Uint8Array; params?: Uint8Array } }> {
    const uploaded = sel.model_transfer_id !== undefined ? await uploadedBytes(ctx, sel.model_transfer_id) : undefined;
    const paramBytes = sel.params_transfer_id !== undefined ? await uploadedBytes(ctx, sel.params_transfer_id) : undefined;
    if ((sel.model_id === undefined) === (uploaded === undefined)) {
      throw gridError('INVALID_MESSAGE', `${use}: name the model either by model_id (hosted) or by model_transfer_id (uploaded bytes), exactly one`);
    }
    let bytes: Uint8Array;
    let parent: ModelInfo | undefined;
    if (sel.model_id !== undefined) {
      parent = models.get(sel.model_id);
      const allowed = parent.owner === user.user || user.role === 'admin' || parent.allow_download || (use === 'evaluate' && parent.allow_remote_inference);
      if (!allowed) {
        throw gridError('FORBIDDEN', `node ${deps.where()} refused to ${use} model "${modelRef(parent)}": it belongs to ${parent.owner} and allow_download is false`, { model_id: parent.id });
      }
      bytes = await fsp.readFile(models.blobPath(modelRef(parent)));
    } else {
      bytes = uploaded!;
    }
    let params: NamedTensors | undefined;
    if (paramBytes !== undefined) {
      try {
        params = decodeNamedTensors(paramBytes);
      } catch (err) {
        throw err instanceof GridError ? err : new GridError(ErrorCodes.INVALID_TENSOR, (err as Error).message);
      }
      let known: NamedTensors;
      try {
        known = modelParams(bytes);
      } catch (err) {
        throw new GridError(ErrorCodes.INVALID_MODEL, `the model does not decode as ONNX: ${(err as Error).message}`);
      }
      const stray = Object.keys(params).find((n) => !(n in known));
      if (stray !== undefined) throw gridError('INVALID_INPUT', `the starting parameters name "${stray}", which is not a float initializer of the model`, { param: stray });
    }
    return { bytes, ...(parent && { parent }), ...(params && { params }), uploaded: { ...(uploaded && { model: uploaded }), ...(paramBytes && { params: paramBytes }) } };
  }

  async function ownJob(id: string, user: SessionUser): Promise<JobRow> {
    const job = await jobs.get(id);
    // Someone else's job is reported as missing: job ids are not a way to learn about other users.
    if (job === undefined || (job.spec.owner !== user.user && user.role !== 'admin')) throw gridError('NOT_FOUND', `no training job "${id}" on this node`, { job_id: id });
    return job;
  }

  /** The session's user; without one, uploads the request named are claimed and dropped, not left behind. */
  async function requireUserOrDiscard(ctx: HandlerContext, op: string, transfers: (string | undefined)[]): Promise<SessionUser> {
    try {
      return requireUser(ctx, op);
    } catch (err) {
      for (const t of transfers) if (t !== undefined) await uploadedBytes(ctx, t).catch(() => {});
      throw err;
    }
  }

  /**
   * Every field a job would only trip over at its end (ids, the dataset, output and permissions) is checked
   * before anything is read, so a bad request fails at once and never becomes a job.
   */
  async function checkTrainRequest(data: TrainRequest): Promise<void> {
    if (data.model_id !== undefined) {
      checkIdField('model_id', data.model_id, true);
      if (!models.has(data.model_id)) {
        const { id } = checkModelRef(data.model_id);
        const versions = models.has(id) ? models.list({ allVersions: true }).filter((m) => m.id === id).map((m) => m.version) : [];
        throw gridError('NOT_FOUND', `model_id: no model "${data.model_id}" on this node${versions.length > 0 ? `; "${id}" has versions ${versions.join(', ')}` : ''}`, { field: 'model_id', model_id: data.model_id });
      }
    }
    await checkDataset(data.dataset_id);
    if ((data.output ?? 'model') === 'update') {
      for (const field of ['output_model_id', 'allow_download', 'allow_remote_inference'] as const) {
        if (data[field] !== undefined) throw gridError('INVALID_MESSAGE', `${field} applies to output "model"; an output "update" job stores no model`, { field });
      }
      return;
    }
    if (data.output_model_id !== undefined) {
      checkIdField('output_model_id', data.output_model_id);
      const out = data.output_model_id;
      const queued = await jobs.outputPending(out);
      if (models.has(out) || queued) {
        throw gridError('ALREADY_EXISTS', `output_model_id: a model "${out}" is already on this node${queued ? ' (or a queued job will store one)' : ''}; choose another output_model_id, or leave it out to store the trained model as the next version of the one trained`, { field: 'output_model_id', model_id: out });
      }
    }
  }

  async function checkDataset(id: string): Promise<void> {
    if (!ID_PATTERN.test(id)) throw gridError('INVALID_ID', `dataset_id ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)} must be 1-128 characters of A-Z a-z 0-9 . _ -`, { field: 'dataset_id' });
    if (await datasets.get(id) === undefined) throw gridError('NOT_FOUND', `dataset_id: no dataset "${id}" on this node; list-datasets shows what it has`, { field: 'dataset_id', dataset_id: id });
  }

  /** Runs `check`; when it fails, the uploads the request named are claimed and dropped, not left behind. */
  async function checkOrDiscard(ctx: HandlerContext, transfers: (string | undefined)[], check: () => void | Promise<void>): Promise<void> {
    try {
      await check();
    } catch (err) {
      for (const t of transfers) if (t !== undefined) await uploadedBytes(ctx, t).catch(() => {});
      throw err;
    }
  }

  router.handle(Train, async (data, ctx) => {
    const user = await requireUserOrDiscard(ctx, 'train', [data.model_transfer_id, data.params_transfer_id]);
    await checkOrDiscard(ctx, [data.model_transfer_id, data.params_transfer_id], () => checkTrainRequest(data));
    const model = await resolveModel(data, ctx, user, 'train');
    const loaded: LoadedData = await loadDataset(datasets, selectionOf(data), data.loss);
    // Derive the plan now so an unsupported operator or a shape mismatch is this request's error, not a failed job.
    const plan = buildPlan(model.bytes, { loss: data.loss, optimizer: data.optimizer, fedProx: data.fedprox_mu !== undefined, weightDecay: data.weight_decay !== undefined });
    const features = loaded.train.features.dims[1]!;
    const expect = plan.info.input.dims[1];
    if (typeof expect === 'number' && expect !== features) {
      throw gridError('INVALID_INPUT', `the model takes ${expect} features per row, dataset "${data.dataset_id}" has ${features} (label column "${loaded.label}" excluded)`);
    }
    const rows = loaded.train.features.dims[0]!;
    if (data.validation_split !== undefined && (Math.round(rows * data.validation_split) === 0 || Math.round(rows * data.validation_split) >= rows)) {
      throw gridError('INVALID_INPUT', `validation_split ${data.validation_split} of ${rows} training rows leaves no validation or no training rows`);
    }
    const job = await jobs.submit(
      { owner: user.user, role: user.role, request: data, label: loaded.label, ...(model.parent && { parent: model.parent }) },
      { model: model.bytes, train: loaded.train, ...(model.params && { params: model.params }), ...(loaded.test && { test: loaded.test }) },
      model.uploaded,
    );
    ctx.log.info({ job: job.id, owner: user.user, dataset: data.dataset_id, rows }, 'training job queued');
    return { job };
  });

  router.stream(WatchJob, async (data, ctx) => {
    const job = await ownJob(data.job_id, requireUser(ctx, 'watch-job'));
    // Watching ends with the job, or when this client goes away; the job itself runs on.
    await jobs.watch(job.id, data.after_seq ?? 0, (ev) => ctx.emit(ev), ctx.signal);
    return { job: jobInfo((await jobs.get(job.id)) ?? job) };
  });

  router.handle(ListJobs, async (_data, ctx) => {
    const user = requireUser(ctx, 'list-jobs');
    return { jobs: (await jobs.list(user.role === 'admin' ? undefined : user.user)).map(jobInfo) };
  });

  router.handle(GetJob, async (data, ctx) => ({ job: jobInfo(await ownJob(data.job_id, requireUser(ctx, 'job-info'))) }));

  router.handle(CancelJob, async (data, ctx) => {
    const job = await ownJob(data.job_id, requireUser(ctx, 'cancel-job'));
    return { job: jobInfo(await jobs.cancel(job.id)) };
  });

  router.handle(JobParams, async (data, ctx) => {
    const job = await ownJob(data.job_id, requireUser(ctx, 'job-params'));
    if (job.spec.request.output !== 'update') throw gridError('INVALID_INPUT', `job ${job.id} stored a model (output "model"); its parameters are in model "${job.result?.model ? modelRef(job.result.model) : '?'}"`);
    const params = job.state === 'succeeded' ? await jobs.params(job.id) : undefined;
    if (params === undefined || job.result === undefined || !FINISHED_STATES.has(job.state)) {
      throw gridError('INVALID_INPUT', `job ${job.id} is ${job.state}; its parameters exist once it has succeeded`, { state: job.state });
    }
    const reply = {
      job_id: job.id, samples: job.result.samples, params: job.result.params!,
      ...(job.result.privacy && { privacy: job.result.privacy }),
    };
    return withAttachment(reply, params);
  });

  router.handle(Evaluate, async (data, ctx) => {
    const user = await requireUserOrDiscard(ctx, 'evaluate', [data.model_transfer_id, data.params_transfer_id]);
    await checkOrDiscard(ctx, [data.model_transfer_id, data.params_transfer_id], async () => {
      if (data.model_id !== undefined) checkIdField('model_id', data.model_id, true);
      await checkDataset(data.dataset_id);
    });
    const model = await resolveModel(data, ctx, user, 'evaluate');
    const loaded = await loadDataset(datasets, selectionOf(data), data.loss);
    const on = loaded.test ?? loaded.train;
    const metrics = await evaluateModel(model.bytes, on, { loss: data.loss, loadOptions: { intraOpNumThreads: 1 }, ...(model.params && { params: model.params }) });
    return { metrics, samples: on.features.dims[0]! };
  });

  router.handle(ModelTraining, async (data, ctx) => {
    requireUser(ctx, 'model-training');
    const model = models.get(data.model_id);
    const record = await records.get(model.id, Number(model.version), model.sha256);
    if (record === undefined) throw gridError('NOT_FOUND', `model "${modelRef(model)}" was not trained on this node`, { model_id: model.id });
    return { record };
  });

  return router;
}
