// Big models off the calling thread. onnxruntime loads and runs synchronously: a 1 GiB model takes ~10 s
// to load, a big network long to run, and a grid node doing that on its event loop would stop answering
// every other client (requests, heartbeats) meanwhile. Models up to a few MiB load and run in a few
// milliseconds and stay on the calling thread, where a round trip costs nothing extra.
//   checkModelFile(): load a file once to check it and read its signature (a thread per check, whose
//     memory ends with it).
//   ModelWorker: one long-lived thread that holds sessions; its handles are ModelHandles like loadModel's.

import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, GridError, gridError } from '../core/errors';
import type { WireError } from '../core/protocol/envelope';
import type { NamedTensors } from '../core/protocol/tensor';
import { loadModelFile, type LoadModelOptions, type ModelHandle, type RunOptions } from './backend';
import { checkFeeds, type ModelSignature } from './signature';
import type { ServeRequest, ThreadData } from './model-thread';

/** Models up to this size load and run on the calling thread (loading takes ~10 ms per MiB, a thread ~80 ms to start). */
export const IN_THREAD_MODEL_BYTES = 4 * 1024 * 1024;

function startThread(data: ThreadData): Worker {
  // Bundled, the thread's script sits next to this code in dist/; from source (tests, tsx), next to this file.
  const script = [join(__dirname, 'model-thread.js'), join(__dirname, 'model-thread.ts')].find((f) => existsSync(f));
  if (script === undefined) throw gridError('INTERNAL', `model-thread.js is missing next to ${__dirname}; rebuild the node`);
  // From source the script is TypeScript: it runs through tsx's require hook, resolved from here.
  return script.endsWith('.ts')
    ? new Worker(`require(${JSON.stringify(createRequire(__filename).resolve('tsx/cjs'))}); require(${JSON.stringify(script)});`, { eval: true, workerData: data })
    : new Worker(script, { workerData: data });
}

const aborted = () => gridError('ABORTED', 'the model check was aborted');

/**
 * Checks that a model file loads in onnxruntime and reads its signature. A big model is loaded on a
 * thread of its own that ends with the check, so the caller's event loop keeps running and the memory
 * of the trial session goes with the thread. Rejects like loadModel(), and with GRID_ERR_ABORTED when
 * `signal` aborts (the thread is stopped).
 */
export async function checkModelFile(file: string, opts: LoadModelOptions = {}, signal?: AbortSignal): Promise<ModelSignature> {
  if (signal?.aborted) throw aborted();
  const { size } = await stat(file);
  if (size <= IN_THREAD_MODEL_BYTES) {
    const handle = await loadModelFile(file, opts);
    await handle.dispose();
    return handle.signature;
  }
  if (signal?.aborted) throw aborted();
  const worker = startThread({ mode: 'check', file, options: opts });
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = () => settle(() => {
      void worker.terminate();
      reject(aborted());
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (m: { signature?: ModelSignature; error?: WireError }) => settle(() => {
      if (m.signature) resolve(m.signature);
      else reject(GridError.fromWire(m.error ?? { code: ErrorCodes.INTERNAL, message: 'the model check ended without a result' }));
    }));
    worker.once('error', (err) => settle(() => reject(new GridError(ErrorCodes.INVALID_MODEL, `onnxruntime could not load the model: ${err.message}`, undefined, { cause: err }))));
    worker.once('exit', (code) => settle(() => reject(gridError('INVALID_MODEL', `the model check stopped (exit ${code}) before onnxruntime had loaded the model`))));
  });
}

interface Call { resolve(v: unknown): void; reject(e: GridError): void }
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/**
 * A thread holding onnxruntime sessions. Started on the first load; runs queue on it in order. If the
 * thread stops, calls in flight fail with GRID_ERR_INTERNAL, its handles report `disposed` (a
 * SessionCache then loads them again), and the next load starts a new thread.
 */
export class ModelWorker {
  private worker: Worker | undefined;
  private readonly calls = new Map<number, Call>();
  private nextId = 1;
  private generation = 0;
  private closed = false;

  /** Loads model bytes in the thread. The bytes' memory is handed over to the thread (not copied). */
  async load(bytes: Uint8Array, opts: LoadModelOptions = {}): Promise<ModelHandle> {
    if (this.worker === undefined && !this.closed) this.start();
    const generation = this.generation;
    // A buffer that owns its whole ArrayBuffer moves to the thread; a view into a bigger one is copied.
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const r = await this.call({ op: 'load', bytes, options: opts }, own ? [bytes.buffer as ArrayBuffer] : []) as { session: number; signature: ModelSignature };
    return new WorkerModelHandle(this, r.session, r.signature, bytes.byteLength, generation);
  }

  /** Stops the thread; sessions in it are gone and calls in flight fail. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    this.failAll(gridError('DISPOSED', 'the model thread was closed'));
    if (w) await w.terminate();
  }

  /** @internal */
  alive(generation: number): boolean {
    return this.worker !== undefined && this.generation === generation;
  }

  /** @internal */
  call(req: WithoutId<ServeRequest>, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.closed) return Promise.reject(gridError('DISPOSED', 'the model thread was closed'));
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      // The thread keeps the process alive only while somebody waits for it.
      if (this.calls.size === 0) worker.ref();
      this.calls.set(id, { resolve, reject });
      worker.postMessage({ ...req, id }, transfer);
    });
  }

  private start(): Worker {
    const w = startThread({ mode: 'serve' });
    this.generation += 1;
    this.worker = w;
    w.on('message', (m: { id: number; result?: unknown; error?: WireError }) => {
      const c = this.calls.get(m.id);
      if (!c) return;
      this.calls.delete(m.id);
      if (this.calls.size === 0) w.unref();
      if (m.error) c.reject(GridError.fromWire(m.error));
      else c.resolve(m.result);
    });
    const stopped = (why: string) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.failAll(gridError('INTERNAL', `the model thread stopped (${why}); try again`));
    };
    w.on('error', (err) => stopped(err.message));
    w.on('exit', (code) => stopped(`exit ${code}`));
    // Sessions held while nobody waits must not keep a process alive (call() refs it while waiting).
    w.unref();
    return w;
  }

  private failAll(err: GridError): void {
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const c of calls) c.reject(err);
  }
}

class WorkerModelHandle implements ModelHandle {
  private disposing: Promise<void> | undefined;

  constructor(
    private readonly owner: ModelWorker,
    private readonly session: number,
    readonly signature: ModelSignature,
    readonly byteLength: number,
    private readonly generation: number,
  ) {}

  get disposed(): boolean {
    return this.disposing !== undefined || !this.owner.alive(this.generation);
  }

  async run(feeds: NamedTensors, opts: RunOptions = {}): Promise<NamedTensors> {
    if (this.disposing) throw gridError('DISPOSED', 'the model session was disposed');
    if (opts.signal?.aborted) throw gridError('ABORTED', 'inference was aborted before it started');
    // Bad feeds get their named error here, without a trip to the thread.
    if (opts.feedsChecked !== true) checkFeeds(this.signature, feeds);
    if (!this.owner.alive(this.generation)) throw gridError('INTERNAL', 'the model thread holding this session stopped; try again');
    return await this.owner.call({
      op: 'run', session: this.session, feeds,
      ...(opts.outputs !== undefined && { outputs: [...opts.outputs] }),
      ...(opts.maxOutputBytes !== undefined && { maxOutputBytes: opts.maxOutputBytes }),
    }) as NamedTensors;
  }

  dispose(): Promise<void> {
    this.disposing ??= this.owner.alive(this.generation)
      ? this.owner.call({ op: 'dispose', session: this.session }).then(() => undefined, () => undefined)
      : Promise.resolve();
    return this.disposing;
  }
}
