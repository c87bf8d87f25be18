// Hosted models: metadata in SQLite, bytes in the blob store, sessions in a memory-bounded cache. A model
// id has versions 1..N (a row each); `name` means the latest, `name@N` one version (core/protocol/messages.ts).
// Ordering for crash safety: validate → blob renamed into place → metadata row committed. Delete runs the
// other way round. A crash in between leaves only an unreferenced blob, swept at the next start. A blob dir
// shared by replicas is never unlinked on delete: the shared sweep removes the blob once no row names it.

import * as fsp from 'node:fs/promises';
import { gridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { ID_PATTERN, parseModelRef, type ModelInfo, type ModelSignature } from '../core/protocol/messages';
import type { NamedTensors } from '../core/protocol/tensor';
import { loadModel, type ModelHandle, type RunOptions } from '../compute/backend';
import { SessionCache } from '../compute/session-cache';
import { outputsFollowInputShapes } from '../compute/signature';
import { checkModelFile, IN_THREAD_MODEL_BYTES, ModelWorker } from '../compute/model-worker';
import { sizeGuardOf, type SizeGuard } from '../compute/size-guard';
import type { BlobStore } from './store/blobs';
import { RECONNECTED, type Row, type Store } from './store/sql';

/** Meta key of the models generation (shared database only), and the channel that announces it. */
const GENERATION = 'models_generation';
/** A generation no database has: the cache is re-read on the next fresh(). */
const STALE = -1;
const CHANNEL = 'models';

/** One session per version and bytes: `name@N#sha256`. */
/** Made once per model row (a hot path: every inference request looks its session up by it). */
const sessionKeys = new WeakMap<ModelInfo, string>();
function sessionKey(info: ModelInfo): string {
  let key = sessionKeys.get(info);
  if (key === undefined) {
    key = `${info.id}@${info.version}#${info.sha256}`;
    sessionKeys.set(info, key);
  }
  return key;
}

/** Models up to this size are read for sizes their inputs decide (compute/size-guard.ts); bigger ones rely on the check after the run. */
const GUARDED_MODEL_BYTES = 16 * 1024 * 1024;

export function checkModelId(id: string): void {
  if (!ID_PATTERN.test(id)) {
    throw gridError('INVALID_ID', `model id ${shown(id)} must be 1-128 characters of A-Z a-z 0-9 . _ - (no slashes, spaces or path parts)`, { model_id: id.slice(0, 200) });
  }
  if (id === '.' || id === '..') throw gridError('INVALID_ID', `model id ${JSON.stringify(id)} is a path part, not a name`);
}

/** A model ref (`name`, the latest version, or `name@N`), parsed; GRID_ERR_INVALID_ID for anything else. */
export function checkModelRef(ref: string): { id: string; version?: number } {
  const parsed = parseModelRef(ref);
  if (parsed !== undefined) return parsed;
  const at = ref.lastIndexOf('@');
  // A bad id keeps the id rule's own message; a bad version part says what a version looks like.
  if (at < 0 || parseModelRef(ref.slice(0, at)) === undefined) checkModelId(at < 0 ? ref : ref.slice(0, at));
  throw gridError('INVALID_ID', `model ${shown(ref)}: a version is written name@N with N a whole number from 1 (e.g. digits-mlp@2)`, { model_id: ref.slice(0, 200) });
}

function shown(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

function rowToInfo(r: Row): ModelInfo {
  const info: ModelInfo = {
    id: String(r.id), name: String(r.name), version: String(r.version), signature: JSON.parse(String(r.signature)) as ModelSignature,
    size: Number(r.size), sha256: String(r.sha256), allow_download: Number(r.allow_download) === 1,
    allow_remote_inference: Number(r.allow_remote_inference) === 1, owner: String(r.owner), created: String(r.created),
  };
  if (r.parent !== null && r.parent !== undefined) info.parent = String(r.parent);
  if (r.job_id !== null && r.job_id !== undefined) info.job_id = String(r.job_id);
  return info;
}

export interface HostModelInput {
  id: string;
  name?: string;
  /** The version number to store (above every version the model has had); the next one by default. */
  version?: number;
  /** Add a version when the model exists; without it an existing id is ALREADY_EXISTS. */
  newVersion?: boolean;
  /** Lineage: the version it was made from (`name@N`), and the training job that made it. */
  parent?: string;
  jobId?: string;
  allowDownload: boolean;
  allowRemoteInference: boolean;
  owner: string;
  /** The owner is an admin: may add versions to anyone's model. */
  admin?: boolean;
  /** A complete, sha256-verified file this store now owns (an upload). */
  file: string;
  sha256: string;
  size: number;
  /**
   * Writes rows that belong with the model (a trained model's record) in the same transaction as its
   * metadata row, so a crash leaves both or neither.
   */
  alongside?(info: ModelInfo): Promise<void>;
}

export interface ModelStoreOptions {
  sessionCacheBytes?: number;
  /**
   * onnxruntime's threads per inference (intra-op); compute/backend's default (the machine's cores, at most 4)
   * otherwise, with small runs of small models on one thread (smallRunsOnOneThread).
   */
  intraOpThreads?: number;
}

export class ModelStore {
  private readonly db: Store;
  private readonly blobs: BlobStore;
  private readonly sessions: SessionCache;
  /** Aborted on close: a model check still running on its worker thread is stopped, not waited for. */
  private readonly closing = new AbortController();
  private readonly thread = new ModelWorker();
  /** New ids being hosted right now, so two uploads creating one id do not both load a model. */
  private readonly pending = new Set<string>();
  /**
   * The metadata rows, kept in memory (inference reads them per call): per model id, its versions
   * oldest first. On a shared database, re-read whenever `generation` moved (fresh()).
   */
  private readonly byId = new Map<string, ModelInfo[]>();
  /** Per model id, the highest version number it has had: numbers are not reused while the model exists. */
  private readonly lastVersion = new Map<string, number>();
  /** Per session key: the sizes a request's values decide (compute/size-guard.ts), read when the model loads. */
  private readonly guards = new Map<string, SizeGuard | undefined>();
  /** Per session key, the version it loads (the model thread decision reads its signature). */
  private readonly keyInfo = new Map<string, ModelInfo>();
  /** Shared database only: the models generation the cache was read at, and a re-read under way. */
  private generation = 0;
  private reading: Promise<void> | undefined;
  /** The read after the one under way, shared by every request that asked meanwhile. */
  private queued: Promise<void> | undefined;
  private readonly unlisten: (() => void)[] = [];

  /** Opens the store over `db`: reads the rows, and (embedded only) sweeps blobs no row names. */
  static async open(db: Store, blobs: BlobStore, log: Logger, opts: ModelStoreOptions = {}): Promise<ModelStore> {
    const store = new ModelStore(db, blobs, opts);
    await store.reload();
    // A shared database: another replica's change (or a notification connection that came back) is
    // re-read in the background too, so what is served without a request (HTTP /models, /health) follows.
    if (db.kind !== 'embedded') {
      const refresh = () => { void store.fresh()?.catch((err: unknown) => log.warn({ err: (err as Error).message }, 're-reading the models after another replica changed them failed')); };
      store.unlisten.push(db.listen(CHANNEL, refresh), db.listen(RECONNECTED, refresh));
    }
    // A shared blob dir holds blobs other replicas adopted and have not committed a row for yet.
    if (db.kind === 'embedded') await store.sweepBlobs(log);
    return store;
  }

  /**
   * Removes the blobs no row names (left by a kill between adopting a blob and committing its row, or in
   * the middle of a delete). Only at start, and only on a blob dir no other process adds to.
   */
  async sweepBlobs(log: Logger): Promise<void> {
    const swept = this.blobs.sweep(new Set((await this.db.all('SELECT DISTINCT sha256 FROM models')).map((r) => String(r.sha256))));
    if (swept > 0) log.info({ swept }, 'removed model blobs left by an interrupted upload or delete');
  }

  private constructor(db: Store, blobs: BlobStore, opts: ModelStoreOptions) {
    this.db = db;
    this.blobs = blobs;
    // Big models load and run on a thread of their own, so the node's event loop never waits on them. So do
    // models whose output size depends on input values (ConstantOfShape, Range …): a run asking for a huge
    // output then allocates it off the event loop, and the size check refuses it before it crosses over.
    this.sessions = new SessionCache({
      maxBytes: opts.sessionCacheBytes ?? 1024 ** 3,
      // Left to its default thread count, a small model's small runs (batch-1 inference) skip the thread pool.
      loadOptions: opts.intraOpThreads !== undefined ? { intraOpNumThreads: opts.intraOpThreads } : { smallRunsOnOneThread: true },
      load: (bytes, options, key) => (bytes.byteLength > IN_THREAD_MODEL_BYTES || !this.boundedByShapes(key) ? this.thread.load(bytes, options) : loadModel(bytes, options)),
    });
  }

  /** Reads every row into the cache (in one snapshot, so the generation, rows and names agree). */
  private async reload(): Promise<void> {
    const { rows, names, generation } = await this.db.transaction(async () => {
      // PostgreSQL's default (READ COMMITTED) gives each statement its own snapshot: rows newer than the
      // generation read with them. SQLite's transaction is one snapshot; so is this.
      if (this.db.kind === 'postgres') await this.db.run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      const read = Number(await this.db.getMeta(GENERATION) ?? 0);
      return {
        generation: read,
        rows: await this.db.all(`SELECT * FROM models ORDER BY ${this.db.textOrder('id')}, version`),
        names: await this.db.all('SELECT id, last_version FROM model_names'),
      };
    });
    this.byId.clear();
    this.lastVersion.clear();
    for (const r of rows) {
      const info = rowToInfo(r);
      this.byId.set(info.id, [...(this.byId.get(info.id) ?? []), info]);
    }
    for (const r of names) this.lastVersion.set(String(r.id), Number(r.last_version));
    this.generation = generation;
  }

  /**
   * Makes the cache current before a request reads it. The embedded store has one writer, this process:
   * nothing to do (undefined, so callers stay synchronous). On a shared database: one read of the
   * generation, and a re-read of the rows when another replica changed them.
   */
  fresh(): Promise<void> | undefined {
    if (this.db.kind === 'embedded') return undefined;
    if (this.reading === undefined) return (this.reading = this.check());
    // The read under way may have begun before a commit this request follows (its client saw another
    // replica's reply first): the next read, which all who ask meanwhile share, is the one that counts.
    this.queued ??= this.reading.catch(() => undefined).then(() => {
      this.queued = undefined;
      return this.reading ?? (this.reading = this.check());
    });
    return this.queued;
  }

  private async check(): Promise<void> {
    try {
      const now = Number(await this.db.getMeta(GENERATION) ?? 0);
      if (now !== this.generation) await this.reload();
    } finally {
      this.reading = undefined;
    }
  }

  /** Shared database: moves the generation in the current transaction; returns it. */
  private async bump(): Promise<number | undefined> {
    if (this.db.kind === 'embedded') return undefined;
    const row = await this.db.get(`INSERT INTO meta (key, value) VALUES ('${GENERATION}', '1')
      ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT) RETURNING value`);
    // Sent at commit: the other replicas re-read before anyone asks them.
    await this.db.notify(CHANNEL, String(row!.value));
    return Number(row!.value);
  }

  /**
   * After a change committed at `generation`: whether the cache should take the change itself. It should
   * when it was current up to the change before (then it is current again), or on the embedded store. A
   * cache already at or past `generation` was re-read after the commit (another replica's notification
   * can come first) and has the change: patching it with the rows read under the change's lock would put
   * back what it no longer is (a version another replica added meanwhile, dropped). A cache further behind
   * takes the patch, so this replica answers its own change at once, and is re-read by the next fresh().
   */
  private bumped(generation: number | undefined): boolean {
    if (generation === undefined) return true;
    if (generation === this.generation + 1) {
      this.generation = generation;
      return true;
    }
    if (this.generation >= generation) return false;
    this.generation = STALE;
    return true;
  }

  /** Each model's latest version (with its version count), by id; with `allVersions`, every version, oldest first. */
  list(opts: { allVersions?: boolean } = {}): ModelInfo[] {
    const ids = [...this.byId.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return ids.flatMap((id) => {
      const versions = this.byId.get(id)!;
      return (opts.allVersions ? versions : [versions.at(-1)!]).map((v) => this.described(v));
    });
  }

  /** How many models (ids) the node hosts; each may have several versions. */
  get count(): number {
    return this.byId.size;
  }

  /** The version a ref names: `name` → its latest, `name@N` → version N. GRID_ERR_NOT_FOUND when missing. */
  get(ref: string): ModelInfo {
    return this.described(this.find(ref));
  }

  /**
   * Like get, without the version count and latest version (a copy of the record per call): for
   * run-inference, which reads only the record and runs per request.
   */
  find(ref: string): Readonly<ModelInfo> {
    const { id, version } = checkModelRef(ref);
    const versions = this.byId.get(id);
    if (versions === undefined) throw gridError('NOT_FOUND', `no model "${id}" on this node`, { model_id: id });
    if (version === undefined) return versions.at(-1)!;
    const info = versions.find((v) => Number(v.version) === version);
    if (info === undefined) {
      throw gridError('NOT_FOUND', `model "${id}" has no version ${version} on this node; its versions are ${versions.map((v) => v.version).join(', ')}`, { model_id: id, version: String(version) });
    }
    return info;
  }

  has(ref: string): boolean {
    const parsed = parseModelRef(ref);
    const versions = parsed && this.byId.get(parsed.id);
    if (versions === undefined) return false;
    return parsed!.version === undefined || versions.some((v) => Number(v.version) === parsed!.version);
  }

  /**
   * Whether `user` may add a version to model `id`: an admin, or whoever owns one of its versions. Anyone
   * else adding one would change what every user's `name` runs.
   */
  mayAddVersion(id: string, user: string, admin: boolean): boolean {
    return admin || (this.byId.get(id)?.some((v) => v.owner === user) ?? true);
  }

  /** The version number a new version of `id` would get now. */
  nextVersion(id: string): number {
    return (this.lastVersion.get(id) ?? 0) + 1;
  }

  /** With the version count and latest version, which change as versions come and go. */
  private described(info: ModelInfo): ModelInfo {
    const versions = this.byId.get(info.id) ?? [info];
    return { ...info, versions: versions.length, latest_version: versions.at(-1)!.version };
  }

  /** Refuses a version number that is taken, was used before, or is not above the model's latest. */
  private checkVersion(input: HostModelInput, recheck: boolean): void {
    const exists = this.byId.has(input.id);
    const explicit = input.version;
    if (exists && !input.newVersion && explicit === undefined) {
      throw gridError('ALREADY_EXISTS', `a model "${input.id}" is already on this node; host the bytes as its next version (new_version: true, grid serve --new-version), delete it first or choose another id`, { model_id: input.id });
    }
    if (exists && !this.mayAddVersion(input.id, input.owner, input.admin === true)) {
      throw gridError('FORBIDDEN', `model "${input.id}" belongs to ${this.byId.get(input.id)!.at(-1)!.owner}: only its owner or an admin adds versions to it; host the bytes under another id`, { model_id: input.id });
    }
    if (!recheck && !exists && this.pending.has(input.id) && !input.newVersion) {
      throw gridError('ALREADY_EXISTS', `a model "${input.id}" is being hosted on this node right now; host the bytes as its next version (new_version: true) or choose another id`, { model_id: input.id });
    }
    if (explicit !== undefined && explicit < this.nextVersion(input.id)) {
      const taken = this.has(`${input.id}@${explicit}`);
      throw gridError(taken ? 'ALREADY_EXISTS' : 'INVALID_INPUT', `model "${input.id}" ${taken ? `already has a version ${explicit}` : `has had versions up to ${this.nextVersion(input.id) - 1}`}; a new version must be ${this.nextVersion(input.id)} or above (or leave the version out)`, { model_id: input.id, version: String(explicit) });
    }
  }

  /** Validates the model by loading it, then stores it as a version of its id. The input file is consumed either way. */
  async host(input: HostModelInput): Promise<ModelInfo> {
    let creating = false;
    try {
      checkModelId(input.id);
      if (input.version !== undefined && !(Number.isSafeInteger(input.version) && input.version >= 1 && input.version <= 999_999_999)) {
        throw gridError('INVALID_INPUT', `version ${input.version} is not a version number: versions are whole numbers from 1 (1, 2, 3…)`, { model_id: input.id });
      }
      this.checkVersion(input, false);
      if (!this.byId.has(input.id) && !this.pending.has(input.id)) {
        creating = true;
        this.pending.add(input.id);
      }
      const signature = await this.validate(input.file);
      // Checked again: another upload may have stored a version of this id while this one loaded.
      this.checkVersion(input, true);
      await this.blobs.adopt(input.file, input.sha256);
      const made = {
        id: input.id, name: input.name ?? this.byId.get(input.id)?.at(-1)?.name ?? input.id, signature, size: input.size, sha256: input.sha256,
        allow_download: input.allowDownload, allow_remote_inference: input.allowRemoteInference, owner: input.owner, created: new Date().toISOString(),
        ...(input.parent !== undefined && { parent: input.parent }),
        ...(input.jobId !== undefined && { job_id: input.jobId }),
      };
      const { info, version, generation } = await this.db.transaction(async () => {
        // The number is taken in the database (its model_names row, locked until commit), so two uploads
        // of one id at once, through this replica or another, get two numbers.
        const taken = input.version !== undefined
          ? await this.db.get(`INSERT INTO model_names (id, last_version) VALUES (?, ?) ON CONFLICT (id) DO UPDATE
              SET last_version = CASE WHEN excluded.last_version > model_names.last_version THEN excluded.last_version ELSE model_names.last_version END
              RETURNING last_version`, [input.id, input.version])
          : await this.db.get(`INSERT INTO model_names (id, last_version) VALUES (?, 1) ON CONFLICT (id) DO UPDATE
              SET last_version = model_names.last_version + 1 RETURNING last_version`, [input.id]);
        const number = input.version ?? Number(taken!.last_version);
        if (input.version === undefined && !input.newVersion && number !== 1) {
          throw gridError('ALREADY_EXISTS', `a model "${input.id}" was just hosted on this node; host the bytes as its next version (new_version: true) or choose another id`, { model_id: input.id });
        }
        const row: ModelInfo = { ...made, version: String(number) };
        await this.db.run(`INSERT INTO models (id, version, name, signature, size, sha256, allow_download, allow_remote_inference, owner, created, parent, job_id)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [row.id, number, row.name, JSON.stringify(signature), row.size, row.sha256, row.allow_download ? 1 : 0, row.allow_remote_inference ? 1 : 0, row.owner, row.created, row.parent ?? null, row.job_id ?? null]);
        // Committed with the model's row (a trained model's record): never one without the other after a crash.
        await input.alongside?.(row);
        return { info: row, version: number, generation: await this.bump() };
      });
      // On a shared database the re-read that this commit's own notification starts may have cached the
      // row already (seen under load: delete then said "has 2 versions (1, 1)"): then it is not patched in.
      if (!this.bumped(generation)) return this.described(info);
      const others = (this.byId.get(info.id) ?? []).filter((v) => v.version !== info.version);
      this.byId.set(info.id, [...others, info].sort((a, b) => Number(a.version) - Number(b.version)));
      this.lastVersion.set(info.id, Math.max(version, this.lastVersion.get(info.id) ?? 0));
      return this.described(info);
    } finally {
      if (creating) this.pending.delete(input.id);
      await fsp.rm(input.file, { force: true });
    }
  }

  private async validate(file: string): Promise<ModelSignature> {
    // Loading is the only honest check that bytes are a model onnxruntime can run. It runs on a worker
    // thread, so the node keeps answering everyone else meanwhile; the trial session ends with it.
    const s = await checkModelFile(file, {}, this.closing.signal);
    return { inputs: s.inputs.map((v) => ({ ...v, dims: [...v.dims] })), outputs: s.outputs.map((v) => ({ ...v, dims: [...v.dims] })) };
  }

  /**
   * Inside a transaction that changes model `id`: takes its model_names row (host() takes it first too, so
   * every writer of one id, on any replica, queues here), then reads its versions, oldest first, as this
   * transaction will commit them. NOT_FOUND when another replica deleted the model meanwhile.
   */
  private async lockedVersions(id: string): Promise<{ versions: ModelInfo[]; last: number }> {
    const name = await this.db.get('UPDATE model_names SET last_version = last_version WHERE id = ? RETURNING last_version', [id]);
    const versions = name === undefined ? [] : (await this.db.all('SELECT * FROM models WHERE id = ? ORDER BY version', [id])).map(rowToInfo);
    if (versions.length === 0) throw gridError('NOT_FOUND', `no model "${id}" on this node`, { model_id: id });
    return { versions, last: Number(name!.last_version) };
  }

  /**
   * After a committed change to model `id`: its cache entry becomes the rows that transaction read under
   * its lock, so a version another replica committed before it is kept (a snapshot taken before the
   * transaction would drop it, and the generation would claim the cache current).
   */
  private settle(id: string, versions: ModelInfo[], last: number): void {
    if (versions.length > 0) {
      this.byId.set(id, versions);
      this.lastVersion.set(id, last);
    } else {
      this.byId.delete(id);
      this.lastVersion.delete(id);
    }
  }

  /** The version `version` of `versions` (the latest when undefined); NOT_FOUND as find() says it. */
  private static pick(id: string, versions: ModelInfo[], version: number | undefined): ModelInfo {
    if (version === undefined) return versions.at(-1)!;
    const info = versions.find((v) => Number(v.version) === version);
    if (info === undefined) {
      throw gridError('NOT_FOUND', `model "${id}" has no version ${version} on this node; its versions are ${versions.map((v) => v.version).join(', ')}`, { model_id: id, version: String(version) });
    }
    return info;
  }

  /**
   * Changes who else may download or run a model: `name@N` that version, a plain name every version (so
   * "who may use digits-mlp" has one answer). A flag left undefined keeps its value. Returns the versions
   * whose flags changed, as they now are.
   */
  async setPermissions(ref: string, flags: { allowDownload?: boolean; allowRemoteInference?: boolean }): Promise<ModelInfo[]> {
    const { id, version } = checkModelRef(ref);
    // What this replica knows (fresh per request) answers NOT_FOUND without a transaction; the versions
    // changed are the database's, read under the model's lock.
    this.get(ref);
    const apply = (v: ModelInfo): ModelInfo => ({
      ...v,
      allow_download: flags.allowDownload ?? v.allow_download,
      allow_remote_inference: flags.allowRemoteInference ?? v.allow_remote_inference,
    });
    const { versions, last, changed, generation } = await this.db.transaction(async () => {
      const locked = await this.lockedVersions(id);
      const chosen = new Set(version === undefined ? locked.versions : [ModelStore.pick(id, locked.versions, version)]);
      for (const v of chosen) {
        const next = apply(v);
        await this.db.run('UPDATE models SET allow_download = ?, allow_remote_inference = ? WHERE id = ? AND version = ?', [next.allow_download ? 1 : 0, next.allow_remote_inference ? 1 : 0, v.id, Number(v.version)]);
      }
      return {
        versions: locked.versions.map((v) => (chosen.has(v) ? apply(v) : v)),
        last: locked.last,
        changed: [...chosen].filter((v) => apply(v).allow_download !== v.allow_download || apply(v).allow_remote_inference !== v.allow_remote_inference).map((v) => v.version),
        generation: await this.bump(),
      };
    });
    if (this.bumped(generation)) this.settle(id, versions, last);
    return changed.map((n) => this.get(`${id}@${n}`));
  }


  /**
   * Deletes the version a ref names, or with `allVersions` every version of the model. A plain name of a
   * model with several versions needs `allVersions`: deleting "the latest" by its name alone would quietly
   * roll the model back. Returns what was deleted, oldest first.
   */
  async delete(ref: string, opts: { allVersions?: boolean } = {}): Promise<ModelInfo[]> {
    const { id, version } = checkModelRef(ref);
    const explicit = version !== undefined;
    this.get(ref);
    if (opts.allVersions && explicit) throw gridError('INVALID_INPUT', `all_versions deletes every version of a model: name it "${id}", not "${ref}"`, { model_id: ref });
    // Decided on the database's versions under the model's lock, not on this replica's cache: a version
    // another replica added meanwhile is neither deleted with "every version" unasked nor dropped from the cache.
    const { gone, left, last, generation } = await this.db.transaction(async () => {
      const locked = await this.lockedVersions(id);
      const target = ModelStore.pick(id, locked.versions, version);
      if (!opts.allVersions && !explicit && locked.versions.length > 1) {
        throw gridError('INVALID_INPUT', `model "${id}" has ${locked.versions.length} versions (${locked.versions.map((v) => v.version).join(', ')}): delete one as ${id}@N, or all of them with all_versions (grid delete ${id} --all)`, { model_id: id, versions: locked.versions.map((v) => v.version) });
      }
      const gone = opts.allVersions || !explicit ? [...locked.versions] : [target];
      const left = locked.versions.filter((v) => !gone.includes(v));
      for (const v of gone) await this.db.run('DELETE FROM models WHERE id = ? AND version = ?', [v.id, Number(v.version)]);
      // A model with no version left is gone, name and all: hosting the id again starts at version 1.
      if (left.length === 0) await this.db.run('DELETE FROM model_names WHERE id = ?', [id]);
      return { gone, left, last: locked.last, generation: await this.bump() };
    });
    if (this.bumped(generation)) this.settle(id, left, last);
    for (const v of gone) {
      const key = sessionKey(v);
      await this.sessions.delete(key);
      this.guards.delete(key);
      this.keyInfo.delete(key);
      // A shared blob dir's blob is left to the shared sweep (grace period and pins): another replica may
      // have pinned and reused it for a row it has not committed yet, which no query here can see.
      if (!this.blobs.shared && !await this.usesBlob(v.sha256)) await this.blobs.remove(v.sha256);
    }
    return gone.map((v) => ({ ...v, versions: left.length, ...(left.length > 0 && { latest_version: left.at(-1)!.version }) }));
  }

  private async usesBlob(sha256: string): Promise<boolean> {
    // A shared database: another replica's model may name the same bytes.
    if (this.db.kind !== 'embedded') return await this.db.get('SELECT 1 AS x FROM models WHERE sha256 = ? LIMIT 1', [sha256]) !== undefined;
    for (const versions of this.byId.values()) if (versions.some((v) => v.sha256 === sha256)) return true;
    return false;
  }

  blobPath(ref: string): string {
    return this.blobs.pathOf(this.get(ref).sha256);
  }

  /** Reads `length` bytes at `offset` of a model's blob (download chunks). */
  async read(sha256: string, offset: number, length: number): Promise<Buffer> {
    const fh = await fsp.open(this.blobs.pathOf(sha256), 'r');
    try {
      const buf = Buffer.allocUnsafe(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return bytesRead === length ? buf : buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** Whether the model under this session key has output sizes that follow from its input shapes. */
  private boundedByShapes(key: string): boolean {
    const info = this.keyInfo.get(key);
    return info !== undefined && outputsFollowInputShapes(info.signature);
  }

  session(ref: string): Promise<ModelHandle> {
    return this.sessionOf(this.get(ref));
  }

  private sessionOf(info: ModelInfo, key = sessionKey(info)): Promise<ModelHandle> {
    this.keyInfo.set(key, info);
    return this.sessions.get(key, async () => {
      const bytes = await fsp.readFile(this.blobs.pathOf(info.sha256));
      // Read before the bytes may move to the model thread; a big graph is not decoded again here.
      if (bytes.byteLength <= GUARDED_MODEL_BYTES) this.guards.set(key, sizeGuardOf(bytes));
      return bytes;
    });
  }

  /** Runs a model version (resolved once, so a version stored meanwhile does not switch it mid-call); with `maxOutputBytes`, sizes its inputs' values decide are checked before the run. */
  run(ref: string | ModelInfo, feeds: NamedTensors, opts: RunOptions = {}): Promise<NamedTensors> {
    try {
      const info = typeof ref === 'string' ? this.find(ref) : ref;
      const key = sessionKey(info);
      const handle = this.sessions.loaded(key);
      // A loaded session's promise is returned as is: no async wrapper (a promise and a turn) per request.
      if (handle !== undefined) return this.runOn(handle, key, feeds, opts);
      return this.sessionOf(info, key).then((h) => this.runOn(h, key, feeds, opts));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private runOn(handle: ModelHandle, key: string, feeds: NamedTensors, opts: RunOptions): Promise<NamedTensors> {
    if (opts.maxOutputBytes !== undefined) this.guards.get(key)?.check(feeds, opts.maxOutputBytes);
    return handle.run(feeds, opts);
  }

  async close(): Promise<void> {
    for (const stop of this.unlisten.splice(0)) stop();
    this.closing.abort();
    await this.sessions.dispose();
    await this.thread.close();
  }
}
