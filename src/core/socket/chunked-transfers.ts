// Uploads and downloads over a GridSocket's connection: chunked, sha256-checked, flow-controlled by the
// receiver's acknowledgements, and resumed from the last acknowledged byte after a reconnect, so memory
// stays bounded whatever the payload's size.

import { createHash } from 'node:crypto';
import { ErrorCodes, GridError, gridError, toGridError } from '../errors';
import type { Logger } from '../logger';
import {
  TransferAck, TransferBegin, TransferCommit, TransferRead, UPLOAD_ACK_BYTES_MAX,
  type DownloadOffer, type EndOf, type ReplyOf, type RequestOf,
} from '../protocol/catalogue';
import { allocChunk, chunkFrameInto, chunkHeaderBytes, encodeChunk } from '../protocol/envelope';
import type { ByteSink, ByteSource } from './transfer';

export interface TransferOptions {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
  /** Upload chunk size. Default 1 MiB. */
  chunkSize?: number;
  /** Bytes sent ahead of the peer's acknowledgements. Default 16 MiB. */
  windowBytes?: number;
}

export interface UploadResult {
  transfer_id: string;
  size: number;
  sha256: string;
}

/** The message both ends acknowledge transfer bytes with: the node for uploads, the client for downloads. */
export const TRANSFER_ACK = 'transfer-ack';
/** Download bytes written between two acknowledgements; the node sends at most its window ahead of them. */
const DOWNLOAD_ACK_BYTES = 4 * 1024 * 1024;

/** Resumes refused with RATE_LIMITED tried again, and the longest wait before one. */
const RESUME_RETRIES = 5;
const RESUME_WAIT_MAX_MS = 60_000;

function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.reject(gridError('ABORTED', 'the transfer was aborted'));
  return new Promise((resolve, reject) => {
    const onAbort = () => { clearTimeout(timer); reject(gridError('ABORTED', 'the transfer was aborted')); };
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** What transfers need of the connection; the GridSocket that owns them provides it. */
export interface TransferLink {
  readonly log: Logger;
  /** Incremented on every close: a wait begun on one connection ends when that connection is gone. */
  epoch(): number;
  begin(data: RequestOf<typeof TransferBegin>, signal: AbortSignal | undefined): Promise<ReplyOf<typeof TransferBegin>>;
  commit(data: RequestOf<typeof TransferCommit>, signal: AbortSignal | undefined): Promise<ReplyOf<typeof TransferCommit>>;
  /** Asks for an offered download's bytes from an offset; they arrive through `chunk()`. */
  read(data: RequestOf<typeof TransferRead>, signal: AbortSignal | undefined): Promise<EndOf<typeof TransferRead>>;
  /** Tells the node how many download bytes are written (fire and forget). */
  ack(transferId: string, received: number): void;
  /**
   * Sends a CHUNK frame on the connection of `epoch`; waits for drain when the socket buffer is full.
   * `onSent` is called once the frame's buffer is no longer needed, if the frame was queued at all.
   */
  sendChunk(frame: Buffer, epoch: number, onSent?: () => void): Promise<void>;
  /** Resolves when connected (and re-authenticated) again. */
  whenReady(signal: AbortSignal | undefined): Promise<void>;
}

/** One transfer's wake-up: an ack (upload), a chunk (download), or neither (the connection dropped). */
type TransferEvent = { received?: number; body?: Buffer };

/** The transfers of one GridSocket. */
export class Transfers {
  private readonly link: TransferLink;
  private readonly listeners = new Map<string, (ev: TransferEvent) => void>();

  constructor(link: TransferLink) {
    this.link = link;
  }

  /** A CHUNK frame from the node: bytes of a download. */
  chunk(transferId: string, body: Buffer): void {
    this.listeners.get(transferId)?.({ body });
  }

  /** A `transfer-ack` from the node: how much of an upload it has written. */
  acked(data: unknown): void {
    const parsed = TransferAck.safeParse(data);
    if (parsed.success) this.listeners.get(parsed.data.transfer_id)?.({ received: parsed.data.received });
  }

  /** The connection dropped or the socket gave up: every waiting transfer re-checks its connection. */
  interrupted(): void {
    for (const l of this.listeners.values()) l({});
  }

  /**
   * Uploads bytes in chunks, `windowBytes` ahead of the node's acknowledgements, resuming from the
   * last acknowledged byte after a reconnect. The node checks the sha256 computed here as bytes are read.
   * The result's transfer_id is then named in a request (host-model) that claims the upload.
   */
  async upload(source: ByteSource, options: TransferOptions = {}): Promise<UploadResult> {
    const link = this.link;
    const chunkSize = options.chunkSize ?? 1024 * 1024;
    const windowBytes = Math.max(options.windowBytes ?? 16 * 1024 * 1024, chunkSize);
    const { signal, onProgress } = options;
    const size = source.size;
    // Acks a quarter window apart: the window never runs dry between two, and a GiB costs 256 of them
    // (at 16 MiB) instead of one per chunk. At most an eighth of the upload apart, so a smaller one still
    // shows progress (onProgress follows the acks) before its end.
    let ackBytes: number | undefined = Math.min(UPLOAD_ACK_BYTES_MAX, Math.max(chunkSize, Math.floor(Math.min(windowBytes / 4, size / 8) / chunkSize) * chunkSize));
    const hash = createHash('sha256');
    let hashed = 0;
    let acked = 0;
    let wake: (() => void) | undefined;
    let transferId: string | undefined;
    const begin = async () => {
      const req = { size, chunk_size: chunkSize, ...(ackBytes !== undefined && { ack_bytes: ackBytes }) };
      let r: ReplyOf<typeof TransferBegin>;
      try {
        r = await link.begin(transferId === undefined ? req : { transfer_id: transferId, ...req }, signal);
      } catch (err) {
        // A node from before ack_bytes refuses the field (its schema is strict): ask again without it,
        // and take an ack per MiB from that node.
        if (ackBytes === undefined || !(err instanceof GridError) || err.code !== ErrorCodes.INVALID_MESSAGE || !err.message.includes('ack_bytes')) throw err;
        ackBytes = undefined;
        const { ack_bytes: _, ...plain } = req;
        r = await link.begin(transferId === undefined ? plain : { transfer_id: transferId, ...plain }, signal);
      }
      if (transferId === undefined) {
        transferId = r.transfer_id;
        this.listeners.set(transferId, (ev) => {
          if (ev.received !== undefined && ev.received > acked) { acked = ev.received; onProgress?.(acked, size); }
          // Woken on every ack and on a drop; the waiter re-checks its condition and the connection epoch.
          wake?.();
        });
      }
      acked = r.received;
    };
    // A resume or commit that reaches a replica which took this upload over moments ago is asked to wait
    // before that replica re-reads it from disk again (node/rpc/uploads.ts): wait as told, a few times.
    let digest: string | undefined;
    const waitedFor = async <T>(request: () => Promise<T>): Promise<T> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await request();
        } catch (err) {
          const e = toGridError(err);
          const wait = e.details?.retry_after_ms;
          if (e.code !== ErrorCodes.RATE_LIMITED || typeof wait !== 'number' || attempt >= RESUME_RETRIES) throw e;
          link.log.info({ transfer: transferId, retry_after_ms: wait }, 'the node asks to wait before resuming the upload');
          await abortableDelay(Math.min(wait, RESUME_WAIT_MAX_MS), signal);
        }
      }
    };
    try {
      await begin();
      for (;;) {
        const epoch = link.epoch();
        // Frame buffers reused once the socket has written them out; a new set per connection, as the
        // old one's may still sit in a dead socket's queue.
        const frames = source.readInto ? new FrameBuffers(chunkHeaderBytes(transferId!) + chunkSize, Math.ceil(windowBytes / chunkSize) + 1) : undefined;
        try {
          let pos = acked;
          let index = Math.floor(pos / chunkSize);
          while (pos < size) {
            while (pos - acked >= windowBytes) await this.waitWhileOpen(epoch, signal, (w) => { wake = w; });
            const len = Math.min(chunkSize, size - pos);
            let frame: Buffer;
            let bytes: Uint8Array;
            let onSent: (() => void) | undefined;
            if (source.readInto) {
              const slot = frames!.take();
              const inSlot = slot && chunkFrameInto(slot, transferId!, index, len, pos + len === size);
              if (inSlot) {
                ({ frame, body: bytes } = inSlot);
                onSent = () => frames!.give(slot!);
              } else {
                ({ frame, body: bytes } = allocChunk(transferId!, index, len, pos + len === size));
              }
              await source.readInto(bytes, pos);
            } else {
              bytes = await source.read(pos, len);
              if (bytes.length !== len) throw gridError('INTERNAL', `upload source returned ${bytes.length} bytes at ${pos}, expected ${len}`);
              frame = encodeChunk(transferId!, index, bytes, pos + len === size);
            }
            if (pos === hashed) { hash.update(bytes); hashed += len; }
            await link.sendChunk(frame, epoch, onSent);
            pos += len;
            index += 1;
          }
          while (acked < size) await this.waitWhileOpen(epoch, signal, (w) => { wake = w; });
          if (signal?.aborted) throw gridError('ABORTED', 'the transfer was aborted');
          // Digested once: a commit cut off by a drop comes back here, and a hash cannot be finalised twice.
          digest ??= hash.digest('hex');
          const sha256 = digest;
          return await waitedFor(() => link.commit({ transfer_id: transferId!, sha256 }, signal));
        } catch (err) {
          const e = toGridError(err);
          if (e.code !== ErrorCodes.CONNECTION_DROPPED && e.code !== ErrorCodes.NOT_CONNECTED) throw e;
          link.log.info({ transfer: transferId, acked, size }, 'upload interrupted; resuming after reconnect');
          await link.whenReady(signal);
          await waitedFor(begin);
        }
      }
    } finally {
      if (transferId !== undefined) this.listeners.delete(transferId);
      await source.close?.();
    }
  }

  /**
   * Downloads an offered payload into `sink`, acknowledging what is written so the node never runs more
   * than a window ahead, and resuming after a reconnect. Rejects with CHECKSUM_MISMATCH if the bytes
   * do not hash to the offer's sha256.
   */
  async download(offer: DownloadOffer, sink: ByteSink, options: TransferOptions = {}): Promise<{ size: number; sha256: string }> {
    const link = this.link;
    const { signal, onProgress } = options;
    const id = offer.transfer_id;
    const hash = createHash('sha256');
    let received = 0;
    let writeChain: Promise<void> = Promise.resolve();
    let writeError: GridError | undefined;
    let lastAck = 0;
    this.listeners.set(id, (ev) => {
      const body = ev.body;
      if (body === undefined) return;
      writeChain = writeChain.then(async () => {
        if (writeError) return;
        try {
          await sink.write(body, received);
        } catch (err) {
          writeError = gridError('INTERNAL', `writing the download failed: ${(err as Error).message}`);
          return;
        }
        hash.update(body);
        received += body.length;
        onProgress?.(received, offer.size);
        if (received - lastAck >= DOWNLOAD_ACK_BYTES || received === offer.size) {
          lastAck = received;
          link.ack(id, received);
        }
      });
    });
    try {
      for (;;) {
        try {
          // Chunks before a drop may still be queued for writing; resume from what is on disk.
          await writeChain;
          if (writeError) throw writeError;
          const end = await link.read({ transfer_id: id, offset: received }, signal);
          await writeChain;
          if (writeError) throw writeError;
          // An abort that came while the last chunks were being written still wins over success.
          if (signal?.aborted) throw gridError('ABORTED', 'the download was aborted');
          if (received !== end.size) throw gridError('CHECKSUM_MISMATCH', `download ${id} ended after ${received} of ${end.size} bytes`);
          const actual = hash.digest('hex');
          if (actual !== offer.sha256) throw gridError('CHECKSUM_MISMATCH', `downloaded bytes hash to ${actual}, the node announced ${offer.sha256}`);
          return { size: received, sha256: actual };
        } catch (err) {
          const e = toGridError(err);
          if (e.code !== ErrorCodes.CONNECTION_DROPPED && e.code !== ErrorCodes.NOT_CONNECTED) throw e;
          link.log.info({ transfer: id, received, size: offer.size }, 'download interrupted; resuming after reconnect');
          await link.whenReady(signal);
        }
      }
    } finally {
      this.listeners.delete(id);
    }
  }

  /** Waits for `wake` (set through `setWake`) while the connection of `epoch` stays open. */
  private waitWhileOpen(epoch: number, signal: AbortSignal | undefined, setWake: (w: () => void) => void): Promise<void> {
    if (signal?.aborted) return Promise.reject(gridError('ABORTED', 'the transfer was aborted'));
    if (epoch !== this.link.epoch()) return Promise.reject(gridError('CONNECTION_DROPPED', 'the connection dropped during a transfer'));
    return new Promise((resolve, reject) => {
      const onAbort = () => { setWake(() => {}); reject(gridError('ABORTED', 'the transfer was aborted')); };
      signal?.addEventListener('abort', onAbort, { once: true });
      setWake(() => {
        signal?.removeEventListener('abort', onAbort);
        if (epoch !== this.link.epoch()) reject(gridError('CONNECTION_DROPPED', 'the connection dropped during a transfer'));
        else resolve();
      });
    });
  }
}

/**
 * Chunk frame buffers of one size, reused once sent: at most `max` are made (frames in flight are bounded
 * by the upload window); beyond that take() gives undefined and the caller allocates one for the chunk.
 */
class FrameBuffers {
  private readonly free: Buffer[] = [];
  private made = 0;

  constructor(private readonly size: number, private readonly max: number) {}

  take(): Buffer | undefined {
    const b = this.free.pop();
    if (b) return b;
    if (this.made >= this.max) return undefined;
    this.made++;
    return Buffer.allocUnsafeSlow(this.size);
  }

  give(b: Buffer): void {
    this.free.push(b);
  }
}
