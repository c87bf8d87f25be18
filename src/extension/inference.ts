// Inference inputs and results in VS Code terms: tensors from .npy/.pb/.json files (the CLI's reader)
// or from JSON text, and outputs as a JSON document plus a PNG for every image-like output.
// Part of the heavy half (lazy.ts): the TensorProto reader brings protobufjs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import type { NamedTensors } from '../core/protocol/tensor';
import { imageLayout, tensorToPng } from '../kernel/png';
import { bindInputFiles, bindInputValues, outputsToJson } from '../compute/tensor-io';

/** Binds files (`[NAME=]PATH`) to the model's inputs, named ones by name, the rest in order. */
export function inputsFromFiles(model: Pick<ModelInfo, 'signature'>, files: readonly string[]): NamedTensors {
  return bindInputFiles(files, model.signature);
}

/**
 * Inputs from JSON text: an object keyed by input names (each a tensor JSON or nested array), or,
 * for a one-input model, that input's tensor JSON or nested array itself.
 */
export function inputsFromJsonText(model: Pick<ModelInfo, 'id' | 'signature'>, text: string, what: string): NamedTensors {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw gridError('INVALID_INPUT', `${what} is not JSON: ${(err as Error).message}`);
  }
  return bindInputValues(model, json, what);
}

export interface RenderedResult {
  /** The JSON document's text: model, node and every output as {dtype, dims, data}. */
  json: string;
  /** PNG files written for image-like outputs. */
  images: string[];
}

export function renderOutputs(outputs: NamedTensors, meta: { model: string; node: string; durationMs: number }, imageDir: string): RenderedResult {
  const json = `${JSON.stringify({ model: meta.model, node: meta.node, duration_ms: Math.round(meta.durationMs), outputs: outputsToJson(outputs) }, null, 2)}\n`;
  const images: string[] = [];
  for (const [name, t] of Object.entries(outputs)) {
    const layout = imageLayout(t);
    if (!layout) continue;
    fs.mkdirSync(imageDir, { recursive: true });
    const file = path.join(imageDir, `${meta.model}-${name.replace(/[^A-Za-z0-9._-]/g, '_')}-${Date.now()}.png`);
    fs.writeFileSync(file, tensorToPng(t, layout));
    images.push(file);
  }
  return { json, images };
}
