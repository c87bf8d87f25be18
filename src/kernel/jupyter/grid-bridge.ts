// The `grid` API's node side when no VS Code owns the connections (Jupyter, nbconvert, papermill):
// the kernel process connects to nodes itself, the way the `grid` CLI does. The local node is found
// through its runtime record (core/local-node) and signed in with its token; a remote node takes
// { username, password } from the call or GRID_USER / GRID_PASSWORD from the environment.
// Training and FedAvg go through the same request mapping, job following and FedAvg workflow as the
// CLI, the palette and the VS Code notebook (core/training-request, TrainingClient.follow, runFedAvg).

import { basename, extname, isAbsolute, resolve } from 'node:path';
import { GridClient, type Credentials } from '../../core/client';
import { ErrorCodes, gridError, toGridError } from '../../core/errors';
import { findLocalNode, localNodeFile, sameUrl } from '../../core/local-node';
import { confirmedLocalNode } from '../../core/local-node-start';
import type { ModelInfo } from '../../core/protocol/messages';
import { refOf } from '../../core/protocol/model-ref';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import { TRAINING_DEFAULTS, type TrainRequest } from '../../core/protocol/training-messages';
import { lossFor, trainRequest } from '../../core/training-request';
import { bindInputValues } from '../../compute/tensor-io';
import { participantsByTag } from '../../federation/participants';
import { runFedAvg } from '../../federation/run';
import type { GridBridge, GridBridgeMethod, GridCallContext } from '../bridge';
import { followTrainingLive, liveMetrics, showRound } from '../live-metrics';
import { permissionFlags, positiveInt, usage } from '../bridge-args';
import { deleteIfEncrypted, inferIfEncrypted, serveEncryptedCall, type SmpcBridgeHost, type SmpcBridgeNode } from '../smpc-bridge';

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
        const node = this.node(o.node);
        try {
          return await node.client.deleteModel(args[0], o.allVersions === true ? { allVersions: true } : {});
        } catch (err) {
          // A model this node holds only a share of is deleted from both its share holders.
          const enc = toGridError(err).code === ErrorCodes.NOT_FOUND ? await deleteIfEncrypted(this.smpcHost, smpcNode(node), args[0]) : undefined;
          if (enc === undefined) throw err;
          return enc;
        }
      }
      case 'infer': return this.infer(args[0], args[1], options(args[2], 'infer'), context);
      case 'train': return this.train(args[0], args[1], options(args[2], 'train'), context);
      case 'fl.host': case 'fl.join': case 'fl.simulate':
        throw gridError('UNKNOWN_TYPE', `grid.${method} runs in the VS Code notebook; from Jupyter use the CLI: \`grid fl ${method.slice(3)} …\` (grid fl ${method.slice(3)} --help)`);
      case 'fedavg': return this.fedavg(args[0], args[1], options(args[2], 'fedavg'), context);
      case 'serveEncrypted': return serveEncryptedCall(this.smpcHost, args[0], options(args[1], 'serveEncrypted'));
    }
  }

  /** The kernel's nodes for encrypted serving (smpc-bridge.ts): the same calls as the VS Code notebook's. */
  private readonly smpcHost: SmpcBridgeHost = {
    node: (n) => smpcNode(this.node(n)),
    list: () => this.nodes.map(smpcNode),
    path: (p) => this.path(p),
  };

  dispose(): void {
    for (const n of this.nodes.splice(0)) n.client.dispose();
    this.current = undefined;
  }

  private async connect(target: unknown, o: Options): Promise<ReturnType<typeof summary>> {
    if (target !== undefined && typeof target !== 'string') throw usage('connect', 'expects a node name or ws:// URL (or nothing for the local node)');
    const wantsLocal = target === undefined || target === 'local';
    const record = findLocalNode(localNodeFile(this.env));
    // A node this kernel already connected to (a local one was confirmed then): no probe.
    const named = wantsLocal ? record?.url : target;
    const existing = named === undefined ? undefined : this.nodes.find((n) => sameUrl(n.url, named) || n.name === named);
    if (existing) {
      this.current = existing;
      return summary(existing);
    }
    // The record is trusted once its node answers with the record's id: a live pid alone may name another
    // process, and the record's URL another node, which must not get the admin token. Probed only when
    // the record would be used: for the local node, or at its URL.
    const local = record !== undefined && (wantsLocal || sameUrl(record.url, target!)) ? await confirmedLocalNode(localNodeFile(this.env)) : undefined;
    if (wantsLocal && !local) throw gridError('NOT_CONNECTED', 'no local node runs for this user: start one with `grid-node --local` (or "Grid: Start Local Node" in VS Code), or connect to a node by URL');
    const url = wantsLocal ? local!.url : target!;
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
    const node = this.node(o.node);
    const client = node.client;
    let model;
    try {
      model = await client.modelInfo(id);
    } catch (err) {
      // A model this node holds only a share of runs the encrypted protocol with its other share holder.
      const y = toGridError(err).code === ErrorCodes.NOT_FOUND
        ? await inferIfEncrypted(this.smpcHost, smpcNode(node), id, input, typeof o.timeoutMs === 'number' ? o.timeoutMs : undefined, context.signal)
        : undefined;
      if (y === undefined) throw err;
      return y;
    }
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
    const epochs = positiveInt(o.epochs ?? TRAINING_DEFAULTS.epochs, 'train', 'epochs');
    const request = trainRequest({
      model: modelId, datasetId: dataset.id, epochs,
      loss: (o.loss as TrainRequest['loss'] | undefined) ?? lossFor(dataset),
      optimizer: o.optimizer as TrainRequest['optimizer'] | undefined,
      lr: num(o.lr) ?? TRAINING_DEFAULTS.lr,
      batchSize: num(o.batchSize),
      testSplit: num(o.testSplit) ?? TRAINING_DEFAULTS.testSplit,
      progressEvery: num(o.progressEvery) ?? 5,
      validationSplit: num(o.validationSplit), featureScale: num(o.featureScale), seed: num(o.seed),
      label: typeof o.label === 'string' ? o.label : undefined,
      outputId: typeof o.outputId === 'string' ? o.outputId : undefined,
      // Left out unless the cell gives them: the node then copies the flags of the model trained from.
      ...permissionFlags(o, 'train'),
    });
    const live = liveMetrics(context, { version: 1, title: `Training ${modelId} on ${node.name}/${dataset.name}`, unit: 'epoch', total: epochs, state: 'running', series: [] });
    const started = await client.training.start(request, { signal: context.signal });
    const job = await followTrainingLive(client, started, live, context, epochs);
    const r = job.result;
    live.payload.note = `${r?.samples ?? 0} rows per epoch in ${(r?.seconds ?? 0).toFixed(1)} s${r?.model ? ` · stored as ${refOf(r.model)}` : ''}`;
    live.update(true);
    return { job: job.id, state: job.state, model: r?.model && refOf(r.model), metrics: r?.metrics, validation: r?.validation, test: r?.test, seconds: r?.seconds };
  }

  /**
   * `grid.fedavg(modelId, datasetTag, { rounds, epochs, lr, nodes? })`: FedAvg across the connected
   * nodes holding a dataset with that tag (or name), the result served on the model's node as its next
   * version. The same workflow as the CLI's `grid fedavg` and the VS Code notebook's grid.fedavg.
   */
  private async fedavg(modelId: unknown, tag: unknown, o: Options, context: GridCallContext): Promise<FedAvgSummary> {
    if (typeof modelId !== 'string' || typeof tag !== 'string') throw usage('fedavg', 'expects a hosted model id and a dataset tag, then { rounds, epochs, lr, nodes }');
    const home = this.node(o.node);
    const rounds = positiveInt(o.rounds ?? 5, 'fedavg', 'rounds');
    const epochs = positiveInt(o.epochs ?? 1, 'fedavg', 'epochs');
    const named = Array.isArray(o.nodes);
    const wanted = named ? (o.nodes as unknown[]).map((n) => ({ client: this.node(String(n)).client, name: String(n) })) : this.nodes.map((n) => ({ client: n.client, name: n.name }));
    const participants = await participantsByTag(wanted, [tag], { named });
    const flags = permissionFlags(o, 'fedavg');
    const live = liveMetrics(context, { version: 1, title: `FedAvg ${modelId} over ${participants.map((p) => p.name).join(', ')}`, unit: 'round', total: rounds, state: 'running', series: [] });
    const summary: FedAvgSummary = { model: modelId, node: home.name, rounds: [] };
    try {
      const it = runFedAvg({
        model: { client: home.client, id: modelId }, serveTo: home.client, participants,
        rounds, localEpochs: epochs,
        lr: num(o.lr) ?? TRAINING_DEFAULTS.lr,
        loss: (o.loss as TrainRequest['loss'] | undefined) ?? lossFor(participants[0]!.dataset),
        optimizer: (o.optimizer as TrainRequest['optimizer'] | undefined) ?? 'sgd',
        batchSize: num(o.batchSize) ?? 32, testSplit: num(o.testSplit) ?? 0.2, evaluateOnNodes: true, featureScale: num(o.featureScale),
        outputId: typeof o.outputId === 'string' ? o.outputId : undefined, ...flags,
        // The CLI's warnings (its stderr), on the cell's stderr.
        onWarning: (message, error) => context.output({ kind: 'stream', stream: 'stderr', text: `warning: ${message} (${error.code})\n` }),
        signal: context.signal,
      });
      for (;;) {
        const step = await it.next();
        if (step.done) {
          summary.model = refOf(step.value.served);
          break;
        }
        const r = step.value;
        const dropped = r.dropped.map((d) => ({ node: d.name, round: r.round, error: d.error }));
        summary.rounds.push({ round: r.round, train: r.train, ...(r.test && { test: r.test }), dropped });
        showRound(live, r, dropped);
      }
    } catch (err) {
      live.fail(err);
      throw err;
    }
    live.payload.state = 'succeeded';
    live.payload.note = `served as ${summary.model} on ${home.name}`;
    live.update(true);
    return summary;
  }

  private path(p: string): string {
    return isAbsolute(p) ? p : resolve(this.cwd, p);
  }
}

/** What grid.fedavg answers: the served result and each round, with who sat out and why. */
interface FedAvgSummary {
  /** The served result, `name@N`. */
  model: string;
  node: string;
  rounds: { round: number; train: { loss: number; accuracy: number }; test?: { loss: number; accuracy: number }; dropped: { node: string; round: number; error: { code: string; message: string } }[] }[];
}

function summary(n: Connected) {
  return { name: n.name, url: n.url, state: 'connected', local: n.local, ...(n.user !== undefined && { user: n.user }) };
}


function options(value: unknown, method: string): Options {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw usage(method, 'takes its options as an object, e.g. { node: "ws://127.0.0.1:5000" }');
  const o = value as Options;
  if (o.node !== undefined && typeof o.node !== 'string') throw usage(method, 'expects { node } to be a node name or URL');
  return o;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** A connected node as smpc-bridge.ts takes it (one object per node, so the bridge can tell them apart). */
const smpcNodes = new WeakMap<Connected, SmpcBridgeNode>();
function smpcNode(n: Connected): SmpcBridgeNode {
  let s = smpcNodes.get(n);
  if (s === undefined) {
    s = { name: n.name, url: n.url, client: n.client, get isOpen() { return n.client.socket.status.state === 'open'; } };
    smpcNodes.set(n, s);
  }
  return s;
}
