// grid.fl.host(…), grid.fl.join(…) and grid.fl.simulate(…) in notebook cells: model-centric FL over the
// extension's shared node connections (the sidebar sees the process, its cycles and workers at once).
// Training, evaluation and simulations run in a worker process (src/extension/fl-join.ts): onnxruntime
// stays out of the extension host. No vscode import.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { ErrorCodes, gridError, toGridError, type GridError } from '../../core/errors';
import type { FlProcessInfo } from '../../core/protocol/fl-messages';
import type { NodeEvent } from '../../core/protocol/messages';
import type { GridCallContext } from '../../kernel';
import { checkpointBytes, hostFlProcess } from '../fl';
import { evaluateCheckpoint, runFlSimulation, runFlWorker, type FlJoinOutcome } from '../fl-join';
import type { FlSimulateJob, FlSimulationSummary } from '../../core/protocol/fl-join-messages';
import { SERVER_CONFIG_PRESETS } from '../fl-presets';
import type { BridgeNode } from './bridge';
import { addPoint, type MetricsPayload } from '../../kernel/metrics';

type Options = Record<string, unknown> & { node?: string };

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** What the FL calls need of the notebook bridge. */
export interface FlBridgeHost {
  /** The node `name` names, else the notebook's current one. */
  node(name: string | undefined): BridgeNode;
  /** A path from a cell, resolved from the notebook's folder. */
  path(p: string): string;
  /** A live metrics output in the calling cell. */
  metrics(context: GridCallContext, payload: MetricsPayload): { payload: MetricsPayload; update(force: boolean): void };
}

/** What grid.fl.host returns: the process, and with `evalData` its held-out accuracy per checkpoint. */
export interface FlHostSummary {
  process: FlProcessInfo;
  evaluations?: { checkpoint: number; cycle: number; loss: number; accuracy: number }[];
}

const usage = (method: string, what: string): GridError => gridError('INVALID_INPUT', `grid.${method} ${what}`);

function options(value: unknown, method: string): Options {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw usage(method, 'takes its options as an object, e.g. { name: "mnist", version: "1.0" }');
  return value as Options;
}

function str(o: Options, key: string, method: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw usage(method, `expects { ${key} } to be a non-empty string`);
  return v;
}

function num(o: Options, key: string, method: string): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw usage(method, `expects { ${key} } to be a number`);
  return v;
}

function obj(o: Options, key: string, method: string): Record<string, unknown> | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw usage(method, `expects { ${key} } to be an object`);
  return v as Record<string, unknown>;
}

/** The held-out / local dataset options of a call: { labels, labelColumn, featureScale }. */
function dataOptions(o: Options, method: string, path: (p: string) => string): { labels?: string; labelColumn?: number; featureScale?: number } {
  const labels = str(o, 'labels', method);
  const labelColumn = num(o, 'labelColumn', method);
  const featureScale = num(o, 'featureScale', method);
  return { ...(labels !== undefined && { labels: path(labels) }), ...(labelColumn !== undefined && { labelColumn }), ...(featureScale !== undefined && { featureScale }) };
}

export class FlNotebookBridge {
  private readonly host: FlBridgeHost;

  constructor(host: FlBridgeHost) {
    this.host = host;
  }

  call(method: 'fl.host' | 'fl.join' | 'fl.simulate', args: unknown[], context: GridCallContext): Promise<unknown> {
    switch (method) {
      case 'fl.host': return this.hostProcess(args[0], options(args[1], 'fl.host'), context);
      case 'fl.join': return this.join(args[0], options(args[1], 'fl.join'), context);
      case 'fl.simulate': return this.simulate(args[0], options(args[1], 'fl.simulate'), context);
    }
  }

  /**
   * grid.fl.host(model, { name, version, serverConfig, clientConfig, averagingPlan, node, evalData, labelColumn, featureScale }):
   * hosts the process; with `evalData` (a held-out CSV/.npy) the cell then follows it, drawing each new
   * checkpoint's accuracy on that set, until the process's last cycle closed or the cell is interrupted.
   */
  private async hostProcess(model: unknown, o: Options, context: GridCallContext): Promise<FlHostSummary> {
    const node = this.host.node(o.node);
    let source: string | Uint8Array;
    let name = str(o, 'name', 'fl.host');
    if (typeof model === 'string') {
      source = this.host.path(model);
      name ??= basename(model, extname(model));
    } else if (model instanceof Uint8Array) {
      source = model;
      if (name === undefined) throw usage('fl.host', 'needs { name } to host model bytes');
    } else {
      throw usage('fl.host', 'expects an .onnx file path or ONNX bytes, then { name, version, serverConfig, clientConfig }');
    }
    const version = str(o, 'version', 'fl.host') ?? '1.0';
    const serverConfig = obj(o, 'serverConfig', 'fl.host') ?? SERVER_CONFIG_PRESETS[0]!.config;
    const clientConfig = obj(o, 'clientConfig', 'fl.host');
    const evalData = str(o, 'evalData', 'fl.host');
    const planFile = str(o, 'averagingPlan', 'fl.host');
    const averagingPlan = planFile === undefined ? undefined : await readFile(this.host.path(planFile)).catch(() => { throw usage('fl.host', `{ averagingPlan }: no file ${planFile}`); });
    const data = dataOptions(o, 'fl.host', (p) => this.host.path(p));
    // Subscribed before hosting: no checkpoint of the new process can slip by.
    const events = evalData === undefined ? undefined : this.follow(node, context.signal);
    let process: FlProcessInfo;
    try {
      process = await hostFlProcess(node.client, source, { name, version, serverConfig, ...(clientConfig !== undefined && { clientConfig }), ...(averagingPlan !== undefined && { averagingPlan }), signal: context.signal });
    } catch (err) {
      events?.stop();
      throw err;
    }
    if (evalData === undefined || events === undefined) return { process };
    const total = typeof process.server_config.num_cycles === 'number' && process.server_config.num_cycles > 0 ? process.server_config.num_cycles : 1;
    const live = this.host.metrics(context, { version: 1, title: `${process.name}@${process.version} on ${node.name}: held-out ${basename(evalData)}`, unit: 'cycle', total, state: 'running', series: [] });
    const evaluations: NonNullable<FlHostSummary['evaluations']> = [];
    const dir = await mkdtemp(join(tmpdir(), 'grid-fl-eval-'));
    const evaluate = async (checkpoint: number, cycle: number) => {
      const file = join(dir, `checkpoint-${checkpoint}.onnx`);
      await writeFile(file, await checkpointBytes(node.client, { name: process.name, version: process.version }, checkpoint, { signal: context.signal }));
      const m = await evaluateCheckpoint({ model: file, data: this.host.path(evalData), ...data }, { signal: context.signal });
      await rm(file, { force: true });
      evaluations.push({ checkpoint, cycle, loss: m.loss, accuracy: m.accuracy });
      addPoint(live.payload, 'held-out', { x: cycle, loss: m.loss, accuracy: m.accuracy });
      live.payload.note = `checkpoint ${checkpoint} (after cycle ${cycle}): accuracy ${(m.accuracy * 100).toFixed(1)}% on ${m.rows} held-out rows`;
      live.update(true);
    };
    try {
      await evaluate(1, 0);
      let seen = 1;
      let latest: FlProcessInfo = process;
      for (;;) {
        for (const k of latest.checkpoints) {
          if (k.number <= seen) continue;
          seen = k.number;
          await evaluate(k.number, k.cycle ?? latest.completed_cycles);
        }
        if (latest.cycle === null) break;
        latest = await events.next(process.model_id);
      }
      live.payload.state = 'succeeded';
      live.update(true);
      return { process: latest, evaluations };
    } catch (err) {
      const e = toGridError(err);
      live.payload.state = e.code === ErrorCodes.ABORTED ? 'cancelled' : 'failed';
      // Interrupted: the process goes on on the node; only the following stops.
      live.payload.note = e.code === ErrorCodes.ABORTED ? `stopped following ${process.name}@${process.version}; it goes on on ${node.name}` : e.message;
      live.update(true);
      throw err;
    } finally {
      events.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The node's fl-process-updated events for one process, one at a time, until stopped. */
  private follow(node: BridgeNode, signal: AbortSignal): { next(processId: number): Promise<FlProcessInfo>; stop(): void } {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const queue: FlProcessInfo[] = [];
    let waiter: { id: number; resolve(p: FlProcessInfo): void; reject(e: unknown): void } | undefined;
    let failure: GridError | undefined;
    const fail = (e: GridError) => {
      failure ??= e;
      waiter?.reject(failure);
      waiter = undefined;
    };
    node.client.subscribe(['fl'], { signal: controller.signal }).subscribe({
      next: (ev: NodeEvent) => {
        if (ev.event !== 'fl-process-updated') return;
        if (waiter && ev.process.model_id === waiter.id) { const w = waiter; waiter = undefined; w.resolve(ev.process); return; }
        queue.push(ev.process);
        // Other processes' changes are never asked for: keep the queue bounded.
        if (queue.length > 1000) queue.shift();
      },
      error: (err) => fail(toGridError(err)),
    });
    signal.addEventListener('abort', () => fail(gridError('ABORTED', 'the cell was interrupted')), { once: true });
    return {
      next: (id) => {
        const i = queue.findIndex((p) => p.model_id === id);
        if (i >= 0) return Promise.resolve(queue.splice(0, i + 1).at(-1)!);
        if (failure) return Promise.reject(failure);
        return new Promise((resolve, reject) => { waiter = { id, resolve, reject }; });
      },
      stop: () => {
        signal.removeEventListener('abort', onAbort);
        controller.abort();
      },
    };
  }

  /**
   * grid.fl.simulate(model, { data, workers, cycles, partition, dropout, dropoutMode, slow, slowDelay,
   * testFraction, serverConfig, clientConfig, name, version, seed, threads, target, labels, labelColumn,
   * featureScale, node }): `grid fl simulate` from a cell. N workers in threads of a worker process train
   * partitions of `data` against the node; the process is hosted here over the notebook's signed-in
   * connection (so it is the user's, and the sidebar shows it). Each cycle's checkpoint accuracy on the
   * held-out part is drawn live; resolves with the simulation's summary (every cycle's counts and metrics).
   */
  private async simulate(model: unknown, o: Options, context: GridCallContext): Promise<FlSimulationSummary> {
    const m = 'fl.simulate';
    let source: string;
    let dir: string | undefined;
    if (typeof model === 'string' && model.startsWith('mlp:')) source = model;
    else if (typeof model === 'string') source = this.host.path(model);
    else if (model instanceof Uint8Array) {
      dir = await mkdtemp(join(tmpdir(), 'grid-fl-sim-'));
      source = join(dir, 'model.onnx');
      await writeFile(source, model);
    } else throw usage(m, 'expects an .onnx file path, ONNX bytes or "mlp:IN,HIDDEN,…,OUT", then { data, workers, cycles }');
    try {
      const data = str(o, 'data', m);
      if (data === undefined) throw usage(m, 'needs { data }: a local .csv or .npy file dealt out to the simulated workers (a part held out for accuracy)');
      const whole = (key: string, fallback: number) => {
        const v = num(o, key, m) ?? fallback;
        if (!Number.isInteger(v) || v < 1) throw usage(m, `expects { ${key} } to be a whole number ≥ 1`);
        return v;
      };
      const fraction = (key: string) => {
        const v = num(o, key, m);
        if (v !== undefined && !(v >= 0 && v <= 1)) throw usage(m, `expects { ${key} } to be a fraction from 0 to 1`);
        return v;
      };
      const workers = whole('workers', 10);
      const cycles = whole('cycles', 5);
      const dropout = fraction('dropout');
      const slow = fraction('slow');
      const testFraction = fraction('testFraction');
      const target = fraction('target');
      const dropoutMode = str(o, 'dropoutMode', m);
      if (dropoutMode !== undefined && !['silent', 'vanish', 'mixed'].includes(dropoutMode)) throw usage(m, 'expects { dropoutMode } to be "silent", "vanish" or "mixed"');
      const threads = o.threads === undefined ? undefined : whole('threads', 1);
      const seed = num(o, 'seed', m);
      const slowDelay = num(o, 'slowDelay', m);
      const partition = str(o, 'partition', m);
      const name = str(o, 'name', m) ?? `sim-${Date.now().toString(36)}`;
      const version = str(o, 'version', m);
      const serverConfig = obj(o, 'serverConfig', m);
      const clientConfig = obj(o, 'clientConfig', m);
      const node = this.host.node(o.node);
      const job: Omit<FlSimulateJob, 'mode'> = {
        url: node.url, model: source, data: this.host.path(data), ...dataOptions(o, m, (p) => this.host.path(p)),
        workers, cycles, name,
        ...(version !== undefined && { version }), ...(partition !== undefined && { partition }), ...(testFraction !== undefined && { testFraction }),
        ...(dropout !== undefined && dropout > 0 && { dropout: { fraction: dropout, ...(dropoutMode !== undefined && { mode: dropoutMode as 'silent' | 'vanish' | 'mixed' }) } }),
        ...(slow !== undefined && slow > 0 && { slow: { fraction: slow, delayMs: slowDelay ?? 2000 } }),
        ...(serverConfig !== undefined && { serverConfig }), ...(clientConfig !== undefined && { clientConfig }),
        ...(seed !== undefined && { seed }), ...(threads !== undefined && { threads }), ...(target !== undefined && { target }),
      };
      const live = this.host.metrics(context, { version: 1, title: `simulation ${name}: ${workers} workers × ${cycles} cycles on ${node.name}`, unit: 'cycle', total: cycles, state: 'running', series: [] });
      live.payload.note = `starting ${workers} workers…`;
      live.update(true);
      let testRows = 0;
      // Said at once: the cell ends on the interrupt, before the worker process has stopped its threads.
      const onAbort = () => {
        live.payload.state = 'cancelled';
        live.payload.note = `the simulation was cancelled; ${name} stays on ${node.name} with the checkpoints it has`;
        live.update(true);
      };
      context.signal.addEventListener('abort', onAbort, { once: true });
      try {
        const result = await runFlSimulation(job, {
          signal: context.signal,
          // Over the notebook's connection: the process is the signed-in user's, as with grid.fl.host.
          hostProcess: async (file, client, server) => {
            const p = await hostFlProcess(node.client, file, { name: String(client.name), version: String(client.version), serverConfig: server, clientConfig: client, signal: context.signal });
            return { model_id: p.model_id, name: p.name, version: p.version };
          },
          onHosted: (h) => {
            testRows = h.testRows;
            addPoint(live.payload, 'held-out', { x: 0, ...h.initial });
            live.payload.note = `hosted ${h.name}@${h.version}: ${h.partitionSizes.length} workers hold ${h.partitionSizes.reduce((a, b) => a + b, 0)} rows; ${h.testRows} held out (accuracy ${pct(h.initial.accuracy)})`;
            live.update(true);
          },
          onCycle: (c) => {
            addPoint(live.payload, 'held-out', { x: c.cycle, loss: c.loss, accuracy: c.accuracy });
            live.payload.note = `cycle ${c.cycle}/${cycles}: accuracy ${pct(c.accuracy)} on ${testRows} held-out rows · ${c.reported} reported, ${c.averaged} averaged${c.dropped > 0 ? `, ${c.dropped} dropped` : ''}${c.late > 0 ? `, ${c.late} late` : ''}${c.rejected > 0 ? `, ${c.rejected} rejected` : ''}${c.errors > 0 ? `, ${c.errors} errors (${c.errorMessages[0]})` : ''} · ${c.seconds.toFixed(1)} s`;
            live.update(true);
          },
        });
        const last = result.cycles.at(-1);
        live.payload.state = 'succeeded';
        live.payload.note = `${result.name}@${result.version}: held-out accuracy ${pct(result.initial.accuracy)} → ${last === undefined ? '-' : pct(last.accuracy)} after ${result.cycles.length} cycles (${result.seconds.toFixed(1)} s)`;
        live.update(true);
        return result;
      } catch (err) {
        const e = toGridError(err);
        if (e.code !== ErrorCodes.ABORTED) {
          live.payload.state = 'failed';
          live.payload.note = e.message;
          live.update(true);
        }
        throw err;
      } finally {
        context.signal.removeEventListener('abort', onAbort);
      }
    } finally {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * grid.fl.join("name@version", { data, labels, labelColumn, featureScale, authToken, seed, node }): one
   * cycle as a worker on local data (its rows stay here; only the diff goes to the node), with the training
   * drawn live. Resolves { kind: "reported", … } or { kind: "rejected", reason } — a refusal is the node's
   * answer, not an error.
   */
  private async join(spec: unknown, o: Options, context: GridCallContext): Promise<FlJoinOutcome> {
    if (typeof spec !== 'string' || spec.length === 0) throw usage('fl.join', 'expects a process "name" or "name@version", then { data }');
    const dataFile = str(o, 'data', 'fl.join');
    if (dataFile === undefined) throw usage('fl.join', 'needs { data }: a local .csv or .npy file to train on');
    const node = this.host.node(o.node);
    const at = spec.lastIndexOf('@');
    const name = at > 0 ? spec.slice(0, at) : spec;
    const version = at > 0 ? spec.slice(at + 1) : undefined;
    const authToken = str(o, 'authToken', 'fl.join');
    const seed = num(o, 'seed', 'fl.join');
    const live = this.host.metrics(context, { version: 1, title: `worker for ${spec} on ${node.name}`, unit: 'epoch', total: 1, state: 'running', series: [] });
    // Said at once: the cell ends on the interrupt, before the worker process has wound down.
    const onAbort = () => {
      live.payload.state = 'cancelled';
      live.payload.note = `joining ${name} was cancelled; the worker reported nothing`;
      live.update(true);
    };
    context.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const out = await runFlWorker({
        url: node.url, name, ...(version !== undefined && { version }), data: this.host.path(dataFile), ...dataOptions(o, 'fl.join', (p) => this.host.path(p)),
        ...(authToken !== undefined && { authToken }), ...(seed !== undefined && { seed }),
      }, {
        signal: context.signal,
        onProgress: (m) => {
          if (m.kind === 'accepted') {
            live.payload.total = m.epochs;
            live.payload.note = `accepted as worker ${m.workerId.slice(0, 8)}: training ${m.rows} local rows`;
            live.update(true);
            return;
          }
          addPoint(live.payload, 'train', { x: m.epoch - 1 + m.batch / m.batches, loss: m.loss, accuracy: m.accuracy });
          live.update(m.batch === m.batches);
        },
      });
      live.payload.state = out.kind === 'reported' ? 'succeeded' : 'failed';
      live.payload.note = out.kind === 'reported'
        ? `reported ${out.numSamples} samples, ${out.steps} updates in ${out.seconds.toFixed(1)} s`
        : `${node.name} did not take this worker: ${out.reason}${out.timeout ? ` (the cycle ends in ${out.timeout})` : ''}`;
      live.update(true);
      return out;
    } catch (err) {
      const e = toGridError(err);
      if (e.code !== ErrorCodes.ABORTED) {
        live.payload.state = 'failed';
        live.payload.note = e.message;
        live.update(true);
      }
      throw err;
    } finally {
      context.signal.removeEventListener('abort', onAbort);
    }
  }
}
