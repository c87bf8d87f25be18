// The host side of a notebook kernel: owns the kernel process, queues cells, routes their output,
// answers their grid calls through a GridBridge, and interrupts or restarts. Runs in the extension
// host (or a test); no `vscode` here, so the NotebookController on top stays a thin adapter.

import { fork, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { GridError, gridError } from '../core/errors';
import { isGridBridgeMethod, type GridBridge } from './bridge';
import {
  isWorkerMessage, truncationNotice, type CellError, type CellLanguage, type CellOutput, type HostCallError, type HostCallRequest,
  type HostToWorker, type WorkerConfig, type WorkerToHost,
} from './protocol';
import type { IntrospectReply } from './protocol';

export interface KernelLogger {
  debug(message: string, data?: Record<string, unknown>): void;
  warn(message: string, data?: Record<string, unknown>): void;
  error(message: string, data?: Record<string, unknown>): void;
}

export interface KernelOptions {
  /** The worker script; default `kernel-worker.js` beside this bundle (dist/). */
  workerPath?: string;
  /** The Node binary; default process.execPath (in VS Code the Electron binary, run as Node). */
  execPath?: string;
  /** Node flags for the kernel process, e.g. `['--import', 'tsx']` to run the TypeScript worker. */
  execArgv?: string[];
  /** Extra environment for the kernel process. */
  env?: Record<string, string | undefined>;
  /** The notebook's folder: relative paths and imports in cells resolve from here. */
  cwd?: string;
  /** How long an interrupted cell may take to stop before the process is restarted. Default 3000. */
  interruptTimeoutMs?: number;
  /** How long the process may take to say it is ready. Default 30000. */
  startTimeoutMs?: number;
  /** Cancel the queued cells when a cell fails or is interrupted (Jupyter's default). Default true. */
  stopOnError?: boolean;
  /** Stream output one cell may print before the rest is dropped. Default 8 MiB. */
  maxStreamBytesPerCell?: number;
  /** Answers `grid.connect/models/...` from cells; without one they fail with GRID_ERR_NOT_CONNECTED. */
  bridge?: GridBridge;
  logger?: KernelLogger;
}

export interface Disposable {
  dispose(): void;
}
export type Event<T> = (listener: (event: T) => void) => Disposable;

export type KernelStatus = 'stopped' | 'starting' | 'idle' | 'busy' | 'disposed';

export interface ExecuteOptions {
  language?: CellLanguage;
  /** Names the cell in stack traces; default `Cell [n]` with n its execution count. */
  cellName?: string;
  /** Called when the cell leaves the queue and starts (set executionOrder and start time here). */
  onStart?(info: { executionCount: number; startTime: number }): void;
  /** Called for each output while the cell runs; stream text arriving together is coalesced. */
  onOutput?(output: CellOutput): void;
  /** Aborting cancels the cell if it is still queued and interrupts it if it runs. */
  signal?: AbortSignal;
  /**
   * Takes no execution count (Jupyter's silent execution, its user_expressions): onStart and the result
   * carry the last count taken, and output arriving after the cell ended is dropped, not given to that cell.
   */
  uncounted?: boolean;
}

export type ExecutionStatus = 'ok' | 'error' | 'interrupted' | 'cancelled';

export interface ExecutionResult {
  status: ExecutionStatus;
  /** Unset for a cell cancelled before it started. */
  executionCount?: number;
  startTime?: number;
  endTime: number;
  /** The failure, also delivered as the last `error` output. */
  error?: CellError;
  /** True when the kernel process was killed or died: every earlier cell's state is gone. */
  stateLost: boolean;
}

export interface LateOutput {
  executionCount: number;
  output: CellOutput;
}

class Emitter<T> {
  private readonly listeners = new Set<(event: T) => void>();
  readonly event: Event<T> = (listener) => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  fire(event: T): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // a listener's failure must not break the kernel's bookkeeping
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}

interface Execution {
  execId: number;
  code: string;
  options: ExecuteOptions;
  settled: Promise<ExecutionResult>;
  resolve(result: ExecutionResult): void;
  executionCount?: number;
  startTime?: number;
  /** The process the cell was sent to, once sent. */
  proc?: KernelProcess;
  interrupting: boolean;
  done: boolean;
  killTimer?: NodeJS.Timeout;
  calls: Map<number, AbortController>;
  pendingStream?: { stream: 'stdout' | 'stderr'; text: string };
  /** Output bytes given to the cell: its console's, what child processes wrote to the kernel's stdout/stderr, and its displays. */
  streamBytes: number;
  /** The display ids the cell has shown (an update of another id is a new output, and counts as one). */
  displayIds: Set<string>;
  streamTruncated: boolean;
  flushScheduled: boolean;
  abortListener?: () => void;
}

interface KernelProcess {
  child: ChildProcess;
  ready: Promise<void>;
  isReady: boolean;
  exited: boolean;
  exitedPromise: Promise<void>;
  /** Killed by us (interrupt, restart, dispose): the exit is expected. */
  killed: boolean;
  calls: Map<number, AbortController>;
  pings: Map<number, { start: number; resolve(ms: number): void; reject(err: Error): void }>;
  introspections: Map<number, (reply: IntrospectReply | undefined) => void>;
  stderrTail: string;
  /** Bytes of raw output sent to the log while no cell of this process ran (bounded: a `yes` left running). */
  rawLogged: number;
  /** Process groups of child processes the worker started that are still alive (POSIX): killed with it. */
  childGroups: Set<number>;
  markReady(): void;
  fail(err: Error): void;
}

/** SIGKILL to the worker's process group (POSIX; it leads one), so what its blocking calls started dies too. */
function killGroup(child: ChildProcess): void {
  if (process.platform !== 'win32' && child.pid !== undefined) {
    try {
      process.kill(-child.pid, 'SIGKILL');
      return;
    } catch {
      // no such group: fall back to the process itself
    }
  }
  child.kill('SIGKILL');
}

/** SIGKILL to each process group (children the worker started, each leading its own group); then forgets them. */
function killGroups(groups: Set<number>): void {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups.clear();
}

const noopLogger: KernelLogger = { debug() {}, warn() {}, error() {} };
const RECENT_LIMIT = 256;
const RAW_LOG_LIMIT = 64 * 1024;
/** An interrupt with no cell running restarts the process if an interrupted cell printed within this long. */
const LEFTOVER_OUTPUT_MS = 10_000;
/**
 * Late output of an interrupted cell counts toward that restart only this long after the interrupt:
 * past the worker's SIGINT-to-SIGKILL grace for the cell's child processes (1 s), with a margin.
 */
const LATE_OUTPUT_GRACE_MS = 2000;

export class KernelHost {
  private readonly options: Required<Pick<KernelOptions, 'workerPath' | 'execPath' | 'execArgv' | 'interruptTimeoutMs' | 'startTimeoutMs' | 'stopOnError' | 'maxStreamBytesPerCell'>> & KernelOptions;
  private readonly logger: KernelLogger;
  private readonly statusEmitter = new Emitter<KernelStatus>();
  private readonly lateOutputEmitter = new Emitter<LateOutput>();
  private readonly stateLostEmitter = new Emitter<{ reason: string }>();
  private readonly queue: Execution[] = [];
  /** execId → executionCount of finished cells, for output that arrives after a cell ended. */
  private readonly recent = new Map<number, number>();
  /**
   * Cells that ended interrupted with their process kept (their leftover code may still run): when, and
   * how many late outputs they gave after LATE_OUTPUT_GRACE_MS.
   */
  private readonly interruptedIds = new Map<number, { at: number; lateOutputs: number }>();
  /** The last late output of an interrupted cell: the target of an interrupt while no cell runs. */
  private leftover: { proc: KernelProcess; executionCount: number; at: number } | undefined;
  private running: Execution | undefined;
  private proc: KernelProcess | undefined;
  private nextExecId = 1;
  private nextPingId = 1;
  private count = 0;
  private currentStatus: KernelStatus = 'stopped';
  private disposed = false;

  /** Fires on every status change. */
  readonly onDidChangeStatus = this.statusEmitter.event;
  /** Output of a cell that already ended (timers, unawaited promises in it). */
  readonly onDidEmitLateOutput = this.lateOutputEmitter.event;
  /** The kernel process was killed or died; all variables are gone. `reason` says why. */
  readonly onDidLoseState = this.stateLostEmitter.event;

  constructor(options: KernelOptions = {}) {
    this.options = {
      workerPath: join(__dirname, 'kernel-worker.js'),
      execPath: process.execPath,
      execArgv: [],
      interruptTimeoutMs: 3000,
      startTimeoutMs: 30_000,
      stopOnError: true,
      maxStreamBytesPerCell: 8 * 1024 * 1024,
      ...options,
    };
    this.logger = options.logger ?? noopLogger;
  }

  get status(): KernelStatus {
    return this.currentStatus;
  }

  /** Cells run since the last (re)start. */
  get executionCount(): number {
    return this.count;
  }

  /** The kernel process id, when one runs. */
  get pid(): number | undefined {
    return this.proc?.child.pid;
  }

  /** Starts the kernel process if none runs; `execute` does this on its own. */
  async start(): Promise<void> {
    this.assertUsable('start');
    await this.ensureProcess();
  }

  /** Queues a cell. The promise never rejects for a cell's failure: see `status` and `error`. */
  execute(code: string, options: ExecuteOptions = {}): Promise<ExecutionResult> {
    this.assertUsable('execute');
    let resolve!: (result: ExecutionResult) => void;
    const settled = new Promise<ExecutionResult>((r) => { resolve = r; });
    const ex: Execution = {
      execId: this.nextExecId++, code, options, settled, resolve,
      interrupting: false, done: false, calls: new Map(), streamBytes: 0, displayIds: new Set(), streamTruncated: false, flushScheduled: false,
    };
    const { signal } = options;
    if (signal?.aborted) {
      this.finish(ex, { status: 'cancelled' });
      return settled;
    }
    if (signal) {
      ex.abortListener = () => {
        const queued = this.queue.indexOf(ex);
        if (queued >= 0) {
          this.queue.splice(queued, 1);
          this.finish(ex, { status: 'cancelled' });
        } else if (this.running === ex) {
          void this.interrupt();
        }
      };
      signal.addEventListener('abort', ex.abortListener, { once: true });
    }
    this.queue.push(ex);
    this.pump();
    return settled;
  }

  /**
   * Interrupts the running cell and cancels the queued ones. The cell's grid calls are aborted at
   * once; if it has not stopped after `interruptTimeoutMs`, the process is killed and restarted and
   * the cell ends saying that state was lost. Resolves when the running cell has ended. With no cell
   * running, it restarts the process if an interrupted cell's leftover code keeps printing (LATE_OUTPUT_GRACE_MS; last within 10 s)
   * (what the worker cannot stop: I/O loops, listeners); otherwise it does nothing.
   */
  async interrupt(): Promise<void> {
    if (this.disposed) return;
    this.cancelQueued();
    const ex = this.running;
    if (!ex) {
      this.stopLeftover();
      return;
    }
    if (!ex.interrupting) {
      ex.interrupting = true;
      for (const call of ex.calls.values()) call.abort(gridError('ABORTED', 'the cell was interrupted'));
      if (!ex.proc) {
        this.finish(ex, { status: 'interrupted' }); // still waiting for the process; nothing ran
      } else {
        this.post(ex.proc, { type: 'interrupt', execId: ex.execId });
        ex.killTimer = setTimeout(() => this.killAfterInterrupt(ex), this.options.interruptTimeoutMs);
      }
    }
    await ex.settled;
  }

  /**
   * An interrupt while no cell runs, with an interrupted cell still printing (leftover code that no
   * interrupt can reach: an I/O callback loop, an event listener): restarts the process, as the only way
   * to stop it, and says so in that cell's output and through onDidLoseState.
   */
  private stopLeftover(): void {
    const leftover = this.leftover;
    if (!leftover || leftover.proc !== this.proc || performance.now() - leftover.at > LEFTOVER_OUTPUT_MS) return;
    this.leftover = undefined;
    this.kill(leftover.proc);
    this.count = 0;
    this.lateOutputEmitter.fire({
      executionCount: leftover.executionCount,
      output: {
        kind: 'stream', stream: 'stderr',
        text: `\n${wrapText('[The kernel was restarted to stop what this cell left running after its interrupt. State was lost: variables, functions and imports from earlier cells are gone.]', KERNEL_MESSAGE_WIDTH)}\n`,
      },
    });
    this.stateLostEmitter.fire({ reason: 'interrupt' });
    if (!this.disposed) this.ensureProcess().catch((err: unknown) => this.logger.error('kernel restart failed', { error: String(err) }));
  }

  /** Kills the process (ending a running cell, cancelling the queue) and starts a fresh one. */
  async restart(): Promise<void> {
    this.assertUsable('restart');
    this.cancelQueued();
    if (this.running) {
      this.finish(this.running, {
        status: 'interrupted',
        error: stateLostError('KernelRestarted', 'The kernel was restarted while this cell ran.\nState was lost: variables, functions and imports from earlier cells are gone.'),
        stateLost: true,
      });
    }
    if (this.proc) this.kill(this.proc);
    this.count = 0;
    this.stateLostEmitter.fire({ reason: 'restart' });
    await this.ensureProcess();
  }

  /** One IPC round trip to the kernel process, in milliseconds (health check and benchmark baseline). */
  async ping(): Promise<number> {
    this.assertUsable('ping');
    const proc = await this.ensureProcess();
    const id = this.nextPingId++;
    return new Promise<number>((resolve, reject) => {
      proc.pings.set(id, { start: performance.now(), resolve, reject });
      this.post(proc, { type: 'ping', id });
    });
  }

  /**
   * Completions for, or a description of, the code at `cursor` (UTF-16 offset), from the kernel's live
   * state. Undefined when the process does not answer within `timeoutMs` (a cell in a synchronous
   * loop) or is not running: introspection never starts a kernel or waits on a cell.
   */
  async introspect(what: 'complete' | 'inspect', code: string, cursor: number, timeoutMs = 1000): Promise<IntrospectReply | undefined> {
    const proc = this.proc;
    if (this.disposed || !proc || !proc.isReady || proc.exited) return undefined;
    const id = this.nextPingId++;
    return new Promise<IntrospectReply | undefined>((resolve) => {
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      const finish = (reply: IntrospectReply | undefined) => {
        clearTimeout(timer);
        proc.introspections.delete(id);
        resolve(reply);
      };
      proc.introspections.set(id, finish);
      this.post(proc, { type: 'introspect', id, what, code, cursor });
    });
  }

  /** Ends everything: queued and running cells end, the process is killed. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) {
      await this.proc?.exitedPromise;
      return;
    }
    this.disposed = true;
    this.cancelQueued();
    if (this.running) this.finish(this.running, { status: 'interrupted', error: stateLostError('KernelDisposed', 'The kernel was shut down while this cell ran.'), stateLost: true });
    const proc = this.proc;
    if (proc) this.kill(proc);
    this.updateStatus();
    this.statusEmitter.dispose();
    this.lateOutputEmitter.dispose();
    this.stateLostEmitter.dispose();
    await proc?.exitedPromise;
  }

  // ---- queue ----

  private pump(): void {
    if (this.running || this.disposed) return this.updateStatus();
    const ex = this.queue.shift();
    if (!ex) return this.updateStatus();
    this.running = ex;
    ex.executionCount = ex.options.uncounted ? this.count : ++this.count;
    ex.startTime = Date.now();
    this.updateStatus();
    this.safely(() => ex.options.onStart?.({ executionCount: ex.executionCount!, startTime: ex.startTime! }));
    this.ensureProcess().then(
      (proc) => {
        if (this.running !== ex || ex.done) return;
        ex.proc = proc;
        this.post(proc, {
          type: 'execute', execId: ex.execId, code: ex.code,
          language: ex.options.language ?? 'typescript',
          cellName: ex.options.cellName ?? (ex.options.uncounted ? 'Cell [ ]' : `Cell [${ex.executionCount}]`),
        });
      },
      (err: unknown) => {
        if (this.running !== ex) return;
        const e = err instanceof GridError ? err : gridError('INTERNAL', String(err));
        this.finish(ex, { status: 'error', error: { name: 'KernelStartFailed', message: e.message, stack: `KernelStartFailed: ${e.message}`, code: e.code } });
      },
    );
  }

  private finish(ex: Execution, outcome: { status: ExecutionStatus; error?: CellError; stateLost?: boolean }): void {
    if (ex.done) return;
    ex.done = true;
    if (ex.killTimer) clearTimeout(ex.killTimer);
    if (ex.abortListener) ex.options.signal?.removeEventListener('abort', ex.abortListener);
    this.flush(ex);
    if (outcome.error) this.safely(() => ex.options.onOutput?.({ kind: 'error', error: outcome.error! }));
    const result: ExecutionResult = { status: outcome.status, endTime: Date.now(), stateLost: outcome.stateLost ?? false };
    if (ex.executionCount !== undefined) {
      result.executionCount = ex.executionCount;
      result.startTime = ex.startTime!;
      if (!ex.options.uncounted) {
        this.recent.set(ex.execId, ex.executionCount);
        if (this.recent.size > RECENT_LIMIT) this.recent.delete(this.recent.keys().next().value!);
      }
    }
    if (outcome.error) result.error = outcome.error;
    if (outcome.status === 'interrupted' && !result.stateLost) {
      this.interruptedIds.set(ex.execId, { at: performance.now(), lateOutputs: 0 });
      if (this.interruptedIds.size > RECENT_LIMIT) this.interruptedIds.delete(this.interruptedIds.keys().next().value!);
    }
    if (this.running === ex) this.running = undefined;
    ex.resolve(result);
    if ((outcome.status === 'error' || outcome.status === 'interrupted') && this.options.stopOnError) this.cancelQueued();
    this.pump();
  }

  private cancelQueued(): void {
    for (const ex of this.queue.splice(0)) this.finish(ex, { status: 'cancelled' });
  }

  // ---- output ----

  private route(execId: number, output: CellOutput): void {
    const ex = this.running;
    if (ex && ex.execId === execId && !ex.done) return this.deliver(ex, output);
    const executionCount = this.recent.get(execId);
    if (executionCount === undefined) return;
    // Armed by repeated output well after the interrupt: a one-off line (a child's exit callback, its
    // output as the interrupt's SIGINT/SIGKILL ends it) must not make a second Stop wipe the state.
    const interrupted = this.interruptedIds.get(execId);
    const now = performance.now();
    if (interrupted && this.proc && now - interrupted.at > LATE_OUTPUT_GRACE_MS && ++interrupted.lateOutputs >= 2) {
      this.leftover = { proc: this.proc, executionCount, at: now };
    }
    this.lateOutputEmitter.fire({ executionCount, output });
  }

  private deliver(ex: Execution, output: CellOutput): void {
    if (output.kind === 'display' && !this.admitDisplay(ex, output)) return;
    if (output.kind !== 'stream') {
      this.flush(ex);
      this.safely(() => ex.options.onOutput?.(output));
      return;
    }
    // The worker bounds its console; this bounds the cell's whole output, raw bytes from child processes and displays included.
    if (ex.streamTruncated) return;
    ex.streamBytes += Buffer.byteLength(output.text);
    if (ex.streamBytes > this.options.maxStreamBytesPerCell) {
      ex.streamTruncated = true;
      output = { kind: 'stream', stream: 'stderr', text: truncationNotice(this.options.maxStreamBytesPerCell) };
    }
    if (ex.pendingStream && ex.pendingStream.stream !== output.stream) this.flush(ex);
    if (ex.pendingStream) ex.pendingStream.text += output.text;
    else ex.pendingStream = { stream: output.stream, text: output.text };
    if (!ex.flushScheduled) {
      // Lines printed in one burst become one output; the next turn of the loop shows them.
      ex.flushScheduled = true;
      setImmediate(() => { ex.flushScheduled = false; this.flush(ex); });
    }
  }

  /**
   * Displays count in the same budget as the streams (the worker counts only what its console and
   * display() made, not raw child output): a new display adds its bytes, as does an update of an id the
   * cell never showed; an update of a shown one replaces it, and the cell's value always shows.
   */
  private admitDisplay(ex: Execution, output: Extract<CellOutput, { kind: 'display' }>): boolean {
    const replaces = output.update === true && output.displayId !== undefined && ex.displayIds.has(output.displayId);
    if (!replaces && !output.result) {
      if (ex.streamTruncated) return false;
      let bytes = 0;
      for (const data of Object.values(output.data)) bytes += typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
      ex.streamBytes += bytes;
      if (ex.streamBytes > this.options.maxStreamBytesPerCell) {
        ex.streamTruncated = true;
        this.deliverNotice(ex);
        return false;
      }
    }
    if (output.displayId !== undefined) ex.displayIds.add(output.displayId);
    return true;
  }

  private deliverNotice(ex: Execution): void {
    if (ex.pendingStream && ex.pendingStream.stream !== 'stderr') this.flush(ex);
    const text = truncationNotice(this.options.maxStreamBytesPerCell);
    if (ex.pendingStream) ex.pendingStream.text += text;
    else ex.pendingStream = { stream: 'stderr', text };
    this.flush(ex);
  }

  private flush(ex: Execution): void {
    const pending = ex.pendingStream;
    if (!pending) return;
    ex.pendingStream = undefined;
    this.safely(() => ex.options.onOutput?.({ kind: 'stream', stream: pending.stream, text: pending.text }));
  }

  // ---- grid calls ----

  private handleHostCall(proc: KernelProcess, request: HostCallRequest): void {
    const { callId, execId, method, args } = request;
    const reply = (message: HostToWorker) => {
      try {
        this.post(proc, message);
      } catch (err) {
        this.post(proc, { type: 'hostCallReply', callId, ok: false, error: toWire(gridError('INTERNAL', `the result of grid.${method} cannot be sent to the kernel: ${(err as Error).message}`)) });
      }
    };
    const bridge = this.options.bridge;
    if (!isGridBridgeMethod(method)) {
      reply({ type: 'hostCallReply', callId, ok: false, error: toWire(gridError('UNKNOWN_TYPE', `grid.${method} is not a grid method`)) });
      return;
    }
    if (!bridge) {
      reply({ type: 'hostCallReply', callId, ok: false, error: toWire(gridError('NOT_CONNECTED', `grid.${method} needs the grid, and this kernel has no connection to it`)) });
      return;
    }
    const ex = this.running?.execId === execId ? this.running : undefined;
    const controller = new AbortController();
    if (ex?.interrupting) controller.abort(gridError('ABORTED', 'the cell was interrupted'));
    ex?.calls.set(callId, controller);
    proc.calls.set(callId, controller);
    const context = {
      signal: controller.signal,
      executionCount: ex?.executionCount ?? this.recent.get(execId) ?? 0,
      output: (output: CellOutput) => this.route(execId, output),
    };
    Promise.resolve()
      .then(() => bridge.call(method, args, context))
      .then(
        (value) => reply({ type: 'hostCallReply', callId, ok: true, value }),
        (err: unknown) => reply({ type: 'hostCallReply', callId, ok: false, error: toWire(err) }),
      )
      .finally(() => {
        ex?.calls.delete(callId);
        proc.calls.delete(callId);
      });
  }

  // ---- process ----

  private ensureProcess(): Promise<KernelProcess> {
    const current = this.proc;
    if (current && !current.exited) return current.ready.then(() => current);
    // Checked first: a missing cwd fails the spawn as `spawn <node> ENOENT`, which blames Node.
    const { cwd } = this.options;
    if (cwd !== undefined && !isDirectory(cwd)) {
      return Promise.reject(gridError('NOT_FOUND', `the notebook's folder ${cwd} does not exist (moved or deleted?), and the kernel runs its cells there. Reopen the notebook from where it is now`));
    }
    const proc = this.spawn();
    this.proc = proc;
    this.updateStatus();
    return proc.ready.then(() => proc);
  }

  private spawn(): KernelProcess {
    const config: WorkerConfig = { maxStreamBytesPerCell: this.options.maxStreamBytesPerCell };
    const child = fork(this.options.workerPath, [JSON.stringify(config)], {
      execPath: this.options.execPath,
      execArgv: this.options.execArgv,
      cwd: this.options.cwd,
      // In VS Code process.execPath is Electron; this makes it behave as plain Node.
      env: { ...process.env, ...this.options.env, ELECTRON_RUN_AS_NODE: '1' },
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // Its own process group (POSIX): killing the group also ends what a cell's blocking call started
      // (`execSync('sleep 60')`), not only the worker. Windows has no groups (and would open a console).
      detached: process.platform !== 'win32',
    });
    let markReady!: () => void;
    let fail!: (err: Error) => void;
    const ready = new Promise<void>((resolve, reject) => { markReady = resolve; fail = reject; });
    ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    let exited!: () => void;
    const exitedPromise = new Promise<void>((r) => { exited = r; });
    const proc: KernelProcess = {
      child, ready, isReady: false, exited: false, exitedPromise, killed: false,
      calls: new Map(), pings: new Map(), introspections: new Map(), stderrTail: '', rawLogged: 0, childGroups: new Set(),
      markReady: () => { proc.isReady = true; clearTimeout(startTimer); markReady(); },
      fail: (err) => { clearTimeout(startTimer); fail(err); },
    };
    const startTimer = setTimeout(() => {
      proc.fail(gridError('TIMEOUT', `the kernel process did not start within ${this.options.startTimeoutMs} ms`));
      this.kill(proc);
    }, this.options.startTimeoutMs);
    child.on('message', (message: unknown) => {
      // A cell can process.send() anything on this channel: what is not ours is logged and dropped.
      if (!isWorkerMessage(message)) {
        this.logger.warn('kernel process sent a malformed message; ignored', { message: describeMessage(message) });
        return;
      }
      try {
        this.onMessage(proc, message);
      } catch (err) {
        this.logger.error('kernel message handling failed', { type: message.type, error: String(err) });
      }
    });
    child.on('error', (err) => {
      this.logger.error('kernel process error', { error: err.message });
      if (child.pid !== undefined) {
        proc.fail(gridError('INTERNAL', `the kernel process failed: ${err.message}`));
        return;
      }
      // Never spawned: no 'exit' follows, so this is its end (dispose() awaits exitedPromise).
      proc.fail(gridError('INTERNAL', `the kernel process could not be started (${this.options.execPath} in ${this.options.cwd ?? process.cwd()}): ${err.message}`));
      if (proc.exited) return;
      proc.exited = true;
      exited();
      this.abortCalls(proc, 'the kernel process could not be started');
      if (this.proc === proc) this.proc = undefined;
      this.updateStatus();
    });
    child.on('exit', (code, signal) => {
      proc.exited = true;
      exited();
      // What the worker started dies with it: a worker that exited or was killed cannot stop its children.
      killGroups(proc.childGroups);
      this.onExit(proc, code, signal);
    });
    // Decoded by the stream, not per chunk: a character split across two chunks stays one character.
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onRawOutput(proc, 'stdout', chunk));
    child.stderr?.on('data', (chunk: string) => {
      proc.stderrTail = (proc.stderrTail + chunk).slice(-2000);
      this.onRawOutput(proc, 'stderr', chunk);
    });
    this.logger.debug('kernel process started', { pid: child.pid, workerPath: this.options.workerPath });
    return proc;
  }

  private onMessage(proc: KernelProcess, message: WorkerToHost): void {
    if (message.type === 'childGroup') {
      // Kept also for a killed process: its children's groups are killed once it has exited.
      if (message.alive) proc.childGroups.add(message.pid);
      else proc.childGroups.delete(message.pid);
      return;
    }
    if (proc !== this.proc) return; // a killed process's last words
    switch (message.type) {
      case 'ready':
        proc.markReady();
        this.updateStatus();
        break;
      case 'output':
        this.route(message.execId, message.output);
        break;
      case 'executeReply': {
        const ex = this.running;
        if (!ex || ex.execId !== message.execId) break;
        if (message.ok) this.finish(ex, { status: 'ok' });
        else this.finish(ex, { status: ex.interrupting ? 'interrupted' : 'error', error: message.error });
        break;
      }
      case 'hostCall':
        this.handleHostCall(proc, message);
        break;
      case 'introspectReply':
        proc.introspections.get(message.id)?.(message);
        break;
      case 'pong': {
        const ping = proc.pings.get(message.id);
        proc.pings.delete(message.id);
        ping?.resolve(performance.now() - ping.start);
        break;
      }
    }
  }

  /** Bytes a cell wrote around our console (native code, child processes it spawned). */
  private onRawOutput(proc: KernelProcess, stream: 'stdout' | 'stderr', chunk: string): void {
    const ex = this.running;
    if (proc === this.proc && ex && ex.proc === proc) {
      this.deliver(ex, { kind: 'stream', stream, text: chunk });
      return;
    }
    if (proc.rawLogged >= RAW_LOG_LIMIT) return;
    proc.rawLogged += Buffer.byteLength(chunk);
    this.logger.debug(`kernel ${stream}`, { text: chunk });
    if (proc.rawLogged >= RAW_LOG_LIMIT) this.logger.warn(`kernel ${stream}: more than ${RAW_LOG_LIMIT / 1024} KiB written outside any cell; the rest of this process's such output is dropped`);
  }

  private onExit(proc: KernelProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const how = signal ? `signal ${signal}` : `code ${code}`;
    this.abortCalls(proc, 'the kernel process exited');
    proc.fail(gridError('INTERNAL', `the kernel process exited (${how}) before it was ready${proc.stderrTail ? `: ${proc.stderrTail.trim()}` : ''}`));
    if (proc.killed || proc !== this.proc) return;
    this.proc = undefined;
    this.logger.warn('kernel process exited', { code, signal });
    const ex = this.running;
    if (ex && ex.proc === proc) {
      this.finish(ex, {
        status: 'error',
        error: stateLostError('KernelDied', `The kernel process exited (${how}) while this cell ran.\nState was lost: variables, functions and imports from earlier cells are gone.\nThe next cell starts a fresh kernel.`),
        stateLost: true,
      });
    }
    if (proc.isReady) {
      this.count = 0;
      this.stateLostEmitter.fire({ reason: `the kernel process exited (${how})` });
    }
    this.updateStatus();
  }

  private killAfterInterrupt(ex: Execution): void {
    if (this.running !== ex || ex.done) return;
    const seconds = this.options.interruptTimeoutMs / 1000;
    if (ex.proc) this.kill(ex.proc);
    this.count = 0;
    this.finish(ex, {
      status: 'interrupted',
      error: stateLostError('KernelRestarted', `The cell did not stop within ${seconds} s of the interrupt, so the kernel process was restarted.\nState was lost: variables, functions and imports from earlier cells are gone.\nRe-run the cells you need.`),
      stateLost: true,
    });
    this.stateLostEmitter.fire({ reason: 'interrupt' });
    if (!this.disposed) this.ensureProcess().catch((err: unknown) => this.logger.error('kernel restart failed', { error: String(err) }));
  }

  private kill(proc: KernelProcess): void {
    proc.killed = true;
    if (this.proc === proc) this.proc = undefined;
    this.abortCalls(proc, 'the kernel process was stopped');
    proc.fail(gridError('ABORTED', 'the kernel process was stopped before it was ready'));
    if (!proc.exited) killGroup(proc.child);
    killGroups(proc.childGroups);
    // A child process the cell left writing to our pipes (`yes` with stdio inherited) dies of EPIPE.
    proc.child.stdout?.destroy();
    proc.child.stderr?.destroy();
    this.updateStatus();
  }

  private abortCalls(proc: KernelProcess, why: string): void {
    for (const call of proc.calls.values()) call.abort(gridError('ABORTED', why));
    proc.calls.clear();
    for (const ping of proc.pings.values()) ping.reject(gridError('ABORTED', why));
    proc.pings.clear();
    for (const finish of [...proc.introspections.values()]) finish(undefined);
  }

  private post(proc: KernelProcess, message: HostToWorker): void {
    if (proc.exited || !proc.child.connected) return;
    proc.child.send(message);
  }

  private updateStatus(): void {
    let status: KernelStatus;
    if (this.disposed) status = 'disposed';
    else if (this.running || this.queue.length > 0) status = 'busy';
    else if (this.proc && !this.proc.isReady) status = 'starting';
    else if (this.proc) status = 'idle';
    else status = 'stopped';
    if (status === this.currentStatus) return;
    this.currentStatus = status;
    this.statusEmitter.fire(status);
  }

  private assertUsable(what: string): void {
    if (this.disposed) throw gridError('DISPOSED', `kernel.${what}: the kernel was disposed`);
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error('kernel listener failed', { error: String(err) });
    }
  }
}

/** Kernel messages shown as a cell's error: VS Code does not wrap them, so they come in short lines. */
export const KERNEL_MESSAGE_WIDTH = 64;

function stateLostError(name: string, message: string): CellError {
  const wrapped = wrapText(message, KERNEL_MESSAGE_WIDTH);
  return { name, message: wrapped, stack: wrapText(`${name}: ${message}`, KERNEL_MESSAGE_WIDTH) };
}

/** Breaks text into lines of at most `width` characters at spaces (a longer word keeps its own line). */
export function wrapText(text: string, width: number): string {
  const lines: string[] = [];
  for (const paragraph of text.split('\n')) {
    let line = '';
    for (const word of paragraph.split(/ +/)) {
      if (line !== '' && line.length + 1 + word.length > width) { lines.push(line); line = word; } else line = line === '' ? word : `${line} ${word}`;
    }
    lines.push(line);
  }
  return lines.join('\n');
}

/** What the log says of a malformed message: its type and field names, never its (maybe huge) content. */
function describeMessage(message: unknown): string {
  if (typeof message !== 'object' || message === null) return typeof message;
  const type = (message as { type?: unknown }).type;
  return `type ${typeof type === 'string' ? JSON.stringify(type.slice(0, 40)) : typeof type}, fields ${Object.keys(message).slice(0, 10).join(', ')}`;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function toWire(err: unknown): HostCallError {
  if (err instanceof GridError) return err.details ? { name: err.name, message: err.message, code: err.code, details: err.details } : { name: err.name, message: err.message, code: err.code };
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? { name: err.name, message: err.message, code } : { name: err.name, message: err.message };
  }
  return { name: 'Error', message: String(err) };
}
