// The onnxruntime seam: the only file that imports onnxruntime-node, and only on first use, so code that
// merely imports compute/ (the VS Code extension host, the CLIs) never pays for the native module.
// Tensors cross the seam without a copy: our Tensor storage types are the ones ORT uses.

import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { ErrorCodes, GridError, gridError } from '../core/errors';
import { bytesPerElement, encodedTensorSize, isDType, validateTensor, type DType, type NamedTensors, type Tensor } from '../core/protocol/tensor';
import type { ModelSignature, ValueSignature } from '../core/protocol/messages';
import { decodeModel } from './onnx/model';
import { dtypeFromOnnx } from './onnx/tensor-proto';

type Ort = typeof import('onnxruntime-node');
type OrtSession = import('onnxruntime-node').InferenceSession;
type OrtTensor = import('onnxruntime-node').Tensor;

let ortPromise: Promise<Ort> | undefined;

/** Loads onnxruntime-node once; later calls share the same module. */
export function loadOrt(): Promise<Ort> {
  ortPromise ??= import('onnxruntime-node').then((m) => ((m as unknown as { default?: Ort }).default ?? m) as Ort);
  return ortPromise;
}

// A model's inputs and outputs, as onnxruntime reads them from the graph: the very shape a node lists
// in ModelInfo, so the one type is the protocol's.
export type { ModelSignature, ValueSignature } from '../core/protocol/messages';
/** One dimension of a signature: a size, a symbolic name (`"batch"`), or null when the model says nothing. */
export type SignatureDim = ValueSignature['dims'][number];

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
}

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

/** A signature read from the ONNX graph (for ORT bindings without value metadata). */
export function signatureFromGraph(bytes: Uint8Array, inputNames: readonly string[], outputNames: readonly string[]): ModelSignature {
  const graph = decodeModel(bytes).graph!;
  const infos = new Map([...(graph.input ?? []), ...(graph.output ?? [])].map((v) => [v.name ?? '', v]));
  const one = (name: string, kind: string): ValueSignature => {
    const t = infos.get(name)?.type?.tensorType;
    if (!t) throw gridError('INVALID_MODEL', `${kind} "${name}" is not a tensor; the grid only carries tensors`);
    const dtype = dtypeFromOnnx(t.elemType ?? 0, `${kind} "${name}"`);
    const dims = (t.shape?.dim ?? []).map((d): SignatureDim => d.dimValue ?? d.dimParam ?? null);
    return { name, dtype, dims };
  };
  return { inputs: inputNames.map((n) => one(n, 'input')), outputs: outputNames.map((n) => one(n, 'output')) };
}

function describeDims(dims: readonly SignatureDim[]): string {
  return `[${dims.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

/** A feed's dtype and dims: all a shape check needs (a decoded tensor, or a tensor header before decoding). */
export interface FeedShape {
  readonly dtype: DType;
  readonly dims: readonly number[];
}

/**
 * Checks feed dtypes and shapes against the signature, so a bad call gets an error naming the input instead
 * of ORT's generic message. Symbolic dims must agree across inputs (e.g. one `batch`). Works on headers too:
 * the node checks a request's tensors this way before decoding them. Returns the symbols' sizes.
 */
export function checkFeedShapes(signature: ModelSignature, feeds: Readonly<Record<string, FeedShape>>): Map<string, number> {
  const expected = new Map(signature.inputs.map((i) => [i.name, i]));
  for (const name of Object.keys(feeds)) {
    if (!expected.has(name)) {
      throw gridError('INVALID_INPUT', `the model has no input "${name}"; its inputs are ${signature.inputs.map((i) => `"${i.name}"`).join(', ') || 'none'}`, { input: name });
    }
  }
  const symbols = new Map<string, { size: number; input: string }>();
  for (const sig of signature.inputs) {
    const t = feeds[sig.name];
    if (t === undefined) throw gridError('INVALID_INPUT', `input "${sig.name}" is missing (expected ${sig.dtype} ${describeDims(sig.dims)})`, { input: sig.name });
    if (t.dtype !== sig.dtype) {
      throw gridError('INVALID_INPUT', `input "${sig.name}" must be ${sig.dtype}, got ${t.dtype}`, { input: sig.name, expected: sig.dtype, given: t.dtype });
    }
    const mismatch = () => gridError('INVALID_INPUT', `input "${sig.name}" must have shape ${describeDims(sig.dims)}, got [${t.dims.join(', ')}]`, { input: sig.name, expected: sig.dims, given: t.dims });
    // ORT reports a scalar and an input of unknown rank alike (empty shape): let ORT decide those.
    if (sig.dims.length === 0) continue;
    if (sig.dims.length !== t.dims.length) throw mismatch();
    sig.dims.forEach((d, i) => {
      const given = t.dims[i]!;
      if (typeof d === 'number' && d !== given) throw mismatch();
      if (typeof d === 'string' && d !== '') {
        const seen = symbols.get(d);
        if (seen && seen.size !== given) {
          throw gridError('INVALID_INPUT', `input "${sig.name}" dimension ${i} ("${d}") is ${given}, but input "${seen.input}" has "${d}" = ${seen.size}`, { input: sig.name });
        }
        if (!seen) symbols.set(d, { size: given, input: sig.name });
      }
    });
  }
  return new Map([...symbols].map(([k, v]) => [k, v.size]));
}

/** Checks feeds (dtypes, shapes and data) against the signature before ORT sees them. */
export function checkFeeds(signature: ModelSignature, feeds: NamedTensors): void {
  if (feeds === null || typeof feeds !== 'object') throw new TypeError('feeds must be an object of named tensors');
  for (const sig of signature.inputs) {
    const t = feeds[sig.name];
    if (t === undefined) continue;
    try {
      validateTensor(t, `input "${sig.name}"`);
    } catch (err) {
      throw new GridError(ErrorCodes.INVALID_INPUT, (err as Error).message, { input: sig.name });
    }
  }
  checkFeedShapes(signature, feeds);
}

/**
 * True when every output's shape follows from the inputs' shapes (fixed sizes, or symbols that an input
 * also has), so its size is known before the run. Not so for outputs whose size depends on input values
 * (ConstantOfShape, Range, NonZero …) or is unknown: such a run may allocate any amount.
 */
export function outputsFollowInputShapes(signature: ModelSignature): boolean {
  const inputSymbols = new Set(signature.inputs.flatMap((i) => i.dims.filter((d): d is string => typeof d === 'string' && d !== '')));
  // An empty shape is a scalar or an unknown rank: ORT does not say which, so it counts as unknown.
  return signature.outputs.every((o) => o.dtype !== 'string' && o.dims.length > 0 && o.dims.every((d) => typeof d === 'number' ? d >= 0 : typeof d === 'string' && inputSymbols.has(d)));
}

/**
 * Bytes each output will take, where its shape is known from the signature and the inputs' symbol sizes
 * (from checkFeedShapes); outputs of unknown size are left out. Lets a node refuse a run before it starts.
 */
export function knownOutputBytes(signature: ModelSignature, symbols: ReadonlyMap<string, number>, outputs?: readonly string[]): Map<string, number> {
  const wanted = outputs === undefined ? undefined : new Set(outputs);
  const sizes = new Map<string, number>();
  for (const o of signature.outputs) {
    if (wanted !== undefined && !wanted.has(o.name)) continue;
    if (o.dtype === 'string' || o.dims.length === 0) continue;
    let n = 1;
    for (const d of o.dims) n *= typeof d === 'number' ? d : typeof d === 'string' ? symbols.get(d) ?? Number.NaN : Number.NaN;
    if (Number.isFinite(n) && n >= 0) sizes.set(o.name, n * bytesPerElement(o.dtype));
  }
  return sizes;
}

/** Fails with PAYLOAD_TOO_LARGE, naming the biggest output, when outputs together exceed `max` bytes. */
export function checkOutputBytes(sizes: ReadonlyMap<string, number>, max: number, when: string): void {
  let total = 0;
  let biggest: [string, number] = ['', -1];
  for (const [name, bytes] of sizes) {
    total += bytes;
    if (bytes > biggest[1]) biggest = [name, bytes];
  }
  if (total <= max) return;
  throw gridError('PAYLOAD_TOO_LARGE',
    `output "${biggest[0]}" ${when} ${formatBytes(biggest[1])}${sizes.size > 1 ? ` (${formatBytes(total)} for all outputs)` : ''}, over this node's limit of ${formatBytes(max)} per inference request; ask for less (smaller inputs, fewer outputs) or have the node's operator raise its inference.maxOutputBytes`,
    { output: biggest[0], bytes: biggest[1], total, limit: max });
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v >= 100 ? Math.round(v) : Number(v.toFixed(1))} ${units[u]} (${n} bytes)`;
}

function toOrtTensor(ort: Ort, t: Tensor): OrtTensor {
  // The constructor wraps the typed array as is; no copy.
  return new ort.Tensor(t.dtype as never, t.data as never, t.dims as number[]);
}

function fromOrtTensor(name: string, t: OrtTensor): Tensor {
  if (!isDType(t.type)) throw gridError('INVALID_TENSOR', `output "${name}" has dtype ${t.type}, which the grid's tensor codec does not carry`);
  return { dtype: t.type, dims: [...t.dims], data: t.data as Tensor['data'] } as Tensor;
}

/** Bytes of each tensor's data (a string costs its UTF-8 bytes and a 4-byte length), as knownOutputBytes counts them. */
export function outputSizes(tensors: NamedTensors): Map<string, number> {
  return new Map(Object.entries(tensors).map(([name, t]) => [name, encodedTensorSize(t) - 8 - 8 * t.dims.length]));
}

class OrtModelHandle implements ModelHandle {
  readonly signature: ModelSignature;
  readonly byteLength: number;
  private readonly ort: Ort;
  private readonly session: OrtSession;
  private inFlight = 0;
  private released: Promise<void> | undefined;
  private releaseNow: (() => void) | undefined;
  private disposeRequested = false;

  constructor(ort: Ort, session: OrtSession, signature: ModelSignature, byteLength: number) {
    this.ort = ort;
    this.session = session;
    this.signature = signature;
    this.byteLength = byteLength;
  }

  get disposed(): boolean {
    return this.disposeRequested;
  }

  async run(feeds: NamedTensors, opts: RunOptions = {}): Promise<NamedTensors> {
    if (this.disposeRequested) throw gridError('DISPOSED', 'the model session was disposed');
    if (opts.signal?.aborted) throw gridError('ABORTED', 'inference was aborted before it started');
    checkFeeds(this.signature, feeds);
    let fetches: string[] | undefined;
    if (opts.outputs !== undefined) {
      if (!Array.isArray(opts.outputs)) throw new TypeError('opts.outputs must be an array of output names');
      const known = new Set(this.signature.outputs.map((o) => o.name));
      for (const o of opts.outputs) {
        if (!known.has(o)) throw gridError('INVALID_INPUT', `the model has no output "${o}"; its outputs are ${[...known].map((n) => `"${n}"`).join(', ')}`, { output: o });
      }
      fetches = [...opts.outputs];
    }
    const ortFeeds: Record<string, OrtTensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(this.ort, t);
    this.inFlight++;
    try {
      const out = fetches ? await this.session.run(ortFeeds, fetches) : await this.session.run(ortFeeds);
      const result: NamedTensors = {};
      for (const [name, value] of Object.entries(out)) result[name] = fromOrtTensor(name, value as OrtTensor);
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
        void this.session.release().then(resolve, () => resolve());
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
  return openSession(bytes, bytes.byteLength, options, () => bytes);
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
  return openSession(path, size, options, () => readFileSync(path));
}

async function openSession(
  source: Uint8Array | string, byteLength: number, options: import('onnxruntime-node').InferenceSession.SessionOptions, graphBytes: () => Uint8Array,
): Promise<ModelHandle> {
  const ort = await loadOrt();
  let session: OrtSession;
  try {
    session = typeof source === 'string' ? await ort.InferenceSession.create(source, options) : await ort.InferenceSession.create(source, options);
  } catch (err) {
    throw new GridError(ErrorCodes.INVALID_MODEL, `not a loadable ONNX model: ${(err as Error).message}`, undefined, { cause: err });
  }
  try {
    // ORT ≥ 1.21 reports value metadata; older bindings only names, so read the graph then.
    const signature: ModelSignature = Array.isArray(session.inputMetadata) && Array.isArray(session.outputMetadata)
      ? { inputs: signatureOf(session.inputMetadata, 'input'), outputs: signatureOf(session.outputMetadata, 'output') }
      : signatureFromGraph(graphBytes(), session.inputNames, session.outputNames);
    return new OrtModelHandle(ort, session, signature, byteLength);
  } catch (err) {
    await session.release();
    throw err;
  }
}

export interface SessionCacheOptions {
  /** Memory budget for all cached sessions, estimated as model bytes × `factor`. */
  maxBytes: number;
  /** How much memory a session takes per byte of model (weights, plus ORT's arenas and prepacked copies). Default 3. */
  factor?: number;
  loadOptions?: LoadModelOptions;
  /** Where a session is loaded; loadModel (this thread) by default. The node loads big models on a worker thread. */
  load?(bytes: Uint8Array, opts: LoadModelOptions, key: string): Promise<ModelHandle>;
}

interface CacheEntry {
  readonly key: string;
  readonly promise: Promise<ModelHandle>;
  /** Set once loaded: a handle that became unusable on its own (its worker stopped) is loaded again. */
  handle?: ModelHandle;
  estimate: number;
  /** Loads in progress are never evicted: their callers are waiting for them. */
  loaded: boolean;
}

/**
 * Sessions by key (a model id or sha256), least recently used evicted first when the memory estimate
 * exceeds the budget. A model larger than the whole budget is still loaded, alone.
 * Evicted sessions are disposed once their runs in flight finish.
 */
export class SessionCache {
  private readonly maxBytes: number;
  private readonly factor: number;
  private readonly loadOptions: LoadModelOptions;
  private readonly load: (bytes: Uint8Array, opts: LoadModelOptions, key: string) => Promise<ModelHandle>;
  private readonly entries = new Map<string, CacheEntry>();
  private used = 0;
  private closed = false;

  constructor(opts: SessionCacheOptions) {
    if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
    if (typeof opts.maxBytes !== 'number' || !Number.isFinite(opts.maxBytes)) throw new TypeError('opts.maxBytes must be a finite number');
    if (opts.maxBytes <= 0) throw new RangeError(`opts.maxBytes must be positive, got ${opts.maxBytes}`);
    if (opts.factor !== undefined && (typeof opts.factor !== 'number' || !(opts.factor > 0))) throw new RangeError('opts.factor must be a positive number');
    this.maxBytes = opts.maxBytes;
    this.factor = opts.factor ?? 3;
    this.loadOptions = opts.loadOptions ?? {};
    this.load = opts.load ?? loadModel;
  }

  /** Estimated bytes held by cached sessions. */
  get bytesInUse(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * The session for `key`, loading it from `bytes()` on a miss. Concurrent calls for one key share one load.
   * A load that fails is not cached.
   */
  get(key: string, bytes: () => Uint8Array | Promise<Uint8Array>): Promise<ModelHandle> {
    if (typeof key !== 'string' || key === '') throw new TypeError('key must be a non-empty string');
    if (typeof bytes !== 'function') throw new TypeError('bytes must be a function returning the model bytes');
    if (this.closed) return Promise.reject(gridError('DISPOSED', 'the session cache was disposed'));
    const hit = this.entries.get(key);
    if (hit?.handle?.disposed) this.forget(hit);
    else if (hit) {
      // Map order is the LRU order: re-insert to mark as most recent.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.promise;
    }
    const entry: CacheEntry = { key, estimate: 0, loaded: false, promise: undefined as unknown as Promise<ModelHandle> };
    (entry as { promise: Promise<ModelHandle> }).promise = (async () => {
      const b = await bytes();
      const estimate = b.byteLength * this.factor;
      this.makeRoom(estimate, key);
      entry.estimate = estimate;
      this.used += estimate;
      try {
        const handle = await this.load(b, this.loadOptions, key);
        entry.loaded = true;
        entry.handle = handle;
        if (this.closed || this.entries.get(key) !== entry) {
          await handle.dispose();
          throw gridError('DISPOSED', `the session for "${key}" was deleted or the cache disposed while it loaded`);
        }
        return handle;
      } catch (err) {
        this.forget(entry);
        throw err;
      }
    })();
    this.entries.set(key, entry);
    entry.promise.catch(() => this.forget(entry));
    return entry.promise;
  }

  /** Drops and disposes the session for `key`, if cached. */
  async delete(key: string): Promise<boolean> {
    const entry = this.entries.get(key);
    if (!entry) return false;
    this.forget(entry);
    await this.disposeEntry(entry);
    return true;
  }

  /** Disposes every cached session; idempotent. */
  async dispose(): Promise<void> {
    this.closed = true;
    const all = [...this.entries.values()];
    for (const e of all) this.forget(e);
    await Promise.all(all.map((e) => this.disposeEntry(e)));
  }

  private forget(entry: CacheEntry): void {
    if (this.entries.get(entry.key) === entry) {
      this.entries.delete(entry.key);
      this.used -= entry.estimate;
      entry.estimate = 0;
    }
  }

  private async disposeEntry(entry: CacheEntry): Promise<void> {
    try {
      const handle = await entry.promise;
      await handle.dispose();
    } catch {
      // A load that failed has nothing to release.
    }
  }

  private makeRoom(needed: number, except: string): void {
    for (const entry of [...this.entries.values()]) {
      if (this.used + needed <= this.maxBytes) break;
      if (entry.key === except || !entry.loaded) continue;
      this.forget(entry);
      void this.disposeEntry(entry);
    }
  }
}
