// The grid node: one HTTP server carrying the WebSocket protocol (GridServer), /health and /metrics,
// over a data dir holding the metadata database, the model blobs and in-flight uploads.
// Used by the grid-node CLI and started embedded by the extension.

import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { gridError } from '../core/errors';
import { silentLogger, type Logger } from '../core/logger';
import { GridRouter, GridServer } from '../core/rpc/server';
import { Auth } from './auth';
import { DatasetStore, type DatasetSpec } from './datasets';
import { NodeEvents } from './events';
import { registerHandlers, type NodeIdentity } from './handlers';
import { attachTraining, type NodeTraining } from './training';
import { NodeMetrics } from './metrics';
import { ModelStore } from './models';
import { HeldOutputs, resolveInferenceLimits, type InferenceLimits } from './inference';
import { PeerLinks } from './peers';
import { MetaDb } from './store/db';
import { BlobStore } from './store/blobs';
import { lockDataDir, type DataDirLock } from './store/lock';

export const NODE_VERSION = '0.1.0';
export const DEFAULT_PORT = 5000;
export const DEFAULT_HOST = '127.0.0.1';

/** The per-user data folder: $XDG_DATA_HOME/grid-workbench/node, ~/.local/share/… otherwise (%LOCALAPPDATA% on Windows). */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_DATA_HOME) return path.join(env.XDG_DATA_HOME, 'grid-workbench', 'node');
  if (process.platform === 'win32' && env.LOCALAPPDATA) return path.join(env.LOCALAPPDATA, 'grid-workbench', 'node');
  return path.join(os.homedir(), '.local', 'share', 'grid-workbench', 'node');
}

export interface GridNodeOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  dataDir?: string;
  /** Shown to clients by get-id; the machine's host name by default. */
  name?: string;
  logger?: Logger;
  /** First-run password of `admin`; GRID_ADMIN_PASSWORD by default, generated when neither is set. */
  adminPassword?: string;
  /** Datasets registered (or refreshed) at start. */
  datasets?: readonly DatasetSpec[];
  /** Largest WebSocket frame (uploads are chunked below it). */
  maxPayload?: number;
  /** How long an interrupted upload stays resumable. */
  uploadTtlMs?: number;
  maxUploadBytes?: number;
  /** Memory budget of cached onnxruntime sessions. */
  sessionCacheBytes?: number;
  sessionTtlMs?: number;
  heartbeatMs?: number;
  /** Process-level metrics (CPU, heap, event loop) on /metrics; on by default. */
  processMetrics?: boolean;
  /** Bounds of remote inference (output bytes, string inputs, big outputs sent as downloads); docs/node.md "Inference limits". */
  inference?: Partial<InferenceLimits>;
}

export class GridNode {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  readonly identity: NodeIdentity;
  /** Set only on the run that created `admin` with a generated password: show it once. */
  readonly initialAdminPassword: string | undefined;
  readonly auth: Auth;
  readonly models: ModelStore;
  readonly datasets: DatasetStore;
  readonly events: NodeEvents;
  readonly peers: PeerLinks;
  readonly metrics: NodeMetrics;
  /** Training jobs (src/node/training). */
  readonly training: NodeTraining;
  private readonly http: http.Server;
  private readonly grid: GridServer;
  private readonly db: MetaDb;
  private readonly lock: DataDirLock;
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  /** Run on close, after the WebSocket server closed (parts the constructor does not hold). */
  private readonly closeHooks: (() => void)[] = [];
  private closing: Promise<void> | undefined;

  private constructor(parts: {
    host: string; port: number; dataDir: string; identity: NodeIdentity; initialAdminPassword: string | undefined; auth: Auth;
    models: ModelStore; datasets: DatasetStore; events: NodeEvents; peers: PeerLinks; metrics: NodeMetrics; training: NodeTraining;
    http: http.Server; grid: GridServer; db: MetaDb; lock: DataDirLock; log: Logger;
  }) {
    this.host = parts.host;
    this.port = parts.port;
    this.url = `ws://${parts.host.includes(':') ? `[${parts.host}]` : parts.host}:${parts.port}`;
    this.dataDir = parts.dataDir;
    this.identity = parts.identity;
    this.initialAdminPassword = parts.initialAdminPassword;
    this.auth = parts.auth;
    this.models = parts.models;
    this.datasets = parts.datasets;
    this.events = parts.events;
    this.peers = parts.peers;
    this.metrics = parts.metrics;
    this.training = parts.training;
    this.http = parts.http;
    this.grid = parts.grid;
    this.db = parts.db;
    this.lock = parts.lock;
    this.log = parts.log;
  }

  static async start(opts: GridNodeOptions = {}): Promise<GridNode> {
    const log = opts.logger ?? silentLogger;
    const host = opts.host ?? DEFAULT_HOST;
    const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
    const dbFile = path.join(dataDir, 'meta.db');
    const lock = lockDataDir(dataDir, [MetaDb.lockDirOf(dbFile)]);
    const cleanups: (() => unknown)[] = [() => lock.release()];
    try {
      const db = new MetaDb(dbFile);
      cleanups.unshift(() => db.close());
      let id = db.getMeta('node_id');
      if (id === undefined) { id = randomUUID(); db.setMeta('node_id', id); }
      const identity: NodeIdentity = { id, name: opts.name ?? os.hostname(), version: NODE_VERSION };
      const auth = new Auth(db, { ...(opts.sessionTtlMs !== undefined && { sessionTtlMs: opts.sessionTtlMs }) });
      const initialAdminPassword = await auth.ensureAdmin(opts.adminPassword ?? process.env.GRID_ADMIN_PASSWORD);
      const blobs = new BlobStore(dataDir);
      const models = new ModelStore(db, blobs, log, { ...(opts.sessionCacheBytes !== undefined && { sessionCacheBytes: opts.sessionCacheBytes }) });
      cleanups.unshift(() => models.close());
      const datasets = new DatasetStore(db);
      const events = new NodeEvents();
      const metrics = new NodeMetrics({ defaultMetrics: opts.processMetrics ?? true });
      const peers = new PeerLinks({ self: identity, events, log });
      cleanups.unshift(() => peers.close());
      for (const spec of opts.datasets ?? []) {
        const { info, added } = await datasets.register(spec);
        log.info({ dataset: info.id, format: info.format, rows: info.schema.rows, added }, 'dataset registered');
      }
      metrics.models.set(models.list().length);
      metrics.datasets.set(datasets.list().length);

      let where = `${host}:${opts.port ?? DEFAULT_PORT}`;
      const inferenceLimits = resolveInferenceLimits(opts.inference);
      const held = new HeldOutputs(inferenceLimits);
      cleanups.unshift(() => held.close());
      const router = registerHandlers(new GridRouter(), { identity, auth, models, datasets, events, peers, metrics, inference: { limits: inferenceLimits, held }, where: () => where });
      const training = attachTraining(router, { db, models, datasets, events, metrics, dataDir, log, where: () => where });
      cleanups.unshift(() => training.close());
      const grid = new GridServer({
        router,
        logger: log,
        uploadsDir: path.join(dataDir, 'uploads'),
        ...(opts.maxPayload !== undefined && { maxPayload: opts.maxPayload }),
        ...(opts.uploadTtlMs !== undefined && { uploadTtlMs: opts.uploadTtlMs }),
        ...(opts.maxUploadBytes !== undefined && { maxUploadBytes: opts.maxUploadBytes }),
        ...(opts.heartbeatMs !== undefined && { heartbeatMs: opts.heartbeatMs }),
        onRequest: (type, ms, code) => metrics.observeRequest(type, ms, code),
        // Uploads only ever become models, and hosting needs a session: refuse the bytes up front.
        authorizeUpload: (connection) => {
          if (typeof connection.session.user !== 'string') {
            throw gridError('UNAUTHENTICATED', 'uploading a model needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)');
          }
        },
        authenticate: async (data, connection) => {
          const s = 'token' in data ? auth.resume(data.token) : await auth.login(data.username, data.password);
          connection.session.user = s.user;
          connection.session.role = s.role;
          log.info({ user: s.user, connection: connection.id }, 'authenticated');
          return { token: s.token, user: s.user, expires_at: s.expires_at };
        },
      });
      cleanups.unshift(() => grid.close());
      const server = http.createServer();
      // Requests are served only once the node object exists (listen happens before it is built).
      const ref: { node?: GridNode } = {};
      server.on('request', (req, res) => { void ref.node?.onHttp(req, res); });
      server.on('upgrade', (req, socket, head) => {
        if (ref.node === undefined) { socket.destroy(); return; }
        grid.handleUpgrade(req, socket, head);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.port ?? DEFAULT_PORT, host, () => { server.off('error', reject); resolve(); });
      }).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EADDRINUSE'
          ? gridError('PORT_IN_USE', `port ${opts.port} on ${host} is in use by another program; pass --port 0 to pick a free one`)
          : err;
      });
      const port = (server.address() as AddressInfo).port;
      where = `${host}:${port}`;
      const node = new GridNode({ host, port, dataDir, identity, initialAdminPassword, auth, models, datasets, events, peers, metrics, training, http: server, grid, db, lock, log });
      node.closeHooks.push(() => held.close());
      ref.node = node;
      log.info({ url: node.url, dataDir, id, models: models.list().length, datasets: datasets.list().length }, 'grid node listening');
      return node;
    } catch (err) {
      for (const c of cleanups) {
        try { await c(); } catch { /* best effort while failing */ }
      }
      throw err;
    }
  }

  get connectionCount(): number {
    return this.grid.connections.size;
  }

  /** Registers a dataset while running and tells subscribers. */
  async registerDataset(spec: DatasetSpec) {
    const { info } = await this.datasets.register(spec);
    this.metrics.datasets.set(this.datasets.list().length);
    this.events.emit({ event: 'dataset-added', dataset: info });
    return info;
  }

  private async onHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://node');
    try {
      if (req.method === 'POST' && url.pathname === '/search') {
        // PyGrid's dataset search: {"query": [tags]} → {"content": bool}.
        const body = await readJsonBody(req, 64 * 1024);
        const query = (body as { query?: unknown } | undefined)?.query;
        if (!Array.isArray(query) || query.some((q) => typeof q !== 'string')) {
          return send(res, 400, { error: { code: 'GRID_ERR_INVALID_MESSAGE', message: 'POST /search takes {"query": ["tag", …]}' } });
        }
        return send(res, 200, { content: this.datasets.search(query as string[]).length > 0 });
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return send(res, 405, { error: { code: 'GRID_ERR_INVALID_MESSAGE', message: `${req.method} is not supported; the node speaks WebSocket at ${this.url}` } });
      }
      if (url.pathname === '/health') {
        return send(res, 200, {
          status: 'ok', id: this.identity.id, name: this.identity.name, version: this.identity.version,
          uptime_s: Math.round((Date.now() - this.startedAt) / 1000), connections: this.grid.connections.size,
          models: this.models.list().length, datasets: this.datasets.list().length,
        });
      }
      if (url.pathname === '/metrics') {
        this.metrics.connections.set(this.grid.connections.size);
        const text = await this.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(text);
        return;
      }
      // PyGrid's read-only HTTP routes, for old scripts that poll them.
      if (url.pathname === '/models/' || url.pathname === '/models') return send(res, 200, { success: true, models: this.models.list().map((m) => m.id) });
      if (url.pathname === '/dataset-tags') return send(res, 200, [...new Set(this.datasets.list().flatMap((d) => d.tags))].sort());
      send(res, 404, { error: { code: 'GRID_ERR_NOT_FOUND', message: `no route ${url.pathname}; try /health, /metrics, or a WebSocket at ${this.url}` } });
    } catch (err) {
      this.log.error({ err }, 'http handler failed');
      send(res, 500, { error: { code: 'GRID_ERR_INTERNAL', message: (err as Error).message } });
    }
  }

  /** Stops accepting, closes connections and peers, flushes and closes the database; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.log.info({ url: this.url }, 'grid node shutting down');
      const httpClosed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      await this.grid.close();
      for (const hook of this.closeHooks) hook();
      await this.training.close();
      this.http.closeAllConnections();
      await httpClosed;
      await this.peers.close();
      await this.models.close();
      this.db.close();
      this.lock.release();
    })();
    return this.closing;
  }
}

async function readJsonBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  let size = 0;
  const parts: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > limit) return undefined;
    parts.push(c);
  }
  try { return JSON.parse(Buffer.concat(parts).toString('utf8')); } catch { return undefined; }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

