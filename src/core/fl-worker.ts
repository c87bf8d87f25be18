// FlWorker: a model-centric federated-learning worker on the shared GridSocket — KotlinSyft's SocketClient
// surface (authenticate, getCycle, report, joinRoom, sendInternalMessage, dispose/isDisposed, a 20 s
// timeout) plus a job object like syft.js's and KotlinSyft's (start → 'accepted' | 'rejected' | 'error',
// then report). Training is not done here (core has no onnxruntime): src/federation/fl-worker-training.ts
// trains the accepted cycle's model and calls job.report.
//
// Downloads (model, plans, protocols) go over the node's PyGrid HTTP routes (/model-centric/get-model …),
// as every PyGrid worker does: the node checks the request key there, the bodies stream at any size
// (no WebSocket frame limit), and no second download protocol is needed on the node.

import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import * as https from 'node:https';
import { GridError, gridError, isErrorCode, toGridError } from './errors';
import { measureSpeeds, type MeasuredSpeeds } from './fl-speed-test';
import type { Logger } from './logger';
import { FlAuthenticate, FlCycleRequest, FlListProcesses, FlReport, type FlProcessInfo } from './protocol/fl-messages';
import type { ReplyOf, RequestDef, RequestOf } from './protocol/catalogue';
import type { IncomingMessage } from './protocol/envelope';
import { encodeState, type StateTensor } from './protocol/syft-state';
import { GridSocket, type ConnectOptions } from './socket/grid-socket';
import type { ReconnectOptions } from './socket/backoff';

/** KotlinSyft's SocketClient default. */
export const FL_DEFAULT_TIMEOUT_MS = 20_000;
/** Largest model, plan or protocol a worker downloads. */
export const FL_MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;

export type FlAuthReply = ReplyOf<typeof FlAuthenticate>;
export type FlCycleReply = ReplyOf<typeof FlCycleRequest>;
export type FlAccepted = Extract<FlCycleReply, { status: 'accepted' }>;
export type FlRejected = Extract<FlCycleReply, { status: 'rejected' }>;

export interface FlWorkerOptions {
  /** Milliseconds to wait for each reply and each download's first byte. Default 20 000. */
  timeoutMs?: number;
  /** The node's HTTP address for downloads; by default the socket's address with ws → http, wss → https. */
  httpUrl?: string;
  /** Certificates to trust for an https:// node (as for the socket's wss://). */
  ca?: string | Buffer | (string | Buffer)[];
  maxDownloadBytes?: number;
  logger?: Logger;
}

export interface FlWorkerConnectOptions extends FlWorkerOptions {
  connect?: ConnectOptions;
  reconnect?: ReconnectOptions;
}

/** Speeds as a worker measured them (syft.js: ms and Mbit/s). Zeros when the process needs no speed test. */
export interface FlSpeeds { ping: number; download: number; upload: number }

/** A message another member of a room sent through the node (PyGrid's WebRTC signalling, reference §1.12). */
export interface FlRoomMessage {
  type: 'webrtc: join-room' | 'webrtc: peer-left' | 'webrtc: internal-message';
  data: Record<string, unknown>;
}

export const ROOM_TYPES: ReadonlySet<string> = new Set(['webrtc: join-room', 'webrtc: peer-left', 'webrtc: internal-message']);

/**
 * Events: 'room-message' (FlRoomMessage) for each signalling message the node relays to this worker.
 * On a shared socket (the extension's one connection per node) dispose() leaves the socket open.
 */
export class FlWorker extends EventEmitter<{ 'room-message': [FlRoomMessage] }> {
  readonly socket: GridSocket;
  readonly timeoutMs: number;
  private readonly ownsSocket: boolean;
  private readonly opts: FlWorkerOptions;
  private readonly offMessage: () => void;
  private readonly jobs = new Set<FlJob>();
  private disposed = false;

  constructor(socket: GridSocket, opts: FlWorkerOptions & { ownsSocket?: boolean } = {}) {
    super();
    const timeout = opts.timeoutMs ?? FL_DEFAULT_TIMEOUT_MS;
    if (!(Number.isFinite(timeout) && timeout > 0)) throw new RangeError(`opts.timeoutMs must be a positive number, got ${opts.timeoutMs}`);
    this.socket = socket;
    this.timeoutMs = timeout;
    this.ownsSocket = opts.ownsSocket ?? false;
    this.opts = opts;
    this.offMessage = socket.onMessage((m) => this.onSocketMessage(m));
  }

  /** Opens its own socket to `url` (CLI, scripts); dispose() closes it. */
  static async connect(url: string, opts: FlWorkerConnectOptions = {}): Promise<FlWorker> {
    const socket = new GridSocket({ ...(opts.logger !== undefined && { logger: opts.logger }) });
    try {
      await socket.connect(url, { ...(opts.ca !== undefined && { ca: opts.ca }), ...opts.connect }, opts.reconnect ?? {});
    } catch (err) {
      socket.dispose();
      throw err;
    }
    return new FlWorker(socket, { ...opts, ownsSocket: true });
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Stops listening, abandons jobs' pending work; closes the socket only if this worker opened it. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.offMessage();
    for (const job of this.jobs) job.dispose();
    this.jobs.clear();
    this.removeAllListeners();
    if (this.ownsSocket) this.socket.dispose();
  }

  // --- KotlinSyft's SocketClient ---------------------------------------------------------------------

  /** Joins an FL process; the node answers with this worker's id (and whether it must run a speed test). */
  authenticate(req: { modelName: string; modelVersion?: string; authToken?: string }): Promise<FlAuthReply> {
    return this.request(FlAuthenticate, {
      model_name: req.modelName,
      ...(req.modelVersion !== undefined && { model_version: req.modelVersion }),
      ...(req.authToken !== undefined && { auth_token: req.authToken }),
    });
  }

  /** Asks for a place in the process's current cycle: accepted with a request key, or rejected with the reason. */
  getCycle(req: { workerId: string; modelName: string; modelVersion?: string; speeds?: FlSpeeds }): Promise<FlCycleReply> {
    const s = req.speeds ?? { ping: 0, download: 0, upload: 0 };
    return this.request(FlCycleRequest, {
      worker_id: req.workerId, model: req.modelName,
      ...(req.modelVersion !== undefined && { version: req.modelVersion }),
      ping: s.ping, download: s.download, upload: s.upload,
    });
  }

  /**
   * Sends a cycle's diff (old − new, PyGrid's convention) as a base64 syft-proto State. `numSamples`
   * weights it in the average (PyGrid workers, who do not send it, count 1). Idempotent per request key.
   */
  report(req: { workerId: string; requestKey: string; diff: readonly StateTensor[] | Uint8Array; numSamples?: number }): Promise<ReplyOf<typeof FlReport>> {
    if (req.numSamples !== undefined && !(Number.isFinite(req.numSamples) && req.numSamples > 0)) {
      return Promise.reject(new RangeError(`numSamples must be a positive number, got ${req.numSamples}`));
    }
    const bytes = req.diff instanceof Uint8Array ? req.diff : encodeState(req.diff);
    return this.request(FlReport, {
      worker_id: req.workerId, request_key: req.requestKey, diff: Buffer.from(bytes).toString('base64'),
      ...(req.numSamples !== undefined && { num_samples: req.numSamples }),
    });
  }

  /**
   * Joins a signalling room (PyGrid's "scope"); members' messages arrive as 'room-message' events. Resolves
   * with the members already there (the node's reply; PyGrid's gateway answered nothing: no peers).
   */
  async joinRoom(req: { workerId: string; scopeId: string }): Promise<{ peers: string[] }> {
    const reply = await this.request('webrtc: join-room', { workerId: req.workerId, scopeId: req.scopeId });
    const peers = (reply as { peers?: unknown } | undefined)?.peers;
    return { peers: Array.isArray(peers) ? peers.filter((p): p is string => typeof p === 'string') : [] };
  }

  /** Leaves a room; its other members get `webrtc: peer-left`. */
  async leaveRoom(req: { workerId: string; scopeId: string }): Promise<void> {
    await this.request('webrtc: peer-left', { workerId: req.workerId, scopeId: req.scopeId });
  }

  /** Relays a WebRTC offer / answer / candidate to one member of the room (syft.js's message shape). */
  async sendInternalMessage(req: { workerId: string; scopeId: string; to: string; type: 'offer' | 'answer' | 'candidate'; data: unknown }): Promise<void> {
    await this.request('webrtc: internal-message', { workerId: req.workerId, scopeId: req.scopeId, to: req.to, type: req.type, data: req.data });
  }

  /**
   * PyGrid's speed test against the node (syft.js's units: ms, Mbit/s), for processes with minimum
   * speeds. `bytes` timed each way (default 8 MiB).
   */
  speedTest(req: { workerId: string; bytes?: number; pings?: number; signal?: AbortSignal }): Promise<MeasuredSpeeds> {
    if (this.disposed) return Promise.reject(gridError('DISPOSED', 'this FlWorker was disposed; create a new one'));
    let base: URL;
    try {
      base = this.httpBase();
    } catch (err) {
      return Promise.reject(toGridError(err, 'INVALID_URL'));
    }
    return measureSpeeds(base, req.workerId, {
      timeoutMs: this.timeoutMs,
      ...(req.bytes !== undefined && { bytes: req.bytes }), ...(req.pings !== undefined && { pings: req.pings }),
      ...(this.opts.ca !== undefined && { ca: this.opts.ca }), ...(req.signal !== undefined && { signal: req.signal }),
    });
  }

  /**
   * What the node says of an FL process before joining it (our nodes' fl-list-processes: its model's
   * format, configs, cycle): the process `modelVersion` names, else the last hosted with that name.
   * Undefined when the node has no such process, or does not answer this message (a PyGrid node).
   */
  async processInfo(req: { modelName: string; modelVersion?: string }): Promise<FlProcessInfo | undefined> {
    let processes: FlProcessInfo[];
    try {
      ({ processes } = await this.request(FlListProcesses, {}));
    } catch (err) {
      if (err instanceof GridError && err.code === 'GRID_ERR_UNKNOWN_TYPE') return undefined;
      throw err;
    }
    const named = processes.filter((p) => p.name === req.modelName && (req.modelVersion === undefined || p.version === req.modelVersion));
    return named.reduce<FlProcessInfo | undefined>((last, p) => (last === undefined || p.model_id > last.model_id ? p : last), undefined);
  }

  // --- downloads (PyGrid's HTTP routes) --------------------------------------------------------------

  /** The process's current checkpoint, as the accepted cycle's request key allows. */
  downloadModel(req: { workerId: string; requestKey: string; modelId: number; signal?: AbortSignal }): Promise<Uint8Array> {
    return this.httpGet('model-centric/get-model', { worker_id: req.workerId, request_key: req.requestKey, model_id: String(req.modelId) }, req.signal);
  }

  /** A plan of the process as its host gave it (`receive_operations_as`: list, tfjs, torchscript…). */
  downloadPlan(req: { workerId: string; requestKey: string; planId: number; receiveOperationsAs?: string; signal?: AbortSignal }): Promise<Uint8Array> {
    return this.httpGet('model-centric/get-plan', {
      worker_id: req.workerId, request_key: req.requestKey, plan_id: String(req.planId), receive_operations_as: req.receiveOperationsAs ?? 'list',
    }, req.signal);
  }

  downloadProtocol(req: { workerId: string; requestKey: string; protocolId: number; signal?: AbortSignal }): Promise<Uint8Array> {
    return this.httpGet('model-centric/get-protocol', { worker_id: req.workerId, request_key: req.requestKey, protocol_id: String(req.protocolId) }, req.signal);
  }

  /**
   * A checkpoint of a process by name (PySyft's ModelCentricFLClient.get_model, PyGrid's retrieve-model):
   * `latest` by default, or a number or alias. No request key: checkpoints are what a process publishes.
   */
  retrieveModel(req: { name: string; version?: string; checkpoint?: number | string; signal?: AbortSignal }): Promise<Uint8Array> {
    return this.httpGet('model-centric/retrieve-model', {
      name: req.name, ...(req.version !== undefined && { version: req.version }), checkpoint: String(req.checkpoint ?? 'latest'),
    }, req.signal);
  }

  // --- jobs ------------------------------------------------------------------------------------------

  /** A job for one FL process (syft.js `newJob`, KotlinSyft `newJob`); start() runs its cycles one at a time. */
  newJob(req: { modelName: string; modelVersion?: string; authToken?: string }): FlJob {
    if (this.disposed) throw gridError('DISPOSED', 'this FlWorker was disposed; create a new one');
    const job = new FlJob(this, req);
    this.jobs.add(job);
    return job;
  }

  /** @internal */
  forget(job: FlJob): void {
    this.jobs.delete(job);
  }

  // --- plumbing --------------------------------------------------------------------------------------

  private request<D extends RequestDef<any, any>>(def: D, data: RequestOf<D>): Promise<ReplyOf<D>>;
  private request(type: string, data: unknown): Promise<unknown>;
  private request(def: RequestDef<any, any> | string, data: unknown): Promise<unknown> {
    if (this.disposed) return Promise.reject(gridError('DISPOSED', 'this FlWorker was disposed; create a new one'));
    return typeof def === 'string' ? this.socket.request(def, data, { timeout: this.timeoutMs }) : this.socket.request(def, data, { timeout: this.timeoutMs });
  }

  private onSocketMessage(m: IncomingMessage): void {
    // Relayed signalling comes from the node unasked: no request id of ours.
    if (!ROOM_TYPES.has(m.type) || m.request_id !== undefined) return;
    const data = m.data !== null && typeof m.data === 'object' ? m.data as Record<string, unknown> : {};
    this.emit('room-message', { type: m.type as FlRoomMessage['type'], data });
  }

  /** The node's HTTP base: the option, else the socket's address with ws → http (its path kept, for proxies). */
  private httpBase(): URL {
    if (this.opts.httpUrl !== undefined) return new URL(this.opts.httpUrl.endsWith('/') ? this.opts.httpUrl : `${this.opts.httpUrl}/`);
    const ws = this.socket.status.url;
    if (ws === undefined) throw gridError('NOT_CONNECTED', 'the FL worker\'s socket has no node address yet: connect it first');
    const u = new URL(ws);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    if (!u.pathname.endsWith('/')) u.pathname += '/';
    u.search = '';
    return u;
  }

  private httpGet(route: string, query: Record<string, string>, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.disposed) return Promise.reject(gridError('DISPOSED', 'this FlWorker was disposed; create a new one'));
    let url: URL;
    try {
      url = new URL(route, this.httpBase());
    } catch (err) {
      return Promise.reject(toGridError(err, 'INVALID_URL'));
    }
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    return httpGetBytes(url, {
      timeoutMs: this.timeoutMs,
      maxBytes: this.opts.maxDownloadBytes ?? FL_MAX_DOWNLOAD_BYTES,
      ...(this.opts.ca !== undefined && { ca: this.opts.ca }),
      ...(signal !== undefined && { signal }),
    });
  }
}

/** What an accepted cycle hands the trainer: the node's reply and the downloaded model and plans. */
export interface FlCycle {
  workerId: string;
  requestKey: string;
  /** The node's accept reply (model, version, model_id, plans, protocols, client_config). */
  accepted: FlAccepted;
  clientConfig: Record<string, unknown>;
  /** The current checkpoint: an ONNX model (processes hosted from ONNX) or a syft-proto State. */
  model: Uint8Array;
  /** The host's plans by name, as the `list` variant (or the job's `receiveOperationsAs`). */
  plans: Record<string, Uint8Array>;
}

export interface FlRejection {
  reason: string;
  /** PyGrid's timedelta string until the cycle ends, when one is known. */
  timeout?: string;
  /** The same in seconds (read from the string: PyGrid sends only that). */
  timeoutS?: number;
}

export interface FlStartOptions {
  /** Speeds measured elsewhere (skips the job's own speed test). */
  speeds?: FlSpeeds;
  /** Bytes timed each way by the job's own speed test. Default 8 MiB. */
  speedTestBytes?: number;
  /** The plans' variant to download (list, tfjs, torchscript…). Default list. */
  receiveOperationsAs?: string;
}

export type FlJobOutcome = { status: 'accepted'; cycle: FlCycle } | ({ status: 'rejected' } & FlRejection) | { status: 'error'; error: GridError };

/**
 * One worker's part in an FL process: start() authenticates (once), asks for a cycle, downloads the model
 * and plans when accepted, and emits 'accepted' (FlCycle), 'rejected' (FlRejection) or 'error' (GridError);
 * it also resolves with that outcome, and never rejects. report() sends the accepted cycle's diff.
 */
export class FlJob extends EventEmitter<{ accepted: [FlCycle]; rejected: [FlRejection]; error: [GridError] }> {
  readonly modelName: string;
  readonly modelVersion: string | undefined;
  private readonly worker: FlWorker;
  private readonly authToken: string | undefined;
  private readonly abort = new AbortController();
  private auth: FlAuthReply | undefined;
  private cycle: FlCycle | undefined;
  /** What the last cycle request carried, measured or given (undefined: no speed test was needed). */
  speeds: FlSpeeds | undefined;

  constructor(worker: FlWorker, req: { modelName: string; modelVersion?: string; authToken?: string }) {
    super();
    this.worker = worker;
    this.modelName = req.modelName;
    this.modelVersion = req.modelVersion;
    this.authToken = req.authToken;
  }

  /** What the node says of this job's process (FlWorker.processInfo), before asking for a cycle. */
  processInfo(): Promise<FlProcessInfo | undefined> {
    return this.worker.processInfo({ modelName: this.modelName, ...(this.modelVersion !== undefined && { modelVersion: this.modelVersion }) });
  }

  /** This worker's id on the node, once authenticated. */
  get workerId(): string | undefined {
    return this.auth?.worker_id;
  }

  /** The cycle accepted last and not yet reported. */
  get currentCycle(): FlCycle | undefined {
    return this.cycle;
  }

  /**
   * `speeds`: measured elsewhere; otherwise a process that requires a speed test gets one run here
   * (`speedTestBytes` each way), as syft.js and KotlinSyft do, and the measured speeds go with the request.
   */
  async start(opts: FlStartOptions = {}): Promise<FlJobOutcome> {
    let outcome: FlJobOutcome;
    try {
      outcome = await this.requestCycle(opts);
    } catch (err) {
      outcome = { status: 'error', error: toGridError(err) };
    }
    if (outcome.status === 'accepted') this.emit('accepted', outcome.cycle);
    else if (outcome.status === 'rejected') this.emit('rejected', { reason: outcome.reason, ...(outcome.timeout !== undefined && { timeout: outcome.timeout }), ...(outcome.timeoutS !== undefined && { timeoutS: outcome.timeoutS }) });
    // Like EventEmitter's own 'error', but never thrown at a job nobody listens to: start() resolves with it too.
    else if (this.listenerCount('error') > 0) this.emit('error', outcome.error);
    return outcome;
  }

  /** Sends the accepted cycle's diff (old − new) with the number of samples it was trained on. */
  async report(diff: readonly StateTensor[] | Uint8Array, numSamples?: number): Promise<void> {
    const cycle = this.cycle;
    if (cycle === undefined) throw gridError('INVALID_MESSAGE', `no accepted cycle to report for ${this.modelName}: start() the job and wait for 'accepted' first`);
    await this.worker.report({ workerId: cycle.workerId, requestKey: cycle.requestKey, diff, ...(numSamples !== undefined && { numSamples }) });
    this.cycle = undefined;
  }

  /** Abandons downloads in flight; the worker forgets the job. Idempotent. */
  dispose(): void {
    this.abort.abort(gridError('ABORTED', 'the FL job was disposed'));
    this.worker.forget(this);
    this.removeAllListeners();
  }

  private async requestCycle(opts: FlStartOptions): Promise<FlJobOutcome> {
    if (this.abort.signal.aborted) throw gridError('DISPOSED', `the FL job for ${this.modelName} was disposed; create a new one with worker.newJob()`);
    this.auth ??= await this.worker.authenticate({
      modelName: this.modelName,
      ...(this.modelVersion !== undefined && { modelVersion: this.modelVersion }),
      ...(this.authToken !== undefined && { authToken: this.authToken }),
    });
    const workerId = this.auth.worker_id;
    const speeds = opts.speeds ?? (this.auth.requires_speed_test
      ? await this.worker.speedTest({ workerId, signal: this.abort.signal, ...(opts.speedTestBytes !== undefined && { bytes: opts.speedTestBytes }) })
      : undefined);
    this.speeds = speeds;
    const reply = await this.worker.getCycle({
      workerId, modelName: this.modelName,
      ...(this.modelVersion !== undefined && { modelVersion: this.modelVersion }),
      ...(speeds !== undefined && { speeds }),
    });
    if (reply.status === 'rejected') {
      const seconds = reply.timeout === undefined ? undefined : timedeltaSeconds(reply.timeout);
      return { status: 'rejected', reason: reply.reason, ...(reply.timeout !== undefined && { timeout: reply.timeout }), ...(seconds !== undefined && { timeoutS: seconds }) };
    }
    const signal = this.abort.signal;
    const key = { workerId, requestKey: reply.request_key, signal };
    const [model, ...plans] = await Promise.all([
      this.worker.downloadModel({ ...key, modelId: reply.model_id }),
      ...Object.values(reply.plans).map((planId) => this.worker.downloadPlan({ ...key, planId, ...(opts.receiveOperationsAs !== undefined && { receiveOperationsAs: opts.receiveOperationsAs }) })),
    ]);
    const names = Object.keys(reply.plans);
    this.cycle = {
      workerId, requestKey: reply.request_key, accepted: reply, clientConfig: reply.client_config, model: model!,
      plans: Object.fromEntries(names.map((n, i) => [n, plans[i]!])),
    };
    return { status: 'accepted', cycle: this.cycle };
  }
}

/**
 * Seconds in Python's str(timedelta), as PyGrid sends a rejection's timeout: "H:MM:SS", "H:MM:SS.ffffff",
 * with "N day(s), " before it past a day (a bare number of seconds is read too: syft.js's docs say so).
 */
export function timedeltaSeconds(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  const m = /^(?:(-?\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$/.exec(t);
  if (m === null) return undefined;
  return Number(m[1] ?? 0) * 86_400 + Number(m[2]) * 3600 + Number(m[3]) * 60 + Number(m[4]);
}

/**
 * GET a binary body over http(s) with a first-byte timeout, a size bound and an abort signal. A refusal's
 * JSON body (PyGrid's {"error"}, with our "code") becomes a GridError carrying that code and message.
 */
export function httpGetBytes(url: URL, opts: { timeoutMs: number; maxBytes: number; ca?: FlWorkerOptions['ca']; signal?: AbortSignal }): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) { reject(toGridError(opts.signal.reason, 'ABORTED')); return; }
    const get = url.protocol === 'https:' ? https.get : http.get;
    let settled = false;
    const done = (err: GridError | undefined, bytes?: Uint8Array) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err); else resolve(bytes!);
    };
    const req = get(url, { timeout: opts.timeoutMs, ...(opts.ca !== undefined && { ca: opts.ca }) }, (res) => {
      const status = res.statusCode ?? 0;
      const declared = Number(res.headers['content-length'] ?? NaN);
      if (status === 200 && declared > opts.maxBytes) {
        res.destroy();
        done(gridError('PAYLOAD_TOO_LARGE', `${url.pathname} is ${declared} bytes; this worker takes at most ${opts.maxBytes}`));
        return;
      }
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > (status === 200 ? opts.maxBytes : 64 * 1024)) {
          res.destroy();
          done(gridError('PAYLOAD_TOO_LARGE', `${url.pathname} sent more than ${opts.maxBytes} bytes`));
          return;
        }
        parts.push(c);
      });
      res.on('error', (e) => done(gridError('CONNECTION_DROPPED', `${url.pathname}: the download broke off (${e.message})`)));
      res.on('end', () => {
        const body = Buffer.concat(parts);
        if (status === 200) { done(undefined, new Uint8Array(body.buffer, body.byteOffset, body.length)); return; }
        done(refusal(url, status, body, res.headers['x-grid-error-code']));
      });
    });
    req.on('timeout', () => req.destroy(gridError('TIMEOUT', `${url.host} did not answer ${url.pathname} within ${opts.timeoutMs} ms`)));
    req.on('error', (e) => done(e instanceof GridError ? e : gridError('NOT_CONNECTED', `${url.host}: ${url.pathname} failed (${e.message})`)));
    const onAbort = () => req.destroy(toGridError(opts.signal!.reason, 'ABORTED'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A refused download: PyGrid's {"error"} body, our code in the x-grid-error-code header (or the body, as before). */
function refusal(url: URL, status: number, body: Buffer, header: string | string[] | undefined): GridError {
  let parsed: { error?: unknown; code?: unknown } = {};
  try { parsed = JSON.parse(body.toString('utf8')) as typeof parsed; } catch { /* not JSON: the status says it */ }
  const message = typeof parsed.error === 'string' ? parsed.error : `HTTP ${status}`;
  const code = isErrorCode(header) ? header : parsed.code;
  if (isErrorCode(code)) return new GridError(code, message, { http_status: status });
  const key = status === 401 || status === 403 ? 'FORBIDDEN' : status === 404 ? 'NOT_FOUND' : status === 413 ? 'PAYLOAD_TOO_LARGE' : 'INTERNAL';
  return gridError(key, `${url.pathname}: ${message}`, { http_status: status });
}
