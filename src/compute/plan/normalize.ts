// Older and newer opsets' forms of the operators a plan rewrites, brought to the opset-17 forms the plan
// is written in (axes and splits as inputs, Softmax over the last axis, reduction axes as attributes).

import { gridError } from '../../core/errors';
import { attrInt, attrInts, makeAttribute } from '../onnx/model';
import type { OnnxNode } from '../onnx/types';
import type { GraphBuilder } from './ir';
import { nodeLabel } from './shapes';

/** Brings nodes of older/newer opsets to the opset-17 forms the plan is written in. */
export function normalizeNode(node: OnnxNode, opset: number, b: GraphBuilder): OnnxNode {
  const n: OnnxNode = { ...node, input: [...(node.input ?? [])], output: [...(node.output ?? [])], attribute: [...(node.attribute ?? [])] };
  const dropAttr = (name: string) => { n.attribute = n.attribute!.filter((a) => a.name !== name); };
  const op = n.opType ?? '';
  if (opset < 13 && (op === 'Squeeze' || op === 'Unsqueeze' || op === 'ReduceSum')) {
    const axes = attrInts(n, 'axes');
    dropAttr('axes');
    if (axes) n.input!.push(b.int64s(axes));
  }
  if (opset < 13 && op === 'Split') {
    const split = attrInts(n, 'split');
    dropAttr('split');
    if (split) n.input!.push(b.int64s(split));
  }
  if (opset < 10 && op === 'Slice') {
    const starts = attrInts(n, 'starts') ?? [], ends = attrInts(n, 'ends') ?? [], axes = attrInts(n, 'axes');
    for (const a of ['starts', 'ends', 'axes']) dropAttr(a);
    n.input!.push(b.int64s(starts), b.int64s(ends));
    if (axes) n.input!.push(b.int64s(axes));
  }
  if (opset < 13 && (op === 'Softmax' || op === 'LogSoftmax')) {
    const x = b.shape(n.input![0]!);
    const axis = attrInt(n, 'axis', 1);
    const r = x?.length ?? 2;
    if ((axis < 0 ? axis + r : axis) !== r - 1) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: opset-${opset} ${op} over axis ${axis} of a rank-${r} input is not supported`);
    dropAttr('axis');
    n.attribute!.push(makeAttribute('axis', -1));
  }
  if (opset >= 18 && (op === 'ReduceMean' || op === 'ReduceMax') && n.input!.length > 1) {
    const t = b.consts.get(n.input![1]!);
    if (!t) throw gridError('UNSUPPORTED_OPERATOR', `${nodeLabel(n)}: reduction axes must be constant`);
    n.input = [n.input![0]!];
    n.attribute!.push(makeAttribute('axes', Array.from(t.data as BigInt64Array, Number)));
  }
  if (n.attribute!.length === 0) delete n.attribute;
  return n;
}
