// A worker thread of an FL simulation (simulate.ts starts it; bundled as dist/fl-simulation-thread.js):
// its share of the simulated workers, each with its own GridSocket + FlWorker, training with onnxruntime
// on its own partition. Each cycle it is told, it asks the node for a place for each of its workers,
// trains, and reports — or drops out, or dawdles — as the cycle's roles say.

import { parentPort, workerData } from 'node:worker_threads';
import { setTimeout as delay } from 'node:timers/promises';
import { toGridError } from '../../core/errors';
import { FlWorker, type FlJob } from '../../core/fl-worker';
import type { Dataset } from '../../compute/data';
import { flTrainConfig, trainFlCycle } from '../fl-worker-training';
import type { FromThread, ThreadInit, ToThread, WorkerOutcome, WorkerRole } from './messages';

const init = workerData as ThreadInit;
const port = parentPort!;
const post = (m: FromThread, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);

/** The last cycle the main thread said the node closed (cycles close in order), and who waits for one. */
let closedThrough = 0;
const waitingForClose = new Map<number, (() => void)[]>();
/** Resolves once the node has closed `cycle` (for workers whose role is `untilClosed`). */
function cycleClosed(cycle: number): Promise<void> {
  if (cycle <= closedThrough) return Promise.resolve();
  return new Promise((resolve) => { waitingForClose.set(cycle, [...(waitingForClose.get(cycle) ?? []), resolve]); });
}
function markClosed(cycle: number): void {
  closedThrough = Math.max(closedThrough, cycle);
  for (const [c, waiters] of waitingForClose) {
    if (c > closedThrough) continue;
    waitingForClose.delete(c);
    for (const resolve of waiters) resolve();
  }
}

class SimWorker {
  readonly index: number;
  readonly data: Dataset;
  private worker: FlWorker | undefined;
  private job: FlJob | undefined;

  constructor(index: number, data: Dataset) {
    this.index = index;
    this.data = data;
  }

  /** Connects (again, after a vanish): a new socket, a new worker id on the node. */
  async connect(): Promise<FlJob> {
    if (this.job !== undefined) return this.job;
    this.worker = await FlWorker.connect(init.url, { timeoutMs: init.timeoutMs, reconnect: { enabled: false } });
    this.job = this.worker.newJob({ modelName: init.name, modelVersion: init.version, ...(init.authToken !== undefined && { authToken: init.authToken }) });
    return this.job;
  }

  vanish(): void {
    this.worker?.dispose();
    this.worker = undefined;
    this.job = undefined;
  }

  async cycle(cycle: number, role: WorkerRole): Promise<WorkerOutcome> {
    let accepted = false;
    try {
      const job = await this.connect();
      const out = await job.start();
      if (out.status === 'rejected') return { status: 'rejected', reason: out.reason };
      if (out.status === 'error') throw out.error;
      accepted = true;
      post({ type: 'accepted', cycle, index: this.index });
      if (role.drop === 'silent') return { status: 'dropped', drop: 'silent' };
      const c = out.cycle;
      const r = await trainFlCycle(c.model, this.data, flTrainConfig(c.clientConfig), { seed: init.seed + cycle * 100_003 + this.index, loadOptions: init.loadOptions });
      if (role.drop === 'vanish') {
        this.vanish();
        return { status: 'dropped', drop: 'vanish' };
      }
      if (role.delayMs !== undefined && role.delayMs > 0) await delay(role.delayMs);
      if (role.untilClosed === true) await cycleClosed(cycle);
      try {
        await job.report(r.diff, r.numSamples);
      } catch (err) {
        if (toGridError(err).code === 'GRID_ERR_CYCLE_CLOSED') return { status: 'late' };
        throw err;
      }
      const out2: WorkerOutcome = { status: 'reported', numSamples: r.numSamples, loss: r.metrics.loss, accuracy: r.metrics.accuracy, seconds: r.seconds };
      if (init.collectDiffs) {
        const flat = new Float32Array(r.diff.reduce((a, t) => a + t.data.length, 0));
        let at = 0;
        for (const t of r.diff) { flat.set(t.data, at); at += t.data.length; }
        out2.diff = flat;
      }
      return out2;
    } catch (err) {
      const e = toGridError(err);
      // A broken connection is not carried into the next cycle.
      if (this.worker?.socket.status.state !== 'open') this.vanish();
      return { status: 'error', code: e.code, message: e.message, accepted };
    }
  }

  dispose(): void {
    this.vanish();
  }
}

const workers = init.workers.map((w) => new SimWorker(w.index, w.data));

async function runCycle(cycle: number, roles: Record<number, WorkerRole>): Promise<void> {
  await Promise.all(workers.map(async (w) => {
    const outcome = await w.cycle(cycle, roles[w.index] ?? {});
    post({ type: 'outcome', cycle, index: w.index, outcome }, outcome.status === 'reported' && outcome.diff ? [outcome.diff.buffer as ArrayBuffer] : undefined);
  }));
  post({ type: 'cycle-done', cycle });
}

port.on('message', (m: ToThread) => {
  if (m.type === 'stop') {
    for (const w of workers) w.dispose();
    port.close();
    return;
  }
  if (m.type === 'closed') return markClosed(m.cycle);
  void runCycle(m.cycle, m.roles);
});

void (async () => {
  try {
    await Promise.all(workers.map((w) => w.connect()));
    post({ type: 'ready' });
  } catch (err) {
    const e = toGridError(err);
    post({ type: 'failed', code: e.code, message: e.message });
  }
})();
