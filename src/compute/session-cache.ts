// Loaded sessions by key (a model id or sha256) under a memory budget, least recently used evicted first.
// Built on the seam's ModelHandle; where a session is loaded (this thread or a worker) is the caller's choice.

import { gridError } from '../core/errors';
import { loadModel, sessionsPerModel, type LoadModelOptions, type ModelHandle } from './backend';

export interface SessionCacheOptions {
  /** Memory budget for all cached sessions, estimated as model bytes × `factor` (× 2 for a model holding a second session). */
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
      // A small model may hold a second, single-threaded session (LoadModelOptions.smallRunsOnOneThread).
      const estimate = b.byteLength * this.factor * sessionsPerModel(b.byteLength, this.loadOptions);
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

  /**
   * The session for `key` if it is loaded and usable, marked most recently used; undefined otherwise (get()
   * loads it). Synchronous: a run on a loaded session does not wait a promise turn for its handle.
   */
  loaded(key: string): ModelHandle | undefined {
    const hit = this.entries.get(key);
    if (hit?.handle === undefined || hit.handle.disposed) return undefined;
    this.entries.delete(key);
    this.entries.set(key, hit);
    return hit.handle;
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
