// The backward pass: which forward values depend on a trained parameter, and reverse-mode gradients
// emitted node by node from the loss back to the parameters, through the rules in grad.ts.

import { gridError } from '../../core/errors';
import { attrInt } from '../onnx/model';
import type { OnnxNode } from '../onnx/types';
import { gradRule, isDifferentiableSlot, NON_DIFFERENTIABLE_OPS, SUPPORTED_GRADIENT_OPS } from './grad';
import type { GraphBuilder } from './ir';
import { nodeLabel } from './shapes';

/**
 * The values among the first `forwardCount` nodes' outputs that depend on a parameter through
 * differentiable inputs (and the parameters themselves). Fails on a node without a gradient rule here,
 * before the loss needs shapes an unknown operator could not give.
 */
export function valuesNeedingGradients(b: GraphBuilder, forwardCount: number, params: Iterable<string>): Set<string> {
  const requires = new Set(params);
  for (let i = 0; i < forwardCount; i++) {
    const n = b.nodes[i]!;
    if (NON_DIFFERENTIABLE_OPS.has(n.opType ?? '')) continue;
    if (!(n.input ?? []).some((v, slot) => requires.has(v) && isDifferentiableSlot(n, slot))) continue;
    (n.output ?? []).forEach((o, k) => {
      if (n.opType === 'MaxPool' && k === 1) return;
      if (n.opType === 'Cast' && attrInt(n, 'to', b.floatCode) !== b.floatCode) return;
      requires.add(o);
    });
    if (!gradRule(n)) throw unsupported(n);
  }
  return requires;
}

/** Gradient contributions per value; several are summed (one Sum node) when the gradient is first read. */
export class Gradients {
  private readonly b: GraphBuilder;
  private readonly parts = new Map<string, string[]>();

  constructor(b: GraphBuilder) {
    this.b = b;
  }

  add(value: string, grad: string): void {
    const l = this.parts.get(value);
    if (l) l.push(grad);
    else this.parts.set(value, [grad]);
  }

  /** True when any gradient flows to `value`. */
  has(value: string): boolean {
    return this.parts.has(value);
  }

  of(value: string): string | undefined {
    const l = this.parts.get(value);
    if (!l) return undefined;
    if (l.length > 1) this.parts.set(value, [this.b.op('Sum', l)]);
    return this.parts.get(value)![0];
  }
}

/** Emits the gradients of the forward nodes' inputs, last node first, seeded with d loss / d logits. */
export function emitBackward(b: GraphBuilder, forwardCount: number, requires: ReadonlySet<string>, logits: string, dLogits: string): Gradients {
  const grads = new Gradients(b);
  if (requires.has(logits)) grads.add(logits, dLogits);
  for (let i = forwardCount - 1; i >= 0; i--) {
    const n = b.nodes[i]!;
    const dy = (n.output ?? []).map((o) => grads.of(o));
    if (dy.every((g) => g === undefined)) continue;
    const need = (n.input ?? []).map((v, slot) => v !== '' && requires.has(v) && isDifferentiableSlot(n, slot));
    if (!need.some(Boolean)) continue;
    const rule = gradRule(n);
    if (!rule) throw unsupported(n);
    const dx = rule(b, n, dy, need);
    (n.input ?? []).forEach((v, slot) => { if (need[slot] && dx[slot]) grads.add(v, dx[slot]!); });
  }
  return grads;
}

function unsupported(n: OnnxNode): Error {
  const known = [...SUPPORTED_GRADIENT_OPS, 'BatchNormalization', 'Dropout'].sort().join(', ');
  return gridError('UNSUPPORTED_OPERATOR', `no gradient rule for operator ${n.opType} (${nodeLabel(n)}); plans differentiate ${known}`, { opType: n.opType, node: n.name ?? '' });
}
