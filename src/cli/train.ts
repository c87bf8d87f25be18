// grid train / jobs / cancel / fedavg: training on a node's data and federated averaging across nodes,
// from a terminal. Progress goes to stderr on a TTY; `--json` prints the final metrics and model id.

import * as fs from 'node:fs';
import type { Command } from 'commander';
import { GridClient, type Credentials } from '../core/client';
import { gridError, toGridError } from '../core/errors';
import { refOf } from '../core/protocol/messages';
import { TRAINING_DEFAULTS, type JobEvent, type JobInfo } from '../core/protocol/training-messages';
import { trainRequest } from '../core/training-request';
import { mlp } from '../compute/plan';
import { participantsByTag, runFedAvg, type Participant, type RoundReport } from '../federation';
import { int, num } from './args';

/** What the grid CLI lends its training commands. */
export interface CliHost {
  connect(needsLogin: boolean): Promise<GridClient>;
  print(human: string, json: unknown): void;
  /** Progress lines go here (stderr, unless --json); undefined = stay quiet. */
  progressStream(): { out: NodeJS.WritableStream; tty: boolean } | undefined;
  /** How to sign in to the node at `url` (flags, environment, or the local node's record). */
  credentials(url: string): Credentials | undefined;
  timeoutMs(): number;
}

/** Runs a generator to its end; its return value. */
async function lastOf<R>(it: AsyncGenerator<unknown, R>): Promise<R> {
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
  }
}
const pct = (x: number | undefined) => (x === undefined ? '-' : `${(x * 100).toFixed(2)}%`);

/** A model given on the command line: an .onnx file, `mlp:64,64,10` (built here), or a hosted model id. */
function modelArg(arg: string): string | Uint8Array {
  if (arg.startsWith('mlp:')) {
    try {
      return mlp(arg.slice(4).split(',').map(int), { seed: 1 });
    } catch (err) {
      throw gridError('INVALID_INPUT', `${arg}: ${toGridError(err).message} (mlp:IN,HIDDEN,…,OUT, e.g. mlp:64,64,10)`);
    }
  }
  if (fs.existsSync(arg)) {
    if (fs.statSync(arg).isDirectory()) throw gridError('INVALID_MODEL', `${arg} is a folder; give an .onnx file, mlp:IN,HIDDEN,…,OUT or a hosted model id`);
    return fs.readFileSync(arg);
  }
  return arg;
}

/** A hosted model named with `--version N`: `name@N`. Files and mlp: specs have no versions. */
function versionedArg(spec: string | Uint8Array, arg: string, version: number | undefined): string | Uint8Array {
  if (version === undefined) return spec;
  if (typeof spec !== 'string') throw gridError('INVALID_INPUT', `--version picks a version of a hosted model; ${arg} is a file or an mlp: spec`);
  if (spec.includes('@')) throw gridError('INVALID_INPUT', `${arg} names a version already; drop --version ${version}`);
  return `${spec}@${version}`;
}

interface TrainFlags {
  dataset: string; label?: string; featureScale?: number; loss: 'cross_entropy' | 'mse'; optimizer: 'sgd' | 'momentum' | 'adam';
  lr?: number; momentum?: number; batchSize: number; epochs: number; seed?: number; validationSplit?: number; testSplit?: number;
  progressEvery?: number; dpClip?: number; dpNoise?: number; outputModelId?: string; allowDownload?: boolean; allowRemoteInference?: boolean; detach?: boolean;
  version?: number;
}

function describeEvent(ev: JobEvent): string | undefined {
  if (ev.kind === 'state') return `job ${ev.job_id}: ${ev.state}`;
  if (ev.kind === 'gap') return `(${ev.missed} older events were no longer kept)`;
  const v = ev.validation ? `  val ${pct(ev.validation.accuracy)}` : '';
  return `epoch ${ev.epoch}/${ev.epochs}  batch ${ev.batch}/${ev.batches}  loss ${ev.loss.toFixed(4)}  acc ${pct(ev.accuracy)}${v}  ${Math.round(ev.samples_per_second)} rows/s  ETA ${Math.ceil(ev.eta_seconds)}s`;
}

function jobSummary(job: JobInfo): { human: string; json: unknown } {
  const r = job.result;
  const json = {
    job_id: job.id, state: job.state, model_id: r?.model?.id ?? null, model: r?.model ? refOf(r.model) : null,
    metrics: r?.metrics, validation: r?.validation, test: r?.test, samples: r?.samples, seconds: r?.seconds, privacy: r?.privacy,
  };
  const human = r === undefined
    ? `job ${job.id}: ${job.state}${job.error ? ` (${job.error.code}: ${job.error.message})` : ''}`
    : `job ${job.id} ${job.state} in ${r.seconds.toFixed(1)} s: train acc ${pct(r.metrics.accuracy)}, validation ${pct(r.validation?.accuracy)}, test ${pct(r.test?.accuracy)}${r.model ? `\nmodel ${refOf(r.model)}${r.model.parent !== undefined ? ` (from ${r.model.parent})` : ''}` : ''}`;
  return { human, json };
}

/** The data and optimiser options `train` and `fedavg` share (the same words, the same defaults). */
function hyperOptions(c: Command): Command {
  return c
    .option('--label <column>', 'label column (name or index; default: the dataset\'s label, else the last column)')
    .option('--feature-scale <x>', 'multiply every feature by x', num)
    .option('--loss <loss>', 'cross_entropy or mse', 'cross_entropy')
    .option('--optimizer <opt>', 'sgd, momentum or adam', TRAINING_DEFAULTS.optimizer)
    .option('--lr <x>', 'learning rate', num, TRAINING_DEFAULTS.lr);
}

/** Who else may use the `what` (core/permissions: as given, else as the hosted model it starts from, else no one). */
function permissionOptions(c: Command, what: string): Command {
  return c
    .option('--allow-download', `let other users download the ${what} (default: as the hosted model it starts from, else no)`)
    .option('--no-allow-download', `do not let other users download the ${what}`)
    .option('--allow-remote-inference', `let other users run the ${what} (default: as the hosted model it starts from, else no)`)
    .option('--no-allow-remote-inference', `do not let other users run the ${what}`);
}

export function registerTrainCommands(program: Command, host: CliHost): void {
  const follow = async (c: GridClient, jobId: string, afterSeq?: number) => {
    const progress = host.progressStream();
    const job = await c.training.wait(jobId, {
      ...(afterSeq !== undefined && { afterSeq }),
      ...(progress && {
        onEvent: (ev: JobEvent) => {
          const line = describeEvent(ev);
          if (line === undefined) return;
          // On a terminal batch lines overwrite each other; in a pipe or log file only whole lines go
          // out (epochs and states), so progress is visible there too without a wall of batch lines.
          if (progress.tty) progress.out.write(`\r${line}${ev.kind === 'batch' ? '' : '\n'}`);
          else if (ev.kind !== 'batch' || ev.batch === ev.batches) progress.out.write(`${line}\n`);
        },
      }),
    });
    return job;
  };

  const train = program.command('train <model>').description("train a model on a dataset of the node (rows never leave it); <model> is a hosted model (name or name@N; the result is its next version), an .onnx file or mlp:64,64,10")
    .requiredOption('-d, --dataset <id>', 'dataset registered on the node')
    .option('--version <n>', 'train this version of the hosted model (same as name@N)', int);
  hyperOptions(train)
    .option('--momentum <x>', 'momentum', num)
    .option('--batch-size <n>', 'batch size', int, TRAINING_DEFAULTS.batchSize)
    .option('--epochs <n>', 'epochs', int, TRAINING_DEFAULTS.epochs)
    .option('--seed <n>', 'shuffling and split seed', int)
    .option('--validation-split <x>', 'fraction held out for per-epoch validation', num)
    .option('--test-split <x>', 'fraction held out and evaluated at the end', num)
    .option('--progress-every <n>', 'a progress event every n batches', int)
    .option('--dp-clip <C>', 'differential privacy: clip the update to L2 norm C', num)
    .option('--dp-noise <sigma>', 'differential privacy: Gaussian noise multiplier (with --dp-clip)', num)
    .option('--output-model-id <id>', 'store the result as a new model with this id (default: the next version of <model>)');
  permissionOptions(train, 'trained model')
    .option('--detach', 'print the job id and return; follow it later with grid watch')
    .action(async (modelSpec: string, o: TrainFlags) => {
      const c = await host.connect(true);
      if ((o.dpNoise !== undefined) !== (o.dpClip !== undefined)) throw gridError('INVALID_INPUT', '--dp-clip and --dp-noise go together');
      const job = await c.training.start(trainRequest({
        model: versionedArg(modelArg(modelSpec), modelSpec, o.version), datasetId: o.dataset,
        ...o, outputId: o.outputModelId,
        ...(o.dpClip !== undefined && { privacy: { clipNorm: o.dpClip, noiseMultiplier: o.dpNoise! } }),
      }));
      if (o.detach) {
        host.print(`started job ${job.id}`, { job_id: job.id, state: job.state });
        return;
      }
      const s = jobSummary(await follow(c, job.id));
      host.print(s.human, s.json);
    });

  program.command('watch <job>').description('reattach to a training job and follow it to its end')
    .option('--after <seq>', 'only events after this sequence number', int)
    .action(async (jobId: string, o: { after?: number }) => {
      const c = await host.connect(true);
      const s = jobSummary(await follow(c, jobId, o.after));
      host.print(s.human, s.json);
    });

  program.command('jobs').description('your training jobs on the node').action(async () => {
    const c = await host.connect(true);
    const jobs = await c.training.listJobs();
    host.print(jobs.length === 0 ? 'no jobs' : jobs.map((j) => `${j.id}  ${j.state.padEnd(9)}  ${j.dataset_id}  ${j.progress ? `epoch ${j.progress.epoch}/${j.epochs}` : ''}  ${j.result?.model ? refOf(j.result.model) : ''}`.trimEnd()).join('\n'), { jobs });
  });

  program.command('cancel <job>').description('cancel a training job').action(async (jobId: string) => {
    const c = await host.connect(true);
    const job = await c.training.cancelJob(jobId);
    host.print(`job ${job.id}: ${job.state}`, { job });
  });

  const fedavg = program.command('fedavg <model>').description('federated averaging across nodes; <model> is an .onnx file, mlp:64,64,10 or a model hosted on the first reachable node (name or name@N; the result is its next version)')
    .requiredOption('--nodes <urls>', 'comma-separated node addresses (same --user/--password on each)')
    .option('--version <n>', 'start from this version of the hosted model (same as name@N)', int)
    .option('-d, --dataset <id>', 'dataset id on every node')
    .option('-t, --tag <tag>', 'use each node\'s datasets with this tag (or the dataset with this id or name) instead of --dataset');
  hyperOptions(fedavg)
    .option('--batch-size <n>', 'batch size', int, TRAINING_DEFAULTS.batchSize)
    .option('--rounds <n>', 'rounds', int, 10)
    .option('--local-epochs <n>', 'local epochs per round', int, 1)
    .option('--fraction <x>', 'fraction of nodes per round', num, 1)
    .option('--fedprox-mu <mu>', 'FedProx proximal term', num)
    .option('--seed <n>', 'seed', int)
    .option('--test-split <x>', 'each node holds out this fraction; the global model is evaluated on it', num)
    .option('--round-timeout <ms>', 'drop a node that has not answered its round in this time', int)
    .option('--serve-to <url>', 'node that hosts the final model (default: the first of --nodes)')
    .option('--output-model-id <id>', 'store the final model as a new model with this id (default: the next version of a hosted <model>, else fedavg-<time>)');
  permissionOptions(fedavg, 'final model')
    .action(async (modelSpec: string, o: {
      nodes: string; dataset?: string; tag?: string; label?: string; featureScale?: number; loss: 'cross_entropy' | 'mse'; optimizer: 'sgd' | 'momentum' | 'adam';
      lr?: number; batchSize: number; rounds: number; localEpochs: number; fraction: number; fedproxMu?: number; seed?: number; testSplit?: number;
      roundTimeout?: number; serveTo?: string; outputModelId?: string; allowDownload?: boolean; allowRemoteInference?: boolean; version?: number;
    }) => {
      if ((o.dataset === undefined) === (o.tag === undefined)) throw gridError('INVALID_INPUT', 'name the data with exactly one of --dataset or --tag');
      const urls = o.nodes.split(',').map((s) => s.trim()).filter(Boolean);
      const missing = urls.filter((url) => host.credentials(url) === undefined);
      if (missing.length > 0) throw gridError('UNAUTHENTICATED', `fedavg trains on the nodes: pass --user and --password (or set GRID_USER and GRID_PASSWORD) for ${missing.join(', ')}`);
      const spec = versionedArg(modelArg(modelSpec), modelSpec, o.version);
      const clients: GridClient[] = [];
      const reached: string[] = [];
      // A node that cannot be reached at the start is dropped with its reason, like one lost mid-run.
      const unreachable: { round: number; name: string; error: { code: string; message: string } }[] = [];
      const out = host.progressStream()?.out;
      try {
        const connected = await Promise.allSettled(urls.map((url) => GridClient.connect(url, { credentials: host.credentials(url)!, reconnect: { maxAttempts: 3, initialDelayMs: 200 }, connect: { handshakeTimeoutMs: host.timeoutMs() } })));
        for (const [i, r] of connected.entries()) {
          if (r.status === 'fulfilled') { clients.push(r.value); reached.push(urls[i]!); continue; }
          const e = toGridError(r.reason);
          unreachable.push({ round: 0, name: urls[i]!, error: { code: e.code, message: e.message } });
          out?.write(`warning: ${urls[i]} dropped before round 1: ${e.code}: ${e.message}\n`);
        }
        if (clients.length === 0) throw gridError('NOT_CONNECTED', `no node of ${urls.join(', ')} could be reached (${unreachable.map((u) => `${u.name}: ${u.error.message}`).join('; ')})`);
        const participants: Participant[] = o.dataset !== undefined
          ? clients.map((client, i) => ({ client, datasetId: o.dataset!, name: reached[i]! }))
          : await participantsByTag(clients.map((client, i) => ({ client, name: reached[i]! })), [o.tag!], { named: true });
        const target = o.serveTo === undefined ? clients[0]! : await GridClient.connect(o.serveTo, { credentials: host.credentials(o.serveTo) ?? host.credentials(reached[0]!)!, reconnect: { maxAttempts: 3, initialDelayMs: 200 } }).then((c) => { clients.push(c); return c; });
        // From a hosted model (fetched from the first node reached), the result is its next version (lineage: the version it started from).
        const result = await lastOf(runFedAvg({
          model: typeof spec === 'string' ? { client: clients[0]!, id: spec } : spec, serveTo: target,
          participants, rounds: o.rounds, localEpochs: o.localEpochs, fraction: o.fraction, loss: o.loss, optimizer: o.optimizer, batchSize: o.batchSize,
          lr: o.lr, seed: o.seed, label: o.label, featureScale: o.featureScale, fedProxMu: o.fedproxMu, roundTimeoutMs: o.roundTimeout,
          ...(o.testSplit !== undefined && { testSplit: o.testSplit, evaluateOnNodes: true }),
          outputId: o.outputModelId, allowDownload: o.allowDownload, allowRemoteInference: o.allowRemoteInference,
          ...(out && {
            onRound: (r: RoundReport) => out.write(`round ${r.round}/${r.rounds}: ${r.participants.length} nodes, train acc ${pct(r.train.accuracy)}, test ${pct(r.test?.accuracy)}, ${r.seconds.toFixed(1)} s\n`),
            onWarning: (m: string) => out.write(`warning: ${m}\n`),
          }),
        }));
        const served = result.served;
        const last = result.rounds.at(-1)!;
        host.print(
          `FedAvg ${result.rounds.length} rounds over ${participants.length} datasets: train acc ${pct(last.train.accuracy)}, test ${pct(result.test?.accuracy)}\nmodel ${refOf(served)}${served.parent !== undefined ? ` (from ${served.parent})` : ''} on ${o.serveTo ?? reached[0]} (others may download: ${served.allow_download ? 'yes' : 'no'}, run: ${served.allow_remote_inference ? 'yes' : 'no'})${unreachable.length > 0 ? `\nnot reached: ${unreachable.map((u) => `${u.name} (${u.error.code}: ${u.error.message})`).join(', ')}` : ''}`,
          { model_id: served.id, model: refOf(served), node: o.serveTo ?? reached[0], allow_download: served.allow_download, allow_remote_inference: served.allow_remote_inference, rounds: result.rounds.length, train: last.train, test: result.test ?? null, dropped: [...unreachable, ...result.rounds.flatMap((r) => r.dropped.map((d) => ({ round: r.round, ...d })))] },
        );
      } finally {
        for (const c of clients) c.dispose();
      }
    });
}
