// Federated averaging across grid nodes, orchestrated from the client: each round sends the global
// parameters to a fraction of the participants, each trains locally on its own data (a train job with
// output 'update' on a node, or the same plan in this process), and the updates are averaged weighted
// by their sample counts. A participant that fails or times out is dropped from that round, not fatal,
// and always with its reason. The same dataset on the same node twice (one node added under two names
// or URLs, told apart by its node id) is refused before anything runs. Design notes: docs/training.md.

import { randomBytes } from 'node:crypto';
import type { GridClient } from '../core/client';
import { ErrorCodes, gridError, GridError, toGridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import { modelRef } from '../core/protocol/model-ref';
import type { NamedTensors } from '../core/protocol/tensor';
import type { Metrics, TrainRequest } from '../core/protocol/training-messages';
import { trainRequest } from '../core/training-request';
import type { Dataset } from '../compute/data';
import { fedAvg, type ClientUpdate } from '../compute/fedavg';
import { modelParams, seededRandom, withParams } from '../compute/plan';
import { train as trainInProcess, evaluateModel } from '../compute/train';

/** A node holding a dataset, or data in this process (the same plan trains here). */
export type Participant =
  | { kind?: 'node'; client: GridClient; datasetId: string; name?: string }
  | { kind: 'local'; data: Dataset; name: string };

export interface FedAvgOptions {
  /** The forward model (ONNX bytes); its initializers are the first global parameters. */
  model: Uint8Array;
  participants: readonly Participant[];
  rounds: number;
  /** Local epochs per round. */
  localEpochs: number;
  /** Fraction of the participants chosen (seeded) each round; 1 by default. */
  fraction?: number;
  loss: TrainRequest['loss'];
  optimizer: TrainRequest['optimizer'];
  lr?: number;
  momentum?: number;
  batchSize: number;
  seed?: number;
  /** Node datasets: label column, feature scale, and a held-out test split (kept fixed across rounds). */
  label?: string;
  featureScale?: number;
  testSplit?: number;
  /** FedProx: proximal term μ pulling each local model towards the round's global one. */
  fedProxMu?: number;
  /** Differential privacy on each participant's update. */
  privacy?: { clipNorm: number; noiseMultiplier: number };
  /** A participant not done with its round after this long is dropped from it. Default 10 min. */
  roundTimeoutMs?: number;
  /** Global test metrics after each round: a callback (e.g. a local test set), and/or the nodes' test splits. */
  evaluate?: (model: Uint8Array, params: NamedTensors) => Promise<Metrics>;
  evaluateOnNodes?: boolean;
  signal?: AbortSignal;
  onRound?(report: RoundReport): void;
  onWarning?(message: string, error: GridError): void;
}

export interface ParticipantReport { name: string; samples: number; metrics: Metrics; seconds: number }

export interface RoundReport {
  round: number;
  rounds: number;
  participants: ParticipantReport[];
  /** Participants that gave no update this round, each with why; `participant` indexes opts.participants. */
  dropped: { name: string; participant: number; error: { code: string; message: string } }[];
  /** Sample-weighted training metrics of the round's updates. */
  train: Metrics;
  /** Global model's metrics after the round, when an evaluation was asked for. */
  test?: Metrics;
  seconds: number;
}

export interface FedAvgResult {
  params: NamedTensors;
  /** The forward model with the global parameters: serve it to any node with client.hostModel. */
  model: Uint8Array;
  rounds: RoundReport[];
  test?: Metrics;
}

const nameOf = (p: Participant, i: number) => p.name ?? (p.kind === 'local' ? `local-${i}` : `${p.client.socket.status.url ?? 'node'}#${p.datasetId}`);

function check(opts: FedAvgOptions): void {
  if (!(opts.model instanceof Uint8Array)) throw new TypeError('opts.model must be ONNX model bytes');
  if (!Array.isArray(opts.participants) || opts.participants.length === 0) throw new RangeError('opts.participants must list at least one node or local dataset');
  if (!Number.isInteger(opts.rounds) || opts.rounds < 1) throw new RangeError(`opts.rounds must be a positive integer, got ${opts.rounds}`);
  if (!Number.isInteger(opts.localEpochs) || opts.localEpochs < 1) throw new RangeError(`opts.localEpochs must be a positive integer, got ${opts.localEpochs}`);
  if (opts.fraction !== undefined && !(opts.fraction > 0 && opts.fraction <= 1)) throw new RangeError(`opts.fraction must be in (0, 1], got ${opts.fraction}`);
  if (opts.evaluateOnNodes && !opts.testSplit) throw new RangeError('opts.evaluateOnNodes needs opts.testSplit (the nodes evaluate on their held-out rows)');
}

/** Runs FedAvg round by round, yielding each round's report; the return value is the final global model. */
export async function* fedAvgRounds(opts: FedAvgOptions): AsyncGenerator<RoundReport, FedAvgResult> {
  check(opts);
  const seed = opts.seed ?? 0;
  const rand = seededRandom(seed + 7919);
  const timeoutMs = opts.roundTimeoutMs ?? 600_000;
  const run = randomBytes(4).toString('hex');
  let global: NamedTensors = modelParams(opts.model);
  const reports: RoundReport[] = [];
  const hosted = new Map<GridClient, string>();
  const warn = (message: string, err: GridError) => opts.onWarning?.(message, err);
  try {
    // The model goes to each node once; rounds then carry only parameters. A node that cannot take it
    // (or cannot even say who it is) sits out every round with that reason, like a node that fails a round.
    const unusable = await refuseDuplicates(opts.participants);
    for (const [i, p] of opts.participants.entries()) {
      const e = p.kind === 'local' ? undefined : unusable.get(p.client);
      if (e) warn(`${nameOf(p, i)} cannot take part: ${e.code}: ${e.message}`, e);
    }
    for (const [i, p] of opts.participants.entries()) {
      if (p.kind === 'local' || hosted.has(p.client) || unusable.has(p.client)) continue;
      // One id per client: two clients may reach one node (two datasets there), each hosts its own copy.
      const id = `fedavg-${run}${hosted.size > 0 ? `-${hosted.size}` : ''}`;
      try {
        await p.client.hostModel(opts.model, { id, ...(opts.signal && { signal: opts.signal }) });
        hosted.set(p.client, id);
      } catch (err) {
        const e = toGridError(err);
        if (opts.signal?.aborted) throw e;
        unusable.set(p.client, e);
        warn(`${nameOf(p, i)} cannot take part: ${e.code}: ${e.message}`, e);
      }
    }
    for (let round = 1; round <= opts.rounds; round++) {
      if (opts.signal?.aborted) throw gridError('ABORTED', `FedAvg was cancelled before round ${round}`);
      const started = performance.now();
      const k = opts.participants.length;
      const m = Math.max(1, Math.round((opts.fraction ?? 1) * k));
      const order = opts.participants.map((_, i) => i);
      for (let i = k - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [order[i], order[j]] = [order[j]!, order[i]!]; }
      const chosen = order.slice(0, m).sort((a, b) => a - b);
      const startParams = global;
      const results = await Promise.allSettled(chosen.map((i) => trainOne(opts.participants[i]!, i, round, startParams, hosted, unusable, timeoutMs, opts)));
      const updates: (ClientUpdate & ParticipantReport)[] = [];
      const dropped: RoundReport['dropped'] = [];
      results.forEach((r, n) => {
        const name = nameOf(opts.participants[chosen[n]!]!, chosen[n]!);
        if (r.status === 'fulfilled') { updates.push({ ...r.value, name }); return; }
        const e = toGridError(r.reason);
        if (e.code === ErrorCodes.ABORTED && opts.signal?.aborted) throw e;
        dropped.push({ name, participant: chosen[n]!, error: { code: e.code, message: e.message } });
        warn(`round ${round}: ${name} dropped: ${e.code}: ${e.message}`, e);
      });
      if (updates.length === 0) throw gridError('JOB_FAILED', `FedAvg round ${round}: every chosen participant failed (${dropped.map((d) => `${d.name}: ${d.error.code}: ${d.error.message}`).join('; ')})`);
      global = fedAvg(updates.map((u) => ({ params: u.params, samples: u.samples })));
      const total = updates.reduce((a, u) => a + u.samples, 0);
      const report: RoundReport = {
        round, rounds: opts.rounds,
        participants: updates.map(({ name, samples, metrics, seconds }) => ({ name, samples, metrics, seconds })),
        dropped,
        train: {
          loss: updates.reduce((a, u) => a + u.metrics.loss * u.samples, 0) / total,
          accuracy: updates.reduce((a, u) => a + u.metrics.accuracy * u.samples, 0) / total,
        },
        seconds: 0,
      };
      const test = await evaluateGlobal(opts, global, hosted, round === opts.rounds);
      if (test) report.test = test;
      report.seconds = (performance.now() - started) / 1000;
      reports.push(report);
      opts.onRound?.(report);
      yield report;
    }
    const result: FedAvgResult = { params: global, model: withParams(opts.model, global), rounds: reports };
    const lastTest = reports.at(-1)?.test;
    if (lastTest) result.test = lastTest;
    return result;
  } finally {
    for (const [client, id] of hosted) await client.deleteModel(id).catch(() => {});
  }
}

/**
 * Asks every node participant's node for its id (get-id) and refuses two participants that are the same
 * dataset on the same node: one node added twice (two names, or ws://localhost:P and ws://127.0.0.1:P)
 * would train on the same rows twice and count them double. Resolves with the clients that could not
 * answer, and why (they sit out every round with that reason).
 */
async function refuseDuplicates(participants: readonly Participant[]): Promise<Map<GridClient, GridError>> {
  const clients = [...new Set(participants.flatMap((p) => (p.kind === 'local' ? [] : [p.client])))];
  const ids = await Promise.allSettled(clients.map((c) => c.getId()));
  const idOf = new Map<GridClient, string>();
  const unusable = new Map<GridClient, GridError>();
  ids.forEach((r, i) => {
    if (r.status === 'fulfilled') idOf.set(clients[i]!, r.value.id);
    else unusable.set(clients[i]!, toGridError(r.reason));
  });
  const seen = new Map<string, number>();
  for (const [i, p] of participants.entries()) {
    if (p.kind === 'local') continue;
    const id = idOf.get(p.client);
    if (id === undefined) continue;
    const key = `${id}\0${p.datasetId}`;
    const first = seen.get(key);
    if (first === undefined) { seen.set(key, i); continue; }
    throw gridError('INVALID_INPUT', `FedAvg participants "${nameOf(participants[first]!, first)}" and "${nameOf(p, i)}" are the same dataset "${p.datasetId}" on the same node (node id ${id}): one node added twice, under two names or addresses; list it once`,
      { node_id: id, dataset_id: p.datasetId, participants: [nameOf(participants[first]!, first), nameOf(p, i)] });
  }
  return unusable;
}

/** Runs every round; per-round reports go to opts.onRound. */
export async function fedAvgTrain(opts: FedAvgOptions): Promise<FedAvgResult> {
  const it = fedAvgRounds(opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}

async function trainOne(p: Participant, index: number, round: number, global: NamedTensors, hosted: Map<GridClient, string>, unusable: Map<GridClient, GridError>, timeoutMs: number, opts: FedAvgOptions): Promise<ClientUpdate & Omit<ParticipantReport, 'name'>> {
  if (p.kind !== 'local' && !hosted.has(p.client)) {
    // Every round it sits out says why, not just that it does.
    const e = unusable.get(p.client);
    throw new GridError(e?.code ?? ErrorCodes.NOT_CONNECTED, `the node could not take the model at the start: ${e?.message ?? 'no reason given'}`, e?.details);
  }
  const seed = (opts.seed ?? 0) * 1000 + round * 31 + index;
  const signals = [AbortSignal.timeout(timeoutMs), ...(opts.signal ? [opts.signal] : [])];
  const signal = AbortSignal.any(signals);
  const started = performance.now();
  if (p.kind === 'local') {
    const r = await trainInProcess(p.data, {
      model: opts.model, params: global, loss: opts.loss, optimizer: opts.optimizer, epochs: opts.localEpochs, batchSize: opts.batchSize, seed, signal,
      hyper: { ...(opts.lr !== undefined && { lr: opts.lr }), ...(opts.momentum !== undefined && { momentum: opts.momentum }), ...(opts.fedProxMu !== undefined && { proxMu: opts.fedProxMu }) },
      ...(opts.fedProxMu !== undefined && { fedProxGlobal: global }),
      ...(opts.privacy && { privacy: opts.privacy }),
      loadOptions: { intraOpNumThreads: 1 },
    });
    return { params: r.params, samples: Math.round(r.samples / opts.localEpochs), metrics: r.metrics, seconds: (performance.now() - started) / 1000 };
  }
  const t = p.client.training;
  const job = await t.start(trainRequest({
    model: hosted.get(p.client)!, params: global, datasetId: p.datasetId, output: 'update',
    loss: opts.loss, optimizer: opts.optimizer, batchSize: opts.batchSize, epochs: opts.localEpochs, seed, splitSeed: opts.seed ?? 0,
    lr: opts.lr, momentum: opts.momentum, label: opts.label, featureScale: opts.featureScale, testSplit: opts.testSplit, fedProxMu: opts.fedProxMu, privacy: opts.privacy,
    progressEvery: 1_000_000,
  }), { signal });
  try {
    const done = await t.wait(job.id, { signal });
    const update = await t.jobParams(job.id, { signal });
    return { params: update.params, samples: update.samples, metrics: done.result!.metrics, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    // A timed-out or abandoned job would run on; stop it so the node's compute is not wasted.
    if (signal.aborted) await t.cancelJob(job.id).catch(() => {});
    const e = toGridError(err);
    if (signal.aborted && !opts.signal?.aborted) throw new GridError(ErrorCodes.TIMEOUT, `no update within ${timeoutMs} ms (job ${job.id})`, { job_id: job.id });
    throw e;
  }
}

async function evaluateGlobal(opts: FedAvgOptions, global: NamedTensors, hosted: Map<GridClient, string>, last: boolean): Promise<Metrics | undefined> {
  if (opts.evaluate) return opts.evaluate(withParams(opts.model, global), global);
  if (!opts.evaluateOnNodes && !(last && opts.testSplit)) return undefined;
  // The nodes' held-out rows: each evaluates the global model on its own test split; the metrics are
  // combined weighted by test rows. Local participants use their data as is (no split here).
  let loss = 0, correct = 0, n = 0;
  for (const [i, p] of opts.participants.entries()) {
    if (p.kind === 'local' || !hosted.has(p.client)) continue;
    try {
      const r = await p.client.training.evaluate({
        model: hosted.get(p.client)!, params: global, dataset_id: p.datasetId, loss: opts.loss, test_split: opts.testSplit!, seed: opts.seed ?? 0,
        ...(opts.label !== undefined && { label: opts.label }),
        ...(opts.featureScale !== undefined && { feature_scale: opts.featureScale }),
      });
      loss += r.metrics.loss * r.samples;
      correct += r.metrics.accuracy * r.samples;
      n += r.samples;
    } catch (err) {
      opts.onWarning?.(`evaluation on ${nameOf(p, i)} failed: ${toGridError(err).message}`, toGridError(err));
    }
  }
  if (n === 0) return evaluateLocalFallback(opts, global);
  return { loss: loss / n, accuracy: correct / n };
}

async function evaluateLocalFallback(opts: FedAvgOptions, global: NamedTensors): Promise<Metrics | undefined> {
  const local = opts.participants.find((p) => p.kind === 'local');
  if (!local || local.kind !== 'local') return undefined;
  return evaluateModel(opts.model, local.data, { loss: opts.loss, params: global, loadOptions: { intraOpNumThreads: 1 } });
}

export interface HostResultOptions {
  /** The hosted model version the run started from (its node's model info), if it came from one. */
  source?: ModelInfo;
  /** A new model id for the result, instead of the next version of `source`. */
  outputId?: string;
  /** The new model id when there is no next version to store (no source, or one this user may not add versions to). */
  fallbackId: string;
  allowDownload: boolean;
  allowRemoteInference: boolean;
  signal?: AbortSignal;
}

/**
 * Hosts a FedAvg result on `client`: as `outputId` when given; else as the next version of the hosted model
 * it started from, with that version as its parent (lineage); else as the new model `fallbackId` — for bytes
 * from no hosted model, a node without versions, or a model whose versions only its owner or an admin adds
 * (GRID_ERR_FORBIDDEN): the rounds' work is never lost to that refusal.
 */
export async function hostFedAvgResult(client: GridClient, model: Uint8Array, opts: HostResultOptions): Promise<ModelInfo> {
  const versioned = opts.source?.versions !== undefined;
  const common = {
    allowDownload: opts.allowDownload, allowRemoteInference: opts.allowRemoteInference,
    ...(versioned && { parent: modelRef(opts.source!) }),
    ...(opts.signal !== undefined && { signal: opts.signal }),
  };
  if (opts.outputId !== undefined) return client.hostModel(model, { id: opts.outputId, ...common });
  if (versioned) {
    try {
      return await client.hostModel(model, { id: opts.source!.id, newVersion: true, ...common });
    } catch (err) {
      if (toGridError(err).code !== ErrorCodes.FORBIDDEN) throw err;
    }
  }
  return client.hostModel(model, { id: opts.fallbackId, ...common });
}
