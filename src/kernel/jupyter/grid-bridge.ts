// The `grid` API's node side when no VS Code owns the connections (Jupyter, nbconvert, papermill):
// the kernel process connects to nodes itself, the way the `grid` CLI does. The local node is found
// through its runtime record (core/local-node) and signed in with its token; a remote node takes
// { username, password } from the call or GRID_USER / GRID_PASSWORD from the environment.
// Everything but grid.fedavg (src/federation, which the kernel layer may not import).

import { basename, extname, isAbsolute, resolve } from 'node:path';
import { GridClient, type Credentials } from '../../core/client';
import { gridError, GridError } from '../../core/errors';
import { findLocalNode, sameUrl } from '../../core/local-node';
import type { DatasetInfo, ModelInfo } from '../../core/protocol/messages';
import { refOf } from '../../core/protocol/model-ref';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import { TRAINING_DEFAULTS, type JobInfo, type TrainRequest } from '../../core/protocol/training-messages';
import { bindInputValues } from '../../compute/tensor-io';
import type { GridBridge, GridBridgeMethod, GridCallContext } from '../bridge';
import { METRICS_MIME } from './outputs';

interface Connected {
  name: string;
  url: string;
  local: boolean;
  user: string | undefined;
  client: GridClient;
}

type Options = { node?: string } & Record<string, unknown>;

export interface StandaloneBridgeOptions {
  /** The notebook's folder: relative model paths resolve from here. */
  cwd: string;
  env?: NodeJS.ProcessEnv;
}

export class StandaloneGridBridge implements GridBridge {
  private readonly cwd: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly nodes: Connected[] = [];
  private current: Connected | undefined;

  constructor(options: StandaloneBridgeOptions) {
    this.cwd = options.cwd;
    this.env = options.env ?? process.env;
  }

  async call(method: GridBridgeMethod, args: unknown[], context: GridCallContext): Promise<unknown> {
    switch (method) {
      case 'connect': return this.connect(args[0], options(args[1], 'connect'));
      case 'disconnect': return this.disconnect(typeof args[0] === 'string' ? args[0] : options(args[0], 'disconnect').node);
      case 'nodes': return this.nodes.map(summary);
      case 'models': return this.node(typeof args[0] === 'string' ? args[0] : options(args[0], 'models').node).client.listModels(options(args[0] ?? {}, 'models').allVersions === true ? { allVersions: true } : {});
      case 'datasets': return this.node(typeof args[0] === 'string' ? args[0] : options(args[0], 'datasets').node).client.listDatasets();
      case 'serve': return this.serve(args[0], options(args[1], 'serve'), context);
      case 'download': return this.download(args[0], args[1], args[2], context);
      case 'deleteModel': {
        const o = options(args[1], 'deleteModel');
        if (typeof args[0] !== 'string') throw usage('deleteModel', 'expects a model id');
        return this.node(o.node).client.deleteModel(args[0], o.allVersions === true ? { allVersions: true } : {});
      }
      case 'infer': return this.infer(args[0], args[1], options(args[2], 'infer'), context);
      case 'train': return this.train(args[0], args[1], options(args[2], 'train'), context);
      case 'fedavg':
        // FedAvg lives in src/federation, which the kernel layer may not import.
        throw gridError('UNKNOWN_TYPE', 'grid.fedavg runs in the VS Code notebook; from Jupyter use the CLI: `grid fedavg <model> <tag>`');
      case 'serveEncrypted':
        throw gridError('UNKNOWN_TYPE', 'grid.serveEncrypted runs in the VS Code notebook; from Jupyter use the CLI: `grid serve-encrypted MODEL.onnx --id ID --nodes URL1,URL2 --crypto-provider URL3`');
    }
  }

  dispose(): void {
    for (const n of this.nodes.splice(0)) n.client.dispose();
    this.current = undefined;
  }

  private async connect(target: unknown, o: Options): Promise<ReturnType<typeof summary>> {
    if (target !== undefined && typeof target !== 'string') throw usage('connect', 'expects a node name or ws:// URL (or nothing for the local node)');
    const local = findLocalNode(undefined);
    const wantsLocal = target === undefined || target === 'local';
    if (wantsLocal && !local) throw gridError('NOT_CONNECTED', 'no local node runs for this user: start one with `grid-node --local` (or "Grid: Start Local Node" in VS Code), or connect to a node by URL');
    const url = wantsLocal ? local!.url : target;
    const existing = this.nodes.find((n) => sameUrl(n.url, url) || n.name === url);
    if (existing) {
      this.current = existing;
      return summary(existing);
    }
    let credentials: Credentials | undefined;
    if (o.username !== undefined || o.password !== undefined) {
      if (typeof o.username !== 'string' || typeof o.password !== 'string') throw usage('connect', 'needs both { username, password } as strings to sign in');
      credentials = { username: o.username, password: o.password };
    } else if (this.env.GRID_USER !== undefined && this.env.GRID_PASSWORD !== undefined) {
      credentials = { username: this.env.GRID_USER, password: this.env.GRID_PASSWORD };
    } else if (local && sameUrl(local.url, url)) {
      credentials = { token: local.token };
    }
    const client = await GridClient.connect(url, { reconnect: { maxAttempts: 3, initialDelayMs: 200 }, ...(credentials && { credentials }) });
    const isLocal = local !== undefined && sameUrl(local.url, url);
    const node: Connected = {
      name: isLocal ? 'Local node' : url, url, local: isLocal, client,
      user: credentials === undefined ? undefined : 'token' in credentials ? local?.user : credentials.username,
    };
    this.nodes.push(node);
    this.current = node;
    return summary(node);
  }

  private disconnect(name: string | undefined): void {
    const node = this.node(name);
    node.client.dispose();
    this.nodes.splice(this.nodes.indexOf(node), 1);
    if (this.current === node) this.current = undefined;
  }

  private node(name: string | undefined): Connected {
    if (name !== undefined) {
      const found = this.nodes.find((n) => n.name === name || sameUrl(n.url, name));
      if (!found) throw gridError('NOT_FOUND', `no connected node named or at "${name}"; connect first: await grid.connect("${name}")`);
      return found;
    }
    const node = this.current ?? this.nodes[0];
    if (!node) throw gridError('NOT_CONNECTED', 'no node is connected: await grid.connect() connects to the local node, grid.connect("ws://host:port") to another');
    return node;
  }

  private async serve(model: unknown, o: Options, context: GridCallContext): Promise<ModelInfo> {
    const node = this.node(o.node);
    let id = typeof o.id === 'string' && o.id !== '' ? o.id : undefined;
    let source: string | Uint8Array;
    if (typeof model === 'string') {
      source = this.path(model);
      id ??= basename(model, extname(model));
    } else if (model instanceof Uint8Array) {
      source = model;
      if (id === undefined) throw usage('serve', 'needs { id } to serve model bytes');
    } else {
      throw usage('serve', 'expects an .onnx file path or ONNX bytes, then { id, allowDownload, allowRemoteInference }');
    }
    return node.client.hostModel(source, {
      id,
      ...(o.newVersion === true && { newVersion: true }),
      allowDownload: o.allowDownload === true,
      allowRemoteInference: o.allowRemoteInference === true,
      signal: context.signal,
    });
  }

  private async download(id: unknown, dest: unknown, opts: unknown, context: GridCallContext): Promise<Uint8Array | { path: string; model: ModelInfo }> {
    if (typeof id !== 'string') throw usage('download', 'expects a model id, then an optional destination path');
    const o = options(typeof dest === 'object' && dest !== null ? dest : opts, 'download');
    const client = this.node(o.node).client;
    if (typeof dest === 'string') {
      const path = this.path(dest);
      return { path, model: await client.downloadModel(id, path, { signal: context.signal }) };
    }
    return (await client.downloadModelBytes(id, { signal: context.signal })).bytes;
  }

  private async infer(id: unknown, input: unknown, o: Options, context: GridCallContext): Promise<Tensor | NamedTensors> {
    if (typeof id !== 'string') throw usage('infer', 'expects a model id, then its input');
    const client = this.node(o.node).client;
    const model = await client.modelInfo(id);
    const outputs = await client.runInference(refOf(model), bindInputValues(model, input, 'grid.infer'), { signal: context.signal });
    const names = Object.keys(outputs);
    return names.length === 1 ? outputs[names[0]!]! : outputs;
  }

  /**
   * `grid.train(modelId, dataset, { epochs, lr, ... })`: a job on the node hosting the model, its
   * loss and accuracy shown as one live metrics display; interrupting the cell cancels the job.
   * The same options and payload as the VS Code notebook's bridge.
   */
  private async train(modelId: unknown, datasetRef: unknown, o: Options, context: GridCallContext): Promise<Record<string, unknown>> {
    if (typeof modelId !== 'string' || typeof datasetRef !== 'string') throw usage('train', 'expects a hosted model id and a dataset id or name, then { epochs, lr, ... }');
    const node = this.node(o.node);
    const client = node.client;
    const datasets = await client.listDatasets();
    const dataset = datasets.find((d) => d.id === datasetRef || d.name === datasetRef);
    if (!dataset) throw gridError('NOT_FOUND', `${node.name} has no dataset "${datasetRef}"; it has ${datasets.map((d) => `"${d.name}"`).join(', ') || 'none'}`);
    const epochs = o.epochs ?? TRAINING_DEFAULTS.epochs;
    if (typeof epochs !== 'number' || !Number.isInteger(epochs) || epochs < 1) throw usage('train', `expects { epochs } to be a whole number from 1, got ${String(epochs)}`);
    const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
    const request = {
      model: modelId, dataset_id: dataset.id, epochs,
      loss: (o.loss as TrainRequest['loss'] | undefined) ?? lossFor(dataset),
      optimizer: (o.optimizer as TrainRequest['optimizer'] | undefined) ?? TRAINING_DEFAULTS.optimizer,
      lr: num(o.lr) ?? TRAINING_DEFAULTS.lr,
      batch_size: num(o.batchSize) ?? TRAINING_DEFAULTS.batchSize,
      test_split: num(o.testSplit) ?? TRAINING_DEFAULTS.testSplit,
      progress_every: num(o.progressEvery) ?? 5,
      ...(num(o.validationSplit) !== undefined && { validation_split: num(o.validationSplit) }),
      ...(num(o.featureScale) !== undefined && { feature_scale: num(o.featureScale) }),
      ...(typeof o.label === 'string' && { label: o.label }),
      ...(num(o.seed) !== undefined && { seed: num(o.seed) }),
      ...(typeof o.outputId === 'string' && { output_model_id: o.outputId }),
      ...(typeof o.allowDownload === 'boolean' && { allow_download: o.allowDownload }),
      ...(typeof o.allowRemoteInference === 'boolean' && { allow_remote_inference: o.allowRemoteInference }),
    };
    const live = new LiveMetrics(context, `Training ${modelId} on ${node.name}/${dataset.name}`, epochs);
    let job: JobInfo = await client.training.start(request, { signal: context.signal });
    const cancel = () => void client.training.cancelJob(job.id).catch(() => undefined);
    context.signal.addEventListener('abort', cancel, { once: true });
    if (context.signal.aborted) cancel();
    try {
      job = await client.training.wait(job.id, {
        signal: context.signal,
        onEvent: (ev) => {
          if (ev.kind !== 'batch' && ev.kind !== 'epoch') return;
          live.add('train', { x: ev.epoch - 1 + ev.batch / Math.max(1, ev.batches), loss: ev.loss, accuracy: ev.accuracy });
          if (ev.kind === 'epoch' && ev.validation) live.add('validation', { x: ev.epoch, ...ev.validation });
          live.note = `${Math.round(ev.samples_per_second)} samples/s · about ${Math.ceil(ev.eta_seconds)} s left`;
          live.show(ev.kind === 'epoch');
        },
      });
    } catch (err) {
      live.end(context.signal.aborted ? 'cancelled' : 'failed', (err as Error).message);
      throw err;
    } finally {
      context.signal.removeEventListener('abort', cancel);
    }
    const r = job.result;
    if (r?.test) live.add('test', { x: epochs, ...r.test });
    live.end('succeeded', `${r?.samples ?? 0} rows per epoch in ${(r?.seconds ?? 0).toFixed(1)} s${r?.model ? ` · stored as ${refOf(r.model)}` : ''}`);
    return { job: job.id, state: job.state, model: r?.model && refOf(r.model), metrics: r?.metrics, validation: r?.validation, test: r?.test, seconds: r?.seconds };
  }

  private path(p: string): string {
    return isAbsolute(p) ? p : resolve(this.cwd, p);
  }
}

interface MetricsPoint { x: number; loss: number; accuracy: number }

/** Points kept per series (as the notebook renderer's payload): older ones are thinned. */
const MAX_POINTS = 600;

/** One `application/vnd.grid.metrics+json` display updated in place, at most every 100 ms. */
class LiveMetrics {
  private readonly displayId: string;
  private readonly series: { name: string; points: MetricsPoint[] }[] = [];
  private state = 'running';
  private shown = false;
  private last = 0;
  note = '';

  constructor(private readonly context: GridCallContext, private readonly title: string, private readonly total: number) {
    this.displayId = `grid-metrics-${context.executionCount}-${Math.random().toString(36).slice(2, 8)}`;
    this.show(true);
  }

  add(name: string, point: MetricsPoint): void {
    let s = this.series.find((x) => x.name === name);
    if (!s) this.series.push(s = { name, points: [] });
    s.points.push(point);
    if (s.points.length > MAX_POINTS) s.points = s.points.filter((_, i, all) => i % 2 === 1 || i === all.length - 1);
  }

  end(state: string, note: string): void {
    this.state = state;
    this.note = note;
    this.show(true);
  }

  show(force: boolean): void {
    if (!force && Date.now() - this.last < 100) return;
    const payload = { version: 1, title: this.title, unit: 'epoch', total: this.total, state: this.state, series: this.series, ...(this.note && { note: this.note }) };
    const text = [`${this.title} (${this.state})`, ...this.series.flatMap((s) => {
      const p = s.points.at(-1);
      return p ? [`  ${s.name}: epoch ${Number.isInteger(p.x) ? p.x : p.x.toFixed(2)}/${this.total} · loss ${p.loss.toFixed(4)} · accuracy ${(p.accuracy * 100).toFixed(1)}%`] : [];
    }), ...(this.note ? [`  ${this.note}`] : [])].join('\n');
    this.context.output({ kind: 'display', displayId: this.displayId, update: this.shown, data: { [METRICS_MIME]: JSON.stringify(payload), 'text/plain': text } });
    this.shown = true;
    this.last = Date.now();
  }
}

function lossFor(d: DatasetInfo): TrainRequest['loss'] {
  return d.schema.classes !== undefined || d.tags.includes('classification') ? 'cross_entropy' : 'mse';
}

function summary(n: Connected) {
  return { name: n.name, url: n.url, state: 'connected', local: n.local, ...(n.user !== undefined && { user: n.user }) };
}

function usage(method: string, what: string): GridError {
  return gridError('INVALID_INPUT', `grid.${method} ${what}`);
}

function options(value: unknown, method: string): Options {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw usage(method, 'takes its options as an object, e.g. { node: "ws://127.0.0.1:5000" }');
  const o = value as Options;
  if (o.node !== undefined && typeof o.node !== 'string') throw usage(method, 'expects { node } to be a node name or URL');
  return o;
}
