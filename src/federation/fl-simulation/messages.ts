// The messages between a simulation (simulate.ts, the main thread) and its worker threads (thread.ts).

import type { Dataset } from '../../compute/data';
import type { LoadModelOptions } from '../../compute/backend';

/** What a worker does in one cycle besides training. */
export interface WorkerRole {
  /** 'silent': accepted, then never reports. 'vanish': accepted, trains, then its connection closes before it reports. */
  drop?: 'silent' | 'vanish';
  /** Milliseconds between training and reporting (a slow device). */
  delayMs?: number;
  /** Reports only once the node has closed the cycle (told by a 'closed' message): late on any machine. */
  untilClosed?: boolean;
}

/** workerData of a thread: its share of the simulated workers, each with its own socket. */
export interface ThreadInit {
  url: string;
  name: string;
  version: string;
  authToken?: string;
  timeoutMs: number;
  seed: number;
  loadOptions: LoadModelOptions;
  collectDiffs: boolean;
  workers: { index: number; data: Dataset }[];
}

// main → thread
export type ToThread =
  | { type: 'cycle'; cycle: number; roles: Record<number, WorkerRole> }
  /** The node has closed this cycle (its checkpoint is written): workers with `untilClosed` report now. */
  | { type: 'closed'; cycle: number }
  | { type: 'stop' };

export type WorkerOutcome =
  | { status: 'rejected'; reason: string }
  | { status: 'error'; code: string; message: string; accepted: boolean }
  /** The node refused the report because the cycle had closed meanwhile (a slow worker). */
  | { status: 'late' }
  | { status: 'dropped'; drop: 'silent' | 'vanish' }
  | { status: 'reported'; numSamples: number; loss: number; accuracy: number; seconds: number; diff?: Float32Array };

// thread → main
export type FromThread =
  | { type: 'ready' }
  | { type: 'failed'; code: string; message: string }
  | { type: 'accepted'; cycle: number; index: number }
  | { type: 'outcome'; cycle: number; index: number; outcome: WorkerOutcome }
  | { type: 'cycle-done'; cycle: number };
