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

export { TrainingJobs } from './jobs';

export interface NodeTraining {
  readonly jobs: TrainingJobs;
  close(): Promise<void>;
}

export function attachTraining(router: GridRouter, deps: {
  db: Store; models: ModelStore; datasets: DatasetStore; events: NodeEvents; metrics: NodeMetrics;
  dataDir: string; log: Logger; where(): string;
}): NodeTraining {
  const records = new TrainingRecords(deps.db);
  const jobs = new TrainingJobs({
    models: deps.models, events: deps.events, records, log: deps.log,
    dir: path.join(deps.dataDir, 'training'),
    onModelAdded: () => deps.metrics.models.set(deps.models.count),
  });
  registerTrainingHandlers(router, { jobs, models: deps.models, datasets: deps.datasets, records, where: deps.where });
  return { jobs, close: () => jobs.close() };
}
