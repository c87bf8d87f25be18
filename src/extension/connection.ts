// One node's connection as the sidebar sees it: the shared GridSocket + GridClient, the node's state
// in the user's words, and the node's models/datasets/peers kept current by its event stream (a
// fetch on every (re)open, then pushed events; nothing polls). Part of the heavy half (lazy.ts):
// it pulls in ws and the protocol schemas, which activation does not need.
import * as vscode from 'vscode';
import { GridClient, type Credentials } from '../core/client';
import { ErrorCodes, gridError, toGridError, type GridError } from '../core/errors';
import type { Logger } from '../core/logger';
import { FlListProcesses, type FlProcessInfo } from '../core/protocol/fl-messages';
import type { DatasetInfo, ModelInfo, NodeEvent, PeerInfo } from '../core/protocol/messages';
import { SmpcModels, type SmpcModelInfo } from '../core/protocol/smpc-messages';
import type { JobInfo } from '../core/protocol/training-messages';
import type { ReconnectOptions } from '../core/socket/backoff';
import { GridSocket, type SocketStatus } from '../core/socket/grid-socket';
import type { NodeEntry } from './config';

export type NodeState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'unauthenticated' | 'error';

/** What a node says about itself on get-id (its signing identity lives in the node, node/identity.ts). */
export interface NodeInfo {
  id: string;
  name: string;
  version: string;
  capabilities: string[];
}

/** What a user does with a model; `mayUse` tells whether this session may. */
export type ModelUse = 'download' | 'infer' | 'train' | 'delete';

/** A worker's latest word from the node in one cycle of an FL process (fl-worker events). */
export interface FlWorkerNote {
  workerId: string;
  status: 'accepted' | 'rejected' | 'reported';
  reason?: string;
}

/** Why a node sat out a FedAvg run (shown under its row in the Nodes view). */
export interface DroppedNote {
  /** e.g. "FedAvg of digits-mlp, rounds 1-2" */
  what: string;
  error: { code: string; message: string };
}

export interface ConnectionSettings {
  handshakeTimeoutMs: number;
  heartbeatMs: number;
  reconnect: ReconnectOptions;
}

/** What the tree keeps of the fl-worker events: workers per cycle, and cycles (across processes). */
const FL_WORKERS_PER_CYCLE = 1000;
const FL_CYCLES_KEPT = 200;

export class NodeConnection implements vscode.Disposable {
  readonly entry: NodeEntry;
  /** The embedded local node (started by this window), not an entry of `grid.nodes`. */
  readonly local: boolean;
  private readonly log: Logger;
  private readonly changed = new vscode.EventEmitter<NodeConnection>();
  /** Fires on any change a view shows: state, identity, models, datasets, peers. */
  readonly onDidChange = this.changed.event;

  private socketValue: GridSocket | undefined;
  private clientValue: GridClient | undefined;
  /** Connection lifetime: disposed on disconnect and before every new connect. */
  private scope: vscode.Disposable[] = [];
  private stateValue: NodeState = 'disconnected';
  private reason: string | undefined;
  private reasonCode: string | undefined;
  private credentials: Credentials | undefined;
  private authFailure: GridError | undefined;
  /**
   * Set while connect() signs in with the credentials it was given: the socket reports open before that
   * sign-in is answered, and the node is not "unauthenticated" until the node has said no.
   */
  private signingIn = false;
  /** The session's role, when the node says (older nodes do not). */
  private roleValue: string | undefined;
  identity: NodeInfo | undefined;
  /** The node id last learned (get-id); kept while disconnected, so a second entry for the node stays recognised. */
  knownId: string | undefined;
  /** The latest FedAvg this node sat out, and why; cleared when it takes part again. */
  dropped: DroppedNote | undefined;
  /** Each model at its latest version (with `versions`, its count), by id. */
  models: ModelInfo[] = [];
  /** Every version of every model, by id then version (oldest first). */
  private allVersions: ModelInfo[] = [];
  datasets: DatasetInfo[] = [];
  peers: PeerInfo[] = [];
  /** Training jobs this session may see (an admin sees all), newest first. */
  jobs: JobInfo[] = [];
  /** The node's model-centric FL processes (fl-list-processes, then fl-process-updated events), by id. */
  flProcesses: FlProcessInfo[] = [];
  /**
   * Workers seen in each cycle since this connection opened, by `processId:cycle` then worker id (the
   * node keeps assignments, not refusals: the events are the only record of a rejection's reason).
   */
  private flWorkers = new Map<string, Map<string, FlWorkerNote>>();
  /** Encrypted models this node holds one share of (docs/smpc.md), as last listed. */
  encrypted: SmpcModelInfo[] = [];
  /** Settles once the lists reflect the node after the latest (re)open. */
  private synced: Promise<void> = Promise.resolve();

  constructor(entry: NodeEntry, opts: { local?: boolean; logger: Logger }) {
    this.entry = entry;
    this.local = opts.local ?? false;
    this.log = opts.logger;
  }

  get name(): string {
    return this.entry.name;
  }

  get url(): string {
    return this.entry.url;
  }

  get state(): NodeState {
    return this.stateValue;
  }

  /** Why the node is in the error/unauthenticated/reconnecting state, in words a user can act on. */
  get stateReason(): string | undefined {
    return this.reason;
  }

  get stateReasonCode(): string | undefined {
    return this.reasonCode;
  }

  get user(): string | undefined {
    return this.socketValue?.status.user;
  }

  /** Open and signed in: what serving, training, downloading and deleting need. */
  get isSignedIn(): boolean {
    return this.stateValue === 'connected';
  }

  /**
   * Whether this session may use `model` so: the owner and admins always may (delete and train too),
   * anyone else as its allow_* flags say. Unknown role (an older node): as an ordinary user.
   */
  /** Whether this session may delete an encrypted model: its owner or an admin, as for a plain model. */
  mayDeleteEncrypted(info: SmpcModelInfo): boolean {
    return this.isSignedIn && (info.owner === this.user || this.roleValue === 'admin');
  }

  mayUse(model: ModelInfo, use: ModelUse): boolean {
    if (!this.isSignedIn) return false;
    if (model.owner === this.user || this.roleValue === 'admin') return true;
    switch (use) {
      case 'download': return model.allow_download;
      case 'infer': return model.allow_remote_inference;
      case 'train': return model.allow_download;
      case 'delete': return false;
    }
  }

  noteDropped(note: DroppedNote | undefined): void {
    this.dropped = note;
    this.changed.fire(this);
  }

  get isOpen(): boolean {
    return this.stateValue === 'connected' || this.stateValue === 'unauthenticated';
  }

  /** The shared client; throws NOT_CONNECTED when there is no usable connection. */
  get client(): GridClient {
    if (!this.clientValue || !this.isOpen) {
      throw gridError('NOT_CONNECTED', `${this.name} (${this.url}) is not connected${this.reason ? `: ${this.reason}` : ''}`);
    }
    return this.clientValue;
  }

  /** Resolves when the lists shown in the views reflect the node (after a connect or reconnect). */
  whenSynced(): Promise<void> {
    return this.synced;
  }

  /**
   * Connects (replacing any previous connection) and signs in with `credentials` when given.
   * Resolves once open; a wrong password leaves the connection open but `unauthenticated`.
   */
  async connect(settings: ConnectionSettings, credentials: Credentials | undefined): Promise<void> {
    this.closeScope();
    this.credentials = credentials;
    this.authFailure = undefined;
    this.roleValue = undefined;
    this.signingIn = credentials !== undefined;
    const socket = new GridSocket({ logger: this.log });
    const client = new GridClient(socket);
    this.socketValue = socket;
    this.clientValue = client;
    const onStatus = (s: SocketStatus) => this.onStatus(s);
    socket.on('status', onStatus);
    this.scope.push({ dispose: () => socket.off('status', onStatus) }, { dispose: () => socket.dispose() });
    this.setState('connecting', undefined);
    const opened = socket.connect(this.url, { handshakeTimeoutMs: settings.handshakeTimeoutMs, heartbeatMs: settings.heartbeatMs }, settings.reconnect);
    // Subscribed while connecting: the stream goes out first on open, before the first listing, so
    // nothing between the two is missed.
    if (socket.status.state === 'connecting') this.subscribe(client);
    try {
      await opened;
    } catch (err) {
      if (socket !== this.socketValue) return;
      this.signingIn = false;
      const e = toGridError(err);
      this.setState('error', e.message, e.code);
      throw e;
    }
    if (socket !== this.socketValue) return;
    if (credentials !== undefined) {
      try {
        this.noteRole(await client.authenticate(credentials));
      } catch (err) {
        if (socket !== this.socketValue) return;
        this.authFailure = toGridError(err);
        this.log.warn({ node: this.url, code: this.authFailure.code }, `sign-in to ${this.name} failed: ${this.authFailure.message}`);
      }
    }
    if (socket !== this.socketValue) return;
    this.signingIn = false;
    // Open and signed in (or refused) only now: the first listing runs here, as the node's user.
    this.onStatus(socket.status);
  }

  /**
   * Resolves as `attempt` settles, or earlier with the state when the connection starts failing
   * (reconnecting, error, disconnected), so a command need not wait on a node that is not there.
   */
  async untilOpenOrFailing(attempt: Promise<void>): Promise<NodeState> {
    let sub: vscode.Disposable | undefined;
    const failing = new Promise<void>((resolve) => {
      sub = this.onDidChange(() => {
        if (this.stateValue === 'reconnecting' || this.stateValue === 'error' || this.stateValue === 'disconnected') resolve();
      });
    });
    try {
      await Promise.race([attempt, failing]);
    } finally {
      sub?.dispose();
    }
    return this.stateValue;
  }

  /** Signs in on the open connection; the token is re-sent after every reconnect. */
  async authenticate(credentials: Credentials): Promise<void> {
    const client = this.clientValue;
    if (!client || !this.isOpen) throw gridError('NOT_CONNECTED', `${this.name} (${this.url}) is not connected; connect before signing in`);
    this.noteRole(await client.authenticate(credentials));
    this.credentials = credentials;
    this.authFailure = undefined;
    this.onStatus(client.socket.status);
    void this.refresh();
  }

  private noteRole(reply: { [k: string]: unknown }): void {
    this.roleValue = typeof reply.role === 'string' ? reply.role : undefined;
  }

  /** Whether the node hosts model-centric FL processes (older nodes do not). */
  get supportsFl(): boolean {
    return this.identity?.capabilities.includes('fl-list-processes') ?? false;
  }

  /** The workers of cycle `cycle` of FL process `processId` (null: refused after the last cycle), in order of arrival. */
  flWorkersOf(processId: number, cycle: number | null): FlWorkerNote[] {
    return [...(this.flWorkers.get(`${processId}:${cycle ?? 'done'}`)?.values() ?? [])];
  }

  /** Whether the node runs training jobs (older nodes do not). */
  get supportsTraining(): boolean {
    return this.identity?.capabilities.includes('train') ?? false;
  }

  /** The versions of model `id` on this node, newest first. */
  versionsOf(id: string): ModelInfo[] {
    return this.allVersions.filter((m) => m.id === id).reverse();
  }

  /** Sets every version, and from them each model's latest. */
  private setVersions(all: ModelInfo[]): void {
    const sorted = [...all].sort((a, b) => a.id.localeCompare(b.id) || Number(a.version) - Number(b.version));
    const latest = new Map<string, string>();
    const count = new Map<string, number>();
    for (const m of sorted) {
      latest.set(m.id, m.version);
      count.set(m.id, (count.get(m.id) ?? 0) + 1);
    }
    // Counts as they are now (an event's model carries those of its moment); a node without versions sends none.
    this.allVersions = sorted.map((m) => (m.versions === undefined ? m : { ...m, versions: count.get(m.id)!, latest_version: latest.get(m.id)! }));
    this.models = this.allVersions.filter((m, i, a) => a[i + 1]?.id !== m.id);
  }

  /** Records a job's latest state (from a watch stream or a command) for the Jobs group and status bar. */
  updateJob(job: JobInfo): void {
    const i = this.jobs.findIndex((j) => j.id === job.id);
    this.jobs = i >= 0 ? this.jobs.map((j) => (j.id === job.id ? job : j)) : [job, ...this.jobs];
    this.changed.fire(this);
  }

  get hasCredentials(): boolean {
    return this.credentials !== undefined;
  }

  /** Closes the connection without reconnecting; idempotent. */
  disconnect(): void {
    this.closeScope();
    this.setState('disconnected', undefined);
  }

  /** Fetches the lists again (the manual refresh; also run after every reconnect). */
  refresh(): Promise<void> {
    const client = this.clientValue;
    if (!client || !this.isOpen) return Promise.resolve();
    this.synced = this.fetchAll(client);
    return this.synced;
  }

  /** Closes the connection for good; a row still holding it shows it disconnected, not as it last was. */
  dispose(): void {
    this.closeScope();
    this.setState('disconnected', undefined);
    this.changed.dispose();
  }

  private closeScope(): void {
    const scope = this.scope;
    this.scope = [];
    this.socketValue = undefined;
    this.clientValue = undefined;
    for (const d of scope.reverse()) d.dispose();
    this.identity = undefined;
    this.setVersions([]);
    this.datasets = [];
    this.peers = [];
    this.jobs = [];
    this.flProcesses = [];
    this.flWorkers = new Map();
    this.encrypted = [];
  }

  private subscribe(client: GridClient): void {
    const controller = new AbortController();
    this.scope.push({ dispose: () => controller.abort() });
    const stream = client.subscribe(undefined, { signal: controller.signal });
    stream.subscribe({
      next: (ev) => this.onEvent(ev),
      error: (err) => {
        if (err.code !== ErrorCodes.ABORTED && client === this.clientValue) this.log.warn({ node: this.url, code: err.code }, `event stream from ${this.name} ended: ${err.message}`);
      },
    });
    // FL processes on a stream of their own: a node asked for its default topics leaves `fl` out (older
    // clients would not know its events), and a node without FL refuses the topic without ending the other.
    // Encrypted models this node holds a share of, on their own topic too (a node without encrypted
    // serving refuses it; the list from connect stands then).
    client.subscribe(['smpc'], { signal: controller.signal }).subscribe({
      next: (ev) => this.onEvent(ev),
      error: (err) => {
        if (err.code !== ErrorCodes.ABORTED && client === this.clientValue) this.log.info({ node: this.url, code: err.code }, `${this.name} sends no encrypted-model events: ${err.message}`);
      },
    });
    client.subscribe(['fl'], { signal: controller.signal }).subscribe({
      next: (ev) => this.onEvent(ev),
      error: (err) => {
        if (err.code !== ErrorCodes.ABORTED && client === this.clientValue) this.log.info({ node: this.url, code: err.code }, `${this.name} sends no FL events: ${err.message}`);
      },
    });
  }

  private onEvent(ev: NodeEvent): void {
    switch (ev.event) {
      case 'model-added':
      case 'model-updated':
        // A node without versions replaces a model under its id; with versions, each version is its own.
        this.setVersions([...this.allVersions.filter((m) => m.id !== ev.model.id || (ev.model.versions !== undefined && m.version !== ev.model.version)), ev.model]);
        break;
      case 'model-removed':
        this.setVersions(this.allVersions.filter((m) => m.id !== ev.model_id || (ev.version !== undefined && m.version !== ev.version)));
        break;
      case 'smpc-model-added':
        this.encrypted = [...this.encrypted.filter((e) => e.model_id !== ev.model.model_id), ev.model];
        break;
      case 'smpc-model-removed':
        this.encrypted = this.encrypted.filter((e) => e.model_id !== ev.model_id);
        break;
      case 'dataset-added':
        this.datasets = [...this.datasets.filter((d) => d.id !== ev.dataset.id), ev.dataset];
        break;
      case 'peer-connected':
      case 'peer-disconnected':
        this.peers = [...this.peers.filter((p) => p.id !== ev.peer.id), ev.peer];
        break;
      case 'fl-process-updated': {
        const i = this.flProcesses.findIndex((p) => p.model_id === ev.process.model_id);
        this.flProcesses = i >= 0 ? this.flProcesses.map((p) => (p.model_id === ev.process.model_id ? ev.process : p)) : [...this.flProcesses, ev.process];
        break;
      }
      case 'fl-worker': {
        const key = `${ev.process_id}:${ev.cycle ?? 'done'}`;
        const cycle = this.flWorkers.get(key) ?? new Map<string, FlWorkerNote>();
        // A report is the worker's last word in its cycle; a later refusal ("already in this cycle") does not undo it.
        // Bounded: the latest FL_WORKERS_PER_CYCLE workers of the latest FL_CYCLES_KEPT cycles.
        if (cycle.get(ev.worker_id)?.status !== 'reported') {
          cycle.set(ev.worker_id, { workerId: ev.worker_id, status: ev.status, ...(ev.reason !== undefined && { reason: ev.reason }) });
          if (cycle.size > FL_WORKERS_PER_CYCLE) cycle.delete(cycle.keys().next().value!);
        }
        this.flWorkers.set(key, cycle);
        if (this.flWorkers.size > FL_CYCLES_KEPT) this.flWorkers.delete(this.flWorkers.keys().next().value!);
        break;
      }
    }
    this.changed.fire(this);
  }

  private onStatus(s: SocketStatus): void {
    if (this.socketValue === undefined) return;
    const wasOpen = this.isOpen;
    switch (s.state) {
      case 'connecting':
        this.setState('connecting', undefined);
        break;
      case 'reconnecting': {
        // A connection that never opened says why (refused, unknown host, …); a lost one its close.
        const last = s.failure ?? (s.closedCode !== undefined ? `connection lost (close ${s.closedCode}${s.closedReason ? `: ${s.closedReason}` : ''})` : 'connection lost');
        this.setState('reconnecting', `${last}; reconnect attempt ${s.attempt}`);
        break;
      }
      case 'open':
        if (s.authenticated) {
          this.setState('connected', undefined);
        } else if (this.signingIn) {
          // connect() is signing in on this fresh connection: its answer decides, not this moment.
          this.setState('connecting', 'signing in');
          break;
        } else if (this.authFailure) {
          this.setState('unauthenticated', `sign-in failed: ${this.authFailure.message}`, this.authFailure.code);
        } else if (this.credentials !== undefined) {
          this.setState('unauthenticated', 'the node did not accept the stored sign-in after reconnecting; authenticate again', ErrorCodes.UNAUTHENTICATED);
        } else {
          this.setState('unauthenticated', 'not signed in: authenticate to serve, download or run models', ErrorCodes.UNAUTHENTICATED);
        }
        if (!wasOpen) void this.refresh();
        break;
      case 'closed':
        if (s.reconnectionLimitReached) this.setState('error', `gave up reconnecting: ${s.failure ?? `last close ${s.closedCode ?? '?'}${s.closedReason ? `: ${s.closedReason}` : ''}`}`, ErrorCodes.RECONNECT_LIMIT);
        else this.setState('error', `connection closed (${s.closedCode ?? '?'}${s.closedReason ? `: ${s.closedReason}` : ''})`, ErrorCodes.CONNECTION_DROPPED);
        break;
      case 'idle':
        break;
    }
  }

  private async fetchAll(client: GridClient): Promise<void> {
    try {
      const [id, models, datasets, peers] = await Promise.all([client.getId(), client.listModels(), client.listDatasets(), client.listPeers()]);
      // Every version only where a model has several (a node without versions lists each model once).
      const versions = models.some((m) => (m.versions ?? 1) > 1) ? await client.listModels({ allVersions: true }) : models;
      if (client !== this.clientValue) return;
      this.identity = { id: id.id, name: id.name, version: id.version, capabilities: id.capabilities };
      this.knownId = id.id;
      this.setVersions(versions);
      this.datasets = datasets;
      this.peers = peers;
      // Jobs are per user: an anonymous session has none to list.
      this.jobs = this.supportsTraining && client.socket.status.authenticated ? await client.training.listJobs() : [];
      const fl = this.supportsFl ? (await client.socket.request(FlListProcesses, {})).processes : [];
      // Encrypted models too are listed to a signed-in session only (kept current by the `smpc` events).
      this.encrypted = id.capabilities.includes(SmpcModels.type) && client.socket.status.authenticated ? (await client.socket.request(SmpcModels, {})).models : [];
      if (client !== this.clientValue) return;
      this.flProcesses = fl;
      this.changed.fire(this);
    } catch (err) {
      const e = toGridError(err);
      if (client === this.clientValue) this.log.warn({ node: this.url, code: e.code }, `could not list ${this.name}'s models, datasets and peers: ${e.message}`);
    }
  }

  private setState(state: NodeState, reason: string | undefined, code?: string): void {
    if (state === this.stateValue && reason === this.reason) return;
    this.stateValue = state;
    this.reason = reason;
    this.reasonCode = code;
    this.log.info({ node: this.url, state, ...(reason !== undefined && { reason }) }, `${this.name}: ${state}`);
    this.changed.fire(this);
  }
}
