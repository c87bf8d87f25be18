// GridClient: the data-centric grid API (PyGrid's WebsocketGridClient, typed) over one GridSocket.
// The CLI, the extension and the notebook kernel all use it; it owns no connection logic of its own.
// Wherever a method takes a model id, `name` means its latest version and `name@N` version N.

import { gridError } from './errors';
import type { Logger } from './logger';
import {
  AddUser, ConnectNode, DatasetTags, DeleteModel, DownloadModel, GetId, GetModelInfo, HostModel, ListDatasets, ListModels,
  ListPeers, RunInference, Search, SetModelPermissions, Subscribe,
  type DatasetInfo, type EventTopic, type ModelInfo, type NodeEvent, type PeerInfo,
} from './protocol/messages';
import type { ReplyOf } from './protocol/catalogue';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from './protocol/tensor';
import { GridSocket, type ConnectOptions, type GridStream } from './socket/grid-socket';
import type { ReconnectOptions } from './socket/backoff';
import { bufferSource, fileSink, fileSource, memorySink, type ByteSink } from './socket/transfer';
import { TrainingClient } from './training-client';
import { SharedMemoryChannel, type SharedMemoryClientOptions } from './shm-client';

export type Credentials = { username: string; password: string } | { token: string };

export interface Progress {
  onProgress?(done: number, total: number): void;
  signal?: AbortSignal;
}

export interface HostModelOptions extends Progress {
  id: string;
  name?: string;
  /** The version number to store; the node gives the next one by default. */
  version?: string;
  /** When the node has a model `id`, store these bytes as its next version (else GRID_ERR_ALREADY_EXISTS). */
  newVersion?: boolean;
  /** Lineage: the version the bytes came from, `name@N`. */
  parent?: string;
  allowDownload?: boolean;
  allowRemoteInference?: boolean;
  /** How long the node may take to validate (load) the model after the upload. Default 10 min. */
  timeoutMs?: number;
}

export interface RunInferenceOptions {
  /** Output names to compute; all by default. */
  outputs?: string[];
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Most output bytes accepted when the node sends them as a download (big outputs). Default 1 GiB. */
  maxOutputBytes?: number;
}

export interface GridClientConnectOptions {
  credentials?: Credentials;
  connect?: ConnectOptions;
  reconnect?: ReconnectOptions;
  logger?: Logger;
  /** Shared memory with a node on this machine (docs/protocol.md "Shared memory"); on by default. */
  sharedMemory?: SharedMemoryClientOptions;
}

export class GridClient {
  readonly socket: GridSocket;
  private readonly ownsSocket: boolean;

  /**
   * Uses a shared socket (the extension's one connection per node): dispose() leaves it open unless
   * `ownsSocket` says this client is its only user.
   */
  constructor(socket: GridSocket, opts: { ownsSocket?: boolean; sharedMemory?: SharedMemoryClientOptions; logger?: Logger } = {}) {
    this.socket = socket;
    this.ownsSocket = opts.ownsSocket ?? false;
    this.shm = new SharedMemoryChannel(socket, opts.sharedMemory, opts.logger);
  }

  /** Big tensors to and from a node on this machine go through a shared-memory region (src/core/shm-client.ts). */
  readonly shm: SharedMemoryChannel;

  /** Opens its own socket to `url` (CLI, scripts); dispose() closes it. */
  static async connect(url: string, opts: GridClientConnectOptions = {}): Promise<GridClient> {
    const socket = new GridSocket({ ...(opts.logger !== undefined && { logger: opts.logger }) });
    try {
      await socket.connect(url, opts.connect ?? {}, opts.reconnect ?? {});
      if (opts.credentials !== undefined) await socket.authenticate(opts.credentials);
    } catch (err) {
      socket.dispose();
      throw err;
    }
    return new GridClient(socket, { ownsSocket: true, ...(opts.sharedMemory !== undefined && { sharedMemory: opts.sharedMemory }), ...(opts.logger !== undefined && { logger: opts.logger }) });
  }

  /** `opts.timeoutMs`: how long to wait for the reply (default the socket's 20 s). */
  getId(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ReplyOf<typeof GetId>> {
    return this.socket.request(GetId, undefined, { ...(opts.timeoutMs !== undefined && { timeout: opts.timeoutMs }), ...(opts.signal !== undefined && { signal: opts.signal }) });
  }

  /** Logs in (or resumes a session by token); the token is re-sent after every reconnect. */
  authenticate(credentials: Credentials) {
    return this.socket.authenticate(credentials);
  }

  /** Creates a user on the node (admins only). */
  addUser(username: string, password: string, role: 'user' | 'admin' = 'user') {
    return this.socket.request(AddUser, { username, password, role });
  }

  /** Asks the node to open a link to another node. */
  async connectNode(address: string, opts: { id?: string; auth?: Credentials; signal?: AbortSignal } = {}): Promise<PeerInfo> {
    const { peer } = await this.socket.request(ConnectNode, {
      address, ...(opts.id !== undefined && { id: opts.id }), ...(opts.auth !== undefined && { auth: opts.auth }),
    }, { timeout: 30_000, ...(opts.signal !== undefined && { signal: opts.signal }) });
    return peer;
  }

  async listPeers(): Promise<PeerInfo[]> {
    return (await this.socket.request(ListPeers, undefined)).peers;
  }

  /**
   * Uploads an ONNX model (a file path, streamed in chunks, or bytes) and hosts it under `opts.id`.
   * The node loads it before storing it, so a bad model fails here with GRID_ERR_INVALID_MODEL.
   */
  async hostModel(model: string | Uint8Array, opts: HostModelOptions): Promise<ModelInfo> {
    const source = typeof model === 'string' ? await fileSource(model) : bufferSource(model);
    const upload = await this.socket.upload(source, {
      ...(opts.onProgress !== undefined && { onProgress: opts.onProgress }),
      ...(opts.signal !== undefined && { signal: opts.signal }),
    });
    const { model: info } = await this.socket.request(HostModel, {
      model_id: opts.id,
      transfer_id: upload.transfer_id,
      ...(opts.name !== undefined && { name: opts.name }),
      ...(opts.version !== undefined && { version: opts.version }),
      ...(opts.newVersion !== undefined && { new_version: opts.newVersion }),
      ...(opts.parent !== undefined && { parent: opts.parent }),
      allow_download: opts.allowDownload ?? false,
      allow_remote_inference: opts.allowRemoteInference ?? false,
    }, { timeout: opts.timeoutMs ?? 600_000, ...(opts.signal !== undefined && { signal: opts.signal }) });
    return info;
  }

  /** Each model's latest version; with `allVersions`, every version (oldest first within a model). */
  async listModels(opts: { allVersions?: boolean } = {}): Promise<ModelInfo[]> {
    return (await this.socket.request(ListModels, opts.allVersions ? { all_versions: true } : undefined)).models;
  }

  async modelInfo(id: string): Promise<ModelInfo> {
    return (await this.socket.request(GetModelInfo, { model_id: id })).model;
  }

  /**
   * Downloads a model to `destPath`: bytes go to `destPath.partial`, are sha256-checked against the
   * node's metadata, and only then renamed into place. A failure leaves no file at `destPath`.
   */
  async downloadModel(id: string, destPath: string, opts: Progress = {}): Promise<ModelInfo> {
    const { model, download } = await this.offerModel(id, opts);
    const sink = await fileSink(destPath);
    try {
      await this.socket.download(download, sink, transferOptions(opts));
      await sink.commit();
    } catch (err) {
      await sink.abort();
      throw err;
    }
    return model;
  }

  /** A model's bytes in memory, sha256-checked like downloadModel (FedAvg ships them to other nodes). */
  async downloadModelBytes(id: string, opts: Progress = {}): Promise<{ model: ModelInfo; bytes: Uint8Array }> {
    const { model, download } = await this.offerModel(id, opts);
    const sink = memorySink();
    await this.socket.download(download, sink, transferOptions(opts));
    return { model, bytes: sink.bytes() };
  }

  /** The node's download offer for a model, checked against the model's own metadata. */
  private async offerModel(id: string, opts: Progress): Promise<ReplyOf<typeof DownloadModel>> {
    const offer = await this.socket.request(DownloadModel, { model_id: id }, opts.signal !== undefined ? { signal: opts.signal } : {});
    if (offer.download.sha256 !== offer.model.sha256) {
      throw gridError('CHECKSUM_MISMATCH', `the node offered bytes with sha256 ${offer.download.sha256} for model "${id}", whose metadata says ${offer.model.sha256}`);
    }
    return offer;
  }

  /**
   * Changes who else may download or run a model (its owner or an admin only); a flag left undefined
   * keeps its value. Resolves to the model as it now is.
   */
  async setModelPermissions(id: string, flags: { allowDownload?: boolean; allowRemoteInference?: boolean }): Promise<ModelInfo> {
    const { model } = await this.socket.request(SetModelPermissions, {
      model_id: id,
      ...(flags.allowDownload !== undefined && { allow_download: flags.allowDownload }),
      ...(flags.allowRemoteInference !== undefined && { allow_remote_inference: flags.allowRemoteInference }),
    });
    return model;
  }

  /**
   * Deletes `name@N` (that version), or with `allVersions` every version of `name`. A plain `name` deletes a
   * model that has one version; the node refuses it for a model with several.
   */
  async deleteModel(ref: string, opts: { allVersions?: boolean } = {}): Promise<ReplyOf<typeof DeleteModel>> {
    return this.socket.request(DeleteModel, { model_id: ref, ...(opts.allVersions && { all_versions: true }) });
  }

  /**
   * Runs a hosted model on the node; tensors travel as binary, never JSON. Outputs too big for one frame
   * come as a download (chunked, sha256-checked, resumed after a reconnect), reassembled here.
   */
  async runInference(id: string, inputs: NamedTensors, opts: RunInferenceOptions = {}): Promise<NamedTensors> {
    // A node on this machine and big tensors: through shared memory, unless it declines (then the socket).
    if (this.shm.wants(id, inputs)) {
      const viaShm = await this.shm.run(id, inputs, opts);
      if (viaShm !== undefined) return viaShm;
    }
    const { data, attachment } = await this.socket.call(RunInference, {
      model_id: id, ...(opts.outputs !== undefined && { outputs: opts.outputs }),
    }, {
      // Views of the inputs' memory, copied once, into the frame.
      attachment: encodeNamedTensorsParts(inputs),
      ...(opts.signal !== undefined && { signal: opts.signal }),
      ...(opts.timeoutMs !== undefined && { timeout: opts.timeoutMs }),
    });
    if (data.download !== undefined) {
      const max = opts.maxOutputBytes ?? 1024 ** 3;
      if (data.download.size > max) {
        throw gridError('PAYLOAD_TOO_LARGE', `the outputs of "${id}" take ${data.download.size} bytes, over this client's maxOutputBytes of ${max}; ask for fewer outputs or raise maxOutputBytes`, { bytes: data.download.size, limit: max });
      }
      // The size is announced: one buffer, filled in place, which the decoded tensors then view.
      const size = data.download.size;
      const bytes = Buffer.allocUnsafeSlow(size);
      const sink: ByteSink = {
        write: async (chunk, offset) => {
          if (offset + chunk.length > size) throw gridError('PAYLOAD_TOO_LARGE', `the node sent more than the ${size} bytes it announced for the outputs of "${id}"`);
          bytes.set(chunk, offset);
        },
      };
      await this.socket.download(data.download, sink, opts.signal !== undefined ? { signal: opts.signal } : {});
      return decodeNamedTensors(bytes);
    }
    if (attachment === undefined) throw gridError('INVALID_MESSAGE', `the node answered run-inference for "${id}" without output tensors`);
    return decodeNamedTensors(attachment);
  }

  async listDatasets(): Promise<DatasetInfo[]> {
    return (await this.socket.request(ListDatasets, undefined)).datasets;
  }

  /** Datasets carrying every one of `tags`. */
  async searchDatasets(tags: string[]): Promise<DatasetInfo[]> {
    return (await this.socket.request(Search, { query: tags })).datasets;
  }

  async datasetTags(): Promise<string[]> {
    return (await this.socket.request(DatasetTags, undefined)).tags;
  }

  /** Node events on `topics` (all by default) until cancelled; survives reconnects. */
  subscribe(topics?: EventTopic[], opts: { signal?: AbortSignal } = {}): GridStream<NodeEvent, Record<string, unknown>> {
    return this.socket.stream(Subscribe, topics === undefined ? {} : { topics }, opts.signal !== undefined ? { signal: opts.signal } : {});
  }

  // ---- training (src/core/training-client.ts) --------------------------------------------------

  private trainingClient: TrainingClient | undefined;

  /** Training jobs on this node, FL updates, evaluation on the node's data. */
  get training(): TrainingClient {
    this.trainingClient ??= new TrainingClient(this.socket);
    return this.trainingClient;
  }

  /** Closes the socket if this client opened it; idempotent. */
  dispose(): void {
    this.shm.dispose();
    if (this.ownsSocket) this.socket.dispose();
  }
}

function transferOptions(opts: Progress): { onProgress?: (done: number, total: number) => void; signal?: AbortSignal } {
  return {
    ...(opts.onProgress !== undefined && { onProgress: opts.onProgress }),
    ...(opts.signal !== undefined && { signal: opts.signal }),
  };
}
