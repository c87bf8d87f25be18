// Runs an FL worker (src/cli/fl-join-process.ts) in a child process for the palette's Join as Worker and
// the notebook's grid.fl.join (and grid.fl.simulate's simulation): the job goes in, progress comes back,
// one outcome settles the promise.
// No vscode import (the notebook-bridge test runs it in plain Node).
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { GridError, gridError } from '../core/errors';
import type { FlEvaluateJob, FlHostAnswer, FlJoinJob, FlJoinMessage, FlSimulateJob, FlSimulationCycle, FlSimulationSummary } from '../core/protocol/fl-join-messages';

export type FlJoinOutcome = Extract<FlJoinMessage, { kind: 'reported' | 'rejected' }>;
export type FlJoinProgress = Extract<FlJoinMessage, { kind: 'accepted' | 'progress' }>;

/** How long a cancelled worker may take to stop before it is killed. */
const CANCEL_GRACE_MS = 5_000;

/** The bundled worker beside this bundle (dist/), else the TypeScript source under tsx (tests). */
function workerScript(): { path: string; execArgv: string[] } {
  const bundled = join(__dirname, 'fl-join-process.js');
  if (existsSync(bundled)) return { path: bundled, execArgv: [] };
  return { path: join(__dirname, '..', 'cli', 'fl-join-process.ts'), execArgv: ['--import', 'tsx'] };
}

/**
 * Joins `job.name@version` for one cycle on local data in a worker process. Resolves `reported` or
 * `rejected` (the node's reason); rejects with the worker's coded error, or GRID_ERR_ABORTED when
 * `signal` aborts (the worker stops training and reports nothing).
 */
export function runFlWorker(job: FlJoinJob, opts: { signal?: AbortSignal; onProgress?(p: FlJoinProgress): void } = {}): Promise<FlJoinOutcome> {
  return runChild<FlJoinOutcome>(job, `joining ${job.name}`, opts);
}

/** Loss and accuracy of an ONNX checkpoint file on a held-out dataset, in a worker process. */
export async function evaluateCheckpoint(job: Omit<FlEvaluateJob, 'mode'>, opts: { signal?: AbortSignal } = {}): Promise<{ rows: number; loss: number; accuracy: number }> {
  const m = await runChild<Extract<FlJoinMessage, { kind: 'evaluated' }>>({ ...job, mode: 'evaluate' }, 'evaluating the checkpoint', opts);
  return { rows: m.rows, loss: m.loss, accuracy: m.accuracy };
}

export type FlSimulationHosted = Extract<FlJoinMessage, { kind: 'sim-hosted' }>;

/**
 * Runs an FL simulation (grid.fl.simulate) in a worker process. `hostProcess` hosts its FL process (the
 * model as a file the worker process wrote) over the editor's signed-in connection; `onHosted` and
 * `onCycle` follow it; resolves with the summary, rejects with the coded error or GRID_ERR_ABORTED.
 */
export async function runFlSimulation(job: Omit<FlSimulateJob, 'mode'>, opts: {
  signal?: AbortSignal;
  hostProcess(modelFile: string, clientConfig: Record<string, unknown>, serverConfig: Record<string, unknown>): Promise<{ model_id: number; name: string; version: string }>;
  onHosted?(h: FlSimulationHosted): void;
  onCycle?(c: FlSimulationCycle): void;
}): Promise<FlSimulationSummary> {
  const m = await runChild<Extract<FlJoinMessage, { kind: 'simulated' }>>({ ...job, mode: 'simulate' }, `simulating ${job.name ?? 'the FL process'}`, {
    ...(opts.signal !== undefined && { signal: opts.signal }),
    onOther: (msg, answer) => {
      if (msg.kind === 'sim-hosted') opts.onHosted?.(msg);
      else if (msg.kind === 'sim-cycle') opts.onCycle?.(msg.cycle);
      else if (msg.kind === 'host') {
        opts.hostProcess(msg.model, msg.clientConfig, msg.serverConfig).then(
          (h) => answer({ kind: 'hosted', model_id: h.model_id, name: h.name, version: h.version }),
          (err: unknown) => { const e = err instanceof GridError ? err : gridError('INTERNAL', String((err as Error)?.message ?? err)); answer({ kind: 'host-failed', code: e.code, message: e.message }); },
        );
      }
    },
  });
  return m.result;
}

type ChildOptions = { signal?: AbortSignal; onProgress?(p: FlJoinProgress): void; onOther?(m: FlJoinMessage, answer: (a: FlHostAnswer) => void): void };

function runChild<T extends FlJoinMessage>(job: FlJoinJob | FlEvaluateJob | FlSimulateJob, what: string, opts: ChildOptions): Promise<T> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) { reject(gridError('ABORTED', `${what} was cancelled`)); return; }
    const script = workerScript();
    const child = fork(script.path, [JSON.stringify(job)], {
      execArgv: script.execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      // In VS Code process.execPath is Electron: run it as plain Node.
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
    });
    let settled: T | GridError | undefined;
    let stderr = '';
    let killTimer: NodeJS.Timeout | undefined;
    child.stderr?.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-4000); });
    const onAbort = () => {
      settled ??= gridError('ABORTED', `${what} was cancelled${'mode' in job ? '' : '; the worker reported nothing'}`);
      if (child.connected) child.send({ kind: 'cancel' });
      killTimer = setTimeout(() => child.kill('SIGKILL'), CANCEL_GRACE_MS);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('message', (m: FlJoinMessage) => {
      switch (m.kind) {
        case 'accepted':
        case 'progress':
          if (settled === undefined) opts.onProgress?.(m);
          break;
        case 'reported':
        case 'rejected':
        case 'evaluated':
        case 'simulated':
          settled ??= m as T;
          break;
        case 'error':
          settled ??= GridError.fromWire(m);
          break;
        default:
          if (settled === undefined) opts.onOther?.(m, (a) => { if (child.connected) child.send(a); });
      }
    });
    child.on('error', (err) => { settled ??= gridError('INTERNAL', `the FL worker process could not start: ${err.message}`); });
    child.on('exit', (code, sig) => {
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      const out = settled ?? gridError('INTERNAL', `the FL worker process ended (${sig ?? `exit ${code}`}) without an outcome${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' ')}` : ''}`);
      if (out instanceof GridError) reject(out);
      else resolve(out);
    });
  });
}
