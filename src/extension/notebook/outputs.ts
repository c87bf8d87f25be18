// Kernel outputs in a running cell: streams, displays (replaced in place by displayId) and errors,
// as NotebookCellOutputs of one NotebookCellExecution. The kernel already chose the mime types; this
// only converts them and keeps consecutive stream text in one output, as Jupyter shows it.
import * as vscode from 'vscode';
import type { CellError, CellOutput, MimeBundle } from '../../kernel';

export function itemsOf(bundle: MimeBundle): vscode.NotebookCellOutputItem[] {
  return Object.entries(bundle).map(([mime, data]) => (typeof data === 'string' ? vscode.NotebookCellOutputItem.text(data, mime) : new vscode.NotebookCellOutputItem(data, mime)));
}

export function errorItem(error: CellError): vscode.NotebookCellOutputItem {
  return vscode.NotebookCellOutputItem.error({ name: error.code ? `${error.name} [${error.code}]` : error.name, message: error.message, stack: error.stack });
}

/** Appends one cell's outputs to its execution. Every call returns the promise VS Code gives back. */
export class CellOutputs {
  private readonly execution: vscode.NotebookCellExecution;
  private readonly displays = new Map<string, vscode.NotebookCellOutput>();
  private lastStream: { stream: 'stdout' | 'stderr'; output: vscode.NotebookCellOutput } | undefined;
  /** VS Code applies output edits in order; chaining keeps `replace` after the `append` it refers to. */
  private chain: Thenable<void> = Promise.resolve();

  constructor(execution: vscode.NotebookCellExecution) {
    this.execution = execution;
  }

  add(output: CellOutput): void {
    switch (output.kind) {
      case 'stream': {
        const item = output.stream === 'stdout' ? vscode.NotebookCellOutputItem.stdout(output.text) : vscode.NotebookCellOutputItem.stderr(output.text);
        const last = this.lastStream;
        if (last && last.stream === output.stream) {
          this.then(() => this.execution.appendOutputItems(item, last.output));
        } else {
          const out = new vscode.NotebookCellOutput([item]);
          this.lastStream = { stream: output.stream, output: out };
          this.then(() => this.execution.appendOutput(out));
        }
        return;
      }
      case 'display': {
        this.lastStream = undefined;
        const items = itemsOf(output.data);
        const existing = output.displayId !== undefined ? this.displays.get(output.displayId) : undefined;
        if (existing && output.update) {
          this.then(() => this.execution.replaceOutputItems(items, existing));
          return;
        }
        const out = new vscode.NotebookCellOutput(items, output.displayId !== undefined ? { displayId: output.displayId } : undefined);
        if (output.displayId !== undefined) this.displays.set(output.displayId, out);
        this.then(() => this.execution.appendOutput(out));
        return;
      }
      case 'error':
        this.lastStream = undefined;
        this.then(() => this.execution.appendOutput(new vscode.NotebookCellOutput([errorItem(output.error)])));
        return;
    }
  }

  /** Removes the outputs of the cell's previous run (queued like every other edit). */
  clear(): void {
    this.lastStream = undefined;
    this.displays.clear();
    this.then(() => this.execution.clearOutput());
  }

  /** Resolves when every output so far is in the cell. */
  settled(): Thenable<void> {
    return this.chain;
  }

  private then(edit: () => Thenable<void>): void {
    // A failed edit (the cell was deleted meanwhile) must not stop the ones after it.
    this.chain = this.chain.then(edit).then(undefined, () => undefined);
  }
}
