// The messages between the kernel host (the extension host, or a test) and the kernel worker (the
// child process that runs cells). Both sides import this one module; each message names its sender.
// The channel is Node's IPC with `serialization: 'advanced'`, so typed arrays (tensor data, PNG bytes)
// cross without base64.

export type CellLanguage = 'typescript' | 'javascript';

/** mime type → data. Text mimes (text/*, application/json, …) carry strings; binary ones carry bytes. */
export type MimeBundle = Record<string, string | Uint8Array>;

/** A failure as a notebook shows it: the stack is already mapped to the cells' own lines. */
export interface CellError {
  name: string;
  message: string;
  /** `name: message` followed by frames like `at f (Cell [3]:2:9)`; internal frames removed. */
  stack: string;
  /** The line (1-based) in the failing cell, when the error points into it. */
  line?: number;
  column?: number;
  /** A GRID_ERR_* code when the error came from the grid. */
  code?: string;
}

export type CellOutput =
  | { kind: 'stream'; stream: 'stdout' | 'stderr'; text: string }
  /** `displayId` lets later displays with `update: true` replace this one (live metrics, progress). */
  /** `result` marks the value of the cell's last expression (Jupyter's `execute_result`, Out[n]). */
  | { kind: 'display'; data: MimeBundle; displayId?: string; update?: boolean; result?: boolean }
  | { kind: 'error'; error: CellError };

/** Settings the host hands the worker on its command line (JSON, argv[2]). */
export interface WorkerConfig {
  /** Output bytes (streams and new displays) one cell may send before the rest is dropped with a note. */
  maxStreamBytesPerCell: number;
}

/** What a cell shows, on stderr, where its stream output went past `maxStreamBytesPerCell`. */
export function truncationNotice(maxStreamBytesPerCell: number): string {
  const size = maxStreamBytesPerCell >= 1048576 ? `${Math.round(maxStreamBytesPerCell / 1048576)} MiB` : `${Math.round(maxStreamBytesPerCell / 1024)} KiB`;
  return `\n[output truncated: this cell printed more than ${size}]\n`;
}

/** A grid call that failed on the host side, as it crosses the channel. */
export interface HostCallError {
  name: string;
  message: string;
  code?: string;
  details?: Record<string, unknown>;
}

// ---- sent by the host ----

/** Sent by the host: run one cell. The host sends the next only after the `executeReply`. */
export interface ExecuteRequest {
  type: 'execute';
  execId: number;
  code: string;
  language: CellLanguage;
  /** Shown in stack traces and syntax errors, e.g. `Cell [3]`. */
  cellName: string;
}

/** Sent by the host: stop the running cell — reject its pending grid calls and abort `grid.signal`. */
export interface InterruptRequest {
  type: 'interrupt';
  execId: number;
}

/** Sent by the host: the outcome of a `hostCall`. */
export type HostCallReply =
  | { type: 'hostCallReply'; callId: number; ok: true; value: unknown }
  | { type: 'hostCallReply'; callId: number; ok: false; error: HostCallError };

/** Sent by the host: liveness probe and the benchmark's baseline round trip. */
export interface PingRequest {
  type: 'ping';
  id: number;
}

/**
 * Sent by the host: what the kernel knows about the code at `cursor` (a UTF-16 offset): completions
 * from the live globals (earlier cells' variables, `grid`, Node's) or a description of the value there.
 * Answered between cells, and while an async cell awaits; a cell in a synchronous loop never answers.
 */
export interface IntrospectRequest {
  type: 'introspect';
  id: number;
  what: 'complete' | 'inspect';
  code: string;
  cursor: number;
}

export type HostToWorker = ExecuteRequest | InterruptRequest | HostCallReply | PingRequest | IntrospectRequest;

// ---- sent by the worker ----

/** Sent by the worker once its globals (`grid`, `display`, `require`) are in place. */
export interface ReadyEvent {
  type: 'ready';
  pid: number;
  nodeVersion: string;
}

/**
 * Sent by the worker: output of cell `execId`. Output may arrive after the cell's reply (timers,
 * unawaited promises); the host then reports it as late output of that cell.
 */
export interface OutputEvent {
  type: 'output';
  execId: number;
  output: CellOutput;
}

/** Sent by the worker when cell `execId` has settled. A failed cell carries its mapped error. */
export type ExecuteReply =
  | { type: 'executeReply'; execId: number; ok: true }
  | { type: 'executeReply'; execId: number; ok: false; error: CellError };

/** Sent by the worker: a `grid.<method>(...)` call from cell `execId`, for the host's GridBridge. */
export interface HostCallRequest {
  type: 'hostCall';
  callId: number;
  execId: number;
  method: string;
  args: unknown[];
}

/** Sent by the worker: answer to `ping`. */
export interface PongReply {
  type: 'pong';
  id: number;
}

/** Sent by the worker: answer to `introspect`. Offsets are UTF-16, like the request's cursor. */
export interface IntrospectReply {
  type: 'introspectReply';
  id: number;
  /** complete: the names that fit, replacing code[start, end). */
  matches: string[];
  start: number;
  end: number;
  /** inspect: a description of the value at the cursor, when there is one. */
  data?: MimeBundle;
}

/**
 * Sent by the worker (POSIX): a child process it started leads its own process group (`alive`), or has
 * exited. The host kills the groups still alive when it kills the worker: a SIGKILLed worker cannot.
 */
export interface ChildGroupEvent {
  type: 'childGroup';
  pid: number;
  alive: boolean;
}

export type WorkerToHost = ReadyEvent | OutputEvent | ExecuteReply | HostCallRequest | PongReply | IntrospectReply | ChildGroupEvent;

const workerMessageTypes = new Set<string>(['ready', 'output', 'executeReply', 'hostCall', 'pong', 'introspectReply', 'childGroup']);
const hostMessageTypes = new Set<string>(['execute', 'interrupt', 'hostCallReply', 'ping', 'introspect']);

/**
 * The worker's messages, checked field by field: cell code can `process.send` anything on the same
 * channel, and a malformed message must be dropped here, not throw in the extension host.
 */
export function isWorkerMessage(value: unknown): value is WorkerToHost {
  if (!isRecord(value) || !workerMessageTypes.has(value.type as string)) return false;
  const m = value;
  switch (m.type) {
    case 'ready': return isCount(m.pid) && typeof m.nodeVersion === 'string';
    case 'output': return isCount(m.execId) && isCellOutput(m.output);
    case 'executeReply': return isCount(m.execId) && (m.ok === true || (m.ok === false && isCellError(m.error)));
    case 'hostCall': return isCount(m.callId) && isCount(m.execId) && typeof m.method === 'string' && Array.isArray(m.args);
    case 'pong': return isCount(m.id);
    case 'childGroup': return isCount(m.pid) && m.pid > 1 && typeof m.alive === 'boolean';
    case 'introspectReply':
      return isCount(m.id) && Array.isArray(m.matches) && m.matches.every((x) => typeof x === 'string')
        && isCount(m.start) && isCount(m.end) && (m.data === undefined || isWireMimeBundle(m.data));
    default: return false;
  }
}

export function isCellOutput(value: unknown): value is CellOutput {
  if (!isRecord(value)) return false;
  switch (value.kind) {
    case 'stream': return (value.stream === 'stdout' || value.stream === 'stderr') && typeof value.text === 'string';
    case 'display':
      return isWireMimeBundle(value.data) && isOptional(value.displayId, 'string') && isOptional(value.update, 'boolean') && isOptional(value.result, 'boolean');
    case 'error': return isCellError(value.error);
    default: return false;
  }
}

function isCellError(value: unknown): value is CellError {
  return isRecord(value) && typeof value.name === 'string' && typeof value.message === 'string' && typeof value.stack === 'string'
    && isOptional(value.line, 'number') && isOptional(value.column, 'number') && isOptional(value.code, 'string');
}

function isWireMimeBundle(value: unknown): value is MimeBundle {
  return isRecord(value) && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string' || v instanceof Uint8Array);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isOptional(value: unknown, type: 'string' | 'number' | 'boolean'): boolean {
  return value === undefined || typeof value === type;
}

export function isHostMessage(value: unknown): value is HostToWorker {
  return typeof value === 'object' && value !== null && hostMessageTypes.has((value as { type?: unknown }).type as string);
}
