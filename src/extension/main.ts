// Activation only: build the context, register views and commands through it, then connect the
// configured nodes after activate() has returned. Nothing heavy here: sockets, the protocol schemas
// and tensor readers load on first use, onnxruntime-node never in the extension host.
import { loadStartedAt } from './load-clock';
import * as vscode from 'vscode';
import { COMMANDS } from './commands';
import { Config } from './config';
import { Ctx, type ShownError } from './ctx';
import { Log } from './log';
import type { GridNotebookController } from './notebook';
import { GridStatusBar } from './status-bar';
import { ModelsProvider } from './views/models';
import { NodesProvider } from './views/nodes';

/** What activate() returns: the views' own providers and test hooks, for the e2e suites. */
export interface GridExtensionApi {
  readonly activationMs: number;
  /** performance.now() when the activation bundle began and finished evaluating, and when activate() was called. */
  readonly loadStartedAt: number;
  readonly loadEndedAt: number;
  readonly activateStartedAt: number;
  readonly ctx: Ctx;
  readonly nodesView: NodesProvider;
  readonly modelsView: ModelsProvider;
  readonly statusBar: GridStatusBar;
  readonly onDidShowError: vscode.Event<ShownError>;
  /** The notebook controller (tests wait on its events). */
  readonly notebooks: GridNotebookController;
  /** Every input box a command shows (sign-in prompts): the e2e tests type into them. */
  readonly onDidAsk: vscode.Event<vscode.InputBox>;
  /** Every file or destination pick a command shows (workspace files, where a download goes): the e2e tests answer them. */
  readonly onDidPick: vscode.Event<vscode.QuickPick<vscode.QuickPickItem>>;
}

let current: Ctx | undefined;

export function activate(context: vscode.ExtensionContext): GridExtensionApi {
  const t0 = performance.now();
  const log = new Log();
  context.subscriptions.push(log);
  try {
    const ctx = new Ctx(context, log);
    current = ctx;
    for (const [id, factory] of Object.entries(COMMANDS)) ctx.push(vscode.commands.registerCommand(id, factory(ctx)));
    const nodesView = new NodesProvider(ctx);
    const modelsView = new ModelsProvider(ctx);
    const statusBar = new GridStatusBar(ctx);
    ctx.push(
      nodesView, modelsView, statusBar,
      vscode.window.createTreeView('grid.nodes', { treeDataProvider: nodesView, showCollapseAll: true }),
      vscode.window.createTreeView('grid.models', { treeDataProvider: modelsView }),
      // Menus offer Start or Stop Local Node, whichever applies.
      ctx.onDidChangeNodes(() => void vscode.commands.executeCommand('setContext', 'grid.localNodeRunning', ctx.isLocalNodeRunning)),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (Config.affectsNodes(e)) void ctx.syncConfiguredNodes();
        if (Config.needsReconnect(e)) log.info('connection settings changed; they apply from the next connect (Grid: Connect)');
      }),
    );
    // After activation: the first connects must not count against it.
    setImmediate(() => void ctx.connectAll());
    const activationMs = performance.now() - t0;
    log.info(`Grid Workbench activated in ${activationMs.toFixed(1)} ms`);
    return { activationMs, loadStartedAt, loadEndedAt, activateStartedAt: t0, ctx, nodesView, modelsView, statusBar, onDidShowError: ctx.onDidShowError, notebooks: ctx.notebooks, onDidAsk: ctx.onDidAsk, onDidPick: ctx.onDidPick };
  } catch (err) {
    log.error(`activation failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    void vscode.window.showErrorMessage(`Grid Workbench failed to activate: ${err instanceof Error ? err.message : String(err)}`);
    throw err;
  }
}

/** Stops the local node and closes every connection; VS Code waits for the promise. */
export function deactivate(): Promise<void> | undefined {
  const ctx = current;
  current = undefined;
  return ctx?.dispose();
}

/** Everything above has been evaluated (read with loadStartedAt by the e2e suite). */
const loadEndedAt = performance.now();
