// FL simulation: N workers in threads against a real node (simulate.ts), on partitions of one dataset (partition.ts).

export { simulateFl, type FlCycleMetrics, type FlReportedDiff, type FlSimulationOptions, type FlSimulationResult } from './simulate';
export { parsePartition, partitionFor, partitionRows, type Partition } from './partition';
