// The Grid sidebar and commands in a real VS Code against real grid nodes: the embedded local node
// (started by the command, as a user does) and a second node this suite runs as a separate process.
// Trees are read through the views' own TreeDataProviders (what the user sees), commands are run with
// their optional arguments in place of the dialogs and quick picks a person would answer.
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as readline from 'node:readline';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import { decodeTensorProto } from '../../../src/compute/onnx/tensor-proto';
import { encodeModel, makeNode, makeValueInfo } from '../../../src/compute/onnx/model';
import { mlp } from '../../../src/compute/plan';
import { GridClient } from '../../../src/core/client';
import { writeLocalNodeRecord } from '../../../src/core/local-node';
import type { JobInfo } from '../../../src/core/protocol/training-messages';
import type { FedAvgSummary } from '../../../src/extension/train';
import { localNodePaths } from '../../../src/extension/local-node';
import type { ShownError } from '../../../src/extension/ctx';
import type { GridExtensionApi } from '../../../src/extension/main';
import type { GridTreeItem } from '../../../src/extension/views/items';
import { report } from './report';

const EXTENSION_ID = 'grid-workbench.grid-workbench';
const WAIT_MS = 30_000;

let api: GridExtensionApi;
let extensionPath: string;
let samples: string;
const scratch = mkdtempSync(join(tmpdir(), 'grid-sidebar-'));

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

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : item.label?.label ?? '';
}

/** The Nodes view's top level as the user sees it: "label — description". */
function nodeRows(): string[] {
  return (api.nodesView.getChildren() as GridTreeItem[]).map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

function nodeRow(name: string): vscode.TreeItem | undefined {
  return (api.nodesView.getChildren() as GridTreeItem[]).find((i) => label(i) === name);
}

function nodeState(name: string): string | undefined {
  return String(nodeRow(name)?.description ?? '').split(' · ')[0];
}

function modelRows(): string[] {
  return api.modelsView.getChildren().map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

function untilNode(name: string, state: string): Promise<void> {
  return until(api.ctx.onDidChangeNodes, () => nodeState(name) === state, `node "${name}" ${state}`, () => nodeRows().join(' | ') || '(no nodes)');
}

function untilModels(pred: (rows: string[]) => boolean, what: string, ms = WAIT_MS): Promise<void> {
  return until(api.modelsView.onDidChangeTreeData, () => pred(modelRows()), what, () => modelRows().join(' | ') || '(no models)', ms);
}

/** The items of a node's group ("Models", "Datasets", …) in the Nodes view. */
function groupItem(node: string, group: string): GridTreeItem[] {
  const n = nodeRow(node) as GridTreeItem | undefined;
  assert.ok(n, `no node "${node}" in the Nodes view: ${nodeRows().join(' | ')}`);
  const g = (api.nodesView.getChildren(n) as GridTreeItem[]).find((i) => label(i) === group);
  assert.ok(g, `node "${node}" shows no "${group}" group`);
  return api.nodesView.getChildren(g) as GridTreeItem[];
}

/** The labels of a node's group in the Nodes view. */
function groupChildren(node: string, group: string): string[] {
  return groupItem(node, group).map(label);
}

/** The next error message the extension shows while `action` runs. */
async function errorShownBy(action: () => Thenable<unknown>): Promise<string> {
  let shown: string | undefined;
  const sub = api.onDidShowError((e) => { shown ??= e.message; });
  try {
    const result = await action();
    assert.equal(result, undefined, 'a failed command resolves without a result');
  } finally {
    sub.dispose();
  }
  assert.ok(shown, 'no error message was shown');
  return shown;
}

/** What a pick showed: its title, its rows ("label — description", separators left out), the files behind them. */
interface ShownPick {
  title: string | undefined;
  rows: string[];
  files: (string | undefined)[];
}

/** Takes the first row of the next file or destination pick a command shows, as Enter does; resolves with what it showed. */
function acceptFirstPick(): Promise<ShownPick> {
  return new Promise((resolve) => {
    const sub = api.onDidPick((pick) => {
      sub.dispose();
      const items = pick.items.filter((i) => i.kind !== vscode.QuickPickItemKind.Separator);
      resolve({ title: pick.title, rows: items.map((i) => `${i.label} — ${i.description ?? ''}`), files: items.map((i) => (i as { file?: string }).file) });
      void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
    });
  });
}

/** A grid node in its own process (a "remote" node), restartable on the same port and data dir. */
class NodeProcess {
  child: ChildProcess | undefined;
  url = '';
  readonly dataDir = mkdtempSync(join(scratch, 'node-'));
  password = 'sidebar-test-password';

  async start(port = 0, extra: string[] = [], demoDatasets = true): Promise<string> {
    const child = spawn(process.execPath, [join(extensionPath, 'dist', 'grid-node.js'), '--port', String(port), '--data-dir', this.dataDir, '--name', 'remote-node', ...(demoDatasets ? ['--demo-datasets'] : []), '--log-level', 'warn', ...extra], {
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', GRID_ADMIN_PASSWORD: this.password },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.url = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = /^listening on (ws:\/\/\S+)/.exec(l);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`grid-node exited (${code}) before listening`)));
    });
    return this.url;
  }

  kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => { child.once('exit', () => resolve()); child.kill('SIGKILL'); });
  }
}

describe('Grid sidebar and commands', function () {
  this.timeout(120_000);
  const remote = new NodeProcess();
  // A node not signed in, then added under a second address; its only dataset is named "digits" but
  // has 2 features: FedAvg over "digits" finds it, and the node refuses to train the 64-feature model on it.
  const third = new NodeProcess();
  let thirdUrl = '';

  before(async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not installed`);
    api = await ext.activate();
    // Earlier suites (the notebook) may have left the local node running: start from no node.
    await vscode.commands.executeCommand('grid.stopLocalNode');
    extensionPath = ext.extensionPath;
    const folder = vscode.workspace.workspaceFolders?.[0];
    assert.ok(folder, 'the test window has no workspace folder');
    samples = folder.uri.fsPath;
  });

  after(async () => {
    await remote.kill();
    await third.kill();
    await vscode.commands.executeCommand('grid.stopLocalNode');
    rmSync(scratch, { recursive: true, force: true });
  });

  it('shows no node and points to the local node before any is started', () => {
    assert.deepEqual(nodeRows(), [], 'the Nodes view is not empty, so its welcome view is hidden');
  });

  it('starts the local node from the command, connected and signed in, with the demo datasets', async () => {
    // Every state the Local node's row shows on the way: it signs in by itself, so never "unauthenticated".
    const shown: string[] = [];
    const sub = api.ctx.onDidChangeNodes(() => {
      const s = nodeState('Local node');
      if (s !== undefined && shown.at(-1) !== s) shown.push(s);
    });
    // A double click starts one node, not two.
    const [url, again] = await Promise.all([vscode.commands.executeCommand<string>('grid.startLocalNode'), vscode.commands.executeCommand<string>('grid.startLocalNode')]);
    assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(again, url);
    await untilNode('Local node', 'connected');
    sub.dispose();
    assert.ok(!shown.includes('unauthenticated'), `the Local node's row went through: ${shown.join(' → ')}`);
    assert.match(String(nodeRow('Local node')!.description), /^connected · admin · 127\.0\.0\.1:\d+$/);
    assert.deepEqual(groupChildren('Local node', 'Datasets').sort(), ['breast_cancer', 'digits', 'iris', 'wine']);
    assert.match(api.statusBar.text, /Grid 1\/1/);
  });

  it('serves a model picked as a file; it appears in the Models view with its signature', async () => {
    const info = await vscode.commands.executeCommand<{ id: string; size: number }>('grid.serveModel', {
      node: 'Local node', file: join(samples, 'relu', 'relu.onnx'), id: 'sb-relu', allowDownload: true, allowRemoteInference: true,
    });
    assert.equal(info?.id, 'sb-relu');
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-relu — Local node')), 'relu in the Models view');
    const item = api.modelsView.getChildren().find((i) => label(i) === 'sb-relu')!;
    assert.equal(item.contextValue, 'model:download:infer:train');
    const tooltip = (item.tooltip as vscode.MarkdownString).value;
    assert.match(tooltip, /\| in \| x \| float32 \|/);
    assert.match(tooltip, /\| out \| y \| float32 \|/);
    assert.ok(groupChildren('Local node', 'Models').includes('sb-relu'), 'the node\'s Models group does not list the model');
  });

  it('runs inference on a .pb input and opens the result document with the expected outputs', async () => {
    const caseDir = join(samples, 'relu', 'test_data_set_0');
    const result = await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'Local node', model: 'sb-relu', inputs: [join(caseDir, 'input_0.pb')] });
    assert.ok(result, 'run inference gave no result');
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result.document);
    assert.ok(doc, 'the result document is not open');
    assert.equal(vscode.window.activeTextEditor?.document, doc, 'the result document is not the active editor');
    const json = JSON.parse(doc.getText()) as { model: string; outputs: Record<string, { dtype: string; dims: number[]; data: number[] }> };
    const expected = decodeTensorProto(readFileSync(join(caseDir, 'output_0.pb'))).tensor;
    assert.equal(json.model, 'sb-relu');
    assert.equal(json.outputs.y?.dtype, 'float32');
    assert.deepEqual(json.outputs.y?.dims, expected.dims);
    assert.deepEqual(json.outputs.y?.data, Array.from(expected.data as Float32Array));
  });

  it('runs inference on JSON text', async () => {
    const result = await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'Local node', model: 'sb-relu', json: '{"x": [[-3.5, 4.25]]}' });
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result?.document);
    assert.ok(doc, 'the result document is not open');
    assert.deepEqual((JSON.parse(doc.getText()) as { outputs: unknown }).outputs, { y: { dtype: 'float32', dims: [1, 2], data: [0, 4.25] } });
  });

  it('runs inference on the JSON in the active editor', async () => {
    const input = await vscode.workspace.openTextDocument({ language: 'json', content: '{"x": {"dtype": "float32", "dims": [1, 2], "data": [7, -7]}}' });
    await vscode.window.showTextDocument(input);
    const result = await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'Local node', model: 'sb-relu', fromActiveEditor: true });
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result?.document);
    assert.ok(doc, 'the result document is not open');
    assert.deepEqual((JSON.parse(doc.getText()) as { outputs: unknown }).outputs, { y: { dtype: 'float32', dims: [1, 2], data: [7, 0] } });
  });

  it('shows an image-like output as a picture next to the result document', async () => {
    const file = join(scratch, 'image-relu.onnx');
    writeFileSync(file, encodeModel({
      irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
      graph: { name: 'sb-image-relu', node: [makeNode('Relu', ['x'], ['y'])], input: [makeValueInfo('x', 1, [1, 1, 8, 8])], output: [makeValueInfo('y', 1, [1, 1, 8, 8])] },
    }));
    await vscode.commands.executeCommand('grid.serveModel', { node: 'Local node', file, id: 'sb-image-relu', allowDownload: false, allowRemoteInference: true });
    const digit = Array.from({ length: 8 }, (_, r) => Array.from({ length: 8 }, (_, c) => (r === c ? 16 : 0)));
    const result = await vscode.commands.executeCommand<{ document: string; images: string[] }>('grid.runInference', { node: 'Local node', model: 'sb-image-relu', json: JSON.stringify({ x: [[digit]] }) });
    assert.equal(result?.images.length, 1, 'no picture was made of the 8x8 output');
    const shown = vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => t.input instanceof vscode.TabInputCustom && t.input.uri.fsPath === result.images[0]);
    assert.equal(shown.length, 1, `the picture is not open in an editor; tabs: ${vscode.window.tabGroups.all.flatMap((g) => g.tabs).map((t) => t.label).join(', ')}`);
    assert.equal(readFileSync(result.images[0]!).subarray(1, 4).toString(), 'PNG');
  });

  it('downloads the model to the chosen file, byte for byte', async () => {
    const dest = join(scratch, 'relu-downloaded.onnx');
    const file = await vscode.commands.executeCommand<string>('grid.downloadModel', { node: 'Local node', model: 'sb-relu', dest });
    assert.equal(file, dest);
    assert.deepEqual(readFileSync(dest), readFileSync(join(samples, 'relu', 'relu.onnx')));
  });

  it('Serve Model with no file offers the workspace\'s ONNX models, then Browse…; the row taken is served', async () => {
    const shown = acceptFirstPick();
    const info = await vscode.commands.executeCommand<{ id: string; size: number; sha256: string }>('grid.serveModel', { node: 'Local node', id: 'sb-picked', allowDownload: false, allowRemoteInference: true });
    const pick = await shown;
    assert.equal(pick.title, 'Serve an ONNX model');
    assert.ok(pick.rows.includes('relu.onnx — relu'), `the workspace's relu/relu.onnx is not offered: ${pick.rows.join(' | ')}`);
    assert.match(pick.rows.at(-1)!, /Browse…/);
    const file = pick.files[0]!;
    assert.ok(file.endsWith('.onnx') && file.startsWith(samples), `the first row is not a workspace model: ${file}`);
    assert.equal(info?.id, 'sb-picked');
    assert.equal(info.size, statSync(file).size);
    assert.equal(info.sha256, createHash('sha256').update(readFileSync(file)).digest('hex'), 'the node holds another file than the one picked');
    await vscode.commands.executeCommand('grid.deleteModel', { node: 'Local node', model: 'sb-picked', skipConfirmation: true });
  });

  it('Download Model with no destination offers the workspace folder under the model\'s name, never over an existing file', async () => {
    const files: string[] = [];
    try {
      for (const expected of ['sb-relu.onnx', 'sb-relu-v1.onnx', 'sb-relu-v1-2.onnx']) {
        const shown = acceptFirstPick();
        const file = await vscode.commands.executeCommand<string>('grid.downloadModel', { node: 'Local node', model: 'sb-relu' });
        const pick = await shown;
        assert.equal(pick.title, 'Download sb-relu@1 from Local node');
        assert.match(pick.rows[0]!, new RegExp(`${expected.replace(/\./g, '\\.')} — in the workspace folder$`));
        assert.match(pick.rows[1]!, /Save As…/);
        assert.equal(file, join(samples, expected));
        files.push(file);
        assert.deepEqual(readFileSync(file), readFileSync(join(samples, 'relu', 'relu.onnx')));
      }
    } finally {
      for (const f of files) rmSync(f, { force: true });
    }
  });

  it('Run Inference with no inputs offers the workspace\'s tensor files for a one-input model; the row taken is the input', async () => {
    const caseDir = join(samples, 'relu', 'test_data_set_0');
    const shown = acceptFirstPick();
    const result = await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'Local node', model: 'sb-relu' });
    const pick = await shown;
    assert.match(pick.title ?? '', /^Inputs for sb-relu: /);
    assert.deepEqual(pick.rows.slice(0, 2), ['input_0.pb — relu/test_data_set_0', 'output_0.pb — relu/test_data_set_0']);
    assert.ok(pick.rows.some((r) => /Browse for input files…/.test(r)), `no Browse row: ${pick.rows.join(' | ')}`);
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result?.document);
    assert.ok(doc, 'the result document is not open');
    const expected = decodeTensorProto(readFileSync(join(caseDir, 'output_0.pb'))).tensor;
    assert.deepEqual((JSON.parse(doc.getText()) as { outputs: { y: { data: number[] } } }).outputs.y.data, Array.from(expected.data as Float32Array));
  });

  it('shows a model served from the grid CLI within a second, without a refresh; the CLI finds the local node and signs in by itself', async () => {
    const t0 = performance.now();
    const env: NodeJS.ProcessEnv = { ...process.env, ELECTRON_RUN_AS_NODE: '1' };
    delete env.GRID_NODE; delete env.GRID_USER; delete env.GRID_PASSWORD;
    const cli = spawn(process.execPath, [join(extensionPath, 'dist', 'grid.js'), 'serve', join(samples, 'relu', 'relu.onnx'), '--id', 'sb-relu-cli', '--allow-remote-inference'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    cli.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
    const status = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    assert.equal(status, 0, `grid serve failed: ${stderr}`);
    const served = performance.now();
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-relu-cli — Local node')), 'sb-relu-cli in the Models view', 1_000);
    report(`      CLI serve → Models view: ${(performance.now() - served).toFixed(0)} ms after the CLI exited (CLI took ${(served - t0).toFixed(0)} ms)`);
  });

  it('deletes a model; it disappears from both views', async () => {
    const deleted = await vscode.commands.executeCommand<string>('grid.deleteModel', { node: 'Local node', model: 'sb-relu-cli', skipConfirmation: true });
    assert.equal(deleted, 'sb-relu-cli');
    await untilModels((rows) => !rows.some((r) => r.startsWith('sb-relu-cli ')), 'sb-relu-cli gone from the Models view');
    const models = groupChildren('Local node', 'Models');
    assert.ok(models.includes('sb-relu') && models.includes('sb-image-relu') && !models.includes('sb-relu-cli'), `the node's Models group shows ${models.join(', ')}`);
  });

  it('changes a model\'s permissions from its context menu; both views show the new flags without a refresh', async () => {
    const menu = (vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON as { contributes: { menus: Record<string, { command: string; when?: string }[]> } }).contributes.menus['view/item/context'];
    assert.ok(menu.some((m) => m.command === 'grid.changeModelPermissions' && m.when === 'viewItem =~ /^model/'), 'model items have no Change Model Permissions… menu entry');
    const row = () => modelRows().find((r) => r.startsWith('sb-image-relu '));
    assert.match(row() ?? '', / · inference$/);
    // Its owner (admin here) may download it although others may not: the item offers Download.
    assert.equal(api.modelsView.getChildren().find((i) => label(i) === 'sb-image-relu')?.contextValue, 'model:download:infer:train');
    const info = await vscode.commands.executeCommand<{ allow_download: boolean; allow_remote_inference: boolean }>('grid.changeModelPermissions', {
      node: 'Local node', model: 'sb-image-relu', allowDownload: true, allowRemoteInference: false,
    });
    assert.deepEqual(info && { download: info.allow_download, infer: info.allow_remote_inference }, { download: true, infer: false });
    await untilModels(() => / · download$/.test(row() ?? ''), 'sb-image-relu shown as downloadable only', 1_000);
  });

  it('trains a model on the local node\'s digits: live job in the Jobs group, the trained model in the Models view', async () => {
    const file = join(scratch, 'digits-mlp.onnx');
    writeFileSync(file, mlp([64, 16, 10], { seed: 3 }));
    await vscode.commands.executeCommand('grid.serveModel', { node: 'Local node', file, id: 'sb-digits-mlp', allowDownload: true, allowRemoteInference: true });
    const job = await vscode.commands.executeCommand<JobInfo>('grid.train', {
      node: 'Local node', model: 'sb-digits-mlp', mode: 'node', dataset: 'digits', epochs: 3, lr: 0.01, featureScale: 1 / 16, outputId: 'sb-digits-mlp-trained',
    });
    assert.ok(job, 'the Train command gave no job');
    assert.equal(job.state, 'succeeded');
    report(`      digits MLP 64-16-10, 3 epochs on the local node: test accuracy ${(job.result!.test!.accuracy * 100).toFixed(1)}% in ${job.result!.seconds.toFixed(1)} s`);
    assert.ok(job.result!.test!.accuracy > 0.6, `test accuracy ${job.result!.test!.accuracy} is no better than guessing`);
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-digits-mlp-trained — Local node')), 'the trained model in the Models view');
    const jobs = (api.nodesView.getChildren((api.nodesView.getChildren(nodeRow('Local node') as GridTreeItem) as GridTreeItem[]).find((i) => label(i) === 'Jobs')) as GridTreeItem[]);
    assert.ok(jobs.some((j) => label(j) === 'sb-digits-mlp@1 on digits' && /^succeeded · .*→ sb-digits-mlp-trained@1$/.test(String(j.description))), `Jobs shows ${jobs.map((j) => `${label(j)}: ${String(j.description)}`).join(' | ')}`);
  });

  it('trains without an output id: the next version, under its model in both views; deleting that version makes the first the latest again', async () => {
    const job = await vscode.commands.executeCommand<JobInfo>('grid.train', { node: 'Local node', model: 'sb-digits-mlp', mode: 'node', dataset: 'digits', epochs: 1, lr: 0.01, featureScale: 1 / 16 });
    assert.equal(job?.state, 'succeeded');
    assert.deepEqual([job.result!.model!.id, job.result!.model!.version, job.result!.model!.parent], ['sb-digits-mlp', '2', 'sb-digits-mlp@1']);
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-digits-mlp — Local node · v2 · 2 versions · ')), 'sb-digits-mlp at v2 with 2 versions');
    const row = api.modelsView.getChildren().find((i) => label(i) === 'sb-digits-mlp')!;
    assert.equal(row.collapsibleState, vscode.TreeItemCollapsibleState.Collapsed);
    const versions = api.modelsView.getChildren(row).map((i) => `${label(i)} — ${String(i.description ?? '')}`);
    assert.equal(versions.length, 2, versions.join(' | '));
    assert.match(versions[0]!, /^sb-digits-mlp@2 — latest · from sb-digits-mlp@1 · /);
    assert.match(versions[1]!, /^sb-digits-mlp@1 — [^l]/);
    assert.match(api.modelsView.getChildren(row)[0]!.contextValue ?? '', /^model-version:download:infer:train$/);
    const inNodes = (api.nodesView.getChildren(groupItem('Local node', 'Models').find((i) => label(i) === 'sb-digits-mlp')) as GridTreeItem[]).map(label);
    assert.deepEqual(inNodes, ['sb-digits-mlp@2', 'sb-digits-mlp@1']);
    const deleted = await vscode.commands.executeCommand<string>('grid.deleteModel', { node: 'Local node', model: 'sb-digits-mlp@2', skipConfirmation: true });
    assert.equal(deleted, 'sb-digits-mlp@2');
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-digits-mlp — Local node · v1 · ')), 'sb-digits-mlp back at v1');
  });

  it('shows the coded error when the file is not an ONNX model', async () => {
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.serveModel', {
      node: 'Local node', file: join(samples, 'relu', 'test_data_set_0', 'input_0.pb'), id: 'sb-not-a-model', allowDownload: false, allowRemoteInference: true,
    }));
    assert.match(message, /^Could not serve the model: .+ \(GRID_ERR_INVALID_MODEL\)$/);
    assert.ok(!modelRows().some((r) => r.startsWith('sb-not-a-model')), 'a refused model shows in the Models view');
  });

  it('shows the coded error for inputs of the wrong shape', async () => {
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.runInference', { node: 'Local node', model: 'sb-relu', json: '[[1, 2], [3, 4]]' }));
    assert.match(message, /^Inference failed: .+ \(GRID_ERR_INVALID_INPUT\)$/);
  });

  it('shows a node nobody answers at as reconnecting with the reason; Connect does not hang on it', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    await vscode.commands.executeCommand('grid.addNode', { name: 'nowhere', url: `ws://127.0.0.1:${port}` });
    await untilNode('nowhere', 'reconnecting');
    const reason = (api.nodesView.getChildren(nodeRow('nowhere') as GridTreeItem) as GridTreeItem[])[0]!;
    assert.match(label(reason), /reconnect attempt \d+/);
    assert.equal(reason.command?.command, 'grid.connect', 'the reason item does not offer a retry');
    assert.equal(await vscode.commands.executeCommand('grid.connect', { node: 'nowhere' }), 'reconnecting');
    assert.match(api.statusBar.text, /Grid 1\/2/);
    await vscode.commands.executeCommand('grid.removeNode', { node: 'nowhere' });
    assert.equal(nodeRow('nowhere'), undefined);
  });

  it('refuses a node address that is not a ws:// URL, with its code', async () => {
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.addNode', { name: 'web', url: 'http://127.0.0.1:1' }));
    assert.match(message, /^Could not add the node: .+ \(GRID_ERR_INVALID_URL\)$/);
    assert.equal(nodeRow('web'), undefined);
  });

  it('adds a node: it shows unauthenticated, then connected after signing in', async () => {
    const url = await remote.start();
    await vscode.commands.executeCommand('grid.addNode', { name: 'remote', url });
    assert.ok(nodeRow('remote'), `the added node is not in the Nodes view: ${nodeRows().join(' | ')}`);
    await untilNode('remote', 'unauthenticated');
    const reason = (api.nodesView.getChildren(nodeRow('remote') as GridTreeItem) as GridTreeItem[])[0]!;
    assert.match(label(reason), /not signed in/);
    assert.equal(reason.command?.command, 'grid.authenticate');
    const refused = await errorShownBy(() => vscode.commands.executeCommand('grid.authenticate', { node: 'remote', username: 'admin', password: 'not-the-password' }));
    assert.match(refused, /^Could not sign in: .+ \(GRID_ERR_BAD_CREDENTIALS\)$/);
    assert.equal(nodeState('remote'), 'unauthenticated');
    const user = await vscode.commands.executeCommand<string>('grid.authenticate', { node: 'remote', username: 'admin', password: remote.password });
    assert.equal(user, 'admin');
    await untilNode('remote', 'connected');
    assert.deepEqual(vscode.workspace.getConfiguration('grid').get('nodes'), [{ name: 'remote', url }], 'the node is not kept in settings');
    assert.ok(!JSON.stringify(vscode.workspace.getConfiguration('grid')).includes(remote.password), 'the password leaked into settings');
  });

  it('disconnects and reconnects a node, signing in again from the secret storage', async () => {
    assert.equal(await vscode.commands.executeCommand('grid.disconnect', { node: 'remote' }), 'disconnected');
    assert.equal(nodeState('remote'), 'disconnected');
    assert.deepEqual(api.nodesView.getChildren(nodeRow('remote') as GridTreeItem), [], 'a disconnected node still shows its lists');
    const shown: string[] = [];
    const sub = api.ctx.onDidChangeNodes(() => {
      const s = nodeState('remote');
      if (s !== undefined && shown.at(-1) !== s) shown.push(s);
    });
    await vscode.commands.executeCommand('grid.connect', { node: 'remote' });
    await untilNode('remote', 'connected');
    sub.dispose();
    assert.ok(!shown.includes('unauthenticated'), `the stored sign-in works, yet the row went through: ${shown.join(' → ')}`);
    const info = await vscode.commands.executeCommand<Record<string, unknown>>('grid.showNodeInfo', { node: 'remote' });
    assert.equal(info?.node_name, 'remote-node');
    assert.equal(info?.signed_in_as, 'admin');
    assert.deepEqual([...(info?.datasets as string[])].sort(), ['breast_cancer', 'digits', 'iris', 'wine']);
  });

  it('trains by FedAvg across the local and the added node; the averaged model is served on the local node', async () => {
    const summary = await vscode.commands.executeCommand<FedAvgSummary>('grid.train', {
      node: 'Local node', model: 'sb-digits-mlp', mode: 'fedavg', tag: 'digits', nodes: ['Local node', 'remote'], rounds: 2, epochs: 1, lr: 0.1, featureScale: 1 / 16, outputId: 'sb-digits-fedavg',
    });
    assert.ok(summary, 'the Train command gave no FedAvg summary');
    assert.deepEqual(summary.rounds.map((r) => r.round), [1, 2]);
    const test = summary.rounds.at(-1)!.test!;
    report(`      FedAvg over 2 nodes, 2 rounds: test accuracy ${(test.accuracy * 100).toFixed(1)}%`);
    assert.ok(test.accuracy > 0.3, `FedAvg test accuracy ${test.accuracy}`);
    await untilModels((rows) => rows.some((r) => r.startsWith('sb-digits-fedavg — Local node')), 'the FedAvg model in the Models view');
  });

  /** Types `answers[prompt]` into each sign-in prompt the extension shows and presses Enter (the workbench's own accept). */
  function answerPrompts(answers: Record<string, string>): vscode.Disposable {
    return api.onDidAsk((box) => {
      const answer = Object.entries(answers).find(([prompt]) => box.prompt?.startsWith(prompt))?.[1];
      if (answer === undefined) return;
      box.value = answer;
      void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
    });
  }

  it('Serve on a node not signed in says so in VS Code\'s words with Authenticate first; Authenticate signs in and the serve completes', async () => {
    const csv = join(scratch, 'two-features.csv');
    writeFileSync(csv, `a,b,label\n${Array.from({ length: 40 }, (_, i) => `${i % 7},${i % 5},${i % 2}`).join('\n')}\n`);
    thirdUrl = await third.start(0, ['--dataset', `digits=${csv}:label=label`], false);
    await vscode.commands.executeCommand('grid.addNode', { name: 'third', url: thirdUrl });
    await untilNode('third', 'unauthenticated');
    let shown: ShownError | undefined;
    const sub = api.onDidShowError((e) => { shown ??= e; });
    const result = await vscode.commands.executeCommand('grid.serveModel', {
      node: 'third', file: join(samples, 'relu', 'relu.onnx'), id: 'sb-after-sign-in', allowDownload: false, allowRemoteInference: true,
    });
    sub.dispose();
    assert.equal(result, undefined);
    assert.ok(shown, 'no error was shown');
    assert.match(shown.message, /sign in to third \(Grid: Authenticate\)/);
    assert.doesNotMatch(shown.message, /--user|--password|GRID_USER|GRID_PASSWORD/);
    assert.equal(shown.actions[0], 'Authenticate', `the actions are ${shown.actions.join(', ')}`);
    // The user presses the notification's Authenticate button, types the user name and password.
    const prompts = answerPrompts({ 'User name': 'admin', 'Password of admin': third.password });
    try {
      await vscode.commands.executeCommand('notification.acceptPrimaryAction');
      await untilModels((rows) => rows.some((r) => r.startsWith('sb-after-sign-in — third')), 'the model served after signing in');
    } finally {
      prompts.dispose();
    }
    assert.equal(nodeState('third'), 'connected');
  });

  it('the same node added under a second URL shows one row ("also NAME"); commands naming the alias use the first connection', async () => {
    const again = thirdUrl.replace('127.0.0.1', 'localhost');
    const localAgain = api.ctx.localNode!.url!.replace('127.0.0.1', 'localhost');
    await vscode.commands.executeCommand('grid.addNode', { name: 'third-again', url: again });
    await vscode.commands.executeCommand('grid.addNode', { name: 'local-by-name', url: localAgain });
    const shownOnce = () => nodeRow('third-again') === undefined && nodeRow('local-by-name') === undefined
      && /· also third-again$/.test(String(nodeRow('third')?.description)) && /· also local-by-name$/.test(String(nodeRow('Local node')?.description));
    await until(api.ctx.onDidChangeNodes, shownOnce, 'one row per node', () => nodeRows().join(' | '));
    assert.equal(nodeRows().filter((r) => r.startsWith('third') || r.startsWith('local-by-name')).length, 1, nodeRows().join(' | '));
    assert.equal(api.ctx.findEntry('third-again')?.state, 'disconnected', 'the alias keeps a second socket to the node');
    const info = await vscode.commands.executeCommand<Record<string, unknown>>('grid.showNodeInfo', { node: 'third-again' });
    assert.equal(info?.url, thirdUrl);
    assert.deepEqual(info?.also_listed_as, [{ name: 'third-again', url: again }]);
    assert.ok(modelRows().filter((r) => r.startsWith('sb-after-sign-in ')).length === 1, `the Models view lists the model twice: ${modelRows().join(' | ')}`);
  });

  it('FedAvg refuses one node named twice, naming both entries', async () => {
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.train', {
      node: 'Local node', model: 'sb-digits-mlp', mode: 'fedavg', tag: 'digits', nodes: ['third', 'third-again'], rounds: 1, epochs: 1, lr: 0.1,
    }));
    assert.match(message, /"third" and "third-again" are the same dataset .* on the same node/);
    assert.match(message, /GRID_ERR_INVALID_INPUT/);
  });

  it('a FedAvg participant that sits out carries its reason: in the result, and on its row in the Nodes view', async () => {
    const summary = await vscode.commands.executeCommand<FedAvgSummary>('grid.train', {
      node: 'Local node', model: 'sb-digits-mlp', mode: 'fedavg', tag: 'digits', nodes: ['Local node', 'third'], rounds: 2, epochs: 1, lr: 0.1, featureScale: 1 / 16, outputId: 'sb-digits-fedavg-2',
    });
    assert.ok(summary, 'the Train command gave no FedAvg summary');
    for (const r of summary.rounds) {
      assert.equal(r.dropped.length, 1, JSON.stringify(r.dropped));
      assert.equal(r.dropped[0]!.node, 'third');
      assert.match(r.dropped[0]!.error.code, /^GRID_ERR_/);
      assert.ok(r.dropped[0]!.error.message.length > 10, JSON.stringify(r.dropped[0]));
    }
    const reason = summary.rounds[0]!.dropped[0]!.error;
    const rows = (api.nodesView.getChildren(nodeRow('third') as GridTreeItem) as GridTreeItem[]);
    const dropped = rows.find((i) => label(i).startsWith('sat out FedAvg of sb-digits-mlp'));
    assert.ok(dropped, `the third node's row does not say it sat out: ${rows.map(label).join(' | ')}`);
    assert.equal(label(dropped), `sat out FedAvg of sb-digits-mlp, rounds 1, 2: ${reason.message}`);
    assert.equal(dropped.description, reason.code);
    report(`      dropped participant's reason: ${reason.code}: ${reason.message}`);
    for (const name of ['third-again', 'local-by-name', 'third']) await vscode.commands.executeCommand('grid.removeNode', { node: name });
    assert.equal(nodeRow('third'), undefined);
    await third.kill();
  });

  it('shows a killed node as reconnecting, then connected again when it is back', async () => {
    const port = Number(new URL(remote.url).port);
    await remote.kill();
    await untilNode('remote', 'reconnecting');
    const reason = (api.nodesView.getChildren(nodeRow('remote') as GridTreeItem) as GridTreeItem[])[0]!;
    assert.match(label(reason), /reconnect attempt \d+/);
    await remote.start(port);
    await untilNode('remote', 'connected');
  });

  it('restarts the local node when its process dies; the connection comes back by itself', async () => {
    const pid = api.ctx.localNode!.pid!;
    process.kill(pid, 'SIGKILL');
    await untilNode('Local node', 'reconnecting');
    await untilNode('Local node', 'connected');
    assert.notEqual(api.ctx.localNode!.pid, pid);
    await until(api.modelsView.onDidChangeTreeData, () => modelRows().some((r) => r.startsWith('sb-relu — Local node')), 'relu back in the Models view', () => modelRows().join(' | '));
  });

  it('removes a node from the list and from settings', async () => {
    await vscode.commands.executeCommand('grid.removeNode', { node: 'remote' });
    assert.equal(nodeRow('remote'), undefined);
    assert.deepEqual(vscode.workspace.getConfiguration('grid').get('nodes'), []);
  });

  it('stops the local node: its process is gone and the Nodes view is empty again', async () => {
    const pid = api.ctx.localNode!.pid!;
    await vscode.commands.executeCommand('grid.stopLocalNode');
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `the local node process ${pid} still runs`);
    assert.deepEqual(nodeRows(), []);
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.runInference'));
    assert.match(message, /GRID_ERR_NOT_CONNECTED/);
  });
  it('joins the local node another program runs (signed in by its record) instead of starting a second one, and leaves it running on Stop', async () => {
    // "Another program": `grid-node --local` (as `npm run start` runs it) on its own data dir; it records itself.
    const other = new NodeProcess();
    const url = await other.start(0, ['--local']);
    const { recordFile } = localNodePaths(api.ctx.extCtx);
    try {
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      await untilNode('Local node', 'connected');
      assert.equal(api.ctx.localNode!.pid, other.child!.pid, 'this window started its own node');
      await vscode.commands.executeCommand('grid.stopLocalNode');
      assert.equal(nodeRow('Local node'), undefined);
      assert.doesNotThrow(() => process.kill(other.child!.pid!, 0), 'Stop killed the node another program runs');
    } finally {
      await other.kill();
      rmSync(recordFile, { force: true });
    }
  });

  it('a changed grid.localNode.port applies at the next Start Local Node, and a taken port points at the setting', async () => {
    const grid = vscode.workspace.getConfiguration('grid');
    // A port some other program holds.
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as AddressInfo).port;
    try {
      await grid.update('localNode.port', port, vscode.ConfigurationTarget.Global);
      const message = await errorShownBy(() => vscode.commands.executeCommand('grid.startLocalNode'));
      assert.match(message, new RegExp(`port ${port} .*in use.*set grid\\.localNode\\.port to 0.*\\(GRID_ERR_PORT_IN_USE\\)$`));
      assert.doesNotMatch(message, /--port/);
      // Back to a free port: the next start takes it, without a window reload.
      await grid.update('localNode.port', undefined, vscode.ConfigurationTarget.Global);
      const url = await vscode.commands.executeCommand<string>('grid.startLocalNode');
      assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+$/);
      assert.notEqual(Number(new URL(url).port), port);
      await untilNode('Local node', 'connected');
    } finally {
      await grid.update('localNode.port', undefined, vscode.ConfigurationTarget.Global);
      await vscode.commands.executeCommand('grid.stopLocalNode');
      await new Promise<void>((resolve) => busy.close(() => resolve()));
    }
  });

  it('a grid.nodes entry at the local node\'s fixed address stays listed across Stop Local Node; removing it leaves the local node usable', async () => {
    const grid = vscode.workspace.getConfiguration('grid');
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const url = `ws://127.0.0.1:${port}`;
    try {
      await grid.update('localNode.port', port, vscode.ConfigurationTarget.Global);
      await vscode.commands.executeCommand('grid.addNode', { name: 'fixed', url });
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      // One node, one row: the entry's connection is the local node's.
      await untilNode('fixed', 'connected');
      assert.deepEqual(nodeRows().map((r) => r.split(' — ')[0]), ['fixed']);
      await vscode.commands.executeCommand('grid.stopLocalNode');
      assert.ok(nodeRow('fixed'), `Stop Local Node dropped the grid.nodes entry: ${nodeRows().join(' | ') || '(no nodes)'}`);
      assert.notEqual(nodeState('fixed'), 'connected');
      // Started again, then the entry removed: the local node goes on, on a live connection.
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      await untilNode('fixed', 'connected');
      await vscode.commands.executeCommand('grid.removeNode', { node: 'fixed' });
      assert.deepEqual(grid.get('nodes'), []);
      const conn = api.ctx.find(url);
      assert.ok(conn?.isOpen, `the local node's connection went with the entry: ${nodeRows().join(' | ') || '(no nodes)'}`);
      assert.equal(typeof (await conn.client.getId()).id, 'string');
    } finally {
      await vscode.commands.executeCommand('grid.stopLocalNode');
      await grid.update('localNode.port', undefined, vscode.ConfigurationTarget.Global);
      await grid.update('nodes', undefined, vscode.ConfigurationTarget.Global);
    }
    assert.deepEqual(nodeRows(), []);
  });

  it('Stop on a joined local node names the program that runs it; when that program\'s node goes away, the row goes and the user is told', async () => {
    const other = new NodeProcess();
    const url = await other.start(0, ['--local']);
    const pid = other.child!.pid!;
    const { recordFile } = localNodePaths(api.ctx.extCtx);
    try {
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      await untilNode('Local node', 'connected');
      const said = await vscode.commands.executeCommand<string>('grid.stopLocalNode');
      assert.match(String(said), new RegExp(`keeps running in another program \\(pid ${pid}`));
      // Joined again; then the other program's node dies (no exit event reaches this window).
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      await untilNode('Local node', 'connected');
      const shown = new Promise<ShownError>((resolve) => { const sub = api.onDidShowError((e) => { sub.dispose(); resolve(e); }); });
      await other.kill();
      const e = await shown;
      assert.match(e.message, new RegExp(`^The local node stopped: the local node at ${url.replace(/[.]/g, '\\.')} is gone: the program that ran it \\(pid ${pid}\\) has exited.*\\(GRID_ERR_NOT_CONNECTED\\)$`));
      assert.ok(e.actions.includes('Show Logs'), e.actions.join(', '));
      await until(api.ctx.onDidChangeNodes, () => nodeRow('Local node') === undefined, 'the Local node row goes', () => nodeRows().join(' | '));
      assert.equal(api.ctx.isLocalNodeRunning, false);
    } finally {
      await other.kill();
      rmSync(recordFile, { force: true });
    }
  });

  it('a grid.nodes entry at the URL of a stale local-node record (a live pid, another node there) is not handed the record\'s token', async () => {
    const other = new NodeProcess();
    const url = await other.start(0, [], false);
    const { recordFile } = localNodePaths(api.ctx.extCtx);
    // A token the other node accepts: had the window sent it, that node would see an admin.
    const admin = await GridClient.connect(url, { credentials: { username: 'admin', password: other.password }, reconnect: { enabled: false } });
    const grid = vscode.workspace.getConfiguration('grid');
    try {
      const { token } = await admin.authenticate({ username: 'admin', password: other.password });
      writeLocalNodeRecord(recordFile, { url, pid: process.pid, node_id: 'node-that-crashed', name: 'local', data_dir: other.dataDir, token, user: 'admin', started: new Date().toISOString() });
      await vscode.commands.executeCommand('grid.addNode', { name: 'stale-record', url });
      await until(api.ctx.onDidChangeNodes, () => api.ctx.find(url)?.isOpen === true, 'the entry connected', () => nodeRows().join(' | ') || '(no nodes)');
      assert.equal(api.ctx.find(url)?.user, undefined, `the entry was signed in with the record's token: ${nodeRows().join(' | ')}`);
      assert.equal((await api.ctx.find(url)!.client.getId()).user, null, 'the other node saw a signed-in connection');
    } finally {
      admin.dispose();
      rmSync(recordFile, { force: true });
      await grid.update('nodes', undefined, vscode.ConfigurationTarget.Global);
      await other.kill();
    }
  });

  it('a joined local node that its program restarts on the same address keeps its row and is signed in again with the new record\'s token', async () => {
    const other = new NodeProcess();
    const url = await other.start(0, ['--local']);
    const { recordFile } = localNodePaths(api.ctx.extCtx);
    const errors: ShownError[] = [];
    const sub = api.onDidShowError((e) => errors.push(e));
    try {
      assert.equal(await vscode.commands.executeCommand<string>('grid.startLocalNode'), url);
      await untilNode('Local node', 'connected');
      assert.equal(api.ctx.find(url)?.user, 'admin');
      // Its program restarts it on the same port (as a window's supervisor does): for a moment there is
      // no process and no record, then a new pid and a new token (the old one is revoked).
      await other.kill();
      await other.start(Number(new URL(url).port), ['--local']);
      const pid = other.child!.pid!;
      await until(api.ctx.onDidChangeNodes, () => api.ctx.localNode?.pid === pid && nodeState('Local node') === 'connected' && api.ctx.find(url)?.user === 'admin' && api.ctx.find(url)?.isOpen === true,
        'the Local node row back on the restarted node, signed in as admin', () => `${nodeRows().join(' | ') || '(no nodes)'}; errors: ${errors.map((e) => e.message).join(' | ')}`);
      assert.deepEqual(errors.map((e) => e.message), [], 'an error was shown for a node that was only restarted');
      assert.equal((await api.ctx.find(url)!.client.getId()).user, 'admin');
    } finally {
      sub.dispose();
      await vscode.commands.executeCommand('grid.stopLocalNode');
      await other.kill();
      rmSync(recordFile, { force: true });
    }
  });

  it('a local node that keeps dying is given up on with an error offering Start Local Node and Show Logs', async () => {
    await vscode.commands.executeCommand('grid.startLocalNode');
    await untilNode('Local node', 'connected');
    let gaveUp: ShownError | undefined;
    let sub: vscode.Disposable | undefined;
    const shown = new Promise<ShownError>((resolve) => { sub = api.onDidShowError((e) => { gaveUp ??= e; resolve(e); }); });
    try {
      // Three restarts a minute at most: the fourth death in a row (fewer if the suite killed it earlier) is the last.
      for (let i = 0; i < 4 && !gaveUp; i++) {
        const pid = api.ctx.localNode!.pid!;
        process.kill(pid, 'SIGKILL');
        await Promise.race([shown, until(api.ctx.onDidChangeNodes, () => gaveUp !== undefined || (api.ctx.localNode?.pid !== pid && nodeState('Local node') === 'connected'),
          `the local node restarted after kill ${i + 1}, or was given up on`, () => nodeRows().join(' | ') || '(no nodes)')]);
      }
      assert.ok(gaveUp, 'no error was shown after four deaths in a row');
      assert.match(gaveUp.message, /^The local node stopped: the local node at ws:\/\/127\.0\.0\.1:\d+ is gone: it exited \d times within a minute \(last: SIGKILL\) and is not restarted again.*\(GRID_ERR_NOT_CONNECTED\)$/);
      assert.deepEqual(gaveUp.actions, ['Start Local Node', 'Show Logs']);
      await until(api.ctx.onDidChangeNodes, () => nodeRow('Local node') === undefined, 'the Local node row goes', () => nodeRows().join(' | '));
    } finally {
      sub?.dispose();
      await vscode.commands.executeCommand('grid.stopLocalNode');
    }
  });

});
