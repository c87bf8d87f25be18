// The messages between the editor and its FL worker process (src/cli/fl-join-process.ts, spawned by
// src/extension/fl-join.ts): one job in, progress and one outcome out, over Node's IPC channel.

/** editor → worker process (argv[2], JSON): the process to join and the local data to train on. */
export interface FlJoinJob {
  url: string;
  name: string;
  version?: string;
  authToken?: string;
  /** A local .csv / .csv.gz (label in the last column unless labelColumn) or .npy features file. */
  data: string;
  labels?: string;
  labelColumn?: number;
  featureScale?: number;
  seed?: number;
  timeoutMs?: number;
}

/**
 * editor → worker process: evaluate a checkpoint (an ONNX file) on a held-out set instead of joining —
 * how the notebook draws a process's accuracy across cycles (the extension host never loads onnxruntime).
 */
export interface FlEvaluateJob {
  mode: 'evaluate';
  model: string;
  data: string;
  labels?: string;
  labelColumn?: number;
  featureScale?: number;
  loss?: 'cross_entropy' | 'mse';
}

/** worker process → editor. */
export type FlJoinMessage =
  | { kind: 'accepted'; model: string; version: string; workerId: string; rows: number; epochs: number; batchSize: number }
  | { kind: 'progress'; epoch: number; epochs: number; batch: number; batches: number; loss: number; accuracy: number }
  | { kind: 'reported'; model: string; version: string; workerId: string; numSamples: number; steps: number; seconds: number; loss: number; accuracy: number }
  | { kind: 'rejected'; reason: string; timeout: string | null; timeoutS: number | null }
  | { kind: 'evaluated'; rows: number; loss: number; accuracy: number }
  | { kind: 'error'; code: string; message: string };

/** editor → worker process, over IPC: stop (the job's training is abandoned; nothing is reported). */
export interface FlJoinCancel { kind: 'cancel' }
