// Tensors to and from the files `grid infer` takes and writes: .npy, ONNX TensorProto .pb, and JSON
// ({"dtype", "dims", "data"} or a bare nested array whose dtype comes from the model).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../core/errors';
import { readNpy, writeNpy } from '../core/npy';
import { elementCount, isDType, tensorFromValues, type DType, type NamedTensors, type Tensor } from '../core/protocol/tensor';
import type { ModelSignature } from '../core/protocol/messages';
import { decodeTensorProto } from './onnx/tensor-proto';

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float → IEEE half bits, rounding to nearest even (as numpy's astype(float16)). */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return h;
}

type JsonScalar = number | string | boolean;

function jsonNumber(v: number): number | string {
  return Number.isFinite(v) ? v : String(v); // JSON has no NaN/Infinity: "NaN", "Infinity", "-Infinity"
}

/** The JSON form `grid infer` prints: int64/uint64 as numbers where exact, else decimal strings. */
export function tensorToJson(t: Tensor): { dtype: DType; dims: number[]; data: JsonScalar[] } {
  let data: JsonScalar[];
  switch (t.dtype) {
    case 'int64': case 'uint64':
      data = Array.from(t.data as BigInt64Array | BigUint64Array, (v: bigint) => (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v.toString()));
      break;
    case 'bool': data = Array.from(t.data as Uint8Array, (v) => v !== 0); break;
    case 'string': data = [...(t.data as string[])]; break;
    case 'float16': data = Array.from(t.data as Uint16Array, (h) => jsonNumber(halfToFloat(h))); break;
    default: data = Array.from(t.data as Float32Array, jsonNumber);
  }
  return { dtype: t.dtype, dims: [...t.dims], data };
}

function flatten(value: unknown, dims: number[], depth: number, out: unknown[], what: string): void {
  if (Array.isArray(value)) {
    if (dims.length === depth) dims.push(value.length);
    else if (dims[depth] !== value.length) throw gridError('INVALID_TENSOR', `${what}: ragged nested array (a row of ${value.length} where ${dims[depth]} was expected)`);
    for (const v of value) flatten(v, dims, depth + 1, out, what);
  } else {
    if (depth !== dims.length && out.length > 0) throw gridError('INVALID_TENSOR', `${what}: ragged nested array`);
    out.push(value);
  }
}

function parseJsonValue(v: unknown, dtype: DType, what: string): number | bigint | boolean | string {
  if (dtype === 'string') return String(v);
  if (dtype === 'bool') {
    if (typeof v === 'boolean') return v;
    if (v === 0 || v === 1) return v === 1;
    throw gridError('INVALID_TENSOR', `${what}: ${JSON.stringify(v)} is not a bool`);
  }
  if (dtype === 'int64' || dtype === 'uint64') {
    if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
    if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
    throw gridError('INVALID_TENSOR', `${what}: ${JSON.stringify(v)} is not an integer`);
  }
  const n = typeof v === 'string' && /^(-?Infinity|NaN)$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number') throw gridError('INVALID_TENSOR', `${what}: ${JSON.stringify(v)} is not a number`);
  if (dtype === 'float16') return floatToHalf(n);
  if (dtype !== 'float32' && dtype !== 'float64' && !Number.isInteger(n)) throw gridError('INVALID_TENSOR', `${what}: ${n} is not an integer (${dtype})`);
  return n;
}

/** A tensor from JSON: {"dtype", "dims", "data"} (data flat or nested) or a bare nested array of `fallbackDtype`. */
export function tensorFromJson(json: unknown, fallbackDtype: DType | undefined, what: string): Tensor {
  let dtype: DType | undefined = fallbackDtype;
  let dims: number[] | undefined;
  let data: unknown = json;
  if (json !== null && typeof json === 'object' && !Array.isArray(json)) {
    const o = json as Record<string, unknown>;
    if (o.dtype !== undefined) {
      if (!isDType(o.dtype)) throw gridError('INVALID_TENSOR', `${what}: unknown dtype ${JSON.stringify(o.dtype)}`);
      dtype = o.dtype;
    }
    if (o.dims !== undefined) {
      if (!Array.isArray(o.dims) || o.dims.some((d) => !Number.isSafeInteger(d) || (d as number) < 0)) throw gridError('INVALID_TENSOR', `${what}: dims must be an array of non-negative integers`);
      dims = o.dims as number[];
    }
    data = o.data;
    if (data === undefined) throw gridError('INVALID_TENSOR', `${what}: a JSON tensor needs "data"`);
  }
  if (dtype === undefined) throw gridError('INVALID_TENSOR', `${what}: say its "dtype" (the model does not name this input)`);
  const flat: unknown[] = [];
  const shape: number[] = [];
  flatten(data, shape, 0, flat, what);
  const finalDims = dims ?? shape;
  if (elementCount(finalDims) !== flat.length) throw gridError('INVALID_TENSOR', `${what}: dims [${finalDims.join(', ')}] hold ${elementCount(finalDims)} elements but data has ${flat.length}`);
  const d = dtype;
  return tensorFromValues(d, finalDims, flat.map((v) => parseJsonValue(v, d, what)));
}

/** Reads one input file by its extension. */
export function readTensorFile(file: string, fallbackDtype: DType | undefined): Tensor {
  const lower = file.toLowerCase();
  let bytes: Buffer;
  try { bytes = fs.readFileSync(file); } catch (err) { throw gridError('INVALID_INPUT', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`); }
  if (lower.endsWith('.npy')) return readNpy(bytes, file);
  if (lower.endsWith('.pb')) return decodeTensorProto(bytes).tensor;
  if (lower.endsWith('.json')) {
    let json: unknown;
    try { json = JSON.parse(bytes.toString('utf8')); } catch (err) { throw gridError('INVALID_TENSOR', `${file}: not JSON: ${(err as Error).message}`); }
    return tensorFromJson(json, fallbackDtype, file);
  }
  throw gridError('INVALID_INPUT', `${file}: use a .npy, .pb (ONNX TensorProto) or .json file`);
}

/**
 * Binds `--input [NAME=]FILE` arguments to the model's inputs: named ones by name, the others in the
 * order of the model's inputs that are not yet bound.
 */
export function bindInputs(args: readonly string[], signature: ModelSignature): NamedTensors {
  const feeds: NamedTensors = {};
  const positional: string[] = [];
  const names = new Set(signature.inputs.map((i) => i.name));
  for (const a of args) {
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : undefined;
    // A path may contain '='; only treat the prefix as a name if the model has that input.
    if (name !== undefined && names.has(name)) {
      if (name in feeds) throw gridError('INVALID_INPUT', `input "${name}" is given twice`);
      feeds[name] = readTensorFile(a.slice(eq + 1), signature.inputs.find((i) => i.name === name)!.dtype);
    } else if (name !== undefined && !fs.existsSync(a)) {
      throw gridError('INVALID_INPUT', `the model has no input "${name}"; its inputs are ${signature.inputs.map((i) => `"${i.name}"`).join(', ')}`);
    } else {
      positional.push(a);
    }
  }
  const free = signature.inputs.filter((i) => !(i.name in feeds));
  if (positional.length > free.length) {
    throw gridError('INVALID_INPUT', `${positional.length} unnamed inputs given but only ${free.length} model inputs are left (${free.map((i) => i.name).join(', ') || 'none'})`);
  }
  positional.forEach((file, i) => { feeds[free[i]!.name] = readTensorFile(file, free[i]!.dtype); });
  return feeds;
}

/** Writes outputs: one JSON file, or a directory with one .npy per output. Returns the paths written. */
export function writeOutputs(outputs: NamedTensors, dest: string): string[] {
  const isDir = dest.endsWith('/') || dest.endsWith(path.sep) || (fs.existsSync(dest) && fs.statSync(dest).isDirectory());
  if (isDir) {
    fs.mkdirSync(dest, { recursive: true });
    return Object.entries(outputs).map(([name, t]) => {
      const file = path.join(dest, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.npy`);
      writeAtomic(file, writeNpy(t));
      return file;
    });
  }
  writeAtomic(dest, `${JSON.stringify(outputsToJson(outputs))}\n`);
  return [dest];
}

export function outputsToJson(outputs: NamedTensors): Record<string, ReturnType<typeof tensorToJson>> {
  const out: Record<string, ReturnType<typeof tensorToJson>> = {};
  for (const [name, t] of Object.entries(outputs)) out[name] = tensorToJson(t);
  return out;
}

function writeAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.partial`;
  const fd = fs.openSync(tmp, 'w');
  try { fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data); fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  fs.renameSync(tmp, file);
}
