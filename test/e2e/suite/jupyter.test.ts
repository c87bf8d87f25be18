// Grid Workbench next to the Jupyter extension (ms-toolsai.jupyter). Runs only when that extension is
// loaded: test/e2e/jupyter-ext.test.ts loads the stand-in (test/e2e/jupyter-standin: the typed API our
// code calls, over a real ipykernel with Debian's torch) beside ours; host.test.ts, without it, skips.
// A Python notebook builds a torch model in its kernel; "Serve Torch Module from Notebook…" offers
// that variable, exports it with torch.onnx.export in the same kernel and serves it to the local node,
// where it shows in the Models view and runs remote inference with torch's numbers. With the
// grid-typescript kernelspec installed the Jupyter extension offers "Grid (TypeScript)" too (one of its
// kernelspec controllers); a Grid notebook still opens and runs on our controller.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import type { ModelInfo } from '../../../src/core/protocol/messages';
import type { GridExtensionApi } from '../../../src/extension/main';
import { report } from './report';

const EXTENSION_ID = 'grid-workbench.grid-workbench';
const JUPYTER_ID = 'ms-toolsai.jupyter';
const WAIT_MS = 60_000;
const decoder = new TextDecoder();

let api: GridExtensionApi;
let notebook: vscode.NotebookDocument;
const jupyterDir = mkdtempSync(join(tmpdir(), 'grid-jupyter-'));

/** Resolves when `pred()` holds, checked now and after every `event`; rejects after `ms` with `state()`. */
function until(event: vscode.Event<unknown>, pred: () => boolean, what: string, state: () => string, ms = WAIT_MS): Promise<void> {
  if (pred()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.dispose(); reject(new Error(`${what}: not within ${ms} ms; now: ${state()}`)); }, ms);
    const sub = event(() => {
      if (!pred()) return;
      clearTimeout(timer);
      sub.dispose();
      resolve();
    });
  });
}

/** `p`, or a rejection saying what did not happen within `ms`. */
function within<T>(p: PromiseLike<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve(p).finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); }),
  ]);
}

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : item.label?.label ?? '';
}

function modelRows(): string[] {
  return api.modelsView.getChildren().map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

function cellText(cell: vscode.NotebookCell): string {
  return cell.outputs.flatMap((o) => o.items).map((i) => `${i.mime}: ${decoder.decode(i.data)}`).join('\n');
}

/** Runs a cell on the notebook's (Python) kernel and waits for it to end; returns its stdout. */
async function runCell(index: number): Promise<string> {
  const cell = notebook.cellAt(index);
  await vscode.commands.executeCommand('notebook.cell.execute', { ranges: [{ start: index, end: index + 1 }], document: notebook.uri });
  await until(vscode.workspace.onDidChangeNotebookDocument, () => cell.executionSummary?.success !== undefined, `cell ${index} ends`, () => cellText(cell), 120_000);
  assert.equal(cell.executionSummary?.success, true, `cell ${index} failed: ${cellText(cell)}`);
  return cell.outputs.flatMap((o) => o.items).filter((i) => i.mime === 'application/vnd.code.notebook.stdout').map((i) => decoder.decode(i.data)).join('');
}

const BUILD_MODEL = [
  'import torch',
  'torch.manual_seed(0)',
  'net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))',
  'features = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]])',
  'print(net(features).tolist())',
].join('\n');

describe('with the Jupyter extension', function () {
  this.timeout(300_000);

  before(async function () {
    // Only with the Jupyter extension (or its stand-in) loaded: host.test.ts runs without it.
    if (!vscode.extensions.getExtension(JUPYTER_ID)) this.skip();
    const ext = vscode.extensions.getExtension<GridExtensionApi>(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not installed`);
    api = await ext.activate();
    // `grid kernel install` for this run only, before the Jupyter extension activates and looks for kernelspecs.
    const install = spawnSync(process.execPath, [join(ext.extensionPath, 'dist', 'grid.js'), 'kernel', 'install', '--prefix', jupyterDir], { encoding: 'utf8', env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
    assert.equal(install.status, 0, `grid kernel install: ${install.stderr}`);
    process.env.JUPYTER_PATH = join(jupyterDir, 'share', 'jupyter');
    await vscode.commands.executeCommand('grid.startLocalNode');
    const cell = new vscode.NotebookCellData(vscode.NotebookCellKind.Code, BUILD_MODEL, 'python');
    const data = new vscode.NotebookData([cell]);
    data.metadata = { metadata: { kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' }, language_info: { name: 'python' } } };
    notebook = await vscode.workspace.openNotebookDocument('jupyter-notebook', data);
    await vscode.window.showNotebookDocument(notebook);
    await vscode.commands.executeCommand('notebook.selectKernel', { id: 'python3', extension: JUPYTER_ID });
  });

  after(async () => {
    if (!api) return;
    for (let i = 0; i < 10 && vscode.window.activeNotebookEditor; i++) await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
    await vscode.commands.executeCommand('grid.stopLocalNode');
    rmSync(jupyterDir, { recursive: true, force: true });
  });

  it('Serve Torch Module from Notebook… offers the notebook\'s torch modules, exports the chosen one in its kernel and serves it; inference matches torch within 1e-4', async () => {
    const torchOut = JSON.parse((await runCell(0)).trim()) as number[][];
    assert.equal(torchOut.length, 2);

    // The pick lists the kernel's torch.nn.Module variables (not the tensor); the shape box is prefilled from Linear(4, …).
    const shown: { pick?: string[]; shape?: string } = {};
    const subs = [
      api.onDidPick((pick) => {
        shown.pick = pick.items.map((i) => `${i.label} — ${i.description ?? ''}`);
        pick.activeItems = pick.items.filter((i) => i.label === 'net');
        void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      }),
      api.onDidAsk((box) => {
        shown.shape = box.value;
        void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      }),
    ];
    const t0 = performance.now();
    let info: ModelInfo | undefined;
    try {
      info = await vscode.commands.executeCommand<ModelInfo | undefined>('grid.serveNotebookModel', { id: 'net-from-notebook', allowRemoteInference: true, allowDownload: false });
    } finally {
      subs.forEach((s) => s.dispose());
    }
    report(`    exported and served in ${(performance.now() - t0).toFixed(0)} ms (${info?.size ?? '?'} bytes of ONNX)`);
    assert.deepEqual(shown.pick, ['net — Sequential · 67 parameters']);
    assert.equal(shown.shape, '1, 4');
    assert.ok(info, 'the command served nothing (it showed an error, see the log)');

    // The Models view shows the served model, its signature the export's.
    await until(api.modelsView.onDidChangeTreeData, () => modelRows().some((r) => r.startsWith('net-from-notebook')), 'the served model in the Models view', () => modelRows().join(' | ') || '(no models)');
    const row = modelRows().find((r) => r.startsWith('net-from-notebook'))!;
    report(`    Models view: ${row}`);

    // Remote inference on the node, on the notebook's own features, gives torch's output.
    const result = await vscode.commands.executeCommand<{ document: string }>('grid.runInference', {
      node: 'Local node', model: 'net-from-notebook', json: JSON.stringify({ input: [[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]] }),
    });
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result?.document);
    assert.ok(doc, 'the inference result is not open');
    const out = (JSON.parse(doc.getText()) as { outputs: Record<string, { dims: number[]; data: number[] }> }).outputs.output;
    assert.ok(out, `no "output" in ${doc.getText().slice(0, 300)}`);
    assert.deepEqual(out.dims, [2, 3]);
    const expected = torchOut.flat();
    const worst = Math.max(...out.data.map((v, i) => Math.abs(v - expected[i]!)));
    report(`    largest difference to torch: ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `node ${JSON.stringify(out.data)} vs torch ${JSON.stringify(expected)}: ${worst}`);
  });

  it('a notebook variable that is not a torch module is refused by name, with the modules it has', async () => {
    const errors: string[] = [];
    const sub = api.onDidShowError((e) => errors.push(e.message));
    try {
      const served = await vscode.commands.executeCommand('grid.serveNotebookModel', { notebook: notebook.uri.toString(), variable: 'features', inputShape: [1, 4], id: 'x', allowRemoteInference: true, allowDownload: false });
      assert.equal(served, undefined);
    } finally {
      sub.dispose();
    }
    assert.equal(errors.length, 1, `errors shown: ${errors.join(' | ')}`);
    assert.match(errors[0]!, /no torch\.nn\.Module named "features"; it has net/);
  });

  it('with the grid-typescript kernelspec installed the Jupyter extension offers it too, yet a Grid notebook opens and runs on our controller without asking', async () => {
    // The duplicate exists: the Jupyter extension registered a controller for the kernelspec.
    const jupyter = vscode.extensions.getExtension<{ kernelSpecControllers?: Promise<string[]>; selections: string[] }>(JUPYTER_ID)!;
    assert.deepEqual(await within(jupyter.exports.kernelSpecControllers!, 'the Jupyter extension lists its kernelspecs'), ['grid-typescript']);
    const data = new vscode.NotebookData([new vscode.NotebookCellData(vscode.NotebookCellKind.Code, 'const answer = 6 * 7;\nanswer', 'typescript')]);
    data.metadata = { metadata: { kernelspec: { name: 'grid-typescript', display_name: 'Grid (TypeScript)', language: 'typescript' } } };
    const grid = await vscode.workspace.openNotebookDocument('jupyter-notebook', data);
    await vscode.window.showNotebookDocument(grid);
    const cell = grid.cellAt(0);
    // No kernel chosen: running the cell takes the one VS Code suggests, or would ask with the picker (and time out here).
    const finished = new Promise<void>((resolve) => {
      const sub = api.notebooks.onDidFinishCell(({ cell: c }) => { if (c === cell) { sub.dispose(); resolve(); } });
    });
    void vscode.commands.executeCommand('notebook.cell.execute', { ranges: [{ start: 0, end: 1 }], document: grid.uri });
    await within(finished, 'the cell runs on Grid (TypeScript) without a kernel pick').catch((err: Error) => {
      throw new Error(`${err.message}; the cell shows ${JSON.stringify(cellText(cell))}, ran ${JSON.stringify(cell.executionSummary)}; Jupyter controllers selected: ${jupyter.exports.selections.join(', ') || 'none'}`);
    });
    await until(vscode.workspace.onDidChangeNotebookDocument, () => cell.executionSummary?.success !== undefined, 'the cell\'s run is recorded', () => JSON.stringify(cell.executionSummary));
    assert.equal(cell.executionSummary?.success, true, cellText(cell));
    assert.equal(cellText(cell), 'text/plain: 42');
    assert.deepEqual(jupyter.exports.selections.filter((s) => s.endsWith(grid.uri.toString())), [], 'a Jupyter controller was selected for the Grid notebook');
  });
});
