// Tensors on the wire: dtype + dims + raw little-endian bytes, the layout onnxruntime tensors use,
// so a received tensor goes into a session without a copy when its bytes are aligned.
//
// One tensor:   u8 dtype code | u8 0 | u16 rank | u32 0 | rank × f64 dims | data
//               (header padded to 8 bytes, so numeric data is 8-aligned within the encoding)
// string data:  per element u32 byte length + UTF-8 bytes
// Named map:    u32 count | per entry: u16 name length | name UTF-8 | pad to 8 | u64 byte length (f64) | tensor

import { gridError } from '../errors';

export const DTYPES = [
  'float32', 'float64', 'float16',
  'int8', 'int16', 'int32', 'int64',
  'uint8', 'uint16', 'uint32', 'uint64',
  'bool', 'string',
] as const;
export type DType = (typeof DTYPES)[number];

/** Element storage per dtype, as onnxruntime-node's Tensor holds it (float16 as raw bits, bool as bytes). */
export interface DataTypeMap {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  int8: Int8Array;
  int16: Int16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  uint16: Uint16Array;
  uint32: Uint32Array;
  uint64: BigUint64Array;
  bool: Uint8Array;
  string: string[];
}
export type TensorData = DataTypeMap[DType];

export interface Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly dims: readonly number[];
  readonly data: DataTypeMap[D];
}

export type NamedTensors = Record<string, Tensor>;

type NumericDType = Exclude<DType, 'string'>;
type TypedCtor = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): Exclude<TensorData, string[]>; new (length: number): Exclude<TensorData, string[]>; BYTES_PER_ELEMENT: number };

const CTORS: Record<NumericDType, TypedCtor> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array,
  int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
  bool: Uint8Array,
} as unknown as Record<NumericDType, TypedCtor>;

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

export function bytesPerElement(dtype: NumericDType): number {
  return CTORS[dtype].BYTES_PER_ELEMENT;
}

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** Checks dims and data length agree; throws GRID_ERR_INVALID_TENSOR naming what is wrong. */
export function validateTensor(t: Tensor, what = 'tensor'): void {
  if (!isDType(t.dtype)) throw gridError('INVALID_TENSOR', `${what}: unknown dtype ${JSON.stringify(t.dtype)}`);
  for (const d of t.dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw gridError('INVALID_TENSOR', `${what}: dimension ${d} is not a non-negative integer`);
  }
  const n = elementCount(t.dims);
  if (t.dtype === 'string') {
    if (!Array.isArray(t.data) || t.data.some((s) => typeof s !== 'string')) throw gridError('INVALID_TENSOR', `${what}: string tensor data must be an array of strings`);
  } else if (!(t.data instanceof CTORS[t.dtype])) {
    throw gridError('INVALID_TENSOR', `${what}: ${t.dtype} data must be a ${CTORS[t.dtype].name}`);
  }
  if (t.data.length !== n) throw gridError('INVALID_TENSOR', `${what}: dims [${t.dims.join(', ')}] hold ${n} elements but data has ${t.data.length}`);
}

const pad8 = (n: number) => (n + 7) & ~7;
const headerSize = (rank: number) => 8 + 8 * rank;

/** Bytes the encoding of `t` takes. */
export function encodedTensorSize(t: Tensor): number {
  const head = headerSize(t.dims.length);
  if (t.dtype === 'string') {
    let n = 0;
    for (const s of t.data as string[]) n += 4 + Buffer.byteLength(s, 'utf8');
    return head + n;
  }
  return head + (t.data as Exclude<TensorData, string[]>).byteLength;
}

function writeTensorHeader(t: Tensor, out: Buffer, offset: number): number {
  out.writeUInt8(DTYPES.indexOf(t.dtype), offset);
  out.writeUInt8(0, offset + 1);
  out.writeUInt16LE(t.dims.length, offset + 2);
  out.writeUInt32LE(0, offset + 4);
  let p = offset + 8;
  for (const d of t.dims) { out.writeDoubleLE(d, p); p += 8; }
  return p;
}

/** Encodes into `out` at `offset` (which must be 8-aligned for zero-copy decode); returns bytes written. */
export function encodeTensorInto(t: Tensor, out: Buffer, offset: number): number {
  validateTensor(t);
  let p = writeTensorHeader(t, out, offset);
  if (t.dtype === 'string') {
    for (const s of t.data as string[]) {
      const len = out.write(s, p + 4, 'utf8');
      out.writeUInt32LE(len, p);
      p += 4 + len;
    }
  } else {
    const data = t.data as Exclude<TensorData, string[]>;
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    out.set(src, p);
    p += data.byteLength;
  }
  return p - offset;
}

export function encodeTensor(t: Tensor): Buffer {
  const out = Buffer.allocUnsafe(encodedTensorSize(t));
  encodeTensorInto(t, out, 0);
  return out;
}

/** What a tensor's header says, read without touching its data (so a receiver can refuse it cheaply). */
export interface TensorHeader {
  readonly dtype: DType;
  readonly dims: readonly number[];
  /** dims' product. */
  readonly elements: number;
  /** Bytes of the encoding, header included. */
  readonly byteLength: number;
}

/** Reads and checks a tensor's header from `buf` (the whole encoding); the data is not decoded. */
export function readTensorHeader(buf: Uint8Array, what = 'tensor'): TensorHeader {
  return readHeaderAt(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength), 0, buf.byteLength, what);
}

/** readTensorHeader of the encoding at [start, end) of `b`: no view is made. */
function readHeaderAt(b: Buffer, start: number, end: number, what: string): TensorHeader {
  const length = end - start;
  if (length < 8) throw gridError('INVALID_TENSOR', `${what}: ${length} bytes is shorter than a tensor header`);
  const code = b[start]!;
  const dtype = DTYPES[code];
  if (dtype === undefined) throw gridError('INVALID_TENSOR', `${what}: unknown dtype code ${code}`);
  const rank = b.readUInt16LE(start + 2);
  const head = headerSize(rank);
  if (length < head) throw gridError('INVALID_TENSOR', `${what}: header of rank ${rank} needs ${head} bytes, got ${length}`);
  const dims: number[] = new Array(rank);
  let n = 1;
  for (let i = 0; i < rank; i++) {
    const d = b.readDoubleLE(start + 8 + 8 * i);
    if (!Number.isSafeInteger(d) || d < 0) throw gridError('INVALID_TENSOR', `${what}: dimension ${i} is ${d}`);
    dims[i] = d;
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw gridError('INVALID_TENSOR', `${what}: dims [${dims.join(', ')}] are too large`);
  const dataBytes = length - head;
  if (dtype === 'string') {
    // Each string takes at least its 4-byte length: a count the bytes cannot hold is refused before any decoding.
    if (n * 4 > dataBytes) throw gridError('INVALID_TENSOR', `${what}: string [${dims.join(', ')}] holds ${n} strings, which need at least ${n * 4} bytes; got ${dataBytes}`);
  } else if (dataBytes !== n * CTORS[dtype].BYTES_PER_ELEMENT) {
    throw gridError('INVALID_TENSOR', `${what}: ${dtype} [${dims.join(', ')}] needs ${n * CTORS[dtype].BYTES_PER_ELEMENT} data bytes, got ${dataBytes}`);
  }
  return { dtype, dims, elements: n, byteLength: length };
}

/** Decodes one tensor occupying exactly `buf`. Numeric data is a view into `buf` when aligned, else a copy. */
export function decodeTensor(buf: Uint8Array, what = 'tensor'): Tensor {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return decodeTensorAt(b, 0, b.length, readHeaderAt(b, 0, b.length, what), what);
}

/** The tensor at [start, end) of `b`, whose header was read and checked (readHeaderAt). */
function decodeTensorAt(b: Buffer, start: number, end: number, header: TensorHeader, what: string): Tensor {
  const { dtype, dims, elements: n } = header;
  const head = headerSize(dims.length);
  if (dtype === 'string') {
    const data: string[] = new Array(n);
    let p = start + head;
    for (let i = 0; i < n; i++) {
      if (p + 4 > end) throw gridError('INVALID_TENSOR', `${what}: string ${i} of ${n} is truncated`);
      const len = b.readUInt32LE(p);
      if (p + 4 + len > end) throw gridError('INVALID_TENSOR', `${what}: string ${i} of ${n} is truncated`);
      data[i] = len === 0 ? '' : b.toString('utf8', p + 4, p + 4 + len);
      p += 4 + len;
    }
    if (p !== end) throw gridError('INVALID_TENSOR', `${what}: ${end - p} trailing bytes after string data`);
    return { dtype, dims, data };
  }
  const Ctor = CTORS[dtype];
  const at = b.byteOffset + start + head;
  let data: Exclude<TensorData, string[]>;
  if (at % Ctor.BYTES_PER_ELEMENT === 0) {
    data = new Ctor(b.buffer, at, n);
  } else {
    data = new Ctor(n);
    new Uint8Array(data.buffer).set(b.subarray(start + head, end));
  }
  return { dtype, dims, data } as Tensor;
}

/** Encodes named tensors (inference inputs/outputs, model parameters) into one buffer. */
export function encodeNamedTensors(tensors: NamedTensors): Buffer {
  const entries = Object.entries(tensors);
  let size = 8;
  const names = entries.map(([name]) => Buffer.from(name, 'utf8'));
  entries.forEach(([, t], i) => { size += pad8(2 + names[i]!.length) + 8 + pad8(encodedTensorSize(t)); });
  const out = Buffer.alloc(size);
  out.writeUInt32LE(entries.length, 0);
  let p = 8;
  entries.forEach(([name, t], i) => {
    const nb = names[i]!;
    if (nb.length > 0xffff) throw gridError('INVALID_TENSOR', `tensor name ${name.slice(0, 40)}… is too long`);
    out.writeUInt16LE(nb.length, p);
    out.set(nb, p + 2);
    p += pad8(2 + nb.length);
    const lenAt = p;
    p += 8;
    const written = encodeTensorInto(t, out, p);
    out.writeDoubleLE(written, lenAt);
    p += pad8(written);
  });
  return out;
}

/**
 * The encoding of encodeNamedTensors as pieces whose concatenation is that encoding: numeric data stays
 * a view of the tensors' own memory, so a big result can be sent (hashed, read in chunks) without a copy.
 * Each tensor's name entry and header are one small piece from Buffer's pool, which also carries the
 * count (first) or the previous tensor's padding: a batch-1 request or reply pays one pooled slice per
 * tensor, not three fresh buffers (each a native allocation, costly when a caller's caches went cold
 * waiting for the peer; issue 18).
 */
export function encodeNamedTensorsParts(tensors: NamedTensors): Uint8Array[] {
  const names = Object.keys(tensors);
  if (names.length === 0) return [Buffer.alloc(8)];
  const parts: Uint8Array[] = [];
  let lead = 8; // bytes before the name entry: the count, then the previous tensor's padding
  for (const name of names) {
    const t = tensors[name]!;
    validateTensor(t);
    const nameLength = asciiLength(name) ?? Buffer.byteLength(name, 'utf8');
    if (nameLength > 0xffff) throw gridError('INVALID_TENSOR', `tensor name ${name.slice(0, 40)}… is too long`);
    const size = encodedTensorSize(t);
    const nameBytes = pad8(2 + nameLength);
    const numeric = t.dtype !== 'string';
    const pre = Buffer.allocUnsafe(lead + nameBytes + 8 + (numeric ? headerSize(t.dims.length) : 0));
    pre.fill(0, 0, lead + nameBytes);
    if (parts.length === 0) pre.writeUInt32LE(names.length, 0);
    pre.writeUInt16LE(nameLength, lead);
    if (nameLength === name.length) for (let i = 0; i < nameLength; i++) pre[lead + 2 + i] = name.charCodeAt(i);
    else pre.write(name, lead + 2, 'utf8');
    pre.writeDoubleLE(size, lead + nameBytes);
    if (numeric) {
      writeTensorHeader(t, pre, lead + nameBytes + 8);
      const data = t.data as Exclude<TensorData, string[]>;
      parts.push(pre, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else {
      parts.push(pre, encodeTensor(t));
    }
    lead = pad8(size) - size;
  }
  if (lead > 0) parts.push(new Uint8Array(lead));
  return parts;
}

/** A string's UTF-8 byte count when it is short ASCII (its length), else undefined: no native call for a tensor's name. */
function asciiLength(s: string): number | undefined {
  if (s.length > SHORT_NAME) return undefined;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return undefined;
  return s.length;
}

/** Names up to this long are read and written by hand, byte by byte; longer ones by Buffer's native UTF-8 codec. */
const SHORT_NAME = 64;

/** The name at [start, end) of `b` when it is short ASCII, without a native call; else undefined. */
function shortAsciiName(b: Buffer, start: number, end: number): string | undefined {
  if (end - start > SHORT_NAME) return undefined;
  let s = '';
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    if (c > 0x7f) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}

/**
 * The map of DecodeNamedOptions.forSession: nothing inherited (a tensor may be named "__proto__" or
 * "constructor"), as with Object.create(null), but an object V8 keeps in fast mode. Object.create(null)
 * makes a dictionary, which costs onnxruntime-node's run ~1 µs warm and 2–5 µs when the caller's caches
 * went cold (issue 18).
 */
function NamedTensorMap(this: NamedTensors): void { /* a map with no own properties yet */ }
NamedTensorMap.prototype = Object.create(null) as object;
const newNamedTensorMap = (): NamedTensors => new (NamedTensorMap as unknown as new () => NamedTensors)();

export interface DecodeNamedOptions {
  /**
   * Called with every tensor's header after the whole buffer's framing was checked and before any data is
   * decoded: throw to refuse the tensors (a wrong shape, too many elements) without paying for decoding.
   */
  check?(headers: Readonly<Record<string, TensorHeader>>): void;
  /**
   * The tensors go straight into a model session (the node's inference): a map V8 keeps in fast mode. It
   * inherits nothing either, but its prototype is an empty object rather than null, which Node's inspect
   * and the notebook display tell apart: not for maps a user sees.
   */
  forSession?: boolean;
}

export function decodeNamedTensors(buf: Uint8Array, opts: DecodeNamedOptions = {}): NamedTensors {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8) throw gridError('INVALID_TENSOR', 'named tensors: buffer shorter than its header');
  const count = b.readUInt32LE(0);
  // Framing and headers are read in one pass, data decoded in a second, after opts.check: a refused
  // request costs no decoding. The bodies stay offsets into `b` (no views until the data is decoded).
  const entries: { name: string; start: number; end: number; header: TensorHeader }[] = [];
  const headers: Record<string, TensorHeader> = Object.create(null);
  let p = 8;
  for (let i = 0; i < count; i++) {
    if (p + 2 > b.length) throw gridError('INVALID_TENSOR', `named tensors: entry ${i} of ${count} is truncated`);
    const nameLen = b.readUInt16LE(p);
    if (p + 2 + nameLen > b.length) throw gridError('INVALID_TENSOR', `named tensors: name of entry ${i} is truncated`);
    const name = shortAsciiName(b, p + 2, p + 2 + nameLen) ?? b.toString('utf8', p + 2, p + 2 + nameLen);
    p += pad8(2 + nameLen);
    if (p + 8 > b.length) throw gridError('INVALID_TENSOR', `named tensors: length of "${name}" is truncated`);
    const len = b.readDoubleLE(p);
    p += 8;
    if (!Number.isSafeInteger(len) || len < 0 || p + len > b.length) throw gridError('INVALID_TENSOR', `named tensors: "${name}" claims ${len} bytes, ${b.length - p} remain`);
    if (name in headers) throw gridError('INVALID_TENSOR', `named tensors: "${name}" appears twice`);
    const header = readHeaderAt(b, p, p + len, `tensor "${name}"`);
    headers[name] = header;
    entries.push({ name, start: p, end: p + len, header });
    p += pad8(len);
  }
  opts.check?.(headers);
  const out = opts.forSession === true ? newNamedTensorMap() : Object.create(null) as NamedTensors;
  for (const e of entries) out[e.name] = decodeTensorAt(b, e.start, e.end, e.header, `tensor "${e.name}"`);
  return out;
}

/** Builds a tensor from plain numbers/booleans/strings (JSON inputs, notebook cells). */
export function tensorFromValues(dtype: DType, dims: readonly number[], values: ArrayLike<number | bigint | boolean | string>): Tensor {
  const n = elementCount(dims);
  if (values.length !== n) throw gridError('INVALID_TENSOR', `dims [${dims.join(', ')}] hold ${n} elements but ${values.length} values were given`);
  if (dtype === 'string') return { dtype, dims: [...dims], data: Array.from(values, String) };
  const Ctor = CTORS[dtype];
  const data = new Ctor(n);
  const big = dtype === 'int64' || dtype === 'uint64';
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (big) (data as BigInt64Array)[i] = typeof v === 'bigint' ? v : BigInt(typeof v === 'boolean' ? Number(v) : v as number | string);
    else (data as Float32Array)[i] = Number(v);
  }
  return { dtype, dims: [...dims], data } as Tensor;
}
