// Tensors whose size a request's values decide. onnxruntime allocates what a graph asks for and cannot be
// given a limit: ConstantOfShape fed 16 bytes of shape allocates gigabytes. Where such an operator takes
// its size straight from a graph input, the size is known from the feed before the run, and a request
// over the limit is refused without allocating anything. Sizes computed through other operators are
// left to the check after the run (on the model thread, see models.ts in node/).

import { gridError } from '../core/errors';
import type { NamedTensors, Tensor } from '../core/protocol/tensor';
import { formatBytes } from './signature';
import { decodeModel } from './onnx/model';
import { dtypeFromOnnx } from './onnx/tensor-proto';
import type { OnnxNode } from './onnx/types';

interface Rule {
  readonly node: string;
  readonly output: string;
  /** Bytes of the node's output for these feeds, or a lower bound of them; undefined when unknown. */
  bytes(feeds: NamedTensors): number | undefined;
}

/** Checks, for a model, the sizes its feeds decide. */
export interface SizeGuard {
  /** Throws GRID_ERR_PAYLOAD_TOO_LARGE when a tensor the feeds size would exceed `maxBytes`. */
  check(feeds: NamedTensors, maxBytes: number): void;
}

const BYTES: Record<string, number> = {
  float32: 4, float64: 8, float16: 2, int8: 1, int16: 2, int32: 4, int64: 8, uint8: 1, uint16: 2, uint32: 4, uint64: 8, bool: 1, string: 1,
};

/** A small integer tensor's values as numbers (shape, repeats, scalars); undefined when it is not one. */
function ints(t: Tensor | undefined, most = 64): number[] | undefined {
  if (t === undefined || t.dtype === 'string' || t.data.length > most) return undefined;
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

const product = (xs: readonly number[]) => xs.reduce((a, b) => a * Math.max(0, b), 1);

function ruleFor(node: OnnxNode, inputs: ReadonlySet<string>, elementBytes: (name: string) => number): Rule | undefined {
  const [a, b, c] = node.input ?? [];
  const output = node.output?.[0] ?? '';
  const label = `${node.opType}${node.name ? ` "${node.name}"` : ''}`;
  const fed = (name: string | undefined): name is string => name !== undefined && inputs.has(name);
  switch (node.opType) {
    case 'ConstantOfShape': {
      if (!fed(a)) return undefined;
      const value = node.attribute?.find((x) => x.name === 'value')?.t;
      let size = 4;
      try { size = BYTES[dtypeFromOnnx(value?.dataType ?? 1)] ?? 4; } catch { /* a dtype we do not carry: float32's size */ }
      return { node: label, output, bytes: (f) => { const s = ints(f[a]); return s && product(s) * size; } };
    }
    case 'Expand':
      // The output is at least as big as the shape asked for.
      if (!fed(b)) return undefined;
      return { node: label, output, bytes: (f) => { const s = ints(f[b]); return s && product(s) * elementBytes(output); } };
    case 'Tile':
      if (!fed(b)) return undefined;
      return {
        node: label, output, bytes: (f) => {
          const reps = ints(f[b]);
          const x = fed(a) ? f[a] : undefined;
          return reps && product(reps) * (x ? x.data.length * BYTES[x.dtype]! : elementBytes(output));
        },
      };
    case 'Range':
      if (!fed(a) || !fed(b) || !fed(c)) return undefined;
      return {
        node: label, output, bytes: (f) => {
          const [start, limit, delta] = [ints(f[a], 1)?.[0], ints(f[b], 1)?.[0], ints(f[c], 1)?.[0]];
          if (start === undefined || limit === undefined || delta === undefined || delta === 0) return undefined;
          return Math.max(0, Math.ceil((limit - start) / delta)) * BYTES[f[a]!.dtype]!;
        },
      };
    default:
      return undefined;
  }
}

/**
 * Reads the model's graph for operators whose output size comes straight from a graph input. Undefined
 * when there are none (or the bytes do not decode: onnxruntime is the judge of that).
 */
export function sizeGuardOf(modelBytes: Uint8Array): SizeGuard | undefined {
  let graph;
  try {
    graph = decodeModel(modelBytes).graph;
  } catch {
    return undefined;
  }
  if (!graph) return undefined;
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? '').filter((n) => !initializers.has(n)));
  const types = new Map([...(graph.valueInfo ?? []), ...(graph.output ?? [])].map((v) => [v.name ?? '', v.type?.tensorType?.elemType]));
  const outputs = new Set((graph.output ?? []).map((v) => v.name ?? ''));
  const elementBytes = (name: string) => {
    try { return BYTES[dtypeFromOnnx(types.get(name) ?? 0)] ?? 1; } catch { return 1; }
  };
  const rules = (graph.node ?? []).map((n) => ruleFor(n, inputs, elementBytes)).filter((r): r is Rule => r !== undefined);
  if (rules.length === 0) return undefined;
  return {
    check(feeds, maxBytes) {
      for (const r of rules) {
        const bytes = r.bytes(feeds);
        if (bytes === undefined || !(bytes > maxBytes)) continue;
        const what = outputs.has(r.output) ? `output "${r.output}"` : `the tensor "${r.output}" made by ${r.node}`;
        throw gridError('PAYLOAD_TOO_LARGE',
          `${what} would take ${formatBytes(bytes)} for these inputs, over this node's limit of ${formatBytes(maxBytes)} per inference request; ask for less`,
          { output: r.output, bytes, limit: maxBytes });
      }
    },
  };
}
