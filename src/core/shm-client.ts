// The client's half of shared memory for local clients (src/core/shm.ts): when the node is on this
// machine and a request's tensors are big, GridClient.runInference writes the inputs into a region file
// registered once per connection and the node answers with the outputs written back into it; only a
// small envelope crosses the socket. Anything that stops it (the node refuses, the region is gone after a
// reconnect, tmpfs is full) sends that request over the socket instead, so a caller never sees the
// difference except in speed.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, GridError, gridError } from './errors';
import type { Logger } from './logger';
import { RunInferenceShm, ShmRegister, ShmUnregister } from './protocol/shm-messages';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from './protocol/tensor';
import { NONCE_BYTES, privateDirProblem, REGION_ALIGN, REGION_HEADER_BYTES, sharedMemoryDir, isLocalUrl } from './shm';
import type { GridSocket, SocketStatus } from './socket/grid-socket';
import type { ByteSink } from './socket/transfer';

export interface SharedMemoryClientOptions {
  /** Use shared memory with a node on this machine. Default true. */
  enabled?: boolean;
  /** Requests whose encoded inputs (or last outputs of the model) take at least this many bytes use it. Default 64 KiB (bench/node-inference.ts measures where it starts to pay). */
  thresholdBytes?: number;
  /** Size of the region file (sparse on tmpfs: only what is written takes memory). Default 128 MiB. */
  regionBytes?: number;
  /** The per-user folder; sharedMemoryDir() by default, which is where the node looks. */
  dir?: string;
}

export const DEFAULT_SHM_THRESHOLD_BYTES = 64 * 1024;
const DEFAULT_REGION_BYTES = 128 * 1024 * 1024;
/** Room given for outputs of a model not seen yet (its later requests use the size its outputs took). */
const FIRST_OUTPUT_BYTES = 1024 * 1024;

const alignUp = (n: number) => Math.ceil(n / REGION_ALIGN) * REGION_ALIGN;

/** A first-fit allocator over [start, end) with aligned spans; what is freed merges with its neighbours. */
export class Spans {
  private free: { at: number; len: number }[];

  constructor(start: number, end: number) {
    this.free = [{ at: start, len: end - start }];
  }

  alloc(bytes: number): number | undefined {
    const want = alignUp(Math.max(bytes, 1));
    const i = this.free.findIndex((f) => f.len >= want);
    if (i < 0) return undefined;
    const f = this.free[i]!;
    const at = f.at;
    if (f.len === want) this.free.splice(i, 1);
    else { f.at += want; f.len -= want; }
    return at;
  }

  release(at: number, bytes: number): void {
    const len = alignUp(Math.max(bytes, 1));
    let i = 0;
    while (i < this.free.length && this.free[i]!.at < at) i++;
    this.free.splice(i, 0, { at, len });
    // Merge with the next, then with the previous.
    const cur = this.free[i]!;
    const next = this.free[i + 1];
    if (next !== undefined && cur.at + cur.len === next.at) { cur.len += next.len; this.free.splice(i + 1, 1); }
    const prev = this.free[i - 1];
    if (prev !== undefined && prev.at + prev.len === cur.at) { prev.len += cur.len; this.free.splice(i, 1); }
  }
}

/** The client's region file: created mode 0600 in the private folder, removed when retired. */
export class RegionFile {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  readonly nonce: string;
  private readonly fd: number;
  private readonly spans: Spans;
  private users = 0;
  private retired = false;
  private leakedBytes = 0;

  private constructor(name: string, file: string, size: number, fd: number, nonce: string) {
    this.name = name;
    this.path = file;
    this.size = size;
    this.fd = fd;
    this.nonce = nonce;
    this.spans = new Spans(REGION_HEADER_BYTES, size);
  }

  /** Creates a region of `size` bytes in `dir` (made 0700 if missing; refused if it is not this user's private folder). */
  static create(dir: string, size: number): RegionFile {
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const problem = privateDirProblem(dir);
    if (problem !== undefined) throw gridError('SHM_UNAVAILABLE', `the shared-memory folder cannot be used: ${problem}`);
    const name = `region-${randomBytes(18).toString('base64url')}`;
    const file = path.join(dir, name);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      fs.ftruncateSync(fd, size);
      const nonce = randomBytes(NONCE_BYTES);
      fs.writeSync(fd, nonce, 0, NONCE_BYTES, 0);
      return new RegionFile(name, file, size, fd, nonce.toString('base64url'));
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
      throw err;
    }
  }

  get isRetired(): boolean {
    return this.retired;
  }

  alloc(bytes: number): number | undefined {
    return this.retired ? undefined : this.spans.alloc(bytes);
  }

  release(at: number, bytes: number): void {
    this.spans.release(at, bytes);
  }

  /** Bytes of spans given up for good (see leak()). */
  get leaked(): number {
    return this.leakedBytes;
  }

  /** Records spans that are never released: a request that ended here while the node may still write them. */
  leak(bytes: number): void {
    this.leakedBytes += bytes;
  }

  /** Keeps the file open until unuse(), whatever retires it meanwhile. */
  use(): void {
    this.users++;
  }

  unuse(): void {
    this.users--;
    if (this.retired && this.users === 0) this.finish();
  }

  write(parts: readonly Uint8Array[], at: number): void {
    fs.writevSync(this.fd, parts as Uint8Array[], at);
  }

  /** A fresh buffer with bytes [at, at + length): the decoded tensors view it, and the span is reused. */
  read(at: number, length: number): Buffer {
    const buf = Buffer.allocUnsafeSlow(length);
    const n = fs.readSync(this.fd, buf, 0, length, at);
    if (n !== length) throw gridError('SHM_OUT_OF_BOUNDS', `region ${this.name} ended after ${n} of the ${length} output bytes`);
    return buf;
  }

  /** Closes and removes the file once no request uses it; idempotent. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    if (this.users === 0) this.finish();
  }

  private finish(): void {
    try { fs.closeSync(this.fd); } catch { /* closed */ }
    fs.rmSync(this.path, { force: true });
  }
}

/**
 * Codes of a request that ended on this side (timed out, aborted, cut off): the node may still write its
 * outputs into the span, so the spans are not handed to another request.
 */
const UNSETTLED_CODES: ReadonlySet<string> = new Set([ErrorCodes.TIMEOUT, ErrorCodes.ABORTED, ErrorCodes.CONNECTION_DROPPED, ErrorCodes.DISPOSED, ErrorCodes.NOT_CONNECTED, ErrorCodes.RECONNECT_LIMIT]);

/** Codes after which the request goes over the socket instead (and the region is dropped). */
const FALLBACK_CODES: ReadonlySet<string> = new Set([ErrorCodes.SHM_UNAVAILABLE, ErrorCodes.SHM_REGION_NOT_FOUND, ErrorCodes.SHM_REGION_REFUSED, ErrorCodes.UNKNOWN_TYPE]);

export interface ShmRunOptions {
  outputs?: string[];
  signal?: AbortSignal;
  timeoutMs?: number;
  maxOutputBytes?: number;
}

/**
 * Shared memory on one GridSocket: negotiated per connection (on the first big request after each
 * (re)connect), given up for the connection when the node refuses it.
 */
export class SharedMemoryChannel {
  private readonly socket: GridSocket;
  private readonly log: Logger | undefined;
  private readonly enabled: boolean;
  private readonly threshold: number;
  private readonly regionBytes: number;
  private readonly dir: string | undefined;
  private region: RegionFile | undefined;
  private negotiating: Promise<RegionFile | undefined> | undefined;
  /** The node refused shared memory on this connection: the socket carries everything until a reconnect. */
  private refused = false;
  /** Bytes the outputs of each model took last time: the room given for them next time. */
  private readonly outputBytes = new Map<string, number>();
  private disposed = false;
  private listening = false;
  private localUrl: { url: string; local: boolean } | undefined;

  constructor(socket: GridSocket, opts: SharedMemoryClientOptions = {}, log?: Logger) {
    this.socket = socket;
    this.log = log;
    this.enabled = opts.enabled ?? true;
    this.threshold = opts.thresholdBytes ?? DEFAULT_SHM_THRESHOLD_BYTES;
    this.regionBytes = opts.regionBytes ?? DEFAULT_REGION_BYTES;
    this.dir = opts.dir ?? sharedMemoryDir();
    this.onStatus = this.onStatus.bind(this);
  }

  /** The region registered on the current connection, if any (tests, diagnostics). */
  get currentRegion(): RegionFile | undefined {
    return this.region;
  }

  /**
   * Runs the inference through shared memory when that is worth it and possible; undefined when the
   * caller should send it over the socket.
   */
  /**
   * Cheap, synchronous: whether run() may take this request (a local node, shared memory not refused,
   * tensors big enough). The batch-1 path asks only this and never waits on shared memory.
   */
  wants(id: string, inputs: NamedTensors): boolean {
    if (!this.enabled || this.disposed || this.refused || this.dir === undefined) return false;
    if ((this.outputBytes.get(id) ?? 0) < this.threshold) {
      let bytes = 0;
      for (const name in inputs) {
        const data = inputs[name]!.data;
        bytes += Array.isArray(data) ? data.length * 4 : (data as ArrayBufferView).byteLength;
      }
      if (bytes < this.threshold) return false;
    }
    return this.isLocal(this.socket.status.url);
  }

  /** isLocalUrl, remembered for the last URL: asked once per request, it parsed the URL each time. */
  private isLocal(url: string | undefined): boolean {
    if (url === undefined) return false;
    if (url !== this.localUrl?.url) this.localUrl = { url, local: isLocalUrl(url) };
    return this.localUrl.local;
  }

  async run(id: string, inputs: NamedTensors, opts: ShmRunOptions): Promise<NamedTensors | undefined> {
    if (!this.wants(id, inputs)) return undefined;
    const parts = encodeNamedTensorsParts(inputs);
    let size = 0;
    for (const p of parts) size += p.length;
    const hint = this.outputBytes.get(id);
    const region = this.region ?? await (this.negotiating ??= this.negotiate().finally(() => { this.negotiating = undefined; }));
    if (region === undefined || region.isRetired) return undefined;
    const room = hint ?? Math.max(FIRST_OUTPUT_BYTES, size);
    const inAt = region.alloc(size);
    if (inAt === undefined) return undefined; // the region is full of requests in flight: this one takes the socket
    const outAt = region.alloc(room);
    region.use();
    let unsettled = false;
    try {
      try {
        region.write(parts, inAt);
      } catch (err) {
        // tmpfs full (ENOSPC) or the file gone: this connection stops using it.
        this.log?.warn({ err: (err as Error).message, region: region.name }, 'could not write to the shared-memory region; using the socket');
        this.drop(region);
        return undefined;
      }
      const { data, attachment } = await this.socket.call(RunInferenceShm, {
        model_id: id,
        ...(opts.outputs !== undefined && { outputs: opts.outputs }),
        region: region.name,
        input: { offset: inAt, length: size },
        ...(outAt !== undefined && { output: { offset: outAt, length: room } }),
      }, {
        ...(opts.signal !== undefined && { signal: opts.signal }),
        ...(opts.timeoutMs !== undefined && { timeout: opts.timeoutMs }),
      });
      if (data.output !== undefined) {
        if (data.output.offset !== outAt || data.output.length > room) {
          throw gridError('INVALID_MESSAGE', `the node answered run-inference-shm for "${id}" with outputs at [${data.output.offset}, +${data.output.length}), outside the span it was given`);
        }
        this.outputBytes.set(id, data.output.length);
        return decodeNamedTensors(region.read(data.output.offset, data.output.length));
      }
      if (data.download !== undefined) {
        this.outputBytes.set(id, data.download.size);
        return decodeNamedTensors(await this.download(id, data.download, opts));
      }
      if (attachment === undefined) throw gridError('INVALID_MESSAGE', `the node answered run-inference-shm for "${id}" without output tensors`);
      this.outputBytes.set(id, attachment.length);
      return decodeNamedTensors(attachment);
    } catch (err) {
      if (err instanceof GridError && FALLBACK_CODES.has(err.code)) {
        this.log?.info({ code: err.code, message: err.message }, 'shared memory not usable on this connection; using the socket');
        this.drop(region);
        if (err.code !== ErrorCodes.SHM_REGION_NOT_FOUND) this.refused = true;
        return undefined;
      }
      unsettled = err instanceof GridError && UNSETTLED_CODES.has(err.code);
      throw err;
    } finally {
      if (unsettled) {
        // Never reused: a late write of the node must not land in another request's inputs.
        region.leak(alignUp(size) + (outAt !== undefined ? alignUp(room) : 0));
        if (region.leaked > region.size / 2) this.drop(region, true);
      } else {
        region.release(inAt, size);
        if (outAt !== undefined) region.release(outAt, room);
      }
      region.unuse();
    }
  }

  /** Unregisters and removes the region; idempotent. The socket is left as it is. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.socket.off('status', this.onStatus);
    if (this.region !== undefined) this.drop(this.region, true);
  }

  private async negotiate(): Promise<RegionFile | undefined> {
    // Listened to only once shared memory is tried: clients that never send big tensors add no listener.
    if (!this.listening) { this.listening = true; this.socket.on('status', this.onStatus); }
    let region: RegionFile;
    try {
      region = RegionFile.create(this.dir!, this.regionBytes);
    } catch (err) {
      this.log?.info({ err: (err as Error).message }, 'no shared-memory region could be created; using the socket');
      this.refused = true;
      return undefined;
    }
    try {
      await this.socket.request(ShmRegister, { region: region.name, size: region.size, nonce: region.nonce });
    } catch (err) {
      region.retire();
      const code = err instanceof GridError ? err.code : undefined;
      // A dropped connection says nothing about the node: the next connection tries again.
      if (code !== ErrorCodes.CONNECTION_DROPPED && code !== ErrorCodes.TIMEOUT && code !== ErrorCodes.ABORTED) this.refused = true;
      this.log?.info({ code, message: (err as Error).message }, 'the node did not take a shared-memory region; using the socket');
      return undefined;
    }
    if (this.disposed) { region.retire(); return undefined; }
    this.region = region;
    return region;
  }

  /** Stops using `region` (the next big request registers a new one); with `unregister`, tells the node to let go of it. */
  private drop(region: RegionFile, unregister = false): void {
    if (this.region === region) this.region = undefined;
    region.retire();
    if (unregister && this.socket.status.state === 'open') void this.socket.request(ShmUnregister, { region: region.name }).catch(() => {});
  }

  /** A connection that is no longer open took its regions with it (the node removed their files). */
  private onStatus(status: SocketStatus): void {
    if (status.state === 'open') return;
    if (this.region !== undefined) this.drop(this.region);
    this.refused = false;
  }

  private async download(id: string, offer: { transfer_id: string; size: number; sha256: string }, opts: ShmRunOptions): Promise<Buffer> {
    const max = opts.maxOutputBytes ?? 1024 ** 3;
    if (offer.size > max) {
      throw gridError('PAYLOAD_TOO_LARGE', `the outputs of "${id}" take ${offer.size} bytes, over this client's maxOutputBytes of ${max}; ask for fewer outputs or raise maxOutputBytes`, { bytes: offer.size, limit: max });
    }
    const bytes = Buffer.allocUnsafeSlow(offer.size);
    const sink: ByteSink = {
      write: async (chunk, offset) => {
        if (offset + chunk.length > offer.size) throw gridError('PAYLOAD_TOO_LARGE', `the node sent more than the ${offer.size} bytes it announced for the outputs of "${id}"`);
        bytes.set(chunk, offset);
      },
    };
    await this.socket.download(offer, sink, opts.signal !== undefined ? { signal: opts.signal } : {});
    return bytes;
  }
}
