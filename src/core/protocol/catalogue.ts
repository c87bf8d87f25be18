// The message catalogue: one zod schema per message, shared by client (GridSocket) and node (GridRouter).
// Core messages live here; grid operations live in messages.ts. Each definition says who sends it.

import { z } from 'zod';

export interface RequestDef<Req = unknown, Rep = unknown> {
  readonly kind: 'request';
  readonly type: string;
  readonly request: z.ZodType<Req>;
  readonly reply: z.ZodType<Rep>;
  /** Safe to send twice: re-sent after a reconnect instead of failing with CONNECTION_DROPPED. */
  readonly idempotent: boolean;
  /**
   * A string field of `data` that a node takes as bytes (a JsonText over the frame) when it holds most of
   * the frame, so it is decoded without becoming a JS string; its schema must accept a JsonText.
   */
  readonly textBytes?: string;
}

export interface StreamDef<Req = unknown, Ev = unknown, End = unknown> {
  readonly kind: 'stream';
  readonly type: string;
  readonly request: z.ZodType<Req>;
  readonly event: z.ZodType<Ev>;
  readonly end: z.ZodType<End>;
  /** Re-sent after a reconnect so the stream continues (the node must accept the repeat). */
  readonly resubscribe: boolean;
}

export type MessageDef = RequestDef<any, any> | StreamDef<any, any, any>;
export type RequestOf<D> = D extends RequestDef<infer R, any> ? R : D extends StreamDef<infer R, any, any> ? R : never;
export type ReplyOf<D> = D extends RequestDef<any, infer R> ? R : never;
export type EventOf<D> = D extends StreamDef<any, infer E, any> ? E : never;
export type EndOf<D> = D extends StreamDef<any, any, infer E> ? E : never;

export function defineRequest<Req, Rep>(type: string, def: { request: z.ZodType<Req>; reply: z.ZodType<Rep>; idempotent?: boolean; textBytes?: string }): RequestDef<Req, Rep> {
  return { kind: 'request', type, request: def.request, reply: def.reply, idempotent: def.idempotent ?? false, ...(def.textBytes !== undefined && { textBytes: def.textBytes }) };
}

export function defineStream<Req, Ev, End>(type: string, def: { request: z.ZodType<Req>; event: z.ZodType<Ev>; end: z.ZodType<End>; resubscribe?: boolean }): StreamDef<Req, Ev, End> {
  return { kind: 'stream', type, request: def.request, event: def.event, end: def.end, resubscribe: def.resubscribe ?? true };
}

/** Turns a zod failure into one line naming the field: `data.model_id: expected string, received number`. */
export function describeIssues(error: z.ZodError, root = 'data'): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${[root, ...i.path.map(String)].join('.')}: ${i.message}`)
    .join('; ');
}

const empty = z.object({}).passthrough().optional();
export const TRANSFER_ID = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const SHA256 = z.string().regex(/^[0-9a-f]{64}$/);

// client → node; node replies with its clock. PyGrid's `socket-ping` is answered too (see server.ts).
export const Ping = defineRequest('ping', {
  request: empty,
  reply: z.object({ time: z.number() }),
  idempotent: true,
});

// client → node, no reply: stop the stream or request with this id (teardown).
export const Cancel = z.object({ request_id: z.string() });

// client → node. With a password: a new session; with a token: the session resumed after a reconnect.
export const Authenticate = defineRequest('authenticate', {
  request: z.union([
    z.object({ username: z.string().min(1).max(128), password: z.string().max(1024) }).strict(),
    z.object({ token: z.string().min(1).max(512) }).strict(),
  ]),
  reply: z.object({ token: z.string(), user: z.string(), expires_at: z.number().optional() }).passthrough(),
  idempotent: true,
});

// client → node: start or resume an upload. The node answers with the bytes it already holds.
/** Upload bytes between two transfer-acks when the client names none (transfer-begin's ack_bytes). */
export const UPLOAD_ACK_BYTES_DEFAULT = 1024 * 1024;
/** The most ack_bytes a client may ask for. */
export const UPLOAD_ACK_BYTES_MAX = 256 * 1024 * 1024;

export const TransferBegin = defineRequest('transfer-begin', {
  request: z.object({
    transfer_id: TRANSFER_ID.optional(),
    size: z.number().int().nonnegative(),
    chunk_size: z.number().int().positive().max(16 * 1024 * 1024),
    // How often the client wants a transfer-ack, in bytes (its window over a few): fewer acks, fewer
    // wake-ups on both sides. The node acks each time its bytes on disk cross a multiple of it, and at the
    // end. Absent: every 1 MiB.
    ack_bytes: z.number().int().positive().max(UPLOAD_ACK_BYTES_MAX).optional(),
  }).strict(),
  reply: z.object({ transfer_id: TRANSFER_ID, received: z.number().int().nonnegative() }),
  idempotent: true,
});

// client → node: all chunks sent; the node checks size and sha256 and keeps the file for a handler.
export const TransferCommit = defineRequest('transfer-commit', {
  request: z.object({ transfer_id: TRANSFER_ID, sha256: SHA256 }).strict(),
  reply: z.object({ transfer_id: TRANSFER_ID, size: z.number(), sha256: SHA256 }),
  idempotent: true,
});

// either side → the other, no reply: "I hold `received` bytes of this transfer" (flow control + resume).
export const TransferAck = z.object({ transfer_id: TRANSFER_ID, received: z.number().int().nonnegative() });

// client → node: send me the bytes of an offered download from `offset`; chunks arrive as CHUNK frames.
export const TransferRead = defineStream('transfer-read', {
  request: z.object({ transfer_id: TRANSFER_ID, offset: z.number().int().nonnegative() }).strict(),
  event: z.never(),
  end: z.object({ size: z.number(), sha256: SHA256 }),
  resubscribe: false,
});

/** How a handler announces a download, returned inside its reply. */
export const DownloadOffer = z.object({ transfer_id: TRANSFER_ID, size: z.number().int().nonnegative(), sha256: SHA256 });
export type DownloadOffer = z.infer<typeof DownloadOffer>;
