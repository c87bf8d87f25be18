// Tensors in and out of the grid's users' hands, one home for the CLI, the palette and the notebook:
// the files `grid infer` takes and writes (.npy, ONNX TensorProto .pb, and JSON: {"dtype", "dims",
// "data"} or a bare nested array whose dtype comes from the model), float16 bits as numbers, and
// binding files or values to a model's inputs.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../core/errors';
import { readNpy, writeNpy } from '../core/npy';
import { elementCount, isDType, tensorFromValues, type DType, type NamedTensors, type Tensor } from '../core/protocol/tensor';
import type { ModelSignature } from '../core/protocol/messages';
import { decodeTensorProto } from './onnx/tensor-proto';

/** IEEE half bits → float (subnormals, ±Infinity and NaN included). */
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

/** Where a binder found a name the model has no input for: names the model's inputs. */
function noSuchInput(signature: ModelSignature, name: string, modelId: string | undefined): Error {
  const model = modelId === undefined ? 'the model' : `model "${modelId}"`;
  return gridError('INVALID_INPUT', `${model} has no input "${name}"; its inputs are ${signature.inputs.map((i) => `"${i.name}"`).join(', ')}`);
}

/**
 * Binds `--input [NAME=]FILE` arguments (the CLI's, and the files the palette's Run Inference picks)
 * to the model's inputs: named ones by name, the others in the order of the model's inputs that are
 * not yet bound.
 */
export function bindInputFiles(args: readonly string[], signature: ModelSignature): NamedTensors {
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
      throw noSuchInput(signature, name, undefined);
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

/** A tensor already in memory (typed-array data, as the notebook kernel sends one), not its JSON form. */
function isTensorValue(v: object): v is Tensor {
  const t = v as Partial<Tensor>;
  return typeof t.dtype === 'string' && Array.isArray(t.dims) && (ArrayBuffer.isView(t.data) || (t.dtype === 'string' && Array.isArray(t.data)));
}

/** One input's value: a tensor in memory as it is, else its JSON form with the model's dtype. */
function inputTensor(value: unknown, dtype: DType, what: string): Tensor {
  return typeof value === 'object' && value !== null && isTensorValue(value) ? value : tensorFromJson(value, dtype, what);
}

/**
 * Binds one value to a model's inputs: what the notebook's `grid.infer` and the palette's JSON input
 * take. Either an object keyed by input names, or, for a one-input model, that input itself; each
 * input a tensor in memory or its JSON form ({"dtype", "dims", "data"} or nested numbers). An object
 * is a tensor, not a set of inputs, when it has a dtype/dims/data key that is not an input's name.
 * `what` says where the value came from, for the errors.
 */
export function bindInputValues(model: { id: string; signature: ModelSignature }, input: unknown, what: string): NamedTensors {
  const specs = model.signature.inputs;
  const names = new Set(specs.map((s) => s.name));
  const object = typeof input === 'object' && input !== null && !Array.isArray(input) && !ArrayBuffer.isView(input) ? input : undefined;
  const tensorLike = object !== undefined && ['dtype', 'dims', 'data'].some((k) => k in object && !names.has(k));
  if (object !== undefined && !tensorLike) {
    const feeds: NamedTensors = {};
    for (const [name, value] of Object.entries(object)) {
      const spec = specs.find((s) => s.name === name);
      if (!spec) throw noSuchInput(model.signature, name, model.id);
      feeds[name] = inputTensor(value, spec.dtype, `${what}: input "${name}"`);
    }
    const missing = specs.filter((s) => !(s.name in feeds));
    if (missing.length) throw gridError('INVALID_INPUT', `${what} has no value for input ${missing.map((s) => `"${s.name}"`).join(', ')} of model "${model.id}"`);
    return feeds;
  }
  if (specs.length !== 1) {
    throw gridError('INVALID_INPUT', `model "${model.id}" has ${specs.length} inputs; ${what} must be an object keyed by ${specs.map((s) => `"${s.name}"`).join(', ')}`);
  }
  const spec = specs[0]!;
  return { [spec.name]: inputTensor(input, spec.dtype, what) };
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
