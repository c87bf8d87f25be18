// A host's ONNX averaging plan (host-training's `averaging_plan`): the graph the node runs with
// onnxruntime when a cycle closes, in place of FedAvg's old − mean(diff). The contract (docs/federated-learning.md):
//
//   inputs   "old/<param>"    float32, the parameter's shape: the checkpoint the cycle started from
//            "diff/<param>"   float32, the parameter's shape: the cycle's weighted mean diff (old − new)
//            "num_reports"    float32 [] or [1] (optional): reports averaged
//            "total_weight"   float32 [] or [1] (optional): the sum of their weights (samples)
//   outputs  "<param>"        float32, the parameter's shape: the new checkpoint's value
//
// <param> is the model's parameter name: an ONNX model's float32 initializer, a State's "#0", "#1", …
// Every output is a parameter (each parameter has one); every input is one of the names above. Checked
// when hosting (names, dtypes, declared dims, then one run on the model's own parameters and a zero diff);
// a plan that does not fit is refused with GRID_ERR_INVALID_AVERAGING_PLAN naming what does not match.
// The running sum keeps node memory at one model whatever the number of reports, so the plan sees the
// mean, not each diff: PyGrid's iterative_plan (one call per diff) does not apply to it.

import { gridError, GridError } from '../../core/errors';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import type { ValueSignature } from '../../core/protocol/messages';
import { loadModel, type ModelHandle } from '../../compute/backend';
import { signatureFromGraph } from '../../compute/signature';
import type { RunningSum } from './averaging';
import type { ParamSpec } from './params';
import type { StateTensor } from './state';

const OLD = 'old/';
const DIFF = 'diff/';
const SCALARS = ['num_reports', 'total_weight'] as const;

const refuse = (message: string) => gridError('INVALID_AVERAGING_PLAN', `averaging_plan: ${message}`);

const dimsText = (dims: readonly (number | string | null)[]) => `[${dims.map((d) => (d === null || d === '' ? '?' : String(d))).join(', ')}]`;

/** Declared dims that can hold `dims` (a symbolic or unknown dim holds any size; an empty shape may be unknown rank). */
function fits(declared: readonly (number | string | null)[], dims: readonly number[]): boolean {
  if (declared.length === 0) return true;
  return declared.length === dims.length && declared.every((d, i) => typeof d !== 'number' || d === dims[i]);
}

function names(specs: readonly ParamSpec[]): string {
  const shown = specs.slice(0, 8).map((s) => `"${s.name}"`).join(', ');
  return specs.length > 8 ? `${shown} … (${specs.length} in all)` : shown;
}

/** Checks the plan's declared inputs and outputs against the parameters; throws naming the first mismatch. */
function checkSignature(sig: { inputs: readonly ValueSignature[]; outputs: readonly ValueSignature[] }, specs: readonly ParamSpec[]): void {
  const byName = new Map(specs.map((s) => [s.name, s]));
  for (const input of sig.inputs) {
    const scalar = (SCALARS as readonly string[]).includes(input.name);
    const param = input.name.startsWith(OLD) ? input.name.slice(OLD.length) : input.name.startsWith(DIFF) ? input.name.slice(DIFF.length) : undefined;
    const spec = param === undefined ? undefined : byName.get(param);
    if (!scalar && spec === undefined) {
      throw refuse(`input "${input.name}" is none the node feeds; inputs are "old/<param>" and "diff/<param>" for the model's parameters (${names(specs)}), and optionally "num_reports" and "total_weight"`);
    }
    if (input.dtype !== 'float32') throw refuse(`input "${input.name}" is ${input.dtype}; the node feeds float32`);
    const dims = scalar ? (input.dims.length === 0 ? [] : [1]) : spec!.dims;
    if (!fits(input.dims, dims)) throw refuse(`input "${input.name}" has shape ${dimsText(input.dims)}, but the node feeds ${dimsText(scalar ? [1] : dims)}`);
  }
  for (const out of sig.outputs) {
    const spec = byName.get(out.name);
    if (spec === undefined) throw refuse(`output "${out.name}" is not a parameter of the model; the outputs must be named as its parameters: ${names(specs)}`);
    if (out.dtype !== 'float32') throw refuse(`output "${out.name}" is ${out.dtype}; parameters are float32`);
    if (!fits(out.dims, spec.dims)) throw refuse(`output "${out.name}" has shape ${dimsText(out.dims)}, but parameter "${out.name}" is ${dimsText(spec.dims)}`);
  }
  const outputs = new Set(sig.outputs.map((o) => o.name));
  const missing = specs.filter((s) => !outputs.has(s.name));
  if (missing.length > 0) throw refuse(`no output for parameter${missing.length > 1 ? 's' : ''} ${names(missing)}: each parameter needs an output of its name holding its new value`);
}

function feedsOf(plan: ModelHandle, specs: readonly ParamSpec[], old: readonly StateTensor[], mean: readonly StateTensor[], counts: { reports: number; weight: number }): NamedTensors {
  const feeds: NamedTensors = {};
  const index = new Map(specs.map((s, i) => [s.name, i]));
  for (const input of plan.signature.inputs) {
    if (input.name === 'num_reports' || input.name === 'total_weight') {
      const v = input.name === 'num_reports' ? counts.reports : counts.weight;
      feeds[input.name] = { dtype: 'float32', dims: input.dims.length === 0 ? [] : [1], data: Float32Array.of(v) };
      continue;
    }
    const isOld = input.name.startsWith(OLD);
    const i = index.get(input.name.slice(isOld ? OLD.length : DIFF.length))!;
    const t = (isOld ? old : mean)[i]!;
    feeds[input.name] = { dtype: 'float32', dims: [...t.dims], data: t.data };
  }
  return feeds;
}

async function runPlan(plan: ModelHandle, specs: readonly ParamSpec[], old: readonly StateTensor[], mean: readonly StateTensor[], counts: { reports: number; weight: number }): Promise<StateTensor[]> {
  const out = await plan.run(feedsOf(plan, specs, old, mean, counts));
  return specs.map((s) => {
    const t: Tensor | undefined = out[s.name];
    if (t === undefined || t.dtype !== 'float32') throw refuse(`the run gave no float32 output "${s.name}"`);
    if (t.dims.length !== s.dims.length || t.dims.some((d, i) => d !== s.dims[i])) {
      throw refuse(`the run gave output "${s.name}" the shape [${t.dims.join(', ')}], but parameter "${s.name}" is [${s.dims.join(', ')}]`);
    }
    return { dims: [...s.dims], data: t.data as Float32Array };
  });
}

async function open(bytes: Uint8Array): Promise<ModelHandle> {
  try {
    // One thread: a node serves inference and many processes; averaging is one pass over the parameters.
    return await loadModel(bytes, { intraOpNumThreads: 1 });
  } catch (err) {
    throw refuse(`onnxruntime cannot load it (${err instanceof GridError ? err.message : String(err)})`);
  }
}

/**
 * Checks an ONNX averaging plan against a process's parameters when it is hosted: the contract's names,
 * dtypes and declared shapes, then one run on the model's own parameters with a zero diff (which catches
 * what only a run shows: unsupported operators, shapes the graph computes wrong).
 */
export async function checkAveragingPlan(bytes: Uint8Array, specs: readonly ParamSpec[], params: readonly StateTensor[]): Promise<void> {
  const plan = await open(bytes);
  try {
    // The shapes as the host declared them: onnxruntime's own metadata forgets a declared shape that
    // contradicts what it infers, and that contradiction is what the host needs to hear about.
    let declared;
    try {
      declared = signatureFromGraph(bytes, plan.signature.inputs.map((i) => i.name), plan.signature.outputs.map((o) => o.name));
    } catch {
      declared = plan.signature;
    }
    checkSignature(declared, specs);
    const zero = params.map((t) => ({ dims: [...t.dims], data: new Float32Array(t.data.length) }));
    try {
      await runPlan(plan, specs, params, zero, { reports: 1, weight: 1 });
    } catch (err) {
      if (err instanceof GridError && err.code === 'GRID_ERR_INVALID_AVERAGING_PLAN') throw err;
      throw refuse(`a trial run on the model's parameters failed: ${(err as Error).message}`);
    }
  } finally {
    await plan.dispose();
  }
}

/** The new parameters from the plan, fed the cycle's old parameters and weighted mean diff. */
export async function runAveragingPlan(bytes: Uint8Array, specs: readonly ParamSpec[], old: readonly StateTensor[], sum: RunningSum): Promise<StateTensor[]> {
  const plan = await open(bytes);
  try {
    return await runPlan(plan, specs, old, sum.mean(), { reports: sum.reports, weight: sum.weight });
  } finally {
    await plan.dispose();
  }
}
