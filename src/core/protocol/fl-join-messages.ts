// The messages between the editor and its FL worker process (src/cli/fl-join-process.ts, spawned by
// src/extension/fl-join.ts): one job in, progress and one outcome out, over Node's IPC channel. A
// simulation job also asks the editor to host its process (`host` → `hosted`).

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

/**
 * editor → worker process (argv[2]): run an FL simulation (grid.fl.simulate, as `grid fl simulate`): N
 * workers in threads on partitions of `data`, each checkpoint evaluated on a held-out part. The process is
 * hosted by the editor over its signed-in connection (the `host` / `hosted` exchange below).
 */
export interface FlSimulateJob {
  mode: 'simulate';
  url: string;
  /** An .onnx file or `mlp:IN,HIDDEN,…,OUT` (built in the worker process). */
  model: string;
  data: string;
  labels?: string;
  labelColumn?: number;
  featureScale?: number;
  /** Rows held out to evaluate each checkpoint (default 0.2). */
  testFraction?: number;
  workers: number;
  cycles: number;
  /** iid, label:K or dirichlet:α. */
  partition?: string;
  dropout?: { fraction: number; mode?: 'silent' | 'vanish' | 'mixed' };
  slow?: { fraction: number; delayMs: number };
  serverConfig?: Record<string, unknown>;
  clientConfig?: Record<string, unknown>;
  name?: string;
  version?: string;
  seed?: number;
  threads?: number;
  /** Stop once a checkpoint reaches this held-out accuracy (0..1). */
  target?: number;
}

/** One simulated cycle, as the simulation measures it and the worker process reports it (federation's FlCycleMetrics is this plus the diffs). */
export interface FlSimulationCycle {
  /** 1-based; checkpoint `cycle + 1` is what it produced (1 is the hosted model). */
  cycle: number;
  checkpoint: number;
  /** Workers the node took into the cycle / turned away. */
  accepted: number;
  rejected: number;
  /** Reports the node acknowledged. */
  reported: number;
  /** Accepted workers that dropped out (never reported). */
  dropped: number;
  /** Slow workers whose report came after the cycle had closed. */
  late: number;
  errors: number;
  /** Reports the node averaged into the checkpoint (its own count). */
  averaged: number;
  /** The checkpoint on the held-out set. */
  accuracy: number;
  loss: number;
  /**
   * The cycle's wall time on the node: from its opening (the previous checkpoint; hosting for cycle 1) to
   * its checkpoint. Workers still busy with an earlier cycle (slow ones) eat into it, as on a real grid.
   */
  seconds: number;
  droppedWorkers: number[];
  slowWorkers: number[];
  /** Reason → how many workers were turned away with it. */
  rejections: Record<string, number>;
  /** The first few errors, as `worker: code message`. */
  errorMessages: string[];
}

export interface FlSimulationSummary {
  name: string;
  version: string;
  processId: number;
  partitionSizes: number[];
  /** The hosted model on the held-out set. */
  initial: { loss: number; accuracy: number };
  cycles: FlSimulationCycle[];
  seconds: number;
}

/** worker process → editor. */
export type FlJoinMessage =
  | { kind: 'host'; model: string; clientConfig: Record<string, unknown>; serverConfig: Record<string, unknown> }
  | { kind: 'sim-hosted'; name: string; version: string; processId: number; initial: { loss: number; accuracy: number }; partitionSizes: number[]; testRows: number }
  | { kind: 'sim-cycle'; cycle: FlSimulationCycle }
  | { kind: 'simulated'; result: FlSimulationSummary }
  | { kind: 'accepted'; model: string; version: string; workerId: string; rows: number; epochs: number; batchSize: number }
  | { kind: 'progress'; epoch: number; epochs: number; batch: number; batches: number; loss: number; accuracy: number }
  | { kind: 'reported'; model: string; version: string; workerId: string; numSamples: number; steps: number; seconds: number; loss: number; accuracy: number }
  | { kind: 'rejected'; reason: string; timeout: string | null; timeoutS: number | null }
  | { kind: 'evaluated'; rows: number; loss: number; accuracy: number }
  | { kind: 'error'; code: string; message: string };

/** editor → worker process, over IPC: stop (the job's training is abandoned; nothing is reported). */
export interface FlJoinCancel { kind: 'cancel' }

/** editor → worker process, over IPC: the answer to its `host` (the simulation's process on the node). */
export type FlHostAnswer = { kind: 'hosted'; model_id: number; name: string; version: string } | { kind: 'host-failed'; code: string; message: string };
