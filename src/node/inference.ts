// Remote inference limits (docs/node.md, "Inference limits"). A request's cost is not its size: a few
// bytes of shape can ask ConstantOfShape for gigabytes, and a few bytes per string cost a JS string each.
// So inputs are checked from their headers before decoding, outputs are bounded before and after the
// run, and outputs too big for one frame are held for the client to download in chunks.

import { createHash } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { checkFeedShapes, checkOutputBytes, formatBytes, knownOutputBytes } from '../compute/signature';
import { gridError } from '../core/errors';
import type { DownloadOffer } from '../core/protocol/catalogue';
import type { ModelSignature } from '../core/protocol/messages';
import type { TensorHeader } from '../core/protocol/tensor';
import type { DownloadSource } from './rpc/server';

export interface InferenceLimits {
  /** Most bytes one request's outputs may take. Default 256 MiB. */
  maxOutputBytes: number;
  /** Outputs whose encoding is bigger than this go to the client as a chunked download, not in the reply frame. Default 16 MiB. */
  transferOutputBytes: number;
  /** Most string elements in one request's inputs (each costs a JS string, ~100× its wire bytes when empty). Default 1 Mi. */
  maxStringElements: number;
  /** Most output bytes held in memory for downloads at once, over all clients. Default 1 GiB. */
  heldOutputBytes: number;
  /** An output held for download is dropped after this long without a read. Default 60 s. */
  heldOutputTtlMs: number;
}

export const DEFAULT_INFERENCE_LIMITS: Readonly<InferenceLimits> = {
  maxOutputBytes: 256 * 1024 * 1024,
  transferOutputBytes: 16 * 1024 * 1024,
  maxStringElements: 1024 * 1024,
  heldOutputBytes: 1024 * 1024 * 1024,
  heldOutputTtlMs: 60_000,
};

export function resolveInferenceLimits(given: Partial<InferenceLimits> = {}): InferenceLimits {
  const limits = { ...DEFAULT_INFERENCE_LIMITS };
  for (const key of Object.keys(limits) as (keyof InferenceLimits)[]) {
    const v = given[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new RangeError(`inference.${key} must be a positive integer, got ${String(v)}`);
    limits[key] = v;
  }
  return limits;
}

/**
 * Checks a request's input tensors from their headers, before any data is decoded: names, dtypes and
 * known dims against the model's signature, the string-element budget, and the outputs' size where the
 * signature fixes it.
 */
export function checkInferenceInputs(
  signature: ModelSignature, headers: Readonly<Record<string, TensorHeader>>, limits: InferenceLimits, outputs: readonly string[] | undefined,
): void {
  const last = lastAccepted.get(signature);
  if (last !== undefined && sameAsAccepted(last, headers, limits, outputs)) return;
  checkInputs(signature, headers, limits, outputs);
  const names: string[] = [];
  const dtypes: string[] = [];
  const dims: number[][] = [];
  for (const name in headers) { const h = headers[name]!; names.push(name); dtypes.push(h.dtype); dims.push([...h.dims]); }
  lastAccepted.set(signature, { limits, outputs: outputs === undefined ? undefined : [...outputs], names, dtypes, dims });
}

/**
 * The inputs a model signature last accepted: names, dtypes and dims in order, with the outputs asked for and
 * the limits. Every check of checkInputs is a function of these alone (a string tensor's budget counts its
 * elements, which its dims give), so a client that repeats its request's shapes (batch-1 inference, again
 * and again) is answered by a comparison instead of the checks.
 */
interface Accepted {
  limits: InferenceLimits;
  outputs: readonly string[] | undefined;
  names: readonly string[];
  dtypes: readonly string[];
  dims: readonly (readonly number[])[];
}
const lastAccepted = new WeakMap<ModelSignature, Accepted>();

function sameAsAccepted(a: Accepted, headers: Readonly<Record<string, TensorHeader>>, limits: InferenceLimits, outputs: readonly string[] | undefined): boolean {
  if (a.limits !== limits) return false;
  if (a.outputs !== outputs) {
    if (a.outputs === undefined || outputs === undefined || a.outputs.length !== outputs.length) return false;
    for (let i = 0; i < outputs.length; i++) if (a.outputs[i] !== outputs[i]) return false;
  }
  let i = 0;
  for (const name in headers) {
    if (i >= a.names.length || a.names[i] !== name) return false;
    const h = headers[name]!;
    const dims = a.dims[i]!;
    if (h.dtype !== a.dtypes[i] || h.dims.length !== dims.length) return false;
    for (let k = 0; k < dims.length; k++) if (h.dims[k] !== dims[k]) return false;
    i++;
  }
  return i === a.names.length;
}

function checkInputs(
  signature: ModelSignature, headers: Readonly<Record<string, TensorHeader>>, limits: InferenceLimits, outputs: readonly string[] | undefined,
): void {
  const symbols = checkFeedShapes(signature, headers);
  let strings = 0;
  for (const [name, h] of Object.entries(headers)) {
    if (h.dtype !== 'string') continue;
    strings += h.elements;
    if (strings > limits.maxStringElements) {
      throw gridError('PAYLOAD_TOO_LARGE',
        `input "${name}" brings the request to ${strings} strings, over this node's limit of ${limits.maxStringElements} string elements per inference request; send fewer in each request`,
        { input: name, elements: strings, limit: limits.maxStringElements });
    }
  }
  checkOutputBytes(knownOutputBytes(signature, symbols, outputs), limits.maxOutputBytes, 'would take');
}

/** sha256 of the concatenated parts in 4 MiB steps, letting other clients' messages through between them. */
async function sha256Yielding(parts: readonly Uint8Array[]): Promise<string> {
  const hash = createHash('sha256');
  const step = 4 * 1024 * 1024;
  let sinceYield = 0;
  for (const part of parts) {
    for (let p = 0; p < part.length; p += step) {
      const piece = part.subarray(p, p + step);
      hash.update(piece);
      sinceYield += piece.length;
      if (sinceYield >= step) { sinceYield = 0; await nextTurn(); }
    }
  }
  return hash.digest('hex');
}

/** Bytes [offset, offset + length) of the concatenated parts; a view when they lie in one part. */
function readParts(parts: readonly Uint8Array[], starts: readonly number[], offset: number, length: number): Uint8Array {
  let i = 0;
  while (i + 1 < parts.length && starts[i + 1]! <= offset) i++;
  const first = parts[i]!;
  const at = offset - starts[i]!;
  if (at + length <= first.length) return first.subarray(at, at + length);
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  for (let p = at; done < length && i < parts.length; i++, p = 0) {
    const piece = parts[i]!.subarray(p, p + (length - done));
    out.set(piece, done);
    done += piece.length;
  }
  return done === length ? out : out.subarray(0, done);
}

interface Held { parts: readonly Uint8Array[] | undefined; size: number; timer: NodeJS.Timeout | undefined }

/**
 * Outputs held in memory until their client downloads them. Bounded in total bytes; each is dropped after
 * a while without reads (a client that went away), and soon after it was read to its end. They are held
 * as encodeNamedTensorsParts: the tensors' own memory, never copied into one big buffer.
 */
export class HeldOutputs {
  private readonly limits: InferenceLimits;
  private readonly held = new Set<Held>();
  private used = 0;

  constructor(limits: InferenceLimits) {
    this.limits = limits;
  }

  get bytesHeld(): number {
    return this.used;
  }

  /** Holds the encoded outputs (`parts`, `size` bytes in all) and returns what the node offers for download (ctx.offerDownload). */
  async hold(parts: readonly Uint8Array[], size: number, offer: (source: DownloadSource) => DownloadOffer): Promise<DownloadOffer> {
    if (this.used + size > this.limits.heldOutputBytes) {
      throw gridError('BUSY',
        `this node already holds ${formatBytes(this.used)} of inference outputs waiting to be downloaded (limit ${formatBytes(this.limits.heldOutputBytes)}); try again shortly`,
        { held: this.used, limit: this.limits.heldOutputBytes, retry_after_ms: this.limits.heldOutputTtlMs });
    }
    const entry: Held = { parts, size, timer: undefined };
    this.held.add(entry);
    this.used += size;
    this.expireIn(entry, this.limits.heldOutputTtlMs);
    const starts: number[] = [];
    let at = 0;
    for (const p of parts) { starts.push(at); at += p.length; }
    const sha256 = await sha256Yielding(parts);
    return offer({
      size,
      sha256,
      read: async (offset, length) => {
        if (entry.parts === undefined) throw gridError('TRANSFER_NOT_FOUND', 'this inference output expired before it was downloaded; run the inference again');
        // Kept a little after the last chunk went out, in case the connection drops and the client resumes.
        this.expireIn(entry, offset + length >= size ? Math.min(5_000, this.limits.heldOutputTtlMs) : this.limits.heldOutputTtlMs);
        return readParts(entry.parts, starts, offset, length);
      },
    });
  }

  /** Drops everything held; idempotent. */
  close(): void {
    for (const e of [...this.held]) this.drop(e);
  }

  private expireIn(entry: Held, ms: number): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = setTimeout(() => this.drop(entry), ms);
    entry.timer.unref();
  }

  private drop(entry: Held): void {
    if (!this.held.delete(entry)) return;
    if (entry.timer) clearTimeout(entry.timer);
    this.used -= entry.size;
    entry.parts = undefined;
  }
}
