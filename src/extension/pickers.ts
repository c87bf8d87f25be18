// What commands share: resolving the node or model a command's argument names (or asking the user),
// cancellable progress with real percentages, and showing a failure with its code and actions.
import * as vscode from 'vscode';
import { gridError } from '../core/errors';
import type { ModelInfo } from '../core/protocol/messages';
import { parseModelRef } from '../core/protocol/model-ref';
import type { NodeConnection } from './connection';
import type { Ctx } from './ctx';
import { formatBytes, GroupItem, ModelItem, NodeItem, signatureLine } from './views/items';

export type Cmd = (...args: any[]) => unknown;

/** What a command's argument may name a node with. */
export type NodeArg = NodeItem | GroupItem | ModelItem | NodeConnection | { node?: string } | undefined;

export interface ModelArgs {
  node?: string;
  model?: string;
}

export function isConnection(a: unknown): a is NodeConnection {
  return typeof a === 'object' && a !== null && 'entry' in a && 'connect' in a;
}

/** The node a command's argument names, if it names one. */
export function nodeFromArg(ctx: Ctx, arg: unknown): NodeConnection | undefined {
  if (arg instanceof NodeItem || arg instanceof GroupItem || arg instanceof ModelItem) return arg.connection;
  if (isConnection(arg)) return arg;
  if (typeof arg === 'object' && arg !== null && typeof (arg as { node?: unknown }).node === 'string') {
    const name = (arg as { node: string }).node;
    const found = ctx.find(name);
    if (!found) throw gridError('NOT_FOUND', `no node named or at "${name}"; the nodes are ${ctx.connections.map((c) => `"${c.name}"`).join(', ') || 'none'}`);
    return found;
  }
  return undefined;
}

/** The node to act on: the argument's, the only candidate, or the user's pick. */
export async function pickNode(ctx: Ctx, arg: unknown, opts: { open: boolean; title: string; candidates?: NodeConnection[] }): Promise<NodeConnection | undefined> {
  const given = nodeFromArg(ctx, arg);
  if (given) return given;
  const candidates = opts.candidates ?? (opts.open ? ctx.openConnections : ctx.connections);
  if (candidates.length === 0) {
    throw opts.open
      ? gridError('NOT_CONNECTED', 'no grid node is connected: start the local node or connect to a node first')
      : gridError('NOT_FOUND', 'there are no nodes in the list: add one with "Grid: Add Node"');
  }
  if (candidates.length === 1) return candidates[0];
  const picked = await vscode.window.showQuickPick(
    candidates.map((c) => ({ label: c.name, description: `${c.state} · ${c.url}`, conn: c })),
    { title: opts.title, placeHolder: 'Pick a node' },
  );
  return picked?.conn;
}

/** The model to act on: a ModelItem, `{node, model}`, or the user's pick across open nodes. */
export async function pickModel(ctx: Ctx, arg: unknown, title: string, filter: (m: ModelInfo) => boolean = () => true): Promise<{ conn: NodeConnection; model: ModelInfo } | undefined> {
  if (arg instanceof ModelItem) return { conn: arg.connection, model: arg.model };
  const a = (typeof arg === 'object' && arg !== null ? arg : {}) as ModelArgs;
  if (typeof a.model === 'string') {
    // `name` (its latest version) or `name@N` (that version, asked of the node).
    const id = parseModelRef(a.model)?.id ?? a.model;
    const conn = nodeFromArg(ctx, arg) ?? ctx.openConnections.find((c) => c.models.some((m) => m.id === id));
    if (!conn) throw gridError('NOT_FOUND', `no connected node has a model "${id}"`);
    await conn.whenSynced();
    const model = conn.models.find((m) => m.id === a.model) ?? await conn.client.modelInfo(a.model);
    return { conn, model };
  }
  const open = ctx.openConnections;
  if (open.length === 0) throw gridError('NOT_CONNECTED', 'no grid node is connected: start the local node or connect to a node first');
  const items = open.flatMap((c) => c.models.filter(filter).map((m) => ({ label: m.id, description: `${c.name} · v${m.version}${(m.versions ?? 1) > 1 ? ` (latest of ${m.versions})` : ''} · ${formatBytes(m.size)}`, detail: signatureLine(m), conn: c, model: m })));
  if (items.length === 0) throw gridError('NOT_FOUND', 'no model on the connected nodes fits: serve one with "Grid: Serve Model"');
  const picked = await vscode.window.showQuickPick(items, { title, placeHolder: 'Pick a model', matchOnDescription: true, matchOnDetail: true });
  return picked && { conn: picked.conn, model: picked.model };
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

/** Runs `body`; a failure is shown (with Retry re-running the whole command) and resolves undefined. */
export function guarded(ctx: Ctx, what: string, body: Cmd, node?: (args: unknown[]) => NodeConnection | undefined): Cmd {
  const run = async (...args: unknown[]): Promise<unknown> => {
    try {
      return await body(...args);
    } catch (err) {
      let conn: NodeConnection | undefined;
      try { conn = node?.(args) ?? nodeFromArg(ctx, args[0]); } catch { conn = undefined; }
      ctx.showError(what, err, { retry: () => run(...args), ...(conn && { node: conn }) });
      return undefined;
    }
  };
  return run;
}
