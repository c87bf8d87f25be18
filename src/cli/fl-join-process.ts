// The FL worker the editor runs in the background (Grid: Join as Worker, grid.fl.join): `grid fl join`
// for a parent process instead of a terminal. Its own process because training loads onnxruntime, which
// never enters VS Code's extension host; its own socket because a worker is a device of its own to the
// node (it needs no sign-in). Progress and the outcome go to the parent over IPC (fl-join-messages.ts).
// With `mode: "evaluate"` it evaluates a checkpoint on a held-out set instead (the notebook's accuracy chart).

import { toGridError } from '../core/errors';
import { FlWorker } from '../core/fl-worker';
import { readFile } from 'node:fs/promises';
import type { FlEvaluateJob, FlJoinJob, FlJoinMessage } from '../core/protocol/fl-join-messages';
import { evaluateModel, joinFl } from '../federation';
import { readWorkerDataset } from './fl';

function send(m: FlJoinMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) { resolve(); return; }
    process.send(m, undefined, {}, () => resolve());
  });
}

function datasetOptions(job: FlJoinJob | FlEvaluateJob) {
  return { ...(job.labels !== undefined && { labels: job.labels }), ...(job.labelColumn !== undefined && { labelColumn: job.labelColumn }), ...(job.featureScale !== undefined && { featureScale: job.featureScale }) };
}

async function evaluate(job: FlEvaluateJob): Promise<void> {
  try {
    const data = await readWorkerDataset(job.data, datasetOptions(job));
    const m = await evaluateModel(await readFile(job.model), data, { loss: job.loss ?? 'cross_entropy', loadOptions: { intraOpNumThreads: 1 } });
    await send({ kind: 'evaluated', rows: data.features.dims[0]!, loss: m.loss, accuracy: m.accuracy });
  } catch (err) {
    const e = toGridError(err);
    await send({ kind: 'error', code: e.code, message: e.message });
  }
}

async function main(): Promise<void> {
  const parsed = JSON.parse(process.argv[2] ?? '{}') as FlJoinJob | FlEvaluateJob;
  if ('mode' in parsed && parsed.mode === 'evaluate') return evaluate(parsed);
  const job = parsed as FlJoinJob;
  const controller = new AbortController();
  process.on('message', (m: { kind?: string }) => { if (m?.kind === 'cancel') controller.abort(); });
  // The editor went away: nobody waits for this job.
  process.on('disconnect', () => controller.abort());
  let worker: FlWorker | undefined;
  try {
    const data = await readWorkerDataset(job.data, datasetOptions(job));
    worker = await FlWorker.connect(job.url, { timeoutMs: job.timeoutMs ?? 20_000, reconnect: { maxAttempts: 3, initialDelayMs: 200 } });
    const rows = data.features.dims[0]!;
    const out = await joinFl(worker, { modelName: job.name, ...(job.version !== undefined && { modelVersion: job.version }), ...(job.authToken !== undefined && { authToken: job.authToken }) }, data, {
      ...(job.seed !== undefined && { seed: job.seed }),
      signal: controller.signal,
      loadOptions: { intraOpNumThreads: 1 },
      onAccepted: (cycle, cfg) => void send({ kind: 'accepted', model: cycle.accepted.model, version: cycle.accepted.version, workerId: cycle.workerId, rows, epochs: cfg.epochs, batchSize: cfg.batchSize }),
      onProgress: (p) => void send({ kind: 'progress', epoch: p.epoch, epochs: p.epochs, batch: p.batch, batches: p.batches, loss: p.loss, accuracy: p.accuracy }),
    });
    if (out.status === 'error') throw out.error;
    if (out.status === 'rejected') await send({ kind: 'rejected', reason: out.reason, timeout: out.timeout ?? null, timeoutS: out.timeoutS ?? null });
    else {
      const r = out.result;
      await send({ kind: 'reported', model: out.cycle.accepted.model, version: out.cycle.accepted.version, workerId: out.cycle.workerId, numSamples: r.numSamples, steps: r.steps, seconds: r.seconds, loss: r.metrics.loss, accuracy: r.metrics.accuracy });
    }
  } catch (err) {
    const e = toGridError(err);
    await send({ kind: 'error', code: e.code, message: e.message });
  } finally {
    worker?.dispose();
  }
}

void main().then(() => process.exit(0));
