// The FL worker the editor runs in the background (Grid: Join as Worker, grid.fl.join): `grid fl join`
// for a parent process instead of a terminal. Its own process because training loads onnxruntime, which
// never enters VS Code's extension host; its own socket because a worker is a device of its own to the
// node (it needs no sign-in). Progress and the outcome go to the parent over IPC (fl-join-messages.ts).
// With `mode: "evaluate"` it evaluates a checkpoint on a held-out set instead (the notebook's accuracy chart);
// with `mode: "simulate"` it runs `grid fl simulate`'s simulation (grid.fl.simulate), the editor hosting its process.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GridClient } from '../core/client';
import { GridError, gridError, toGridError } from '../core/errors';
import { FlWorker } from '../core/fl-worker';
import type { FlEvaluateJob, FlHostAnswer, FlJoinJob, FlJoinMessage, FlSimulateJob, FlSimulationCycle } from '../core/protocol/fl-join-messages';
import { splitDataset } from '../compute/data';
import { evaluateModel, joinFl, parsePartition, simulateFl, type FlCycleMetrics } from '../federation';
import { readWorkerDataset } from './fl';
import { simulationModel } from './fl-simulate';

function send(m: FlJoinMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) { resolve(); return; }
    process.send(m, undefined, {}, () => resolve());
  });
}

function datasetOptions(job: FlJoinJob | FlEvaluateJob | FlSimulateJob) {
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

const cycleOf = ({ diffs: _diffs, ...m }: FlCycleMetrics): FlSimulationCycle => m;

/**
 * grid.fl.simulate: the simulation `grid fl simulate` runs, its process hosted by the editor (whose
 * connection is signed in): the model goes to it as a temp file, its answer comes back over IPC.
 */
async function simulate(job: FlSimulateJob, signal: AbortSignal, answers: { next(): Promise<FlHostAnswer> }): Promise<void> {
  let client: GridClient | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'grid-fl-sim-'));
  try {
    let partition;
    try {
      partition = parsePartition(job.partition ?? 'iid');
    } catch (err) {
      throw gridError('INVALID_INPUT', `grid.fl.simulate { partition }: ${(err as Error).message}`);
    }
    const model = simulationModel(job.model);
    const all = await readWorkerDataset(job.data, datasetOptions(job));
    const seed = job.seed ?? 0;
    const { train, test } = splitDataset(all, job.testFraction ?? 0.2, seed);
    // Anonymous: it only reads the process's status and checkpoints; the editor hosts.
    client = await GridClient.connect(job.url, { reconnect: { maxAttempts: 3, initialDelayMs: 200 } });
    const r = await simulateFl({
      url: job.url, host: client, model, train, test, workers: job.workers, cycles: job.cycles, partition, seed, signal,
      ...(job.name !== undefined && { name: job.name }), ...(job.version !== undefined && { version: job.version }),
      ...(job.serverConfig !== undefined && { serverConfig: job.serverConfig }), ...(job.clientConfig !== undefined && { clientConfig: job.clientConfig }),
      ...(job.threads !== undefined && { threads: job.threads }), ...(job.dropout !== undefined && { dropout: job.dropout }), ...(job.slow !== undefined && { slow: job.slow }),
      ...(job.target !== undefined && { stopWhen: (m: FlCycleMetrics) => m.accuracy >= job.target! }),
      hostProcess: async (bytes, clientConfig, serverConfig) => {
        const file = join(dir, 'model.onnx');
        await writeFile(file, bytes);
        const answer = answers.next();
        await send({ kind: 'host', model: file, clientConfig, serverConfig });
        const a = await answer;
        await rm(file, { force: true });
        if (a.kind === 'host-failed') throw GridError.fromWire(a);
        return a;
      },
      onHosted: (h) => void send({ kind: 'sim-hosted', name: h.name, version: h.version, processId: h.processId, initial: h.initial, partitionSizes: h.partitionSizes, testRows: test.features.dims[0]! }),
      onCycle: (m) => void send({ kind: 'sim-cycle', cycle: cycleOf(m) }),
    });
    await send({ kind: 'simulated', result: { ...r, initial: { loss: r.initial.loss, accuracy: r.initial.accuracy }, cycles: r.cycles.map(cycleOf) } });
  } finally {
    client?.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const parsed = JSON.parse(process.argv[2] ?? '{}') as FlJoinJob | FlEvaluateJob | FlSimulateJob;
  if ('mode' in parsed && parsed.mode === 'evaluate') return evaluate(parsed);
  const controller = new AbortController();
  let answered: ((a: FlHostAnswer) => void) | undefined;
  process.on('message', (m: { kind?: string }) => {
    if (m?.kind === 'cancel') controller.abort();
    else if (m?.kind === 'hosted' || m?.kind === 'host-failed') answered?.(m as FlHostAnswer);
  });
  // The editor went away: nobody waits for this job.
  process.on('disconnect', () => controller.abort());
  if ('mode' in parsed && parsed.mode === 'simulate') {
    const answers = { next: () => new Promise<FlHostAnswer>((resolve) => { answered = resolve; }) };
    try {
      await simulate(parsed, controller.signal, answers);
    } catch (err) {
      const e = toGridError(err);
      await send({ kind: 'error', code: e.code, message: e.message });
    }
    return;
  }
  const job = parsed as FlJoinJob;
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
