// The `grid` API's node side when no VS Code owns the connections (Jupyter, nbconvert, papermill):
// the kernel process connects to nodes itself, the way the `grid` CLI does. The local node is found
// through its runtime record (core/local-node) and signed in with its token; a remote node takes
// { username, password } from the call or GRID_USER / GRID_PASSWORD from the environment.

import { basename, extname, isAbsolute, resolve } from 'node:path';
import { GridClient, type Credentials } from '../../core/client';
import { gridError, GridError } from '../../core/errors';
import { findLocalNode, sameUrl } from '../../core/local-node';
import type { ModelInfo } from '../../core/protocol/messages';
import { refOf } from '../../core/protocol/model-ref';
import type { NamedTensors, Tensor } from '../../core/protocol/tensor';
import { bindInputValues } from '../../compute/tensor-io';
import type { GridBridge, GridBridgeMethod, GridCallContext } from '../bridge';

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
      case 'train':
      case 'fedavg':
        throw gridError('UNKNOWN_TYPE', `grid.${method} runs in the VS Code notebook for now; from a Jupyter kernel use the CLI (\`grid ${method === 'train' ? 'train' : 'fedavg'} …\`)`);
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

  private path(p: string): string {
    return isAbsolute(p) ? p : resolve(this.cwd, p);
  }
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
