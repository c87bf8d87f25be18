// The grid node: one HTTP server (or HTTPS, with a certificate) carrying the WebSocket protocol
// (GridServer), /health and /metrics, over a data dir holding the metadata database, the model blobs and
// in-flight uploads. Used by the grid-node CLI and started embedded by the extension.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { gridError, type GridError } from '../core/errors';
import { defaultDataDir, removeLocalNodeRecord, writeLocalNodeRecord } from '../core/local-node';
import { silentLogger, type Logger } from '../core/logger';
import { GridServer, type ConnectionLimits } from './rpc/server';
import type { UploadQuotas } from './rpc/uploads';
import { Auth, checkAdminPassword } from './auth';
import { noteClientAddress, parseTrustedProxies, type TrustedProxies } from './client-address';
import { corsHeaders, corsPolicy, originAllowed, originRefusal, preflight, requestOrigin, type CorsPolicy } from './cors';
import type { SignInLimitOptions } from './signin-limits';
import { DatasetStore, type DatasetSpec } from './datasets';
import { NodeEvents } from './events';
import { registerHandlers } from './handlers';
import { loadNodeIdentity, metaDbPins, type NodeIdentity } from './identity';
import { attachTraining, type NodeTraining, type TrainingOptions } from './training';
import { attachFl, flErrorData, type FlOptions, type NodeFl } from './fl';
import { NodeMetrics } from './metrics';
import { ModelStore } from './models';
import { HeldOutputs, resolveInferenceLimits, type InferenceLimits } from './inference';
import { PeerLinks } from './peers';
import { attachSmpc, type SmpcOptions } from './smpc';
import { attachSharedMemory, type SharedMemoryOptions } from './shm';
import { RedactingRouter } from './redacting-router';
import { tuneHeapGrowth } from './heap';
import { EmbeddedStore } from './store/db';
import { PostgresStore } from './store/postgres';
import type { Store } from './store/sql';
import { BlobStore } from './store/blobs';
import { BlobPins, SharedSweep } from './store/shared-sweep';
import { UploadRecords } from './store/upload-records';
import { lockDataDir, type DataDirLock } from './store/lock';

export const NODE_VERSION = '0.1.0';
export const DEFAULT_PORT = 5000;
export const DEFAULT_HOST = '127.0.0.1';

export { defaultDataDir } from '../core/local-node';

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
  /**
   * Threads onnxruntime gives one inference (intra-op); the machine's cores, at most 4, by default. Fewer
   * leave cores to other work on a shared machine (and make benchmarks compare like with like). Left to
   * the default, small runs of small models (batch-1 inference) run on one thread (compute/backend's
   * smallRunsOnOneThread): a thread-pool handoff costs them more than it saves.
   */
  intraOpThreads?: number;
  sessionTtlMs?: number;
  heartbeatMs?: number;
  /** Backoff of failed sign-ins (docs/node.md, "Quotas and sign-in limits"). */
  signInLimits?: SignInLimitOptions;
  /** Per-user upload quotas and the free-space margin (docs/node.md, "Quotas and sign-in limits"). */
  uploadQuotas?: UploadQuotas;
  /** Per-connection bounds (JSON size and depth, streams, pending requests, send buffer); documented defaults otherwise. */
  limits?: ConnectionLimits;
  /** Process-level metrics (CPU, heap, event loop) on /metrics; on by default. */
  processMetrics?: boolean;
  /**
   * Be this user's local node: once listening, write the runtime record (URL, pid, id, an admin
   * session token) to this file, mode 0600; remove it and revoke the token on close.
   */
  localRecordFile?: string;
  /**
   * The node's metadata in PostgreSQL (`postgres://user:password@host:port/db`) instead of the embedded
   * `<dataDir>/meta.db`: several replicas of one node share it (docs/replicas.md).
   */
  database?: string;
  /** Where model and checkpoint blobs live instead of `<dataDir>`: a directory every replica shares. */
  blobsDir?: string;
  /**
   * Replicas (`database` and `blobsDir`): a partial upload in the shared blob dir whose record has not moved
   * for this long is removed by the shared sweep. Default 24 h.
   */
  uploadExpiryMs?: number;
  /** Replicas: a blob in the shared blob dir that no row names is removed once this old (and unpinned this long). Default 1 h. */
  blobGraceMs?: number;
  /** The node's Ed25519 private key (PKCS#8 PEM) instead of `<dataDir>/node.key` (or, with `database`, the one in the database); never created. */
  keyFile?: string;
  /**
   * Browser origins (`https://app.example.org`) allowed to open a WebSocket or call the HTTP routes; none
   * by default. Clients outside a browser send no Origin and are always allowed.
   */
  allowOrigins?: readonly string[];
  /** Serve https and wss on the same port with this PEM certificate (chain) and private key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Bounds of remote inference (output bytes, string inputs, big outputs sent as downloads); docs/node.md "Inference limits". */
  inference?: Partial<InferenceLimits>;
  /** Encrypted serving (share holder and crypto provider): step timeout, limits; docs/smpc.md. */
  smpc?: SmpcOptions;
  /** Model-centric federated learning bounds (docs/federated-learning.md). */
  fl?: FlOptions;
  /** Shared memory for clients on this machine (docs/protocol.md "Shared memory"); on by default. */
  sharedMemory?: SharedMemoryOptions;
  /** Training jobs: how long a replica's claim on a job holds without its heartbeat (docs/replicas.md). */
  training?: TrainingOptions;
  /**
   * Reverse proxies whose X-Forwarded-For names the client (addresses, CIDR ranges, `loopback`): every
   * per-address limit then keys on the client, not the proxy (src/node/client-address.ts). None by default.
   */
  trustProxy?: readonly string[];
  /** Validate every reply before it is sent (GridServerOptions.checkReplies); default: GRID_CHECK_REPLIES=1. */
  checkReplies?: boolean;
}

/** True for an interface only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** True for the wildcard addresses that listen on every interface. */
export function isAllInterfaces(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

/**
 * The host a client should dial: the listening host, or for a wildcard (which is not an address one can
 * connect to from elsewhere) the machine's first non-internal IPv4 address, else the loopback.
 */
export function reachableHost(host: string): string {
  if (!isAllInterfaces(host)) return host;
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * The path of an HTTP request target, or undefined when the target is not one a node serves. Origin-form
 * (`/x`) is parsed under a fixed base, so `//x:y` is the path `//x:y`, not a host; absolute-form
 * (`http://h/x`) is accepted as HTTP/1.1 requires; `*` and authority-form are not routes.
 */
export function requestPath(target: string | undefined): string | undefined {
  if (target === undefined) return undefined;
  try {
    if (target.startsWith('/')) return new URL(`http://node${target}`).pathname;
    if (/^https?:\/\//i.test(target)) return new URL(target).pathname;
  } catch {
    return undefined;
  }
  return undefined;
}

/** Largest POST body the HTTP routes read (PyGrid's /search query). */
export const MAX_HTTP_BODY_BYTES = 64 * 1024;

/** Checks every option that could fail before anything is created, so a failed start leaves no data dir or meta.db. */
function checkOptions(opts: GridNodeOptions): { cors: CorsPolicy; trusted: TrustedProxies | undefined; secureContext: tls.SecureContextOptions | undefined } {
  if (opts.adminPassword !== undefined) checkAdminPassword(opts.adminPassword, 'the adminPassword option');
  else checkAdminPassword(process.env.GRID_ADMIN_PASSWORD, 'GRID_ADMIN_PASSWORD');
  const cors = corsPolicy(opts.allowOrigins ?? []);
  const trusted = opts.trustProxy !== undefined && opts.trustProxy.length > 0 ? parseTrustedProxies(opts.trustProxy) : undefined;
  if (opts.tls === undefined) return { cors, trusted, secureContext: undefined };
  const secureContext = { cert: opts.tls.cert, key: opts.tls.key };
  try {
    tls.createSecureContext(secureContext);
  } catch (err) {
    throw gridError('TLS_ERROR', `the TLS certificate and key cannot be used: ${(err as Error).message}; give a PEM certificate (--tls-cert) and its matching PEM private key (--tls-key)`);
  }
  return { cors, trusted, secureContext };
}

/** The local record's token lives as long as the node process; a year is just a bound on a forgotten session row. */
const LOCAL_TOKEN_TTL_MS = 365 * 24 * 3600 * 1000;

export class GridNode {
  readonly host: string;
  readonly port: number;
  /** ws://HOST:PORT, or wss:// with TLS; for a wildcard host, an address of this machine clients can dial. */
  readonly url: string;
  /** Serves https/wss. */
  readonly secure: boolean;
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
  /** Model-centric federated learning (src/node/fl). */
  readonly fl: NodeFl;
  /** Replicas (`database` and `blobsDir`): the sweep of the shared blob dir (runs on its own; `sweep()` runs it now). */
  readonly sharedSweep: SharedSweep | undefined;
  private readonly http: http.Server;
  private readonly cors: CorsPolicy;
  private readonly grid: GridServer;
  private readonly db: Store;
  private readonly lock: DataDirLock;
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  /** Run on close, after the WebSocket server closed (parts the constructor does not hold). */
  private readonly closeHooks: (() => void)[] = [];
  private closing: Promise<void> | undefined;
  private local: { file: string; token: string } | undefined;

  private constructor(parts: {
    host: string; port: number; dataDir: string; identity: NodeIdentity; initialAdminPassword: string | undefined; auth: Auth;
    models: ModelStore; datasets: DatasetStore; events: NodeEvents; peers: PeerLinks; metrics: NodeMetrics; training: NodeTraining; fl: NodeFl;
    sharedSweep: SharedSweep | undefined; http: http.Server; secure: boolean; cors: CorsPolicy; grid: GridServer; db: Store; lock: DataDirLock; log: Logger;
  }) {
    this.host = parts.host;
    this.port = parts.port;
    const dial = reachableHost(parts.host);
    this.url = `${parts.secure ? 'wss' : 'ws'}://${dial.includes(':') ? `[${dial}]` : dial}:${parts.port}`;
    this.secure = parts.secure;
    this.cors = parts.cors;
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
    this.fl = parts.fl;
    this.sharedSweep = parts.sharedSweep;
    this.http = parts.http;
    this.grid = parts.grid;
    this.db = parts.db;
    this.lock = parts.lock;
    this.log = parts.log;
  }

  static async start(opts: GridNodeOptions = {}): Promise<GridNode> {
    // Room for the frames in flight before V8 runs a full GC (heap.ts): a third of an FL report's CPU otherwise.
    tuneHeapGrowth();
    const log = opts.logger ?? silentLogger;
    const host = opts.host ?? DEFAULT_HOST;
    const { cors, trusted, secureContext } = checkOptions(opts);
    const dataDir = path.resolve(opts.dataDir ?? defaultDataDir());
    const dbFile = path.join(dataDir, 'meta.db');
    // A replica on PostgreSQL still owns its data dir (uploads in flight, temp files, its pid).
    const lock = lockDataDir(dataDir, opts.database === undefined ? [EmbeddedStore.lockDirOf(dbFile)] : []);
    const cleanups: (() => unknown)[] = [() => lock.release()];
    try {
      const db: Store = opts.database === undefined ? new EmbeddedStore(dbFile) : await PostgresStore.open({ url: opts.database, log });
      cleanups.unshift(() => db.close());
      const identity = await loadNodeIdentity({ db, dataDir, name: opts.name ?? os.hostname(), version: NODE_VERSION, log, ...(opts.keyFile !== undefined && { keyFile: opts.keyFile }) });
      const { id } = identity;
      const auth = new Auth(db, { ...(opts.sessionTtlMs !== undefined && { sessionTtlMs: opts.sessionTtlMs }), ...(opts.signInLimits && { signInLimits: opts.signInLimits }) });
      const initialAdminPassword = await auth.ensureAdmin(opts.adminPassword ?? process.env.GRID_ADMIN_PASSWORD);
      const blobsRoot = opts.blobsDir === undefined ? dataDir : path.resolve(opts.blobsDir);
      // Replicas share uploads in flight and sweep the blob dir together (docs/replicas.md); one process
      // keeps both in its data dir, and sweeps at start.
      const shared = db.kind === 'postgres' && opts.blobsDir !== undefined;
      // Temp files stay in the replica's own data dir: a shared blob dir's tmp would be cleared by every start.
      const blobs = new BlobStore(blobsRoot, { tmpDir: path.join(dataDir, 'tmp'), ...(shared && { pins: new BlobPins(db) }) });
      const models = await ModelStore.open(db, blobs, log, {
        ...(opts.sessionCacheBytes !== undefined && { sessionCacheBytes: opts.sessionCacheBytes }),
        ...(opts.intraOpThreads !== undefined && { intraOpThreads: opts.intraOpThreads }),
      });
      cleanups.unshift(() => models.close());
      // On PostgreSQL without --blobs the blobs are in this node's own (locked) data dir, which no other
      // replica adds to: swept at start as the embedded store's are (a kill mid-upload left no orphan there).
      if (db.kind !== 'embedded' && opts.blobsDir === undefined) await models.sweepBlobs(log);
      const datasets = new DatasetStore(db);
      const events = new NodeEvents();
      const unshare = events.share(db, log);
      cleanups.unshift(unshare);
      const metrics = new NodeMetrics({ defaultMetrics: opts.processMetrics ?? true });
      const peers = new PeerLinks({ self: identity, events, log, pins: metaDbPins(db), ...(opts.maxPayload !== undefined && { maxPayload: opts.maxPayload }) });
      cleanups.unshift(() => peers.close());
      for (const spec of opts.datasets ?? []) {
        const { info, added } = await datasets.register(spec);
        log.info({ dataset: info.id, format: info.format, rows: info.schema.rows, added }, 'dataset registered');
      }
      metrics.models.set(models.list().length);
      metrics.datasets.set((await datasets.list()).length);

      let where = `${host}:${opts.port ?? DEFAULT_PORT}`;
      // Handlers' errors reach clients without server paths (the node logs them with).
      const inferenceLimits = resolveInferenceLimits(opts.inference);
      const held = new HeldOutputs(inferenceLimits);
      cleanups.unshift(() => held.close());
      const router = registerHandlers(new RedactingRouter(dataDirRoots(dataDir), log, () => models.fresh()), { identity, auth, models, datasets, events, peers, metrics, inference: { limits: inferenceLimits, held }, where: () => where });
      const shm = attachSharedMemory(router, { models, metrics, inference: { limits: inferenceLimits, held }, log, where: () => where, ...(opts.sharedMemory !== undefined && { options: opts.sharedMemory }) });
      cleanups.unshift(() => shm.close());
      const training = await attachTraining(router, { db, models, datasets, events, metrics, dataDir, log, where: () => where, ...(opts.training !== undefined && { options: opts.training }) });
      cleanups.unshift(() => training.close());
      const smpc = await attachSmpc(router, { identity, peers, db, dataDir, events, log, where: () => where, ...(opts.smpc !== undefined && { options: opts.smpc }) });
      cleanups.unshift(() => smpc.close());
      const fl = await attachFl(router, { db, dataDir, blobsDir: blobsRoot, log, events, models, metrics, ...(opts.fl !== undefined && { options: opts.fl }) });
      cleanups.unshift(() => fl.close());
      const uploadsDir = shared ? path.join(blobsRoot, 'uploads') : path.join(dataDir, 'uploads');
      const uploadRecords = shared ? new UploadRecords(db, `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`) : undefined;
      let sharedSweep: SharedSweep | undefined;
      if (uploadRecords !== undefined) {
        const uploadExpiryMs = opts.uploadExpiryMs ?? 24 * 3600_000;
        const blobGraceMs = opts.blobGraceMs ?? 3600_000;
        sharedSweep = new SharedSweep({
          db, uploads: uploadRecords, uploadsDir, uploadExpiryMs, blobGraceMs, log,
          blobDirs: [
            { dir: blobs.dir, referencedSql: 'SELECT 1 AS x FROM models WHERE sha256 = ? LIMIT 1' },
            // FL checkpoints (fl/store.ts: <blobs>/fl/blobs, pinned like model blobs).
            { dir: path.join(blobsRoot, 'fl', 'blobs'), referencedSql: 'SELECT 1 AS x FROM fl_checkpoints WHERE sha256 = ? LIMIT 1' },
          ],
        });
        cleanups.unshift(() => sharedSweep!.close());
      }
      const grid = new GridServer({
        router,
        redactRoots: [...dataDirRoots(dataDir), ...(shared ? dataDirRoots(blobsRoot) : [])],
        logger: log,
        uploadsDir,
        ...(uploadRecords !== undefined && { uploadLedger: uploadRecords }),
        ...(opts.maxPayload !== undefined && { maxPayload: opts.maxPayload }),
        ...(opts.uploadTtlMs !== undefined && { uploadTtlMs: opts.uploadTtlMs }),
        ...(opts.maxUploadBytes !== undefined && { maxUploadBytes: opts.maxUploadBytes }),
        ...(opts.heartbeatMs !== undefined && { heartbeatMs: opts.heartbeatMs }),
        ...(opts.checkReplies !== undefined && { checkReplies: opts.checkReplies }),
        ...opts.limits,
        onRequest: (type, ms, code) => metrics.observeRequest(type, ms, code),
        errorData: flErrorData,
        // Uploads only ever become models, and hosting needs a session: refuse the bytes up front.
        ...(opts.uploadQuotas && { uploadQuotas: opts.uploadQuotas }),
        // Uploads only ever become models, and hosting needs a session: refuse the bytes up front. The
        // upload is charged to the user (per-user quotas).
        authorizeUpload: (connection) => {
          if (typeof connection.session.user !== 'string') {
            throw gridError('UNAUTHENTICATED', 'uploading a model needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)');
          }
          return connection.session.user;
        },
        authenticate: async (data, connection) => {
          const s = await auth.signIn(data, connection.remoteAddress);
          connection.session.user = s.user;
          connection.session.role = s.role;
          log.info({ user: s.user, connection: connection.id }, 'authenticated');
          // The role lets a client offer only what this user may do (the reply schema passes extra fields).
          return { token: s.token, user: s.user, role: s.role, expires_at: s.expires_at };
        },
      });
      cleanups.unshift(() => grid.close());
      const server: http.Server = secureContext ? https.createServer(secureContext) : http.createServer();
      // A client that half-closes after its request (sends it, then ends its side) still gets the answer
      // of a route that awaits the store: Node's HTTP server otherwise ends the socket at the client's
      // end. With this flag Node ends it after the response in flight (at once when none is).
      (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
      // Requests are served only once the node object exists (listen happens before it is built).
      const ref: { node?: GridNode } = {};
      // The one place a request's client address is decided (X-Forwarded-For from a trusted proxy); every
      // per-address limit reads it back with clientAddress(req).
      server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
        noteClientAddress(req, trusted);
        if (ref.node === undefined) { sendError(res, 503, gridError('BUSY', 'the node is starting; try again')); return; }
        void ref.node.onHttp(req, res);
      });
      const refusedOrigins = new Set<string>();
      server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        const remote = noteClientAddress(req, trusted);
        if (ref.node === undefined) { socket.destroy(); return; }
        const origin = requestOrigin(req.headers);
        if (!originAllowed(origin, cors)) {
          // Once per origin (bounded): a page can retry in a loop.
          if (refusedOrigins.size < 256 && !refusedOrigins.has(origin!)) {
            refusedOrigins.add(origin!);
            log.warn({ origin: origin!.slice(0, 200), remote }, 'refused a WebSocket from a web page whose origin is not allowed (--allow-origin)');
          }
          refuseRaw(socket, 403, originRefusal(origin!));
          return;
        }
        try {
          grid.handleUpgrade(req, socket, head);
        } catch (err) {
          log.error({ err }, 'websocket upgrade failed');
          socket.destroy();
        }
      });
      // CONNECT (a proxy request) is not a route: answer rather than drop the connection.
      server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
        refuseRaw(socket, 405, gridError('INVALID_MESSAGE', 'CONNECT is not supported; the node is not a proxy'));
      });
      if (secureContext) server.on('tlsClientError', (err: Error) => log.debug({ err: err.message }, 'TLS handshake with a client failed'));
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
      const node = new GridNode({ host, port, dataDir, identity, initialAdminPassword, auth, models, datasets, events, peers, metrics, training, fl, sharedSweep, http: server, secure: secureContext !== undefined, cors, grid, db, lock, log });
      node.closeHooks.push(() => held.close(), () => smpc.close(), () => shm.close(), unshare);
      ref.node = node;
      // A quarter of the shorter wait, so nothing outlives its expiry by much; within a second and an hour.
      sharedSweep?.start(Math.min(3600_000, Math.max(1000, Math.min(opts.uploadExpiryMs ?? 24 * 3600_000, opts.blobGraceMs ?? 3600_000) / 4)));
      if (opts.localRecordFile !== undefined) await node.writeLocalRecord(opts.localRecordFile);
      log.info({ url: node.url, host, tls: node.secure, allowOrigins: [...cors.allowOrigins], ...(trusted && { trustProxy: trusted.entries }), dataDir, id, models: models.list().length, datasets: (await datasets.list()).length, database: db.where }, 'grid node listening');
      if (!isLoopbackHost(host) && !node.secure) {
        log.warn({ host, url: node.url }, `the node listens on ${isAllInterfaces(host) ? 'all interfaces' : host} without TLS: passwords, tokens, models and tensors cross the network in the clear; give it --tls-cert and --tls-key, or put it behind a TLS proxy`);
      }
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
    this.metrics.datasets.set((await this.datasets.list()).length);
    this.events.emit({ event: 'dataset-added', dataset: info });
    return info;
  }

  /** Answers every request, whatever its target, method or headers; never rejects. */
  private async onHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      await this.serveHttp(req, res);
    } catch (err) {
      this.log.error({ err, method: req.method, url: req.url?.slice(0, 200) }, 'http handler failed');
      // The error's text can hold server paths: the client gets a fixed message, the log the rest.
      if (!res.headersSent) sendError(res, 500, gridError('INTERNAL', 'the node failed to answer this request; its log has the details'));
      else res.destroy();
    }
  }

  /** Writes the local node's runtime record (see src/core/local-node.ts), with a fresh admin token. */
  private async writeLocalRecord(file: string): Promise<void> {
    // A local node killed without its shutdown left its token valid: revoke it now.
    try {
      const old = JSON.parse(fs.readFileSync(file, 'utf8')) as { token?: unknown };
      if (typeof old.token === 'string') await this.auth.logout(old.token);
    } catch { /* no earlier record */ }
    const session = await this.auth.issueSession('admin', LOCAL_TOKEN_TTL_MS);
    this.local = { file, token: session.token };
    writeLocalNodeRecord(file, {
      url: this.url, pid: process.pid, node_id: this.identity.id, name: this.identity.name, data_dir: this.dataDir,
      token: session.token, user: session.user, started: new Date(this.startedAt).toISOString(),
    });
    this.log.info({ file }, 'local node record written');
  }

  private async serveHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const pathname = requestPath(req.url);
    const origin = requestOrigin(req.headers);
    const cors = corsHeaders(origin, this.cors);
    if (!originAllowed(origin, this.cors)) return sendError(res, 403, originRefusal(origin!), cors);
    if (pathname === undefined) {
      return sendError(res, 400, gridError('INVALID_MESSAGE', 'the request target is not a path the node serves; try /health, /metrics, or a WebSocket'), cors);
    }
    if (req.method === 'OPTIONS') {
      const p = preflight(req.headers, this.cors);
      if (p.status === 403) return sendError(res, 403, originRefusal(origin!), p.headers);
      res.writeHead(204, p.headers);
      res.end();
      return;
    }
    if (pathname.startsWith('/model-centric/') && await this.fl.http.handle(req, res, pathname, cors)) return;
    if (req.method === 'POST' && pathname === '/search') {
      // PyGrid's dataset search: {"query": [tags]} → {"content": bool}.
      const body = await readJsonBody(req, MAX_HTTP_BODY_BYTES);
      if (body === aborted) { res.destroy(); return; }
      if (body === tooLarge) {
        return sendError(res, 413, gridError('PAYLOAD_TOO_LARGE', `POST /search takes at most ${MAX_HTTP_BODY_BYTES} bytes`), { ...cors, connection: 'close' });
      }
      const query = (body as { query?: unknown } | undefined)?.query;
      if (!Array.isArray(query) || query.some((q) => typeof q !== 'string')) {
        return sendError(res, 400, gridError('INVALID_MESSAGE', 'POST /search takes {"query": ["tag", …]}'), cors);
      }
      return send(res, 200, { content: (await this.datasets.search(query as string[])).length > 0 }, cors);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return sendError(res, 405, gridError('INVALID_MESSAGE', `${req.method} is not supported; the node speaks WebSocket at ${this.url}`), { ...cors, allow: 'GET, HEAD, POST, OPTIONS' });
    }
    if (pathname === '/health') {
      return send(res, 200, {
        status: 'ok', id: this.identity.id, name: this.identity.name, version: this.identity.version,
        uptime_s: Math.round((Date.now() - this.startedAt) / 1000), connections: this.grid.connections.size,
        models: this.models.list().length, datasets: (await this.datasets.list()).length,
      }, cors);
    }
    if (pathname === '/metrics') {
      this.metrics.connections.set(this.grid.connections.size);
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { ...cors, 'content-type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    // PyGrid's read-only HTTP routes, for old scripts that poll them.
    if (pathname === '/models/' || pathname === '/models') return send(res, 200, { success: true, models: this.models.list().map((m) => m.id) }, cors);
    if (pathname === '/dataset-tags') return send(res, 200, [...new Set((await this.datasets.list()).flatMap((d) => d.tags))].sort(), cors);
    const shown = pathname.length > 200 ? `${pathname.slice(0, 200)}…` : pathname;
    sendError(res, 404, gridError('NOT_FOUND', `no route ${shown}; try /health, /metrics, or a WebSocket at ${this.url}`), cors);
  }

  /** Stops accepting, closes connections and peers, flushes and closes the database; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.log.info({ url: this.url }, 'grid node shutting down');
      if (this.local !== undefined) {
        removeLocalNodeRecord(this.local.file, process.pid);
        await this.auth.logout(this.local.token).catch((err: unknown) => this.log.warn({ err }, 'revoking the local record\'s token failed'));
      }
      const httpClosed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      await this.grid.close();
      for (const hook of this.closeHooks) hook();
      await this.training.close();
      await this.fl.close();
      this.http.closeAllConnections();
      await httpClosed;
      await this.peers.close();
      await this.models.close();
      await this.sharedSweep?.close();
      await this.db.close();
      this.lock.release();
    })();
    return this.closing;
  }
}

/** The data dir as given and as the OS resolves it (e.g. /var → /private/var), for path redaction. */
function dataDirRoots(dataDir: string): string[] {
  try {
    return [dataDir, fs.realpathSync(dataDir)];
  } catch {
    return [dataDir];
  }
}

const tooLarge = Symbol('too large');
const aborted = Symbol('aborted');

/**
 * The body as JSON (undefined when it is not JSON), `tooLarge` past `limit` bytes (without reading the
 * rest), or `aborted` when the client went away first (not an error of the node: nothing to log).
 */
function readJsonBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve(tooLarge);
  return new Promise((resolve) => {
    let size = 0;
    const parts: Buffer[] = [];
    const done = (value: unknown) => {
      req.off('data', onData); req.off('end', onEnd); req.off('error', onGone); req.off('close', onGone);
      resolve(value);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) { req.pause(); done(tooLarge); return; }
      parts.push(c);
    };
    const onEnd = () => {
      try { done(JSON.parse(Buffer.concat(parts).toString('utf8'))); } catch { done(undefined); }
    };
    const onGone = () => done(aborted);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onGone);
    req.on('close', onGone);
  });
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** An HTTP error answer: the catalogue's wire form, `{"error": {code, message, details?}}`. */
function sendError(res: http.ServerResponse, status: number, err: GridError, headers: Record<string, string> = {}): void {
  send(res, status, { error: err.toWire() }, headers);
}

/** An HTTP answer written straight to a socket the HTTP server handed over (upgrade, CONNECT), then closed. */
function refuseRaw(socket: Duplex, status: number, err: GridError): void {
  // The HTTP server no longer watches this socket: without a listener an error here would end the process.
  socket.on('error', () => socket.destroy());
  const text = JSON.stringify({ error: err.toWire() });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json\r\n` +
    `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
}
