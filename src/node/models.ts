// Hosted models: metadata in SQLite, bytes in the blob store, sessions in a memory-bounded cache.
// Ordering for crash safety: validate → blob renamed into place → metadata row committed. Delete runs the
// other way round. A crash in between leaves only an unreferenced blob, swept at the next start.

import * as fsp from 'node:fs/promises';
import { gridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { ID_PATTERN, type ModelInfo, type ModelSignature } from '../core/protocol/messages';
import type { NamedTensors } from '../core/protocol/tensor';
import { loadModel, outputsFollowInputShapes, SessionCache, type ModelHandle, type RunOptions } from '../compute/backend';
import { checkModelFile, IN_THREAD_MODEL_BYTES, ModelWorker } from '../compute/model-worker';
import { sizeGuardOf, type SizeGuard } from '../compute/size-guard';
import type { BlobStore } from './store/blobs';
import type { MetaDb, Row } from './store/db';

/** Models up to this size are read for sizes their inputs decide (compute/size-guard.ts); bigger ones rely on the check after the run. */
const GUARDED_MODEL_BYTES = 16 * 1024 * 1024;

export function checkModelId(id: string): void {
  if (!ID_PATTERN.test(id)) {
    throw gridError('INVALID_ID', `model id ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)} must be 1-128 characters of A-Z a-z 0-9 . _ - (no slashes, spaces or path parts)`, { model_id: id.slice(0, 200) });
  }
  if (id === '.' || id === '..') throw gridError('INVALID_ID', `model id ${JSON.stringify(id)} is a path part, not a name`);
}

function rowToInfo(r: Row): ModelInfo {
  return {
    id: String(r.id), name: String(r.name), version: String(r.version), signature: JSON.parse(String(r.signature)) as ModelSignature,
    size: Number(r.size), sha256: String(r.sha256), allow_download: Number(r.allow_download) === 1,
    allow_remote_inference: Number(r.allow_remote_inference) === 1, owner: String(r.owner), created: String(r.created),
  };
}

export interface HostModelInput {
  id: string;
  name?: string;
  version?: string;
  allowDownload: boolean;
  allowRemoteInference: boolean;
  owner: string;
  /** A complete, sha256-verified file this store now owns (an upload). */
  file: string;
  sha256: string;
  size: number;
  /**
   * Writes rows that belong with the model (a trained model's record) in the same transaction as its
   * metadata row, so a crash leaves both or neither.
   */
  alongside?(info: ModelInfo): void;
}

export class ModelStore {
  private readonly db: MetaDb;
  private readonly blobs: BlobStore;
  private readonly sessions: SessionCache;
  /** Aborted on close: a model check still running on its worker thread is stopped, not waited for. */
  private readonly closing = new AbortController();
  private readonly thread = new ModelWorker();
  /** Ids being hosted right now, so two uploads under one id do not both load a model. */
  private readonly pending = new Set<string>();
  /** The metadata rows, kept in memory: this process owns the database, and inference reads them per call. */
  private readonly byId = new Map<string, ModelInfo>();
  /** Per session key: the sizes a request's values decide (compute/size-guard.ts), read when the model loads. */
  private readonly guards = new Map<string, SizeGuard | undefined>();

  constructor(db: MetaDb, blobs: BlobStore, log: Logger, opts: { sessionCacheBytes?: number } = {}) {
    this.db = db;
    this.blobs = blobs;
    // Big models load and run on a thread of their own, so the node's event loop never waits on them. So do
    // models whose output size depends on input values (ConstantOfShape, Range …): a run asking for a huge
    // output then allocates it off the event loop, and the size check refuses it before it crosses over.
    this.sessions = new SessionCache({
      maxBytes: opts.sessionCacheBytes ?? 1024 ** 3,
      load: (bytes, options, key) => (bytes.byteLength > IN_THREAD_MODEL_BYTES || !this.boundedByShapes(key) ? this.thread.load(bytes, options) : loadModel(bytes, options)),
    });
    for (const r of this.db.all('SELECT * FROM models')) this.byId.set(String(r.id), rowToInfo(r));
    const swept = blobs.sweep(new Set(this.db.all('SELECT DISTINCT sha256 FROM models').map((r) => String(r.sha256))));
    if (swept > 0) log.info({ swept }, 'removed model blobs left by an interrupted upload or delete');
  }

  list(): ModelInfo[] {
    return [...this.byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get count(): number {
    return this.byId.size;
  }

  get(id: string): ModelInfo {
    checkModelId(id);
    const info = this.byId.get(id);
    if (info === undefined) throw gridError('NOT_FOUND', `no model "${id}" on this node`, { model_id: id });
    return info;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Validates the model by loading it, then stores it. The input file is consumed either way. */
  async host(input: HostModelInput): Promise<ModelInfo> {
    try {
      checkModelId(input.id);
      if (this.has(input.id) || this.pending.has(input.id)) {
        throw gridError('ALREADY_EXISTS', `a model "${input.id}" is already on this node; delete it first or choose another id`, { model_id: input.id });
      }
      this.pending.add(input.id);
      try {
        const signature = await this.validate(input.file);
        await this.blobs.adopt(input.file, input.sha256);
        const info: ModelInfo = {
          id: input.id, name: input.name ?? input.id, version: input.version ?? '1', signature, size: input.size, sha256: input.sha256,
          allow_download: input.allowDownload, allow_remote_inference: input.allowRemoteInference, owner: input.owner, created: new Date().toISOString(),
        };
        this.db.transaction(() => {
          this.db.run(`INSERT INTO models (id, name, version, signature, size, sha256, allow_download, allow_remote_inference, owner, created)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          [info.id, info.name, info.version, JSON.stringify(signature), info.size, info.sha256, info.allow_download ? 1 : 0, info.allow_remote_inference ? 1 : 0, info.owner, info.created]);
          input.alongside?.(info);
        });
        this.byId.set(info.id, info);
        return info;
      } finally {
        this.pending.delete(input.id);
      }
    } finally {
      await fsp.rm(input.file, { force: true });
    }
  }

  private async validate(file: string): Promise<ModelSignature> {
    // Loading is the only honest check that bytes are a model onnxruntime can run. It runs on a worker
    // thread, so the node keeps answering everyone else meanwhile; the trial session ends with it.
    const s = await checkModelFile(file, {}, this.closing.signal);
    return { inputs: s.inputs.map((v) => ({ ...v, dims: [...v.dims] })), outputs: s.outputs.map((v) => ({ ...v, dims: [...v.dims] })) };
  }

  /** Changes who else may download or run a model; a flag left undefined keeps its value. */
  setPermissions(id: string, flags: { allowDownload?: boolean; allowRemoteInference?: boolean }): ModelInfo {
    const info = this.get(id);
    const next: ModelInfo = {
      ...info,
      allow_download: flags.allowDownload ?? info.allow_download,
      allow_remote_inference: flags.allowRemoteInference ?? info.allow_remote_inference,
    };
    this.db.run('UPDATE models SET allow_download = ?, allow_remote_inference = ? WHERE id = ?', [next.allow_download ? 1 : 0, next.allow_remote_inference ? 1 : 0, id]);
    this.byId.set(id, next);
    return next;
  }

  async delete(id: string): Promise<void> {
    const info = this.get(id);
    this.db.run('DELETE FROM models WHERE id = ?', [id]);
    this.byId.delete(id);
    await this.sessions.delete(`${id}@${info.sha256}`);
    this.guards.delete(`${id}@${info.sha256}`);
    if (![...this.byId.values()].some((m) => m.sha256 === info.sha256)) await this.blobs.remove(info.sha256);
  }

  blobPath(id: string): string {
    return this.blobs.pathOf(this.get(id).sha256);
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
    const info = this.byId.get(key.slice(0, key.lastIndexOf('@')));
    return info !== undefined && outputsFollowInputShapes(info.signature);
  }

  session(id: string): Promise<ModelHandle> {
    const info = this.get(id);
    const key = `${id}@${info.sha256}`;
    return this.sessions.get(key, async () => {
      const bytes = await fsp.readFile(this.blobs.pathOf(info.sha256));
      // Read before the bytes may move to the model thread; a big graph is not decoded again here.
      if (bytes.byteLength <= GUARDED_MODEL_BYTES) this.guards.set(key, sizeGuardOf(bytes));
      return bytes;
    });
  }

  /** Runs a model; with `maxOutputBytes`, sizes its inputs' values decide are checked before the run. */
  async run(id: string, feeds: NamedTensors, opts: RunOptions = {}): Promise<NamedTensors> {
    const handle = await this.session(id);
    if (opts.maxOutputBytes !== undefined) this.guards.get(`${id}@${this.get(id).sha256}`)?.check(feeds, opts.maxOutputBytes);
    return handle.run(feeds, opts);
  }


  async close(): Promise<void> {
    this.closing.abort();
    await this.sessions.dispose();
    await this.thread.close();
  }
}
