// Training on a node, attached to its router by GridNode.start: the job manager, the training records
// and the handlers, with one close() for shutdown.

import * as path from 'node:path';
import type { Logger } from '../../core/logger';
import type { GridRouter } from '../rpc/server';
import type { DatasetStore } from '../datasets';
import type { NodeEvents } from '../events';
import type { NodeMetrics } from '../metrics';
import type { ModelStore } from '../models';
import type { Store } from '../store/sql';
import { registerTrainingHandlers } from './handlers';
import { TrainingJobs } from './jobs';
import { TrainingRecords } from './records';

export { TrainingJobs, DEFAULT_CLAIM_LEASE_MS } from './jobs';

export interface NodeTraining {
  readonly jobs: TrainingJobs;
  close(): Promise<void>;
}

export interface TrainingOptions {
  /** How long a replica's claim on a job holds without a heartbeat (docs/replicas.md); 15 s by default. */
  claimLeaseMs?: number;
}

export async function attachTraining(router: GridRouter, deps: {
  db: Store; models: ModelStore; datasets: DatasetStore; events: NodeEvents; metrics: NodeMetrics;
  dataDir: string; log: Logger; where(): string; options?: TrainingOptions;
}): Promise<NodeTraining> {
  const records = new TrainingRecords(deps.db);
  const jobs = await TrainingJobs.open({
    db: deps.db, models: deps.models, datasets: deps.datasets, events: deps.events, records, log: deps.log,
    dir: path.join(deps.dataDir, 'training'),
    ...(deps.options?.claimLeaseMs !== undefined && { leaseMs: deps.options.claimLeaseMs }),
    onModelAdded: () => deps.metrics.models.set(deps.models.count),
  });
  registerTrainingHandlers(router, { jobs, models: deps.models, datasets: deps.datasets, records, where: deps.where });
  return { jobs, close: () => jobs.close() };
}
