// The onnxruntime seam: the only file that imports onnxruntime-node, and only on first use, so code that
// merely imports compute/ (the VS Code extension host, the CLIs) never pays for the native module.
// Tensors cross the seam without a copy: our Tensor storage types are the ones ORT uses.
// What sits on top of it lives elsewhere: signatures and feed checks (signature.ts), the cache of loaded
// sessions (session-cache.ts), sessions on a worker thread (model-thread.ts).

import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { ErrorCodes, GridError, gridError } from '../core/errors';
import { isDType, type NamedTensors, type Tensor } from '../core/protocol/tensor';
import { checkFeeds, checkOutputBytes, outputSizes, signatureFromGraph, type ModelSignature, type SignatureDim, type ValueSignature } from './signature';

type Ort = typeof import('onnxruntime-node');
type OrtSession = import('onnxruntime-node').InferenceSession;
type OrtTensor = import('onnxruntime-node').Tensor;

let ortPromise: Promise<Ort> | undefined;

/** Loads onnxruntime-node once; later calls share the same module. */
export function loadOrt(): Promise<Ort> {
  ortPromise ??= import('onnxruntime-node').then((m) => ((m as unknown as { default?: Ort }).default ?? m) as Ort);
  return ortPromise;
}

export interface LoadModelOptions {
  /** Threads one operator may use; defaults to the machine's cores, at most 4. */
  intraOpNumThreads?: number;
  /** Threads running independent operators in parallel; 1 (sequential execution) by default. */
  interOpNumThreads?: number;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** ORT's own log level (0 verbose … 4 fatal); 3 by default so old-opset warnings stay off stderr. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /**
   * Let idle ORT worker threads spin between operators: faster for graphs of many small operators
   * (training plans) on a dedicated machine, wasteful on a shared one. Off by default.
   */
  allowSpinning?: boolean;
  /**
   * Small runs of a small model (at most SMALL_MODEL_BYTES of model, SMALL_RUN_ELEMENTS input elements)
   * go to a second, single-threaded session of it, when the first has more than one intra-op thread:
   * handing a run of a few tens of µs to a thread pool costs more than it saves. Measured for an MLP
   * 784-128-10 on 2 cores, a run after 120 µs idle (a server between requests): batch 1 26 µs on one
   * thread vs 42 on two, batch 64 101 vs 110, while batch 256 gains from two (262 vs 318). The model's
   * weights are held twice. Off by default; the grid node turns it on unless given --intra-op-threads.
   */
  smallRunsOnOneThread?: boolean;
}

/** Most bytes a model may have for smallRunsOnOneThread to give it a single-threaded second session. */
export const SMALL_MODEL_BYTES = 4 * 1024 * 1024;
/** Most input elements (over all feeds) a run may have to go to that session. */
export const SMALL_RUN_ELEMENTS = 64 * 1024;

export interface RunOptions {
  /** Output names to fetch; all outputs by default. */
  outputs?: readonly string[];
  /** Checked before the run starts; a run in progress is not interrupted. Anything with `aborted` will do. */
  signal?: { readonly aborted: boolean };
  /**
   * Most bytes the outputs may take (their encoding on the wire). Checked after the run, before the
   * outputs leave the thread that ran them; a bigger result fails with PAYLOAD_TOO_LARGE. No limit by default.
   */
  maxOutputBytes?: number;
  /**
   * The caller has already held the feeds to this model's signature (names, dtypes, shapes) and made
   * each tensor's data match its dtype and dims: the node does so from the wire headers before decoding.
   * The run then skips its own check of them; onnxruntime still refuses what does not fit the graph.
   */
  feedsChecked?: boolean;
}

/** A loaded model. `dispose()` is idempotent and waits for runs in flight before releasing the session. */
export interface ModelHandle {
  readonly signature: ModelSignature;
  /** Bytes of the model this handle was loaded from. */
  readonly byteLength: number;
  readonly disposed: boolean;
  run(feeds: NamedTensors, opts?: RunOptions): Promise<NamedTensors>;
  dispose(): Promise<void>;
}

function defaultThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

/** How many onnxruntime sessions a model of `byteLength` bytes loaded with `opts` holds: 2 when smallRunsOnOneThread adds one. */
export function sessionsPerModel(byteLength: number, opts: LoadModelOptions): 1 | 2 {
  return opts.smallRunsOnOneThread === true && (opts.intraOpNumThreads ?? defaultThreads()) > 1 && byteLength <= SMALL_MODEL_BYTES ? 2 : 1;
}

function checkThreads(value: unknown, name: string): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`${name} must be an integer`);
  if (value < 0 || value > 256) throw new RangeError(`${name} must be between 0 and 256, got ${value}`);
}

function sessionOptions(opts: LoadModelOptions): import('onnxruntime-node').InferenceSession.SessionOptions {
  checkThreads(opts.intraOpNumThreads, 'opts.intraOpNumThreads');
  checkThreads(opts.interOpNumThreads, 'opts.interOpNumThreads');
  return {
    intraOpNumThreads: opts.intraOpNumThreads ?? defaultThreads(),
    interOpNumThreads: opts.interOpNumThreads ?? 1,
    graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
    executionMode: 'sequential',
    logSeverityLevel: opts.logSeverityLevel ?? 3,
    // A grid node is shared by many models and a busy editor: idle worker threads must not spin.
    extra: { session: { intra_op: { allow_spinning: opts.allowSpinning ? '1' : '0' }, inter_op: { allow_spinning: opts.allowSpinning ? '1' : '0' } } },
  };
}

function signatureOf(meta: readonly import('onnxruntime-node').InferenceSession.ValueMetadata[], kind: string): ValueSignature[] {
  return meta.map((m) => {
    if (!m.isTensor) throw gridError('INVALID_MODEL', `${kind} "${m.name}" is not a tensor; the grid only carries tensors`);
    if (!isDType(m.type)) throw gridError('INVALID_MODEL', `${kind} "${m.name}" has dtype ${m.type}, which the grid's tensor codec does not carry`);
    const dims = m.shape.map((d): SignatureDim => (typeof d === 'number' ? d : d === '' ? null : d));
    return { name: m.name, dtype: m.type, dims };
  });
}

function toOrtTensor(ort: Ort, t: Tensor): OrtTensor {
  // The constructor wraps the typed array as is; no copy.
  return new ort.Tensor(t.dtype as never, t.data as never, t.dims as number[]);
}

function fromOrtTensor(name: string, t: OrtTensor): Tensor {
  if (!isDType(t.type)) throw gridError('INVALID_TENSOR', `output "${name}" has dtype ${t.type}, which the grid's tensor codec does not carry`);
  return { dtype: t.type, dims: [...t.dims], data: t.data as Tensor['data'] } as Tensor;
}

/**
 * What onnxruntime-common's InferenceSession.run hands its backend (onnxruntime-node 1.x): feeds as
 * Tensors, fetches as `{ name: null }`, options. Its run() first re-checks both and rebuilds them, and
 * wraps each output in a Tensor; a handle whose feeds and fetches are already checked calls the backend
 * directly, with names bound once per session. Absent (a future onnxruntime-common): the public run().
 */
interface OrtSessionHandler {
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, null>, options: object): Promise<Record<string, { type: string; dims: readonly number[]; data: unknown }>>;
}

function sessionHandler(session: OrtSession): OrtSessionHandler | undefined {
  const handler = (session as unknown as { handler?: { run?: unknown } }).handler;
  return typeof handler?.run === 'function' ? handler as OrtSessionHandler : undefined;
}

const NO_RUN_OPTIONS = Object.freeze({});

class OrtModelHandle implements ModelHandle {
  readonly signature: ModelSignature;
  readonly byteLength: number;
  private readonly ort: Ort;
  private readonly session: OrtSession;
  private readonly handler: OrtSessionHandler | undefined;
  /** The single-threaded session small runs go to (LoadModelOptions.smallRunsOnOneThread), if any. */
  private readonly small: { session: OrtSession; handler: OrtSessionHandler | undefined } | undefined;
  /** Every output, as the backend's fetches: the default run, bound once. */
  private readonly allFetches: Readonly<Record<string, null>>;
  private readonly outputNames: ReadonlySet<string>;
  private inFlight = 0;
  private released: Promise<void> | undefined;
  private releaseNow: (() => void) | undefined;
  private disposeRequested = false;

  constructor(ort: Ort, session: OrtSession, signature: ModelSignature, byteLength: number, small?: OrtSession) {
    this.ort = ort;
    this.session = session;
    this.signature = signature;
    this.byteLength = byteLength;
    this.handler = sessionHandler(session);
    this.small = small && { session: small, handler: sessionHandler(small) };
    const all: Record<string, null> = {};
    for (const o of signature.outputs) all[o.name] = null;
    this.allFetches = Object.freeze(all);
    this.outputNames = new Set(signature.outputs.map((o) => o.name));
  }

  get disposed(): boolean {
    return this.disposeRequested;
  }

  async run(feeds: NamedTensors, opts: RunOptions = {}): Promise<NamedTensors> {
    if (this.disposeRequested) throw gridError('DISPOSED', 'the model session was disposed');
    if (opts.signal?.aborted) throw gridError('ABORTED', 'inference was aborted before it started');
    if (opts.feedsChecked !== true) checkFeeds(this.signature, feeds);
    let fetches = this.allFetches;
    if (opts.outputs !== undefined) {
      if (!Array.isArray(opts.outputs)) throw new TypeError('opts.outputs must be an array of output names');
      const some: Record<string, null> = {};
      for (const o of opts.outputs) {
        if (!this.outputNames.has(o)) throw gridError('INVALID_INPUT', `the model has no output "${o}"; its outputs are ${[...this.outputNames].map((n) => `"${n}"`).join(', ')}`, { output: o });
        some[o] = null;
      }
      if (opts.outputs.length === 0) throw gridError('INVALID_INPUT', 'onnxruntime could not run the model on these inputs: \'fetches\' cannot be an empty array: name at least one output, or none for all of them');
      fetches = some;
    }
    const ortFeeds: Record<string, OrtTensor> = {};
    let elements = 0;
    for (const name in feeds) { const t = feeds[name]!; elements += t.data.length; ortFeeds[name] = toOrtTensor(this.ort, t); }
    const useSmall = this.small !== undefined && elements <= SMALL_RUN_ELEMENTS;
    const session = useSmall ? this.small!.session : this.session;
    const handler = useSmall ? this.small!.handler : this.handler;
    this.inFlight++;
    try {
      const out = handler !== undefined
        ? await handler.run(ortFeeds, fetches, NO_RUN_OPTIONS)
        : await session.run(ortFeeds, Object.keys(fetches));
      const result: NamedTensors = {};
      for (const name in out) result[name] = fromOrtTensor(name, out[name] as OrtTensor);
      if (opts.maxOutputBytes !== undefined) checkOutputBytes(outputSizes(result), opts.maxOutputBytes, 'came to');
      return result;
    } catch (err) {
      if (err instanceof GridError) throw err;
      throw new GridError(ErrorCodes.INVALID_INPUT, `onnxruntime could not run the model on these inputs: ${(err as Error).message}`, undefined, { cause: err });
    } finally {
      this.inFlight--;
      if (this.inFlight === 0 && this.releaseNow) this.releaseNow();
    }
  }

  dispose(): Promise<void> {
    if (this.released) return this.released;
    this.disposeRequested = true;
    this.released = new Promise<void>((resolve) => {
      this.releaseNow = () => {
        this.releaseNow = undefined;
        void Promise.all([this.session.release(), this.small?.session.release()]).then(() => resolve(), () => resolve());
      };
      if (this.inFlight === 0) this.releaseNow();
    });
    return this.released;
  }
}

/**
 * Loads ONNX model bytes into an onnxruntime session.
 * Bytes that are not a loadable model reject with GRID_ERR_INVALID_MODEL carrying ORT's reason.
 */
export async function loadModel(bytes: Uint8Array, opts: LoadModelOptions = {}): Promise<ModelHandle> {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes must be a Uint8Array holding an ONNX model');
  if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
  const options = sessionOptions(opts);
  if (bytes.byteLength === 0) throw gridError('INVALID_MODEL', 'the model is empty (0 bytes)');
  return openSession(bytes, bytes.byteLength, options, () => bytes, sessionsPerModel(bytes.byteLength, opts) === 2);
}

/**
 * Like loadModel, but onnxruntime reads the file itself: no copy of the model passes through JS memory
 * (for a big model that is one less buffer of its size to allocate and fill).
 */
export async function loadModelFile(path: string, opts: LoadModelOptions = {}): Promise<ModelHandle> {
  if (typeof path !== 'string' || path === '') throw new TypeError('path must be the path of an ONNX model file');
  if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
  const options = sessionOptions(opts);
  const { size } = await stat(path);
  if (size === 0) throw gridError('INVALID_MODEL', 'the model is empty (0 bytes)');
  return openSession(path, size, options, () => readFileSync(path), sessionsPerModel(size, opts) === 2);
}

async function openSession(
  source: Uint8Array | string, byteLength: number, options: import('onnxruntime-node').InferenceSession.SessionOptions, graphBytes: () => Uint8Array,
  twin: boolean,
): Promise<ModelHandle> {
  const ort = await loadOrt();
  const create = (o: typeof options) => (typeof source === 'string' ? ort.InferenceSession.create(source, o) : ort.InferenceSession.create(source, o));
  let session: OrtSession;
  try {
    session = await create(options);
  } catch (err) {
    throw new GridError(ErrorCodes.INVALID_MODEL, `not a loadable ONNX model: ${(err as Error).message}`, undefined, { cause: err });
  }
  let small: OrtSession | undefined;
  try {
    // sessionsPerModel decided it, so the cache's memory estimate and the sessions made always agree.
    if (twin) small = await create({ ...options, intraOpNumThreads: 1 });
  } catch {
    // The model loaded; only its single-threaded twin did not (memory, most likely): every run then goes
    // to the main session, as it would with a thread count given.
    small = undefined;
  }
  try {
    // ORT ≥ 1.21 reports value metadata; older bindings only names, so read the graph then.
    const signature: ModelSignature = Array.isArray(session.inputMetadata) && Array.isArray(session.outputMetadata)
      ? { inputs: signatureOf(session.inputMetadata, 'input'), outputs: signatureOf(session.outputMetadata, 'output') }
      : signatureFromGraph(graphBytes(), session.inputNames, session.outputNames);
    return new OrtModelHandle(ort, session, signature, byteLength, small);
  } catch (err) {
    await Promise.all([session.release(), small?.release()]);
    throw err;
  }
}
