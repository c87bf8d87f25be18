// The optimiser step: each parameter's gradient (plus weight decay and FedProx's proximal term when asked)
// turned into its updated value by SGD, momentum or Adam, with the optimiser's state as plan inputs and
// outputs.
// SGD is folded into the backward pass: the pass is seeded with −lr·dLoss/dLogits, one small [N, C]
// product, and since gradients are linear in that seed every parameter's gradient arrives already
// scaled, so its update is one addition, which a weight gradient's Gemm does itself (p as its C input)
// instead of a Mul and a Sub over every parameter (weight decay and FedProx's term are added after).

import type { Tensor } from '../../core/protocol/tensor';
import type { Gradients } from './backward';
import { HYPER, type PlanOptions, type PlanTensorSpec } from './info';
import { sameDim, uniqueName, type Dim, type GraphBuilder } from './ir';

export interface OptimizerStep {
  /** Hyper-parameter input names, in input order (as HYPER lists them, renamed if the model used the name). */
  readonly hyper: string[];
  readonly params: PlanTensorSpec[];
  readonly state: PlanTensorSpec[];
  /** `global.<param>` inputs (FedProx), in the order of params. */
  readonly globals: string[];
  /** input name → output name of its updated value, for params and state. */
  readonly updated: Record<string, string>;
  /** param → gradient output, when emitGradients is on. */
  readonly gradients: Record<string, string>;
  /** Adam's bias-corrected step size (a float scalar output), when emitGradients is on. */
  readonly stepSize?: string;
}

/** Whether the plan folds SGD's update into its backward pass (plain SGD, no gradients handed out). */
export function foldsSgd(opts: PlanOptions): boolean {
  return opts.optimizer === 'sgd' && opts.fuseSgd === true && !opts.emitGradients;
}

/** The plan's hyper-parameter inputs (declared before the backward pass, which a folded SGD step reads lr in). */
export function hyperInputs(b: GraphBuilder, opts: PlanOptions): Record<string, string> {
  const hyper = [...HYPER[opts.optimizer]];
  if (opts.weightDecay) hyper.push('weight_decay');
  if (opts.fedProx) hyper.push('prox_mu');
  const hyperName: Record<string, string> = {};
  for (const h of hyper) { hyperName[h] = uniqueName(b, h); b.setShape(hyperName[h], [], b.floatCode); }
  return hyperName;
}

/** The seed of a folded SGD step's backward pass: −lr·dLoss/dLogits. */
export function sgdSeed(b: GraphBuilder, dLogits: string, hyperName: Record<string, string>): string {
  return b.op('Mul', [dLogits, b.op('Neg', [hyperName.lr!])]);
}

/**
 * p + g (g already −lr·gradient) as `out`: through the Gemm that computes g when nothing else reads g
 * (p becomes its C input, added with beta 1 as the product is written), else an Add. `shared`: another
 * parameter's update reads the same g (e.g. w = w0 + w1 gives w0 and w1 one gradient), so it must stay.
 */
function addScaledGradient(b: GraphBuilder, p: string, g: string, dims: readonly Dim[], out: string, shared: boolean): void {
  const producer = b.nodes.find((n) => n.output?.[0] === g);
  const readers = shared ? 1 : b.nodes.filter((n) => (n.input ?? []).includes(g)).length;
  const shape = b.shape(g);
  const beta = producer?.attribute?.find((a) => a.name === 'beta');
  if (producer?.opType === 'Gemm' && producer.input?.length === 2 && readers === 0 && beta === undefined
    && shape !== null && shape.length === dims.length && shape.every((d, i) => sameDim(d, dims[i]!))) {
    producer.input.push(p);
    producer.output![0] = out;
  } else {
    b.emit('Add', [p, g], {}, [out]);
  }
  b.setShape(out, [...dims], b.floatCode);
}

export function emitOptimizer(b: GraphBuilder, params: readonly string[], values: ReadonlyMap<string, Tensor>, grads: Gradients, opts: PlanOptions, hyperName: Record<string, string>): OptimizerStep {
  const floatType = b.floatType;
  const floatCode = b.floatCode;
  const hyper = Object.keys(hyperName);
  const folded = foldsSgd(opts);
  const updated: Record<string, string> = {};
  const gradients: Record<string, string> = {};
  const state: PlanTensorSpec[] = [];
  const globals: string[] = [];
  const paramSpecs: PlanTensorSpec[] = [];
  let lrT: string | undefined;
  let stepSize: string | undefined;
  const proxGlobal = (p: string, dims: Dim[]): string => {
    const gp = uniqueName(b, `global.${p}`);
    globals.push(gp);
    b.setShape(gp, dims, floatCode);
    return gp;
  };
  const negLr: Record<string, string> = {};
  /** −lr·h, a scalar, computed once. */
  const negLrTimes = (h: string): string => (negLr[h] ??= b.op('Mul', [b.op('Neg', [hyperName.lr!]), hyperName[h]!]));
  if (opts.optimizer === 'adam') {
    // Adam's bias correction folded into the step size: lr·√(1 − β2^t) / (1 − β1^t).
    const { beta1, beta2, step, lr } = hyperName as Record<string, string>;
    const one = b.scalar(1);
    lrT = b.op('Div', [b.op('Mul', [lr!, b.op('Sqrt', [b.op('Sub', [one, b.op('Pow', [beta2!, step!])])])]), b.op('Sub', [one, b.op('Pow', [beta1!, step!])])]);
    if (opts.emitGradients) {
      // With the gradients, what a runner needs to do the same update outside the graph (train.ts's fused Adam).
      stepSize = uniqueName(b, 'adam.step_size');
      b.emit('Identity', [lrT], {}, [stepSize]);
      b.setShape(stepSize, [], floatCode);
    }
  }
  // Gradients that more than one parameter's update reads: never folded into their Gemm.
  const gradUses = new Map<string, number>();
  for (const p of params) { const g = grads.of(p)!; gradUses.set(g, (gradUses.get(g) ?? 0) + 1); }
  for (const p of params) {
    const dims = [...values.get(p)!.dims];
    paramSpecs.push({ name: p, dtype: floatType, dims });
    let g = grads.of(p)!;
    if (opts.emitGradients) {
      gradients[p] = uniqueName(b, `grad.${p}`);
      b.emit('Identity', [g], {}, [gradients[p]!]);
    }
    const out = uniqueName(b, `new.${p}`);
    updated[p] = out;
    if (folded) {
      // Weight decay and the proximal term come after the (scaled) data gradient's update: with μ = 0 or
      // a decay of 0 they add zeros, so the step is plain SGD's bit for bit.
      const terms: string[] = [];
      if (opts.weightDecay) terms.push(b.op('Mul', [negLrTimes('weight_decay'), p]));
      if (opts.fedProx) terms.push(b.op('Mul', [negLrTimes('prox_mu'), b.op('Sub', [p, proxGlobal(p, dims)])]));
      let at = terms.length > 0 ? b.fresh('sgd') : out;
      addScaledGradient(b, p, g, dims, at, gradUses.get(g)! > 1);
      terms.forEach((t, i) => { const next = i + 1 === terms.length ? out : b.fresh('sgd'); b.emit('Add', [at, t], {}, [next]); at = next; });
      continue;
    }
    if (opts.weightDecay) g = b.op('Add', [g, b.op('Mul', [hyperName.weight_decay!, p])]);
    if (opts.fedProx) g = b.op('Add', [g, b.op('Mul', [hyperName.prox_mu!, b.op('Sub', [p, proxGlobal(p, dims)])])]);
    if (opts.optimizer === 'sgd') {
      b.emit('Sub', [p, b.op('Mul', [hyperName.lr!, g])], {}, [out]);
    } else if (opts.optimizer === 'momentum') {
      const v = uniqueName(b, `momentum.${p}`);
      const vOut = uniqueName(b, `new.momentum.${p}`);
      state.push({ name: v, dtype: floatType, dims });
      updated[v] = vOut;
      b.emit('Add', [b.op('Mul', [hyperName.momentum!, v]), g], {}, [vOut]);
      b.emit('Sub', [p, b.op('Mul', [hyperName.lr!, vOut])], {}, [out]);
    } else {
      const mName = uniqueName(b, `adam.m.${p}`), vName = uniqueName(b, `adam.v.${p}`);
      const mOut = uniqueName(b, `new.adam.m.${p}`), vOut = uniqueName(b, `new.adam.v.${p}`);
      state.push({ name: mName, dtype: floatType, dims }, { name: vName, dtype: floatType, dims });
      updated[mName] = mOut;
      updated[vName] = vOut;
      const one = b.scalar(1);
      const { beta1, beta2, epsilon } = hyperName as Record<string, string>;
      b.emit('Add', [b.op('Mul', [beta1!, mName]), b.op('Mul', [b.op('Sub', [one, beta1!]), g])], {}, [mOut]);
      b.emit('Add', [b.op('Mul', [beta2!, vName]), b.op('Mul', [b.op('Sub', [one, beta2!]), b.op('Mul', [g, g])])], {}, [vOut]);
      b.emit('Sub', [p, b.op('Mul', [lrT!, b.op('Div', [mOut, b.op('Add', [b.op('Sqrt', [vOut]), epsilon!])])])], {}, [out]);
    }
  }
  return { hyper: hyper.map((h) => hyperName[h]!), params: paramSpecs, state, globals, updated, gradients, ...(stepSize !== undefined && { stepSize }) };
}
