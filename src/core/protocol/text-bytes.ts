// JSON text read as bytes, without making a JS string of it: PyGrid's report puts a whole model's diff in
// its JSON envelope as base64 (half a megabyte for a 100k-parameter model). Materialising that string
// and decoding it with Buffer costs more CPU than the WebSocket carrying it; here the frame's own bytes
// are checked (printable ASCII, as a JSON string's raw contents must be) and decoded straight to bytes.
// The kernels use WebAssembly SIMD, assembled by scripts/text-wasm.mjs (which shows their instructions);
// each has a plain-JS twin used where WebAssembly SIMD is unavailable and for the ends of inputs.
// test/unit/text-bytes.test.ts checks both against Buffer.

import { WASM_PAGE as PAGE, wasm, type WasmMemory } from '../wasm';

const MODULE_BASE64 = 'AGFzbQEAAAABDgJgA39/fwF/YAJ/fwF/AwQDAAEBBQMBAAEHIQQGbWVtb3J5AgADYjY0AAAGZmluaXRlAAEFcGxhaW4AAgqoCQPYBgIBfwp7/QwQEAECBAgECBAQEBAQEBAQIQb9DBURERERERERERETGhsbGxohB/0MABATBL+/ubkAAAAAAAAAACEI/QwPDw8PDw8PDw8PDw8PDw8PIQn9DC8vLy8vLy8vLy8vLy8vLy8hCv0M/wD/AP8A/wD/AP8A/wD/ACEL/QwAEAEAABABAAAQAQAAEAEAIQwCQANAIAEgA2tBBEkNASAA/QAAACEEIARBBP2NASAJ/U4hBSANIAYgBf0OIAcgBCAJ/U79Dv1O/VAhDSAEIAggBSAEIAr9I/1u/Q79biEEIAQgC/1OQQb9iwEgBEEI/Y0B/VAgDP26ASEEIAIgBCAE/Q0CAQAGBQQKCQgODQwDBwsP/QsAACAA/QAAECEEIARBBP2NASAJ/U4hBSANIAYgBf0OIAcgBCAJ/U79Dv1O/VAhDSAEIAggBSAEIAr9I/1u/Q79biEEIAQgC/1OQQb9iwEgBEEI/Y0B/VAgDP26ASEEIAIgBCAE/Q0CAQAGBQQKCQgODQwDBwsP/QsADCAA/QAAICEEIARBBP2NASAJ/U4hBSANIAYgBf0OIAcgBCAJ/U79Dv1O/VAhDSAEIAggBSAEIAr9I/1u/Q79biEEIAQgC/1OQQb9iwEgBEEI/Y0B/VAgDP26ASEEIAIgBCAE/Q0CAQAGBQQKCQgODQwDBwsP/QsAGCAA/QAAMCEEIARBBP2NASAJ/U4hBSANIAYgBf0OIAcgBCAJ/U79Dv1O/VAhDSAEIAggBSAEIAr9I/1u/Q79biEEIAQgC/1OQQb9iwEgBEEI/Y0B/VAgDP26ASEEIAIgBCAE/Q0CAQAGBQQKCQgODQwDBwsP/QsAJCAN/VMNASAAQcAAaiEAIAJBMGohAiADQQRqIQMMAAsLAkADQCADIAFPDQH9DAAAAAAAAAAAAAAAAAAAAAAhDSAA/QAAACEEIARBBP2NASAJ/U4hBSANIAYgBf0OIAcgBCAJ/U79Dv1O/VAhDSAEIAggBSAEIAr9I/1u/Q79biEEIAQgC/1OQQb9iwEgBEEI/Y0B/VAgDP26ASEEIAIgBCAE/Q0CAQAGBQQKCQgODQwDBwsP/QsAACAN/VMNASAAQRBqIQAgAkEMaiECIANBAWohAwwACwsgAwtTAgF/AnsgACABQQJ0aiEC/QwAAIB/AACAfwAAgH8AAIB/IQQCQANAIAAgAk8NASADIAD9AAAAIAT9TiAE/Tf9UCEDIABBEGohAAwACwsgA/1TRQv3AQIBfwR7IAAgAWohAv0MICAgICAgICAgICAgICAgICEF/QxcXFxcXFxcXFxcXFxcXFxcIQYCQANAIAIgAGtBwABJDQEgAP0AAAAhBCADIAQgBf0lIAQgBv0j/VD9UCEDIAD9AAAQIQQgAyAEIAX9JSAEIAb9I/1Q/VAhAyAA/QAAICEEIAMgBCAF/SUgBCAG/SP9UP1QIQMgAP0AADAhBCADIAQgBf0lIAQgBv0j/VD9UCEDIABBwABqIQAMAAsLAkADQCAAIAJPDQEgAP0AAAAhBCADIAQgBf0lIAQgBv0j/VD9UCEDIABBEGohAAwACwsgA/1TRQs=';

/** Input bytes staged into the kernels' memory per call (a multiple of 16): memory stays ~2 MiB whatever the input. */
const WINDOW = 1024 * 1024;
const SRC = 0;
const DST = WINDOW;

interface Kernels {
  bytes: Uint8Array;
  b64(src: number, blocks: number, dst: number): number;
  finite(ptr: number, n: number): number;
  plain(ptr: number, n: number): number;
}

let kernels: Kernels | null | undefined;

function load(): Kernels | null {
  if (kernels !== undefined) return kernels;
  try {
    if (wasm === undefined) throw new Error('no WebAssembly');
    const instance = new wasm.Instance(new wasm.Module(Buffer.from(MODULE_BASE64, 'base64')));
    const memory = instance.exports.memory as WasmMemory;
    // Source window, decoded window (3/4 of it) with the 4 spare bytes a block's store writes, rounded to pages.
    memory.grow(Math.ceil((WINDOW + (WINDOW / 4) * 3 + 16) / PAGE) - memory.buffer.byteLength / PAGE);
    const e = instance.exports as Record<string, (...args: number[]) => number>;
    kernels = { bytes: new Uint8Array(memory.buffer), b64: e.b64!, finite: e.finite!, plain: e.plain! };
    staged = undefined;
  } catch {
    kernels = null;
  }
  return kernels;
}

/** For tests: run the plain-JS twins only (as where WebAssembly SIMD is unavailable). */
export function useTextKernels(on: boolean): void {
  kernels = on ? undefined : null;
}

/**
 * What SRC holds: the view whose first `take` bytes were copied there last, when that was its whole first
 * window; every copy into SRC goes through stage(). decodeBase64Transient skips its copy of a view
 * isPlainAscii has just staged (the envelope checks a report's diff, then the report decodes it, usually
 * in the same task): the frame's bytes do not change once received.
 */
let staged: Uint8Array | undefined;

/** Bytes copied into SRC since the process began (what a test holds the decoders' copying to). */
let stagedBytes = 0;

export function textKernelStagedBytes(): number {
  return stagedBytes;
}

function stage(k: Kernels, from: Uint8Array, start: number, end: number): void {
  k.bytes.set(from.subarray(start, end), SRC);
  stagedBytes += end - start;
  staged = start === 0 ? from : undefined;
}

/**
 * Whether every byte of `bytes` is printable ASCII (0x20-0x7e, or 0x7f) and none is a backslash, as the
 * raw contents of a JSON string that are its text must be: JSON refuses control characters in a string,
 * a backslash starts an escape, and a non-ASCII byte would make the bytes differ from the characters.
 */
export function isPlainAscii(bytes: Uint8Array): boolean {
  const k = load();
  let i = 0;
  if (k !== null) {
    while (bytes.length - i >= 16) {
      const take = Math.min(bytes.length - i, WINDOW) & ~15;
      stage(k, bytes, i, i + take);
      if (k.plain(SRC, take) === 0) return false;
      i += take;
    }
  }
  for (; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b < 0x20 || b > 0x7f || b === 0x5c) return false;
  }
  return true;
}

/** Index of the first float that is NaN or ±Infinity, or -1. */
export function firstNonFinite(values: Float32Array): number {
  const k = load();
  let i = 0;
  if (k !== null) {
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    while (values.length - i >= 4) {
      const take = Math.min(values.length - i, WINDOW / 4) & ~3;
      stage(k, bytes, i * 4, (i + take) * 4);
      if (k.finite(SRC, take) === 0) break; // the loop below finds which
      i += take;
    }
  }
  for (; i < values.length; i++) {
    // v − v is 0 for every finite v and NaN for NaN and ±Inf.
    const v = values[i]!;
    if (v - v !== 0) return i;
  }
  return -1;
}

/**
 * Whether every float32 of `bytes` (little-endian, a whole number of them, any alignment) is finite. A view
 * of the kernels' memory (decodeBase64Transient's bytes) is scanned where it lies; other bytes are copied in.
 */
export function allFiniteBytes(bytes: Uint8Array): boolean {
  const n = bytes.length >> 2;
  const k = load();
  let i = 0;
  if (k !== null) {
    if (bytes.buffer === k.bytes.buffer) {
      i = n & ~3;
      if (i > 0 && k.finite(bytes.byteOffset, i) === 0) return false;
    } else {
      while (n - i >= 4) {
        const take = Math.min(n - i, WINDOW / 4) & ~3;
        stage(k, bytes, i * 4, (i + take) * 4);
        if (k.finite(SRC, take) === 0) return false;
        i += take;
      }
    }
  }
  // An all-ones exponent: bits 23-30, i.e. the low 7 bits of byte 3 and the top bit of byte 2.
  for (; i < n; i++) {
    if ((bytes[i * 4 + 3]! & 0x7f) === 0x7f && (bytes[i * 4 + 2]! & 0x80) !== 0) return false;
  }
  return true;
}

// Base64 characters: their 6-bit value; PAD for '=', SPACE for ASCII whitespace (what /\s/ matches below 0x80), BAD otherwise.
const BAD = -1, PAD = -2, SPACE = -3;
const VALUE = new Int8Array(256).fill(BAD);
'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split('').forEach((c, i) => { VALUE[c.charCodeAt(0)] = i; });
VALUE[0x3d] = PAD;
for (const c of [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]) VALUE[c] = SPACE;

/**
 * Base64 text as bytes → the bytes it encodes, without a string in between. Strict: the standard
 * alphabet, ASCII whitespace anywhere (KotlinSyft's Base64.DEFAULT breaks lines), and either '=' padding
 * to a multiple of 4 or none at all (the last group then 2 or 3 characters). Undefined for anything else
 * (another character, a lone last character, padding short of a group or followed by data, empty):
 * the caller then asks a lenient decoder (decodeText). Whatever this accepts, decodeText decodes the same.
 * With `into` (at least 3/4 of src's length + 3 bytes), the bytes are a view of it, not a new buffer.
 */
export function decodeBase64(src: Uint8Array, into?: Uint8Array): Uint8Array | undefined {
  const need = Math.floor(src.length / 4) * 3 + 3;
  return decode64(src, into !== undefined && into.length >= need ? into : Buffer.allocUnsafe(need), false);
}

/**
 * decodeBase64 into the kernels' own memory where the text fits one window (1 MiB): no copy out. The bytes
 * are overwritten by the next call, so they must be used (or copied) before it; allFiniteBytes scans views
 * of them in place. Larger text, or no WebAssembly SIMD: decodeBase64 into a new buffer.
 */
export function decodeBase64Transient(src: Uint8Array): Uint8Array | undefined {
  const k = load();
  if (k === null || src.length > WINDOW) return decodeBase64(src);
  return decode64(src, k.bytes.subarray(DST, DST + Math.floor(src.length / 4) * 3 + 3), true);
}

function decode64(src: Uint8Array, out: Uint8Array, inPlace: boolean): Uint8Array | undefined {
  const n = src.length;
  const k = load();
  let i = 0, o = 0;
  // src[from, to) is what SRC holds: the kernel resumes inside it after a group the loop below decoded
  // (whitespace, a window's end), so each byte is copied in once, not once per stop (text with a space
  // every few characters would otherwise copy up to a window per group).
  let from = 0, to = 0;
  const quad = [0, 0, 0, 0];
  while (i < n) {
    if (k !== null && n - i >= 16) {
      if (i >= to || to - i < 16) {
        from = i;
        to = i + (Math.min(n - i, WINDOW) & ~15);
        // A view isPlainAscii just checked is in SRC already (in place only: decodeBase64's callers may reuse buffers).
        if (!(inPlace && i === 0 && staged === src)) stage(k, src, from, to);
      }
      const take = (to - i) & ~15;
      // In place (one window in all), the blocks land where `out` is; otherwise they are copied there.
      const blocks = k.b64(SRC + (i - from), take >> 4, inPlace ? DST + o : DST);
      if (!inPlace) out.set(k.bytes.subarray(DST, DST + blocks * 12), o);
      i += blocks * 16;
      o += blocks * 12;
      if (blocks * 16 === take) continue;
    }
    // One group of 4 characters (whitespace skipped) here: the window's end, whitespace, padding or a bad character.
    let got = 0;
    while (got < 4 && i < n) {
      const v = VALUE[src[i++]!]!;
      if (v >= 0) quad[got++] = v;
      else if (v === PAD) { i--; break; }
      else if (v === BAD) return undefined;
    }
    if (got === 0) {
      if (i >= n) break;
    } else if (got === 1) {
      return undefined;
    }
    if (got === 4) {
      out[o++] = (quad[0]! << 2) | (quad[1]! >> 4);
      out[o++] = ((quad[1]! & 15) << 4) | (quad[2]! >> 2);
      out[o++] = ((quad[2]! & 3) << 6) | quad[3]!;
      continue;
    }
    // A short last group: 2 or 3 characters, then either the end or exactly the padding to 4, then whitespace only.
    if (got >= 2) out[o++] = (quad[0]! << 2) | (quad[1]! >> 4);
    if (got === 3) out[o++] = ((quad[1]! & 15) << 4) | (quad[2]! >> 2);
    let pads = 0;
    for (; i < n; i++) {
      const v = VALUE[src[i]!]!;
      if (v === PAD) pads++;
      else if (v !== SPACE) return undefined;
    }
    if (got === 0 || (pads !== 0 && got + pads !== 4)) return undefined;
    break;
  }
  if (o === 0) return undefined;
  return out.subarray(0, o);
}

/**
 * The contents of a JSON string as they stood in a frame: printable ASCII without escapes, so its bytes
 * are its characters. What a node holds instead of a long string it decodes from bytes (a report's
 * base64 diff: RequestDef.textBytes); `text()` and JSON.stringify give the string.
 */
export class JsonText {
  constructor(readonly bytes: Uint8Array) {}

  get length(): number {
    return this.bytes.length;
  }

  text(): string {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length).toString('latin1');
  }

  toJSON(): string {
    return this.text();
  }
}
