// A plan cut down to some of its outputs: onnxruntime runs every node of a graph whatever the caller
// fetches, so a runner that needs only some outputs (train.ts's fused Adam: loss, metrics, gradients)
// loads a graph without the nodes those outputs do not depend on, and without the inputs no node reads.

import { decodeModel, encodeModel } from '../onnx/model';

/** The plan's graph reduced to `outputs`; null when it has subgraphs (whose outer references this does not follow). */
export function prunePlan(bytes: Uint8Array, outputs: readonly string[]): { bytes: Uint8Array; inputs: Set<string> } | null {
  const model = decodeModel(bytes);
  const graph = model.graph ?? {};
  const nodes = graph.node ?? [];
  if (nodes.some((n) => (n.attribute ?? []).some((a) => a.g !== undefined || (a.graphs?.length ?? 0) > 0))) return null;
  const needed = new Set(outputs);
  const kept = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!(n.output ?? []).some((o) => needed.has(o))) continue;
    kept.push(n);
    for (const input of n.input ?? []) if (input !== '') needed.add(input);
  }
  kept.reverse();
  const input = (graph.input ?? []).filter((v) => needed.has(v.name ?? ''));
  const pruned = {
    ...model,
    graph: {
      ...graph,
      node: kept,
      input,
      output: outputs.map((o) => (graph.output ?? []).find((v) => v.name === o)!),
      initializer: (graph.initializer ?? []).filter((t) => needed.has(t.name ?? '')),
      valueInfo: (graph.valueInfo ?? []).filter((v) => needed.has(v.name ?? '')),
    },
  };
  return { bytes: encodeModel(pruned), inputs: new Set(input.map((v) => v.name!)) };
}
