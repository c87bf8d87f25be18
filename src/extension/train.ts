// Grid: Train — a short multi-step pick (model, where, dataset, epochs, learning rate, rounds), then
// either a training job on the model's node or FedAvg across nodes, with live loss/accuracy in a
// cancellable notification. The trained model is stored on the node and shows up in the tree by the
// node's own model-added event. FedAvg (src/federation) comes with the heavy half (heavy.ts).
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import { refOf } from '../core/protocol/model-ref';
import { TRAINING_DEFAULTS } from '../core/protocol/training-defaults';
import type { JobInfo, TrainRequest } from '../core/protocol/training-messages';
import { lossFor, trainRequest } from '../core/training-request';
import { participantsByTag } from '../federation/participants';
import type { NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { FedAvgReport, fedAvgWarning, type FedAvgSummary } from './fedavg-report';
import { heavy } from './heavy';
import { guarded, pickModel, requireNode, type Cmd, type Flow, type ModelArgs } from './pickers';
import { jobSummary, ModelItem } from './views/items';

export type { DroppedParticipant, FedAvgSummary } from './fedavg-report';

export interface TrainArgs extends ModelArgs {
  /** 'node': a job on the model's node (default); 'fedavg': federated averaging across nodes. */
  mode?: 'node' | 'fedavg';
  /** Dataset id on the model's node ('node' mode). */
  dataset?: string;
  /** FedAvg: each participant trains on its dataset carrying this tag. */
  tag?: string;
  /** FedAvg: participant nodes (names or URLs); default every connected node with a dataset tagged `tag`. */
  nodes?: string[];
  epochs?: number;
  lr?: number;
  /** FedAvg rounds. */
  rounds?: number;
  batchSize?: number;
  optimizer?: TrainRequest['optimizer'];
  loss?: TrainRequest['loss'];
  featureScale?: number;
  testSplit?: number;
  /** A new model id for the result; by default the result is the next version of the model trained. */
  outputId?: string;
  /** Whether other users may download / run the result; by default as the model trained from. */
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
}

async function askNumber(title: string, prompt: string, value: number, check: (n: number) => boolean, hint: string): Promise<number | undefined> {
  const s = await vscode.window.showInputBox({ title, prompt, value: String(value), validateInput: (v) => (check(Number(v)) ? undefined : hint) });
  return s === undefined ? undefined : Number(s);
}

const positiveInt = (n: number) => Number.isInteger(n) && n >= 1 && n <= 100_000;
const positive = (n: number) => Number.isFinite(n) && n > 0;

export function train(ctx: Ctx): Cmd {
  return guarded(ctx, 'Training failed', async (arg: ModelItem | TrainArgs | undefined, flow: Flow) => {
    // The answers are written into `a` as they come, so Authenticate can go on without asking again.
    const a = flow.answers as TrainArgs;
    Object.assign(a, arg instanceof ModelItem || arg === undefined ? {} : arg);
    const target = await pickModel(ctx, arg, 'Train a model', 'train', flow);
    if (!target) return undefined;
    const { conn, model } = target;
    const title = `Train ${model.id}`;
    let mode = a.mode;
    if (mode === undefined) {
      const picked = await vscode.window.showQuickPick([
        { label: `On ${conn.name}`, detail: 'a training job on a dataset of the node that hosts the model', mode: 'node' as const },
        { label: 'Federated (FedAvg) across nodes', detail: 'each node trains on its own data; only parameters travel', mode: 'fedavg' as const },
      ], { title });
      if (!picked) return undefined;
      mode = picked.mode;
    }
    a.mode = mode;
    return mode === 'fedavg' ? fedAvg(ctx, conn, model, a, title) : trainOnNode(ctx, conn, model, a, title);
  });
}

async function trainOnNode(ctx: Ctx, conn: NodeConnection, model: ModelInfo, a: TrainArgs, title: string): Promise<JobInfo | undefined> {
  if (!conn.supportsTraining) throw gridError('NOT_FOUND', `${conn.name} does not run training jobs (its grid node is too old)`);
  let dataset = a.dataset !== undefined ? conn.datasets.find((d) => d.id === a.dataset || d.name === a.dataset) : undefined;
  if (a.dataset !== undefined && !dataset) throw gridError('NOT_FOUND', `${conn.name} has no dataset "${a.dataset}"; it has ${conn.datasets.map((d) => `"${d.name}"`).join(', ') || 'none'}`);
  if (!dataset) {
    if (conn.datasets.length === 0) throw gridError('NOT_FOUND', `${conn.name} has no datasets to train on`);
    const picked = await vscode.window.showQuickPick(conn.datasets.map((d) => ({ label: d.name, description: `${d.schema.rows} rows · ${d.tags.join(', ')}`, d })), { title, placeHolder: `Dataset on ${conn.name}` });
    if (!picked) return undefined;
    dataset = picked.d;
  }
  a.dataset = dataset.id;
  const epochs = a.epochs ??= await askNumber(title, 'Epochs', TRAINING_DEFAULTS.epochs, positiveInt, 'a whole number from 1');
  if (epochs === undefined) return undefined;
  const lr = a.lr ??= await askNumber(title, 'Learning rate', TRAINING_DEFAULTS.lr, positive, 'a positive number');
  if (lr === undefined) return undefined;
  const client = conn.client;
  const started = await client.training.start(trainRequest({
    model: refOf(model), datasetId: dataset.id, loss: a.loss ?? lossFor(dataset), lr, epochs, testSplit: a.testSplit ?? TRAINING_DEFAULTS.testSplit,
    optimizer: a.optimizer, batchSize: a.batchSize, featureScale: a.featureScale, outputId: a.outputId,
    // Left out unless given: the node then copies the model's own flags.
    allowDownload: a.allowDownload, allowRemoteInference: a.allowRemoteInference,
  }));
  conn.updateJob(started);
  ctx.log.info({ node: conn.url, job: started.id, model: model.id, dataset: dataset.id, epochs, lr }, `training job ${started.id} started on ${conn.name}`);
  const done = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Training ${model.id} on ${conn.name}/${dataset.name}`, cancellable: true }, async (progress, token) => {
    const cancel = new AbortController();
    const sub = token.onCancellationRequested(() => cancel.abort());
    let shown = 0;
    try {
      return await client.training.follow(started, {
        cancel: cancel.signal,
        onCancelFailed: (err) => ctx.log.warn({ job: started.id }, `could not cancel: ${err.message}`),
        onUpdate: (job, ev) => {
          conn.updateJob(job);
          if (ev?.kind !== 'batch' && ev?.kind !== 'epoch') return;
          const pct = Math.floor((((ev.epoch - 1) + ev.batch / Math.max(1, ev.batches)) / ev.epochs) * 100);
          if (pct > shown || ev.kind === 'epoch') {
            progress.report({ increment: Math.max(0, pct - shown), message: jobSummary(job) });
            shown = Math.max(shown, pct);
          }
        },
      });
    } finally {
      sub.dispose();
    }
  });
  conn.updateJob(done);
  const r = done.result;
  ctx.log.info({ node: conn.url, job: done.id, result: r }, `training job ${done.id} ${done.state}`);
  void vscode.window.showInformationMessage(`Trained ${model.id} on ${dataset.name}: ${jobSummary(done)}`);
  return done;
}

async function fedAvg(ctx: Ctx, home: NodeConnection, model: ModelInfo, a: TrainArgs, title: string): Promise<FedAvgSummary | undefined> {
  const candidates = ctx.openConnections.filter((c) => c.supportsTraining && c.state === 'connected');
  const tags = [...new Set(candidates.flatMap((c) => c.datasets.flatMap((d) => d.tags)))].sort();
  let tag = a.tag;
  if (tag === undefined) {
    if (tags.length === 0) throw gridError('NOT_FOUND', 'no signed-in node that runs training has tagged datasets');
    tag = await vscode.window.showQuickPick(tags, { title, placeHolder: 'Dataset tag: each node trains on its dataset with this tag' });
    if (tag === undefined) return undefined;
  }
  a.tag = tag;
  // Named as the user named them: two names of one node reach FedAvg as two entries, which it refuses naming both.
  const wanted = a.nodes?.map((n) => {
    const c = ctx.find(n);
    if (!c) throw gridError('NOT_FOUND', `no node named or at "${n}"`);
    // Before any question: a node not signed in is offered a sign-in (Authenticate), then FedAvg goes on.
    requireNode(c, 'signedIn', 'train on it');
    return { c, name: n };
  });
  const nodes = wanted ?? candidates.map((c) => ({ c, name: c.name }));
  let participants = await participantsByTag(nodes.map((n) => ({ client: n.c.client, name: n.name, datasets: n.c.datasets })), [tag], { named: wanted !== undefined });
  if (a.nodes === undefined && participants.length > 1) {
    const picked = await vscode.window.showQuickPick(participants.map((p) => ({ label: p.name, description: `${p.dataset.name} · ${p.dataset.schema.rows} rows`, picked: true, p })), { title, canPickMany: true, placeHolder: 'Nodes taking part' });
    if (!picked?.length) return undefined;
    participants = picked.map((x) => x.p);
  }
  a.nodes = [...new Set(participants.map((p) => nodes[p.node]!.name))];
  const rounds = a.rounds ??= await askNumber(title, 'FedAvg rounds', 5, positiveInt, 'a whole number from 1');
  if (rounds === undefined) return undefined;
  const epochs = a.epochs ??= await askNumber(title, 'Local epochs per round', 1, positiveInt, 'a whole number from 1');
  if (epochs === undefined) return undefined;
  const lr = a.lr ??= await askNumber(title, 'Learning rate', TRAINING_DEFAULTS.lr, positive, 'a positive number');
  if (lr === undefined) return undefined;

  const { runFedAvg } = heavy();
  const report = new FedAvgReport(model.id, home.name, participants.map((p) => nodes[p.node]!.c));
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `FedAvg ${model.id} over ${participants.map((p) => p.name).join(', ')}`, cancellable: true }, async (progress, token) => {
    const controller = new AbortController();
    const sub = token.onCancellationRequested(() => controller.abort());
    try {
      // FedAvg starts from the model's bytes, fetched once from its node (yours, or one that allows download);
      // the result is the next version of it (or outputId, or for a model of someone else's, a new one).
      const it = runFedAvg({
        model: { client: home.client, id: refOf(model) }, serveTo: home.client, participants,
        rounds, localEpochs: epochs, lr, loss: a.loss ?? lossFor(participants[0]!.dataset), optimizer: a.optimizer ?? 'sgd', batchSize: a.batchSize ?? 32,
        featureScale: a.featureScale, testSplit: a.testSplit ?? 0.2, evaluateOnNodes: true, signal: controller.signal,
        outputId: a.outputId, allowDownload: a.allowDownload, allowRemoteInference: a.allowRemoteInference,
        onWarning: (message, error) => ctx.log.warn(`FedAvg: ${fedAvgWarning(message, error)}`),
      });
      for (;;) {
        const step = await it.next();
        if (step.done) {
          const served = step.value.served;
          report.summary.model = refOf(served);
          ctx.log.info({ node: home.url, model: report.summary.model, parent: served.parent }, `FedAvg result served as ${report.summary.model} on ${home.name}`);
          return;
        }
        const r = step.value;
        const dropped = report.round(r);
        const acc = r.test ? `test accuracy ${(r.test.accuracy * 100).toFixed(1)}%` : `accuracy ${(r.train.accuracy * 100).toFixed(1)}%`;
        progress.report({ increment: 100 / rounds, message: `round ${r.round}/${r.rounds} · loss ${r.train.loss.toFixed(4)} · ${acc}${dropped.length ? ` · dropped ${dropped.map((d) => `${d.node} (${d.error.code})`).join(', ')}` : ''}` });
        ctx.log.info({ round: r.round, train: r.train, test: r.test, dropped }, `FedAvg round ${r.round}/${r.rounds}`);
      }
    } finally {
      sub.dispose();
    }
  });
  const { summary } = report;
  const last = summary.rounds.at(-1);
  const satOut = report.satOut();
  const done = `FedAvg done: ${summary.model} on ${home.name}${last?.test ? `, test accuracy ${(last.test.accuracy * 100).toFixed(1)}%` : ''}.`;
  if (satOut.length > 0) void vscode.window.showWarningMessage(`${done} ${satOut.join('; ')}.`, 'Show Logs').then((p) => { if (p) ctx.log.show(); });
  else void vscode.window.showInformationMessage(done);
  return summary;
}
