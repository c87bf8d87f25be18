// The two frame shapes on the wire.
//
// Text: a JSON envelope, PyGrid-compatible `{"type", "request_id"?, "data"?}`. Replies echo `type` and
// `request_id`; an error reply carries `error: {code, message, details?}`; stream events carry
// `stream: "event"` and the stream's last message `stream: "end"`.
//
// Binary: a 16-byte header, then the id (UTF-8, padded to 8), then the body.
//   0  'G' 'W'         magic
//   2  u8 version      1
//   3  u8 kind         1 = MESSAGE (an envelope and its attachment in one frame), 2 = CHUNK (a transfer chunk)
//   4  u8 flags        bit 0 = last chunk
//   5  u8 id length    request id (MESSAGE) or transfer id (CHUNK), ≤ 255 bytes
//   6  u16 reserved
//   8  u32 index       chunk index (CHUNK), 0 for MESSAGE
//   12 u32 extra       JSON length (MESSAGE), body length (CHUNK)
//   16 id bytes, padded to a multiple of 8
//   MESSAGE body: JSON envelope, padded to 8, then the attachment bytes (8-aligned for tensors)

import { isUtf8 } from 'node:buffer';
import { gridError, type ErrorCode } from '../errors';
import { isPlainAscii, JsonText } from './text-bytes';

export interface WireError {
  code: ErrorCode | string;
  message: string;
  details?: Record<string, unknown>;
}

export interface Envelope {
  type: string;
  request_id?: string;
  data?: unknown;
  error?: WireError;
  stream?: 'event' | 'end';
}

/** An envelope with its binary attachment, as delivered to handlers and listeners. */
export interface IncomingMessage extends Envelope {
  attachment?: Buffer;
}

export const FrameKind = { MESSAGE: 1, CHUNK: 2 } as const;
export const FLAG_LAST = 1;
const MAGIC0 = 0x47;
const MAGIC1 = 0x57;
const VERSION = 1;
const HEADER = 16;
const pad8 = (n: number) => (n + 7) & ~7;

/**
 * The one bound on a JSON envelope a node parses, whichever frame kind carries it. Checked on the bytes
 * before JSON.parse: parsing deeply nested or container-heavy JSON costs far more than its size
 * suggests (4 MiB of `[` blocks the event loop for most of a second), and it would block every client.
 */
export interface JsonLimits {
  /** Bytes of JSON text. */
  maxBytes: number;
  /** Nesting of objects and arrays; the envelope itself is depth 1. */
  maxDepth: number;
  /** Objects and arrays in one envelope. */
  maxContainers: number;
}

export const DEFAULT_JSON_LIMITS: Readonly<JsonLimits> = { maxBytes: 4 * 1024 * 1024, maxDepth: 64, maxContainers: 100_000 };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const OPEN_OBJECT = 0x7b;
const CLOSE_ARRAY = 0x5d;
const CLOSE_OBJECT = 0x7d;

/**
 * Refuses JSON bytes over `limits` in one linear scan, without parsing: PAYLOAD_TOO_LARGE for size,
 * MALFORMED_FRAME for nesting or container count. Brackets inside strings do not count (UTF-8 never
 * puts an ASCII byte inside a multi-byte character, so a byte scan is exact). Malformed JSON that
 * passes is left to JSON.parse. Returns where the contents of the longest string start and end (offsets
 * from `start`; undefined when there is no string), for parseEnvelopeBytes.
 */
export function checkJsonLimits(buf: Uint8Array, start: number, end: number, limits: JsonLimits): { start: number; end: number } | undefined {
  const bytes = end - start;
  if (bytes > limits.maxBytes) {
    throw gridError('PAYLOAD_TOO_LARGE', `a ${bytes}-byte JSON envelope exceeds this node's ${limits.maxBytes}-byte limit; send large payloads as uploads or binary attachments`, { limit: limits.maxBytes, bytes });
  }
  // A view of exactly the JSON bytes, so Buffer's native indexOf (memchr) can jump over string contents:
  // most of a large envelope is one long string (a base64 diff), which a byte loop in JS crawls through.
  const view = Buffer.from(buf.buffer, buf.byteOffset + start, bytes);
  let depth = 0;
  let containers = 0;
  let longest: { start: number; end: number } | undefined;
  for (let i = 0; i < bytes; i++) {
    const b = view[i];
    if (b === QUOTE) {
      // The closing quote is the first one not escaped: preceded by an even run of backslashes.
      const open = i;
      for (;;) {
        i = view.indexOf(QUOTE, i + 1);
        if (i < 0) return longest; // an unterminated string: no structure after it; JSON.parse refuses it
        let k = i - 1;
        while (k > open && view[k] === BACKSLASH) k--;
        if ((i - 1 - k) % 2 === 0) break;
      }
      if (longest === undefined || i - open - 1 > longest.end - longest.start) longest = { start: open + 1, end: i };
    } else if (b === OPEN_ARRAY || b === OPEN_OBJECT) {
      if (++depth > limits.maxDepth) {
        throw gridError('MALFORMED_FRAME', `JSON envelope is nested deeper than this node's limit of ${limits.maxDepth} levels`, { limit: limits.maxDepth });
      }
      if (++containers > limits.maxContainers) {
        throw gridError('MALFORMED_FRAME', `JSON envelope holds more than this node's limit of ${limits.maxContainers} objects and arrays`, { limit: limits.maxContainers });
      }
    } else if (b === CLOSE_ARRAY || b === CLOSE_OBJECT) {
      depth--;
    }
  }
  return longest;
}

/** A string this long is taken out of the JSON text before JSON.parse (parseAroundLongString). */
const LONG_STRING_BYTES = 64 * 1024;

/**
 * Which string of a message type's `data` a node takes as bytes (a JsonText) when it is the envelope's
 * long string: RequestDef.textBytes, e.g. a report's `diff`. Undefined: every string is a string.
 */
export type TextBytesField = (type: string) => string | undefined;

/** parseEnvelope for bytes, checked against `limits` before they are decoded or parsed. */
export function parseEnvelopeBytes(buf: Buffer, start: number, end: number, limits: JsonLimits, textBytes?: TextBytesField): Envelope {
  return parseBytes(buf, start, end, limits, textBytes, false)!;
}

/**
 * parseEnvelopeBytes for a whole text frame whose UTF-8 its WebSocket did not check (the node's ws runs
 * with skipUTF8Validation): undefined when the bytes are not UTF-8, which ws would have refused before
 * anything else (closing with 1007). The check costs no pass of its own over a long plain string: its
 * printable-ASCII check covers it, and isUtf8 reads only the bytes around it.
 */
export function parseTextFrame(buf: Buffer, limits: JsonLimits, textBytes?: TextBytesField): Envelope | undefined {
  return parseBytes(buf, 0, buf.length, limits, textBytes, true);
}

/** With `checkUtf8`, undefined for bytes that are not UTF-8 (whatever else is wrong with them). */
function parseBytes(buf: Buffer, start: number, end: number, limits: JsonLimits, textBytes: TextBytesField | undefined, checkUtf8: boolean): Envelope | undefined {
  let longest: { start: number; end: number } | undefined;
  try {
    longest = checkJsonLimits(buf, start, end, limits);
  } catch (err) {
    if (checkUtf8 && !isUtf8(buf.subarray(start, end))) return undefined;
    throw err;
  }
  if (longest !== undefined && longest.end - longest.start >= LONG_STRING_BYTES) {
    const env = parseAroundLongString(buf, start, end, start + longest.start, start + longest.end, textBytes, checkUtf8);
    if (env !== undefined) return env;
  }
  if (checkUtf8 && !isUtf8(buf.subarray(start, end))) return undefined;
  return parseEnvelope(buf.toString('utf8', start, end));
}

/** What stands in for the long string while the rest is parsed: two NULs cannot come from a frame's own text unescaped. */
const PLACEHOLDER_JSON = '\\u0000\\u0000long';
const PLACEHOLDER = '\u0000\u0000long';

/**
 * An envelope most of whose bytes are one string (a report's base64 diff, a host's hex model): JSON.parse
 * over the rest, and the string copied straight from the bytes. Parsing it would decode it from UTF-8 to
 * a string and then scan it again into another; for a string of printable ASCII with no escape, the bytes
 * are its text. Where `textBytes` names that string's place (`data.<field>` of its type), it is not made
 * a string at all: it stays a JsonText over the frame's bytes. Undefined when the string is not plain
 * (or the rest does not parse: the full parse words the refusal, a raw control character included; or,
 * with `checkUtf8`, the rest is not UTF-8), and the caller parses the whole frame.
 */
function parseAroundLongString(buf: Buffer, start: number, end: number, from: number, to: number, textBytes: TextBytesField | undefined, checkUtf8: boolean): Envelope | undefined {
  const contents = buf.subarray(from, to);
  if (!isPlainAscii(contents)) return undefined; // a backslash too: the string's bytes would not be its text
  // The string is ASCII and bounded by quotes (ASCII too), so the frame is UTF-8 iff the bytes around it are.
  if (checkUtf8 && !(isUtf8(buf.subarray(start, from)) && isUtf8(buf.subarray(to, end)))) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8', start, from) + PLACEHOLDER_JSON + buf.toString('utf8', to, end));
  } catch {
    return undefined;
  }
  if (value === PLACEHOLDER || typeof value !== 'object' || value === null) return undefined;
  const env = value as { type?: unknown; data?: unknown };
  const field = typeof env.type === 'string' ? textBytes?.(env.type) : undefined;
  const data = env.data as Record<string, unknown> | undefined;
  const asBytes = field !== undefined && typeof data === 'object' && data !== null && !Array.isArray(data) && Object.hasOwn(data, field) && data[field] === PLACEHOLDER;
  // ASCII reads the same in every encoding; Node's UTF-8 path is the fastest of them (latin1's is not).
  const long = asBytes ? new JsonText(contents) : buf.toString('utf8', from, to);
  // The placeholder must be exactly one value: one that also came from the frame's own text leaves it ambiguous.
  let found = 0;
  const visit = (v: unknown): void => {
    if (typeof v !== 'object' || v === null) return;
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (o[k] !== PLACEHOLDER) { visit(o[k]); continue; }
      found++;
      o[k] = long; // an own property, "__proto__" included (JSON.parse makes every key one)
    }
  };
  visit(value);
  return found === 1 ? checkEnvelope(value) : undefined;
}

export function parseEnvelope(text: string): Envelope {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw gridError('MALFORMED_FRAME', `frame is not JSON: ${(err as Error).message}`);
  }
  return checkEnvelope(value);
}

export function checkEnvelope(value: unknown): Envelope {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw gridError('MALFORMED_FRAME', 'frame is not a JSON object envelope {type, request_id, data}');
  }
  const env = value as Record<string, unknown>;
  if (typeof env.type !== 'string' || env.type.length === 0 || env.type.length > 128) {
    throw gridError('MALFORMED_FRAME', 'envelope has no "type" string (1-128 characters)');
  }
  if (env.request_id !== undefined && (typeof env.request_id !== 'string' || env.request_id.length > 255)) {
    throw gridError('MALFORMED_FRAME', `envelope "request_id" must be a string of at most 255 characters (type ${env.type})`);
  }
  if (env.stream !== undefined && env.stream !== 'event' && env.stream !== 'end') {
    throw gridError('MALFORMED_FRAME', `envelope "stream" must be "event" or "end" (type ${env.type})`);
  }
  if (env.error !== undefined) {
    const e = env.error as Record<string, unknown> | null;
    if (typeof e !== 'object' || e === null || typeof e.code !== 'string' || typeof e.message !== 'string') {
      throw gridError('MALFORMED_FRAME', `envelope "error" must be {code, message} (type ${env.type})`);
    }
  }
  return env as unknown as Envelope;
}

export interface ChunkFrame {
  kind: typeof FrameKind.CHUNK;
  id: string;
  index: number;
  last: boolean;
  body: Buffer;
}

export interface MessageFrame {
  kind: typeof FrameKind.MESSAGE;
  message: IncomingMessage;
}

/** Bytes of a frame id in UTF-8, checked against the header's one-byte length. */
function frameIdBytes(id: string): number {
  // Request ids are short ASCII: their length is their byte count, without a scan or a buffer.
  const n = isAsciiString(id) ? id.length : Buffer.byteLength(id, 'utf8');
  if (n > 255) throw gridError('INVALID_MESSAGE', `binary frame id is ${n} bytes; at most 255`);
  return n;
}

function isAsciiString(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * Text up to this many characters (a request's or reply's envelope, an id) is checked and written as
 * ASCII by hand rather than through Buffer's native UTF-8 codec: a few hundred bytes cost less in a JS
 * loop than the native calls do when the caller's caches went cold waiting for its peer (issue 18).
 */
const SHORT_TEXT = 1024;

/** Writes ASCII `s` at `at` of `buf`, one byte per character (the caller checked it is ASCII). */
function writeAscii(buf: Buffer, s: string, at: number): void {
  for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i);
}

/** Writes a frame header at the start of `buf` (id of `idLength` bytes); returns where the body starts. */
function putHeader(buf: Buffer, kind: number, flags: number, id: string, idLength: number, index: number, extra: number): number {
  const bodyAt = HEADER + pad8(idLength);
  buf[0] = MAGIC0; buf[1] = MAGIC1; buf[2] = VERSION; buf[3] = kind; buf[4] = flags; buf[5] = idLength;
  buf.writeUInt16LE(0, 6);
  buf.writeUInt32LE(index, 8);
  buf.writeUInt32LE(extra, 12);
  // An id whose byte count is its length is ASCII (frameIdBytes): written by hand, as the JSON is (writeText).
  if (idLength === id.length) writeAscii(buf, id, HEADER);
  else buf.write(id, HEADER, idLength, 'utf8');
  buf.fill(0, HEADER + idLength, bodyAt);
  return bodyAt;
}

function writeHeader(kind: number, flags: number, id: string, index: number, extra: number, bodyLength: number): { buf: Buffer; bodyAt: number } {
  const idLength = frameIdBytes(id);
  const buf = Buffer.allocUnsafe(HEADER + pad8(idLength) + bodyLength);
  return { buf, bodyAt: putHeader(buf, kind, flags, id, idLength, index, extra) };
}

/**
 * A transfer chunk frame whose body is still to be filled: an upload reads file bytes straight into
 * `body`, so a chunk costs one buffer and no copy on the way out.
 */
export function allocChunk(id: string, index: number, length: number, last: boolean): { frame: Buffer; body: Buffer } {
  const { buf, bodyAt } = writeHeader(FrameKind.CHUNK, last ? FLAG_LAST : 0, id, index, length, length);
  return { frame: buf, body: buf.subarray(bodyAt) };
}

/**
 * Like allocChunk, in `into` (reused from chunk to chunk: a fresh 1 MiB buffer per chunk costs the first
 * touch of its pages and garbage collection). Undefined when `into` is too small for this chunk.
 */
export function chunkFrameInto(into: Buffer, id: string, index: number, length: number, last: boolean): { frame: Buffer; body: Buffer } | undefined {
  const idLength = frameIdBytes(id);
  if (into.length < HEADER + pad8(idLength) + length) return undefined;
  const bodyAt = putHeader(into, FrameKind.CHUNK, last ? FLAG_LAST : 0, id, idLength, index, length);
  return { frame: into.subarray(0, bodyAt + length), body: into.subarray(bodyAt, bodyAt + length) };
}

/** Bytes of a chunk frame's header for transfer `id`. */
export function chunkHeaderBytes(id: string): number {
  return HEADER + pad8(Buffer.byteLength(id, 'utf8'));
}

/** A transfer chunk: header and body in one frame. */
export function encodeChunk(id: string, index: number, body: Uint8Array, last: boolean): Buffer {
  const { buf, bodyAt } = writeHeader(FrameKind.CHUNK, last ? FLAG_LAST : 0, id, index, body.length, body.length);
  buf.set(body, bodyAt);
  return buf;
}

/**
 * One frame carrying an envelope and its attachment (inference tensors). The attachment may be given in
 * parts (encodeNamedTensorsParts: views of the tensors' own memory), copied once, straight into the frame.
 * With `into`, the frame is written at the start of the buffer it gives for the frame's size when that
 * buffer is big enough (a reused one: frame-pool.ts), else in a fresh one.
 */
export function encodeMessageFrame(env: Envelope, attachment: Uint8Array | readonly Uint8Array[], into?: (bytes: number) => Buffer | undefined): Buffer {
  const json = JSON.stringify(env);
  const ascii = json.length <= SHORT_TEXT && isAsciiString(json);
  const jsonBytes = ascii ? json.length : Buffer.byteLength(json, 'utf8');
  const jsonPadded = pad8(jsonBytes);
  let attachmentBytes = 0;
  if (attachment instanceof Uint8Array) attachmentBytes = attachment.length;
  else for (const part of attachment) attachmentBytes += part.length;
  const id = env.request_id ?? '';
  let buf: Buffer;
  let bodyAt: number;
  const idLength = frameIdBytes(id);
  const size = HEADER + pad8(idLength) + jsonPadded + attachmentBytes;
  const given = into?.(size);
  if (given !== undefined && given.length >= size) {
    buf = given.subarray(0, size);
    bodyAt = putHeader(buf, FrameKind.MESSAGE, 0, id, idLength, 0, jsonBytes);
  } else {
    ({ buf, bodyAt } = writeHeader(FrameKind.MESSAGE, 0, id, 0, jsonBytes, jsonPadded + attachmentBytes));
  }
  if (ascii) writeAscii(buf, json, bodyAt);
  else buf.write(json, bodyAt, 'utf8');
  buf.fill(0x20, bodyAt + jsonBytes, bodyAt + jsonPadded);
  let at = bodyAt + jsonPadded;
  if (attachment instanceof Uint8Array) buf.set(attachment, at);
  else for (const part of attachment) { buf.set(part, at); at += part.length; }
  return buf;
}

/** Decodes a binary frame; with `limits`, a MESSAGE frame's JSON is held to them (from its header length first). */
export function decodeBinaryFrame(buf: Buffer, limits?: JsonLimits): ChunkFrame | MessageFrame {
  if (buf.length < HEADER) throw gridError('MALFORMED_FRAME', `binary frame of ${buf.length} bytes is shorter than the ${HEADER}-byte header`);
  if (buf[0] !== MAGIC0 || buf[1] !== MAGIC1) throw gridError('MALFORMED_FRAME', 'binary frame does not start with the "GW" magic');
  if (buf[2] !== VERSION) throw gridError('MALFORMED_FRAME', `binary frame version ${buf[2]} is not supported (expected ${VERSION})`);
  const kind = buf[3]!;
  const flags = buf[4]!;
  const idLen = buf[5]!;
  const index = buf.readUInt32LE(8);
  const extra = buf.readUInt32LE(12);
  const bodyAt = HEADER + pad8(idLen);
  if (buf.length < bodyAt) throw gridError('MALFORMED_FRAME', 'binary frame is truncated inside its id');
  if (kind === FrameKind.CHUNK) {
    const id = buf.toString('utf8', HEADER, HEADER + idLen);
    if (buf.length - bodyAt !== extra) throw gridError('MALFORMED_FRAME', `chunk ${index} of transfer ${id} announces ${extra} bytes but carries ${buf.length - bodyAt}`);
    return { kind, id, index, last: (flags & FLAG_LAST) !== 0, body: buf.subarray(bodyAt) };
  }
  if (kind === FrameKind.MESSAGE) {
    if (limits !== undefined && extra > limits.maxBytes) {
      throw gridError('PAYLOAD_TOO_LARGE', `message frame announces a ${extra}-byte JSON envelope; this node's limit is ${limits.maxBytes} bytes (tensors belong in the attachment)`, { limit: limits.maxBytes, bytes: extra });
    }
    const jsonEnd = bodyAt + extra;
    if (jsonEnd > buf.length) throw gridError('MALFORMED_FRAME', 'message frame is truncated inside its JSON envelope');
    const env = limits === undefined ? parseEnvelope(buf.toString('utf8', bodyAt, jsonEnd)) : parseEnvelopeBytes(buf, bodyAt, jsonEnd, limits);
    const attachAt = bodyAt + pad8(extra);
    if (attachAt > buf.length) throw gridError('MALFORMED_FRAME', 'message frame is truncated before its attachment');
    // The envelope is a fresh object from JSON.parse: the attachment goes onto it, not into a copy.
    // The frame's id is not decoded: the envelope names the request (and each string decoded costs a
    // native call, ~5 µs when a client's caches went cold waiting for the reply, issue 18).
    const message: IncomingMessage = env;
    message.attachment = buf.subarray(attachAt);
    return { kind, message };
  }
  throw gridError('MALFORMED_FRAME', `binary frame kind ${kind} is unknown`);
}
