// The node half of the protocol: a router of validated handlers and the WebSocket server that
// feeds it. A bad frame or a failing handler gets a coded error reply; it never closes the
// connection or reaches the event loop. Each connection is bounded (docs/node.md, Limits): JSON size
// and depth, open streams, pending requests, and bytes it leaves unread (only that closes it).

import { randomBytes } from 'node:crypto';
import type { IncomingMessage as HttpRequest } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type { z } from 'zod';
import { ErrorCodes, GridError, gridError, toGridError } from '../../core/errors';
import { LogLimiter, type LogLimiterOptions } from '../../core/log-limiter';
import { silentLogger, type Logger } from '../../core/logger';
import {
  Authenticate, Cancel, describeIssues, Ping, TransferAck, TransferBegin, TransferCommit, TransferRead,
  UPLOAD_ACK_BYTES_DEFAULT, type DownloadOffer, type RequestDef, type StreamDef,
} from '../../core/protocol/catalogue';
import {
  DEFAULT_JSON_LIMITS, decodeBinaryFrame, encodeChunk, encodeMessageFrame, FrameKind, parseTextFrame,
  type Envelope, type IncomingMessage, type JsonLimits,
} from '../../core/protocol/envelope';
import { sendAndDrain } from '../../core/socket/drain';
import { cameThroughProxy, clientAddress } from '../client-address';
import { redactError } from './redact';
import { REQUEST_CHECKS } from './request-checks';
import type { UploadLedger } from './upload-ledger';
import { UploadStore, type CommittedUpload, type UploadQuotas } from './uploads';

const ATTACHMENT = Symbol('attachment');
export interface WithAttachment<T> { readonly [ATTACHMENT]: Uint8Array | readonly Uint8Array[]; readonly data: T }
/**
 * A reply that carries binary bytes (tensors) next to its JSON data, in one frame. The bytes may come in
 * parts (encodeNamedTensorsParts), which are copied once, straight into the frame.
 */
export function withAttachment<T>(data: T, attachment: Uint8Array | readonly Uint8Array[]): WithAttachment<T> {
  return { [ATTACHMENT]: attachment, data };
}
function isWithAttachment(v: unknown): v is WithAttachment<unknown> {
  return typeof v === 'object' && v !== null && ATTACHMENT in v;
}

/** What a node can send bytes from, for a download. */
export interface DownloadSource {
  size: number;
  sha256: string;
  read(offset: number, length: number): Promise<Uint8Array>;
}

export interface HandlerContext {
  readonly requestId: string | undefined;
  readonly connection: GridConnection;
  /** Aborted when the client cancels (streams) or the connection closes. */
  readonly signal: AbortSignal;
  /** Whether `signal` has aborted, without making one (cheap: most requests never need the signal). */
  readonly aborted: boolean;
  readonly attachment: Buffer | undefined;
  readonly log: Logger;
  /** Claims a committed upload; the caller owns the returned file from now on. */
  takeUpload(transferId: string): CommittedUpload;
  /** Offers bytes for download; returns what to put in the reply for the client's `download()`. */
  offerDownload(source: DownloadSource): DownloadOffer;
}

export interface StreamContext<Ev> extends HandlerContext {
  emit(event: Ev): void;
}

type RequestHandler = (data: any, ctx: HandlerContext) => Promise<unknown> | unknown;

/**
 * A handler for message types without a schema of ours (PyGrid-era peers' formats, e.g. WebRTC signalling
 * in two dialects): it gets the whole message and says what to answer. `undefined`: nothing is sent (some
 * clients cannot parse a reply); otherwise the reply's `data` or a coded error, with the request's id.
 */
export type RawAnswer = { reply: unknown } | { error: GridError } | undefined;
/** A raw handler that reads the node's store answers with a promise; messages of one connection are answered in order by the handler itself. */
export type RawHandler = (msg: IncomingMessage, connection: GridConnection) => RawAnswer | Promise<RawAnswer>;
type StreamHandler = (data: any, ctx: StreamContext<any>) => Promise<unknown>;

interface Route {
  def: RequestDef<any, any> | StreamDef<any, any, any>;
  handler: RequestHandler | StreamHandler;
  /** True for data the schema accepts as is (request-checks.ts); false leaves it to the schema. */
  accepts?: ((data: unknown) => boolean) | undefined;
}

/** Message type → validated handler. Shared by every connection of a server. */
export class GridRouter {
  private readonly routes = new Map<string, Route>();
  private readonly raw: { match: (type: string) => boolean; handler: RawHandler }[] = [];

  handle<Req, Rep>(def: RequestDef<Req, Rep>, handler: (data: Req, ctx: HandlerContext) => Promise<Rep | WithAttachment<Rep>> | Rep | WithAttachment<Rep>): this {
    this.add(def, handler as RequestHandler);
    return this;
  }

  stream<Req, Ev, End>(def: StreamDef<Req, Ev, End>, handler: (data: Req, ctx: StreamContext<Ev>) => Promise<End>): this {
    this.add(def, handler as StreamHandler);
    return this;
  }

  /** Message types `match` accepts go to `handler` unvalidated (see RawHandler); typed routes come first. */
  handleRaw(match: (type: string) => boolean, handler: RawHandler): this {
    this.raw.push({ match, handler });
    return this;
  }

  get(type: string): Route | undefined {
    return this.routes.get(type);
  }

  /** RequestDef.textBytes of a routed type: the string of its data the envelope parse leaves as bytes. */
  readonly textBytes = (type: string): string | undefined => {
    const route = this.routes.get(type);
    return route?.def.kind === 'request' ? route.def.textBytes : undefined;
  };

  /**
   * What a failing handler of `type` (a throw or a rejection) answers with: `err` as is here. A router that
   * rewrites errors (RedactingRouter) overrides this rather than wrapping every handler's promise: the
   * server calls it on the failure path only, so a request that succeeds pays nothing for it.
   */
  failure(_type: string, err: unknown): unknown {
    return err;
  }

  rawHandler(type: string): RawHandler | undefined {
    return this.raw.find((r) => r.match(type))?.handler;
  }

  types(): string[] {
    return [...this.routes.keys()];
  }

  private add(def: Route['def'], handler: Route['handler']): void {
    if (this.routes.has(def.type)) throw new Error(`handler for "${def.type}" registered twice`);
    this.routes.set(def.type, { def, handler, accepts: REQUEST_CHECKS.get(def.type) });
  }
}

export interface GridServerOptions {
  router: GridRouter;
  /** Folders (the data dir) whose paths never reach a client in an error message. */
  redactRoots?: readonly string[];
  logger?: Logger;
  /** Largest frame accepted; a bigger one closes the connection with 1009 (ws). Uploads are chunked below it. */
  maxPayload?: number;
  /** Largest JSON envelope answered, in a text frame or a binary MESSAGE frame; a bigger one gets PAYLOAD_TOO_LARGE. */
  maxTextBytes?: number;
  /** Deepest nesting of a JSON envelope; a deeper one gets MALFORMED_FRAME before it is parsed. */
  maxJsonDepth?: number;
  /** Most objects and arrays in one JSON envelope; more get MALFORMED_FRAME before it is parsed. */
  maxJsonContainers?: number;
  /** Streams open at once per connection; one more gets CONNECTION_LIMIT. */
  maxStreams?: number;
  /** Requests awaiting their reply at once per connection (streams not counted); one more gets CONNECTION_LIMIT. */
  maxPendingRequests?: number;
  /**
   * Bytes queued for a client that does not read them; past this the connection is closed (1008,
   * GRID_ERR_CONNECTION_LIMIT) rather than buffering without limit.
   */
  maxBufferedBytes?: number;
  /** Rate limit of log lines a client can cause (malformed frames, failing handlers): per connection and code. */
  logLimit?: LogLimiterOptions;
  /** Where uploads are written while in flight. */
  uploadsDir: string;
  /** Replicas: `uploadsDir` is shared and uploads are recorded here, so another replica resumes them (uploads.ts). */
  uploadLedger?: UploadLedger;
  uploadTtlMs?: number;
  maxUploadBytes?: number;
  /** ws ping interval; a client that misses a pong is terminated. 0 disables. */
  heartbeatMs?: number;
  /** Bytes in flight per download before waiting for the client's ack. */
  downloadWindowBytes?: number;
  downloadChunkBytes?: number;
  /** Called after every request or stream settles (metrics). */
  onRequest?(type: string, ms: number, code: string | undefined): void;
  /** Called before an upload begins (new or resumed); throw (e.g. UNAUTHENTICATED) to refuse it up front. Returns whom the upload is charged to (quotas). */
  authorizeUpload?(connection: GridConnection, size: number): string | void;
  /** Per-owner upload quotas and the disk margin. */
  uploadQuotas?: UploadQuotas;
  /**
   * `data` for an error reply of `type`, next to the coded `error`: PyGrid-era clients read `data.error`
   * (model-centric FL, src/node/fl/handlers.ts). Undefined: no `data`.
   */
  errorData?(type: string, err: GridError): unknown;
  /**
   * Validate every reply (and stream end) of the node's own handlers against its schema before it is
   * sent, and refuse one that carries a field the schema does not name: a failing reply goes out as
   * GRID_ERR_INTERNAL instead. Off by default: the client validates every reply it receives, and this
   * is the hot path (a zod parse per request). The tests turn it on (GRID_CHECK_REPLIES=1, the node's
   * --check-replies), so a malformed reply of ours fails them loudly.
   */
  checkReplies?: boolean;
  /** Authenticates a session; the node supplies it. Without it, `authenticate` is an unknown type. */
  authenticate?(data: { username: string; password: string } | { token: string }, connection: GridConnection): Promise<{ token: string; user: string; expires_at?: number }>;
}

/** The bounds a node operator may tune (docs/node.md, Limits). */
export type ConnectionLimits = Pick<GridServerOptions, 'maxTextBytes' | 'maxJsonDepth' | 'maxJsonContainers' | 'maxStreams' | 'maxPendingRequests' | 'maxBufferedBytes' | 'logLimit'>;

interface Offered extends DownloadSource { id: string; touched: number }

/** The WebSocket server of a node, attached to an http.Server's `upgrade` event. */
export class GridServer {
  readonly router: GridRouter;
  readonly uploads: UploadStore;
  readonly connections = new Set<GridConnection>();
  readonly options: Required<Pick<GridServerOptions, 'maxPayload' | 'maxTextBytes' | 'maxJsonDepth' | 'maxJsonContainers' | 'maxStreams' | 'maxPendingRequests' | 'maxBufferedBytes' | 'heartbeatMs' | 'downloadWindowBytes' | 'downloadChunkBytes' | 'checkReplies'>> & GridServerOptions;
  /** The JSON bound of both frame kinds, from the options. */
  readonly jsonLimits: JsonLimits;
  readonly log: Logger;
  /** For lines any client can cause once per connection (ws protocol errors): bounded however many connect. */
  readonly connectionLog: LogLimiter;
  private readonly wss: WebSocketServer;
  private readonly downloads = new Map<string, Offered>();
  private readonly heartbeat: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: GridServerOptions) {
    this.options = {
      maxPayload: 64 * 1024 * 1024,
      maxTextBytes: DEFAULT_JSON_LIMITS.maxBytes,
      maxJsonDepth: DEFAULT_JSON_LIMITS.maxDepth,
      maxJsonContainers: DEFAULT_JSON_LIMITS.maxContainers,
      maxStreams: 256,
      maxPendingRequests: 1024,
      maxBufferedBytes: 64 * 1024 * 1024,
      heartbeatMs: 30_000,
      downloadWindowBytes: 16 * 1024 * 1024,
      downloadChunkBytes: 1024 * 1024,
      ...options,
      checkReplies: options.checkReplies ?? process.env.GRID_CHECK_REPLIES === '1',
    };
    this.jsonLimits = { maxBytes: this.options.maxTextBytes, maxDepth: this.options.maxJsonDepth, maxContainers: this.options.maxJsonContainers };
    this.router = options.router;
    this.log = options.logger ?? silentLogger;
    this.connectionLog = new LogLimiter(this.log, options.logLimit);
    this.uploads = new UploadStore({
      dir: options.uploadsDir,
      ...(options.uploadTtlMs !== undefined && { ttlMs: options.uploadTtlMs }),
      ...(options.maxUploadBytes !== undefined && { maxBytes: options.maxUploadBytes }),
      ...options.uploadQuotas,
      ...(options.uploadLedger !== undefined && { ledger: options.uploadLedger }),
      log: this.log,
    });
    // Text frames' UTF-8 is checked by parseTextFrame (Connection.onMessage), which covers a report's long
    // base64 string with the printable-ASCII check it runs anyway: ws's own check was a second pass.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.options.maxPayload, perMessageDeflate: false, skipUTF8Validation: true });
    this.wss.on('connection', (ws: WebSocket, req: HttpRequest) => this.onConnection(ws, req));
    if (this.options.heartbeatMs > 0) {
      this.heartbeat = setInterval(() => {
        for (const c of this.connections) c.heartbeat();
      }, this.options.heartbeatMs);
      this.heartbeat.unref();
    }
  }

  handleUpgrade(req: HttpRequest, socket: Duplex, head: Buffer): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit('connection', ws, req));
  }

  /** Sends a push message (no request) to every connection for which `filter` holds. */
  broadcast(type: string, data: unknown, filter: (c: GridConnection) => boolean = () => true): void {
    for (const c of this.connections) if (filter(c)) c.push(type, data);
  }

  offerDownload(source: DownloadSource): DownloadOffer {
    const id = randomBytes(12).toString('base64url');
    this.downloads.set(id, { ...source, id, touched: Date.now() });
    // Offers are cheap (a closure over a file path); forget the oldest beyond a bound.
    if (this.downloads.size > 1024) this.downloads.delete(this.downloads.keys().next().value!);
    return { transfer_id: id, size: source.size, sha256: source.sha256 };
  }

  getDownload(id: string): Offered | undefined {
    const d = this.downloads.get(id);
    if (d) d.touched = Date.now();
    return d;
  }

  private onConnection(ws: WebSocket, req: HttpRequest): void {
    const conn = new GridConnection(this, ws, { remote: clientAddress(req), peer: req.socket.remoteAddress ?? '', proxied: cameThroughProxy(req) });
    this.connections.add(conn);
    ws.once('close', () => this.connections.delete(conn));
  }

  /** Closes every connection (1001 going away) and stops accepting; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.heartbeat) clearInterval(this.heartbeat);
      await Promise.all([...this.connections].map((c) => c.close(1001, 'node shutting down')));
      await new Promise<void>((resolve) => this.wss.close(() => resolve()));
      await this.uploads.close();
      this.downloads.clear();
      this.connectionLog.dispose();
    })();
    return this.closing;
  }
}

/** One client's connection to the node. `session` holds what handlers learn (the authenticated user). */
export class GridConnection {
  readonly id = randomBytes(6).toString('hex');
  readonly session: Record<string, unknown> = Object.create(null);
  /**
   * The client's address, which every per-address limit keys on: behind a trusted reverse proxy
   * (--trust-proxy), the one X-Forwarded-For names (src/node/client-address.ts); otherwise the TCP peer.
   */
  readonly remoteAddress: string;
  /** The TCP peer itself (a proxy's address when proxied). */
  readonly peerAddress: string;
  /** Came through a trusted reverse proxy: the client is not the peer, whatever addresses say (shared memory). */
  readonly proxied: boolean;
  private readonly server: GridServer;
  private readonly ws: WebSocket;
  /** Requests and streams in flight, by request id, for `cancel` (a repeated id names the latest). */
  private readonly active = new Map<string, RequestScope>();
  /** Every request and stream in flight, repeated ids included: what the limits count and a close aborts. */
  private readonly inflight = new Set<RequestScope>();
  private streams = 0;
  private readonly downloadAcks = new Map<string, { received: number; wake: (() => void) | undefined }>();
  /** Ack interval each upload begun on this connection asked for (transfer-begin's ack_bytes). */
  private readonly uploadAckBytes = new Map<string, number>();
  private alive = true;
  private anonymous = 0;
  private overflowed = false;
  /** A text frame was not UTF-8: the connection is closing and takes no more frames (refuseInvalidUtf8). */
  private invalidUtf8 = false;
  private logLimiter: LogLimiter | undefined;
  /** The node's own message types (ping, transfers, authenticate), made on first use. */
  private builtinRoutes: Map<string, Route> | undefined;
  /** What `onClosed` was asked to call when the connection closes (each once). */
  private readonly closeHooks = new Set<() => void>();
  /**
   * Replies to requests without a request_id, oldest first, held until those before them are sent:
   * PyGrid-era clients (syft.js, KotlinSyft) match replies by their order on the socket, and handlers
   * that await the store can finish in any order.
   */
  private readonly turns: ReplyTurn[] = [];

  constructor(server: GridServer, ws: WebSocket, address: { remote: string; peer: string; proxied: boolean }) {
    this.server = server;
    this.ws = ws;
    this.remoteAddress = address.remote;
    this.peerAddress = address.peer;
    this.proxied = address.proxied;
    this.onMessage = this.onMessage.bind(this);
    this.onClose = this.onClose.bind(this);
    ws.on('message', this.onMessage);
    ws.on('pong', () => { this.alive = true; });
    ws.on('close', this.onClose);
    ws.on('error', (err: Error & { code?: string }) => server.connectionLog.warn(err.code ?? 'connection-error', { err, connection: this.id }, 'connection error'));
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** A message the node sends on its own (no request): `{type, data}`. */
  push(type: string, data: unknown): void {
    this.sendJson({ type, data });
  }

  heartbeat(): void {
    if (!this.alive) {
      this.server.log.info({ connection: this.id }, 'client missed a heartbeat; terminating');
      this.ws.terminate();
      return;
    }
    this.alive = false;
    if (this.isOpen) this.ws.ping();
  }

  close(code = 1000, reason = ''): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
      // A peer that never answers the close handshake is cut after ws's own close timeout (30 s); do it sooner.
      const t = setTimeout(() => this.ws.terminate(), 2000);
      t.unref();
    });
  }

  /**
   * Calls `hook` once when this connection closes (on the next tick if it has closed already), for work
   * that outlives a request on it (an encrypted query party 0 leads); returns what removes it.
   */
  onClosed(hook: () => void): () => void {
    if (this.ws.readyState === WebSocket.CLOSED) {
      setImmediate(hook);
      return () => {};
    }
    const once = () => hook();
    this.closeHooks.add(once);
    return () => { this.closeHooks.delete(once); };
  }

  private onClose(): void {
    for (const hook of this.closeHooks) {
      try { hook(); } catch (err) { this.server.log.error({ err, connection: this.id }, 'a close hook failed'); }
    }
    this.closeHooks.clear();
    const dropped = gridError('CONNECTION_DROPPED', 'the client disconnected');
    for (const scope of this.inflight) scope.abort(dropped);
    this.active.clear();
    for (const w of this.downloadAcks.values()) w.wake?.();
    this.downloadAcks.clear();
    this.logLimiter?.dispose();
  }

  /** Logs a line the client can cause at will, rate limited per connection and `key` (an error code). */
  private logLimited(level: 'warn' | 'error', key: string, obj: object, msg: string): void {
    this.logLimiter ??= new LogLimiter(this.server.log, this.server.options.logLimit);
    this.logLimiter.write(level, key, { connection: this.id, ...obj }, msg);
  }

  /**
   * Whether the client still takes what it is sent. One that lets more than `maxBufferedBytes` pile up
   * unread is closed (once, logged once) instead of holding the node's memory: a non-reading client
   * with many streams otherwise buffers every event for ever.
   */
  private canSend(): boolean {
    if (!this.isOpen) return false;
    const buffered = this.ws.bufferedAmount;
    const limit = this.server.options.maxBufferedBytes;
    if (buffered <= limit) return true;
    if (!this.overflowed) {
      this.overflowed = true;
      this.server.log.warn({ connection: this.id, remote: this.remoteAddress, buffered, limit }, 'client is not reading what the node sends; closing its connection');
      this.ws.close(1008, `${ErrorCodes.CONNECTION_LIMIT}: ${buffered} bytes unread, over the ${limit}-byte send buffer`.slice(0, 123));
      // The close frame waits behind the unread bytes: a slow reader still gets it, one that never reads is cut.
      const t = setTimeout(() => this.ws.terminate(), 3000);
      t.unref();
    }
    return false;
  }

  private sendJson(env: Envelope, turn?: ReplyTurn): void {
    this.deliver(turn, JSON.stringify(env));
  }

  /** A place in the reply order for a request without a request_id; `deliver` fills it. */
  private takeTurn(): ReplyTurn {
    const turn: ReplyTurn = { frame: undefined };
    this.turns.push(turn);
    const limit = this.server.options.maxPendingRequests;
    if (this.turns.length > limit && this.isOpen) {
      // Replies held for one slow request: a client that keeps sending without reading its answers is cut.
      this.server.log.warn({ connection: this.id, remote: this.remoteAddress, held: this.turns.length, limit }, 'client sent too many requests without a request_id before their replies; closing its connection');
      this.ws.close(1008, `${ErrorCodes.CONNECTION_LIMIT}: over ${limit} replies awaiting an earlier one`.slice(0, 123));
    }
    return turn;
  }

  /** Sends `frame` (none: the request gets no reply), now or, for a turn, once every earlier turn is sent. */
  private deliver(turn: ReplyTurn | undefined, frame: string | Buffer | undefined): void {
    if (turn === undefined) {
      if (frame !== undefined && this.canSend()) this.ws.send(frame);
      return;
    }
    turn.frame = frame ?? null;
    while (this.turns.length > 0 && this.turns[0]!.frame !== undefined) {
      const next = this.turns.shift()!.frame as string | Buffer | null;
      if (next !== null && this.canSend()) this.ws.send(next);
    }
  }

  private sendError(type: string, requestId: string | undefined, err: GridError, turn?: ReplyTurn): void {
    // The last line of defence for paths on the node (the node's own handlers redact already).
    const wire = redactError(err, this.server.options.redactRoots);
    const env: Envelope = { type, error: wire.toWire() };
    if (requestId !== undefined) env.request_id = requestId;
    const data = this.server.options.errorData?.(type, wire);
    if (data !== undefined) env.data = data;
    this.sendJson(env, turn);
  }

  /**
   * A text frame that is not UTF-8: what ws does when it checks (the server skips its check): the
   * connection closes with 1007 and no later frame of it is taken.
   */
  private refuseInvalidUtf8(): void {
    this.invalidUtf8 = true;
    this.server.connectionLog.warn('WS_ERR_INVALID_UTF8', { connection: this.id }, 'connection error: invalid UTF-8 sequence');
    this.ws.close(1007);
  }

  private onMessage(raw: RawData, isBinary: boolean): void {
    if (this.invalidUtf8) return;
    let msg: IncomingMessage;
    try {
      if (isBinary) {
        const frame = decodeBinaryFrame(toBuffer(raw), this.server.jsonLimits);
        if (frame.kind === FrameKind.CHUNK) {
          this.server.uploads.chunk(frame.id, frame.index, frame.body, (received) => {
            this.sendJson({ type: 'transfer-ack', data: { transfer_id: frame.id, received } });
          }, this.uploadAckBytes.get(frame.id) ?? UPLOAD_ACK_BYTES_DEFAULT);
          return;
        }
        msg = frame.message;
      } else {
        const buf = toBuffer(raw);
        const env = parseTextFrame(buf, this.server.jsonLimits, this.server.router.textBytes);
        if (env === undefined) return this.refuseInvalidUtf8();
        msg = env;
      }
    } catch (err) {
      const e = toGridError(err, 'MALFORMED_FRAME');
      this.logLimited('warn', e.code, { code: e.code }, e.message);
      this.sendError('error', undefined, e, this.takeTurn());
      return;
    }
    this.dispatch(msg);
  }

  private dispatch(msg: IncomingMessage): void {
    const { type, request_id: requestId } = msg;
    switch (type) {
      case 'cancel': {
        const parsed = Cancel.safeParse(msg.data);
        if (!parsed.success) return this.sendError(type, requestId, gridError('INVALID_MESSAGE', describeIssues(parsed.error)));
        this.active.get(parsed.data.request_id)?.abort(gridError('ABORTED', 'cancelled by the client'));
        return;
      }
      case 'transfer-ack': {
        const parsed = TransferAck.safeParse(msg.data);
        if (!parsed.success) return this.sendError(type, requestId, gridError('INVALID_MESSAGE', describeIssues(parsed.error)));
        const w = this.downloadAcks.get(parsed.data.transfer_id);
        if (w && parsed.data.received > w.received) {
          w.received = parsed.data.received;
          w.wake?.();
        }
        return;
      }
    }
    const turn = requestId === undefined ? this.takeTurn() : undefined;
    if (type === 'socket-ping') {
      // PyGrid's keepalive (syft.js, SwiftSyft): answered as PyGrid did, plus our envelope fields.
      return this.sendJson({ type, ...(requestId !== undefined && { request_id: requestId }), data: { alive: 'True' } }, turn);
    }
    const route = this.builtin(type) ?? this.server.router.get(type);
    const raw = route === undefined ? this.server.router.rawHandler(type) : undefined;
    if (raw !== undefined) {
      const failed = (err: unknown): RawAnswer => {
        const error = toGridError(err);
        if (error.code === ErrorCodes.INTERNAL) this.logLimited('error', `${ErrorCodes.INTERNAL} ${type}`, { err, type }, `handler for ${type} failed`);
        return { error };
      };
      const answer = (out: RawAnswer): void => {
        if (out === undefined) return this.deliver(turn, undefined);
        if ('error' in out) return this.sendError(type, requestId, out.error, turn);
        return this.sendJson({ type, ...(requestId !== undefined && { request_id: requestId }), data: out.reply }, turn);
      };
      let out: RawAnswer | Promise<RawAnswer>;
      try {
        out = raw(msg, this);
      } catch (err) {
        out = failed(err);
      }
      if (out instanceof Promise) { void out.then(answer, (err: unknown) => answer(failed(err))); return; }
      return answer(out);
    }
    if (route === undefined) {
      return this.sendError(type, requestId, gridError('UNKNOWN_TYPE', `this node does not handle messages of type "${type}"`), turn);
    }
    const isStream = route.def.kind === 'stream';
    const limited = this.overLimit(isStream);
    if (limited !== undefined) return this.sendError(type, requestId, limited, turn);
    let data: unknown = msg.data;
    if (route.accepts?.(data) !== true) {
      const parsed = route.def.request.safeParse(data);
      if (!parsed.success) {
        return this.sendError(type, requestId, gridError('INVALID_MESSAGE', `${type}: ${describeIssues(parsed.error)}`), turn);
      }
      data = parsed.data;
    }
    // Timed only for a metrics listener.
    const started = this.server.options.onRequest ? performance.now() : 0;
    const scope = new RequestScope(this, type, requestId, msg.attachment, turn);
    let result: unknown;
    try {
      result = (route.handler as (d: unknown, c: StreamContext<unknown>) => unknown)(data, scope);
    } catch (err) {
      return this.failed(route, scope, started, err);
    }
    // A handler that answers at once (most metadata reads) replies in this same tick; only one that
    // returns a promise is registered for cancellation and waited on.
    if (!isThenable(result)) return this.replied(route, scope, started, result);
    const key = requestId ?? `anon-${++this.anonymous}`;
    this.active.set(key, scope);
    this.inflight.add(scope);
    if (isStream) this.streams++;
    const settle = () => {
      if (this.active.get(key) === scope) this.active.delete(key);
      this.inflight.delete(scope);
      if (isStream) this.streams--;
    };
    result.then(
      (value) => { settle(); this.replied(route, scope, started, value); },
      (err: unknown) => { settle(); this.failed(route, scope, started, err); },
    );
  }

  /** CONNECTION_LIMIT when one more stream (or pending request) would pass this connection's bound. */
  private overLimit(isStream: boolean): GridError | undefined {
    const { maxStreams, maxPendingRequests } = this.server.options;
    if (isStream && this.streams >= maxStreams) {
      return gridError('CONNECTION_LIMIT', `this connection already has ${this.streams} open streams, the node's limit; cancel one (or end it) before opening another`, { limit: maxStreams });
    }
    const pending = this.inflight.size - this.streams;
    if (!isStream && pending >= maxPendingRequests) {
      return gridError('CONNECTION_LIMIT', `this connection already has ${pending} requests awaiting replies, the node's limit; wait for some before sending more`, { limit: maxPendingRequests });
    }
    return undefined;
  }

  private replied(route: Route, scope: RequestScope, started: number, result: unknown): void {
    if (scope.aborted) { // cancelled or disconnected: the client is not listening
      this.deliver(scope.turn, undefined);
      return this.done(scope, started, undefined);
    }
    const { type, requestId } = scope;
    const isStream = route.def.kind === 'stream';
    const attached = isWithAttachment(result);
    const data = attached ? result.data : result;
    if (this.server.options.checkReplies) {
      const problem = replyProblem(isStream ? (route.def as StreamDef).end : (route.def as RequestDef).reply, data);
      if (problem !== undefined) return this.failed(route, scope, started, new GridError(ErrorCodes.INTERNAL, `${type}: the node built an invalid reply (${problem})`));
    }
    const env: Envelope = { type, data };
    if (requestId !== undefined) env.request_id = requestId;
    if (isStream) env.stream = 'end';
    if (attached) {
      this.deliver(scope.turn, encodeMessageFrame(env, result[ATTACHMENT]));
    } else {
      this.sendJson(env, scope.turn);
    }
    this.done(scope, started, undefined);
  }

  private failed(route: Route, scope: RequestScope, started: number, err: unknown): void {
    const e = toGridError(this.builtinRoutes?.get(route.def.type) === route ? err : this.server.router.failure(route.def.type, err));
    // A client can repeat the request that hits a bug: the first lines say what broke, the rest are counted.
    if (e.code === ErrorCodes.INTERNAL) this.logLimited('error', `${ErrorCodes.INTERNAL} ${route.def.type}`, { err, type: route.def.type }, `handler for ${route.def.type} failed`);
    if (!scope.aborted) this.sendError(scope.type, scope.requestId, e, scope.turn);
    else this.deliver(scope.turn, undefined);
    this.done(scope, started, e.code);
  }

  private done(scope: RequestScope, started: number, code: string | undefined): void {
    const { onRequest } = this.server.options;
    if (onRequest) onRequest(scope.type, performance.now() - started, code);
  }

  /** @internal for RequestScope */
  sendEvent(type: string, requestId: string | undefined, data: unknown): void {
    this.sendJson({ type, ...(requestId !== undefined && { request_id: requestId }), stream: 'event', data });
  }

  /** @internal for RequestScope */
  get gridServer(): GridServer {
    return this.server;
  }

  private builtin(type: string): Route | undefined {
    this.builtinRoutes ??= new Map<string, Route>([
      [Ping.type, { def: Ping, handler: () => ({ time: Date.now() }) }],
      [TransferBegin.type, { def: TransferBegin, handler: async (d: { transfer_id?: string; size: number; chunk_size: number; ack_bytes?: number }) => {
        const r = await this.server.uploads.begin(d.transfer_id, d.size, d.chunk_size, this.server.options.authorizeUpload?.(this, d.size) ?? '');
        // The ack interval belongs to this connection's sender (its window), not to the upload: a resume
        // on another connection names its own.
        this.uploadAckBytes.delete(r.transfer_id);
        // Bounded like the uploads themselves: an abandoned upload's entry goes when the connection does,
        // or here, oldest first.
        if (this.uploadAckBytes.size >= 256) this.uploadAckBytes.delete(this.uploadAckBytes.keys().next().value!);
        if (d.ack_bytes !== undefined) this.uploadAckBytes.set(r.transfer_id, d.ack_bytes);
        return r;
      } }],
      [TransferCommit.type, { def: TransferCommit, handler: (d: { transfer_id: string; sha256: string }) => this.server.uploads.commit(d.transfer_id, d.sha256, this.server.uploads.shared ? this.server.options.authorizeUpload?.(this, 0) ?? '' : '').then((u) => {
        this.uploadAckBytes.delete(d.transfer_id);
        return { transfer_id: d.transfer_id, size: u.size, sha256: u.sha256 };
      }) }],
      [TransferRead.type, { def: TransferRead, handler: (d: { transfer_id: string; offset: number }, ctx: StreamContext<never>) => this.sendDownload(d.transfer_id, d.offset, ctx.signal) }],
      ...(this.server.options.authenticate
        ? [[Authenticate.type, { def: Authenticate, handler: (d: { username: string; password: string } | { token: string }) => this.server.options.authenticate!(d, this) }] as [string, Route]]
        : []),
    ]);
    return this.builtinRoutes.get(type);
  }

  /** Streams an offered download from `offset` as CHUNK frames, at most a window ahead of the client's acks. */
  private async sendDownload(id: string, offset: number, signal: AbortSignal): Promise<{ size: number; sha256: string }> {
    const src = this.server.getDownload(id);
    if (src === undefined) throw gridError('TRANSFER_NOT_FOUND', `download ${id} is unknown or expired; ask for the model again`);
    if (offset > src.size) throw gridError('INVALID_MESSAGE', `download ${id}: offset ${offset} is past its size ${src.size}`);
    const { downloadChunkBytes: chunk, downloadWindowBytes: window } = this.server.options;
    const acks = { received: offset, wake: undefined as (() => void) | undefined };
    this.downloadAcks.set(id, acks);
    try {
      let pos = offset;
      let index = Math.floor(offset / chunk);
      if (offset % chunk !== 0) throw gridError('INVALID_MESSAGE', `download ${id}: offset ${offset} is not a multiple of the chunk size ${chunk}`);
      while (pos < src.size || (pos === 0 && src.size === 0)) {
        while (pos - acks.received >= window && !signal.aborted) await new Promise<void>((r) => { acks.wake = r; });
        if (signal.aborted) throw signal.reason;
        const len = Math.min(chunk, src.size - pos);
        const body = await src.read(pos, len);
        if (body.length !== len) throw gridError('INTERNAL', `download ${id}: source returned ${body.length} bytes at ${pos}, expected ${len}`);
        pos += len;
        const frame = encodeChunk(id, index++, body, pos === src.size);
        if (!this.canSend()) throw gridError('CONNECTION_DROPPED', 'the client disconnected or stopped reading');
        await sendAndDrain(this.ws, frame, 'the client disconnected');
        if (src.size === 0) break;
      }
      return { size: src.size, sha256: src.sha256 };
    } finally {
      if (this.downloadAcks.get(id) === acks) this.downloadAcks.delete(id);
    }
  }
}

/** A reply's place in a connection's order: `undefined` until it is ready, `null` if the request gets none. */
interface ReplyTurn { frame: string | Buffer | null | undefined }

/**
 * What is wrong with a reply the node is about to send as is (GridServerOptions.checkReplies): the
 * schema's refusal, or a field it would strip or a value it would change. Replies go out unvalidated,
 * so a field the schema does not name would reach the client: a stored record's internals spread into
 * a reply, say. Fields the schema adds (defaults) are fine: the client's parse adds them too.
 */
export function replyProblem(schema: z.ZodType, data: unknown): string | undefined {
  const checked = schema.safeParse(data);
  if (!checked.success) return describeIssues(checked.error, 'reply');
  return sentDiffers(data, checked.data, 'reply');
}

function sentDiffers(sent: unknown, parsed: unknown, at: string): string | undefined {
  if (Object.is(sent, parsed)) return undefined;
  if (Array.isArray(sent) && Array.isArray(parsed) && sent.length === parsed.length) {
    for (let i = 0; i < sent.length; i++) {
      const d = sentDiffers(sent[i], parsed[i], `${at}.${i}`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (isPlainObject(sent) && isPlainObject(parsed)) {
    for (const [k, v] of Object.entries(sent)) {
      if (v === undefined) continue; // JSON drops it
      if (!Object.hasOwn(parsed, k)) return `${at}.${k}: not in the reply's schema, which would have stripped it`;
      const d = sentDiffers(v, parsed[k], `${at}.${k}`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return `${at}: the reply's schema changes this value (${JSON.stringify(sent)?.slice(0, 60)} → ${JSON.stringify(parsed)?.slice(0, 60)})`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

function toBuffer(raw: RawData): Buffer {
  if (Buffer.isBuffer(raw)) return raw;
  if (Array.isArray(raw)) return Buffer.concat(raw);
  return Buffer.from(raw);
}

/**
 * The context of one request on the node. Its AbortController is made only when a handler asks for
 * the signal: most requests finish without ever needing one, and this is the hot path.
 */
class RequestScope implements StreamContext<unknown> {
  readonly connection: GridConnection;
  readonly requestId: string | undefined;
  readonly attachment: Buffer | undefined;
  readonly type: string;
  /** Its reply's place in the connection's order (requests without a request_id). */
  readonly turn: ReplyTurn | undefined;
  private controller: AbortController | undefined;
  private reason: unknown;
  aborted = false;

  constructor(connection: GridConnection, type: string, requestId: string | undefined, attachment: Buffer | undefined, turn: ReplyTurn | undefined) {
    this.connection = connection;
    this.type = type;
    this.turn = turn;
    this.requestId = requestId;
    this.attachment = attachment;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get log(): Logger {
    return this.connection.gridServer.log;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }

  emit(event: unknown): void {
    if (!this.aborted) this.connection.sendEvent(this.type, this.requestId, event);
  }

  takeUpload(transferId: string): CommittedUpload {
    return this.connection.gridServer.uploads.take(transferId);
  }

  offerDownload(source: DownloadSource): DownloadOffer {
    return this.connection.gridServer.offerDownload(source);
  }
}
