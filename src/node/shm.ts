// The node's half of shared memory for local clients (src/core/shm.ts, docs/protocol.md "Shared memory").
// A connection from the loopback registers region files of its user's private folder; the node opens
// each once, checks it is the client's own file (not a symlink, not another user's, the client's nonce at
// its start), and then reads inputs from and writes outputs to the spans a run-inference-shm names. A
// connection's regions are closed, and their files removed, when it closes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { timingSafeEqual } from 'node:crypto';
import { formatBytes } from '../compute/signature';
import { ErrorCodes, GridError, gridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { RunInferenceShm, ShmRegister, ShmUnregister, type RegionSpan } from '../core/protocol/shm-messages';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../core/protocol/tensor';
import { isLoopbackAddress, NONCE_BYTES, privateDirProblem, REGION_HEADER_BYTES, sharedMemoryDir } from '../core/shm';
import { ownsOrAdmin, requireUser } from './handlers';
import { checkInferenceInputs, type HeldOutputs, type InferenceLimits } from './inference';
import type { NodeMetrics } from './metrics';
import type { ModelStore } from './models';
import { withAttachment, type GridConnection, type GridRouter } from './rpc/server';

export interface SharedMemoryOptions {
  /** Take shared memory from local clients. Default true; off, shm-register gets GRID_ERR_SHM_UNAVAILABLE and clients use the socket. */
  enabled?: boolean;
  /** The per-user folder region files must be in; sharedMemoryDir() by default (the one clients use). */
  dir?: string;
  /** Largest region a client may register. Default 256 MiB. */
  maxRegionBytes?: number;
  /** Regions one connection may hold at once. Default 8. */
  maxRegionsPerConnection?: number;
}

export interface SharedMemoryDeps {
  models: ModelStore;
  metrics: NodeMetrics;
  inference: { limits: InferenceLimits; held: HeldOutputs };
  log: Logger;
  where(): string;
  options?: SharedMemoryOptions;
}

/**
 * Spans up to this size are read and written with sync calls; bigger ones on libuv's thread pool. A
 * sync read of 784 KiB is the faster call (~40 µs vs ~160 µs), but on the pool the copy of the next
 * request's inputs runs on the other core while onnxruntime runs this one on the event loop: with
 * requests in flight, batch-256 throughput went up 1.3–2× (bench/node-inference.ts, 2 vCPUs), and
 * one request at a time was no slower.
 */
const SYNC_IO_BYTES = 64 * 1024;

/** Largest input buffer kept for reuse. */
const SPARE_BUFFER_BYTES = 8 * 1024 * 1024;

/** One registered region file, open for the connection that registered it. */
class Region {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  private readonly fd: number;
  private readonly ino: number;
  private readonly dev: number;
  private users = 0;
  private closed = false;
  /** Input buffers whose run finished, reused by the next reads (a fresh one costs page faults on every request). */
  private readonly spare: Buffer[] = [];
  private unlinkOnClose = false;

  constructor(name: string, file: string, size: number, fd: number, st: fs.Stats) {
    this.name = name;
    this.path = file;
    this.size = size;
    this.fd = fd;
    this.ino = st.ino;
    this.dev = st.dev;
  }

  /** Throws GRID_ERR_SHM_OUT_OF_BOUNDS unless the span lies inside the region. */
  check(span: RegionSpan, what: string): void {
    if (span.offset + span.length > this.size) {
      throw gridError('SHM_OUT_OF_BOUNDS', `${what} span [${span.offset}, ${span.offset + span.length}) reaches past the end of region "${this.name}" (${this.size} bytes)`,
        { region: this.name, offset: span.offset, length: span.length, size: this.size });
    }
  }

  /** Keeps the file open until release(), whatever unregisters it meanwhile. */
  acquire(): void {
    this.users++;
  }

  release(): void {
    this.users--;
    if (this.closed && this.users === 0) this.finish();
  }

  async read(span: RegionSpan): Promise<Buffer> {
    this.ensureOpen();
    // Its own ArrayBuffer, so the decoded tensors are aligned views of it.
    const i = this.spare.findIndex((b) => b.length >= span.length && b.length <= 2 * span.length);
    const buf = i >= 0 ? this.spare.splice(i, 1)[0]!.subarray(0, span.length) : Buffer.allocUnsafeSlow(span.length);
    const n = span.length <= SYNC_IO_BYTES
      ? fs.readSync(this.fd, buf, 0, span.length, span.offset)
      : await new Promise<number>((resolve, reject) => fs.read(this.fd, buf, 0, span.length, span.offset, (err, bytes) => (err ? reject(err) : resolve(bytes))));
    if (n !== span.length) {
      throw gridError('SHM_OUT_OF_BOUNDS', `region "${this.name}" holds only ${this.size - (span.length - n)} bytes now (was it truncated?); the input span needs ${span.offset + span.length}`, { region: this.name });
    }
    return buf;
  }

  /** Takes back a buffer read() gave, once nothing uses the tensors decoded from it. */
  recycle(buf: Buffer): void {
    // A buffer moved to a model thread is detached. Only a few, small ones are kept: memory held for an
    // idle connection stays bounded (4 × SPARE_BUFFER_BYTES), and big inputs are rare enough to pay their faults.
    if (this.closed || buf.buffer.byteLength === 0 || buf.buffer.byteLength > SPARE_BUFFER_BYTES || this.spare.length >= 4) return;
    this.spare.push(Buffer.from(buf.buffer, 0, buf.buffer.byteLength));
  }

  async write(parts: readonly Uint8Array[], offset: number, size: number): Promise<void> {
    this.ensureOpen();
    if (size <= SYNC_IO_BYTES) fs.writevSync(this.fd, parts as Uint8Array[], offset);
    else await new Promise<void>((resolve, reject) => fs.writev(this.fd, parts as Uint8Array[], offset, (err) => (err ? reject(err) : resolve())));
  }

  /** Closes the handle once no request uses it; with `unlink`, removes the file too if it is still the one opened. */
  close(unlink: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.unlinkOnClose = unlink;
    if (this.users === 0) this.finish();
  }

  private ensureOpen(): void {
    if (this.closed) throw gridError('SHM_REGION_NOT_FOUND', `region "${this.name}" was unregistered while the request used it`, { region: this.name });
  }

  private finish(): void {
    if (this.unlinkOnClose) {
      try {
        const st = fs.lstatSync(this.path);
        if (st.ino === this.ino && st.dev === this.dev) fs.unlinkSync(this.path);
      } catch { /* already gone */ }
    }
    try { fs.closeSync(this.fd); } catch { /* closed */ }
  }
}

/**
 * Registers shm-register, shm-unregister and run-inference-shm. Regions live per connection; close()
 * is for the node's shutdown (connections closing release their own).
 */
export function attachSharedMemory(router: GridRouter, deps: SharedMemoryDeps): { close(): void } {
  const opts = deps.options ?? {};
  const enabled = opts.enabled ?? true;
  const dir = opts.dir !== undefined ? path.resolve(opts.dir) : sharedMemoryDir();
  const maxRegionBytes = opts.maxRegionBytes ?? 256 * 1024 * 1024;
  const maxRegions = opts.maxRegionsPerConnection ?? 8;
  const byConnection = new Map<GridConnection, Map<string, Region>>();
  const { models, metrics } = deps;

  const regionsOf = (conn: GridConnection): Map<string, Region> => {
    let regions = byConnection.get(conn);
    if (regions === undefined) {
      const created = new Map<string, Region>();
      regions = created;
      byConnection.set(conn, created);
      conn.onClosed(() => {
        byConnection.delete(conn);
        for (const r of created.values()) r.close(true);
        if (created.size > 0) deps.log.debug({ connection: conn.id, regions: created.size }, 'shared-memory regions released with their connection');
        created.clear();
      });
    }
    return regions;
  };

  const regionOf = (conn: GridConnection, name: string): Region => {
    const r = byConnection.get(conn)?.get(name);
    if (r === undefined) {
      throw gridError('SHM_REGION_NOT_FOUND', `region "${name}" is not registered on this connection (never registered, unregistered, or registered on an earlier connection); register it with shm-register first`, { region: name });
    }
    return r;
  };

  router.handle(ShmRegister, (data, ctx) => {
    if (!enabled) throw gridError('SHM_UNAVAILABLE', `node ${deps.where()} has shared memory turned off; tensors go over the socket`);
    // The TCP peer, not the forwarded client address: a client through a reverse proxy is never local,
    // even when the proxy runs on this machine.
    if (ctx.connection.proxied || !isLoopbackAddress(ctx.connection.peerAddress)) {
      throw gridError('SHM_UNAVAILABLE', `node ${deps.where()} takes shared memory only from clients on its own machine (this connection comes from ${ctx.connection.remoteAddress}); tensors go over the socket`);
    }
    requireUser(ctx, 'shm-register');
    if (dir === undefined) throw gridError('SHM_UNAVAILABLE', `node ${deps.where()} has no shared-memory folder on this platform; tensors go over the socket`);
    const dirProblem = privateDirProblem(dir);
    if (dirProblem !== undefined) throw gridError('SHM_UNAVAILABLE', `node ${deps.where()} cannot use its shared-memory folder: ${dirProblem}; tensors go over the socket`);
    const regions = regionsOf(ctx.connection);
    if (regions.has(data.region)) throw gridError('SHM_REGION_REFUSED', `region "${data.region}" is already registered on this connection`, { region: data.region });
    if (regions.size >= maxRegions) throw gridError('SHM_REGION_REFUSED', `this connection already holds ${regions.size} regions, the node's limit; unregister one first`, { limit: maxRegions });
    if (data.size < REGION_HEADER_BYTES || data.size > maxRegionBytes) {
      throw gridError('SHM_REGION_REFUSED', `region "${data.region}" of ${formatBytes(data.size)} is outside the node's bounds (${REGION_HEADER_BYTES} bytes to ${formatBytes(maxRegionBytes)})`, { region: data.region, size: data.size, limit: maxRegionBytes });
    }
    const file = path.join(dir, data.region);
    let fd: number;
    try {
      // O_NOFOLLOW: a symlink is refused by the open itself, with no window between a check and the open.
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw gridError('SHM_REGION_REFUSED', `region "${data.region}" is a symlink; register the region file itself`, { region: data.region });
      // Not there: the client is not on this machine after all (a tunnelled port, a container).
      if (code === 'ENOENT') throw gridError('SHM_UNAVAILABLE', `node ${deps.where()} finds no region "${data.region}" in its shared-memory folder: the client is not on the node's machine (a tunnel or a container?); tensors go over the socket`, { region: data.region });
      throw gridError('SHM_REGION_REFUSED', `node ${deps.where()} cannot open region "${data.region}" (${code ?? (err as Error).message})`, { region: data.region });
    }
    try {
      const st = fs.fstatSync(fd);
      const refuse = (why: string) => gridError('SHM_REGION_REFUSED', `region "${data.region}" ${why}`, { region: data.region });
      if (!st.isFile()) throw refuse('is not a regular file');
      if (st.uid !== process.getuid?.()) throw refuse(`belongs to uid ${st.uid}, not to the node's user: shared memory is only between processes of one user`);
      if ((st.mode & 0o077) !== 0) throw refuse(`is open to other users (mode ${(st.mode & 0o777).toString(8)}); create it with mode 600`);
      if (st.nlink !== 1) throw refuse(`has ${st.nlink} links; a region is a file of its own`);
      if (st.size < data.size) throw refuse(`holds ${st.size} bytes, fewer than the ${data.size} registered`);
      const head = Buffer.alloc(NONCE_BYTES);
      fs.readSync(fd, head, 0, NONCE_BYTES, 0);
      const nonce = Buffer.from(data.nonce, 'base64url');
      if (nonce.length !== NONCE_BYTES || !timingSafeEqual(head, nonce)) {
        throw gridError('SHM_UNAVAILABLE', `region "${data.region}" on node ${deps.where()} does not start with this client's nonce: client and node see different files (a tunnel or a container?); tensors go over the socket`, { region: data.region });
      }
      regions.set(data.region, new Region(data.region, file, data.size, fd, st));
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    ctx.log.debug({ connection: ctx.connection.id, region: data.region, size: data.size }, 'shared-memory region registered');
    return { region: data.region, size: data.size };
  });

  router.handle(ShmUnregister, (data, ctx) => {
    const regions = byConnection.get(ctx.connection);
    const r = regionOf(ctx.connection, data.region);
    regions!.delete(data.region);
    // The client created the file and removes it; the node only lets go of it.
    r.close(false);
    return { region: data.region, unregistered: true as const };
  });

  router.handle(RunInferenceShm, async (data, ctx) => {
    const s = requireUser(ctx, 'run-inference-shm');
    const model = models.get(data.model_id);
    if (!ownsOrAdmin(s, model) && !model.allow_remote_inference) {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused inference on model "${model.id}": allow_remote_inference is false`, { model_id: model.id });
    }
    const region = regionOf(ctx.connection, data.region);
    region.check(data.input, 'input');
    if (data.output !== undefined) region.check(data.output, 'output');
    const { limits, held } = deps.inference;
    region.acquire();
    let input: Buffer | undefined;
    try {
      input = await region.read(data.input);
      let feeds: NamedTensors;
      try {
        feeds = decodeNamedTensors(input, { check: (headers) => checkInferenceInputs(model.signature, headers, limits, data.outputs), forSession: true });
      } catch (err) {
        throw err instanceof GridError ? err : new GridError(ErrorCodes.INVALID_TENSOR, (err as Error).message);
      }
      const started = performance.now();
      const outputs = await models.run(model, feeds, { signal: ctx, maxOutputBytes: limits.maxOutputBytes, ...(data.outputs !== undefined && { outputs: data.outputs }) });
      const ms = performance.now() - started;
      metrics.observeInference(model.id, ms);
      const reply = {
        model_id: model.id,
        version: model.version,
        outputs: Object.entries(outputs).map(([name, t]) => ({ name, dtype: t.dtype, dims: [...t.dims] })),
        duration_ms: ms,
      };
      const parts = encodeNamedTensorsParts(outputs);
      const size = parts.reduce((n, p) => n + p.length, 0);
      if (data.output !== undefined && size <= data.output.length) {
        await region.write(parts, data.output.offset, size);
        return { ...reply, output: { offset: data.output.offset, length: size } };
      }
      // No room in the span the client gave: the outputs travel as run-inference's do.
      if (size > limits.transferOutputBytes) return { ...reply, download: await held.hold(parts, size, (source) => ctx.offerDownload(source)) };
      return withAttachment(reply, Buffer.concat(parts, size));
    } finally {
      // The run is over (or never started): nothing refers to the inputs any more.
      if (input !== undefined) region.recycle(input);
      region.release();
    }
  });

  return {
    close() {
      for (const regions of byConnection.values()) for (const r of regions.values()) r.close(true);
      byConnection.clear();
    },
  };
}
