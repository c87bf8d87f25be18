// Model-centric FL in a real VS Code against the real local node: an FL process hosted with the
// command appears in the Grid tree; a worker joined with the command (training on the digits CSV in its
// own process) shows in the cycle as reported and the averaged checkpoint appears; a second worker of a
// full cycle shows as rejected with the node's reason; Download Checkpoint writes the file. The tree is
// read through the Nodes view's own provider; commands get their options in place of the dialogs.
import * as assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import { decodeModel, tensorFromProto } from '../../../src/compute/onnx';
import type { FlProcessInfo } from '../../../src/core/protocol/fl-messages';
import { serverLrPlan } from '../../helpers/fl-fixtures';
import type { FlJoinOutcome } from '../../../src/extension/fl-join';
import type { GridExtensionApi } from '../../../src/extension/main';

const EXTENSION_ID = 'grid-workbench.grid-workbench';
const WAIT_MS = 60_000;

let api: GridExtensionApi;
let extensionPath: string;
let samples: string;
const scratch = mkdtempSync(join(tmpdir(), 'grid-fl-e2e-'));

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : item.label?.label ?? '';
}

/** The rows under `path` (labels from the top: node, group, process, …) as "label — description". */
function rowsAt(...path: string[]): string[] {
  let items = api.nodesView.getChildren() as vscode.TreeItem[];
  for (const step of path) {
    const found = items.find((i) => label(i) === step);
    if (!found) return [`(no "${step}" among: ${items.map(label).join(', ')})`];
    items = api.nodesView.getChildren(found as never) as vscode.TreeItem[];
  }
  return items.map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

/** Resolves when `pred(rowsAt(...path))` holds, checked on every change of the Nodes view. */
function untilRows(path: string[], pred: (rows: string[]) => boolean, what: string): Promise<string[]> {
  const check = () => pred(rowsAt(...path));
  if (check()) return Promise.resolve(rowsAt(...path));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.dispose(); reject(new Error(`${what}: not within ${WAIT_MS} ms; ${path.join(' > ')} shows: ${rowsAt(...path).join(' | ')}`)); }, WAIT_MS);
    const sub = api.nodesView.onDidChangeTreeData(() => {
      if (!check()) return;
      clearTimeout(timer);
      sub.dispose();
      resolve(rowsAt(...path));
    });
  });
}

describe('Grid FL processes', function () {
  this.timeout(180_000);
  const digits = () => join(extensionPath, 'media', 'datasets', 'digits.csv.gz');

  before(async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not installed`);
    api = await ext.activate();
    extensionPath = ext.extensionPath;
    samples = vscode.workspace.workspaceFolders![0]!.uri.fsPath;
    await vscode.commands.executeCommand('grid.startLocalNode');
    await untilRows([], (rows) => rows.some((r) => /^Local node — connected/.test(r)), 'the local node connected');
  });

  after(async () => {
    await vscode.commands.executeCommand('grid.stopLocalNode');
    rmSync(scratch, { recursive: true, force: true });
  });

  it('hosts an FL process from the command; it appears under the node with its open cycle and first checkpoint', async () => {
    const p = await vscode.commands.executeCommand<FlProcessInfo>('grid.hostFlProcess', {
      node: 'Local node', file: join(samples, 'digits', 'digits-mlp.onnx'), name: 'e2e-digits', version: '1.0',
      serverConfig: { min_workers: 1, max_workers: 5, min_diffs: 1, max_diffs: 1, num_cycles: 3, cycle_length: 3600 },
      clientConfig: { batch_size: 32, lr: 0.1, epochs: 1 },
    });
    assert.equal(`${p?.name}@${p?.version}`, 'e2e-digits@1.0');
    const processes = await untilRows(['Local node', 'FL Processes'], (rows) => rows.some((r) => r.startsWith('e2e-digits@1.0 — ')), 'the process in the tree');
    assert.ok(processes.includes('e2e-digits@1.0 — cycle 1/3 · 0 assigned · 0 reported'), processes.join(' | '));
    const under = rowsAt('Local node', 'FL Processes', 'e2e-digits@1.0');
    assert.match(under[0]!, /^cycle 1 — open · 0 assigned · 0 reported/);
    assert.deepEqual(rowsAt('Local node', 'FL Processes', 'e2e-digits@1.0', 'Checkpoints').map((r) => r.split(' · ').slice(0, 2).join(' · ')), ['checkpoint 1 — latest · the hosted model']);
  });

  it('a worker joins with a local CSV: the cycle shows it reported, and the averaged checkpoint appears', async () => {
    const out = await vscode.commands.executeCommand<FlJoinOutcome>('grid.joinFlProcess', { node: 'Local node', process: 'e2e-digits@1.0', data: digits(), featureScale: 0.0625 });
    assert.equal(out?.kind, 'reported', JSON.stringify(out));
    if (out?.kind !== 'reported') return;
    assert.equal(out.numSamples, 1797);
    const cycles = await untilRows(['Local node', 'FL Processes', 'e2e-digits@1.0'], (rows) => rows.some((r) => r.startsWith('cycle 1 — completed')), 'cycle 1 completed');
    assert.ok(cycles.includes('cycle 1 — completed · 1 report averaged'), cycles.join(' | '));
    assert.match(cycles[0]!, /^cycle 2 — open · 0 assigned · 0 reported/);
    assert.deepEqual(rowsAt('Local node', 'FL Processes', 'e2e-digits@1.0', 'cycle 1'), [`worker ${out.workerId.slice(0, 8)} — reported`]);
    const checkpoints = rowsAt('Local node', 'FL Processes', 'e2e-digits@1.0', 'Checkpoints');
    assert.match(checkpoints[0]!, /^checkpoint 2 — latest · after cycle 1 \(1 reports\)/);
    assert.match(String(rowsAt('Local node', 'FL Processes').find((r) => r.startsWith('e2e-digits@1.0'))), /cycle 2\/3 · 0 assigned · 0 reported/);
  });

  it('a worker turned away shows in its cycle as rejected, with the node\'s reason', async () => {
    // One place per cycle and no max_diffs: the cycle stays open (closes by time) after the first report.
    await vscode.commands.executeCommand('grid.hostFlProcess', {
      node: 'Local node', file: join(samples, 'digits', 'digits-mlp.onnx'), name: 'e2e-full', version: '1.0',
      serverConfig: { max_workers: 1, num_cycles: 2, cycle_length: 3600 }, clientConfig: { batch_size: 64, lr: 0.1, epochs: 1, max_updates: 2 },
    });
    const first = await vscode.commands.executeCommand<FlJoinOutcome>('grid.joinFlProcess', { node: 'Local node', process: 'e2e-full@1.0', data: digits(), featureScale: 0.0625 });
    assert.equal(first?.kind, 'reported', JSON.stringify(first));
    const second = await vscode.commands.executeCommand<FlJoinOutcome>('grid.joinFlProcess', { node: 'Local node', process: 'e2e-full@1.0', data: digits(), featureScale: 0.0625 });
    assert.equal(second?.kind, 'rejected', JSON.stringify(second));
    const workers = await untilRows(['Local node', 'FL Processes', 'e2e-full@1.0', 'cycle 1'], (rows) => rows.length === 2 && rows.some((r) => r.includes('rejected')), 'both workers in cycle 1');
    assert.match(workers[0]!, /^worker \w{8} — reported$/);
    assert.match(workers[1]!, /^worker \S{8} — rejected: the cycle is full \(1 of 1 workers\)$/);
  });

  it('a worker whose auth token the process refuses is told to join again with another token (Retry), not to sign in', async () => {
    await vscode.commands.executeCommand('grid.hostFlProcess', {
      node: 'Local node', file: join(samples, 'digits', 'digits-mlp.onnx'), name: 'e2e-auth', version: '1.0',
      serverConfig: { max_diffs: 1, num_cycles: 1, cycle_length: 3600, authentication: { type: 'jwt', secret: 'e2e-secret-of-the-process' } },
    });
    await untilRows(['Local node', 'FL Processes'], (rows) => rows.some((r) => r.startsWith('e2e-auth@1.0')), 'the process in the tree');
    let shown: { message: string; actions: string[] } | undefined;
    const sub = api.onDidShowError((e) => { shown ??= e; });
    try {
      const out = await vscode.commands.executeCommand('grid.joinFlProcess', { node: 'Local node', process: 'e2e-auth@1.0', data: digits(), authToken: 'not.a.valid-token' });
      assert.equal(out, undefined, 'a failed join resolves without an outcome');
    } finally {
      sub.dispose();
    }
    assert.ok(shown, 'no error was shown');
    assert.match(shown.message, /^Could not join the FL process: e2e-auth@1\.0 on Local node refused this worker's auth token: .+ Join again \(Retry\) with the token the process's owner gave you \(GRID_ERR_INVALID_INPUT\)$/);
    assert.doesNotMatch(shown.message, /--auth-token|--user|GRID_USER/);
    assert.deepEqual(shown.actions, ['Retry', 'Show Logs']);
  });

  it('Download Checkpoint writes the checkpoint file: the averaged model, not the hosted one', async () => {
    const dest = join(scratch, 'e2e-digits-latest.onnx');
    const file = await vscode.commands.executeCommand<string>('grid.downloadFlCheckpoint', { node: 'Local node', process: 'e2e-digits@1.0', checkpoint: 'latest', dest });
    assert.equal(file, dest);
    assert.ok(existsSync(dest), 'no checkpoint file');
    const bytes = readFileSync(dest);
    const hosted = readFileSync(join(samples, 'digits', 'digits-mlp.onnx'));
    assert.equal(bytes[0], 0x08, 'not an ONNX model');
    assert.notDeepEqual(bytes, hosted, 'the latest checkpoint is the hosted model: nothing was averaged');
    const first = join(scratch, 'e2e-digits-1.onnx');
    await vscode.commands.executeCommand('grid.downloadFlCheckpoint', { node: 'Local node', process: 'e2e-digits@1.0', checkpoint: 1, dest: first });
    assert.deepEqual(readFileSync(first), hosted, 'checkpoint 1 is the hosted model');
  });
  it('Host FL Process with an ONNX averaging plan: the tooltip says the plan averages, and its close keeps the model (server lr 0) though a worker reported; a plan that does not fit is refused naming the mismatch', async () => {
    const hosted = readFileSync(join(samples, 'digits', 'digits-mlp.onnx'));
    const initializers = (bytes: Uint8Array) => Object.fromEntries((decodeModel(bytes).graph?.initializer ?? []).map((tp) => [tp.name, Array.from(tensorFromProto(tp).data as Float32Array)]));
    const params = Object.entries(initializers(hosted)).map(([name]) => name);
    const dims = (decodeModel(hosted).graph?.initializer ?? []).map((tp) => ({ name: tp.name!, dims: (tp.dims ?? []).map(Number) }));
    assert.ok(params.length > 0);
    const frozen = join(scratch, 'frozen.onnx');
    writeFileSync(frozen, serverLrPlan(dims, 0));
    const short = join(scratch, 'short.onnx');
    writeFileSync(short, serverLrPlan(dims.slice(0, -1), 0));

    let shown: { message: string; actions: string[] } | undefined;
    const sub = api.onDidShowError((e) => { shown ??= e; });
    try {
      const refused = await vscode.commands.executeCommand('grid.hostFlProcess', {
        node: 'Local node', file: join(samples, 'digits', 'digits-mlp.onnx'), name: 'e2e-short-plan', version: '1.0', serverConfig: { max_diffs: 1, num_cycles: 1 }, averagingPlan: short,
      });
      assert.equal(refused, undefined);
    } finally {
      sub.dispose();
    }
    assert.ok(shown, 'no error was shown for a plan without an output for the last parameter');
    assert.match(shown.message, new RegExp(`^Could not host the FL process: .*averaging_plan: no output for parameter "${dims.at(-1)!.name}".*\\(GRID_ERR_INVALID_AVERAGING_PLAN\\)$`));

    const p = await vscode.commands.executeCommand<FlProcessInfo>('grid.hostFlProcess', {
      node: 'Local node', file: join(samples, 'digits', 'digits-mlp.onnx'), name: 'e2e-frozen', version: '1.0',
      serverConfig: { max_diffs: 1, num_cycles: 1, cycle_length: 3600 }, clientConfig: { batch_size: 64, lr: 0.5, epochs: 1, max_updates: 3 }, averagingPlan: frozen,
    });
    assert.equal(p?.averaging, 'plan');
    await untilRows(['Local node', 'FL Processes'], (rows) => rows.some((r) => r.startsWith('e2e-frozen@1.0 — ')), 'the process in the tree');
    const groups = api.nodesView.getChildren(api.nodesView.getChildren().find((i) => label(i) === 'Local node') as never) as vscode.TreeItem[];
    const item = (api.nodesView.getChildren(groups.find((i) => label(i) === 'FL Processes') as never) as vscode.TreeItem[]).find((i) => label(i) === 'e2e-frozen@1.0');
    const tooltip = item?.tooltip;
    assert.match(typeof tooltip === 'string' ? tooltip : tooltip?.value ?? '', /Averaging: the host's ONNX averaging plan/);

    const out = await vscode.commands.executeCommand<FlJoinOutcome>('grid.joinFlProcess', { node: 'Local node', process: 'e2e-frozen@1.0', data: digits(), featureScale: 0.0625 });
    assert.equal(out?.kind, 'reported', JSON.stringify(out));
    await untilRows(['Local node', 'FL Processes', 'e2e-frozen@1.0', 'Checkpoints'], (rows) => rows.some((r) => r.startsWith('checkpoint 2 — latest')), 'checkpoint 2');
    const dest = join(scratch, 'e2e-frozen-2.onnx');
    await vscode.commands.executeCommand('grid.downloadFlCheckpoint', { node: 'Local node', process: 'e2e-frozen@1.0', checkpoint: 2, dest });
    // old − 0 · mean(diff): FedAvg would have moved every parameter after a worker trained at lr 0.5.
    assert.deepEqual(initializers(readFileSync(dest)), initializers(hosted));
  });
});
