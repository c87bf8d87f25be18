// FL simulation (Flower's `start_simulation` is the anchor): hosts an FL process on a real node, deals a
// dataset out to N simulated workers (IID, by label, Dirichlet α) that run in worker threads, each with
// its own socket, FlWorker and onnxruntime training, and drives C cycles through the node's own rules —
// with dropouts and slow workers — to try a server_config before real devices join. After each cycle
// it downloads the checkpoint the node wrote and evaluates it on a held-out set.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { setTimeout as delay } from 'node:timers/promises';
import type { GridClient } from '../../core/client';
import { gridError, GridError } from '../../core/errors';
import { FlWorker } from '../../core/fl-worker';
import { FlHostTraining } from '../../core/protocol/fl-messages';
import { FlListProcesses, type FlProcessInfo } from '../../core/protocol/fl-messages';
import type { FlSimulationCycle } from '../../core/protocol/fl-join-messages';
import { bufferSource } from '../../core/socket/transfer';
import { datasetSize, type Dataset } from '../../compute/data';
import { seededRandom } from '../../compute/plan/models';
import { evaluateModel, type Metrics } from '../../compute/train';
import type { FromThread, ThreadInit, ToThread, WorkerOutcome, WorkerRole } from './messages';
import { partitionFor, type Partition } from './partition';

/** Threads a simulation starts unless told otherwise. */
export const DEFAULT_MAX_THREADS = 16;

export interface FlSimulationOptions {
  /** The node's WebSocket address (ws://host:port). */
  url: string;
  /**
   * A client of that node: the simulation reads the process's status and checkpoints through it and, unless
   * `hostProcess` is given, hosts its FL process through it (then it must be signed in as a user allowed to host).
   */
  host: GridClient;
  /**
   * Hosts the process some other way (the notebook's simulation runs in a child process and has the editor,
   * whose connection is signed in, host it). Called once every worker is connected.
   */
  hostProcess?(model: Uint8Array, clientConfig: Record<string, unknown>, serverConfig: Record<string, unknown>): Promise<{ model_id: number; name: string; version: string }>;
  /** The ONNX model to train (its float32 initializers are the parameters). */
  model: Uint8Array;
  /** Dealt out to the workers. */
  train: Dataset;
  /** Held out: each checkpoint is evaluated on it. */
  test: Dataset;
  workers: number;
  cycles: number;
  /** Default IID. */
  partition?: Partition;
  /** The process name (default `sim-<time>`) and version (default 1.0). */
  name?: string;
  version?: string;
  /** What workers train with: batch_size, lr, epochs, max_updates, optimizer, loss … */
  clientConfig?: Record<string, unknown>;
  /**
   * The node's rules for the process. Defaults: max_workers and max_diffs = workers, num_cycles = cycles,
   * cycle_length 60 s (so a cycle with dropouts still closes on time).
   */
  serverConfig?: Record<string, unknown>;
  /** A fraction of the workers drops out of each cycle after being accepted: never reports ('silent'), or its connection closes after training ('vanish'); 'mixed' alternates. */
  dropout?: { fraction: number; mode?: 'silent' | 'vanish' | 'mixed' };
  /**
   * A fraction of the (other) workers is slow: it waits `delayMs` between training and reporting, or with
   * `untilClosed` it reports only once the node has closed the cycle — refused as late whatever the
   * machine's speed (what a test of late reports wants; a fixed delay races the node's clock under load).
   */
  slow?: { fraction: number; delayMs?: number; untilClosed?: boolean };
  /**
   * Worker threads; workers are dealt to them round-robin, each keeps its own socket, FlWorker and
   * training. Default: one per worker, up to 16 (each thread loads onnxruntime).
   */
  threads?: number;
  seed?: number;
  /** Milliseconds for each request of a worker. Default 20 000. */
  timeoutMs?: number;
  /** How long a cycle may take to close before the simulation gives up. Default 2 × cycle_length + 60 s. */
  cycleTimeoutMs?: number;
  /** Keep every reported diff (flattened, in parameter order) in the cycle's metrics, to check the average. */
  collectDiffs?: boolean;
  signal?: AbortSignal;
  /** Once the process is hosted: its name, the hosted model on the held-out set, the workers' rows. */
  onHosted?(info: { name: string; version: string; processId: number; initial: Metrics; partitionSizes: number[] }): void;
  onCycle?(metrics: FlCycleMetrics): void;
  /** Ends the simulation early after a cycle (Flower's early stopping), e.g. once a target accuracy is reached. */
  stopWhen?(metrics: FlCycleMetrics): boolean;
}

export interface FlReportedDiff { worker: number; numSamples: number; diff: Float32Array }

/** One cycle's metrics (the fields' meaning: FlSimulationCycle), with the reported diffs when collectDiffs is on. */
export interface FlCycleMetrics extends FlSimulationCycle {
  diffs?: FlReportedDiff[];
}

export interface FlSimulationResult {
  name: string;
  version: string;
  processId: number;
  /** Rows each worker holds. */
  partitionSizes: number[];
  /** The hosted model on the held-out set. */
  initial: Metrics;
  cycles: FlCycleMetrics[];
  seconds: number;
}

function threadScript(): { script: string; eval: boolean } {
  // Bundled, the thread sits next to this code in dist/; from source (tests, tsx), next to this file.
  const js = join(__dirname, 'fl-simulation-thread.js');
  if (existsSync(js)) return { script: js, eval: false };
  const ts = join(__dirname, 'thread.ts');
  if (!existsSync(ts)) throw gridError('INTERNAL', `fl-simulation-thread.js is missing next to ${__dirname}; rebuild`);
  return { script: `require(${JSON.stringify(createRequire(__filename).resolve('tsx/cjs'))}); require(${JSON.stringify(ts)});`, eval: true };
}

function pickRoles(n: number, rand: () => number, dropout: FlSimulationOptions['dropout'], slow: FlSimulationOptions['slow'], cycle: number): Record<number, WorkerRole> {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const roles: Record<number, WorkerRole> = {};
  const nDrop = Math.round((dropout?.fraction ?? 0) * n);
  const nSlow = Math.min(n - nDrop, Math.round((slow?.fraction ?? 0) * n));
  order.slice(0, nDrop).forEach((w, i) => {
    const mode = dropout?.mode ?? 'silent';
    roles[w] = { drop: mode === 'mixed' ? ((i + cycle) % 2 === 0 ? 'silent' : 'vanish') : mode };
  });
  for (const w of order.slice(nDrop, nDrop + nSlow)) roles[w] = slow!.untilClosed === true ? { untilClosed: true } : { delayMs: slow!.delayMs ?? 0 };
  return roles;
}

function checkOptions(o: FlSimulationOptions): void {
  const int = (v: number, what: string) => { if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what} must be a positive whole number, got ${v}`); };
  int(o.workers, 'workers');
  int(o.cycles, 'cycles');
  if (o.threads !== undefined) int(o.threads, 'threads');
  const frac = (v: number | undefined, what: string) => { if (v !== undefined && !(v >= 0 && v <= 1)) throw new RangeError(`${what} must be in [0, 1], got ${v}`); };
  frac(o.dropout?.fraction, 'dropout.fraction');
  frac(o.slow?.fraction, 'slow.fraction');
  if (o.slow !== undefined && o.slow.untilClosed !== true && !(o.slow.delayMs !== undefined && o.slow.delayMs >= 0)) {
    throw new RangeError(`slow.delayMs must be ≥ 0 (or slow.untilClosed true), got ${o.slow.delayMs}`);
  }
  if (datasetSize(o.test) === 0) throw new RangeError('the held-out test set is empty');
}

/** Runs the simulation; rejects with a GridError when the node refuses the process or a cycle does not close in time. */
export async function simulateFl(o: FlSimulationOptions): Promise<FlSimulationResult> {
  checkOptions(o);
  const t0 = performance.now();
  const seed = o.seed ?? 0;
  const name = o.name ?? `sim-${Date.now().toString(36)}`;
  const version = o.version ?? '1.0';
  const serverConfig = { max_workers: o.workers, max_diffs: o.workers, num_cycles: o.cycles, cycle_length: 60, ...o.serverConfig };
  const clientConfig: Record<string, unknown> = { ...o.clientConfig, name, version };
  const loss = clientConfig.loss === 'mse' ? 'mse' : 'cross_entropy';
  const evalOptions = { loss, loadOptions: { intraOpNumThreads: 1 } } as const;
  const parts = partitionFor(o.train, o.workers, o.partition ?? { kind: 'iid' }, seed);

  const initial = await evaluateModel(o.model, o.test, evalOptions);
  // Checkpoints and status come over the host's connection.
  const reader = new FlWorker(o.host.socket);

  const nThreads = Math.min(o.threads ?? DEFAULT_MAX_THREADS, o.workers);
  const { script, eval: isEval } = threadScript();
  const threads: Worker[] = [];
  let onMessage: (m: FromThread) => void = () => {};
  let fail: (err: GridError) => void = () => {};
  const failure = new Promise<never>((_, reject) => { fail = reject; });
  failure.catch(() => undefined);
  const onAbort = () => fail(gridError('ABORTED', 'the FL simulation was cancelled'));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (o.signal?.aborted) onAbort();
    for (let t = 0; t < nThreads; t++) {
      const init: ThreadInit = {
        url: o.url, name, version, timeoutMs: o.timeoutMs ?? 20_000, seed, loadOptions: { intraOpNumThreads: 1 }, collectDiffs: o.collectDiffs ?? false,
        workers: parts.map((data, index) => ({ index, data })).filter((w) => w.index % nThreads === t),
      };
      const w = new Worker(script, { eval: isEval, workerData: init });
      w.on('message', (m: FromThread) => onMessage(m));
      w.on('error', (err) => fail(gridError('INTERNAL', `an FL simulation thread failed: ${err.message}`)));
      w.on('exit', (code) => { if (code !== 0) fail(gridError('INTERNAL', `an FL simulation thread exited with code ${code}`)); });
      threads.push(w);
    }
    let ready = 0;
    await Promise.race([failure, new Promise<void>((resolve) => {
      onMessage = (m) => {
        if (m.type === 'failed') fail(new GridError(m.code as never, `a simulated worker could not connect to ${o.url}: ${m.message}`));
        else if (m.type === 'ready' && ++ready === nThreads) resolve();
      };
    })]);

    // Hosted once every worker is connected: the first cycle's clock (cycle_length) starts here, and
    // starting threads (onnxruntime, sockets) must not eat into it.
    const hosted = await Promise.race([failure, o.hostProcess !== undefined ? o.hostProcess(o.model, clientConfig, serverConfig) : hostOver(o.host, o.model, clientConfig, serverConfig)]);
    o.onHosted?.({ name: hosted.name, version: hosted.version, processId: hosted.model_id, initial, partitionSizes: parts.map(datasetSize) });

    const rand = seededRandom(seed + 3);
    const cycles: FlCycleMetrics[] = [];
    const cycleLength = typeof serverConfig.cycle_length === 'number' ? serverConfig.cycle_length : 60;
    const cycleTimeout = o.cycleTimeoutMs ?? 2 * cycleLength * 1000 + 60_000;
    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      const roles = pickRoles(o.workers, rand, o.dropout, o.slow, cycle);
      const started = performance.now();
      const outcomes = new Map<number, WorkerOutcome>();
      let done = 0;
      const threadsDone = new Promise<void>((resolve) => {
        onMessage = (m) => {
          if (m.type === 'outcome' && m.cycle === cycle) outcomes.set(m.index, m.outcome);
          else if (m.type === 'cycle-done' && m.cycle === cycle && ++done === nThreads) resolve();
        };
      });
      for (const t of threads) t.postMessage({ type: 'cycle', cycle, roles } satisfies ToThread);
      const closed = waitForClose(reader, hosted.name, hosted.version, cycle, cycleTimeout, failure).then((status) => {
        for (const t of threads) t.postMessage({ type: 'closed', cycle } satisfies ToThread);
        return status;
      });
      const [status] = await Promise.race([failure, Promise.all([closed, threadsDone])]);
      const checkpoint = status.process.checkpoints.find((c) => c.cycle === cycle) ?? status.process.checkpoints.at(-1)!;
      // The node's own clock: a cycle opens when the one before it wrote its checkpoint (cycle 1 at hosting).
      const previous = status.process.checkpoints.find((c) => c.number === checkpoint.number - 1);
      const nodeMs = previous === undefined ? NaN : Date.parse(checkpoint.created) - Date.parse(previous.created);
      const seconds = (Number.isFinite(nodeMs) ? nodeMs : status.at - started) / 1000;
      const bytes = await reader.retrieveModel({ name: hosted.name, version: hosted.version, checkpoint: checkpoint.number });
      const m = await evaluateModel(bytes, o.test, evalOptions);
      const list = [...outcomes.entries()].sort((a, b) => a[0] - b[0]);
      const count = (s: WorkerOutcome['status']) => list.filter(([, x]) => x.status === s).length;
      const rejections: Record<string, number> = {};
      for (const [, x] of list) if (x.status === 'rejected') rejections[x.reason] = (rejections[x.reason] ?? 0) + 1;
      const errs = list.filter(([, x]) => x.status === 'error') as [number, Extract<WorkerOutcome, { status: 'error' }>][];
      const metrics: FlCycleMetrics = {
        cycle, checkpoint: checkpoint.number,
        accepted: list.filter(([, x]) => x.status !== 'rejected' && !(x.status === 'error' && !x.accepted)).length,
        rejected: count('rejected'), reported: count('reported'), dropped: count('dropped'), late: count('late'), errors: errs.length,
        averaged: checkpoint.reports, accuracy: m.accuracy, loss: m.loss, seconds,
        droppedWorkers: list.filter(([, x]) => x.status === 'dropped').map(([i]) => i),
        slowWorkers: Object.entries(roles).filter(([, r]) => r.delayMs !== undefined || r.untilClosed === true).map(([i]) => Number(i)),
        rejections, errorMessages: errs.slice(0, 5).map(([i, x]) => `worker ${i}: ${x.code} ${x.message}`),
        ...(o.collectDiffs && {
          diffs: list.flatMap(([i, x]) => (x.status === 'reported' && x.diff ? [{ worker: i, numSamples: x.numSamples, diff: x.diff }] : [])),
        }),
      };
      cycles.push(metrics);
      o.onCycle?.(metrics);
      if (o.stopWhen?.(metrics) === true) break;
    }
    return { name: hosted.name, version: hosted.version, processId: hosted.model_id, partitionSizes: parts.map(datasetSize), initial, cycles, seconds: (performance.now() - t0) / 1000 };
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    reader.dispose();
    await Promise.all(threads.map(async (t) => {
      t.postMessage({ type: 'stop' } satisfies ToThread);
      const exited = new Promise((resolve) => t.once('exit', resolve));
      if (await Promise.race([exited.then(() => true), delay(5_000, false)]) === false) await t.terminate();
    }));
  }
}

async function hostOver(client: GridClient, model: Uint8Array, clientConfig: Record<string, unknown>, serverConfig: Record<string, unknown>) {
  const upload = await client.socket.upload(bufferSource(model));
  return client.socket.request(FlHostTraining, { model_transfer_id: upload.transfer_id, client_config: clientConfig, server_config: serverConfig }, { timeout: 600_000 });
}

/**
 * Polls the node's fl-list-processes until cycle `cycle` of the process has its checkpoint. The node has no
 * push for it to an outside client yet; 100 ms apart costs it nothing and keeps the simulation simple.
 */
async function waitForClose(reader: FlWorker, name: string, version: string, cycle: number, timeoutMs: number, failure: Promise<never>): Promise<{ process: FlProcessInfo; at: number }> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { processes } = await Promise.race([failure, reader.socket.request(FlListProcesses, {})]);
    const p = processes.find((q) => q.name === name && q.version === version);
    if (p === undefined) throw gridError('NOT_FOUND', `FL process ${name}@${version} is gone from the node`);
    if (p.completed_cycles >= cycle) {
      return { process: p, at: performance.now() };
    }
    if (performance.now() > deadline) {
      const c = p.cycle;
      throw gridError('TIMEOUT', `cycle ${cycle} of ${name}@${version} did not close within ${Math.round(timeoutMs / 1000)} s (${c?.reported ?? '?'} reports of ${c?.assigned ?? '?'} assigned); check min_diffs / min_workers against the workers that report, and cycle_length`);
    }
    await Promise.race([failure, delay(100)]);
  }
}
