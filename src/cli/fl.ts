// grid fl host / join / status / checkpoint: model-centric federated learning from a terminal. A host
// starts an FL process from an ONNX model; a worker joins it with a local dataset (rows never leave this
// machine: only the diff of the trained parameters goes to the node).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { GridError, gridError } from '../core/errors';
import { FlWorker } from '../core/fl-worker';
import { readNpy } from '../core/npy';
import { FlDownloadCheckpoint, FlHostTraining, FlListProcesses, type FlProcessInfo } from '../core/protocol/fl-messages';
import type { Tensor } from '../core/protocol/tensor';
import { fileSink, fileSource } from '../core/socket/transfer';
import { readCsvDataset, type Dataset } from '../compute/data';
import { runFlCycles, type FlTrainConfig } from '../federation';
import type { CliHost } from './train';
import { int, jsonArg, num } from './args';

/** What `grid fl` needs of the grid CLI besides what train commands get. */
export interface FlCliHost extends CliHost {
  /** The exit code when the command ends without an error (join: 3 when the node turned the worker away). */
  setExitCode(code: number): void;
}

/** Exit code of `grid fl join` when the worker was rejected for this cycle (not an error: try again later). */
export const EXIT_REJECTED = 3;

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
/** Seconds with two significant digits below 10 s: a fast cycle reads "0.31 s", not "0.0 s". */
const secs = (s: number) => (s >= 10 ? s.toFixed(0) : s.toPrecision(2));

/** `name@version` → both; `name` → the name (the node takes its last hosted version). */
export function processArg(arg: string, version: string | undefined): { name: string; version: string | undefined } {
  const at = arg.lastIndexOf('@');
  if (at <= 0) return { name: arg, version };
  if (version !== undefined) throw gridError('INVALID_INPUT', `${arg} names a version already; drop --version ${version}`);
  return { name: arg.slice(0, at), version: arg.slice(at + 1) };
}

function toFloat32(t: Tensor, what: string): Float32Array {
  if (t.dtype === 'float32') return t.data as Float32Array;
  if (t.dtype === 'string' || t.dtype === 'bool' || t.dtype === 'float16') throw gridError('INVALID_DATASET', `${what} is ${t.dtype}; features must be numbers`);
  return Float32Array.from(t.data as ArrayLike<number | bigint>, Number);
}

/**
 * A local dataset: CSV (.csv, .csv.gz; the label in `labelColumn`, the last column by default) or .npy
 * features [N, F] with class labels in `labels` (.npy [N]) or, without it, in the last column.
 */
export async function readWorkerDataset(file: string, opts: { labels?: string; labelColumn?: number; featureScale?: number }): Promise<Dataset> {
  if (!fs.existsSync(file)) throw gridError('INVALID_DATASET', `no file ${file}`);
  if (!file.toLowerCase().endsWith('.npy')) {
    if (opts.labels !== undefined) throw gridError('INVALID_INPUT', '--labels goes with an .npy features file; a CSV holds its labels in a column (--label-column)');
    return readCsvDataset(file, { ...(opts.labelColumn !== undefined && { labelColumn: opts.labelColumn }), ...(opts.featureScale !== undefined && { featureScale: opts.featureScale }) });
  }
  const x = readNpy(fs.readFileSync(file), file);
  if (x.dims.length !== 2) throw gridError('INVALID_DATASET', `${file} is [${x.dims.join(', ')}]; features must be a 2-D array [rows, features]`);
  const [n, cols] = x.dims as [number, number];
  let features = toFloat32(x, file);
  let f = cols;
  let labelValues: ArrayLike<number | bigint>;
  if (opts.labels !== undefined) {
    const y = readNpy(fs.readFileSync(opts.labels), opts.labels);
    if (y.dims.length !== 1 || y.dims[0] !== n) throw gridError('INVALID_DATASET', `${opts.labels} is [${y.dims.join(', ')}]; labels must be [${n}], one per row of ${file}`);
    if (y.dtype === 'string' || y.dtype === 'bool' || y.dtype === 'float16') throw gridError('INVALID_DATASET', `${opts.labels} is ${y.dtype}; labels must be class numbers`);
    labelValues = y.data as ArrayLike<number | bigint>;
  } else {
    if (cols < 2) throw gridError('INVALID_DATASET', `${file} has one column; give the labels with --labels y.npy`);
    const col = opts.labelColumn === undefined ? cols - 1 : opts.labelColumn < 0 ? cols + opts.labelColumn : opts.labelColumn;
    if (!(col >= 0 && col < cols)) throw gridError('INVALID_INPUT', `--label-column ${opts.labelColumn} is outside the ${cols} columns`);
    const all = features;
    f = cols - 1;
    features = new Float32Array(n * f);
    const lab = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      for (let c = 0, k = 0; c < cols; c++) {
        if (c === col) lab[r] = all[r * cols + c]!;
        else features[r * f + k++] = all[r * cols + c]!;
      }
    }
    labelValues = lab;
  }
  const labels = new BigInt64Array(n);
  for (let r = 0; r < n; r++) {
    const v = Number(labelValues[r]);
    if (!Number.isInteger(v) || v < 0) throw gridError('INVALID_DATASET', `row ${r}: label ${v} is not a class number (a non-negative integer)`, { row: r });
    labels[r] = BigInt(v);
  }
  if (opts.featureScale !== undefined) features = features.map((v) => v * opts.featureScale!);
  return { features: { dtype: 'float32', dims: [n, f], data: features }, labels: { dtype: 'int64', dims: [n], data: labels } };
}

function statusTable(ps: FlProcessInfo[]): string {
  if (ps.length === 0) return 'no FL processes';
  const rows = [['PROCESS', 'FORMAT', 'AVERAGING', 'CYCLE', 'ASSIGNED', 'REPORTED', 'ENDS', 'CHECKPOINT', 'WORKERS', 'OWNER'],
    ...ps.map((p) => {
      const c = p.cycle;
      const latest = p.checkpoints.at(-1);
      const cycles = p.server_config.num_cycles;
      return [`${p.name}@${p.version}`, p.format, p.averaging ?? 'fedavg', c === null ? `done (${p.completed_cycles})` : `${c.sequence}${typeof cycles === 'number' && cycles > 0 ? `/${cycles}` : ''}`,
        c === null ? '-' : String(c.assigned), c === null ? '-' : String(c.reported), c?.end ?? '-', latest === undefined ? '-' : String(latest.number), String(p.workers), p.owner];
    })];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

function describeConfig(cfg: FlTrainConfig): string {
  return `${cfg.epochs} epoch${cfg.epochs === 1 ? '' : 's'}, batch ${cfg.batchSize}, ${cfg.optimizer}${cfg.lr !== undefined ? ` lr ${cfg.lr}` : ''}${cfg.maxUpdates !== undefined ? `, at most ${cfg.maxUpdates} updates` : ''}${cfg.fedProxMu !== undefined ? `, FedProx μ ${cfg.fedProxMu}` : ''}${cfg.privacy !== undefined ? `, DP clip ${cfg.privacy.clipNorm} noise ${cfg.privacy.noiseMultiplier}` : ''}`;
}

export function registerFlCommands(program: Command, host: FlCliHost): void {
  const fl = program.command('fl').description('model-centric federated learning (PyGrid\'s FL processes): host a process, join it as a worker with local data, follow it, download its checkpoints');

  fl.command('host <model>').description('start an FL process from an ONNX model — a file, or a model hosted on the node (name or name@N; each checkpoint becomes its next version): workers train it on their own data, the node averages their diffs each cycle into a new checkpoint')
    .requiredOption('--name <name>', 'the process name workers join (client_config.name)')
    .requiredOption('--version <version>', 'its version (client_config.version)')
    .option('--server-config <json|file>', 'the node\'s rules: cycle_length (s), num_cycles, max_diffs, min_diffs, min_workers, max_workers, pool_selection, do_not_reuse_workers_until_cycle, minimum_upload_speed, minimum_download_speed, authentication')
    .option('--client-config <json|file>', 'what workers get: batch_size, lr, max_updates, epochs, loss, optimizer, momentum, fedprox_mu, privacy {clip_norm, noise_multiplier} (name and version come from --name/--version)')
    .option('--averaging-plan <file.onnx>', 'an ONNX graph the node runs at each cycle close instead of FedAvg: inputs old/<param> and diff/<param> (the weighted mean diff), outputs <param> (docs/federated-learning.md, Averaging plans)')
    .action(async (model: string, o: { name: string; version: string; serverConfig?: string; clientConfig?: string; averagingPlan?: string }) => {
      const isFile = fs.existsSync(model);
      if (isFile && fs.statSync(model).isDirectory()) throw gridError('INVALID_MODEL', `${model} is a folder; give an .onnx file or a hosted model (name or name@N)`);
      const serverConfig = jsonArg('--server-config', o.serverConfig) ?? {};
      const clientConfig = { ...jsonArg('--client-config', o.clientConfig), name: o.name, version: o.version };
      if (o.averagingPlan !== undefined && !fs.existsSync(o.averagingPlan)) throw gridError('INVALID_INPUT', `--averaging-plan: no file ${o.averagingPlan}`);
      const averagingPlan = o.averagingPlan === undefined ? undefined : fs.readFileSync(o.averagingPlan).toString('base64');
      const c = await host.connect(true);
      const source = isFile
        ? { model_transfer_id: (await c.socket.upload(await fileSource(path.resolve(model)))).transfer_id }
        : { model_ref: model };
      const r = await c.socket.request(FlHostTraining, { ...source, client_config: clientConfig, server_config: serverConfig, ...(averagingPlan !== undefined && { averaging_plan: averagingPlan }) }, { timeout: 600_000 });
      host.print(`hosted FL process ${r.name}@${r.version} (id ${r.model_id}) from ${isFile ? path.basename(model) : `the hosted model ${model}`}; workers join with: grid fl join ${r.name}@${r.version} --data FILE`,
        // The process's secrets (authentication keys) are not echoed back.
        { ...r, client_config: clientConfig, server_config: { ...serverConfig, ...(serverConfig.authentication !== undefined && { authentication: '(not shown)' }) } });
    });

  fl.command('join <process>').description(`join an FL process (name or name@version) as a worker: train its model on a local dataset and report the diff, for one cycle or --cycles N (exit code ${EXIT_REJECTED} when the node turns the worker away, e.g. the cycle is full, and --wait is over)`)
    .requiredOption('-d, --data <file>', 'local data: .csv / .csv.gz (label in the last column unless --label-column), or .npy features [N, F]')
    .option('--labels <file.npy>', 'class labels [N] for an .npy features file (default: its last column)')
    .option('--label-column <n>', 'the label column (negative counts from the end)', int)
    .option('--feature-scale <x>', 'multiply every feature by x (e.g. 0.0625 for 0..16 pixels)', num)
    .option('--version <version>', 'the process version (same as name@version)')
    .option('--auth-token <token>', 'the JWT the process asks of its workers')
    .option('--cycles <n>', 'cycles to take part in, as one worker', int, 1)
    .option('--wait <seconds>', 'keep asking this long while the node turns the worker away (the next cycle opens when the current one closes)', num, 0)
    .option('--seed <n>', 'shuffling seed', int)
    .action(async (processSpec: string, o: { data: string; labels?: string; labelColumn?: number; featureScale?: number; version?: string; authToken?: string; cycles: number; wait: number; seed?: number }) => {
      const { name, version } = processArg(processSpec, o.version);
      if (!(o.cycles >= 1)) throw gridError('INVALID_INPUT', `--cycles ${o.cycles}: at least 1`);
      if (!(o.wait >= 0)) throw gridError('INVALID_INPUT', `--wait ${o.wait}: seconds, 0 or more`);
      const data = await readWorkerDataset(o.data, o);
      const c = await host.connect(false);
      // The worker rides the CLI's one connection to the node (the GridClient disposes it).
      const worker = new FlWorker(c.socket, { timeoutMs: Math.max(host.timeoutMs(), 20_000) });
      const job = worker.newJob({ modelName: name, ...(version !== undefined && { modelVersion: version }), ...(o.authToken !== undefined && { authToken: o.authToken }) });
      const progress = host.progressStream();
      const at = (n: number) => (o.cycles > 1 ? `[${n}/${o.cycles}] ` : '');
      try {
        const run = await runFlCycles(job, data, {
          cycles: o.cycles, maxWaitMs: o.wait * 1000,
          ...(o.seed !== undefined && { seed: o.seed }),
          loadOptions: { intraOpNumThreads: 1 },
          ...(progress && {
            onAccepted: (cycle, cfg) => progress.out.write(`accepted into ${cycle.accepted.model}@${cycle.accepted.version}: training ${data.features.dims[0]} rows, ${describeConfig(cfg)}\n`),
            onProgress: (p) => { if (p.kind === 'epoch') progress.out.write(`epoch ${p.epoch}/${p.epochs}  loss ${p.loss.toFixed(4)}  acc ${pct(p.accuracy)}\n`); },
          }),
        });
        const lines = run.reported.map((out, i) => {
          const r = out.result;
          return `${at(i + 1)}reported to ${out.cycle.accepted.model}@${out.cycle.accepted.version}: ${r.numSamples} samples, ${r.steps} updates in ${secs(r.seconds)} s, loss ${r.metrics.loss.toFixed(4)}, accuracy ${pct(r.metrics.accuracy)}`;
        });
        const cycles = run.reported.map((out) => ({
          model: out.cycle.accepted.model, version: out.cycle.accepted.version, worker_id: out.cycle.workerId,
          num_samples: out.result.numSamples, steps: out.result.steps, seconds: out.result.seconds, metrics: out.result.metrics,
        }));
        const last = run.last;
        if (last.status === 'error') {
          const e = last.error;
          // Cycles already reported stay reported (and averaged): the error says how far it got.
          throw run.reported.length === 0 ? e : new GridError(e.code, `${e.message} (after ${run.reported.length} reported cycle${run.reported.length === 1 ? '' : 's'})`, e.details);
        }
        if (last.status === 'rejected') {
          host.setExitCode(EXIT_REJECTED);
          lines.push(`${at(run.reported.length + 1)}rejected by ${name}${version !== undefined ? `@${version}` : ''}: ${last.reason}${last.timeout !== undefined ? `; the cycle ends in ${last.timeout}` : ''}`);
          host.print(lines.join('\n'), { status: 'rejected', reason: last.reason, timeout: last.timeout ?? null, timeout_s: last.timeoutS ?? null, cycles });
          return;
        }
        host.print(lines.join('\n'), { status: 'reported', ...cycles.at(-1), cycles });
      } finally {
        job.dispose();
        worker.dispose();
      }
    });

  fl.command('status [process]').description('the FL processes on the node (or one: name or name@version): their open cycle, workers, reports and checkpoints')
    .option('--version <version>', 'the process version (same as name@version)')
    .action(async (processSpec: string | undefined, o: { version?: string }) => {
      const sel = processSpec === undefined ? undefined : processArg(processSpec, o.version);
      const c = await host.connect(false);
      const all = (await c.socket.request(FlListProcesses, {})).processes;
      const processes = sel === undefined ? all : all.filter((p) => p.name === sel.name && (sel.version === undefined || p.version === sel.version));
      if (sel !== undefined && processes.length === 0) throw gridError('NOT_FOUND', `no FL process ${sel.name}${sel.version !== undefined ? `@${sel.version}` : ''} on this node`);
      host.print(statusTable(processes), { processes });
    });

  fl.command('checkpoint <process>').description('download a checkpoint of an FL process (name or name@version; its owner or an admin): the latest by default')
    .requiredOption('-o, --output <file>', 'where to write it (an .onnx model for processes hosted from ONNX)')
    .option('--number <n|latest>', 'checkpoint number (1 is the hosted model) or alias', 'latest')
    .option('--version <version>', 'the process version (same as name@version)')
    .action(async (processSpec: string, o: { output: string; number: string; version?: string }) => {
      const { name, version } = processArg(processSpec, o.version);
      if (!/^\d+$/.test(o.number) && !/^[A-Za-z][\w.-]*$/.test(o.number)) throw gridError('INVALID_INPUT', `--number ${o.number}: a checkpoint number or an alias such as latest`);
      const c = await host.connect(true);
      const offer = await c.socket.request(FlDownloadCheckpoint, { name, ...(version !== undefined && { version }), checkpoint: /^\d+$/.test(o.number) ? Number(o.number) : o.number });
      const dest = path.resolve(o.output);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      // Chunked, sha256-checked, written to a temp file and renamed into place when whole.
      const sink = await fileSink(dest);
      try {
        await c.socket.download(offer.download, sink);
        await sink.commit();
      } catch (err) {
        await sink.abort();
        throw err;
      }
      host.print(`wrote checkpoint ${offer.number} of ${offer.name}@${offer.version} to ${path.relative(process.cwd(), dest) || dest} (${offer.download.size} bytes, ${offer.format}, sha256 verified)`,
        { name: offer.name, version: offer.version, model_id: offer.model_id, checkpoint: offer.number, format: offer.format, path: dest, size: offer.download.size, sha256: offer.download.sha256 });
    });
}
