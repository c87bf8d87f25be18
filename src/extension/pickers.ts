// What commands share: resolving the node or model a command's argument names (or asking the user),
// cancellable progress with real percentages, and showing a failure with its code and actions.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import type { SmpcModelInfo } from '../core/protocol/smpc-messages';
import { parseModelRef } from '../core/protocol/model-ref';
import type { ModelUse, NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { signInHint } from './wording';
import { EncryptedModelItem, encryptedAsModel, formatBytes, GroupItem, ModelItem, NodeItem, signatureLine } from './views/items';

export type Cmd = (...args: any[]) => unknown;

/** What a command's argument may name a node with. */
export type NodeArg = NodeItem | GroupItem | ModelItem | NodeConnection | { node?: string } | undefined;

export interface ModelArgs {
  node?: string;
  model?: string;
}

/** What a command needs of its node: to exist, to be open, or to be open and signed in. */
export type Need = 'any' | 'open' | 'signedIn';

/**
 * One run of a command: the answers given so far (as the command's own options object, so Authenticate
 * can run it again without asking them again) and the node it acts on, once known.
 */
export interface Flow {
  answers: Record<string, unknown>;
  node?: NodeConnection;
}

export function isConnection(a: unknown): a is NodeConnection {
  return typeof a === 'object' && a !== null && 'entry' in a && 'connect' in a;
}

/**
 * The node a command's argument names, if it names one: the node's first entry when the name is an
 * alias (Ctx header), the alias itself with `entry` (Remove Node).
 */
export function nodeFromArg(ctx: Ctx, arg: unknown, opts: { entry?: boolean } = {}): NodeConnection | undefined {
  const resolve = (c: NodeConnection) => (opts.entry ? c : ctx.primary(c));
  if (arg instanceof NodeItem || arg instanceof GroupItem || arg instanceof ModelItem) return resolve(arg.connection);
  if (isConnection(arg)) return resolve(arg);
  if (typeof arg === 'object' && arg !== null && typeof (arg as { node?: unknown }).node === 'string') {
    const name = (arg as { node: string }).node;
    const found = ctx.findEntry(name);
    if (!found) throw gridError('NOT_FOUND', `no node named or at "${name}"; the nodes are ${ctx.connections.map((c) => `"${c.name}"`).join(', ') || 'none'}`);
    return resolve(found);
  }
  return undefined;
}

/** Throws, before any question is asked, when `conn` cannot do what the command needs. */
export function requireNode(conn: NodeConnection, need: Need, toDo: string): void {
  if (need === 'any') return;
  if (!conn.isOpen) {
    throw gridError('NOT_CONNECTED', `${conn.name} (${conn.url}) is ${conn.state}${conn.stateReason ? ` (${conn.stateReason})` : ''}: connect to it first (Grid: Connect) to ${toDo}`);
  }
  if (need === 'signedIn' && !conn.isSignedIn) throw gridError('UNAUTHENTICATED', `${conn.name} is not signed in: ${signInHint(conn.name)} to ${toDo}`);
}

const fits = (c: NodeConnection, need: Need) => need === 'any' || (need === 'open' ? c.isOpen : c.isSignedIn);

/**
 * The node to act on: the argument's (checked before any question), the only one that can do it, or
 * the user's pick. Nodes that cannot are left out; one that only needs a sign-in is offered as
 * "Sign in to NODE first", which signs in and goes on with it.
 */
export async function pickNode(ctx: Ctx, arg: unknown, opts: { need: Need; title: string; toDo: string; candidates?: NodeConnection[]; flow?: Flow }): Promise<NodeConnection | undefined> {
  const chosen = (c: NodeConnection) => {
    if (opts.flow) { opts.flow.node = c; opts.flow.answers.node = c.url; }
    return c;
  };
  const given = nodeFromArg(ctx, arg);
  if (given) {
    if (opts.flow) opts.flow.node = given;
    requireNode(given, opts.need, opts.toDo);
    return chosen(given);
  }
  const pool = opts.candidates ?? ctx.connections;
  const usable = pool.filter((c) => fits(c, opts.need));
  const signable = opts.need === 'signedIn' ? pool.filter((c) => c.state === 'unauthenticated') : [];
  if (usable.length === 0 && signable.length === 0) {
    throw opts.need === 'any'
      ? gridError('NOT_FOUND', 'there are no nodes in the list: add one with "Grid: Add Node"')
      : gridError('NOT_CONNECTED', `no grid node is connected${opts.need === 'signedIn' ? ' and signed in' : ''} to ${opts.toDo}: start the local node or connect to a node first`);
  }
  if (usable.length === 1 && signable.length === 0) return chosen(usable[0]!);
  const picked = await vscode.window.showQuickPick([
    ...usable.map((c) => ({ label: c.name, description: `${c.state} · ${c.url}`, conn: c, signIn: false })),
    ...signable.map((c) => ({ label: `$(key) Sign in to ${c.name} first`, description: `not signed in · ${c.url}`, conn: c, signIn: true })),
  ], { title: opts.title, placeHolder: 'Pick a node' });
  if (!picked) return undefined;
  if (picked.signIn && !(await ctx.signIn(picked.conn))) return undefined;
  return chosen(picked.conn);
}

/**
 * The model to act on: a ModelItem, `{node, model}`, or the user's pick across the nodes. The pick
 * lists only models this session may `use` (owner and admins always may; others as the model's flags
 * say); nodes not signed in are offered as "Sign in to NODE first".
 */
export async function pickModel(ctx: Ctx, arg: unknown, title: string, use: ModelUse | 'view', flow?: Flow): Promise<PickedModel | undefined> {
  const need: Need = use === 'view' ? 'open' : 'signedIn';
  const toDo = use === 'view' ? 'list its models' : `${use === 'infer' ? 'run' : use} its models`;
  const chosen = (conn: NodeConnection, model: ModelInfo, encrypted?: SmpcModelInfo): PickedModel => {
    if (flow) { flow.node = conn; flow.answers.node = conn.url; flow.answers.model = model.id; }
    return { conn, model, ...(encrypted && { encrypted }) };
  };
  // Encrypted models (docs/smpc.md) offer inference, and deletion to their owner or an admin.
  const held = (c: NodeConnection) => (use === 'infer' ? c.encrypted : use === 'delete' ? c.encrypted.filter((e) => c.mayDeleteEncrypted(e)) : []);
  if (arg instanceof EncryptedModelItem) {
    const conn = ctx.primary(arg.connection);
    if (flow) flow.node = conn;
    requireNode(conn, need, toDo);
    return chosen(conn, encryptedAsModel(arg.info), arg.info);
  }
  if (arg instanceof ModelItem) {
    const conn = ctx.primary(arg.connection);
    if (flow) flow.node = conn;
    requireNode(conn, need, toDo);
    return chosen(conn, arg.model);
  }
  const a = (typeof arg === 'object' && arg !== null ? arg : {}) as ModelArgs;
  if (typeof a.model === 'string') {
    // `name` (its latest version) or `name@N` (that version, asked of the node).
    const id = parseModelRef(a.model)?.id ?? a.model;
    const named = nodeFromArg(ctx, arg);
    const conn = named ?? ctx.openConnections.find((c) => c.models.some((m) => m.id === id));
    const enc = (c: NodeConnection) => (c.models.some((m) => m.id === id) ? undefined : held(c).find((e) => e.model_id === a.model));
    const encHolder = named ? (enc(named) && named) : conn ? undefined : ctx.openConnections.find((c) => enc(c) !== undefined);
    if (encHolder) {
      if (flow) flow.node = encHolder;
      requireNode(encHolder, need, toDo);
      return chosen(encHolder, encryptedAsModel(enc(encHolder)!), enc(encHolder));
    }
    if (!conn) throw gridError('NOT_FOUND', `no connected node has a model "${id}"`);
    if (flow) flow.node = conn;
    requireNode(conn, need, toDo);
    await conn.whenSynced();
    const model = conn.models.find((m) => m.id === a.model) ?? await conn.client.modelInfo(a.model);
    return chosen(conn, model);
  }
  const open = ctx.openConnections;
  if (open.length === 0) throw gridError('NOT_CONNECTED', 'no grid node is connected: start the local node or connect to a node first');
  const usable = open.filter((c) => fits(c, need));
  const signable = need === 'signedIn' ? open.filter((c) => c.state === 'unauthenticated') : [];
  const items = [
    ...usable.flatMap((c) => c.models.filter((m) => use === 'view' || c.mayUse(m, use)).map((m) => ({ label: m.id, description: `${c.name} · v${m.version}${(m.versions ?? 1) > 1 ? ` (latest of ${m.versions})` : ''} · ${formatBytes(m.size)}`, detail: signatureLine(m), conn: c, model: m as ModelInfo | undefined }))),
    ...usable.flatMap((c) => held(c).filter((e) => e.party === 0 || !usable.some((o) => o.identity?.id === e.peer.id)).map((e) => ({ label: `$(lock) ${e.model_id}`, description: `${c.name} · encrypted`, detail: signatureLine(encryptedAsModel(e)), conn: c, model: encryptedAsModel(e) as ModelInfo | undefined, encrypted: e as SmpcModelInfo | undefined }))),
    ...signable.map((c) => ({ label: `$(key) Sign in to ${c.name} first`, description: `not signed in · ${c.url}`, detail: `then pick among the models you may ${use === 'infer' ? 'run' : use} there`, conn: c, model: undefined as ModelInfo | undefined })),
  ];
  if (items.length === 0) throw gridError('NOT_FOUND', `no model on the connected nodes that you may ${use === 'infer' ? 'run' : use}: serve one with "Grid: Serve Model"`);
  const picked = await ctx.pick(items, { title, placeHolder: 'Pick a model', matchOnDescription: true, matchOnDetail: true });
  if (!picked) return undefined;
  if (picked.model === undefined) {
    if (!(await ctx.signIn(picked.conn))) return undefined;
    return pickModel(ctx, arg, title, use, flow);
  }
  return chosen(picked.conn, picked.model, (picked as { encrypted?: SmpcModelInfo }).encrypted);
}

/** A model to act on; `encrypted` when it is served encrypted (this node holds one share of it). */
export interface PickedModel {
  conn: NodeConnection;
  model: ModelInfo;
  encrypted?: SmpcModelInfo;
}

/** A long operation in a cancellable notification; `report(done, total)` shows real percentages. */
export function withProgress<T>(title: string, task: (signal: AbortSignal, report: (done: number, total: number) => void) => Promise<T>): Thenable<T> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
    const controller = new AbortController();
    const sub = token.onCancellationRequested(() => controller.abort());
    let shown = 0;
    const report = (done: number, total: number) => {
      const pct = total > 0 ? Math.floor((done / total) * 100) : 0;
      if (pct <= shown && done < total) return;
      progress.report({ increment: pct - shown, message: `${formatBytes(done)} of ${formatBytes(total)}` });
      shown = pct;
    };
    return task(controller.signal, report).finally(() => sub.dispose());
  });
}

/**
 * Runs `body` with a fresh Flow; a failure is shown in VS Code's words, with Retry (the whole command
 * again) and, when a sign-in may fix it, Authenticate first: it signs in to the flow's node and runs the
 * command again with the answers already given, so nothing is asked twice.
 */
export function guarded(ctx: Ctx, what: string, body: (arg: any, flow: Flow) => unknown, node?: (args: unknown[]) => NodeConnection | undefined): Cmd {
  const run = async (...args: unknown[]): Promise<unknown> => {
    const flow: Flow = { answers: {} };
    try {
      return await body(args[0], flow);
    } catch (err) {
      let conn = flow.node;
      if (!conn) { try { conn = node?.(args) ?? nodeFromArg(ctx, args[0]); } catch { conn = undefined; } }
      const again = Object.keys(flow.answers).length > 0 ? { ...flow.answers } : args[0];
      ctx.showError(what, err, { retry: () => run(...args), afterSignIn: () => run(again), ...(conn && { node: conn }) });
      return undefined;
    }
  };
  return run;
}

/** Folders a workspace file pick never lists. */
const NOT_SEARCHED = '{**/node_modules/**,**/.git/**,**/.test-work/**}';

/**
 * Files of the workspace matching `glob` (`workspace.findFiles`, so open folders only), as quick-pick
 * rows: the file's name, its folder relative to the workspace. Sorted by path; at most `max`.
 */
export async function workspaceFiles(glob: string, max = 200): Promise<{ label: string; description: string; file: string }[]> {
  if (!vscode.workspace.workspaceFolders?.length) return [];
  const uris = await vscode.workspace.findFiles(glob, NOT_SEARCHED, max);
  return uris
    .map((u) => ({ label: path.basename(u.fsPath), description: path.dirname(vscode.workspace.asRelativePath(u, false)).replace(/^\.$/, ''), file: u.fsPath }))
    .sort((a, b) => a.file.localeCompare(b.file));
}

/**
 * One file: a pick of the workspace's files matching `glob`, with "Browse…" for VS Code's open dialog
 * (straight to the dialog when the workspace has none). Undefined when dismissed.
 */
export async function pickFile(ctx: Ctx, opts: { title: string; glob: string; placeHolder: string; filters: Record<string, string[]>; openLabel: string }): Promise<string | undefined> {
  const browse = () => vscode.window.showOpenDialog({ title: opts.title, canSelectMany: false, filters: opts.filters, openLabel: opts.openLabel }).then((u) => u?.[0]?.fsPath);
  const files = await workspaceFiles(opts.glob);
  if (files.length === 0) return browse();
  const picked = await ctx.pick<vscode.QuickPickItem & { file?: string }>([
    ...files,
    { label: '', kind: vscode.QuickPickItemKind.Separator },
    { label: '$(folder-opened) Browse…', detail: 'a file outside the workspace, with VS Code\'s file dialog', alwaysShow: true },
  ], { title: opts.title, placeHolder: opts.placeHolder, matchOnDescription: true });
  if (!picked) return undefined;
  return picked.file ?? browse();
}
