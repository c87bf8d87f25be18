// grid fl simulate: try a server_config before real devices join (Flower's simulation is the anchor).
// Hosts an FL process on the node from a model, deals a local dataset out to N simulated workers in
// worker threads (each its own connection and onnxruntime training), runs C cycles with the dropouts and
// slow workers asked for, and prints each checkpoint's accuracy on a held-out part of the data.

import * as fs from 'node:fs';
import type { Command } from 'commander';
import { gridError, toGridError } from '../core/errors';
import { datasetSize, splitDataset } from '../compute/data';
import { mlp } from '../compute/plan';
import { parsePartition, simulateFl, type FlCycleMetrics } from '../federation';
import { readWorkerDataset, type FlCliHost } from './fl';
import { int, jsonArg, num } from './args';

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

/** An .onnx file or `mlp:64,32,10` (built here). Also the notebook's grid.fl.simulate (fl-join-process.ts). */
export function simulationModel(arg: string): Uint8Array {
  if (arg.startsWith('mlp:')) {
    try {
      return mlp(arg.slice(4).split(',').map(int), { seed: 1 });
    } catch (err) {
      throw gridError('INVALID_INPUT', `${arg}: ${toGridError(err).message} (mlp:IN,HIDDEN,…,OUT, e.g. mlp:64,32,10)`);
    }
  }
  if (!fs.existsSync(arg) || fs.statSync(arg).isDirectory()) throw gridError('INVALID_MODEL', `no model file ${arg}; give an .onnx file or mlp:IN,HIDDEN,…,OUT`);
  return fs.readFileSync(arg);
}

const row = (m: FlCycleMetrics) =>
  `cycle ${m.cycle}  accepted ${m.accepted}  rejected ${m.rejected}  reported ${m.reported}  dropped ${m.dropped}  late ${m.late}${m.errors > 0 ? `  errors ${m.errors}` : ''}  averaged ${m.averaged}  accuracy ${pct(m.accuracy)}  loss ${m.loss.toFixed(4)}  ${m.seconds.toFixed(1)} s`;

/** Adds `simulate` to the `grid fl` command that src/cli/fl.ts registers. */
export function registerFlSimulateCommand(program: Command, host: FlCliHost): void {
  const fl = program.commands.find((c) => c.name() === 'fl');
  if (fl === undefined) throw new Error('registerFlSimulateCommand: register the fl commands first');
  fl.command('simulate <model>').description('host an FL process from a model (.onnx or mlp:64,32,10) and run it with N simulated workers (threads, each its own connection) on partitions of a local dataset, with dropouts and slow workers; prints each checkpoint\'s accuracy on a held-out part')
    .requiredOption('-d, --data <file>', 'the dataset: .csv / .csv.gz (label in the last column unless --label-column), or .npy features with --labels')
    .option('--labels <file.npy>', 'class labels [N] for an .npy features file')
    .option('--label-column <n>', 'the label column (negative counts from the end)', int)
    .option('--feature-scale <x>', 'multiply every feature by x (e.g. 0.0625 for 0..16 pixels)', num)
    .option('--test-fraction <f>', 'rows held out to evaluate each checkpoint', num, 0.2)
    .option('-w, --workers <n>', 'simulated workers', int, 10)
    .option('-c, --cycles <n>', 'cycles to run', int, 5)
    .option('--partition <how>', 'iid, label:K (K classes per worker) or dirichlet:α', 'iid')
    .option('--dropout <fraction>', 'fraction of the workers that drop out of each cycle after being accepted', num, 0)
    .option('--dropout-mode <mode>', 'silent (never report), vanish (connection closes after training) or mixed', 'silent')
    .option('--slow <fraction>', 'fraction of the workers that wait --slow-delay before reporting', num, 0)
    .option('--slow-delay <ms>', 'how long a slow worker waits', int, 2000)
    .option('--threads <n>', 'worker threads (default: one per worker, up to 16)', int)
    .option('--server-config <json|file>', 'the node\'s rules (default: max_workers = max_diffs = workers, num_cycles = cycles, cycle_length 60)')
    .option('--client-config <json|file>', 'what workers train with: batch_size, lr, epochs, max_updates, optimizer, loss')
    .option('--name <name>', 'the process name (default sim-<time>)')
    .option('--version <version>', 'the process version', '1.0')
    .option('--target <accuracy>', 'stop once a checkpoint reaches this test accuracy (0..1)', num)
    .option('--seed <n>', 'partition, dropout and shuffling seed', int, 0)
    .action(async (modelArg: string, o: {
      data: string; labels?: string; labelColumn?: number; featureScale?: number; testFraction: number; workers: number; cycles: number; partition: string;
      dropout: number; dropoutMode: string; slow: number; slowDelay: number; threads?: number; serverConfig?: string; clientConfig?: string;
      name?: string; version: string; target?: number; seed: number;
    }) => {
      if (!['silent', 'vanish', 'mixed'].includes(o.dropoutMode)) throw gridError('INVALID_INPUT', `--dropout-mode ${o.dropoutMode}: silent, vanish or mixed`);
      let partition;
      try {
        partition = parsePartition(o.partition);
      } catch (err) {
        throw gridError('INVALID_INPUT', `--partition: ${(err as Error).message}`);
      }
      const model = simulationModel(modelArg);
      const all = await readWorkerDataset(o.data, o);
      const { train, test } = splitDataset(all, o.testFraction, o.seed);
      const c = await host.connect(true);
      const url = c.socket.status.url;
      if (url === undefined) throw gridError('NOT_CONNECTED', 'the CLI\'s connection has no node address');
      const progress = host.progressStream();
      progress?.out.write(`simulating ${o.workers} workers × ${o.cycles} cycles on ${datasetSize(train)} rows (${o.partition}), ${datasetSize(test)} held out\n`);
      const serverConfig = jsonArg('--server-config', o.serverConfig);
      const clientConfig = jsonArg('--client-config', o.clientConfig);
      const r = await simulateFl({
        url, host: c, model, train, test, workers: o.workers, cycles: o.cycles, partition, seed: o.seed, version: o.version,
        ...(o.name !== undefined && { name: o.name }),
        ...(serverConfig !== undefined && { serverConfig }),
        ...(clientConfig !== undefined && { clientConfig }),
        ...(o.threads !== undefined && { threads: o.threads }),
        ...(o.dropout > 0 && { dropout: { fraction: o.dropout, mode: o.dropoutMode as 'silent' | 'vanish' | 'mixed' } }),
        ...(o.slow > 0 && { slow: { fraction: o.slow, delayMs: o.slowDelay } }),
        ...(o.target !== undefined && { stopWhen: (m: FlCycleMetrics) => m.accuracy >= o.target! }),
        ...(progress !== undefined && { onCycle: (m: FlCycleMetrics) => progress.out.write(`${row(m)}\n`) }),
      });
      const last = r.cycles.at(-1);
      const human = [
        ...(progress === undefined ? r.cycles.map(row) : []),
        `${r.name}@${r.version}: test accuracy ${pct(r.initial.accuracy)} → ${last === undefined ? '-' : pct(last.accuracy)} after ${r.cycles.length} cycles (${r.seconds.toFixed(1)} s); checkpoints with: grid fl checkpoint ${r.name}@${r.version} -o FILE`,
      ].join('\n');
      host.print(human, { ...r, cycles: r.cycles.map(({ diffs: _diffs, ...m }) => m) });
    });
}
