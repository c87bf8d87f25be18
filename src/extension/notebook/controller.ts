// The "Grid (TypeScript)" NotebookController for .ipynb files: one KernelHost (a child process) per
// notebook, cells queued in order with their execution order and times, outputs streamed in while a
// cell runs, `end(false)` with the error on every failure path. The kernel and the bridge load on
// the first run, so activation only pays for the controller object.
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as vscode from 'vscode';
import { gridError } from '../../core/errors';
import type { CellOutput, ExecutionResult, KernelHost } from '../../kernel';
import { heavy } from '../heavy';
import type { BridgeNodes } from './bridge';
import { longCellNotice, type LongCellNotice } from './long-cell';
import { CellOutputs } from './outputs';

export { LONG_CELL_MS } from './long-cell';

export const CONTROLLER_ID = 'grid-typescript';
export const NOTEBOOK_TYPE = 'jupyter-notebook';
export const KERNELSPEC = { name: 'grid-typescript', display_name: 'Grid (TypeScript)', language: 'typescript' };
export const LANGUAGE_INFO = { name: 'typescript', file_extension: '.ts', mimetype: 'text/typescript' };

export interface ControllerDeps {
  extensionPath: string;
  /** This extension's id, which `notebook.selectKernel` names the controller by. */
  extensionId: string;
  log: { info(msg: string): void; warn(msg: string): void; error(msg: string): void; debug(msg: string): void };
  nodes: BridgeNodes;
  /** The grid.requestTimeoutMs setting, read when a cell's grid.infer starts. */
  requestTimeoutMs(): number;
}

interface NotebookKernel {
  host: KernelHost;
  disposables: { dispose(): void }[];
  /** executionCount → the cell that ran with it, for output that arrives after the cell ended. */
  ran: Map<number, vscode.NotebookCell>;
}

/** Cells remembered per kernel for their late output; older ones send theirs to the log. */
const RAN_KEPT = 256;

/** A short execution that appends a finished cell's late output, keeping its order, times and success. */
interface LateExecution {
  execution: vscode.NotebookCellExecution;
  outputs: CellOutputs;
  added: number;
  /** The run's own mark and end, restored when the late execution ends (starting one clears them). */
  success: boolean | undefined;
  endTime: number | undefined;
}

export class GridNotebookController implements vscode.Disposable {
  readonly controller: vscode.NotebookController;
  private readonly deps: ControllerDeps;
  private readonly kernels = new Map<vscode.NotebookDocument, Promise<NotebookKernel>>();
  private readonly disposables: vscode.Disposable[] = [];
  private readonly finished = new vscode.EventEmitter<{ cell: vscode.NotebookCell; result: ExecutionResult }>();
  /** Fires when a cell's execution has ended and its outputs are in place (tests wait on it). */
  readonly onDidFinishCell = this.finished.event;
  private readonly noticed = new vscode.EventEmitter<{ cell: vscode.NotebookCell } & LongCellNotice>();
  /** Fires when a long cell's end is announced with a notification (tests wait on it). */
  readonly onDidNotifyLongCell = this.noticed.event;
  /** Cells with an execution of ours (queued or running): late output must not open another. */
  private readonly executing = new Set<vscode.NotebookCell>();
  private readonly late = new Map<vscode.NotebookCell, LateExecution>();
  private disposed = false;
  /** Notebooks this controller is selected for, and those it already claimed once (claimKernel). */
  private readonly selected = new WeakSet<vscode.NotebookDocument>();
  private readonly claimed = new WeakSet<vscode.NotebookDocument>();

  constructor(deps: ControllerDeps) {
    this.deps = deps;
    const c = vscode.notebooks.createNotebookController(CONTROLLER_ID, NOTEBOOK_TYPE, 'Grid (TypeScript)');
    c.supportedLanguages = ['typescript', 'javascript'];
    c.supportsExecutionOrder = true;
    c.description = 'TypeScript/JavaScript cells with the grid API';
    c.detail = 'Runs cells in a separate Node process; grid.* calls use the sidebar\'s node connections.';
    c.executeHandler = (cells, notebook) => this.execute(cells, notebook);
    // No interruptHandler: with one, VS Code calls it for any stop (even a queued cell's) and never fires
    // the cells' cancellation tokens. Without it, stop fires the token of that cell: a queued cell leaves
    // the queue alone, the running one is interrupted (runCell), and the toolbar's stop fires them all.
    this.controller = c;
    this.disposables.push(
      c, this.finished, this.noticed,
      c.onDidChangeSelectedNotebooks(({ notebook, selected }) => {
        if (selected) {
          this.selected.add(notebook);
          void this.stampMetadata(notebook);
        } else {
          this.selected.delete(notebook);
        }
      }),
      vscode.workspace.onDidOpenNotebookDocument((nb) => this.setAffinity(nb)),
      vscode.window.onDidChangeActiveNotebookEditor((editor) => this.claimKernel(editor)),
      vscode.workspace.onDidCloseNotebookDocument((nb) => void this.disposeKernel(nb)),
    );
    for (const nb of vscode.workspace.notebookDocuments) this.setAffinity(nb);
    this.claimKernel(vscode.window.activeNotebookEditor);
  }

  /**
   * Binds a notebook whose file names the grid-typescript kernelspec to this controller when it first
   * becomes the active editor, as a Jupyter front end starts the kernel the file names. Preferred
   * affinity alone does not: with more than one controller (the Jupyter extension registers one per
   * kernelspec it finds, "Grid (TypeScript)" included once `grid kernel install` ran, and one per Python
   * environment) VS Code asks with its kernel picker on the first run. Once per notebook and window
   * session, so a kernel the user picks afterwards stays picked.
   */
  private claimKernel(editor: vscode.NotebookEditor | undefined): void {
    const nb = editor?.notebook;
    if (!nb || nb.notebookType !== NOTEBOOK_TYPE || this.claimed.has(nb) || this.selected.has(nb) || kernelspecOf(nb)?.name !== KERNELSPEC.name) return;
    this.claimed.add(nb);
    void vscode.commands.executeCommand('notebook.selectKernel', { id: CONTROLLER_ID, extension: this.deps.extensionId });
  }

  /** Restarts the notebook's kernel: variables are gone, the next cell runs in a fresh process. */
  async restart(notebook: vscode.NotebookDocument): Promise<boolean> {
    const kernel = this.kernels.get(notebook);
    if (!kernel) return false;
    await (await kernel).host.restart();
    return true;
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
      // A cell's late output from its previous run may hold an execution: it ends before the new one.
      this.endLate(cell);
      const execution = this.controller.createNotebookCellExecution(cell);
      this.executing.add(cell);
      return this.runCell(cell, execution, notebook).finally(() => this.executing.delete(cell));
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
        onStart: ({ executionCount, startTime }) => {
          start(executionCount, startTime);
          kernel.ran.set(executionCount, cell);
          if (kernel.ran.size > RAN_KEPT) kernel.ran.delete(kernel.ran.keys().next().value!);
        },
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
    this.notifyLongCell(cell, result);
  }

  /** Announces a long cell's end when the user is not looking at it (see longCellNotice). */
  private notifyLongCell(cell: vscode.NotebookCell, result: ExecutionResult): void {
    const cellVisible = vscode.window.visibleNotebookEditors.some((e) => e.notebook === cell.notebook
      && e.visibleRanges.some((r) => r.start <= cell.index && cell.index < r.end));
    const notice = longCellNotice(
      { status: result.status, startTime: result.startTime, endTime: result.endTime, index: cell.index, notebookName: cell.notebook.uri.path.split('/').pop() ?? 'notebook' },
      { windowFocused: vscode.window.state.focused, cellVisible },
    );
    if (!notice) return;
    const show = notice.level === 'info' ? vscode.window.showInformationMessage : vscode.window.showWarningMessage;
    this.noticed.fire({ cell, ...notice });
    void show(notice.message, 'Show Cell').then((picked) => {
      if (picked !== 'Show Cell') return;
      void vscode.window.showNotebookDocument(cell.notebook, { selections: [new vscode.NotebookRange(cell.index, cell.index + 1)] });
    });
  }

  private kernel(notebook: vscode.NotebookDocument): Promise<NotebookKernel> {
    if (this.disposed) return Promise.reject(gridError('DISPOSED', 'the Grid notebook controller was disposed'));
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
    const bridge = new NotebookGridBridge({ nodes: this.deps.nodes, cwd, inferTimeoutMs: () => this.deps.requestTimeoutMs() });
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
    const ran = new Map<number, vscode.NotebookCell>();
    const disposables = [
      host.onDidLoseState(({ reason }) => {
        ran.clear(); // counts start again at 1 in the new process
        log.info(`kernel (${name}): state lost (${reason})`);
      }),
      // Output of a cell that already ended (a timer or promise it left) is appended to that cell.
      host.onDidEmitLateOutput(({ executionCount, output }) => {
        const cell = ran.get(executionCount);
        if (cell && this.addLate(cell, executionCount, output)) return;
        log.info(`kernel (${name}): late output of cell [${executionCount}], which no longer shows that run: ${output.kind === 'stream' ? output.text.trimEnd() : output.kind}`);
      }),
    ];
    log.info(`kernel for ${name} in ${cwd}`);
    return { host, disposables, ran };
  }

  /**
   * Appends output a cell printed after it ended, as Jupyter does: a short execution of its own that
   * keeps the cell's execution order, times and success mark. False when the cell no longer shows
   * that run (deleted, re-run or queued again).
   */
  private addLate(cell: vscode.NotebookCell, executionCount: number, output: CellOutput): boolean {
    let late = this.late.get(cell);
    if (!late) {
      const summary = cell.executionSummary;
      if (cell.index < 0 || this.executing.has(cell) || summary?.executionOrder !== executionCount) return false;
      const execution = this.controller.createNotebookCellExecution(cell);
      execution.executionOrder = executionCount;
      execution.start(summary.timing?.startTime);
      const made: LateExecution = { execution, outputs: new CellOutputs(execution), added: 0, success: summary.success, endTime: summary.timing?.endTime };
      this.late.set(cell, made);
      late = made;
      // Ends once what arrived meanwhile is in the cell; output of the same burst joins it.
      const close = async (): Promise<void> => {
        let seen: number;
        do {
          seen = made.added;
          await made.outputs.settled();
        } while (seen !== made.added);
        if (this.late.get(cell) === made) this.endLate(cell);
      };
      setImmediate(() => void close());
    }
    late.outputs.add(output);
    late.added += 1;
    return true;
  }

  private endLate(cell: vscode.NotebookCell): void {
    const late = this.late.get(cell);
    if (!late) return;
    this.late.delete(cell);
    late.execution.end(late.success, late.endTime);
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
