// GridSocket: the one connection to a node, shared by the tree views, commands and notebook kernel.
// It is the union of PyGrid's WebsocketGridClient, the syft SocketClients and Genesis' Socket:
// correlated requests with timeouts and aborts (pending-requests.ts), streams that survive reconnects
// (grid-stream.ts), an auth token re-sent after every reconnect, a heartbeat, and chunked resumable
// transfers in bounded memory (chunked-transfers.ts, drain.ts).

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import WebSocket, { type RawData } from 'ws';
import { ErrorCodes, GridError, gridError, toGridError } from '../errors';
import { silentLogger, type Logger } from '../logger';
import { isLocalUrl } from '../shm';
import {
  Authenticate, describeIssues, TransferBegin, TransferCommit, TransferRead,
  type DownloadOffer, type EndOf, type EventOf, type ReplyOf, type RequestDef, type RequestOf, type StreamDef,
} from '../protocol/catalogue';
import { checkEnvelope, decodeBinaryFrame, encodeMessageFrame, FrameKind, type Envelope, type IncomingMessage } from '../protocol/envelope';
import { FramePool } from './frame-pool';
import { backoffDelay, resolveReconnect, type ReconnectOptions, type ResolvedReconnect } from './backoff';
import { TRANSFER_ACK, Transfers, type TransferOptions, type UploadResult } from './chunked-transfers';
import { failureFromError, failureFromResponse, MAX_REFUSAL_BODY, type ConnectFailure } from './connect-failure';
import { sendAndDrain } from './drain';
import { GridStream, type StreamOptions } from './grid-stream';
import { PendingRequests, type PendingRequest, type Reply } from './pending-requests';
import { requestText } from './request-text';
import type { ByteSink, ByteSource } from './transfer';

export { GridStream, type StreamOptions } from './grid-stream';
export type { TransferOptions, UploadResult } from './chunked-transfers';
export type { Reply } from './pending-requests';

export type SocketState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface SocketStatus {
  readonly state: SocketState;
  readonly url: string | undefined;
  /** Reconnect attempts since the connection was last open. */
  readonly attempt: number;
  readonly closedCode: number | undefined;
  readonly closedReason: string | undefined;
  /** The closing handshake completed (both close frames went through), whatever the code. */
  readonly closedClean: boolean | undefined;
  readonly reconnectionLimitReached: boolean;
  /**
   * Why the last attempt could not connect, when it never opened (refused, unknown host, no answer, an
   * HTTP refusal, TLS), e.g. "connection refused by 127.0.0.1:5000: nothing listens there — is the node
   * running?". Cleared when a connection opens.
   */
  readonly failure: string | undefined;
  readonly authenticated: boolean;
  readonly user: string | undefined;
}

export interface ConnectOptions {
  /** Ping interval; a node that misses a pong is treated as dead and reconnected. 0 disables. Default 15 s. */
  heartbeatMs?: number;
  /** Largest frame accepted from the node. Default 64 MiB. */
  maxPayload?: number;
  /** Time allowed for one connection attempt's handshake. Default 10 s. */
  handshakeTimeoutMs?: number;
  headers?: Record<string, string>;
  /** Certificates to trust for a wss:// node, besides the system's (e.g. a node's self-signed certificate). */
  ca?: string | Buffer | (string | Buffer)[];
}

export interface RequestOptions {
  /** Milliseconds to wait for the reply. Default 20 s. */
  timeout?: number;
  signal?: AbortSignal;
  /**
   * Bytes sent with the request in the same frame (tensors). Parts (encodeNamedTensorsParts) are copied
   * once, straight into the frame, when the request is sent; the caller must not change them until then.
   */
  attachment?: Uint8Array | readonly Uint8Array[];
  /** Overrides the message definition's idempotency (retried after reconnect when true). */
  idempotent?: boolean;
}

interface StreamSub {
  readonly id: string;
  readonly env: Envelope;
  readonly resubscribe: boolean;
  readonly def: StreamDef | undefined;
  event(data: unknown): void;
  end(data: unknown): void;
  fail(err: GridError): void;
}

const DEFAULT_TIMEOUT = 20_000;

/**
 * Frames to a node on this machine are masked with a zero key, which ws then skips: masking exists to
 * keep attacker-chosen bytes from confusing proxies between a browser and a server (RFC 6455 §10.3), and
 * a loopback connection has no one in between. It spares a copy of every frame (ws masks a copy), which
 * for tensors is the largest cost of sending them. Connections to other hosts keep random keys.
 * Small text frames are the exception (sendText): given a Buffer and a non-zero key, ws writes the
 * masked bytes into the buffer of the frame's header, one socket write instead of two corked ones. Measured
 * on loopback (issue 18): ~0.3-0.7 µs less client CPU per round trip for a 100-byte envelope, even at
 * ~400 bytes, a loss from ~1 KiB on (masking costs per byte); a 3 KiB binary frame costs ~2 µs more.
 */
const SMALL_TEXT_MASK = 0x5a5a5a5a;
/** Characters (UTF-16 units) of a text frame sent as one merged write. */
const SMALL_TEXT_CHARS = 384;
const TEXT_FRAME = { binary: false } as const;

export interface GridSocketOptions {
  logger?: Logger;
  /** For tests of the backoff sequence. */
  random?: () => number;
}

/**
 * Events: 'status' (SocketStatus) on every change, 'message' (IncomingMessage) for every incoming
 * message, 'protocol-error' (GridError) for frames from the node that could not be understood.
 */
export class GridSocket extends EventEmitter {
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly idPrefix = randomBytes(4).toString('hex');
  private nextId = 0;
  private ws: WebSocket | undefined;
  private url: string | undefined;
  private connectOptions: Required<Omit<ConnectOptions, 'headers' | 'ca'>> & Pick<ConnectOptions, 'headers' | 'ca'> = { heartbeatMs: 15_000, maxPayload: 64 * 1024 * 1024, handshakeTimeoutMs: 10_000 };
  private reconnect: ResolvedReconnect = resolveReconnect();
  private state: SocketState = 'idle';
  private attempt = 0;
  private closedCode: number | undefined;
  private closedReason: string | undefined;
  private closedClean: boolean | undefined;
  private reconnectionLimitReached = false;
  private failure: ConnectFailure | undefined;
  /** The error the socket gave up with; later requests say it too. */
  private gaveUp: GridError | undefined;
  /** The status last emitted, so a step that changes nothing emits nothing. */
  private lastEmitted: SocketStatus | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private awaitingPong = false;
  /** The connection whose incoming frame exceeded maxPayload, until its close is handled. */
  private oversizeFrom: WebSocket | undefined;
  /** Requests and streams go out only when open and (re)authenticated. */
  private ready = false;
  /** Incremented on every close, so waiters can tell the connection they started on is gone. */
  private epoch = 0;
  private readonly pending: PendingRequests;
  private readonly streams = new Map<string, StreamSub>();
  private readonly transfers: Transfers;
  /** Reused buffers for big request frames (inference inputs). */
  private readonly frames = new FramePool();
  private readonly openWaiters = new Set<{ resolve: () => void; reject: (e: GridError) => void }>();
  /** The frame ws is about to mask is a small text frame (sendText): a loopback connection masks it. */
  private smallText = false;
  private credentials: { username: string; password: string } | { token: string } | undefined;
  private token: string | undefined;
  private user: string | undefined;
  private disposed = false;

  constructor(options: GridSocketOptions = {}) {
    super();
    this.log = options.logger ?? silentLogger;
    this.random = options.random ?? Math.random;
    this.onWsMessage = this.onWsMessage.bind(this);
    this.loopbackMask = this.loopbackMask.bind(this);
    this.pending = new PendingRequests((p) => gridError('TIMEOUT', `${p.env.type} got no reply from ${this.url} within ${p.timeout} ms`, { timeout: p.timeout }));
    this.transfers = new Transfers({
      log: this.log,
      epoch: () => this.epoch,
      begin: (data, signal) => this.request(TransferBegin, data, { signal }),
      commit: (data, signal) => this.request(TransferCommit, data, { signal, timeout: 120_000 }),
      read: (data, signal) => this.stream(TransferRead, data, { signal, resubscribe: false }).done,
      ack: (transferId, received) => { this.send(TRANSFER_ACK, { transfer_id: transferId, received }); },
      sendChunk: (frame, epoch, onSent) => this.sendChunk(frame, epoch, onSent),
      whenReady: (signal) => this.whenReady(signal),
    });
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  get status(): SocketStatus {
    return {
      state: this.state,
      url: this.url,
      attempt: this.attempt,
      closedCode: this.closedCode,
      closedReason: this.closedReason,
      closedClean: this.closedClean,
      reconnectionLimitReached: this.reconnectionLimitReached,
      failure: this.failure?.message,
      authenticated: this.token !== undefined && this.ready,
      user: this.user,
    };
  }

  /**
   * Connects and keeps connected. Resolves when the connection is open (and re-authenticated); rejects
   * if the reconnect policy gives up first, or on reset/dispose.
   */
  connect(url: string, options: ConnectOptions = {}, reconnect: ReconnectOptions = {}): Promise<void> {
    if (this.disposed) return Promise.reject(gridError('DISPOSED', 'this GridSocket was disposed; create a new one'));
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return Promise.reject(gridError('INVALID_URL', `"${url}" is not a URL; a node address looks like ws://127.0.0.1:5000`));
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
      return Promise.reject(gridError('INVALID_URL', `"${url}" is not a ws:// or wss:// URL; a node address looks like ws://127.0.0.1:5000`));
    }
    let resolved: ResolvedReconnect;
    try {
      resolved = resolveReconnect(reconnect);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.state !== 'idle' && this.state !== 'closed') this.teardown('CONNECTION_DROPPED', 'reconnecting to another URL', 1000);
    this.url = url;
    this.connectOptions = {
      heartbeatMs: options.heartbeatMs ?? 15_000,
      maxPayload: options.maxPayload ?? 64 * 1024 * 1024,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
      headers: options.headers,
      ca: options.ca,
    };
    this.reconnect = resolved;
    this.attempt = 0;
    this.reconnectionLimitReached = false;
    this.failure = this.gaveUp = undefined;
    this.open('connecting');
    return this.whenReady();
  }

  /** Closes the connection without reconnecting; pending requests fail with CONNECTION_DROPPED. */
  disconnect(): void {
    this.teardown('CONNECTION_DROPPED', 'disconnected by the client', 1000);
    this.gaveUp = undefined;
    this.setState('closed');
  }

  /** Disconnects and clears every subscription (streams, message listeners); idempotent. */
  reset(): void {
    this.clear('ABORTED', 'the socket was reset');
  }

  private clear(key: 'ABORTED' | 'DISPOSED', message: string): void {
    this.teardown(key, message, 1000);
    this.removeAllListeners('message');
    this.credentials = undefined;
    this.token = undefined;
    this.user = undefined;
    if (this.state !== 'idle') this.setState('idle');
  }

  /** Resets and makes the socket unusable; idempotent. Leaves no timers or sockets behind. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.clear('DISPOSED', 'the socket was disposed');
    this.frames.clear();
    this.removeAllListeners();
  }

  /** Sends a password (or token) and keeps the session token, re-sent after every reconnect. */
  async authenticate(credentials: { username: string; password: string } | { token: string }, options: RequestOptions = {}): Promise<ReplyOf<typeof Authenticate>> {
    const reply = await this.request(Authenticate, credentials, options);
    this.credentials = credentials;
    this.token = reply.token;
    this.user = reply.user;
    this.emitStatus();
    return reply;
  }

  /** Sends a request and resolves with the node's validated reply data. */
  request<D extends RequestDef<any, any>>(def: D, data: RequestOf<D>, options?: RequestOptions): Promise<ReplyOf<D>>;
  request(type: string, data?: unknown, options?: RequestOptions): Promise<unknown>;
  request(def: RequestDef | string, data?: unknown, options: RequestOptions = {}): Promise<unknown> {
    return this.enqueue(def, data, options, false);
  }

  /** Like request(), but also gives the reply's binary attachment. */
  call<D extends RequestDef<any, any>>(def: D, data: RequestOf<D>, options?: RequestOptions): Promise<Reply<ReplyOf<D>>>;
  call(type: string, data?: unknown, options?: RequestOptions): Promise<Reply<unknown>>;
  call(defOrType: RequestDef | string, data?: unknown, options: RequestOptions = {}): Promise<Reply<unknown>> {
    return this.enqueue(defOrType, data, options, true) as Promise<Reply<unknown>>;
  }

  // The request hot path. Every request costs one object and one promise: no timer per request (one
  // deadline timer serves them all) and no closures unless the caller passed an AbortSignal.
  private enqueue(defOrType: RequestDef | string, data: unknown, options: RequestOptions, whole: boolean): Promise<unknown> {
    const def = typeof defOrType === 'string' ? undefined : defOrType;
    const type = typeof defOrType === 'string' ? defOrType : defOrType.type;
    if (def !== undefined) {
      const parsed = def.request.safeParse(data);
      if (!parsed.success) return Promise.reject(gridError('INVALID_MESSAGE', `${type}: ${describeIssues(parsed.error)}`));
      data = parsed.data;
    }
    const unusable = this.unusable();
    if (unusable) return Promise.reject(unusable);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(gridError('ABORTED', `${type} was aborted before it was sent`));
    const id = this.newId();
    const env: Envelope = { type, request_id: id };
    if (data !== undefined) env.data = data;
    const timeout = options.timeout ?? DEFAULT_TIMEOUT;
    const deadline = timeout > 0 && Number.isFinite(timeout) ? performance.now() + timeout : Infinity;
    return new Promise<unknown>((resolve, reject) => {
      const p: PendingRequest = {
        id, env, def, whole, deadline, timeout, resolve, reject,
        attachment: options.attachment,
        idempotent: options.idempotent ?? def?.idempotent ?? false,
        signal, onAbort: undefined, sent: false,
      };
      if (signal) {
        p.onAbort = () => {
          if (!this.pending.delete(id)) return;
          if (p.sent) this.sendEnvelope({ type: 'cancel', data: { request_id: id } });
          reject(gridError('ABORTED', `${type} was aborted`));
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.add(p);
      if (this.ready) this.transmit(p);
      // Not sent yet (still connecting): hold a copy of attachment parts, which are views of the caller's memory.
      else if (p.attachment !== undefined && !(p.attachment instanceof Uint8Array)) p.attachment = Buffer.concat(p.attachment);
    });
  }

  /** Fire-and-forget. Returns false when not connected (nothing was sent). */
  send(type: string, data?: unknown): boolean {
    if (!this.ready || this.ws?.readyState !== WebSocket.OPEN) return false;
    return this.sendEnvelope(data === undefined ? { type } : { type, data });
  }

  /** Every incoming message, as it arrives. Returns the unsubscribe function. */
  onMessage(listener: (msg: IncomingMessage) => void): () => void {
    this.on('message', listener);
    return () => this.off('message', listener);
  }

  /** One request, many events, one end. Iterate it, or observe it with `subscribe`. */
  stream<D extends StreamDef<any, any, any>>(def: D, data: RequestOf<D>, options?: StreamOptions): GridStream<EventOf<D>, EndOf<D>>;
  stream(type: string, data?: unknown, options?: StreamOptions): GridStream<unknown, unknown>;
  stream(defOrType: StreamDef | string, data?: unknown, options: StreamOptions = {}): GridStream<unknown, unknown> {
    const def = typeof defOrType === 'string' ? undefined : defOrType;
    const type = typeof defOrType === 'string' ? defOrType : defOrType.type;
    const id = this.newId();
    const stream = new GridStream<unknown, unknown>(type, options.maxBuffered ?? 10_000, () => {
      if (!this.streams.delete(id)) return;
      if (options.teardown !== false) this.sendEnvelope({ type: 'cancel', data: { request_id: id } });
    });
    if (def !== undefined) {
      const parsed = def.request.safeParse(data);
      if (!parsed.success) {
        stream.fail(gridError('INVALID_MESSAGE', `${type}: ${describeIssues(parsed.error)}`));
        return stream;
      }
      data = parsed.data;
    }
    const unusable = this.unusable();
    if (unusable) {
      stream.fail(unusable);
      return stream;
    }
    const env: Envelope = { type, request_id: id };
    if (data !== undefined) env.data = data;
    const sub: StreamSub = {
      id, env, def,
      resubscribe: options.resubscribe ?? def?.resubscribe ?? true,
      event: (ev) => {
        if (def) {
          const p = def.event.safeParse(ev);
          if (!p.success) return this.streamFailed(sub, gridError('INVALID_MESSAGE', `${type}: the node sent an invalid event (${describeIssues(p.error, 'event')})`));
          ev = p.data;
        }
        stream.push(ev);
      },
      end: (endData) => {
        this.streams.delete(id);
        if (def) {
          const p = def.end.safeParse(endData);
          if (!p.success) return stream.fail(gridError('INVALID_MESSAGE', `${type}: the node sent an invalid end (${describeIssues(p.error, 'end')})`));
          endData = p.data;
        }
        stream.finish(endData);
      },
      fail: (err) => { this.streams.delete(id); stream.fail(err); },
    };
    this.streams.set(id, sub);
    if (options.signal) {
      if (options.signal.aborted) stream.cancel();
      else options.signal.addEventListener('abort', () => stream.cancel(), { once: true });
    }
    if (this.ready) this.sendEnvelope(env);
    return stream;
  }

  /**
   * Uploads bytes in chunks, a window ahead of the node's acknowledgements, resuming from the last
   * acknowledged byte after a reconnect; the node checks the sha256 computed as bytes are read. The
   * result's transfer_id is then named in a request (host-model) that claims the upload.
   */
  upload(source: ByteSource, options: TransferOptions = {}): Promise<UploadResult> {
    return this.transfers.upload(source, options);
  }

  /**
   * Downloads an offered payload into `sink`, resuming after a reconnect. Rejects with
   * CHECKSUM_MISMATCH if the bytes do not hash to the offer's sha256.
   */
  download(offer: DownloadOffer, sink: ByteSink, options: TransferOptions = {}): Promise<{ size: number; sha256: string }> {
    return this.transfers.download(offer, sink, options);
  }

  // ---- connection lifecycle -------------------------------------------------------------------

  private open(state: 'connecting' | 'reconnecting'): void {
    this.setState(state);
    const ws = new WebSocket(this.url!, {
      maxPayload: this.connectOptions.maxPayload,
      handshakeTimeout: this.connectOptions.handshakeTimeoutMs,
      perMessageDeflate: false,
      ...(isLocalUrl(this.url!) && { generateMask: this.loopbackMask }),
      ...(this.connectOptions.headers && { headers: this.connectOptions.headers }),
      ...(this.connectOptions.ca !== undefined && { ca: this.connectOptions.ca }),
    });
    this.ws = ws;
    // What went wrong before the connection opened: it decides the message and whether to retry.
    let failure: ConnectFailure | undefined;
    let opened = false;
    ws.on('open', () => { opened = true; void this.onOpen(ws); });
    ws.on('message', this.onWsMessage);
    ws.on('pong', () => { this.awaitingPong = false; });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (!opened) failure ??= failureFromError(this.url!, err, this.connectOptions.handshakeTimeoutMs);
      // A reply bigger than maxPayload: ws closes the connection with 1009 (handled in onClose).
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.oversizeFrom = ws;
      this.log.debug({ err: err.message, url: this.url }, 'socket error');
    });
    // Not a WebSocket answer (a 403 origin refusal, a 404 from a web server): read what it says, bounded.
    ws.on('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let read = false;
      const done = () => {
        if (read) return;
        read = true;
        clearTimeout(timer);
        if (failure === undefined) failure = failureFromResponse(this.url!, res.statusCode ?? 0, res.statusMessage, Buffer.concat(chunks).toString('utf8'));
        req.destroy();
        ws.terminate();
      };
      const timer = setTimeout(done, 1000);
      timer.unref();
      res.on('data', (chunk: Buffer) => {
        if (size >= MAX_REFUSAL_BODY) return;
        chunks.push(chunk.subarray(0, MAX_REFUSAL_BODY - size));
        size += chunk.length;
        if (size >= MAX_REFUSAL_BODY) done();
      });
      res.once('end', done);
      res.once('error', done);
    });
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString(), failure));
  }

  private async onOpen(ws: WebSocket): Promise<void> {
    if (ws !== this.ws) return;
    this.attempt = 0;
    this.closedCode = this.closedReason = this.closedClean = undefined;
    this.reconnectionLimitReached = false;
    this.failure = undefined;
    this.startHeartbeat();
    // Re-authenticate before anything else goes out: the node handles messages concurrently.
    if (this.credentials) {
      const creds = this.token !== undefined ? { token: this.token } : this.credentials;
      try {
        const reply = await this.rawRequest(ws, Authenticate.type, creds);
        const parsed = Authenticate.reply.safeParse(reply);
        if (parsed.success) { this.token = parsed.data.token; this.user = parsed.data.user; }
      } catch (err) {
        if (ws !== this.ws) return;
        const e = toGridError(err);
        // A token the node no longer knows (it was restarted with a fresh store): fall back to the password.
        if ('password' in this.credentials && e.code === ErrorCodes.BAD_CREDENTIALS) {
          try {
            const reply = Authenticate.reply.parse(await this.rawRequest(ws, Authenticate.type, this.credentials));
            this.token = reply.token; this.user = reply.user;
          } catch (err2) {
            this.log.warn({ err: (err2 as Error).message }, 're-authentication failed');
            this.token = undefined;
          }
        } else {
          this.log.warn({ err: e.message }, 're-authentication failed');
          this.token = undefined;
        }
      }
    }
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    this.ready = true;
    this.setState('open');
    for (const s of this.streams.values()) this.sendEnvelope(s.env);
    for (const p of this.pending.list()) if (!p.sent) this.transmit(p);
    for (const w of this.openWaiters) w.resolve();
    this.openWaiters.clear();
  }

  /** A request outside the pending table, used only for re-authentication while not yet ready. */
  private rawRequest(ws: WebSocket, type: string, data: unknown): Promise<unknown> {
    const id = this.newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { cleanup(); reject(gridError('TIMEOUT', `${type} got no reply within ${DEFAULT_TIMEOUT} ms`)); }, DEFAULT_TIMEOUT);
      const onMsg = (raw: RawData, isBinary: boolean) => {
        if (isBinary) return;
        let env: Envelope;
        try { env = checkEnvelope(JSON.parse(raw.toString())); } catch { return; }
        if (env.request_id !== id) return;
        cleanup();
        if (env.error) reject(GridError.fromWire(env.error)); else resolve(env.data);
      };
      const onClose = () => { cleanup(); reject(gridError('CONNECTION_DROPPED', 'the connection closed during re-authentication')); };
      const cleanup = () => { clearTimeout(timer); ws.off('message', onMsg); ws.off('close', onClose); };
      ws.on('message', onMsg);
      ws.once('close', onClose);
      ws.send(JSON.stringify({ type, request_id: id, data }));
    });
  }

  private onClose(ws: WebSocket, code: number, reason: string, failure: ConnectFailure | undefined): void {
    if (ws !== this.ws) return;
    this.ws = undefined;
    this.ready = false;
    this.epoch += 1;
    this.stopHeartbeat();
    this.closedCode = code;
    this.closedReason = reason;
    // ws reports 1006 when no close frame came (a dropped connection); a close frame of any code means
    // the closing handshake took place (ws answers it before reporting the close).
    this.closedClean = code !== 1006;
    this.failure = failure;
    ws.removeAllListeners('message');
    // An untrusted certificate or a 4xx refusal will be the same on the next attempt.
    const final = failure?.final === true;
    const willRetry = !final && this.reconnect.enabled && this.attempt < this.reconnect.maxAttempts;
    // 1009: a frame was too big for one side (a reply for this client's maxPayload, or a request for the
    // node's). Sending the requests in flight again would end the same way, in a loop: they fail instead.
    const replyTooBig = this.oversizeFrom === ws;
    this.oversizeFrom = undefined;
    if (replyTooBig || code === 1009) this.failInFlightOversize(replyTooBig);
    this.dropInFlight(willRetry);
    if (!willRetry) {
      this.reconnectionLimitReached = !final && this.reconnect.enabled;
      const closed = `${code}${reason ? `: ${reason}` : ''}`;
      const err = final
        ? gridError(failure.key, failure.message, failure.details)
        : this.reconnect.enabled
        ? gridError('RECONNECT_LIMIT', `gave up reconnecting to ${this.url} after ${this.attempt} attempts: ${failure?.message ?? `last close ${closed}`}`, { ...failure?.details, attempts: this.attempt, close_code: code })
        : failure !== undefined
        ? gridError('CONNECTION_DROPPED', `could not connect to ${this.url}: ${failure.message}`, { ...failure.details, close_code: code })
        : gridError('CONNECTION_DROPPED', `the connection to ${this.url} closed (${closed})`, { close_code: code });
      this.gaveUp = err;
      this.failAll(err);
      this.setState('closed');
      return;
    }
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.reconnect, this.random);
    this.log.info({ url: this.url, code, attempt: this.attempt, delay, ...(failure && { cause: failure.cause }) }, failure ? `could not connect: ${failure.message}; retrying` : 'connection lost; reconnecting');
    this.setState('reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open('reconnecting');
    }, delay);
  }

  /** After a 1009 close: every request in flight fails with PAYLOAD_TOO_LARGE and is not re-sent. */
  private failInFlightOversize(replyTooBig: boolean): void {
    const why = replyTooBig
      ? `a reply from the node was larger than this client's maxPayload (${this.connectOptions.maxPayload} bytes)`
      : 'the node closed the connection because a frame was larger than it accepts (close 1009)';
    for (const p of this.pending.list()) {
      if (!p.sent) continue;
      this.pending.reject(p, gridError('PAYLOAD_TOO_LARGE', `${p.env.type} to ${this.url} failed: ${why}. It was not sent again, since it would fail the same way; ask for less, or raise the limit`, { close_code: 1009 }));
    }
  }

  /** On a drop: requests that are not safe to repeat fail now; streams that don't resubscribe fail. */
  private dropInFlight(willRetry: boolean): void {
    for (const p of this.pending.list()) {
      if (!p.sent) continue;
      if (willRetry && p.idempotent) { p.sent = false; continue; }
      this.pending.reject(p, gridError('CONNECTION_DROPPED', `the connection to ${this.url} dropped while ${p.env.type} was in flight; it was not retried because it is not idempotent`));
    }
    for (const s of [...this.streams.values()]) {
      if (willRetry && s.resubscribe) continue;
      s.fail(gridError('CONNECTION_DROPPED', `the connection to ${this.url} dropped during the ${s.env.type} stream`));
    }
    this.transfers.interrupted();
  }

  /** Fails everything still waiting (used when giving up, resetting or disposing). */
  private failAll(err: GridError): void {
    this.pending.rejectAll(err);
    for (const s of [...this.streams.values()]) s.fail(err);
    for (const w of this.openWaiters) w.reject(err);
    this.openWaiters.clear();
    this.transfers.interrupted();
  }

  private teardown(key: 'CONNECTION_DROPPED' | 'ABORTED' | 'DISPOSED', message: string, code: number): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = undefined;
    this.ready = false;
    this.epoch += 1;
    if (ws) {
      ws.removeAllListeners('message');
      ws.removeAllListeners('open');
      ws.on('error', () => {});
      if (ws.readyState === WebSocket.OPEN) ws.close(code, message.slice(0, 120));
      else ws.terminate();
    }
    this.failAll(gridError(key, message));
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const ms = this.connectOptions.heartbeatMs;
    if (ms <= 0) return;
    this.awaitingPong = false;
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (this.awaitingPong) {
        this.log.warn({ url: this.url }, 'node missed a heartbeat; reconnecting');
        ws.terminate();
        return;
      }
      this.awaitingPong = true;
      ws.ping();
    }, ms);
    this.heartbeatTimer.unref();
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  // ---- incoming -------------------------------------------------------------------------------

  private onWsMessage(raw: RawData, isBinary: boolean): void {
    let msg: IncomingMessage;
    try {
      const buf = Buffer.isBuffer(raw) ? raw : Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw);
      if (isBinary) {
        const frame = decodeBinaryFrame(buf);
        if (frame.kind === FrameKind.CHUNK) {
          this.transfers.chunk(frame.id, frame.body);
          return;
        }
        msg = frame.message;
      } else {
        let value: unknown;
        try {
          value = JSON.parse(buf.toString('utf8'));
        } catch (err) {
          throw gridError('MALFORMED_FRAME', `the node sent a text frame that is not JSON: ${(err as Error).message}`);
        }
        msg = checkEnvelope(value);
      }
    } catch (err) {
      this.protocolError(toGridError(err, 'MALFORMED_FRAME'));
      return;
    }
    this.dispatch(msg);
    if (this.listenerCount('message') > 0) this.emit('message', msg);
  }

  private dispatch(msg: IncomingMessage): void {
    const id = msg.request_id;
    if (id !== undefined) {
      const p = this.pending.take(id);
      if (p !== undefined) {
        if (msg.error) return this.pending.reject(p, GridError.fromWire(msg.error));
        let data = msg.data;
        if (p.def) {
          const parsed = p.def.reply.safeParse(data);
          if (!parsed.success) return this.pending.reject(p, gridError('INVALID_MESSAGE', `${p.env.type}: the node sent an invalid reply (${describeIssues(parsed.error, 'reply')})`));
          data = parsed.data;
        }
        return this.pending.resolve(p, { data, attachment: msg.attachment });
      }
      const s = this.streams.get(id);
      if (s !== undefined) {
        if (msg.error) return s.fail(GridError.fromWire(msg.error));
        if (msg.stream === 'event') return s.event(msg.data);
        return s.end(msg.data);
      }
    }
    if (msg.type === TRANSFER_ACK) this.transfers.acked(msg.data);
  }

  private streamFailed(sub: StreamSub, err: GridError): void {
    this.sendEnvelope({ type: 'cancel', data: { request_id: sub.id } });
    sub.fail(err);
  }

  private protocolError(err: GridError): void {
    this.log.warn({ url: this.url, code: err.code }, err.message);
    if (this.listenerCount('protocol-error') > 0) this.emit('protocol-error', err);
  }

  // ---- outgoing -------------------------------------------------------------------------------

  private transmit(p: PendingRequest): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    p.sent = true;
    const attachment = p.attachment;
    if (attachment === undefined) {
      this.sendText(ws, requestText(p));
      return;
    }
    let pooled: Buffer | undefined;
    const frame = encodeMessageFrame(p.env, attachment, (bytes) => (pooled = this.frames.take(bytes)));
    // Parts are views of the caller's memory: a re-send after a reconnect uses the bytes sent now.
    if (!(attachment instanceof Uint8Array)) p.attachment = frame.subarray(frame.length - attachmentLength(attachment));
    if (pooled === undefined) {
      ws.send(frame);
      return;
    }
    // Back to the pool once written out and settled; a request that ends otherwise (aborted) leaves it to the GC.
    const buf = pooled;
    let uses = 2;
    const done = () => { if (--uses === 0 && !this.disposed) this.frames.give(buf); };
    p.onSettled = done;
    ws.send(frame, done);
  }

  private sendEnvelope(env: Envelope): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    this.sendText(ws, JSON.stringify(env));
    return true;
  }

  private sendText(ws: WebSocket, text: string): void {
    if (text.length > SMALL_TEXT_CHARS) {
      ws.send(text);
      return;
    }
    this.smallText = true;
    try {
      ws.send(Buffer.from(text), TEXT_FRAME);
    } finally {
      this.smallText = false;
    }
  }

  /** ws's generateMask on a loopback connection: called by ws.send as it frames a message. */
  private loopbackMask(mask: Buffer): void {
    if (this.smallText) mask.writeUInt32LE(SMALL_TEXT_MASK, 0);
    else mask.fill(0);
  }

  /** Sends a transfer chunk on the connection of `epoch`; waits for drain when the socket buffer is full. */
  private sendChunk(frame: Buffer, epoch: number, onSent?: () => void): Promise<void> {
    const ws = this.ws;
    if (!ws || epoch !== this.epoch || !this.ready) return Promise.reject(gridError('CONNECTION_DROPPED', 'the connection dropped during a transfer'));
    return sendAndDrain(ws, frame, 'the connection dropped during a transfer', onSent);
  }

  /** Resolves when open and ready; rejects if the socket gives up, is reset or disposed, or `signal` aborts. */
  private whenReady(signal?: AbortSignal): Promise<void> {
    if (this.ready) return Promise.resolve();
    const unusable = this.unusable();
    if (unusable && this.state !== 'idle') return Promise.reject(unusable);
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => { signal?.removeEventListener('abort', onAbort); resolve(); },
        reject: (e: GridError) => { signal?.removeEventListener('abort', onAbort); reject(e); },
      };
      const onAbort = () => { this.openWaiters.delete(w); reject(gridError('ABORTED', 'aborted while waiting for the connection')); };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.openWaiters.add(w);
    });
  }

  private unusable(): GridError | undefined {
    if (this.disposed) return gridError('DISPOSED', 'this GridSocket was disposed; create a new one');
    if (this.state === 'idle' || this.state === 'closed') {
      if (this.gaveUp !== undefined) {
        return gridError(this.reconnectionLimitReached ? 'RECONNECT_LIMIT' : 'NOT_CONNECTED', `not connected: ${this.gaveUp.message}`, this.gaveUp.details);
      }
      return this.reconnectionLimitReached
        ? gridError('RECONNECT_LIMIT', `not connected: gave up reconnecting to ${this.url}`)
        : gridError('NOT_CONNECTED', this.url ? `not connected to ${this.url}` : 'not connected to a node; connect first');
    }
    return undefined;
  }

  private newId(): string {
    return `${this.idPrefix}-${(this.nextId++).toString(36)}`;
  }

  private setState(state: SocketState): void {
    this.state = state;
    this.emitStatus();
  }

  /** Emits only a status that differs from the last one emitted: one event per real change. */
  private emitStatus(): void {
    const status = this.status;
    const last = this.lastEmitted;
    if (last !== undefined && (Object.keys(status) as (keyof SocketStatus)[]).every((k) => status[k] === last[k])) return;
    this.lastEmitted = status;
    if (this.listenerCount('status') > 0) this.emit('status', status);
  }
}

function attachmentLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}
