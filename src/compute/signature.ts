// A model's signature (its inputs and outputs as dtype and dims) and the checks made against it: feeds
// before a run, output sizes before and after one. Plain TypeScript over the signature; no onnxruntime here.

import { ErrorCodes, GridError, gridError } from '../core/errors';
import { bytesPerElement, encodedTensorSize, validateTensor, type DType, type NamedTensors } from '../core/protocol/tensor';
import type { ModelSignature, ValueSignature } from '../core/protocol/messages';
import { decodeModel } from './onnx/model';
import { dtypeFromOnnx } from './onnx/tensor-proto';

// A model's inputs and outputs, as onnxruntime reads them from the graph: the very shape a node lists
// in ModelInfo, so the one type is the protocol's.
export type { ModelSignature, ValueSignature } from '../core/protocol/messages';
/** One dimension of a signature: a size, a symbolic name (`"batch"`), or null when the model says nothing. */
export type SignatureDim = ValueSignature['dims'][number];

/** A signature read from the ONNX graph (for ORT bindings without value metadata). */
export function signatureFromGraph(bytes: Uint8Array, inputNames: readonly string[], outputNames: readonly string[]): ModelSignature {
  const graph = decodeModel(bytes).graph!;
  const infos = new Map([...(graph.input ?? []), ...(graph.output ?? [])].map((v) => [v.name ?? '', v]));
  const one = (name: string, kind: string): ValueSignature => {
    const t = infos.get(name)?.type?.tensorType;
    if (!t) throw gridError('INVALID_MODEL', `${kind} "${name}" is not a tensor; the grid only carries tensors`);
    const dtype = dtypeFromOnnx(t.elemType ?? 0, `${kind} "${name}"`);
    const dims = (t.shape?.dim ?? []).map((d): SignatureDim => d.dimValue ?? d.dimParam ?? null);
    return { name, dtype, dims };
  };
  return { inputs: inputNames.map((n) => one(n, 'input')), outputs: outputNames.map((n) => one(n, 'output')) };
}

function describeDims(dims: readonly SignatureDim[]): string {
  return `[${dims.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

/** A feed's dtype and dims: all a shape check needs (a decoded tensor, or a tensor header before decoding). */
export interface FeedShape {
  readonly dtype: DType;
  readonly dims: readonly number[];
}

/**
 * Checks feed dtypes and shapes against the signature, so a bad call gets an error naming the input instead
 * of ORT's generic message. Symbolic dims must agree across inputs (e.g. one `batch`). Works on headers too:
 * the node checks a request's tensors this way before decoding them. Returns the symbols' sizes.
 */
export function checkFeedShapes(signature: ModelSignature, feeds: Readonly<Record<string, FeedShape>>): Map<string, number> {
  // Runs on every inference request: no per-call index of the inputs, closures or copies.
  const expected = inputsByName(signature);
  for (const name of Object.keys(feeds)) {
    if (!expected.has(name)) {
      throw gridError('INVALID_INPUT', `the model has no input "${name}"; its inputs are ${signature.inputs.map((i) => `"${i.name}"`).join(', ') || 'none'}`, { input: name });
    }
  }
  const sizes = new Map<string, number>();
  for (const sig of signature.inputs) {
    const t = feeds[sig.name];
    if (t === undefined) throw gridError('INVALID_INPUT', `input "${sig.name}" is missing (expected ${sig.dtype} ${describeDims(sig.dims)})`, { input: sig.name });
    if (t.dtype !== sig.dtype) {
      throw gridError('INVALID_INPUT', `input "${sig.name}" must be ${sig.dtype}, got ${t.dtype}`, { input: sig.name, expected: sig.dtype, given: t.dtype });
    }
    // ORT reports a scalar and an input of unknown rank alike (empty shape): let ORT decide those.
    if (sig.dims.length === 0) continue;
    if (sig.dims.length !== t.dims.length) throw shapeMismatch(sig, t);
    for (let i = 0; i < sig.dims.length; i++) {
      const d = sig.dims[i];
      const given = t.dims[i]!;
      if (typeof d === 'number' && d !== given) throw shapeMismatch(sig, t);
      if (typeof d === 'string' && d !== '') {
        const seen = sizes.get(d);
        if (seen !== undefined && seen !== given) {
          // Which input set the symbol: the first one (in signature order) that has it.
          const first = signature.inputs.find((s) => s.dims.includes(d))!;
          throw gridError('INVALID_INPUT', `input "${sig.name}" dimension ${i} ("${d}") is ${given}, but input "${first.name}" has "${d}" = ${seen}`, { input: sig.name });
        }
        if (seen === undefined) sizes.set(d, given);
      }
    }
  }
  return sizes;
}

function shapeMismatch(sig: ValueSignature, t: FeedShape): GridError {
  return gridError('INVALID_INPUT', `input "${sig.name}" must have shape ${describeDims(sig.dims)}, got [${t.dims.join(', ')}]`, { input: sig.name, expected: sig.dims, given: t.dims });
}

/** A model's inputs by name, made once per signature (signatures live as long as their model). */
const inputIndex = new WeakMap<ModelSignature, Map<string, ValueSignature>>();
function inputsByName(signature: ModelSignature): Map<string, ValueSignature> {
  let m = inputIndex.get(signature);
  if (m === undefined) {
    m = new Map(signature.inputs.map((i) => [i.name, i]));
    inputIndex.set(signature, m);
  }
  return m;
}

/** Checks feeds (dtypes, shapes and data) against the signature before ORT sees them. */
export function checkFeeds(signature: ModelSignature, feeds: NamedTensors): void {
  if (feeds === null || typeof feeds !== 'object') throw new TypeError('feeds must be an object of named tensors');
  for (const sig of signature.inputs) {
    const t = feeds[sig.name];
    if (t === undefined) continue;
    try {
      validateTensor(t, `input "${sig.name}"`);
    } catch (err) {
      throw new GridError(ErrorCodes.INVALID_INPUT, (err as Error).message, { input: sig.name });
    }
  }
  checkFeedShapes(signature, feeds);
}

/**
 * True when every output's shape follows from the inputs' shapes (fixed sizes, or symbols that an input
 * also has), so its size is known before the run. Not so for outputs whose size depends on input values
 * (ConstantOfShape, Range, NonZero …) or is unknown: such a run may allocate any amount.
 */
export function outputsFollowInputShapes(signature: ModelSignature): boolean {
  const inputSymbols = new Set(signature.inputs.flatMap((i) => i.dims.filter((d): d is string => typeof d === 'string' && d !== '')));
  // An empty shape is a scalar or an unknown rank: ORT does not say which, so it counts as unknown.
  return signature.outputs.every((o) => o.dtype !== 'string' && o.dims.length > 0 && o.dims.every((d) => typeof d === 'number' ? d >= 0 : typeof d === 'string' && inputSymbols.has(d)));
}

/**
 * Bytes each output will take, where its shape is known from the signature and the inputs' symbol sizes
 * (from checkFeedShapes); outputs of unknown size are left out. Lets a node refuse a run before it starts.
 */
export function knownOutputBytes(signature: ModelSignature, symbols: ReadonlyMap<string, number>, outputs?: readonly string[]): Map<string, number> {
  const wanted = outputs === undefined ? undefined : new Set(outputs);
  const sizes = new Map<string, number>();
  for (const o of signature.outputs) {
    if (wanted !== undefined && !wanted.has(o.name)) continue;
    if (o.dtype === 'string' || o.dims.length === 0) continue;
    let n = 1;
    for (const d of o.dims) n *= typeof d === 'number' ? d : typeof d === 'string' ? symbols.get(d) ?? Number.NaN : Number.NaN;
    if (Number.isFinite(n) && n >= 0) sizes.set(o.name, n * bytesPerElement(o.dtype));
  }
  return sizes;
}

/** Fails with PAYLOAD_TOO_LARGE, naming the biggest output, when outputs together exceed `max` bytes. */
export function checkOutputBytes(sizes: ReadonlyMap<string, number>, max: number, when: string): void {
  let total = 0;
  let biggest: [string, number] = ['', -1];
  for (const [name, bytes] of sizes) {
    total += bytes;
    if (bytes > biggest[1]) biggest = [name, bytes];
  }
  if (total <= max) return;
  throw gridError('PAYLOAD_TOO_LARGE',
    `output "${biggest[0]}" ${when} ${formatBytes(biggest[1])}${sizes.size > 1 ? ` (${formatBytes(total)} for all outputs)` : ''}, over this node's limit of ${formatBytes(max)} per inference request; ask for less (smaller inputs, fewer outputs) or have the node's operator raise its inference.maxOutputBytes`,
    { output: biggest[0], bytes: biggest[1], total, limit: max });
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v >= 100 ? Math.round(v) : Number(v.toFixed(1))} ${units[u]} (${n} bytes)`;
}

/** Bytes of each tensor's data (a string costs its UTF-8 bytes and a 4-byte length), as knownOutputBytes counts them. */
export function outputSizes(tensors: NamedTensors): Map<string, number> {
  return new Map(Object.entries(tensors).map(([name, t]) => [name, encodedTensorSize(t) - 8 - 8 * t.dims.length]));
}
