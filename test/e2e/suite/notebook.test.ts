// The "Grid (TypeScript)" notebook kernel in a real VS Code: the starter notebook of the sample
// workspace runs top to bottom against the embedded local node (started by the notebook's own
// `grid.connect()`, as a user's first cell does), and its outputs are read back as VS Code holds them:
// the inference result, the digit as a PNG item, the live metrics item of training and FedAvg, and the
// sidebar showing what the cells served. Then a runaway cell is interrupted, and the kernel restarted.
import * as assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import type { GridExtensionApi } from '../../../src/extension/main';
import type { MetricsPayload } from '../../../src/kernel/metrics';
import { report } from './report';

const EXTENSION_ID = 'grid-workbench.grid-workbench';
const CONTROLLER_ID = 'grid-typescript';
const METRICS_MIME = 'application/vnd.grid.metrics+json';

let api: GridExtensionApi;
let notebook: vscode.NotebookDocument;
const decoder = new TextDecoder();

/** Resolves when `pred()` holds, checked now and after every notebook change; rejects after `ms` with `state()`. */
function until(pred: () => boolean, what: string, state: () => string, ms: number): Promise<void> {
  if (pred()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.dispose(); reject(new Error(`${what}: not within ${ms} ms; now: ${state()}`)); }, ms);
    const sub = vscode.workspace.onDidChangeNotebookDocument(() => {
      if (!pred()) return;
      clearTimeout(timer);
      sub.dispose();
      resolve();
    });
  });
}

function codeCells(): vscode.NotebookCell[] {
  return notebook.getCells().filter((c) => c.kind === vscode.NotebookCellKind.Code);
}

function cellWith(source: string): vscode.NotebookCell {
  const cell = codeCells().find((c) => c.document.getText().includes(source));
  assert.ok(cell, `no cell contains ${JSON.stringify(source)}`);
  return cell;
}

function items(cell: vscode.NotebookCell, mime: string): vscode.NotebookCellOutputItem[] {
  return cell.outputs.flatMap((o) => o.items.filter((i) => i.mime === mime));
}

function text(cell: vscode.NotebookCell): string {
  return cell.outputs.flatMap((o) => o.items).map((i) => (i.mime.startsWith('image/') ? `<${i.mime}>` : `${i.mime}: ${decoder.decode(i.data)}`)).join('\n');
}

function summary(): string {
  return codeCells().map((c) => `#${c.index} order=${c.executionSummary?.executionOrder ?? '-'} success=${c.executionSummary?.success ?? '-'} ${text(c).slice(0, 300)}`).join(' | ');
}

function json<T>(cell: vscode.NotebookCell, mime = 'application/json'): T {
  const [item] = items(cell, mime);
  assert.ok(item, `cell ${cell.index} shows no ${mime}: ${text(cell)}`);
  return JSON.parse(decoder.decode(item.data)) as T;
}

function errorOf(cell: vscode.NotebookCell): { name: string; message: string; stack?: string } {
  const [item] = items(cell, 'application/vnd.code.notebook.error');
  assert.ok(item, `cell ${cell.index} shows no error: ${text(cell)}`);
  return JSON.parse(decoder.decode(item.data)) as { name: string; message: string; stack?: string };
}

async function appendCell(source: string): Promise<vscode.NotebookCell> {
  const edit = new vscode.WorkspaceEdit();
  const index = notebook.cellCount;
  edit.set(notebook.uri, [vscode.NotebookEdit.insertCells(index, [new vscode.NotebookCellData(vscode.NotebookCellKind.Code, source, 'typescript')])]);
  assert.ok(await vscode.workspace.applyEdit(edit));
  return notebook.cellAt(index);
}

/** Runs one cell and waits until it has ended (its executionSummary has a success flag). */
async function run(cell: vscode.NotebookCell, ms = 60_000): Promise<void> {
  const before = cell.executionSummary?.executionOrder;
  await vscode.commands.executeCommand('notebook.cell.execute', { ranges: [{ start: cell.index, end: cell.index + 1 }], document: notebook.uri });
  await until(() => cell.executionSummary?.success !== undefined && cell.executionSummary.executionOrder !== before
    && cell.executionSummary.timing !== undefined, `cell ${cell.index} ends`, summary, ms);
}

describe('Grid notebook kernel', function () {
  this.timeout(300_000);

  before(async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not installed`);
    api = await ext.activate();
    const folder = vscode.workspace.workspaceFolders?.[0];
    assert.ok(folder, 'the test window has no workspace folder');
    notebook = await vscode.workspace.openNotebookDocument(vscode.Uri.file(join(folder.uri.fsPath, 'starter.ipynb')));
    await vscode.window.showNotebookDocument(notebook);
    await vscode.commands.executeCommand('notebook.selectKernel', { id: CONTROLLER_ID, extension: EXTENSION_ID });
  });

  // The suites share one window: leave it as found (no notebook open, no local node running).
  after(async () => {
    for (let i = 0; i < 10 && vscode.window.activeNotebookEditor; i++) await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
    await vscode.commands.executeCommand('grid.stopLocalNode');
    assert.deepEqual(api.ctx.connections.map((c) => c.name), [], 'nodes left behind');
  });

  it('runs the starter notebook top to bottom against the local node, with its outputs in place', async () => {
    const started = Date.now();
    // What the training cell's metrics item showed while the cell was still running.
    const live: { points: number; cellEnded: boolean }[] = [];
    const watch = vscode.workspace.onDidChangeNotebookDocument(() => {
      const cell = cellWith('grid.train(');
      const [item] = items(cell, METRICS_MIME);
      if (!item) return;
      const p = JSON.parse(decoder.decode(item.data)) as MetricsPayload;
      if (p.state === 'running') live.push({ points: p.series.find((s) => s.name === 'train')?.points.length ?? 0, cellEnded: cell.executionSummary?.success !== undefined });
    });
    try {
      await vscode.commands.executeCommand('notebook.execute', notebook.uri);
      await until(() => codeCells().every((c) => c.executionSummary?.success !== undefined && c.executionSummary.timing !== undefined),
        'every starter cell ends', summary, 240_000);
    } finally {
      watch.dispose();
    }
    report(`    starter notebook ran in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const cells = codeCells();
    for (const c of cells) assert.equal(c.executionSummary?.success, true, `cell ${c.index} failed: ${text(c)}`);
    // Cells ran once each, in order, each after the previous ended.
    assert.deepEqual(cells.map((c) => c.executionSummary?.executionOrder), cells.map((_, i) => i + 1));
    for (let i = 1; i < cells.length; i++) assert.ok(cells[i]!.executionSummary!.timing!.startTime >= cells[i - 1]!.executionSummary!.timing!.endTime);

    // connect: the local node, as the sidebar shows it.
    const node = json<{ name: string; state: string; local: boolean }>(cellWith('grid.connect()'));
    assert.equal(node.local, true);
    assert.equal(node.state, 'connected');
    assert.ok(json<{ name: string }[]>(cellWith('grid.datasets()')).some((d) => d.name === 'digits'), 'the demo datasets are listed');

    // The digit, as a PNG item.
    const [png] = items(cellWith('display(grid.tensor'), 'image/png');
    assert.ok(png, `the digit cell shows no PNG: ${text(cellWith('display(grid.tensor'))}`);
    assert.deepEqual([...png.data.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

    // Inference on the node: ten scores and a predicted digit.
    const before = json<{ model: string; predicted: number; scores: number[] }>(cellWith("await predict('digits-mlp')"));
    assert.equal(before.model, 'digits-mlp');
    assert.equal(before.scores.length, 10);
    assert.ok(Number.isInteger(before.predicted) && before.predicted >= 0 && before.predicted <= 9);

    // Training: the metrics item drew the run and ends succeeded; the stored model classifies the 2.
    const trainCell = cellWith('grid.train(');
    const metrics = json<MetricsPayload>(trainCell, METRICS_MIME);
    assert.equal(metrics.state, 'succeeded');
    assert.equal(metrics.unit, 'epoch');
    const train = metrics.series.find((s) => s.name === 'train');
    assert.ok(train && train.points.length >= 8, `training drew ${train?.points.length ?? 0} points`);
    assert.ok(train.points.at(-1)!.x >= 7.9, 'the curve reaches the last epoch');
    assert.ok(train.points.at(-1)!.loss < train.points[0]!.loss, 'the loss went down');
    // Live: the curve grew in place while the cell ran, before its end.
    const grown = [...new Set(live.filter((l) => !l.cellEnded).map((l) => l.points))];
    report(`    live metrics updates while training: ${live.length} (point counts ${grown.slice(0, 8).join(', ')}${grown.length > 8 ? ', ...' : ''})`);
    assert.ok(grown.length >= 3, `the metrics output was updated ${grown.length} times while the cell ran`);
    assert.equal(trainCell.outputs.filter((o) => o.items.some((i) => i.mime === METRICS_MIME)).length, 1, 'one metrics output, replaced in place');
    const trained = json<{ model: string; state: string; test: { accuracy: number } }>(trainCell);
    assert.equal(trained.state, 'succeeded');
    assert.ok(trained.test.accuracy > 0.8, `test accuracy ${trained.test.accuracy}`);
    const after = json<{ model: string; predicted: number }>(cellWith('await predict(trained.model!)'));
    assert.equal(after.model, trained.model);
    assert.equal(after.predicted, 2, 'the trained model reads the handwritten 2');

    // FedAvg: rounds on the metrics item, the result served.
    const fed = json<MetricsPayload>(cellWith('grid.fedavg('), METRICS_MIME);
    assert.equal(fed.state, 'succeeded');
    assert.equal(fed.unit, 'round');
    assert.equal(fed.series.find((s) => s.name === 'train')?.points.length, 3);

    // The sidebar shows what the cells served and trained, without a refresh: one model, its versions under it
    // (served, trained, averaged from the trained one), the newest first.
    const local = api.ctx.connections.find((c) => c.local);
    assert.ok(local, 'the Nodes view shows the local node');
    assert.equal(trained.model, 'digits-mlp@2');
    assert.deepEqual(local.models.filter((m) => m.id.startsWith('digits-mlp')).map((m) => `${m.id}@${m.version}`), ['digits-mlp@3'], 'one digits-mlp model, at its latest version');
    assert.deepEqual(local.versionsOf('digits-mlp').map((m) => `${m.id}@${m.version} ${m.parent ?? ''}`.trim()), ['digits-mlp@3 digits-mlp@2', 'digits-mlp@2 digits-mlp@1', 'digits-mlp@1']);
    assert.ok(local.jobs.some((j) => j.state === 'succeeded'), 'the training job is in the Jobs group');

    // The file stays a Jupyter notebook naming this kernel.
    const meta = notebook.metadata as { metadata?: { kernelspec?: { name?: string } } };
    assert.equal(meta.metadata?.kernelspec?.name, 'grid-typescript');
  });

  it('interrupts a runaway cell, says state was lost, and runs the next cell in a fresh kernel', async () => {
    const spin = await appendCell('console.log("spinning");\nwhile (true) {}');
    const ended = run(spin, 60_000);
    await until(() => text(spin).includes('spinning'), 'the runaway cell prints before spinning', () => text(spin), 30_000);
    const t0 = Date.now();
    await vscode.commands.executeCommand('notebook.cancelExecution', notebook.uri);
    await ended;
    const took = Date.now() - t0;
    report(`    runaway cell stopped ${took} ms after the interrupt`);
    assert.equal(spin.executionSummary?.success, false);
    assert.match(errorOf(spin).message, /State was lost/);
    assert.ok(took < 15_000, `the interrupt took ${took} ms`);

    const after = await appendCell('typeof trained');
    await run(after);
    assert.equal(after.executionSummary?.success, true, text(after));
    assert.match(text(after), /undefined/, 'the restarted kernel has no earlier variables');
    assert.equal(after.executionSummary?.executionOrder, 1, 'a fresh kernel counts from 1');
  });

  it('interrupts a cell waiting on the grid without losing state', async () => {
    const keep = await appendCell('const kept = 41 + 1;');
    await run(keep);
    const waiting = await appendCell('console.log("waiting");\nawait new Promise((_, reject) => grid.signal.addEventListener("abort", () => reject(grid.signal.reason)));');
    const ended = run(waiting);
    await until(() => text(waiting).includes('waiting'), 'the cell starts waiting', () => text(waiting), 30_000);
    await vscode.commands.executeCommand('notebook.cancelExecution', notebook.uri);
    await ended;
    assert.equal(waiting.executionSummary?.success, false);
    assert.doesNotMatch(errorOf(waiting).message, /State was lost/);
    const check = await appendCell('kept');
    await run(check);
    assert.match(text(check), /42/);
  });

  it('the stop button of a queued cell takes only that cell out of the queue; that of an awaiting cell stops it with its state kept', async () => {
    const release = join(dirname(notebook.uri.fsPath), 'release-first.flag');
    rmSync(release, { force: true });
    const keep = await appendCell('const survivor = "kept";');
    await run(keep);
    const first = await appendCell(`console.log("waiting");\nwhile (!require("node:fs").existsSync(${JSON.stringify(release)})) await new Promise((r) => setTimeout(r, 50));\n"first done"`);
    const second = await appendCell('"second ran"');
    const third = await appendCell('"third ran"');
    const finished = new Map<vscode.NotebookCell, string>();
    const sub = api.notebooks.onDidFinishCell(({ cell, result }) => finished.set(cell, result.status));
    try {
      // Not awaited: the command resolves when the cells have run.
      const ran = Promise.resolve(vscode.commands.executeCommand('notebook.cell.execute', { ranges: [{ start: first.index, end: third.index + 1 }], document: notebook.uri }));
      await until(() => text(first).includes('waiting'), 'the first cell starts waiting', () => text(first), 30_000);
      await vscode.commands.executeCommand('notebook.cell.cancelExecution', { ranges: [{ start: second.index, end: second.index + 1 }], document: notebook.uri });
      await until(() => finished.has(second), 'the stopped queued cell ends', () => `${[...finished.values()].join()} | ${summary()}`, 30_000);
      assert.equal(finished.get(second), 'cancelled');
      assert.equal(finished.has(first), false, `the running cell goes on (${finished.get(first)}): ${text(first)}`);
      assert.equal(finished.has(third), false, 'the other queued cell stays queued');
      writeFileSync(release, '');
      await until(() => first.executionSummary?.success !== undefined && third.executionSummary?.success !== undefined && third.executionSummary.timing !== undefined,
        'the first and third cells end', () => summary(), 60_000);
      assert.equal(first.executionSummary?.success, true, text(first));
      assert.match(text(first), /first done/);
      assert.equal(third.executionSummary?.success, true, text(third));
      assert.match(text(third), /third ran/);
      assert.doesNotMatch(text(second), /second ran/);
      assert.equal(second.executionSummary?.success, undefined, 'the cancelled cell has no success mark');
      await ran;

      // Its own stop button on a cell awaiting a plain timer: interrupted, nothing restarted.
      const waiting = await appendCell('console.log("sleeping");\nawait new Promise((r) => setTimeout(r, 600_000));');
      const ended = run(waiting);
      await until(() => text(waiting).includes('sleeping'), 'the cell starts sleeping', () => text(waiting), 30_000);
      const t0 = Date.now();
      await vscode.commands.executeCommand('notebook.cell.cancelExecution', { ranges: [{ start: waiting.index, end: waiting.index + 1 }], document: notebook.uri });
      await ended;
      report(`    awaiting cell stopped ${Date.now() - t0} ms after its stop button`);
      assert.equal(finished.get(waiting), 'interrupted');
      assert.doesNotMatch(errorOf(waiting).message, /State was lost/);
      const check = await appendCell('survivor');
      await run(check);
      assert.match(text(check), /kept/);
    } finally {
      sub.dispose();
      rmSync(release, { force: true });
    }
  });

  it('output a cell prints after it ended shows in that cell, which keeps its order and success', async () => {
    const first = await appendCell('let releaseLate!: () => void;\nnew Promise<void>((r) => { releaseLate = r; }).then(() => console.log("printed after the cell ended"));\n"armed"');
    await run(first);
    const order = first.executionSummary?.executionOrder;
    const second = await appendCell('releaseLate();\n"released"');
    await run(second);
    await until(() => text(first).includes('printed after the cell ended') && first.executionSummary?.success === true && first.executionSummary.executionOrder === order,
      'the late output shows in the cell that printed it', () => `${text(first)} (order ${first.executionSummary?.executionOrder}, success ${first.executionSummary?.success})`, 30_000);
    assert.match(text(first), /armed/, 'the cell keeps the output of its run');
    assert.doesNotMatch(text(second), /printed after the cell ended/, 'not in the cell that was running');
    assert.equal(second.executionSummary?.success, true);
  });

  it('a cell of 10 s or more that ends while the user looks elsewhere announces it', async () => {
    const long = await appendCell('console.log("started");\nawait new Promise((r) => setTimeout(r, 10_200));\n"slow"');
    const noticed = new Promise<{ message: string; level: string }>((resolve) => {
      const sub = api.notebooks.onDidNotifyLongCell((e) => { if (e.cell === long) { sub.dispose(); resolve(e); } });
    });
    const ended = run(long, 60_000);
    await until(() => text(long).includes('started'), 'the long cell starts', () => text(long), 30_000);
    // The user turns to another editor: the cell is no longer in view.
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument({ content: 'elsewhere' }));
    try {
      await ended;
      const notice = await noticed;
      assert.match(notice.message, new RegExp(`^Cell ${long.index + 1} of starter\\.ipynb finished after 1[01] s\\.$`));
      assert.equal(notice.level, 'info');
    } finally {
      await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
      await vscode.window.showNotebookDocument(notebook);
    }
  });

  it('grid.connect() to an address where nothing listens fails at once with why, and lists nothing', async () => {
    // A port that was free a moment ago and has nothing listening now.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const url = `ws://127.0.0.1:${port}`;
    const nodesBefore = vscode.workspace.getConfiguration('grid').get<unknown[]>('nodes', []);
    // Reconnecting without end is the default (reconnect.maxAttempts 0): the cell must not wait on it.
    const cell = await appendCell(`await grid.connect(${JSON.stringify(url)})`);
    await run(cell, 60_000);
    assert.equal(cell.executionSummary?.success, false, text(cell));
    const err = errorOf(cell) as { message: string; code?: string };
    assert.ok(err.message.includes(url), err.message);
    assert.match(err.message, /ECONNREFUSED|refused/i);
    assert.match(err.message, /was not added to grid\.nodes/);
    assert.match(text(cell), /GRID_ERR_NOT_CONNECTED/);
    assert.deepEqual(vscode.workspace.getConfiguration('grid').get<unknown[]>('nodes', []), nodesBefore, 'the unreachable address was saved into grid.nodes');
    assert.equal(api.ctx.find(url), undefined, 'the unreachable address shows in the Nodes view');
  });

  it('Grid: Restart Kernel clears the variables', async () => {
    await vscode.commands.executeCommand('grid.restartKernel');
    const check = await appendCell('typeof kept');
    await run(check);
    assert.match(text(check), /undefined/);
  });

  it('a new notebook on this kernel gets its kernelspec, and runs JavaScript cells too', async () => {
    const data = new vscode.NotebookData([
      new vscode.NotebookCellData(vscode.NotebookCellKind.Code, 'const xs = [1, 2, 3];\nconsole.log("sum", xs.reduce((a, b) => a + b));', 'javascript'),
      new vscode.NotebookCellData(vscode.NotebookCellKind.Code, 'const n: number = xs.length;\nn * 2', 'typescript'),
    ]);
    const doc = await vscode.workspace.openNotebookDocument('jupyter-notebook', data);
    await vscode.window.showNotebookDocument(doc);
    await vscode.commands.executeCommand('notebook.selectKernel', { id: CONTROLLER_ID, extension: EXTENSION_ID });
    const previous = notebook;
    notebook = doc;
    try {
      await run(doc.cellAt(0));
      await run(doc.cellAt(1));
      assert.equal(doc.cellAt(0).executionSummary?.success, true, text(doc.cellAt(0)));
      assert.match(text(doc.cellAt(0)), /sum 6/);
      assert.match(text(doc.cellAt(1)), /text\/plain: 6/);
      const meta = doc.metadata as { metadata?: { kernelspec?: { name?: string }; language_info?: { name?: string } } };
      assert.equal(meta.metadata?.kernelspec?.name, 'grid-typescript');
      assert.equal(meta.metadata?.language_info?.name, 'typescript');
    } finally {
      notebook = previous;
      await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
    }
  });

  it('Grid: New Notebook opens the starter as an untitled notebook', async () => {
    await vscode.commands.executeCommand('grid.newNotebook');
    const editor = vscode.window.activeNotebookEditor;
    assert.ok(editor, 'no notebook editor is active');
    assert.equal(editor.notebook.isUntitled, true);
    assert.equal(editor.notebook.notebookType, 'jupyter-notebook');
    // The shipped starter (the workspace copy has the cells this suite appended).
    const starter = JSON.parse(readFileSync(join(vscode.extensions.getExtension(EXTENSION_ID)!.extensionPath, 'media', 'samples', 'starter.ipynb'), 'utf8')) as { cells: unknown[] };
    assert.equal(editor.notebook.cellCount, starter.cells.length, 'every cell of the starter');
    assert.ok(editor.notebook.getCells().some((c) => c.document.getText().includes('grid.connect()')));
    await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
  });
});
