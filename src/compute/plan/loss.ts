// The loss and accuracy a plan reports, and the loss's gradient with respect to the logits, which seeds
// the backward pass. Cross-entropy takes integer class labels [N] against logits [N, C]; mean squared
// error takes float targets shaped like the output.

import { gridError } from '../../core/errors';
import type { LossKind, PlanTensorSpec } from './info';
import { uniqueName, type Dim, type GraphBuilder } from './ir';

export interface LossParts {
  readonly labels: PlanTensorSpec;
  /** Output names of the scalar loss and accuracy. */
  readonly loss: string;
  readonly accuracy: string;
  /** d loss / d logits. */
  readonly dLogits: string;
  readonly logitShape: Dim[];
}

export function emitLoss(b: GraphBuilder, kind: LossKind, logits: string): LossParts {
  const logitShape = b.shape(logits);
  if (!logitShape) throw gridError('UNSUPPORTED_OPERATOR', `the shape of the model output "${logits}" cannot be inferred; plans need it`);
  const floatType = b.floatType;
  const floatCode = b.floatCode;
  const labelsName = uniqueName(b, 'labels');
  const lossName = uniqueName(b, 'loss');
  const accName = uniqueName(b, 'accuracy');
  let dLogits: string;
  let labels: PlanTensorSpec;
  if (kind === 'cross_entropy') {
    if (logitShape.length !== 2) throw gridError('INVALID_MODEL', `cross-entropy needs logits of shape [N, C]; "${logits}" is [${logitShape.join(', ')}]`);
    labels = { name: labelsName, dtype: 'int64', dims: [logitShape[0]!] };
    b.setShape(labelsName, labels.dims, 7);
    const c = logitShape[1];
    const classes = typeof c === 'number' ? b.int64s(Array.from({ length: c }, (_, i) => i)) : b.op('Range', [b.int64s([0], []), b.op('Squeeze', [b.op('Shape', [logits], { start: 1, end: 2 }), b.int64s([0])]), b.int64s([1], [])]);
    const onehot = b.op('Cast', [b.op('Equal', [b.op('Unsqueeze', [labelsName, b.int64s([1])]), classes])], { to: floatCode });
    const logp = b.op('LogSoftmax', [logits], { axis: 1 });
    const count = b.op('Cast', [b.op('Shape', [logits], { start: 0, end: 1 })], { to: floatCode });
    b.emit('Neg', [b.op('ReduceSum', [b.op('Div', [b.op('Mul', [onehot, logp]), count])], { keepdims: 0 })], {}, [lossName]);
    dLogits = b.op('Div', [b.op('Sub', [b.op('Exp', [logp]), onehot]), count]);
    b.emit('ReduceMean', [b.op('Cast', [b.op('Equal', [b.op('ArgMax', [logits], { axis: 1, keepdims: 0 }), labelsName])], { to: floatCode })], { keepdims: 0 }, [accName]);
  } else {
    labels = { name: labelsName, dtype: floatType, dims: [...logitShape] };
    b.setShape(labelsName, labels.dims, floatCode);
    const diff = b.op('Sub', [logits, labelsName]);
    b.emit('ReduceMean', [b.op('Mul', [diff, diff])], { keepdims: 0 }, [lossName]);
    dLogits = b.op('Div', [b.op('Mul', [diff, b.scalar(2)]), b.op('Cast', [b.op('Size', [logits])], { to: floatCode })]);
    const last = logitShape[logitShape.length - 1];
    const correct = logitShape.length >= 2 && typeof last === 'number' && last > 1
      ? b.op('Equal', [b.op('ArgMax', [logits], { axis: -1, keepdims: 0 }), b.op('ArgMax', [labelsName], { axis: -1, keepdims: 0 })])
      : b.op('Less', [b.op('Abs', [diff]), b.scalar(0.5)]);
    b.emit('ReduceMean', [b.op('Cast', [correct], { to: floatCode })], { keepdims: 0 }, [accName]);
  }
  return { labels, loss: lossName, accuracy: accName, dLogits, logitShape };
}
