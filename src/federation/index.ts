// Federated training from the client side: FedAvg/FedProx across grid nodes, and the same training plans
// run in this process for notebook users (no node needed).

export { fedAvgRounds, fedAvgTrain, hostFedAvgResult, type HostResultOptions, type FedAvgOptions, type FedAvgResult, type Participant, type ParticipantReport, type RoundReport } from './fedavg';
export { datasetsByTag, participantsByTag, type NodeParticipant, type ParticipantNode } from './participants';
export { runFedAvg, type FedAvgRun, type FedAvgRunOptions } from './run';
export { train as trainLocal, trainSteps as trainLocalSteps, evaluateModel, type TrainOptions, type TrainProgress, type TrainResult } from '../compute/train';
export { readCsvDataset, splitDataset, partitionDataset, type Dataset } from '../compute/data';
export { flDiff, flParams, flTrainConfig, joinFl, runFlCycle, runFlCycles, trainFlCycle, type FlCycleOptions, type FlCyclesOptions, type FlCyclesResult, type FlCycleOutcome, type FlTrainConfig, type FlTrainOptions, type FlTrainResult } from './fl-worker-training';
export { simulateFl, parsePartition, partitionFor, partitionRows, type FlCycleMetrics, type FlReportedDiff, type FlSimulationOptions, type FlSimulationResult, type Partition } from './fl-simulation';
