// A stand-in for the Jupyter extension (ms-toolsai.jupyter) in the e2e tests, because the Marketplace
// extension cannot be downloaded here and no registry we can reach ships its VSIX. It has the real
// extension's id and implements exactly the part of its published API (@vscode/jupyter-extension's
// api.d.ts) that Grid Workbench calls — `kernels.getKernel(uri)` → `Kernel` with `language`, `status`,
// `onDidChangeStatus` and `executeCode(code, token)` — over a REAL Python kernel: Debian's ipykernel
// started and driven by jupyter_client (bridge.py), with Debian's torch. Like the real extension it
// runs Python notebooks through a NotebookController, returns a kernel only once the user has run a
// cell, sets the `jupyter.ispythonnotebook` context key, and registers a controller for every other
// kernelspec Jupyter finds (its "Jupyter Kernel…" entries). Compiled by the e2e harness into the run's
// work dir with this folder's package.json and bridge.py.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as readline from 'node:readline';
import type { Jupyter, Kernel, KernelStatus } from '@vscode/jupyter-extension';
import * as vscode from 'vscode';

/** Debian's python3 has ipykernel, jupyter_client and torch; a pyenv `python3` first on PATH may not. */
const PYTHON = process.env.GRID_E2E_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const encoder = new TextEncoder();

interface Reply {
  id?: number;
  ready?: boolean;
  output?: { output_type: string; name?: string; text?: string; data?: Record<string, unknown>; ename?: string; evalue?: string; traceback?: string[] };
  done?: boolean;
  status?: string;
  execution_count?: number | null;
}

/** What the Jupyter API calls an output: items of mime + bytes, as VS Code's cell outputs carry them. */
function itemsOf(o: NonNullable<Reply['output']>): { mime: string; data: Uint8Array }[] {
  if (o.output_type === 'stream') return [{ mime: o.name === 'stderr' ? 'application/vnd.code.notebook.stderr' : 'application/vnd.code.notebook.stdout', data: encoder.encode(o.text ?? '') }];
  if (o.output_type === 'error') {
    // eslint-disable-next-line no-control-regex -- ipykernel colours its tracebacks
    const stack = (o.traceback ?? []).join('\n').replace(/\u001b\[[0-9;]*m/g, '');
    return [{ mime: 'application/vnd.code.notebook.error', data: encoder.encode(JSON.stringify({ name: o.ename, message: o.evalue, stack })) }];
  }
  return Object.entries(o.data ?? {}).map(([mime, value]) => ({ mime, data: encoder.encode(typeof value === 'string' ? value : JSON.stringify(value)) }));
}

/** One ipykernel for one notebook, through bridge.py. */
class PythonKernel {
  readonly language = 'python';
  status: KernelStatus = 'starting';
  private readonly statusChanged = new vscode.EventEmitter<KernelStatus>();
  readonly onDidChangeStatus = this.statusChanged.event;
  private readonly child: ChildProcess;
  private readonly ready: Promise<void>;
  private readonly handlers = new Map<number, (r: Reply) => void>();
  private nextId = 1;
  /** Requests run one after another, as the kernel's shell channel runs them. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(bridge: string, cwd: string) {
    this.child = spawn(PYTHON, [bridge], { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
    this.ready = new Promise((resolve, reject) => {
      this.child.once('error', reject);
      this.child.once('exit', (code) => { this.setStatus('dead'); reject(new Error(`the Python kernel bridge exited (${code})`)); });
      readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
        const reply = JSON.parse(line) as Reply;
        if (reply.ready) { this.setStatus('idle'); resolve(); return; }
        if (reply.id !== undefined) this.handlers.get(reply.id)?.(reply);
      });
    });
  }

  private setStatus(s: KernelStatus): void {
    this.status = s;
    this.statusChanged.fire(s);
  }

  /** Runs code; `onOutput` gets each output as it comes. Resolves with the reply's status and count. */
  run(code: string, storeHistory: boolean, onOutput: (o: NonNullable<Reply['output']>) => void): Promise<Reply> {
    const run = this.queue.then(async () => {
      await this.ready;
      const id = this.nextId++;
      this.setStatus('busy');
      const done = new Promise<Reply>((resolve) => {
        this.handlers.set(id, (r) => {
          if (r.output) onOutput(r.output);
          if (r.done) { this.handlers.delete(id); resolve(r); }
        });
      });
      this.child.stdin!.write(`${JSON.stringify({ id, code, store_history: storeHistory })}\n`);
      const reply = await done;
      this.setStatus('idle');
      return reply;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The API's executeCode: outputs as an async iterable that ends when the execution does. */
  async *executeCode(code: string, token: vscode.CancellationToken): AsyncGenerator<{ items: { mime: string; data: Uint8Array }[] }> {
    const pending: { items: { mime: string; data: Uint8Array }[] }[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    void this.run(code, false, (o) => { pending.push({ items: itemsOf(o) }); wake?.(); })
      .finally(() => { finished = true; wake?.(); });
    while (!token.isCancellationRequested) {
      const next = pending.shift();
      if (next) { yield next; continue; }
      if (finished) return;
      await new Promise<void>((resolve) => { wake = resolve; });
      wake = undefined;
    }
  }

  interrupt(): void {
    this.child.stdin!.write(`${JSON.stringify({ interrupt: true })}\n`);
  }

  dispose(): void {
    this.child.stdin!.end();
    this.statusChanged.dispose();
  }
}

interface KernelSpecs {
  [name: string]: { spec: { display_name: string; language: string } };
}

export function activate(context: vscode.ExtensionContext): Jupyter {
  const bridge = join(context.extensionPath, 'bridge.py');
  /** Which of this extension's controllers got selected for which notebook (the tests read it). */
  const selections: string[] = [];
  const kernels = new Map<string, PythonKernel>();
  const cwdOf = (nb: vscode.NotebookDocument) => (nb.uri.scheme === 'file' ? join(nb.uri.fsPath, '..') : vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd());
  const controller = vscode.notebooks.createNotebookController('python3', 'jupyter-notebook', 'Python 3 (ipykernel)');
  controller.supportedLanguages = ['python'];
  controller.supportsExecutionOrder = true;
  controller.description = '/usr/bin/python3 (test stand-in)';
  controller.executeHandler = async (cells, notebook) => {
    let kernel = kernels.get(notebook.uri.toString());
    if (!kernel) {
      kernel = new PythonKernel(bridge, cwdOf(notebook));
      kernels.set(notebook.uri.toString(), kernel);
    }
    for (const cell of cells) {
      const execution = controller.createNotebookCellExecution(cell);
      execution.start(Date.now());
      await execution.clearOutput();
      const reply = await kernel.run(cell.document.getText(), true, (o) => {
        void execution.appendOutput(new vscode.NotebookCellOutput(itemsOf(o).map((i) => new vscode.NotebookCellOutputItem(i.data, i.mime))));
      });
      execution.executionOrder = reply.execution_count ?? undefined;
      execution.end(reply.status === 'ok', Date.now());
    }
  };
  controller.interruptHandler = (notebook) => kernels.get(notebook.uri.toString())?.interrupt();
  const setPythonContext = () => {
    const nb = vscode.window.activeNotebookEditor?.notebook;
    const language = (nb?.metadata as { metadata?: { language_info?: { name?: string } } } | undefined)?.metadata?.language_info?.name;
    const python = nb !== undefined && (language === 'python' || nb.getCells().some((c) => c.document.languageId === 'python'));
    void vscode.commands.executeCommand('setContext', 'jupyter.ispythonnotebook', python);
  };
  setPythonContext();
  context.subscriptions.push(
    controller,
    controller.onDidChangeSelectedNotebooks(({ notebook, selected }) => { if (selected) selections.push(`${controller.id} ${notebook.uri.toString()}`); }),
    vscode.window.onDidChangeActiveNotebookEditor(setPythonContext),
    vscode.workspace.onDidCloseNotebookDocument((nb) => { kernels.get(nb.uri.toString())?.dispose(); kernels.delete(nb.uri.toString()); }),
    { dispose: () => { for (const k of kernels.values()) k.dispose(); } },
  );

  // Every other kernelspec Jupyter finds gets a controller of this extension, as the real one registers
  // its local kernelspecs (listed under its "Jupyter Kernel…" source). They only need to exist here.
  const specs = spawn(PYTHON, ['-c', 'import json; from jupyter_client.kernelspec import KernelSpecManager; print(json.dumps(KernelSpecManager().get_all_specs()))'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  specs.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const found = new Promise<string[]>((resolve) => specs.once('exit', () => {
    const names: string[] = [];
    try {
      for (const [name, { spec }] of Object.entries(JSON.parse(out) as KernelSpecs)) {
        if (name === 'python3') continue;
        const c = vscode.notebooks.createNotebookController(`kernelspec-${name}`, 'jupyter-notebook', spec.display_name);
        c.supportedLanguages = [spec.language];
        c.description = `kernelspec ${name} (test stand-in)`;
        c.executeHandler = () => { throw new Error('the stand-in does not run other kernelspecs'); };
        context.subscriptions.push(c, c.onDidChangeSelectedNotebooks(({ notebook, selected }) => { if (selected) selections.push(`${c.id} ${notebook.uri.toString()}`); }));
        names.push(name);
      }
    } catch {
      // no kernelspecs listed: nothing to offer
    }
    // Visible in the UI tests: the kernelspec controllers exist once this shows.
    const item = vscode.window.createStatusBarItem('standin.kernelspecs', vscode.StatusBarAlignment.Left);
    item.text = `Jupyter kernelspecs: ${names.join(', ') || 'none'}`;
    item.show();
    context.subscriptions.push(item);
    resolve(names);
  }));

  const api = {
    kernels: {
      getKernel: async (uri: vscode.Uri): Promise<Kernel | undefined> => kernels.get(uri.toString()),
    },
    createJupyterServerCollection: () => { throw new Error('not in the test stand-in'); },
    /** For the tests: the kernelspecs this stand-in registered a controller for. */
    kernelSpecControllers: found,
    selections,
  };
  return api as Jupyter & { kernelSpecControllers: Promise<string[]>; selections: string[] };
}

export function deactivate(): void {}
