// The syft-proto `State` (syft_proto.execution.v1.State, v0.4.9): how PyGrid-era hosts send a model's
// parameters, how checkpoints reach syft.js / KotlinSyft / SwiftSyft workers, and how their diffs come
// back. Only the messages a State needs, as a protobufjs reflection descriptor defined here (field
// numbers from the syft_proto tables; docs/federated-learning.md). Parameters are float32 tensors: the
// node encodes them the one way syft.js reads (serializer = SERIALIZER_ALL, contents_data), and decodes
// float32 or float64 contents, inside a TorchTensor or a Parameter.

import { isUtf8 } from 'node:buffer';
import * as protobuf from 'protobufjs/light';
import { gridError } from '../errors';
import { allFiniteBytes, decodeBase64Transient, firstNonFinite, type JsonText } from './text-bytes';

type Fields = Record<string, { type: string; id: number; rule?: 'repeated' }>;
const f = (type: string, id: number): Fields[string] => ({ type, id });
const r = (type: string, id: number): Fields[string] => ({ type, id, rule: 'repeated' });

// Proto3 (protobufjs's default for JSON descriptors): repeated floats are packed, as syft.js writes them.
function stateRoot(contents: { float32: Fields[string]; float64: Fields[string] }): protobuf.Root {
  return protobuf.Root.fromJSON({
    nested: {
      syft: {
        nested: {
          Id: { fields: { idInt: f('int64', 1), idStr: f('string', 2) } as Fields },
          Size: { fields: { dims: r('int32', 1) } as Fields },
          TensorData: {
            fields: {
              shape: f('Size', 1), dtype: f('string', 2), isQuantized: f('bool', 3), scale: f('float', 4), zeroPoint: f('int32', 5),
              contentsFloat32: contents.float32, contentsFloat64: contents.float64,
            } as Fields,
          },
          TorchTensor: {
            fields: {
              id: f('Id', 1), contentsData: f('TensorData', 2), contentsBin: f('bytes', 3), chain: f('TorchTensor', 4),
              gradChain: f('TorchTensor', 5), tags: r('string', 6), description: f('string', 7), serializer: f('int32', 8),
            } as Fields,
          },
          Parameter: { fields: { id: f('Id', 1), tensor: f('TorchTensor', 2), requiresGrad: f('bool', 3), grad: f('TorchTensor', 4) } as Fields },
          Placeholder: {
            fields: { childTensor: f('TorchTensor', 1), childParameter: f('Parameter', 2), id: f('Id', 3), tags: r('string', 4), description: f('string', 5) } as Fields,
          },
          StateTensor: { fields: { torchTensor: f('TorchTensor', 1), torchParam: f('Parameter', 2) } as Fields },
          State: { fields: { placeholders: r('Placeholder', 1), tensors: r('StateTensor', 2) } as Fields },
        },
      },
    },
  } as protobuf.INamespace);
}

const StateType = stateRoot({ float32: r('float', 22), float64: r('double', 23) }).lookupType('syft.State');
// The same State with each tensor's contents as the raw bytes of its packed field: protobufjs reads a
// packed float field into a JS array one number at a time, ~4 ms for a 100k-parameter diff, where the
// bytes are already little-endian floats to copy into a Float32Array.
const RawStateType = stateRoot({ float32: r('bytes', 22), float64: r('bytes', 23) }).lookupType('syft.State');
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** syft_proto TorchTensor.Serializer.SERIALIZER_ALL: the only one syft.js reads. */
export const SERIALIZER_ALL = 4;

/** One parameter tensor of a State. */
export interface StateTensor {
  dims: number[];
  data: Float32Array;
}

interface TensorDataMsg<V> { shape?: { dims?: number[] }; dtype?: string; contentsFloat32?: V; contentsFloat64?: V; $unknowns?: unknown[] }
interface TorchTensorMsg<V> { contentsData?: TensorDataMsg<V>; contentsBin?: Uint8Array; serializer?: number }
interface StateMsg<V = ArrayLike<number>> {
  tensors?: { torchTensor?: TorchTensorMsg<V>; torchParam?: { tensor?: TorchTensorMsg<V> } }[];
  /** Every value is known finite (checked on the wire's bytes, where they lay); otherwise decodeState checks. */
  finite?: boolean;
}

/** The packed chunks of one repeated float field as float32 values; undefined if they are not whole values. */
function floatsOf(chunks: Uint8Array[] | undefined, size: 4 | 8): Float32Array | undefined {
  if (chunks === undefined || chunks.length === 0) return undefined;
  const total = chunks.reduce((a, c) => a + c.length, 0);
  if (total % size !== 0) return undefined;
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return size === 4 ? new Float32Array(bytes.buffer) : Float32Array.from(new Float64Array(bytes.buffer));
}

let walkWire = true;
/** For tests: decode every State with protobufjs (as before wireStateMsg), to compare both. */
export function useWireStateWalker(on: boolean): void {
  walkWire = on;
}

/**
 * The State message read straight off its wire format, for the shape syft.js, KotlinSyft and this node
 * write: tensors as TorchTensors of contents_data with packed dims and one packed float32 run each. The
 * floats of all tensors land in one Float32Array (one copy, one allocation). Undefined for anything else
 * (a Parameter, float64, unpacked or split values, a field twice, a field of another wire type, an
 * unknown field): protobufjs then decodes it (decodeStateMsg), which decides what such a State is.
 */
function wireStateMsg(bytes: Uint8Array, place?: FloatPlace): StateMsg | undefined {
  let pos = 0;
  let ok = true;
  const varint = (end: number): number => {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (pos >= end) { ok = false; return 0; }
      const b = bytes[pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    ok = false; // wider than 32 bits: protobufjs's int32 wraps it; leave that to it
    return 0;
  };
  /** The end of the length-delimited field at pos (its length read), or -1. */
  const sub = (end: number): number => {
    const len = varint(end);
    const stop = pos + len;
    if (!ok || stop > end) return -1;
    return stop;
  };
  const skip = (wire: number, end: number): boolean => {
    if (wire === 0) varint(end);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) { const stop = sub(end); if (stop < 0) return false; pos = stop; }
    else return false;
    return ok && pos <= end;
  };
  /** A string field, only walked: valid UTF-8, which protobufjs verifies (proto3) and refuses otherwise. */
  const text = (end: number): boolean => {
    const stop = sub(end);
    if (stop < 0 || !isUtf8(bytes.subarray(pos, stop))) return false;
    pos = stop;
    return true;
  };
  /** An Id (int64 id_int, string id_str), only walked: protobufjs would decode it, so it must be one. */
  const id = (end: number): boolean => {
    while (pos < end) {
      const tag = varint(end);
      if (!ok || (tag !== ((1 << 3) | 0) && tag !== ((2 << 3) | 2))) return false;
      if (tag === 8) {
        // int64: up to 10 bytes of varint.
        let n = 0;
        while (pos < end && (bytes[pos++]! & 0x80) !== 0) if (++n >= 10) return false;
        if ((bytes[pos - 1]! & 0x80) !== 0) return false;
      } else if (!text(end)) return false;
    }
    return pos === end;
  };
  /** A Placeholder of its id and tags (what syft.js writes), only walked. */
  const placeholder = (end: number): boolean => {
    while (pos < end) {
      const tag = varint(end);
      if (!ok) return false;
      if (tag === ((3 << 3) | 2)) {
        const stop = sub(end);
        if (stop < 0 || !id(stop)) return false;
      } else if (tag === ((4 << 3) | 2) || tag === ((5 << 3) | 2)) {
        if (!text(end)) return false;
      } else {
        return false;
      }
    }
    return pos === end;
  };
  const runs: { td: TensorDataMsg<Float32Array>; from: number; to: number }[] = [];
  const tensorData = (end: number): TensorDataMsg<Float32Array> | undefined => {
    const td: TensorDataMsg<Float32Array> = {};
    let seen = 0;
    while (pos < end) {
      const tag = varint(end);
      const field = tag >>> 3, wire = tag & 7;
      if (!ok || field < 1 || field > 31 || (seen & (1 << field)) !== 0) return undefined;
      seen |= 1 << field;
      if (field === 1 && wire === 2) {
        const stop = sub(end);
        if (stop < 0) return undefined;
        const dims: number[] = [];
        while (pos < stop) {
          const t = varint(stop);
          if (!ok || t !== ((1 << 3) | 2)) return undefined; // Size: packed dims only
          const dstop = sub(stop);
          if (dstop < 0) return undefined;
          while (pos < dstop) {
            const d = varint(dstop);
            if (!ok || d >= 2 ** 31) return undefined;
            dims.push(d);
          }
        }
        td.shape = { dims };
      } else if (field === 2 && wire === 2) {
        const stop = sub(end);
        if (stop < 0) return undefined;
        td.dtype = Buffer.from(bytes.buffer, bytes.byteOffset + pos, stop - pos).toString('latin1');
        if (td.dtype !== 'float32') return undefined; // another dtype: protobufjs words it
        pos = stop;
      } else if (field === 22 && wire === 2) {
        const stop = sub(end);
        if (stop < 0 || (stop - pos) % 4 !== 0) return undefined;
        runs.push({ td, from: pos, to: stop });
        pos = stop;
      } else if ((field === 3 && wire === 0) || (field === 4 && wire === 5) || (field === 5 && wire === 0)) {
        if (!skip(wire, end)) return undefined;
      } else {
        return undefined;
      }
    }
    return pos === end ? td : undefined;
  };
  const torchTensor = (end: number): TorchTensorMsg<Float32Array> | undefined => {
    const t: TorchTensorMsg<Float32Array> = {};
    let seen = 0;
    while (pos < end) {
      const tag = varint(end);
      const field = tag >>> 3, wire = tag & 7;
      if (!ok || field < 1 || field > 8 || (seen & (1 << field)) !== 0) return undefined;
      seen |= 1 << field;
      if (field === 2 && wire === 2) {
        const stop = sub(end);
        if (stop < 0) return undefined;
        const td = tensorData(stop);
        if (td === undefined) return undefined;
        t.contentsData = td;
      } else if (field === 8 && wire === 0) {
        const v = varint(end);
        if (!ok || v >= 2 ** 31) return undefined;
        t.serializer = v;
      } else if (field === 1 && wire === 2) {
        const stop = sub(end);
        if (stop < 0 || !id(stop)) return undefined;
      } else {
        return undefined; // contents_bin, chains, tags, description: protobufjs's business
      }
    }
    return pos === end ? t : undefined;
  };
  const tensors: StateMsg<Float32Array>['tensors'] & object = [];
  const end = bytes.length;
  while (pos < end) {
    const tag = varint(end);
    const field = tag >>> 3, wire = tag & 7;
    if (!ok || wire !== 2) return undefined;
    if (field === 1) {
      const stop = sub(end);
      if (stop < 0 || !placeholder(stop)) return undefined;
    } else if (field === 2) {
      const stop = sub(end);
      if (stop < 0) return undefined;
      const t = varint(stop);
      if (!ok || t !== ((1 << 3) | 2)) return undefined; // a StateTensor holding exactly one TorchTensor
      const tstop = sub(stop);
      if (tstop !== stop) return undefined;
      const torch = torchTensor(stop);
      if (torch === undefined) return undefined;
      tensors.push({ torchTensor: torch });
    } else {
      return undefined;
    }
  }
  if (pos !== end) return undefined;
  // Checked where the bytes lie (base64 decoded into the kernels' memory is scanned without a copy in);
  // a non-finite value is found again on its tensor, in order, by decodeState.
  let finite = true;
  for (const r of runs) if (!allFiniteBytes(bytes.subarray(r.from, r.to))) { finite = false; break; }
  const total = runs.reduce((a, r) => a + (r.to - r.from), 0);
  const floats = place?.(total) ?? new ArrayBuffer(total);
  const all = new Uint8Array(floats, 0, total);
  let at = 0;
  for (const r of runs) {
    all.set(bytes.subarray(r.from, r.to), at);
    r.td.contentsFloat32 = new Float32Array(floats, at, (r.to - r.from) / 4);
    at += r.to - r.from;
  }
  return { tensors, finite } as StateMsg;
}

/**
 * The State message, its float contents as Float32Arrays when every tensor's contents are packed whole
 * (as syft.js, KotlinSyft and this node write them); otherwise (unpacked values, a truncated packed
 * field, a big-endian host) decoded by protobufjs number by number, which decides what such a State is.
 */
function decodeStateMsg(bytes: Uint8Array): StateMsg {
  if (LITTLE_ENDIAN) {
    const reader = protobuf.Reader.create(bytes);
    reader.discardUnknown = false; // unpacked float values land among the unknowns: then the slow path
    let raw: StateMsg<Uint8Array[]>;
    try {
      raw = RawStateType.decode(reader) as unknown as StateMsg<Uint8Array[]>;
    } catch {
      return StateType.decode(bytes) as unknown as StateMsg; // it words the refusal
    }
    let whole = true;
    const tensors = (raw.tensors ?? []).map((st) => {
      const td = (st.torchTensor ?? st.torchParam?.tensor)?.contentsData;
      if (td === undefined) return st;
      if ((td.$unknowns?.length ?? 0) > 0) whole = false;
      const f32 = td.contentsFloat32, f64 = td.contentsFloat64;
      const contentsFloat32 = floatsOf(f32, 4), contentsFloat64 = floatsOf(f64, 8);
      if ((f32?.length ?? 0) > 0 && contentsFloat32 === undefined) whole = false;
      if ((f64?.length ?? 0) > 0 && contentsFloat64 === undefined) whole = false;
      td.contentsFloat32 = contentsFloat32 as unknown as Uint8Array[];
      td.contentsFloat64 = contentsFloat64 as unknown as Uint8Array[];
      return st;
    });
    if (whole) return { tensors } as unknown as StateMsg;
  }
  return StateType.decode(bytes) as unknown as StateMsg;
}

/** The largest number of tensors a State may hold; a model with more is not a model a phone trains. */
const MAX_TENSORS = 4096;

/**
 * Where a decoded State's floats go: an ArrayBuffer of at least `byteLength` bytes (e.g. one reused from
 * a pool once the caller is done with the tensors of an earlier State), or undefined for a new one.
 */
export type FloatPlace = (byteLength: number) => ArrayBuffer | undefined;

/** What a State may claim, checked on its raw bytes before anything is decoded or allocated. */
export interface StateLimits {
  /** Tensors (and, separately, placeholders) in the State. Default 4096. */
  maxTensors?: number;
  /** float values over all tensors, by their shapes. Default 64 Mi (256 MiB of float32, the node's largest FL body). */
  maxValues?: number;
}

const DEFAULT_STATE_LIMITS: Readonly<Required<StateLimits>> = { maxTensors: MAX_TENSORS, maxValues: 64 * 1024 * 1024 };

/** Dimensions of one tensor's shape. */
const MAX_DIMS = 32;
/** Fields of one message besides its repeated tensors, dims and values (a syft.js State uses fewer than 10). */
const MAX_FIELDS_PER_MESSAGE = 64;
/** TorchTensor chains nest (chain, grad_chain, a Parameter's grad); deeper than this is no model. */
const MAX_DEPTH = 8;

type MsgKind = 'State' | 'Placeholder' | 'StateTensor' | 'TorchTensor' | 'Parameter' | 'TensorData' | 'Size' | 'Id';
// The submessages of each message the decoder builds (field number → its type); every other field is skipped.
const SUBMESSAGES: Record<MsgKind, Record<number, MsgKind>> = {
  State: { 1: 'Placeholder', 2: 'StateTensor' },
  Placeholder: { 1: 'TorchTensor', 2: 'Parameter', 3: 'Id' },
  StateTensor: { 1: 'TorchTensor', 2: 'Parameter' },
  TorchTensor: { 1: 'Id', 2: 'TensorData', 4: 'TorchTensor', 5: 'TorchTensor' },
  Parameter: { 1: 'Id', 2: 'TorchTensor', 4: 'TorchTensor' },
  TensorData: { 1: 'Size' },
  Size: {},
  Id: {},
};

/**
 * Walks a State's protobuf wire format without decoding it (no objects, no copies) and refuses, coded
 * INVALID_TENSOR, one that claims more than the limits allow: too many tensors or placeholders, a shape
 * of too many values (one tensor or all of them), too many fields in one message (each would become an
 * object), or nesting too deep. protobufjs turns every 2-byte field into an object, so a few MiB of
 * hostile State would otherwise cost GiBs before the first check ran.
 */
function checkStateLimits(bytes: Uint8Array, what = 'the State', limits: StateLimits = {}): void {
  const maxTensors = limits.maxTensors ?? DEFAULT_STATE_LIMITS.maxTensors;
  const maxValues = limits.maxValues ?? DEFAULT_STATE_LIMITS.maxValues;
  const refuse = (why: string): never => { throw gridError('INVALID_TENSOR', `${what} ${why}`); };
  const torn = (): never => refuse('is not a syft-proto State (a field runs past its end)');
  let pos = 0;
  const varint = (end: number): number => {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (pos >= end) torn();
      const b = bytes[pos++]!;
      if (shift < 53) value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    return refuse('is not a syft-proto State (a varint longer than 10 bytes)');
  };
  const peekLength = (end: number): number => {
    const at = pos;
    const len = varint(end);
    pos = at;
    return len;
  };
  let tensors = 0, placeholders = 0, totalValues = 0, carried = 0;
  const walk = (kind: MsgKind, end: number, depth: number): void => {
    if (depth > MAX_DEPTH) refuse(`nests tensors more than ${MAX_DEPTH} deep`);
    let fields = 0, dims = 0, count = 1;
    while (pos < end) {
      const tag = varint(end);
      const field = Math.floor(tag / 8), wire = tag % 8;
      if (kind === 'State' && field === 2) {
        if (++tensors > maxTensors) refuse(`holds more than ${maxTensors} tensors; at most ${maxTensors}`);
      } else if (kind === 'State' && field === 1) {
        if (++placeholders > maxTensors) refuse(`holds more than ${maxTensors} placeholders; at most ${maxTensors}`);
      } else if (kind === 'Size' && field === 1 && (wire === 0 || wire === 2)) {
        // dims: packed (one length-delimited run of varints) or one varint per field.
        const stop = wire === 2 ? varint(end) + pos : end;
        if (stop > end) torn();
        do {
          if (wire === 2 && pos >= stop) break;
          const d = varint(stop);
          if (d >= 2 ** 31) refuse('has a tensor with a negative dimension');
          if (++dims > MAX_DIMS) refuse(`has a tensor of more than ${MAX_DIMS} dimensions`);
          count *= d;
          if (count > maxValues) refuse(`has a tensor whose shape holds more than ${maxValues} values`);
        } while (wire === 2);
        continue;
      } else if (kind === 'TensorData' && (field === 22 || field === 23)) {
        // The values carried (packed: a run of 4- or 8-byte floats; unpacked: one a field), whatever the shape says.
        carried += wire === 2 ? Math.floor(peekLength(end) / (field === 22 ? 4 : 8)) : 1;
        if (carried > maxValues) refuse(`carries more than ${maxValues} values in all`);
      } else if (++fields > MAX_FIELDS_PER_MESSAGE) {
        refuse(`has a ${kind} message of more than ${MAX_FIELDS_PER_MESSAGE} fields`);
      }
      if (wire === 0) varint(end);
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        const stop = varint(end) + pos;
        if (stop > end) torn();
        const sub = SUBMESSAGES[kind][field];
        if (sub !== undefined) walk(sub, stop, depth + 1);
        pos = stop;
      } else refuse(`is not a syft-proto State (wire type ${wire})`);
      if (pos > end) torn();
    }
    if (kind === 'Size') {
      totalValues += count;
      if (totalValues > maxValues) refuse(`holds more than ${maxValues} values in all`);
    }
  };
  walk('State', bytes.length, 0);
}

/**
 * Bytes from the text a PyGrid client sends: hex (PySyft hosts: `binascii.hexlify`) or base64 (reports;
 * KotlinSyft's `Base64.DEFAULT` breaks lines), whitespace ignored. Undefined when it is neither.
 */
export function decodeText(text: string, accept: 'hex-or-base64' | 'base64' = 'hex-or-base64'): Buffer | undefined {
  if (accept === 'base64') {
    // A report is half a megabyte of base64, usually padded and unbroken: decode it natively. The native
    // decoder skips what is not base64 and stops at an inner '=', so the bytes come out whole only when
    // every character counted: then they are what the general path below decodes. Anything else (line
    // breaks, no padding, stray characters) takes that path, which also refuses what is not base64.
    const fast = Buffer.from(text, 'base64');
    const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
    if (fast.length > 0 && text.length % 4 === 0 && fast.length === (text.length / 4) * 3 - pad) return fast;
  }
  const s = text.replace(/\s+/g, '');
  if (s.length === 0) return undefined;
  // Reports are always base64 (PyGrid b64decodes them); hosts send hex, which base64's alphabet also covers.
  if (accept === 'hex-or-base64' && s.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(s)) return Buffer.from(s, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(s) && s.length % 4 !== 1) return Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return undefined;
}

/**
 * A State sent as base64 text (a report's diff), decoded (decodeState). From a JsonText the base64 is
 * decoded straight from the frame's bytes into the kernels' memory, where the State is walked and its
 * values checked finite, so a report allocates and copies out only its tensors' floats; decodeText
 * decides what that strict decoder refuses (it is lenient where that one is strict), and decodes a
 * string. Undefined when the text is not base64.
 */
export function decodeStateText(text: string | JsonText, what = 'the State', limits: StateLimits = {}, place?: FloatPlace): StateTensor[] | undefined {
  // The decoded bytes are read (and their floats copied out) before the call returns.
  let bytes = typeof text === 'string' ? undefined : decodeBase64Transient(text.bytes);
  bytes ??= decodeText(typeof text === 'string' ? text : text.text(), 'base64');
  return bytes === undefined ? undefined : decodeState(bytes, what, limits, place);
}

/**
 * A State's float tensors, in order. `what` names the payload in errors ("the diff"). Refuses (coded
 * INVALID_TENSOR) a payload that is not a State, a truncated one, a tensor that is not serialized with
 * contents_data, an unsupported dtype, a shape that disagrees with its contents, or NaN/Inf values.
 */
export function decodeState(bytes: Uint8Array, what = 'the State', limits: StateLimits = {}, place?: FloatPlace): StateTensor[] {
  checkStateLimits(bytes, what, limits);
  let msg: StateMsg;
  try {
    msg = (LITTLE_ENDIAN && walkWire ? wireStateMsg(bytes, place) : undefined) ?? decodeStateMsg(bytes);
  } catch (err) {
    throw gridError('INVALID_TENSOR', `${what} is not a syft-proto State (${(err as Error).message})`);
  }
  const tensors = msg.tensors ?? [];
  if (tensors.length === 0) throw gridError('INVALID_TENSOR', `${what} holds no tensors`);
  return tensors.map((st, i) => {
    const t = st.torchTensor ?? st.torchParam?.tensor;
    if (t === undefined) throw gridError('INVALID_TENSOR', `${what}: tensor ${i} is neither a torch tensor nor a parameter`);
    const td = t.contentsData;
    if (td === undefined || (t.serializer !== undefined && t.serializer !== 0 && t.serializer !== SERIALIZER_ALL)) {
      throw gridError('INVALID_TENSOR', `${what}: tensor ${i} is not serialized as contents_data (serializer ${t.serializer ?? 0}); send it with SERIALIZER_ALL`);
    }
    const dims = [...(td.shape?.dims ?? [])];
    if (dims.some((d) => !Number.isInteger(d) || d < 0)) throw gridError('INVALID_TENSOR', `${what}: tensor ${i} has a negative dimension (${dims.join('×')})`);
    const count = dims.reduce((a, b) => a * b, 1);
    const dtype = td.dtype ?? '';
    const values = dtype === 'float32' ? td.contentsFloat32 : dtype === 'float64' ? td.contentsFloat64 : undefined;
    if (values === undefined) throw gridError('INVALID_TENSOR', `${what}: tensor ${i} has dtype ${JSON.stringify(dtype)}; the node takes float32 (or float64) parameters`);
    if (values.length !== count) throw gridError('INVALID_TENSOR', `${what}: tensor ${i} has shape [${dims.join(', ')}] (${count} values) but carries ${values.length}`);
    const data = values instanceof Float32Array ? values : Float32Array.from(values);
    const k = msg.finite === true ? -1 : firstNonFinite(data);
    if (k >= 0) throw gridError('INVALID_TENSOR', `${what}: tensor ${i} holds ${data[k]} at index ${k}; values must be finite`);
    return { dims, data };
  });
}

/** A State as syft.js 0.1.4 loads it: placeholders tagged `#<i>`, `#state-<i>`, float32 contents_data. */
export function encodeState(tensors: readonly StateTensor[]): Uint8Array {
  const ids = tensors.map((_, i) => 1000 + i);
  const msg = {
    placeholders: tensors.map((_, i) => ({ id: { idInt: ids[i] }, tags: [`#${i}`, `#state-${i}`] })),
    tensors: tensors.map((t, i) => ({
      torchTensor: {
        id: { idInt: ids[i] },
        serializer: SERIALIZER_ALL,
        contentsData: { shape: { dims: t.dims }, dtype: 'float32', contentsFloat32: Array.from(t.data) },
      },
    })),
  };
  return StateType.encode(StateType.fromObject(msg)).finish();
}

/** Refuses a diff whose tensor count or shapes differ from the model's (before any of it is averaged). */
export function checkShapes(diff: readonly StateTensor[], model: readonly (readonly number[])[], what = 'the diff'): void {
  if (diff.length !== model.length) throw gridError('INVALID_TENSOR', `${what} holds ${diff.length} tensors; the model has ${model.length}`);
  diff.forEach((t, i) => {
    const m = model[i]!;
    if (t.dims.length !== m.length || t.dims.some((d, k) => d !== m[k])) {
      throw gridError('INVALID_TENSOR', `${what}: tensor ${i} has shape [${t.dims.join(', ')}]; the model's is [${m.join(', ')}]`);
    }
  });
}
