// NumPy .npy files (format versions 1.0, 2.0, 3.0) to and from our Tensor, so `grid infer` takes and
// writes the arrays people already have. Layout: magic "\x93NUMPY", major, minor, header length
// (u16 in v1, u32 in v2/v3), a Python dict literal {'descr', 'fortran_order', 'shape'}, padded so the
// data starts 64-aligned, then the raw C-order data.

import { gridError } from './errors';
import { bytesPerElement, elementCount, type DType, type Tensor, type TensorData } from './protocol/tensor';

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

/** numpy type char + size → our dtype (byte order is handled separately). */
const FROM_NUMPY: Record<string, Exclude<DType, 'string'>> = {
  f2: 'float16', f4: 'float32', f8: 'float64',
  i1: 'int8', i2: 'int16', i4: 'int32', i8: 'int64',
  u1: 'uint8', u2: 'uint16', u4: 'uint32', u8: 'uint64',
  b1: 'bool',
};
const TO_NUMPY: Record<Exclude<DType, 'string'>, string> = {
  float16: '<f2', float32: '<f4', float64: '<f8',
  int8: '|i1', int16: '<i2', int32: '<i4', int64: '<i8',
  uint8: '|u1', uint16: '<u2', uint32: '<u4', uint64: '<u8',
  bool: '|b1',
};

interface NpyHeader { descr: string; fortranOrder: boolean; shape: number[]; dataOffset: number }

function parseHeader(b: Buffer, what: string): NpyHeader {
  if (b.length < 10 || !b.subarray(0, 6).equals(MAGIC)) throw gridError('INVALID_TENSOR', `${what}: not a .npy file (missing the \\x93NUMPY magic)`);
  const major = b[6]!;
  let headerLen: number;
  let start: number;
  if (major === 1) { headerLen = b.readUInt16LE(8); start = 10; }
  else if (major === 2 || major === 3) {
    if (b.length < 12) throw gridError('INVALID_TENSOR', `${what}: truncated .npy header`);
    headerLen = b.readUInt32LE(8); start = 12;
  } else throw gridError('INVALID_TENSOR', `${what}: .npy format version ${major}.${b[7]} is not supported (1.0–3.0 are)`);
  if (start + headerLen > b.length) throw gridError('INVALID_TENSOR', `${what}: truncated .npy header`);
  const text = b.toString(major === 3 ? 'utf8' : 'latin1', start, start + headerLen);
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]+)['"]/.exec(text)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw gridError('INVALID_TENSOR', `${what}: .npy header is not a {'descr', 'fortran_order', 'shape'} dict (structured arrays are not supported)`);
  }
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map((s) => {
    const n = Number(s.replace(/L$/, ''));
    if (!Number.isSafeInteger(n) || n < 0) throw gridError('INVALID_TENSOR', `${what}: bad dimension ${JSON.stringify(s)} in .npy shape`);
    return n;
  });
  return { descr, fortranOrder: fortran === 'True', shape, dataOffset: start + headerLen };
}

/** Reads a .npy file's bytes into a tensor (data copied into fresh, aligned storage). */
export function readNpy(bytes: Uint8Array, what = '.npy file'): Tensor {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = parseHeader(b, what);
  if (h.fortranOrder) {
    throw gridError('INVALID_TENSOR', `${what}: Fortran-order (column-major) arrays are not supported; save it with numpy.ascontiguousarray(a) first`);
  }
  const n = elementCount(h.shape);
  const body = b.subarray(h.dataOffset);
  const order = h.descr[0]!;
  const kind = h.descr.slice(1);
  if (order !== '<' && order !== '>' && order !== '|' && order !== '=') {
    throw gridError('INVALID_TENSOR', `${what}: dtype ${h.descr} has no byte-order mark`);
  }
  if (kind[0] === 'U') {
    // Fixed-width UTF-32 strings, NUL-padded.
    const width = Number(kind.slice(1));
    if (!Number.isSafeInteger(width) || width < 0) throw gridError('INVALID_TENSOR', `${what}: bad string dtype ${h.descr}`);
    if (body.length !== n * width * 4) throw gridError('INVALID_TENSOR', `${what}: ${h.descr} [${h.shape.join(', ')}] needs ${n * width * 4} data bytes, got ${body.length}`);
    const data: string[] = new Array(n);
    for (let i = 0; i < n; i++) {
      let s = '';
      for (let j = 0; j < width; j++) {
        const p = (i * width + j) * 4;
        const cp = order === '>' ? body.readUInt32BE(p) : body.readUInt32LE(p);
        if (cp === 0) break;
        s += String.fromCodePoint(cp);
      }
      data[i] = s;
    }
    return { dtype: 'string', dims: h.shape, data };
  }
  const dtype = FROM_NUMPY[kind];
  if (dtype === undefined) throw gridError('INVALID_TENSOR', `${what}: numpy dtype ${h.descr} is not supported (float16/32/64, int8–64, uint8–64 and bool are)`);
  const size = bytesPerElement(dtype);
  if (body.length !== n * size) throw gridError('INVALID_TENSOR', `${what}: ${h.descr} [${h.shape.join(', ')}] needs ${n * size} data bytes, got ${body.length}`);
  const copy = Buffer.from(body); // fresh buffer: aligned, independent of the file bytes
  if (order === '>' && size > 1) {
    if (size === 2) copy.swap16(); else if (size === 4) copy.swap32(); else copy.swap64();
  }
  const data = toTyped(dtype, copy, n);
  if (dtype === 'bool') for (let i = 0; i < n; i++) if ((data as Uint8Array)[i]! > 1) (data as Uint8Array)[i] = 1;
  return { dtype, dims: h.shape, data } as Tensor;
}

function toTyped(dtype: Exclude<DType, 'string'>, buf: Buffer, n: number): TensorData {
  // Buffer.from(copy) may come from the pool at an unaligned offset; copy into its own ArrayBuffer.
  const ab = new ArrayBuffer(buf.length);
  new Uint8Array(ab).set(buf);
  switch (dtype) {
    case 'float32': return new Float32Array(ab, 0, n);
    case 'float64': return new Float64Array(ab, 0, n);
    case 'float16': case 'uint16': return new Uint16Array(ab, 0, n);
    case 'int8': return new Int8Array(ab, 0, n);
    case 'int16': return new Int16Array(ab, 0, n);
    case 'int32': return new Int32Array(ab, 0, n);
    case 'int64': return new BigInt64Array(ab, 0, n);
    case 'uint8': case 'bool': return new Uint8Array(ab, 0, n);
    case 'uint32': return new Uint32Array(ab, 0, n);
    case 'uint64': return new BigUint64Array(ab, 0, n);
  }
}

/** Reads only the header: dtype and shape, without touching the data (dataset schemas). */
export function readNpyHeader(headBytes: Uint8Array, what = '.npy file'): { dtype: DType; dims: number[]; dataOffset: number } {
  const b = Buffer.from(headBytes.buffer, headBytes.byteOffset, headBytes.byteLength);
  const h = parseHeader(b, what);
  if (h.fortranOrder) throw gridError('INVALID_TENSOR', `${what}: Fortran-order (column-major) arrays are not supported; save it with numpy.ascontiguousarray(a) first`);
  const kind = h.descr.slice(1);
  const dtype: DType | undefined = kind[0] === 'U' ? 'string' : FROM_NUMPY[kind];
  if (dtype === undefined) throw gridError('INVALID_TENSOR', `${what}: numpy dtype ${h.descr} is not supported`);
  return { dtype, dims: h.shape, dataOffset: h.dataOffset };
}

/** Writes a tensor as a version 1.0 .npy (2.0 when the header would not fit), little-endian, C order. */
export function writeNpy(t: Tensor): Buffer {
  let descr: string;
  let data: Buffer;
  const n = elementCount(t.dims);
  if (t.dtype === 'string') {
    const strings = t.data as string[];
    const width = Math.max(1, ...strings.map((s) => [...s].length));
    descr = `<U${width}`;
    data = Buffer.alloc(n * width * 4);
    strings.forEach((s, i) => {
      let j = 0;
      for (const ch of s) data.writeUInt32LE(ch.codePointAt(0)!, (i * width + j++) * 4);
    });
  } else {
    descr = TO_NUMPY[t.dtype];
    const typed = t.data as Exclude<TensorData, string[]>;
    data = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
  }
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  let major = 1;
  let prefix = 10;
  let total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  if (total - prefix > 0xffff) { major = 2; prefix = 12; total = Math.ceil((prefix + dict.length + 1) / 64) * 64; }
  const headerLen = total - prefix;
  const head = Buffer.alloc(total, 0x20);
  MAGIC.copy(head, 0);
  head[6] = major;
  head[7] = 0;
  if (major === 1) head.writeUInt16LE(headerLen, 8); else head.writeUInt32LE(headerLen, 8);
  head.write(dict, prefix, 'latin1');
  head[total - 1] = 0x0a;
  return Buffer.concat([head, data]);
}
