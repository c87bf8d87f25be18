// The kernel process: runs cells for one notebook. Started by KernelHost with an IPC channel; bundled
// to dist/kernel-worker.js. Everything a cell prints or displays goes to the host as `output`
// messages; `grid.*` calls go to the host as `hostCall`s.

import { AsyncLocalStorage } from 'node:async_hooks';
import type { ChildProcess } from 'node:child_process';
import * as vm from 'node:vm';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { promisify } from 'node:util';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { resolve as resolveModule } from 'import-meta-resolve';
import { GridError, gridError, isErrorCode } from '../core/errors';
import type { GridBridgeMethod } from './bridge';
import { compileCell, KERNEL_GLOBAL } from './compile';
import { toMimeBundle } from './display';
import { createGridApi, methodOf, type DisplayFn } from './grid-api';
import { complete, inspect } from './introspect';
import {
  isHostMessage, truncationNotice, type CellOutput, type ExecuteRequest, type HostCallReply, type IntrospectRequest, type WorkerConfig, type WorkerToHost,
} from './protocol';
import { adoptCellFrames, CellRegistry, installStackMapping, toCellError } from './stack';

interface RunningCell {
  execId: number;
  fileName: string;
  abort: AbortController;
  interrupted: boolean;
}

interface PendingCall {
  execId: number;
  method: string;
  site: Error;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

const config: WorkerConfig = { maxStreamBytesPerCell: 8 * 1024 * 1024, ...(JSON.parse(process.argv[2] ?? '{}') as Partial<WorkerConfig>) };

const registry = new CellRegistry();
/** Cells run as `<cwd>/__grid_cell_<execId>__.ts|js` (execute()): how a stack frame is known to be a cell's own code. */
const CELL_FILE_PREFIX = '__grid_cell_';
const pendingCalls = new Map<number, PendingCall>();
let nextCallId = 1;
let current: RunningCell | undefined;
/** Recent cells by execId: code a cell left running (an interrupted cell's awaits) still finds its own signal. */
const cells = new Map<number, RunningCell>();
const CELLS_KEPT = 64;
/**
 * Interrupted cells are never forgotten (an entry each, a few bytes): their leftover code must keep
 * finding them interrupted however many cells ran since, not fall back to the running cell's identity.
 */
const interruptedCells = new Map<number, RunningCell>();
/** Child processes each cell started that are still alive: they get SIGINT, then SIGKILL, when it is interrupted. */
const childrenOf = new Map<number, Set<ChildProcess>>();
/** How long an interrupted cell's child process has after SIGINT before SIGKILL. */
const CHILD_KILL_GRACE_MS = 1000;
/** The real timers, for the worker's own use: the globals are replaced by cell-aware ones (patchTimers). */
const realTimers = { setTimeout, clearTimeout, setInterval, clearInterval, setImmediate };
/**
 * The cell whose code is running now: its timers, promises and callbacks carry it, so what they print
 * after the cell ended (or while a later cell runs) goes to the cell that printed it, as in Jupyter.
 */
const printingCell = new AsyncLocalStorage<number>();
/** Output from outside any cell's code (a module loaded earlier, native callbacks) goes to the last cell. */
let lastExecId: number | undefined;
/** Output bytes (streams and displays) per cell, for the most recent cells (a timer of an old cell may keep printing). */
const streamBudgets = new Map<number, OutputBudget>();
const BUDGETS_KEPT = 64;
const originalWrite = {
  stdout: process.stdout.write.bind(process.stdout),
  stderr: process.stderr.write.bind(process.stderr),
};

function send(message: WorkerToHost): void {
  process.send?.(message);
}

function owner(): number | undefined {
  return printingCell.getStore() ?? current?.execId ?? lastExecId;
}

/** The cell whose code is running now: the running one, or an earlier one whose timer or promise fired. */
function cellNow(): RunningCell | undefined {
  const execId = printingCell.getStore();
  if (execId === undefined) return current;
  return interruptedCells.get(execId) ?? cells.get(execId) ?? formerCell(execId);
}

/** A cell too old to be kept (and never interrupted): its leftover code gets its own, live signal, never the running cell's. */
function formerCell(execId: number): RunningCell {
  return { execId, fileName: '', abort: new AbortController(), interrupted: false };
}

function wasInterrupted(execId: number | undefined): boolean {
  return execId !== undefined && interruptedCells.has(execId);
}

function emit(output: CellOutput): boolean {
  const execId = owner();
  if (execId === undefined) return false;
  send({ type: 'output', execId, output });
  return true;
}

interface OutputBudget {
  bytes: number;
  truncated: boolean;
  /** The display ids the cell has shown: an update to one of them replaces it; to any other id, it is a new output. */
  displayIds: Set<string>;
}

/** The output budget of cell `execId` (streams and displays), kept for the most recent cells. */
function budgetOf(execId: number): OutputBudget {
  let budget = streamBudgets.get(execId);
  if (budget === undefined) {
    budget = { bytes: 0, truncated: false, displayIds: new Set() };
    streamBudgets.set(execId, budget);
    if (streamBudgets.size > BUDGETS_KEPT) streamBudgets.delete(streamBudgets.keys().next().value!);
  }
  return budget;
}

function emitStream(stream: 'stdout' | 'stderr', text: string): boolean {
  const execId = owner();
  if (execId === undefined) return false;
  const budget = budgetOf(execId);
  if (budget.truncated) return true;
  budget.bytes += Buffer.byteLength(text);
  if (budget.bytes > config.maxStreamBytesPerCell) {
    // Bounded: a cell printing in a tight loop must not queue unbounded IPC messages.
    budget.truncated = true;
    text = truncationNotice(config.maxStreamBytesPerCell);
    stream = 'stderr';
  }
  return emit({ kind: 'stream', stream, text });
}

/**
 * Displays share the cell's budget: a new one adds its size. An update of a display the cell has shown
 * replaces it in place, so it adds nothing, and the cell's value (Out[n]) still shows past the cap; but
 * neither may be larger than the whole budget. An update of an id the cell never showed appears as a new
 * output (outputs.ts), so it counts as one.
 */
function emitDisplay(output: Extract<CellOutput, { kind: 'display' }>): void {
  const execId = owner();
  if (execId === undefined) return;
  const budget = budgetOf(execId);
  const replaces = output.update === true && output.displayId !== undefined && budget.displayIds.has(output.displayId);
  const counted = !replaces && !output.result;
  if (budget.truncated && counted) return;
  const bytes = displayBytes(output);
  if (counted) budget.bytes += bytes;
  if (budget.bytes > config.maxStreamBytesPerCell || bytes > config.maxStreamBytesPerCell) {
    if (!budget.truncated) emit({ kind: 'stream', stream: 'stderr', text: truncationNotice(config.maxStreamBytesPerCell) });
    budget.truncated = true;
    if (counted || bytes > config.maxStreamBytesPerCell) return;
  }
  if (output.displayId !== undefined) budget.displayIds.add(output.displayId);
  emit(output);
}

function displayBytes(output: Extract<CellOutput, { kind: 'display' }>): number {
  let bytes = 0;
  for (const data of Object.values(output.data)) bytes += typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  return bytes;
}

/**
 * An interrupt stops the cell's pending work as Python's KeyboardInterrupt would: a timer (setTimeout,
 * setInterval, setImmediate, node:timers/promises) scheduled by a cell that has since been interrupted
 * never fires, so `for (;;) { …; await sleep(100) }` dies at its next sleep. The scheduling cell is the
 * one whose code is running (printingCell); the worker's own timers are the real ones.
 */
function patchTimers(): void {
  const timers = notebookRequire('node:timers') as typeof import('node:timers');
  const promises = notebookRequire('node:timers/promises') as typeof import('node:timers/promises');
  type Callback = (...args: unknown[]) => void;
  const gated = (callback: Callback, execId: number, onStopped?: () => void): Callback => function (this: unknown, ...args: unknown[]) {
    if (wasInterrupted(execId)) {
      onStopped?.();
      return;
    }
    callback.apply(this, args);
  };
  const once = (schedule: (callback: Callback, ...rest: unknown[]) => unknown) => function scheduled(callback: Callback, ...rest: unknown[]): unknown {
    const execId = schedulingCell(scheduled);
    if (execId === undefined || typeof callback !== 'function') return schedule(callback, ...rest);
    return schedule(gated(callback, execId), ...rest);
  };
  const cellSetTimeout = once(realTimers.setTimeout as never);
  const cellSetImmediate = once(realTimers.setImmediate as never);
  // Named as the functions they stand for (a cell may print setTimeout.name).
  Object.defineProperty(cellSetTimeout, 'name', { value: 'setTimeout' });
  Object.defineProperty(cellSetImmediate, 'name', { value: 'setImmediate' });
  const cellSetInterval = function cellSetInterval(callback: Callback, ...rest: unknown[]): unknown {
    const execId = schedulingCell(cellSetInterval);
    if (execId === undefined || typeof callback !== 'function') return (realTimers.setInterval as never as (c: Callback, ...r: unknown[]) => unknown)(callback, ...rest);
    const handle = (realTimers.setInterval as never as (c: Callback, ...r: unknown[]) => NodeJS.Timeout)(gated(callback, execId, () => realTimers.clearInterval(handle)), ...rest);
    return handle;
  };
  Object.defineProperty(cellSetInterval, 'name', { value: 'setInterval' });
  /** A promise of an interrupted cell's timer never settles: the await after it never resumes. */
  const gatedPromise = <T>(promise: Promise<T>, execId: number | undefined): Promise<T> => {
    if (execId === undefined) return promise;
    return new Promise<T>((resolve, reject) => {
      promise.then(
        (value) => { if (!wasInterrupted(execId)) resolve(value); },
        (err: unknown) => { if (!wasInterrupted(execId)) reject(err); },
      );
    });
  };
  const promiseSetTimeout = promises.setTimeout;
  const promiseSetImmediate = promises.setImmediate;
  const promiseSetInterval = promises.setInterval;
  const promiseWait = promises.scheduler.wait.bind(promises.scheduler);
  const cellPromises = {
    setTimeout: function setTimeout(...args: Parameters<typeof promiseSetTimeout>) { return gatedPromise(promiseSetTimeout(...args), schedulingCell(setTimeout)); },
    setImmediate: function setImmediate(...args: Parameters<typeof promiseSetImmediate>) { return gatedPromise(promiseSetImmediate(...args), schedulingCell(setImmediate)); },
    setInterval: function setInterval(...args: Parameters<typeof promiseSetInterval>) {
      const iterator = promiseSetInterval(...args);
      const execId = schedulingCell(setInterval);
      if (execId === undefined) return iterator;
      const next = iterator.next.bind(iterator);
      iterator.next = () => {
        if (wasInterrupted(execId)) void iterator.return?.();
        return gatedPromise(next(), execId);
      };
      return iterator;
    },
  };
  Object.defineProperty(cellSetTimeout, promisify.custom, { value: cellPromises.setTimeout });
  Object.defineProperty(cellSetImmediate, promisify.custom, { value: cellPromises.setImmediate });
  const patched = { setTimeout: cellSetTimeout, setImmediate: cellSetImmediate, setInterval: cellSetInterval };
  Object.assign(timers, patched);
  Object.assign(globalThis, patched);
  Object.assign(promises, cellPromises);
  promises.scheduler.wait = function wait(...args: Parameters<typeof promiseWait>) { return gatedPromise(promiseWait(...args), schedulingCell(wait)); };
}

/**
 * The cell a timer belongs to: the running cell's, but only when the cell's own code scheduled it (the
 * caller of the timer function is a cell frame). A library's timer is never tied to a cell, even when
 * a cell's call created it: undici (fetch) keeps one process-wide timer that it refreshes, and tying it
 * to a cell later interrupted would stop it for every cell. So a loop in the cell's code stops at its
 * next timer; waits inside libraries are not stopped.
 */
function schedulingCell(timerFunction: (...args: never[]) => unknown): number | undefined {
  const execId = printingCell.getStore();
  if (execId === undefined) return undefined;
  const { stackTraceLimit, prepareStackTrace } = Error;
  const holder: { stack?: unknown } = {};
  try {
    Error.stackTraceLimit = 1;
    // Only the caller's file name, not a formatted stack (installStackMapping's would map cell frames).
    Error.prepareStackTrace = (_error, sites) => sites[0]?.getFileName() ?? '';
    Error.captureStackTrace(holder, timerFunction);
    const fileName = holder.stack;
    return typeof fileName === 'string' && basename(fileName).startsWith(CELL_FILE_PREFIX) ? execId : undefined;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
    Error.prepareStackTrace = prepareStackTrace;
  }
}

/**
 * Children the worker started as leaders of their own process group (POSIX): signals go to the whole
 * group, so a shell's command (`exec('sleep 30; echo done')`) dies with the shell.
 */
const groupLeaders = new WeakSet<ChildProcess>();

/**
 * The host can die without a word (SIGKILL, a crashed extension host) while a cell blocks this thread
 * (`for(;;){}`, execSync): 'disconnect' is then never handled, and in a process group of its own nothing
 * else stops this process or the groups its cells started. This thread notices the parent is gone (the
 * parent pid changes: the process was re-parented) and kills those groups and this process. POSIX only
 * (Windows has no groups; the host's kill reaches only this process there anyway).
 */
let watchdog: Worker | undefined;
const WATCHDOG = `
const { parentPort, workerData } = require('node:worker_threads');
const groups = new Set();
parentPort.on('message', ([pid, alive]) => { if (alive) groups.add(pid); else groups.delete(pid); });
setInterval(() => {
  if (process.ppid === workerData.ppid) return;
  for (const g of groups) { try { process.kill(-g, 'SIGKILL'); } catch {} }
  try { process.kill(-process.pid, 'SIGKILL'); } catch {}
  process.kill(process.pid, 'SIGKILL');
}, 500);
`;

function startOrphanWatchdog(): void {
  if (process.platform === 'win32' || watchdog !== undefined) return;
  watchdog = new Worker(WATCHDOG, { eval: true, workerData: { ppid: process.ppid } });
  watchdog.unref();
}

/** On the host's goodbye (its IPC channel closed): the groups this process's cells started go with it. */
function killChildGroups(): void {
  for (const g of groupsAlive) {
    try { process.kill(-g, 'SIGKILL'); } catch { /* gone already */ }
  }
}
const groupsAlive = new Set<number>();

/** Sends `signal` to the child's process group when it leads one, else to the child. */
function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (groupLeaders.has(child) && child.pid !== undefined) {
    try {
      process.kill(-child.pid, signal);
      return;
    } catch {
      // the group is gone (ESRCH): nothing left to signal
      return;
    }
  }
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
}

/** Kills what an interrupted cell started: SIGINT now, SIGKILL for what is still alive after the grace. */
function stopChildren(execId: number): void {
  const children = childrenOf.get(execId);
  if (!children) return;
  childrenOf.delete(execId);
  for (const child of children) {
    const exited = child.exitCode !== null || child.signalCode !== null;
    if (exited && !groupLeaders.has(child)) continue;
    signalChild(child, 'SIGINT');
    // A group's members may outlive its leader (a grandchild that ignores SIGINT): the group gets SIGKILL too.
    const timer = realTimers.setTimeout(() => signalChild(child, 'SIGKILL'), CHILD_KILL_GRACE_MS);
    timer.unref();
    if (!groupLeaders.has(child)) child.once('exit', () => realTimers.clearTimeout(timer));
  }
}

/**
 * On POSIX a child starts as the leader of its own process group (`detached: true`) unless the caller
 * chose `detached`; Windows has no process groups, and `detached` there opens a console window.
 * The options argument is the first object after the command (and its argument array).
 */
function wantsOwnGroup(args: unknown[]): boolean {
  if (process.platform === 'win32') return false;
  const options = args.slice(1).find((x): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x));
  return options?.detached === undefined;
}

/** Set while a wrapped spawn/exec/execFile/fork call runs: the ChildProcess it makes leads its own group. */
let ownGroupNext = false;

/**
 * exec and execFile do not pass `detached` on to spawn, so it is set where every child starts:
 * ChildProcess.prototype.spawn, only for the calls the wrapper makes.
 */
function patchChildSpawn(childProcess: Record<string, unknown>): void {
  const proto = (childProcess.ChildProcess as { prototype: { spawn(options: Record<string, unknown>): unknown } }).prototype;
  const original = proto.spawn;
  proto.spawn = function (this: unknown, options: Record<string, unknown>): unknown {
    return original.call(this, ownGroupNext ? { ...options, detached: true } : options);
  };
}

/** Runs a wrapped call with ownGroupNext set as asked; the flag never outlives the call. */
function inOwnGroup<T>(ownGroup: boolean, call: () => T): T {
  ownGroupNext = ownGroup;
  try {
    return call();
  } finally {
    ownGroupNext = false;
  }
}

/** Records the child processes a cell's code starts (spawn, exec, execFile, fork and their promisified forms). */
function patchChildProcess(): void {
  const childProcess = notebookRequire('node:child_process') as Record<string, unknown>;
  patchChildSpawn(childProcess);
  const track = (child: unknown, ownGroup: boolean): void => {
    if (!child || typeof (child as ChildProcess).kill !== 'function') return;
    const proc = child as ChildProcess;
    if (ownGroup && proc.pid !== undefined) {
      // The host kills the group if it kills this process (restart, dispose, a cell that would not stop).
      const pid = proc.pid;
      groupLeaders.add(proc);
      send({ type: 'childGroup', pid, alive: true });
      watchdog?.postMessage([pid, true]);
      groupsAlive.add(pid);
      proc.once('exit', () => {
        groupsAlive.delete(pid);
        send({ type: 'childGroup', pid, alive: false });
        watchdog?.postMessage([pid, false]);
      });
    }
    const execId = printingCell.getStore();
    if (execId === undefined) return;
    if (wasInterrupted(execId)) {
      // Started by leftover code of a cell already interrupted: it has no business running.
      signalChild(proc, 'SIGKILL');
      return;
    }
    let set = childrenOf.get(execId);
    if (!set) childrenOf.set(execId, set = new Set());
    const mine = set;
    mine.add(proc);
    const forget = () => {
      mine.delete(proc);
      if (mine.size === 0 && childrenOf.get(execId) === mine) childrenOf.delete(execId);
    };
    proc.once('exit', forget);
    proc.once('error', () => { if (proc.pid === undefined) forget(); }); // never started (ENOENT): no 'exit' follows
  };
  for (const name of ['spawn', 'exec', 'execFile', 'fork']) {
    const original = childProcess[name] as (...args: unknown[]) => unknown;
    const wrapped = function (this: unknown, ...args: unknown[]): unknown {
      const ownGroup = wantsOwnGroup(args);
      const child = inOwnGroup(ownGroup, () => original.apply(this, args));
      track(child, ownGroup);
      return child;
    };
    const custom = (original as unknown as Record<symbol, unknown>)[promisify.custom];
    if (typeof custom === 'function') {
      // util.promisify(exec) calls the real exec; this one records the child it returns as `.child`.
      Object.defineProperty(wrapped, promisify.custom, {
        value(this: unknown, ...args: unknown[]) {
          const ownGroup = wantsOwnGroup(args);
          const promise = inOwnGroup(ownGroup, () => (custom as (...a: unknown[]) => Promise<unknown> & { child?: unknown }).apply(this, args));
          track(promise.child, ownGroup);
          return promise;
        },
      });
    }
    childProcess[name] = wrapped;
  }
}

function patchStream(stream: 'stdout' | 'stderr'): void {
  const target = process[stream];
  target.write = ((chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), callback?: (err?: Error | null) => void) => {
    const done = typeof encoding === 'function' ? encoding : callback;
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (!emitStream(stream, text)) return originalWrite[stream](chunk, done);
    if (done) process.nextTick(done);
    return true;
  }) as typeof target.write;
}

const display: DisplayFn = (value, options) => {
  const opts = typeof options === 'string' ? { mime: options } : (options ?? {});
  const output: Extract<CellOutput, { kind: 'display' }> = { kind: 'display', data: toMimeBundle(value, opts.mime) };
  if (opts.id !== undefined) output.displayId = opts.id;
  if (opts.update) output.update = true;
  emitDisplay(output);
};

function interruptedError(method: string): GridError {
  return gridError('ABORTED', `grid.${method} was cancelled: the cell was interrupted`);
}

function hostCall(method: GridBridgeMethod, args: unknown[], site: Error): Promise<unknown> {
  const cell = cellNow();
  if (cell?.interrupted) return Promise.reject(interruptedError(method));
  const execId = cell?.execId ?? lastExecId ?? 0;
  const callId = nextCallId++;
  return new Promise((resolve, reject) => {
    pendingCalls.set(callId, { execId, method, site, resolve, reject });
    try {
      send({ type: 'hostCall', callId, execId, method, args });
    } catch (err) {
      pendingCalls.delete(callId);
      reject(gridError('INVALID_INPUT', `grid.${method}: its arguments cannot be sent to the host (${(err as Error).message})`));
    }
  });
}

function settleCall(reply: HostCallReply): void {
  const call = pendingCalls.get(reply.callId);
  if (!call) return; // cancelled by an interrupt; the host's late answer has no one to go to
  pendingCalls.delete(reply.callId);
  if (reply.ok) {
    call.resolve(reply.value);
    return;
  }
  const { name, message, code, details } = reply.error;
  const err = code && isErrorCode(code) ? new GridError(code, message, details) : Object.assign(new Error(message), { name });
  call.reject(atCallSite(err, call));
}

/** Errors made on an IPC callback get the stack of the cell line that made the call. */
function atCallSite(err: Error, call: PendingCall): Error {
  const frames = (call.site.stack ?? '').split('\n').slice(1).join('\n');
  const code = (err as { code?: unknown }).code;
  err.stack = `${err.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${err.message}${frames ? `\n${frames}` : ''}`;
  adoptCellFrames(call.site, err);
  return err;
}

function interrupt(execId: number): void {
  if (current?.execId !== execId) return;
  if (current.interrupted) return;
  current.interrupted = true;
  interruptedCells.set(execId, current);
  stopChildren(execId);
  for (const [callId, call] of pendingCalls) {
    if (call.execId !== execId) continue;
    pendingCalls.delete(callId);
    call.reject(atCallSite(interruptedError(call.method), call));
  }
  // Made here, on an IPC callback: its frames are all the kernel's own, so the cell shows none of them.
  const reason = gridError('ABORTED', 'the cell was interrupted');
  reason.stack = (reason.stack ?? '').split('\n')[0]!;
  current.abort.abort(reason);
}

// Cells import through here: specifiers resolve from the notebook's folder with Node's ESM rules
// (import-meta-resolve), then load with the real import(). A vm script's own import() would need
// --experimental-vm-modules, or a loader constant that VS Code's Electron Node lacks. The Function
// keeps esbuild from turning import() into require() in the CommonJS bundle.
const notebookFile = join(process.cwd(), '__notebook__.js');
const notebookUrl = pathToFileURL(notebookFile).href;
const notebookRequire = createRequire(notebookFile);
const nativeImport = new Function('specifier', 'options', 'return options === undefined ? import(specifier) : import(specifier, options)') as
  (specifier: string, options?: unknown) => Promise<unknown>;

function importFromNotebook(specifier: unknown, options?: unknown): Promise<unknown> {
  try {
    return nativeImport(resolveModule(String(specifier), notebookUrl), options);
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

async function execute(request: ExecuteRequest): Promise<void> {
  const { execId } = request;
  const fileName = join(process.cwd(), `${CELL_FILE_PREFIX}${execId}__.${request.language === 'typescript' ? 'ts' : 'js'}`);
  const cell: RunningCell = { execId, fileName, abort: new AbortController(), interrupted: false };
  current = cell;
  cells.set(execId, cell);
  if (cells.size > CELLS_KEPT) cells.delete(cells.keys().next().value!); // interrupted ones stay in interruptedCells
  lastExecId = execId;
  try {
    const compiled = await compileCell(request.code, request.language, request.cellName);
    if (cell.interrupted) throw gridError('ABORTED', 'the cell was interrupted before it started');
    registry.register(fileName, request.cellName, compiled);
    const script = new vm.Script(compiled.code, { filename: fileName });
    const value: unknown = await untilInterrupted(printingCell.run(execId, () => script.runInThisContext({ displayErrors: false })), cell.abort.signal);
    if (value !== undefined) emitDisplay({ kind: 'display', data: toMimeBundle(value), result: true });
    send({ type: 'executeReply', execId, ok: true });
  } catch (err) {
    send({ type: 'executeReply', execId, ok: false, error: toCellError(err, fileName) });
  } finally {
    if (current?.execId === execId) current = undefined;
  }
}

/**
 * The cell's outcome, or its interrupt: a cell awaiting anything (a timer, fetch, fs, a polling loop)
 * ends on the interrupt with its state kept, instead of waiting to be killed with the process. Only a
 * cell that blocks the event loop never sees the interrupt, and the host restarts the process then.
 * The cell gets one turn of the loop first, so one that stops by itself (a grid call rejected, a wait
 * on grid.signal) ends with its own error at its own line. What it leaves running goes on; its grid
 * calls are refused and grid.signal stays aborted for it, and what it prints is that cell's late output.
 */
function untilInterrupted(result: unknown, signal: AbortSignal): Promise<unknown> {
  const outcome = Promise.resolve(result);
  return new Promise((resolve, reject) => {
    const onAbort = () => realTimers.setImmediate(() => reject(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    // Both handlers: a rejection after the interrupt was answered is already reported, never a stray one.
    outcome.then(
      (value) => { signal.removeEventListener('abort', onAbort); resolve(value); },
      (err: unknown) => { signal.removeEventListener('abort', onAbort); reject(err); },
    );
  });
}

/**
 * Makes each name a plain writable global, so `x = …` from a rewritten declaration sticks. Getter-only
 * globals (Node's `crypto`) would otherwise ignore `import crypto from 'node:crypto'` silently.
 */
function declareGlobals(names: string[]): void {
  const g = globalThis as Record<string, unknown>;
  for (const name of names) {
    const own = Object.getOwnPropertyDescriptor(g, name);
    if (!own) {
      if (!(name in g)) g[name] = undefined;
    } else if (own.configurable && (own.get || own.set || !own.writable)) {
      Object.defineProperty(g, name, { value: g[name], writable: true, enumerable: true, configurable: true });
    }
  }
}

function introspect(request: IntrospectRequest): void {
  const { id, code, cursor } = request;
  try {
    if (request.what === 'complete') {
      send({ type: 'introspectReply', id, ...complete(code, cursor) });
    } else {
      const data = inspect(code, cursor);
      send({ type: 'introspectReply', id, matches: [], start: cursor, end: cursor, ...(data && { data }) });
    }
  } catch {
    // a value that cannot be described (a revoked proxy, say) is not worth a kernel error
    send({ type: 'introspectReply', id, matches: [], start: cursor, end: cursor });
  }
}

function reportStray(err: unknown): void {
  const error = toCellError(err);
  if (!emit({ kind: 'error', error })) originalWrite.stderr(`${error.stack}\n`);
}

function main(): void {
  if (!process.send) {
    process.stderr.write('kernel-worker must be started by the kernel host with an IPC channel\n');
    process.exit(2);
  }
  installStackMapping(registry);
  Object.defineProperty(globalThis, KERNEL_GLOBAL, {
    value: Object.freeze({
      declare: declareGlobals,
      import: importFromNotebook,
      meta: Object.freeze({ url: notebookUrl, filename: notebookFile, dirname: process.cwd(), resolve: (s: string) => resolveModule(s, notebookUrl) }),
    }),
  });
  const grid = createGridApi({
    call: (method, args) => {
      const site = new Error('');
      Error.captureStackTrace(site, methodOf(grid, method));
      return hostCall(method, args, site);
    },
    display,
    signal: () => cellNow()?.abort.signal ?? AbortSignal.abort(gridError('ABORTED', 'no cell is running')),
  });
  Object.assign(globalThis, { grid, display, require: notebookRequire });
  process.on('uncaughtException', reportStray);
  process.on('unhandledRejection', reportStray);
  startOrphanWatchdog();
  process.on('disconnect', () => {
    killChildGroups();
    process.exit(0);
  });
  process.on('message', (message: unknown) => {
    if (!isHostMessage(message)) return;
    switch (message.type) {
      case 'execute': void execute(message); break;
      case 'interrupt': interrupt(message.execId); break;
      case 'hostCallReply': settleCall(message); break;
      case 'ping': send({ type: 'pong', id: message.id }); break;
      case 'introspect': introspect(message); break;
    }
  });
  patchTimers();
  patchChildProcess();
  syncBuiltinESMExports(); // `import { setTimeout } from 'node:timers/promises'` in a cell gets the patched ones
  realTimers.setImmediate(() => {
    patchStream('stdout');
    patchStream('stderr');
    send({ type: 'ready', pid: process.pid, nodeVersion: process.versions.node });
    // Start esbuild's service now so the first cell does not pay for it.
    compileCell('0', 'typescript', 'warm-up').catch(reportStray);
  });
}

main();
