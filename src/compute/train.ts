// Local training through a plan: batches in, one onnxruntime run per optimisation step, progress out.
// The same code trains in the client process, in an FL worker and on a grid node.

import { gridError } from '../core/errors';
import type { NamedTensors, Tensor } from '../core/protocol/tensor';
import { AdamState } from './adam-wasm';
import { loadModel, type LoadModelOptions, type ModelHandle } from './backend';
import { datasetSize, shuffledIndices, splitDataset, type Dataset } from './data';
import { buildPlan, type PlanInfo, type PlanOptions, type TrainingPlan } from './plan/build';
import { withParams } from './plan/params';
import { prunePlan } from './plan/prune';
import { privatizeUpdate, type PrivacyOptions, type PrivacyReport } from './privacy';

/** Optimiser hyper-parameters; unset ones take the usual defaults. */
export interface Hyper {
  /** Learning rate; 0.1 for sgd/momentum, 0.001 for adam by default. */
  lr?: number;
  momentum?: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  weightDecay?: number;
  /** FedProx μ (plans built with fedProx). */
  proxMu?: number;
}

function scalar(dtype: 'float32' | 'float64', v: number): Tensor {
  return { dtype, dims: [], data: dtype === 'float32' ? new Float32Array([v]) : new Float64Array([v]) } as Tensor;
}

function zeros(dtype: 'float32' | 'float64', dims: readonly (number | string)[]): Tensor {
  const n = dims.reduce<number>((a, d) => a * (d as number), 1);
  return { dtype, dims: dims as number[], data: dtype === 'float32' ? new Float32Array(n) : new Float64Array(n) } as Tensor;
}

export interface RunnerOptions {
  /**
   * Adam's update outside the graph, in one WebAssembly SIMD pass (adam-wasm.ts), when the plan allows it
   * (Adam, float32, built with emitGradients, no weight decay or FedProx): the same float32 operations as the
   * graph's Adam nodes, so the same trained bits, without the graph's twelve elementwise passes per parameter
   * and the copies of the moments out of onnxruntime and back every step. On by default.
   */
  fusedAdam?: boolean;
}

/** Whether a plan's Adam step can run in the fused kernel: everything it needs comes out of the graph. */
function fusedAdamFits(info: PlanInfo): boolean {
  return info.optimizer === 'adam' && info.floatType === 'float32' && info.outputs.stepSize !== undefined
    && info.hyper.length === 5 && info.globals.length === 0 && info.state.length === 2 * info.params.length
    && info.params.every((p) => info.outputs.gradients[p.name] !== undefined && p.dims.every((d) => typeof d === 'number'));
}

/** What a fused-Adam runner fetches: loss, metrics, the step size, the gradients and the buffers' updates. */
function fusedFetches(info: PlanInfo): string[] {
  const { outputs } = info;
  return [outputs.loss, outputs.accuracy, outputs.stepSize!, ...info.params.map((p) => outputs.gradients[p.name]!), ...info.buffers.map((b) => outputs.updated[b.name]!)];
}

/** A plan loaded in onnxruntime with its current parameters and optimiser state. */
export class PlanRunner {
  readonly info: PlanInfo;
  /** Steps taken (Adam's t). */
  steps = 0;
  private readonly handle: ModelHandle;
  /** The graph's update: params, buffers and state as ORT returned them. Fused Adam: buffers only (params and moments live in `adam`). */
  private current: NamedTensors;
  private currentState: NamedTensors;
  private readonly adam: AdamState | null;
  /** Outputs each step fetches. */
  private readonly fetches: string[];
  /** Fused Adam: the inputs the pruned graph still reads. */
  private readonly inputs: Set<string> | undefined;
  /** Fused Adam: copies of the params and moments handed out since the last step. */
  private snapshot: { params: NamedTensors; state: NamedTensors } | undefined;

  private constructor(handle: ModelHandle, info: PlanInfo, params: NamedTensors, fused?: { adam: AdamState; inputs: Set<string> }) {
    this.handle = handle;
    this.info = info;
    this.adam = fused?.adam ?? null;
    this.inputs = fused?.inputs;
    this.current = params;
    this.currentState = {};
    const { outputs } = info;
    if (this.adam) {
      info.params.forEach((p, i) => this.adam!.setValues(i, params[p.name]!.data as Float32Array));
      this.current = Object.fromEntries(info.buffers.map((b) => [b.name, params[b.name]!]));
      this.fetches = fusedFetches(info);
    } else {
      for (const s of info.state) this.currentState[s.name] = zeros(info.floatType, s.dims);
      this.fetches = [outputs.loss, outputs.accuracy, ...Object.values(outputs.updated)];
    }
  }

  /** Current parameters and buffers (replaced, never mutated, by each step). */
  get params(): NamedTensors {
    return this.adam ? this.copies().params : this.current;
  }

  /** Optimiser state (momentum, Adam moments); replaced, never mutated, by each step. */
  get state(): NamedTensors {
    return this.adam ? this.copies().state : this.currentState;
  }

  private copies(): { params: NamedTensors; state: NamedTensors } {
    if (this.snapshot) return this.snapshot;
    const adam = this.adam!;
    const params: NamedTensors = { ...this.current };
    const state: NamedTensors = {};
    this.info.params.forEach((p, i) => {
      const dims = p.dims as number[];
      params[p.name] = { dtype: 'float32', dims, data: adam.values(i).slice() };
      const { m, v } = adam.moments(i);
      state[this.info.state[2 * i]!.name] = { dtype: 'float32', dims, data: m.slice() };
      state[this.info.state[2 * i + 1]!.name] = { dtype: 'float32', dims, data: v.slice() };
    });
    this.snapshot = { params, state };
    return this.snapshot;
  }

  /** Loads a plan; `params` default to the plan's initial parameters. */
  static async create(plan: TrainingPlan, params?: NamedTensors, loadOptions?: LoadModelOptions, runnerOptions: RunnerOptions = {}): Promise<PlanRunner> {
    const start: NamedTensors = { ...plan.initialParams };
    if (params) {
      for (const [name, t] of Object.entries(params)) {
        const spec = [...plan.info.params, ...plan.info.buffers].find((p) => p.name === name);
        if (!spec) continue;
        if (t.dtype !== spec.dtype || t.dims.length !== spec.dims.length || t.dims.some((d, i) => d !== spec.dims[i])) {
          throw gridError('INVALID_INPUT', `parameter "${name}" is ${t.dtype} [${t.dims.join(', ')}], the plan expects ${spec.dtype} [${spec.dims.join(', ')}]`, { param: name });
        }
        start[name] = t;
      }
    }
    // Fused Adam loads the plan without its Adam nodes (onnxruntime would run them even if unfetched).
    const pruned = runnerOptions.fusedAdam !== false && fusedAdamFits(plan.info) ? prunePlan(plan.bytes, fusedFetches(plan.info)) : null;
    const adam = pruned ? AdamState.create(plan.info.params.map((p) => (p.dims as number[]).reduce((a, d) => a * d, 1))) : null;
    const handle = await loadModel(adam ? pruned!.bytes : plan.bytes, loadOptions);
    return new PlanRunner(handle, plan.info, start, adam ? { adam, inputs: pruned!.inputs } : undefined);
  }

  /** Whether Adam's update runs in the fused kernel rather than in the graph. */
  get fused(): boolean {
    return this.adam !== null;
  }

  /** One optimisation step on a batch; returns the batch's loss and accuracy (before the update). */
  async step(batch: Tensor, labels: Tensor, hyper: Hyper = {}, globals?: NamedTensors): Promise<{ loss: number; accuracy: number }> {
    const info = this.info;
    const t = info.floatType;
    this.steps++;
    const values: Record<string, number> = {
      lr: hyper.lr ?? (info.optimizer === 'adam' ? 0.001 : 0.1),
      momentum: hyper.momentum ?? 0.9,
      beta1: hyper.beta1 ?? 0.9,
      beta2: hyper.beta2 ?? 0.999,
      epsilon: hyper.epsilon ?? 1e-8,
      step: this.steps,
      weight_decay: hyper.weightDecay ?? 0,
      prox_mu: hyper.proxMu ?? 0,
    };
    const feeds: NamedTensors = { [info.input.name]: batch, [info.labels.name]: labels, ...this.current, ...this.currentState };
    const adam = this.adam;
    // Fused Adam: ORT reads the values straight out of the kernel's memory.
    if (adam) info.params.forEach((p, i) => { feeds[p.name] = { dtype: 'float32', dims: p.dims as number[], data: adam.values(i) }; });
    for (const h of info.hyper) feeds[h] = scalar(t, values[h] ?? 0);
    for (const g of info.globals) {
      const p = g.slice('global.'.length);
      const v = globals?.[p];
      if (!v) throw gridError('INVALID_INPUT', `the FedProx plan needs the global value of "${p}"`, { param: p });
      feeds[g] = v;
    }
    // The pruned graph reads fewer inputs (not epsilon, nor the moments): feed only those.
    if (this.inputs) for (const name of Object.keys(feeds)) if (!this.inputs.has(name)) delete feeds[name];
    const out = await this.handle.run(feeds, { outputs: this.fetches });
    const params: NamedTensors = {};
    for (const name of Object.keys(this.current)) params[name] = out[info.outputs.updated[name]!] ?? this.current[name]!;
    this.current = params;
    if (adam) {
      const grads = info.params.map((p) => out[info.outputs.gradients[p.name]!]!.data as Float32Array);
      adam.step(grads, { beta1: values.beta1!, beta2: values.beta2!, epsilon: values.epsilon!, stepSize: Number(out[info.outputs.stepSize!]!.data[0]) });
      this.snapshot = undefined;
    } else {
      const state: NamedTensors = {};
      for (const name of Object.keys(this.currentState)) state[name] = out[info.outputs.updated[name]!]!;
      this.currentState = state;
    }
    return { loss: Number(out[info.outputs.loss]!.data[0]), accuracy: Number(out[info.outputs.accuracy]!.data[0]) };
  }

  dispose(): Promise<void> {
    return this.handle.dispose();
  }
}

export interface Metrics { loss: number; accuracy: number }

/** An evaluation graph of a model (inference mode), fed with any parameters. */
export class Evaluator {
  private readonly handle: ModelHandle;
  readonly info: PlanInfo;
  private readonly defaults: NamedTensors;

  private constructor(handle: ModelHandle, plan: TrainingPlan) {
    this.handle = handle;
    this.info = plan.info;
    this.defaults = plan.initialParams;
  }

  static async create(model: Uint8Array, opts: Pick<PlanOptions, 'loss' | 'output' | 'input'>, loadOptions?: LoadModelOptions): Promise<Evaluator> {
    const plan = buildPlan(model, { loss: opts.loss, optimizer: 'sgd', output: opts.output, input: opts.input, evaluateOnly: true });
    return new Evaluator(await loadModel(plan.bytes, loadOptions), plan);
  }

  /** Mean loss and accuracy over a dataset, in batches. */
  async evaluate(raw: Dataset, params: NamedTensors = {}, batchSize = 512): Promise<Metrics> {
    const data = prepareLabels(raw, this.info);
    const n = datasetSize(data);
    if (n === 0) return { loss: Number.NaN, accuracy: Number.NaN };
    const f = data.features.dims[1]!;
    const row = rowShape(this.info, f);
    const lw = data.labels.data.length / n;
    let loss = 0, correct = 0;
    for (let at = 0; at < n; at += batchSize) {
      const m = Math.min(batchSize, n - at);
      const x: Tensor = { dtype: 'float32', dims: [m, ...row], data: data.features.data.subarray(at * f, (at + m) * f) };
      const y = { dtype: data.labels.dtype, dims: [m, ...data.labels.dims.slice(1)], data: (data.labels.data as Float32Array).subarray(at * lw, (at + m) * lw) } as Tensor;
      const feeds: NamedTensors = { [this.info.input.name]: x, [this.info.labels.name]: y };
      for (const p of this.info.params) feeds[p.name] = params[p.name] ?? this.defaults[p.name]!;
      const out = await this.handle.run(feeds, { outputs: [this.info.outputs.loss, this.info.outputs.accuracy] });
      loss += Number(out[this.info.outputs.loss]!.data[0]) * m;
      correct += Number(out[this.info.outputs.accuracy]!.data[0]) * m;
    }
    return { loss: loss / n, accuracy: correct / n };
  }

  dispose(): Promise<void> {
    return this.handle.dispose();
  }
}

export interface TrainOptions {
  /** The forward model (ONNX bytes). */
  model: Uint8Array;
  loss: PlanOptions['loss'];
  optimizer: PlanOptions['optimizer'];
  hyper?: Hyper;
  epochs: number;
  batchSize: number;
  /** Stop after this many optimisation steps in all (an FL cycle's `max_updates`); the last batch taken ends the epoch. */
  maxSteps?: number;
  /** Shuffling (and validation split, dropout) seed. */
  seed?: number;
  /** Fraction of the data held out for per-epoch validation metrics. */
  validationSplit?: number;
  /** Starting parameters (e.g. the global model of an FL round); the model's initializers by default. */
  params?: NamedTensors;
  /** FedProx: proximal term towards these parameters with μ = hyper.proxMu. */
  fedProxGlobal?: NamedTensors;
  /** Differential privacy on the returned update. */
  privacy?: PrivacyOptions;
  /** A batch progress event every this many batches (the epoch event always comes). 10 by default. */
  progressEvery?: number;
  /** Instead of counting batches: a batch progress event when this many ms passed since the last event. */
  progressIntervalMs?: number;
  signal?: AbortSignal;
  loadOptions?: LoadModelOptions;
  /** Extra plan options (trainable, weightDecay, output/input names). */
  plan?: Partial<Omit<PlanOptions, 'loss' | 'optimizer'>>;
}

export interface TrainProgress {
  kind: 'batch' | 'epoch';
  /** 1-based. */
  epoch: number;
  epochs: number;
  /** Batches done in this epoch, and its total. */
  batch: number;
  batches: number;
  /** Mean training loss/accuracy over this epoch so far. */
  loss: number;
  accuracy: number;
  samplesPerSecond: number;
  /** Seconds left at the current speed. */
  etaSeconds: number;
  /** Validation metrics at the end of an epoch, when a validation split is set. */
  validation?: Metrics;
}

export interface TrainResult {
  /** Trained parameters and buffers (after privacy, when set). */
  params: NamedTensors;
  /** The forward model with the trained parameters, servable as is. */
  model: Uint8Array;
  /** Last epoch's training metrics. */
  metrics: Metrics;
  validation?: Metrics;
  history: TrainProgress[];
  samples: number;
  seconds: number;
  privacy?: PrivacyReport;
}

function checkTrainOptions(opts: TrainOptions): void {
  if (!(opts.model instanceof Uint8Array)) throw new TypeError('opts.model must be ONNX model bytes');
  if (!Number.isInteger(opts.epochs) || opts.epochs < 1) throw new RangeError(`opts.epochs must be a positive integer, got ${opts.epochs}`);
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new RangeError(`opts.batchSize must be a positive integer, got ${opts.batchSize}`);
  if (opts.validationSplit !== undefined && !(opts.validationSplit >= 0 && opts.validationSplit < 1)) throw new RangeError(`opts.validationSplit must be in [0, 1), got ${opts.validationSplit}`);
  if (opts.maxSteps !== undefined && (!Number.isInteger(opts.maxSteps) || opts.maxSteps < 1)) throw new RangeError(`opts.maxSteps must be a positive integer, got ${opts.maxSteps}`);
}

/** Trains a model on a dataset, yielding progress; the generator's return value is the result. */
export async function* trainSteps(data: Dataset, opts: TrainOptions): AsyncGenerator<TrainProgress, TrainResult> {
  checkTrainOptions(opts);
  const seed = opts.seed ?? 0;
  // Adam plans hand out their gradients so that PlanRunner can do the update in its fused kernel.
  const fusable = opts.optimizer === 'adam' && !opts.plan?.weightDecay && opts.fedProxGlobal === undefined;
  const plan = buildPlan(opts.model, { emitGradients: fusable, ...opts.plan, loss: opts.loss, optimizer: opts.optimizer, fedProx: opts.fedProxGlobal !== undefined, seed: opts.plan?.seed ?? seed });
  const f = data.features.dims[1]!;
  const row = rowShape(plan.info, f);
  const prepared = prepareLabels(data, plan.info);
  const { train: trainSet, test: valSet } = opts.validationSplit ? splitDataset(prepared, opts.validationSplit, seed) : { train: prepared, test: undefined };
  const n = datasetSize(trainSet);
  if (n === 0) throw gridError('INVALID_DATASET', 'the dataset has no training rows');

  const runner = await PlanRunner.create(plan, opts.params, opts.loadOptions);
  const evaluator = valSet ? await Evaluator.create(opts.model, { loss: opts.loss, output: opts.plan?.output, input: opts.plan?.input }, opts.loadOptions) : undefined;
  const start = { ...runner.params };
  const history: TrainProgress[] = [];
  const batches = Math.ceil(n / opts.batchSize);
  const every = opts.progressEvery ?? 10;
  let lastEventAt = performance.now();
  const lw = trainSet.labels.data.length / n;
  const xBuf = new Float32Array(opts.batchSize * f);
  const yBuf = trainSet.labels.dtype === 'int64' ? new BigInt64Array(opts.batchSize * lw) : new Float32Array(opts.batchSize * lw);
  const t0 = performance.now();
  let seen = 0;
  let last: TrainProgress | undefined;
  const maxSteps = opts.maxSteps ?? Infinity;
  try {
    for (let epoch = 1; epoch <= opts.epochs && runner.steps < maxSteps; epoch++) {
      const order = shuffledIndices(n, seed * 1000003 + epoch);
      let lossSum = 0, accSum = 0, epochSeen = 0;
      for (let bi = 0; bi < batches; bi++) {
        if (opts.signal?.aborted) throw gridError('ABORTED', `training was cancelled in epoch ${epoch}, batch ${bi + 1} of ${batches}`);
        const from = bi * opts.batchSize;
        const m = Math.min(opts.batchSize, n - from);
        for (let i = 0; i < m; i++) {
          const r = order[from + i]!;
          xBuf.set(trainSet.features.data.subarray(r * f, r * f + f), i * f);
          (yBuf as Float32Array).set((trainSet.labels.data as Float32Array).subarray(r * lw, r * lw + lw), i * lw);
        }
        const x: Tensor = { dtype: 'float32', dims: [m, ...row], data: xBuf.subarray(0, m * f) };
        const y = { dtype: trainSet.labels.dtype, dims: [m, ...trainSet.labels.dims.slice(1)], data: yBuf.subarray(0, m * lw) } as Tensor;
        const r = await runner.step(x, y, opts.hyper, opts.fedProxGlobal);
        lossSum += r.loss * m;
        accSum += r.accuracy * m;
        epochSeen += m;
        seen += m;
        const elapsed = (performance.now() - t0) / 1000;
        const rate = seen / Math.max(elapsed, 1e-9);
        const progress: TrainProgress = {
          kind: 'batch', epoch, epochs: opts.epochs, batch: bi + 1, batches,
          loss: lossSum / epochSeen, accuracy: accSum / epochSeen,
          samplesPerSecond: rate, etaSeconds: (opts.epochs * n - seen) / rate,
        };
        const stop = runner.steps >= maxSteps;
        if (bi + 1 === batches || stop) {
          progress.kind = 'epoch';
          if (evaluator && valSet) progress.validation = await evaluator.evaluate(valSet, runner.params);
          history.push(progress);
          last = progress;
          lastEventAt = performance.now();
          yield progress;
          if (stop) break;
        } else if (opts.progressIntervalMs !== undefined ? performance.now() - lastEventAt >= opts.progressIntervalMs : (bi + 1) % every === 0) {
          lastEventAt = performance.now();
          yield progress;
        }
      }
    }
    let params = runner.params;
    let privacy: PrivacyReport | undefined;
    if (opts.privacy) {
      const p = privatizeUpdate(start, params, opts.privacy);
      params = p.params;
      privacy = p.report;
    }
    const result: TrainResult = {
      params,
      model: withParams(opts.model, params),
      metrics: { loss: last!.loss, accuracy: last!.accuracy },
      history,
      samples: seen,
      seconds: (performance.now() - t0) / 1000,
    };
    if (last?.validation) result.validation = last.validation;
    if (privacy) result.privacy = privacy;
    return result;
  } finally {
    await runner.dispose();
    await evaluator?.dispose();
  }
}

/**
 * The shape of one row as the model takes it: the dataset's F features, or an image-like shape such as
 * [1, 8, 8] when the model's input has one with F elements (rows are reshaped, not copied).
 */
export function rowShape(info: PlanInfo, features: number): number[] {
  const dims = info.input.dims.slice(1);
  if (dims.length === 0) throw gridError('INVALID_INPUT', `the model's input "${info.input.name}" has no per-row dimensions`);
  if (dims.some((d) => typeof d !== 'number')) {
    if (dims.length === 1) return [features];
    throw gridError('INVALID_INPUT', `the model's input "${info.input.name}" has per-row shape [${dims.join(', ')}]; only the batch dimension may be symbolic`);
  }
  const size = (dims as number[]).reduce((a, b) => a * b, 1);
  if (size !== features) {
    throw gridError('INVALID_INPUT', dims.length === 1 ? `the model takes ${size} features per row, the dataset has ${features}` : `the model takes rows of shape [${dims.join(', ')}] (${size} values), the dataset has ${features} features per row`);
  }
  return dims as number[];
}

/**
 * The dataset's labels in the form the plan takes: class indices checked against the model's classes
 * for cross-entropy; for MSE, float targets shaped like the output (class labels become one-hot).
 */
export function prepareLabels(data: Dataset, info: PlanInfo): Dataset {
  const n = datasetSize(data);
  const labels = data.labels;
  if (info.loss === 'cross_entropy') {
    if (labels.dtype !== 'int64' || labels.dims.length !== 1) throw gridError('INVALID_INPUT', `cross-entropy needs integer class labels [N]; the dataset's labels are ${labels.dtype} [${labels.dims.join(', ')}]`);
    const c = info.output.dims[1];
    if (typeof c === 'number') {
      const l = labels.data as BigInt64Array;
      for (let i = 0; i < n; i++) {
        if (l[i]! < 0n || l[i]! >= BigInt(c)) throw gridError('INVALID_INPUT', `label ${l[i]} of row ${i} is outside the model's ${c} classes`, { row: i });
      }
    }
    return data;
  }
  const rest = info.labels.dims.slice(1);
  if (rest.some((d) => typeof d !== 'number')) return data;
  const width = (rest as number[]).reduce((a, b) => a * b, 1);
  if (labels.dims.length === 1 && width > 1) {
    // One label per row against several outputs: class indices, trained as one-hot targets.
    const onehot = new Float32Array(n * width);
    const l = labels.data as ArrayLike<number | bigint>;
    for (let i = 0; i < n; i++) {
      const k = Number(l[i]);
      if (!Number.isInteger(k)) throw gridError('INVALID_INPUT', `the model outputs ${width} values per row; label ${k} of row ${i} is not a class index`, { row: i });
      if (!(k >= 0 && k < width)) throw gridError('INVALID_INPUT', `label ${k} of row ${i} is outside the model's ${width} outputs`, { row: i });
      onehot[i * width + k] = 1;
    }
    return { features: data.features, labels: { dtype: 'float32', dims: [n, ...(rest as number[])], data: onehot } };
  }
  if (labels.data.length !== n * width) throw gridError('INVALID_INPUT', `the model outputs ${width} values per row, the dataset has ${labels.data.length / n} labels per row`);
  const values = labels.dtype === 'float32' ? labels.data : Float32Array.from(labels.data as BigInt64Array, Number);
  return { features: data.features, labels: { dtype: 'float32', dims: [n, ...(rest as number[])], data: values as Float32Array } };
}

/** Trains to the end, calling `onProgress` for each progress event. */
export async function train(data: Dataset, opts: TrainOptions & { onProgress?: (p: TrainProgress) => void }): Promise<TrainResult> {
  const it = trainSteps(data, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
    opts.onProgress?.(r.value);
  }
}

/** Loss and accuracy of a model (with optional replacement parameters) on a dataset. */
export async function evaluateModel(model: Uint8Array, data: Dataset, opts: { loss: PlanOptions['loss']; params?: NamedTensors; loadOptions?: LoadModelOptions }): Promise<Metrics> {
  const e = await Evaluator.create(model, { loss: opts.loss }, opts.loadOptions);
  try {
    return await e.evaluate(data, opts.params);
  } finally {
    await e.dispose();
  }
}
