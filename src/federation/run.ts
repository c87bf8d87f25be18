// One FedAvg workflow for the CLI's `grid fedavg`, the palette's Train (FedAvg) and the notebook's
// grid.fedavg: fetch the model to start from, run the rounds, serve the result with the permissions the
// one rule gives it (core/permissions: what the user said, else the source's flags, else private).

import type { GridClient } from '../core/client';
import { inheritedPermissions } from '../core/permissions';
import type { ModelInfo } from '../core/protocol/messages';
import { fedAvgRounds, hostFedAvgResult, type FedAvgOptions, type FedAvgResult, type RoundReport } from './fedavg';

export interface FedAvgRunOptions extends Omit<FedAvgOptions, 'model'> {
  /** Where to start: a hosted model (`name` or `name@N`) fetched from `client` once, or ONNX bytes. */
  model: { client: GridClient; id: string } | Uint8Array;
  /** The node that serves the result. */
  serveTo: GridClient;
  /** A new model id for the result, instead of the next version of the hosted model it started from. */
  outputId?: string;
  /**
   * The result's id where it is not the next version (bytes, or a model whose versions only its owner or
   * an admin adds); default `fedavg-<time>`, like the node's `trained-<job>`: an id not taken yet, so a
   * second run's result is not refused at the end of its rounds.
   */
  fallbackId?: string;
  /** Unless given, as the hosted model it started from, else private. */
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
  onDownloadProgress?(done: number, total: number): void;
}

export interface FedAvgRun extends FedAvgResult {
  /** The hosted model version the run started from (its metadata as downloaded). */
  source?: ModelInfo;
  /** The result as `serveTo` serves it. */
  served: ModelInfo;
}

/** Runs FedAvg round by round, yielding each round's report; the return value is the served result. */
export async function* runFedAvg(opts: FedAvgRunOptions): AsyncGenerator<RoundReport, FedAvgRun> {
  const { model, serveTo, outputId, fallbackId, allowDownload, allowRemoteInference, onDownloadProgress, ...rounds } = opts;
  const fetched = model instanceof Uint8Array ? undefined : await model.client.downloadModelBytes(model.id, {
    ...(onDownloadProgress && { onProgress: onDownloadProgress }), ...(opts.signal && { signal: opts.signal }),
  });
  const source = fetched?.model;
  const result = yield* fedAvgRounds({ ...rounds, model: fetched?.bytes ?? (model as Uint8Array) });
  const served = await hostFedAvgResult(serveTo, result.model, {
    ...(source && { source }), ...(outputId !== undefined && { outputId }),
    fallbackId: fallbackId ?? `fedavg-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}`,
    ...inheritedPermissions({ allowDownload, allowRemoteInference }, source),
    ...(opts.signal && { signal: opts.signal }),
  });
  return { ...result, ...(source && { source }), served };
}
