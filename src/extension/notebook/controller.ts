// The "Grid (TypeScript)" NotebookController for .ipynb files: one KernelHost (a child process) per
// notebook, cells queued in order with their execution order and times, outputs streamed in while a
// cell runs, `end(false)` with the error on every failure path. The kernel and the bridge load on
// the first run, so activation only pays for the controller object.
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as vscode from 'vscode';
import type { ExecutionResult, KernelHost } from '../../kernel';
import { heavy } from '../heavy';
import type { BridgeNodes } from './bridge';
import { CellOutputs } from './outputs';

export const CONTROLLER_ID = 'grid-typescript';
export const NOTEBOOK_TYPE = 'jupyter-notebook';
export const KERNELSPEC = { name: 'grid-typescript', display_name: 'Grid (TypeScript)', language: 'typescript' };
export const LANGUAGE_INFO = { name: 'typescript', file_extension: '.ts', mimetype: 'text/typescript' };

/** Cells running at least this long announce their end when the user may not be watching. */
export const LONG_CELL_MS = 10_000;

export interface ControllerDeps {
  extensionPath: string;
  log: { info(msg: string): void; warn(msg: string): void; error(msg: string): void; debug(msg: string): void };
  nodes: BridgeNodes;
}

interface NotebookKernel {
  host: KernelHost;
  disposables: { dispose(): void }[];
}

export class GridNotebookController implements vscode.Disposable {
  readonly controller: vscode.NotebookController;
  private readonly deps: ControllerDeps;
  private readonly kernels = new Map<vscode.NotebookDocument, Promise<NotebookKernel>>();
  private readonly disposables: vscode.Disposable[] = [];
  private readonly finished = new vscode.EventEmitter<{ cell: vscode.NotebookCell; result: ExecutionResult }>();
  /** Fires when a cell's execution has ended and its outputs are in place (tests wait on it). */
  readonly onDidFinishCell = this.finished.event;
  private disposed = false;

  constructor(deps: ControllerDeps) {
    this.deps = deps;
    const c = vscode.notebooks.createNotebookController(CONTROLLER_ID, NOTEBOOK_TYPE, 'Grid (TypeScript)');
    c.supportedLanguages = ['typescript', 'javascript'];
    c.supportsExecutionOrder = true;
    c.description = 'TypeScript/JavaScript cells with the grid API';
    c.detail = 'Runs cells in a separate Node process; grid.* calls use the sidebar\'s node connections.';
    c.executeHandler = (cells, notebook) => this.execute(cells, notebook);
    c.interruptHandler = (notebook) => this.interrupt(notebook);
    this.controller = c;
    this.disposables.push(
      c, this.finished,
      c.onDidChangeSelectedNotebooks(({ notebook, selected }) => { if (selected) void this.stampMetadata(notebook); }),
      vscode.workspace.onDidOpenNotebookDocument((nb) => this.setAffinity(nb)),
      vscode.workspace.onDidCloseNotebookDocument((nb) => void this.disposeKernel(nb)),
    );
    for (const nb of vscode.workspace.notebookDocuments) this.setAffinity(nb);
  }

  /** Restarts the notebook's kernel: variables are gone, the next cell runs in a fresh process. */
  async restart(notebook: vscode.NotebookDocument): Promise<boolean> {
    const kernel = this.kernels.get(notebook);
    if (!kernel) return false;
    await (await kernel).host.restart();
    return true;
  }

  async interrupt(notebook: vscode.NotebookDocument): Promise<void> {
    const kernel = this.kernels.get(notebook);
    if (kernel) await (await kernel).host.interrupt();
  }

  /** The notebook's kernel process id, if one runs (tests and the log). */
  async kernelPid(notebook: vscode.NotebookDocument): Promise<number | undefined> {
    const kernel = this.kernels.get(notebook);
    return kernel ? (await kernel).host.pid : undefined;
  }

  private setAffinity(nb: vscode.NotebookDocument): void {
    if (nb.notebookType !== NOTEBOOK_TYPE) return;
    if (kernelspecOf(nb)?.name === KERNELSPEC.name) this.controller.updateNotebookAffinity(nb, vscode.NotebookControllerAffinity.Preferred);
  }

  /** The cells are queued at once (pending in the UI); the kernel runs them one after another. */
  private async execute(cells: vscode.NotebookCell[], notebook: vscode.NotebookDocument): Promise<void> {
    void this.stampMetadata(notebook);
    const runs = cells.map((cell) => {
      const execution = this.controller.createNotebookCellExecution(cell);
      return this.runCell(cell, execution, notebook);
    });
    await Promise.all(runs);
  }

  private async runCell(cell: vscode.NotebookCell, execution: vscode.NotebookCellExecution, notebook: vscode.NotebookDocument): Promise<void> {
    const outputs = new CellOutputs(execution);
    const abort = new AbortController();
    const tokenSub = execution.token.onCancellationRequested(() => abort.abort());
    let started = false;
    const start = (order: number | undefined, time: number) => {
      if (started) return;
      started = true;
      execution.executionOrder = order;
      execution.start(time);
      outputs.clear();
    };
    let result: ExecutionResult;
    try {
      const kernel = await this.kernel(notebook);
      result = await kernel.host.execute(cell.document.getText(), {
        language: cell.document.languageId === 'javascript' ? 'javascript' : 'typescript',
        signal: abort.signal,
        onStart: ({ executionCount, startTime }) => start(executionCount, startTime),
        onOutput: (o) => outputs.add(o),
      });
    } catch (err) {
      // The kernel could not start or was disposed: the cell says why, like any failed cell.
      const e = err instanceof Error ? err : new Error(String(err));
      start(undefined, Date.now());
      const code = (e as { code?: unknown }).code;
      outputs.add({ kind: 'error', error: { name: e.name, message: e.message, stack: `${e.name}: ${e.message}`, ...(typeof code === 'string' && { code }) } });
      result = { status: 'error', endTime: Date.now(), stateLost: false, error: { name: e.name, message: e.message, stack: e.message } };
      this.deps.log.error(`cell ${cell.index + 1} of ${notebook.uri.path}: ${e.message}`);
    } finally {
      tokenSub.dispose();
    }
    await outputs.settled();
    if (result.status === 'cancelled') {
      // Never ran (an earlier cell failed or the run was cancelled): no order, no success mark.
      if (!started) execution.start();
      execution.end(undefined);
    } else {
      if (!started) start(result.executionCount, result.startTime ?? result.endTime);
      execution.end(result.status === 'ok', result.endTime);
    }
    this.finished.fire({ cell, result });
    if (result.startTime !== undefined && result.endTime - result.startTime >= LONG_CELL_MS) this.notifyLongCell(cell, result);
  }

  /**
   * A long cell announces its end only when the user is not looking at it: the window is not
   * focused, or no visible editor shows the cell. Someone watching the cell sees it end anyway.
   */
  private notifyLongCell(cell: vscode.NotebookCell, result: ExecutionResult): void {
    const visible = vscode.window.visibleNotebookEditors.some((e) => e.notebook === cell.notebook
      && e.visibleRanges.some((r) => r.start <= cell.index && cell.index < r.end));
    if (vscode.window.state.focused && visible) return;
    const seconds = Math.round((result.endTime - result.startTime!) / 1000);
    const name = cell.notebook.uri.path.split('/').pop() ?? 'notebook';
    const what = result.status === 'ok' ? 'finished' : result.status === 'interrupted' ? 'was interrupted' : 'failed';
    const message = `Cell ${cell.index + 1} of ${name} ${what} after ${seconds} s.`;
    const show = result.status === 'ok' ? vscode.window.showInformationMessage : vscode.window.showWarningMessage;
    void show(message, 'Show Cell').then((picked) => {
      if (picked !== 'Show Cell') return;
      void vscode.window.showNotebookDocument(cell.notebook, { selections: [new vscode.NotebookRange(cell.index, cell.index + 1)] });
    });
  }

  private kernel(notebook: vscode.NotebookDocument): Promise<NotebookKernel> {
    if (this.disposed) return Promise.reject(new Error('the Grid notebook controller was disposed'));
    let kernel = this.kernels.get(notebook);
    if (!kernel) {
      kernel = this.createKernel(notebook);
      this.kernels.set(notebook, kernel);
      kernel.catch(() => this.kernels.delete(notebook)); // a failed start is retried by the next run
    }
    return kernel;
  }

  private async createKernel(notebook: vscode.NotebookDocument): Promise<NotebookKernel> {
    const { KernelHost, NotebookGridBridge } = heavy();
    const { extensionPath, log } = this.deps;
    const cwd = notebookFolder(notebook);
    const bridge = new NotebookGridBridge({ nodes: this.deps.nodes, cwd });
    const name = notebook.uri.path.split('/').pop() ?? 'notebook';
    const host = new KernelHost({
      workerPath: join(extensionPath, 'dist', 'kernel-worker.js'),
      // In VS Code this is the Electron binary; the kernel sets ELECTRON_RUN_AS_NODE for it.
      execPath: process.execPath,
      cwd,
      // The starter notebook's sample model ships with the extension.
      env: { GRID_SAMPLES: join(extensionPath, 'media', 'samples') },
      bridge,
      logger: {
        debug: (m, d) => log.debug(`kernel (${name}): ${m}${d ? ` ${JSON.stringify(d)}` : ''}`),
        warn: (m, d) => log.warn(`kernel (${name}): ${m}${d ? ` ${JSON.stringify(d)}` : ''}`),
        error: (m, d) => log.error(`kernel (${name}): ${m}${d ? ` ${JSON.stringify(d)}` : ''}`),
      },
    });
    const disposables = [
      host.onDidLoseState(({ reason }) => log.info(`kernel (${name}): state lost (${reason})`)),
      // Output of a cell that already ended (a timer it left) cannot go back into that cell.
      host.onDidEmitLateOutput(({ executionCount, output }) => log.info(`kernel (${name}): late output of cell [${executionCount}]: ${output.kind === 'stream' ? output.text.trimEnd() : output.kind}`)),
    ];
    log.info(`kernel for ${name} in ${cwd}`);
    return { host, disposables };
  }

  private async disposeKernel(notebook: vscode.NotebookDocument): Promise<void> {
    const kernel = this.kernels.get(notebook);
    if (!kernel) return;
    this.kernels.delete(notebook);
    const k = await kernel.catch(() => undefined);
    if (!k) return;
    for (const d of k.disposables) d.dispose();
    await k.host.dispose();
  }

  /** kernelspec/language_info, so the saved file names this kernel and stays a valid Jupyter notebook. */
  private async stampMetadata(notebook: vscode.NotebookDocument): Promise<void> {
    if (notebook.notebookType !== NOTEBOOK_TYPE || kernelspecOf(notebook)?.name === KERNELSPEC.name) return;
    const meta = { ...notebook.metadata } as Record<string, unknown>;
    // Older VS Code keeps the file's metadata under `custom`, newer ones at the top.
    const holder = (typeof meta.custom === 'object' && meta.custom !== null ? (meta.custom = { ...(meta.custom as object) }) : meta) as Record<string, unknown>;
    holder.metadata = { ...(holder.metadata as object | undefined), kernelspec: KERNELSPEC, language_info: LANGUAGE_INFO };
    const edit = new vscode.WorkspaceEdit();
    edit.set(notebook.uri, [vscode.NotebookEdit.updateNotebookMetadata(meta)]);
    await vscode.workspace.applyEdit(edit);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const all = [...this.kernels.keys()];
    for (const d of this.disposables) d.dispose();
    await Promise.all(all.map((nb) => this.disposeKernel(nb)));
  }
}

function kernelspecOf(nb: vscode.NotebookDocument): { name?: string } | undefined {
  const m = nb.metadata as { metadata?: { kernelspec?: { name?: string } }; custom?: { metadata?: { kernelspec?: { name?: string } } } };
  return m.metadata?.kernelspec ?? m.custom?.metadata?.kernelspec;
}

/** Relative paths in cells resolve from the notebook's folder; an untitled one uses the workspace's. */
function notebookFolder(nb: vscode.NotebookDocument): string {
  if (nb.uri.scheme === 'file') return dirname(nb.uri.fsPath);
  // A remote window's extension host sees its own files under the remote scheme: the path is local here.
  if (nb.uri.scheme === 'vscode-remote') return dirname(nb.uri.path);
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? homedir();
}
