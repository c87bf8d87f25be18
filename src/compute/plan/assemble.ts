// The plan as an ONNX model: the emitted nodes, the initializers that stay constant, inputs and outputs in
// the order PlanInfo lists them, and the PlanInfo itself in the model's metadata.

import type { Tensor } from '../../core/protocol/tensor';
import { encodeModel, makeValueInfo } from '../onnx/model';
import { ONNX_DTYPE_CODES } from '../onnx/tensor-proto';
import type { OnnxGraph, OnnxModel, OnnxTensorProto, OnnxValueInfo } from '../onnx/types';
import type { ModelEnds } from './forward';
import { PLAN_METADATA_KEY, PLAN_OPSET, type PlanInfo, type PlanOptions, type PlanTensorSpec, type TrainingPlan } from './info';
import { uniqueName, type Dim, type GraphBuilder } from './ir';
import type { LossParts } from './loss';
import type { OptimizerStep } from './optimizer';

export interface TrainingParts {
  readonly ends: ModelEnds;
  readonly inputDims: Dim[];
  readonly logits: string;
  readonly loss: LossParts;
  readonly step: OptimizerStep;
  /** BatchNormalization running statistic → the value holding its update. */
  readonly bufferUpdates: Record<string, string>;
  readonly values: ReadonlyMap<string, Tensor>;
}

export function assemblePlan(b: GraphBuilder, graph: OnnxGraph, opts: PlanOptions, p: TrainingParts): TrainingPlan {
  const { floatType, inits, inputInfo } = p.ends;
  const floatCode = ONNX_DTYPE_CODES[floatType];
  const { step, loss } = p;
  const updated: Record<string, string> = { ...step.updated };
  const bufferSpecs: PlanTensorSpec[] = [];
  for (const [buf, out] of Object.entries(p.bufferUpdates)) {
    bufferSpecs.push({ name: buf, dtype: floatType, dims: [...p.values.get(buf)!.dims] });
    updated[buf] = out;
  }
  const inputSpec: PlanTensorSpec = { name: inputInfo.name!, dtype: floatType, dims: p.inputDims };
  const specInfo = (s: PlanTensorSpec) => makeValueInfo(s.name, ONNX_DTYPE_CODES[s.dtype], s.dims);
  const scalarInfo = (name: string) => makeValueInfo(name, floatCode, []);
  const planInputs: OnnxValueInfo[] = [
    specInfo(inputSpec), specInfo(loss.labels), ...step.hyper.map(scalarInfo),
    ...step.params.map(specInfo), ...bufferSpecs.map(specInfo), ...step.state.map(specInfo),
    ...step.globals.map((gname, i) => specInfo({ ...step.params[i]!, name: gname })),
  ];
  const shapeOf = (name: string): Dim[] => (b.shape(name) ?? []) as Dim[];
  const planOutputs: OnnxValueInfo[] = [
    scalarInfo(loss.loss), scalarInfo(loss.accuracy),
    ...Object.entries(updated).map(([, out]) => makeValueInfo(out, floatCode, shapeOf(out))),
    ...Object.values(step.gradients).map((gname) => makeValueInfo(gname, floatCode, shapeOf(gname))),
    ...(step.stepSize !== undefined ? [scalarInfo(step.stepSize)] : []),
  ];
  const inputNames = new Set(planInputs.map((i) => i.name));
  const initializers: OnnxTensorProto[] = [...b.initializers];
  for (const name of b.consts.keys()) {
    if (inits.has(name) && !inputNames.has(name)) initializers.push(inits.get(name)!);
  }
  const info: PlanInfo = {
    format: 'grid-plan/1',
    loss: opts.loss,
    optimizer: opts.optimizer,
    floatType,
    input: inputSpec,
    output: { name: p.logits, dtype: floatType, dims: [...loss.logitShape] },
    labels: loss.labels,
    // Hyper-parameter inputs are named as HYPER lists them unless the model already used the name.
    hyper: step.hyper,
    params: step.params,
    buffers: bufferSpecs,
    state: step.state,
    globals: step.globals,
    outputs: { loss: loss.loss, accuracy: loss.accuracy, updated, gradients: step.gradients, ...(step.stepSize !== undefined && { stepSize: step.stepSize }) },
  };
  const planModel: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: PLAN_OPSET }],
    producerName: 'grid-workbench plan',
    graph: { name: `${graph.name ?? 'model'}_plan`, node: b.nodes, initializer: initializers, input: planInputs, output: planOutputs },
    metadataProps: [{ key: PLAN_METADATA_KEY, value: JSON.stringify(info) }],
  };
  const initialParams: Record<string, Tensor> = {};
  for (const s of [...step.params, ...bufferSpecs]) initialParams[s.name] = p.values.get(s.name)!;
  return { bytes: encodeModel(planModel), info, initialParams };
}

export interface EvaluationParts {
  readonly ends: ModelEnds;
  readonly inputDims: Dim[];
  readonly logits: string;
  readonly loss: LossParts;
  readonly values: ReadonlyMap<string, Tensor>;
}

/** The evaluation graph: every float initializer the model uses becomes an input, so current values can be fed. */
export function assembleEvaluation(b: GraphBuilder, graph: OnnxGraph, opts: PlanOptions, p: EvaluationParts): TrainingPlan {
  const { floatType, inits, inputInfo } = p.ends;
  const { loss } = p;
  const floatCode = ONNX_DTYPE_CODES[floatType];
  const fed: PlanTensorSpec[] = [];
  const initializers: OnnxTensorProto[] = [...b.initializers];
  for (const [name, tp] of inits) {
    if (!p.values.has(name)) continue;
    if (tp.dataType === floatCode) fed.push({ name, dtype: floatType, dims: [...p.values.get(name)!.dims] });
    else initializers.push(tp);
  }
  const inputSpec: PlanTensorSpec = { name: inputInfo.name!, dtype: floatType, dims: p.inputDims };
  const specInfo = (s: PlanTensorSpec) => makeValueInfo(s.name, ONNX_DTYPE_CODES[s.dtype], s.dims);
  const predictions = uniqueName(b, 'predictions');
  b.emit('Identity', [p.logits], {}, [predictions]);
  const info: PlanInfo = {
    format: 'grid-plan/1', loss: opts.loss, optimizer: opts.optimizer, floatType, input: inputSpec,
    output: { name: p.logits, dtype: floatType, dims: [...loss.logitShape] }, labels: loss.labels,
    hyper: [], params: fed, buffers: [], state: [], globals: [],
    outputs: { loss: loss.loss, accuracy: loss.accuracy, updated: {}, gradients: {} },
  };
  const planModel: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: PLAN_OPSET }],
    producerName: 'grid-workbench evaluation',
    graph: {
      name: `${graph.name ?? 'model'}_evaluation`, node: b.nodes, initializer: initializers,
      input: [specInfo(inputSpec), specInfo(loss.labels), ...fed.map(specInfo)],
      output: [makeValueInfo(loss.loss, floatCode, []), makeValueInfo(loss.accuracy, floatCode, []), makeValueInfo(predictions, floatCode, b.shape(p.logits) ?? undefined)],
    },
    metadataProps: [{ key: PLAN_METADATA_KEY, value: JSON.stringify(info) }],
  };
  const initialParams: Record<string, Tensor> = {};
  for (const s of fed) initialParams[s.name] = p.values.get(s.name)!;
  return { bytes: encodeModel(planModel), info, initialParams };
}
