// The notebook's GridBridge: `grid.*` calls from cells, answered over the extension's shared node
// connections (the same GridClient the sidebar uses, so a served model shows up there at once and
// credentials never enter the kernel process). No vscode import: the extension hands it its nodes
// through `BridgeNodes`, and the benchmark runs it in plain Node over a real GridSocket.
import { basename, extname, isAbsolute, resolve } from 'node:path';
import type { GridClient } from '../../core/client';
import { ErrorCodes, gridError, toGridError } from '../../core/errors';
import type { DatasetInfo, ModelInfo } from '../../core/protocol/messages';
import { refOf } from '../../core/protocol/model-ref';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import { TRAINING_DEFAULTS, type JobInfo, type TrainRequest } from '../../core/protocol/training-messages';
import { lossFor, trainRequest } from '../../core/training-request';
import type { GridBridge, GridBridgeMethod, GridCallContext } from '../../kernel';
import { bindInputValues } from '../../compute/tensor-io';
import { participantsByTag } from '../../federation/participants';
import { runFedAvg } from '../../federation/run';
import { FedAvgReport, fedAvgWarning, type FedAvgSummary } from '../fedavg-report';
import { inVsCodeWords } from '../wording';
import { followTrainingLive, liveMetrics, showRound } from '../../kernel/live-metrics';
import { permissionFlags, positiveInt, usage } from '../../kernel/bridge-args';
import { FlNotebookBridge } from './fl-bridge';
import { deleteIfEncrypted, inferIfEncrypted, serveEncryptedCall, type SmpcBridgeHost } from '../../kernel/smpc-bridge';

export interface UserCredentials {
  username: string;
  password: string;
}

/** One node as the bridge needs it; the extension's NodeConnection is one. */
export interface BridgeNode {
  readonly name: string;
  readonly url: string;
  readonly local: boolean;
  readonly state: string;
  readonly isOpen: boolean;
  readonly user: string | undefined;
  /** The shared client; throws GRID_ERR_NOT_CONNECTED when the node is not connected. */
  readonly client: GridClient;
  /** The node's datasets as last listed (refreshed by its event stream). */
  readonly datasets: DatasetInfo[];
  /** The node's models as last listed (kept current by its event stream): infer skips a lookup. */
  readonly models: ModelInfo[];
  /** Tells the sidebar about a training job's latest state. */
  updateJob?(job: JobInfo): void;
  /** Tells the sidebar why the node sat out a FedAvg run (undefined: it takes part again). */
  noteDropped?(note: { what: string; error: { code: string; message: string } } | undefined): void;
}

export interface BridgeNodes {
  /** The nodes the user sees, the local node first. */
  list(): BridgeNode[];
  /** Finds a node by name or URL, also under another name it is listed as (same node id); list() otherwise. */
  find?(nameOrUrl: string): BridgeNode | undefined;
  /**
   * Connects to `target` (a name or ws:// URL of a node; undefined or "local" starts the local node)
   * and resolves once it is usable. Credentials, when given, are kept like the Authenticate command's.
   */
  connect(target: string | undefined, credentials: UserCredentials | undefined): Promise<BridgeNode>;
  disconnect(node: BridgeNode): void;
}

export interface NotebookBridgeOptions {
  nodes: BridgeNodes;
  /** The notebook's folder: relative paths in `grid.serve/download` resolve from here. */
  cwd: string;
  /** Least time between two updates of a live metrics output (ms). Default 100. */
  metricsIntervalMs?: number;
  /**
   * How long `grid.infer` waits for its result (ms) when the cell does not say: the extension's
   * `grid.requestTimeoutMs` setting, read at each call so a change applies to the next one.
   */
  inferTimeoutMs?: () => number;
}

/** `{ node?: "name or url" }` as the last argument picks the node; the notebook's current one otherwise. */
interface NodeOption {
  node?: string;
}

type Options = NodeOption & Record<string, unknown>;

export class NotebookGridBridge implements GridBridge {
  private readonly nodes: BridgeNodes;
  private readonly cwd: string;
  private readonly metricsIntervalMs: number;
  private readonly inferTimeoutMs: (() => number) | undefined;
  /** The node `grid.connect` last returned: the default for calls that name none. */
  private current: BridgeNode | undefined;

  constructor(options: NotebookBridgeOptions) {
    this.nodes = options.nodes;
    this.cwd = options.cwd;
    this.metricsIntervalMs = options.metricsIntervalMs ?? 100;
    this.inferTimeoutMs = options.inferTimeoutMs;
  }

  call(method: GridBridgeMethod, args: unknown[], context: GridCallContext): Promise<unknown> {
    // A node's message names the CLI's sign-in flags; in VS Code the way is Grid: Authenticate.
    return this.dispatch(method, args, context).catch((err: unknown) => { throw inVsCodeWords(err, this.lastNode?.name); });
  }

  /** grid.fl.* (fl-bridge.ts). */
  private readonly fl = new FlNotebookBridge({ node: (name) => this.node(name), path: (p) => this.path(p), metrics: (context, payload) => liveMetrics(context, payload, this.metricsIntervalMs) });

  /** The node the latest call resolved to (its name words a sign-in hint). */
  private lastNode: BridgeNode | undefined;

  private dispatch(method: GridBridgeMethod, args: unknown[], context: GridCallContext): Promise<unknown> {
    switch (method) {
      case 'connect': return this.connect(args[0], args[1]);
      case 'disconnect': return this.disconnect(args[0]);
      case 'nodes': return Promise.resolve(this.nodes.list().map(summary));
      case 'models': return this.models(typeof args[0] === 'string' ? { node: args[0] } : options(args[0], 'models'));
      case 'datasets': return this.node(nodeArg(args[0])).client.listDatasets();
      case 'serve': return this.serve(args[0], options(args[1], 'serve'), context);
      case 'download': return this.download(args[0], args[1], args[2], context);
      case 'deleteModel': return this.deleteModel(args[0], options(args[1], 'deleteModel'));
      case 'infer': return this.infer(args[0], args[1], options(args[2], 'infer'), context);
      case 'train': return this.train(args[0], args[1], options(args[2], 'train'), context);
      case 'fedavg': return this.fedavg(args[0], args[1], options(args[2], 'fedavg'), context);
      case 'fl.host': case 'fl.join': case 'fl.simulate': return this.fl.call(method, args, context);
      case 'serveEncrypted': return serveEncryptedCall(this.smpcHost, args[0], options(args[1], 'serveEncrypted'));
    }
  }

  private readonly smpcHost: SmpcBridgeHost = { node: (n) => this.node(n), list: () => this.nodes.list(), path: (p) => this.path(p) };

  // ---- nodes ------------------------------------------------------------------------------------

  private async connect(target: unknown, opts: unknown): Promise<ReturnType<typeof summary>> {
    if (target !== undefined && typeof target !== 'string') throw usage('connect', 'expects a node name or ws:// URL (or nothing for the local node)');
    const o = options(opts, 'connect');
    let credentials: UserCredentials | undefined;
    if (o.username !== undefined || o.password !== undefined) {
      if (typeof o.username !== 'string' || typeof o.password !== 'string') throw usage('connect', 'needs both { username, password } as strings to sign in');
      credentials = { username: o.username, password: o.password };
    }
    const node = await this.nodes.connect(target, credentials);
    this.current = node;
    return summary(node);
  }

  private async disconnect(target: unknown): Promise<void> {
    const node = this.node(nodeArg(target));
    this.nodes.disconnect(node);
    if (this.current === node) this.current = undefined;
  }

  /** The node named by `name`, else the notebook's current one, else the first connected one. */
  private node(name: string | undefined): BridgeNode {
    const found = this.findNode(name);
    this.lastNode = found;
    return found;
  }

  private findNode(name: string | undefined): BridgeNode {
    const all = this.nodes.list();
    if (name !== undefined) {
      const found = this.nodes.find?.(name) ?? all.find((n) => n.name === name || n.url === name);
      if (!found) throw gridError('NOT_FOUND', `no node named or at "${name}"; the nodes are ${all.map((n) => `"${n.name}"`).join(', ') || 'none yet: await grid.connect() starts the local node'}`);
      return found;
    }
    if (this.current && all.includes(this.current) && this.current.isOpen) return this.current;
    const open = all.find((n) => n.isOpen);
    if (!open) throw gridError('NOT_CONNECTED', 'no node is connected: await grid.connect() starts the local node, grid.connect("ws://host:port") connects to one');
    return open;
  }

  // ---- models -----------------------------------------------------------------------------------

  private async serve(model: unknown, o: Options, context: GridCallContext): Promise<ModelInfo> {
    const node = this.node(o.node);
    let source: string | Uint8Array;
    let id = optionalString(o.id, 'serve', 'id');
    if (typeof model === 'string') {
      source = this.path(model);
      id ??= basename(model, extname(model));
    } else if (model instanceof Uint8Array) {
      source = model;
      if (id === undefined) throw usage('serve', 'needs { id } to serve model bytes');
    } else {
      throw usage('serve', 'expects an .onnx file path or ONNX bytes, then { id, allowDownload, allowRemoteInference }');
    }
    const progress = this.progress(context, `serve-${id}`, `Uploading ${id} to ${node.name}`);
    try {
      return await node.client.hostModel(source, {
        id,
        ...(typeof o.name === 'string' && { name: o.name }),
        ...(typeof o.version === 'string' && { version: o.version }),
        ...(o.newVersion === true && { newVersion: true }),
        allowDownload: o.allowDownload === true,
        allowRemoteInference: o.allowRemoteInference === true,
        onProgress: progress,
        signal: context.signal,
      });
    } finally {
      progress.done();
    }
  }

  private async download(id: unknown, dest: unknown, opts: unknown, context: GridCallContext): Promise<Uint8Array | { path: string; model: ModelInfo }> {
    if (typeof id !== 'string') throw usage('download', 'expects a model id, then an optional destination path');
    // grid.download(id, { node }) as well as grid.download(id, "file.onnx", { node })
    const o = options(typeof dest === 'object' && dest !== null ? dest : opts, 'download');
    const node = this.node(o.node);
    const progress = this.progress(context, `download-${id}`, `Downloading ${id} from ${node.name}`);
    try {
      if (typeof dest === 'string') {
        const path = this.path(dest);
        const model = await node.client.downloadModel(id, path, { onProgress: progress, signal: context.signal });
        return { path, model };
      }
      return (await node.client.downloadModelBytes(id, { onProgress: progress, signal: context.signal })).bytes;
    } finally {
      progress.done();
    }
  }

  /** `grid.models({ allVersions? })`: each model at its latest version, or every version. */
  private models(o: Options): Promise<ModelInfo[]> {
    return this.node(o.node).client.listModels(o.allVersions === true ? { allVersions: true } : {});
  }

  /** `grid.deleteModel("name@N")` deletes that version; `grid.deleteModel("name", { allVersions: true })` the model. */
  private async deleteModel(id: unknown, o: Options): Promise<void> {
    if (typeof id !== 'string') throw usage('deleteModel', 'expects a model id (name@N for one version, or the name with { allVersions: true })');
    const node = this.node(o.node);
    try {
      await node.client.deleteModel(id, o.allVersions === true ? { allVersions: true } : {});
    } catch (err) {
      // A model this node holds only a share of is deleted from both its share holders.
      if (toGridError(err).code !== ErrorCodes.NOT_FOUND || (await deleteIfEncrypted(this.smpcHost, node, id)) === undefined) throw err;
    }
  }

  /**
   * `grid.infer(id, input)`: a tensor (or nested numbers) for a one-input model, or an object keyed
   * by input names. A one-output model answers with that tensor, others with `{ name: tensor }`.
   */
  private async infer(id: unknown, input: unknown, o: Options, context: GridCallContext): Promise<Tensor | NamedTensors> {
    if (typeof id !== 'string') throw usage('infer', 'expects a model id, then its input');
    const timeoutMs = typeof o.timeoutMs === 'number' ? o.timeoutMs : this.inferTimeoutMs?.();
    const node = this.node(o.node);
    const client = node.client;
    let model = node.models.find((m) => m.id === id);
    if (!model) {
      try {
        model = await client.modelInfo(id);
      } catch (err) {
        // A model this node holds only a share of runs the encrypted protocol (smpc-bridge.ts).
        const y = toGridError(err).code === ErrorCodes.NOT_FOUND ? await inferIfEncrypted(this.smpcHost, node, id, input, typeof o.timeoutMs === 'number' ? o.timeoutMs : undefined, context.signal) : undefined;
        if (y === undefined) throw err;
        return y;
      }
    }
    const inputs = bindInputValues(model, input, 'grid.infer');
    // The version whose signature bound the inputs is the one that runs.
    const outputs = await client.runInference(refOf(model), inputs, {
      signal: context.signal,
      ...(Array.isArray(o.outputs) && { outputs: o.outputs.map(String) }),
      ...(timeoutMs !== undefined && { timeoutMs }),
    });
    const names = Object.keys(outputs);
    return names.length === 1 ? compact(outputs[names[0]!]!) : Object.fromEntries(names.map((n) => [n, compact(outputs[n]!)]));
  }

  // ---- training ---------------------------------------------------------------------------------

  /**
   * `grid.train(modelId, dataset, { epochs, lr, ... })`: a training job on the node hosting the
   * model, its loss/accuracy drawn live in the cell. Interrupting the cell cancels the job.
   */
  private async train(modelId: unknown, datasetRef: unknown, o: Options, context: GridCallContext): Promise<TrainSummary> {
    if (typeof modelId !== 'string' || typeof datasetRef !== 'string') throw usage('train', 'expects a hosted model id and a dataset id or name, then { epochs, lr, ... }');
    const node = this.node(o.node);
    const client = node.client;
    const dataset = await findDataset(node, datasetRef);
    const epochs = positiveInt(o.epochs ?? TRAINING_DEFAULTS.epochs, 'train', 'epochs');
    const flags = permissionFlags(o, 'train');
    const request = trainRequest({
      model: modelId, datasetId: dataset.id, epochs,
      loss: (o.loss as TrainRequest['loss'] | undefined) ?? lossFor(dataset),
      optimizer: o.optimizer as TrainRequest['optimizer'] | undefined,
      lr: typeof o.lr === 'number' ? o.lr : TRAINING_DEFAULTS.lr,
      batchSize: numberOr(o.batchSize),
      testSplit: numberOr(o.testSplit, TRAINING_DEFAULTS.testSplit),
      progressEvery: numberOr(o.progressEvery, 5),
      validationSplit: numberOr(o.validationSplit), featureScale: numberOr(o.featureScale), seed: numberOr(o.seed),
      label: typeof o.label === 'string' ? o.label : undefined,
      outputId: typeof o.outputId === 'string' ? o.outputId : undefined,
      // Left out unless the cell gives them: the node then copies the flags of the model trained from.
      ...flags,
    });
    const live = liveMetrics(context, { version: 1, title: `Training ${modelId} on ${node.name}/${dataset.name}`, unit: 'epoch', total: epochs, state: 'running', series: [] }, this.metricsIntervalMs);
    const started = await client.training.start(request, { signal: context.signal });
    node.updateJob?.(started);
    const job = await followTrainingLive(client, started, live, context, epochs, (j) => node.updateJob?.(j));
    const r = job.result;
    live.payload.note = `${r?.samples ?? 0} rows per epoch in ${(r?.seconds ?? 0).toFixed(1)} s${r?.model ? ` · stored as ${refOf(r.model)}${r.model.parent?.startsWith(`${r.model.id}@`) ? `, the next version of ${r.model.id}` : ''}` : ''}`;
    live.update(true);
    return {
      job: job.id, state: job.state, model: r?.model && refOf(r.model), metrics: r?.metrics, validation: r?.validation, test: r?.test, seconds: r?.seconds,
    };
  }

  /**
   * `grid.fedavg(modelId, datasetTag, { rounds, epochs, lr, nodes? })`: FedAvg across the connected
   * nodes holding a dataset with that tag (or name); the result is served on the model's node.
   */
  private async fedavg(modelId: unknown, tag: unknown, o: Options, context: GridCallContext): Promise<FedAvgSummary> {
    if (typeof modelId !== 'string' || typeof tag !== 'string') throw usage('fedavg', 'expects a hosted model id and a dataset tag, then { rounds, epochs, lr, nodes }');
    const home = this.node(o.node);
    const rounds = positiveInt(o.rounds ?? 5, 'fedavg', 'rounds');
    const epochs = positiveInt(o.epochs ?? 1, 'fedavg', 'epochs');
    // Named as the cell names them: one node named twice reaches FedAvg as two entries, which it refuses naming both.
    const wanted = Array.isArray(o.nodes) ? o.nodes.map((n) => ({ n: this.node(String(n)), name: String(n) })) : this.nodes.list().filter((n) => n.isOpen).map((n) => ({ n, name: n.name }));
    const participants = await participantsByTag(wanted.map((w) => ({ client: w.n.client, name: w.name, datasets: w.n.datasets })), [tag], { named: Array.isArray(o.nodes) });
    const flags = permissionFlags(o, 'fedavg');
    const live = liveMetrics(context, { version: 1, title: `FedAvg ${modelId} over ${participants.map((p) => p.name).join(', ')}`, unit: 'round', total: rounds, state: 'running', series: [] }, this.metricsIntervalMs);
    const report = new FedAvgReport(modelId, home.name, participants.map((p) => wanted[p.node]!.n));
    const download = this.progress(context, `download-${modelId}`, `Downloading ${modelId} from ${home.name}`);
    try {
      // Fetched once from the model's node: the version downloaded is the version the result descends from;
      // the result is its next version (or outputId, or for a model of someone else's, a new one).
      const it = runFedAvg({
        model: { client: home.client, id: modelId }, serveTo: home.client, participants, onDownloadProgress: download,
        rounds, localEpochs: epochs,
        lr: typeof o.lr === 'number' ? o.lr : TRAINING_DEFAULTS.lr,
        loss: (o.loss as TrainRequest['loss'] | undefined) ?? lossFor(participants[0]!.dataset),
        optimizer: (o.optimizer as TrainRequest['optimizer'] | undefined) ?? 'sgd',
        batchSize: numberOr(o.batchSize, 32), testSplit: numberOr(o.testSplit, 0.2), evaluateOnNodes: true, featureScale: numberOr(o.featureScale),
        outputId: typeof o.outputId === 'string' ? o.outputId : undefined, ...flags,
        // The same warnings as the CLI's (its stderr) and the palette's (the log), in the cell.
        onWarning: (message, error) => context.output({ kind: 'stream', stream: 'stderr', text: `warning: ${fedAvgWarning(message, error)}\n` }),
        signal: context.signal,
      });
      for (;;) {
        const step = await it.next();
        download.done();
        if (step.done) {
          report.summary.model = refOf(step.value.served);
          break;
        }
        const r = step.value;
        // Every participant that sat out says why, in the cell and on its row in the sidebar.
        const dropped = report.round(r);
        showRound(live, r, dropped);
      }
    } catch (err) {
      live.fail(err);
      throw err;
    }
    const { summary } = report;
    live.payload.state = 'succeeded';
    live.payload.note = `served as ${summary.model} on ${home.name}`;
    live.update(true);
    return summary;
  }

  // ---- outputs ----------------------------------------------------------------------------------

  /** Upload/download progress as one updating text line, shown only for transfers over 1 MiB. */
  private progress(context: GridCallContext, id: string, what: string): ((done: number, total: number) => void) & { done(): void } {
    const displayId = `grid-progress-${context.executionCount}-${id}`;
    let shown = false;
    let last = 0;
    let latest = '';
    const show = (text: string) => {
      context.output({ kind: 'display', displayId, update: shown, data: { 'text/plain': text } });
      shown = true;
      last = Date.now();
    };
    const fn = (done: number, total: number) => {
      if (total < 1024 * 1024) return;
      latest = `${what}: ${(done / 1048576).toFixed(1)} of ${(total / 1048576).toFixed(1)} MiB`;
      if (done === total || Date.now() - last >= 250) show(latest);
    };
    return Object.assign(fn, { done: () => { if (shown) show(latest); } });
  }

  private path(p: string): string {
    return isAbsolute(p) ? p : resolve(this.cwd, p);
  }
}

export type { FedAvgSummary } from '../fedavg-report';

export interface TrainSummary {
  job: string;
  state: JobInfo['state'];
  /** The stored model version, `name@N`: infer with it at once. */
  model: string | undefined;
  metrics: { loss: number; accuracy: number } | undefined;
  validation: { loss: number; accuracy: number } | undefined;
  test: { loss: number; accuracy: number } | undefined;
  seconds: number | undefined;
}


function summary(n: BridgeNode) {
  return { name: n.name, url: n.url, state: n.state, local: n.local, ...(n.user !== undefined && { user: n.user }) };
}


function options(value: unknown, method: string): Options {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw usage(method, 'takes its options as an object, e.g. { node: "Local node" }');
  const o = value as Options;
  if (o.node !== undefined && typeof o.node !== 'string') throw usage(method, 'expects { node } to be a node name or URL');
  return o;
}

function nodeArg(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  return options(value, 'call').node;
}

function optionalString(value: unknown, method: string, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) throw usage(method, `expects { ${name} } to be a non-empty string`);
  return value;
}


/** A number option of a cell, else `fallback`. */
function numberOr(value: unknown, fallback: number): number;
function numberOr(value: unknown, fallback?: number): number | undefined;
function numberOr(value: unknown, fallback?: number): number | undefined {
  return typeof value === 'number' ? value : fallback;
}


async function findDataset(node: BridgeNode, ref: string): Promise<DatasetInfo> {
  const datasets = node.datasets.length ? node.datasets : await node.client.listDatasets();
  const d = datasets.find((x) => x.id === ref || x.name === ref);
  if (!d) throw gridError('NOT_FOUND', `${node.name} has no dataset "${ref}"; it has ${datasets.map((x) => `"${x.name}"`).join(', ') || 'none'}`);
  return d;
}

/** A tensor whose data covers exactly its own bytes: structured clone copies a view's whole buffer. */
function compact(t: Tensor): Tensor {
  const data = t.data as unknown;
  if (ArrayBuffer.isView(data) && (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength)) {
    return { dtype: t.dtype, dims: t.dims, data: (data as unknown as { slice(): Tensor['data'] }).slice() };
  }
  return t;
}
