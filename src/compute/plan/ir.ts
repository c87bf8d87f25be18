// The working form of a graph while a plan is derived: nodes in topological order, known shapes
// (symbolic where the batch size is unknown), constants, and a builder that emits new nodes with
// fresh names.

import { gridError } from '../../core/errors';
import type { Tensor } from '../../core/protocol/tensor';
import { makeAttribute, floatAttribute, type AttrValue } from '../onnx/model';
import { ONNX_DTYPE_CODES, tensorToProto } from '../onnx/tensor-proto';
import type { OnnxAttribute, OnnxNode, OnnxTensorProto } from '../onnx/types';

/** A dimension: a size, or a symbolic product such as "N" or "N*4". */
export type Dim = number | string;
/** A known shape, or null when the rank is not known. */
export type Shape = Dim[] | null;

export type FloatType = 'float32' | 'float64';

// Symbolic dims are monomials: a numeric coefficient times named symbols.
interface Monomial { c: number; syms: string[] }

function toMono(d: Dim): Monomial {
  if (typeof d === 'number') return { c: d, syms: [] };
  let c = 1;
  const syms: string[] = [];
  for (const part of d.split('*')) {
    if (/^\d+$/.test(part)) c *= Number(part);
    else syms.push(part);
  }
  return { c, syms: syms.sort() };
}

function fromMono(m: Monomial): Dim {
  if (m.syms.length === 0) return m.c;
  return m.c === 1 ? m.syms.join('*') : `${m.c}*${m.syms.join('*')}`;
}

export function mulDims(dims: readonly Dim[]): Dim {
  let c = 1;
  const syms: string[] = [];
  for (const d of dims) {
    const m = toMono(d);
    c *= m.c;
    syms.push(...m.syms);
  }
  return fromMono({ c, syms: syms.sort() });
}

/** a / b, or null when it does not divide. */
export function divDims(a: Dim, b: Dim): Dim | null {
  const ma = toMono(a), mb = toMono(b);
  if (mb.c === 0 || ma.c % mb.c !== 0) return null;
  const syms = [...ma.syms];
  for (const s of mb.syms) {
    const i = syms.indexOf(s);
    if (i < 0) return null;
    syms.splice(i, 1);
  }
  return fromMono({ c: ma.c / mb.c, syms });
}

export function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  return `(${a}+${b})`;
}

export function sameDim(a: Dim, b: Dim): boolean {
  return String(a) === String(b);
}

export function describeShape(s: Shape): string {
  return s === null ? '(unknown)' : `[${s.join(', ')}]`;
}

/** Broadcast of two shapes (numpy rules); throws when they cannot broadcast. */
export function broadcastShapes(a: Shape, b: Shape, what: string): Shape {
  if (a === null || b === null) return null;
  const r = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1;
    const db = b[b.length - r + i] ?? 1;
    if (da === 1) out.push(db);
    else if (db === 1 || sameDim(da, db)) out.push(da);
    else if (typeof da === 'number' && typeof db === 'number') throw gridError('INVALID_MODEL', `${what}: shapes ${describeShape(a)} and ${describeShape(b)} do not broadcast`);
    // Two unknown sizes: equal or 1 at run time; name the result so gradients decide at run time too.
    else out.push(`max(${da},${db})`);
  }
  return out;
}

export interface IrValue {
  shape: Shape;
  /** ONNX elem type code, when known. */
  elemType?: number;
}

/** Emits nodes into a node list with fresh, collision-free names. */
export class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensorProto[] = [];
  readonly values = new Map<string, IrValue>();
  /** Values known when the plan is built (constant initializers), for shape inference. */
  readonly consts = new Map<string, Tensor>();
  /** Small int64 values known symbolically (shape arithmetic as PyTorch exports it: Shape→Gather→Concat→Reshape). */
  readonly symbolic = new Map<string, { dims: Dim[]; scalar: boolean }>();
  /** value → the value whose full shape it holds (outputs of Shape nodes), for Reshape/Expand inference. */
  readonly shapeSource = new Map<string, string>();
  private readonly used: Set<string>;
  private readonly constCache = new Map<string, string>();
  private counter = 0;
  /** Called for every emitted node, so emitted values get shapes too. */
  onEmit: ((node: OnnxNode) => void) | undefined;
  readonly floatType: FloatType;
  readonly floatCode: number;

  constructor(floatType: FloatType, usedNames: Iterable<string>) {
    this.floatType = floatType;
    this.floatCode = ONNX_DTYPE_CODES[floatType];
    this.used = new Set(usedNames);
  }

  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}__${this.counter++}`; while (this.used.has(name));
    this.used.add(name);
    return name;
  }

  isUsed(name: string): boolean {
    return this.used.has(name);
  }

  reserve(name: string): void {
    this.used.add(name);
  }

  shape(name: string): Shape {
    return this.values.get(name)?.shape ?? null;
  }

  setShape(name: string, shape: Shape, elemType?: number): void {
    this.values.set(name, elemType === undefined ? { shape } : { shape, elemType });
  }

  /** Appends a node; returns its output names (fresh unless given). */
  emit(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs: number | string[] = 1, floatAttrs: Record<string, number> = {}): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase())) : outputs;
    const attribute: OnnxAttribute[] = [
      ...Object.entries(attrs).map(([k, v]) => makeAttribute(k, v)),
      ...Object.entries(floatAttrs).map(([k, v]) => floatAttribute(k, v)),
    ];
    const node: OnnxNode = { opType, input: inputs, output: outs };
    if (attribute.length) node.attribute = attribute;
    this.nodes.push(node);
    this.onEmit?.(node);
    return outs;
  }

  /** One-output shorthand. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, floatAttrs: Record<string, number> = {}): string {
    return this.emit(opType, inputs, attrs, 1, floatAttrs)[0]!;
  }

  /** A constant initializer, shared between uses. */
  constTensor(t: Tensor, hint = 'const'): string {
    const key = `${t.dtype}|${t.dims.join(',')}|${Array.from(t.data as ArrayLike<unknown>, String).join(',')}`;
    const hit = key.length < 400 ? this.constCache.get(key) : undefined;
    if (hit) return hit;
    const name = this.fresh(hint);
    this.initializers.push(tensorToProto(name, t));
    this.consts.set(name, t);
    this.setShape(name, [...t.dims], ONNX_DTYPE_CODES[t.dtype]);
    if (key.length < 400) this.constCache.set(key, name);
    return name;
  }

  /** A float scalar (or 1-D when dims given) constant of the plan's float type. */
  scalar(v: number, dims: number[] = []): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = this.floatType === 'float32' ? new Float32Array(n).fill(v) : new Float64Array(n).fill(v);
    return this.constTensor({ dtype: this.floatType, dims, data } as Tensor, 'c');
  }

  int64s(values: readonly number[], dims: number[] = [values.length]): string {
    return this.constTensor({ dtype: 'int64', dims, data: BigInt64Array.from(values.map((v) => BigInt(v))) }, 'i');
  }
}

/** `want` itself when the graph does not use it yet (plan inputs and outputs keep readable names), else a fresh variant. */
export function uniqueName(b: GraphBuilder, want: string): string {
  if (!b.isUsed(want)) {
    b.reserve(want);
    return want;
  }
  return b.fresh(want);
}
