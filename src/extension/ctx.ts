// The one context object. Extension lifetime: everything pushed to `subscriptions` (views, commands,
// the log, the status bar, the notebook controller, the local node). Connection lifetime: each NodeConnection owns its socket,
// event stream and listeners, and drops them on disconnect or before reconnecting.
// One node, one entry: connections are told apart by the node id they learn (get-id), so the same node
// added twice (two names, ws://localhost:P and ws://127.0.0.1:P, or a grid.nodes entry pointing at the
// local node) shows once. The first in the tree's order is the node; a later one is its alias: its own
// socket is closed, it is named on the first one's row ("also NAME"), and commands naming it act on the
// first one. Removing the first one (or stopping the local node) brings an alias back as a node.
import * as vscode from 'vscode';
import type { Credentials } from '../core/client';
import { ErrorCodes, GridError, gridError, toGridError } from '../core/errors';
import { findLocalNode, localNodeFile, sameUrl } from '../core/local-node';
import { Config, type NodeEntry } from './config';
import type { ConnectionSettings, NodeConnection } from './connection';
import { heavy } from './heavy';
import type { LocalNode } from './local-node';
import type { Log } from './log';
import { createNotebookController, type GridNotebookController } from './notebook';
import { inVsCodeWords, needsSignIn } from './wording';

const CREDENTIALS_KEY = (url: string) => `grid.credentials:${url}`;
export const LOCAL_NODE_NAME = 'Local node';

export interface ShownError {
  message: string;
  code: string;
  actions: string[];
}

/** What showError may offer besides the logs. */
export interface ErrorActions {
  /** Runs the command again from the start (Retry). */
  retry?: () => unknown;
  /** The node the failure is about: Authenticate signs in to it. */
  node?: NodeConnection;
  /** Runs after a successful sign-in (Authenticate): the command again, with the answers already given. */
  afterSignIn?: () => unknown;
}

export class Ctx implements vscode.Disposable {
  readonly extCtx: vscode.ExtensionContext;
  readonly log: Log;
  readonly config = new Config();
  /** Keyed by URL: one connection per node, shared by the views, the commands and the notebook kernel. */
  private readonly connectionsByUrl = new Map<string, NodeConnection>();
  private localNodeValue: LocalNode | undefined;
  private localConnection: NodeConnection | undefined;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when any node's state, identity or lists change, or nodes are added/removed. */
  readonly onDidChangeNodes = this.changed.event;
  private readonly errorShown = new vscode.EventEmitter<ShownError>();
  /** Every error message shown to the user, as shown (the e2e tests read it). */
  readonly onDidShowError = this.errorShown.event;
  private readonly asked = new vscode.EventEmitter<vscode.InputBox>();
  /** Every input box a command shows (the sign-in prompts), as shown: the e2e tests answer them. */
  readonly onDidAsk = this.asked.event;
  private readonly picking = new vscode.EventEmitter<vscode.QuickPick<vscode.QuickPickItem>>();
  /** Every file or destination pick a command shows (`pick`), as shown: the e2e tests answer them. */
  readonly onDidPick = this.picking.event;
  /** A later entry for a node → the first entry for it (see the header). */
  private readonly aliasOf = new Map<NodeConnection, NodeConnection>();
  private readonly idSeen = new Map<NodeConnection, string | undefined>();
  private disposed = false;
  /** The "Grid (TypeScript)" notebook controller: one kernel process per open notebook. */
  readonly notebooks: GridNotebookController;

  constructor(extCtx: vscode.ExtensionContext, log: Log) {
    this.extCtx = extCtx;
    this.log = log;
    this.notebooks = createNotebookController(this);
    this.push(this.changed, this.errorShown, this.asked, this.picking, this.notebooks);
  }

  /** Registers an extension-lifetime disposable. */
  push(...disposables: vscode.Disposable[]): void {
    this.extCtx.subscriptions.push(...disposables);
  }

  get secrets(): vscode.SecretStorage {
    return this.extCtx.secrets;
  }

  /** Every node shown in the tree: the local node first (while it runs), then `grid.nodes` in order; aliases left out. */
  get connections(): NodeConnection[] {
    return this.entries.filter((c) => !this.aliasOf.has(c));
  }

  /** Every entry, aliases included, in the tree's order. */
  get entries(): NodeConnection[] {
    const configured = this.config.nodes.map((n) => this.connectionsByUrl.get(n.url)).filter((c): c is NodeConnection => c !== undefined);
    return this.localConnection ? [this.localConnection, ...configured.filter((c) => c !== this.localConnection)] : configured;
  }

  /** The other entries for the node `conn` is (shown on its row). */
  aliasesOf(conn: NodeConnection): NodeConnection[] {
    return [...this.aliasOf].filter(([, first]) => first === conn).map(([alias]) => alias);
  }

  /** The connection commands use for `conn`: itself, or the first entry for its node. */
  primary(conn: NodeConnection): NodeConnection {
    return this.aliasOf.get(conn) ?? conn;
  }

  /** Called on every change: aliases follow the node ids learned (one pass over a handful of nodes). */
  private checkIdentities(): void {
    const entries = this.entries;
    if (this.idSeen.size === entries.length && entries.every((c) => this.idSeen.has(c) && this.idSeen.get(c) === c.knownId)) return;
    this.idSeen.clear();
    for (const c of entries) this.idSeen.set(c, c.knownId);
    const firstById = new Map<string, NodeConnection>();
    const before = new Map(this.aliasOf);
    this.aliasOf.clear();
    for (const c of entries) {
      if (c.knownId === undefined) continue;
      const first = firstById.get(c.knownId);
      if (first === undefined) { firstById.set(c.knownId, c); continue; }
      this.aliasOf.set(c, first);
      if (before.get(c) !== first) {
        this.log.info({ node: c.url, same_as: first.url, node_id: c.knownId }, `${c.name} (${c.url}) is the same node as ${first.name} (${first.url}): shown once, as ${first.name}`);
        c.disconnect();
      }
    }
    // An alias whose first entry went away is a node again.
    for (const [alias] of before) {
      if (this.aliasOf.has(alias) || !entries.includes(alias) || alias.isOpen) continue;
      void this.connect(alias).catch((err: unknown) => this.log.warn({ node: alias.url }, `could not connect to ${alias.name}: ${toGridError(err).message}`));
    }
  }

  get openConnections(): NodeConnection[] {
    return this.connections.filter((c) => c.isOpen);
  }

  get localNode(): LocalNode | undefined {
    return this.localNodeValue;
  }

  /** Finds a node by name or URL; an alias's name or URL finds the node's first entry. */
  find(nameOrUrl: string): NodeConnection | undefined {
    const entry = this.findEntry(nameOrUrl);
    return entry && this.primary(entry);
  }

  /** Finds an entry (an alias stays itself: Remove Node removes the alias). */
  findEntry(nameOrUrl: string): NodeConnection | undefined {
    return this.entries.find((c) => c.url === nameOrUrl || c.name === nameOrUrl);
  }

  fireChanged(): void {
    if (this.disposed) return;
    this.checkIdentities();
    this.changed.fire();
  }

  /** An input box (a sign-in prompt); resolves with the text entered, undefined when dismissed. */
  ask(opts: { title: string; prompt: string; value?: string; password?: boolean }): Promise<string | undefined> {
    const box = vscode.window.createInputBox();
    box.title = opts.title;
    box.prompt = opts.prompt;
    box.value = opts.value ?? '';
    box.password = opts.password ?? false;
    box.ignoreFocusOut = true;
    return new Promise<string | undefined>((resolve) => {
      let answer: string | undefined;
      const subs = [
        box.onDidAccept(() => { answer = box.value; box.hide(); }),
        box.onDidHide(() => { subs.forEach((d) => d.dispose()); box.dispose(); resolve(answer); }),
      ];
      box.show();
      this.asked.fire(box);
    });
  }

  /** A quick pick with one answer; resolves with the item accepted, undefined when dismissed. */
  pick<T extends vscode.QuickPickItem>(items: readonly T[], opts: { title: string; placeHolder: string; matchOnDescription?: boolean; matchOnDetail?: boolean }): Promise<T | undefined> {
    const pick = vscode.window.createQuickPick<T>();
    pick.title = opts.title;
    pick.placeholder = opts.placeHolder;
    pick.matchOnDescription = opts.matchOnDescription ?? false;
    pick.matchOnDetail = opts.matchOnDetail ?? false;
    pick.items = items;
    return new Promise<T | undefined>((resolve) => {
      let answer: T | undefined;
      const subs = [
        pick.onDidAccept(() => { answer = pick.selectedItems[0] ?? pick.activeItems[0]; pick.hide(); }),
        pick.onDidHide(() => { subs.forEach((d) => d.dispose()); pick.dispose(); resolve(answer); }),
      ];
      pick.show();
      this.picking.fire(pick as unknown as vscode.QuickPick<vscode.QuickPickItem>);
    });
  }

  /** Runs the Authenticate command for `conn`; resolves true once signed in. */
  async signIn(conn: NodeConnection): Promise<boolean> {
    await vscode.commands.executeCommand('grid.authenticate', conn);
    return conn.isSignedIn;
  }

  private connectionSettings(): ConnectionSettings {
    const c = this.config;
    return { handshakeTimeoutMs: c.connectTimeoutMs, heartbeatMs: c.heartbeatMs, reconnect: c.reconnect };
  }

  /** Creates the connection objects for `grid.nodes` (not connecting them) and drops removed ones. */
  async syncConfiguredNodes(): Promise<void> {
    const { NodeConnection } = heavy();
    const wanted = new Map(this.config.nodes.map((n) => [n.url, n]));
    for (const [url, conn] of this.connectionsByUrl) {
      // The local node's connection may be a configured entry it took over: removing the entry leaves it the local node's.
      if (conn.local || conn === this.localConnection || wanted.has(url) || this.adding.has(url)) continue;
      conn.dispose();
      this.connectionsByUrl.delete(url);
    }
    for (const entry of wanted.values()) {
      if (this.connectionsByUrl.has(entry.url)) continue;
      this.track(new NodeConnection(entry, { logger: this.log }));
    }
    this.fireChanged();
  }

  private track(conn: NodeConnection): NodeConnection {
    this.connectionsByUrl.set(conn.url, conn);
    conn.onDidChange(() => this.fireChanged());
    return conn;
  }

  /**
   * Connects every configured node that is not connected yet, and joins this user's local node when
   * one runs (started by `npm run start`, `grid-node --local` or another window); failures are logged, not shown.
   */
  async connectAll(): Promise<void> {
    await this.syncConfiguredNodes();
    // Joined only once its node answers with the record's id: a crashed node's record may name a reused pid.
    if (!this.localConnection && findLocalNode() !== undefined && await heavy().confirmedLocalNode(localNodeFile()) !== undefined) {
      await this.startLocalNode().catch((err: unknown) => this.log.warn(`could not join the local node: ${toGridError(err).message}`));
    }
    await Promise.all(this.connections.filter((c) => c.state === 'disconnected').map((c) => this.connect(c).catch((err: unknown) => {
      this.log.warn({ node: c.url }, `could not connect to ${c.name}: ${toGridError(err).message}`);
    })));
  }

  async connect(conn: NodeConnection): Promise<void> {
    await conn.connect(this.connectionSettings(), await this.credentials(conn));
  }

  /**
   * Connects `conn` and waits until it is open or its first attempt fails, not for as long as
   * reconnecting goes on (by default without end: a node that is down would be waited on forever).
   * Not open: throws NOT_CONNECTED naming the address and why; the connection goes on reconnecting.
   */
  async connectOrThrow(conn: NodeConnection): Promise<void> {
    let failure: unknown;
    await conn.untilOpenOrFailing(this.connect(conn).catch((err: unknown) => { failure = err; }));
    if (conn.isOpen) return;
    const why = conn.stateReason ?? (failure !== undefined ? toGridError(failure).message : conn.state);
    throw gridError('NOT_CONNECTED', `could not connect to ${conn.name} (${conn.url}): ${why}`, { url: conn.url, state: conn.state });
  }

  /** URLs being added with `onlyOnceOpen`: connected, not yet in `grid.nodes`. */
  private readonly adding = new Set<string>();

  /**
   * Adds a node to `grid.nodes` (user settings) and connects to it. `onlyOnceOpen` (a notebook's
   * grid.connect(url)): connect first, and add it only once it opened; else throw NOT_CONNECTED, and
   * nothing is added.
   */
  async addNode(entry: NodeEntry, opts: { onlyOnceOpen?: boolean } = {}): Promise<NodeConnection> {
    let parsed: URL;
    try {
      parsed = new URL(entry.url);
    } catch {
      throw gridError('INVALID_URL', `"${entry.url}" is not a URL; a node address looks like ws://127.0.0.1:5000`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw gridError('INVALID_URL', `"${entry.url}" is not a ws:// or wss:// URL; a node address looks like ws://127.0.0.1:5000`);
    const nodes = this.config.nodes;
    if (nodes.some((n) => n.url === entry.url)) throw gridError('ALREADY_EXISTS', `a node with the address ${entry.url} is already in the list`);
    if (nodes.some((n) => n.name === entry.name)) throw gridError('ALREADY_EXISTS', `a node named "${entry.name}" is already in the list; pick another name`);
    if (opts.onlyOnceOpen) return this.addOnceOpen(entry);
    await this.config.setNodes([...nodes, entry]);
    await this.syncConfiguredNodes();
    const conn = this.connectionsByUrl.get(entry.url)!;
    void this.connect(conn).catch((err: unknown) => this.log.warn({ node: entry.url }, `could not connect to ${entry.name}: ${toGridError(err).message}`));
    return conn;
  }

  private async addOnceOpen(entry: NodeEntry): Promise<NodeConnection> {
    const { NodeConnection } = heavy();
    const conn = new NodeConnection(entry, { logger: this.log });
    try {
      await this.connectOrThrow(conn);
    } catch (err) {
      conn.dispose();
      const e = toGridError(err);
      throw new GridError(e.code, `${e.message}; ${entry.url} was not added to grid.nodes`, e.details);
    }
    // Added meanwhile (two cells connecting at once): that entry is the node.
    const added = this.connectionsByUrl.get(entry.url);
    if (added !== undefined) {
      conn.dispose();
      return added;
    }
    this.adding.add(entry.url);
    try {
      this.track(conn);
      await this.config.setNodes([...this.config.nodes.filter((n) => n.url !== entry.url), entry]);
      await this.syncConfiguredNodes();
    } finally {
      this.adding.delete(entry.url);
    }
    return conn;
  }

  async removeNode(conn: NodeConnection): Promise<void> {
    if (conn.local) throw gridError('FORBIDDEN', 'the local node is not in the node list; stop it with "Grid: Stop Local Node"');
    await this.config.setNodes(this.config.nodes.filter((n) => n.url !== conn.url));
    await this.secrets.delete(CREDENTIALS_KEY(conn.url));
    await this.syncConfiguredNodes();
  }

  // ---- credentials (SecretStorage only, never settings) ---------------------------------------

  async credentials(conn: NodeConnection): Promise<Credentials | undefined> {
    // This user's local node signs them in through its runtime record (same OS user), whoever started it:
    // the record the supervisor started or joined, which it confirmed by the node's id. A grid.nodes entry
    // at the same URL gets it too; the record file is not read here, since a live pid alone may name
    // another process and its URL another node, which must not get the admin token.
    const local = this.localNodeValue?.record();
    if (local !== undefined && (conn.local || sameUrl(local.url, conn.url))) return { token: local.token };
    const raw = await this.secrets.get(CREDENTIALS_KEY(conn.url));
    if (!raw) return undefined;
    try {
      const c = JSON.parse(raw) as { username?: unknown; password?: unknown };
      if (typeof c.username === 'string' && typeof c.password === 'string') return { username: c.username, password: c.password };
    } catch { /* a damaged entry is treated as none */ }
    return undefined;
  }

  /** Signs in and, on success, keeps the credentials for the next connect. */
  async authenticate(conn: NodeConnection, creds: { username: string; password: string }): Promise<void> {
    await conn.authenticate(creds);
    if (!conn.local) await this.secrets.store(CREDENTIALS_KEY(conn.url), JSON.stringify(creds));
  }

  // ---- the local node ---------------------------------------------------------------------------

  private localStarting: Promise<NodeConnection> | undefined;

  /** Starts the local node (or joins a start under way) and connects to it, signed in as admin. */
  startLocalNode(): Promise<NodeConnection> {
    this.localStarting ??= this.startLocalNodeOnce().finally(() => { this.localStarting = undefined; });
    return this.localStarting;
  }

  get isLocalNodeRunning(): boolean {
    return this.localNodeValue?.isRunning ?? false;
  }

  private async startLocalNodeOnce(): Promise<NodeConnection> {
    if (this.localConnection?.isOpen) return this.localConnection;
    const { LocalNode, localNodePaths, NodeConnection } = heavy();
    if (!this.localNodeValue) {
      const paths = localNodePaths(this.extCtx);
      // The settings are read at every start: a changed port or demo-datasets choice applies when the node next starts.
      const node = new LocalNode({ ...paths, settings: () => ({ port: this.config.localNodePort, demoDatasets: this.config.localNodeDemoDatasets }), log: this.log });
      this.localNodeValue = node;
      this.push(node);
      // A restarted node has a new token in its record: sign in again with it.
      node.onDidRestart(() => {
        if (this.localConnection) void this.connect(this.localConnection).catch((err: unknown) => this.log.warn(`could not reconnect to the restarted local node: ${toGridError(err).message}`));
      });
      node.onDidExit(({ restarting, gaveUp, reason }) => {
        const url = this.localConnection?.url;
        if (!restarting && this.localConnection) {
          this.releaseLocalConnection();
          this.fireChanged();
        }
        // Not a Stop: the node went away and nothing brings it back. A log line alone would leave the user guessing.
        if (gaveUp) this.showError('The local node stopped', gridError('NOT_CONNECTED', `the local node${url ? ` at ${url}` : ''} is gone: ${reason ?? 'it exited'}; see the Grid log (Show Logs), then start it again`));
      });
    }
    const url = await this.localNodeValue.start();
    if (this.localConnection && this.localConnection.url !== url) this.releaseLocalConnection();
    if (!this.localConnection) {
      // A configured entry for the same URL would be a second socket to one node: reuse it instead.
      this.localConnection = this.connectionsByUrl.get(url) ?? this.track(new NodeConnection({ name: LOCAL_NODE_NAME, url }, { local: true, logger: this.log }));
    }
    this.fireChanged();
    await this.connectOrThrow(this.localConnection);
    return this.localConnection;
  }

  /** Stops the local node; one this window joined is left running: resolves with the pid of the program that runs it. */
  async stopLocalNode(): Promise<{ leftRunning: number } | undefined> {
    const node = this.localNodeValue;
    const joined = node?.isJoined ? node.pid : undefined;
    this.releaseLocalConnection();
    await node?.stop();
    this.fireChanged();
    return joined !== undefined ? { leftRunning: joined } : undefined;
  }

  /**
   * Lets go of the local node's connection: its own goes away; a `grid.nodes` entry it took over (same
   * URL, grid.localNode.port fixed) stays listed, disconnected.
   */
  private releaseLocalConnection(): void {
    const conn = this.localConnection;
    this.localConnection = undefined;
    if (!conn) return;
    if (conn.local || !this.config.nodes.some((n) => n.url === conn.url)) {
      conn.dispose();
      if (this.connectionsByUrl.get(conn.url) === conn) this.connectionsByUrl.delete(conn.url);
    } else {
      conn.disconnect();
    }
  }

  // ---- errors -----------------------------------------------------------------------------------

  /**
   * Shows a failure with the actions that fit its code; resolves with the action picked (not awaited
   * by commands: the notification may stay open). A user's own cancel is logged, not shown.
   */
  showError(what: string, err: unknown, extra: ErrorActions = {}): void {
    // Messages from the node name the CLI's flags; here the way to sign in is a VS Code command.
    const e = inVsCodeWords(err, extra.node?.name);
    if (e.code === ErrorCodes.ABORTED) {
      this.log.info(`${what}: cancelled`);
      return;
    }
    this.log.error({ code: e.code, ...(e.details && { details: e.details }) }, `${what}: ${e.message}`);
    const actions: string[] = [];
    // First, so it is the notification's primary action: signing in fixes it, and the command goes on.
    if (needsSignIn(e) && extra.node) actions.push('Authenticate');
    if (extra.retry) actions.push('Retry');
    if (e.code === ErrorCodes.NOT_CONNECTED && !this.localNodeValue?.isRunning) actions.push('Start Local Node');
    actions.push('Show Logs');
    const message = `${what}: ${e.message} (${e.code})`;
    this.errorShown.fire({ message, code: e.code, actions });
    void vscode.window.showErrorMessage(message, ...actions).then(async (picked) => {
      if (picked === 'Retry') void extra.retry?.();
      else if (picked === 'Authenticate' && extra.node) {
        if (await this.signIn(extra.node)) void (extra.afterSignIn ?? extra.retry)?.();
      } else if (picked === 'Start Local Node') void vscode.commands.executeCommand('grid.startLocalNode');
      else if (picked === 'Show Logs') this.log.show();
    });
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const c of this.connectionsByUrl.values()) c.dispose();
    this.connectionsByUrl.clear();
    await this.localNodeValue?.stop();
  }
}
