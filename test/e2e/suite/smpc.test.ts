// Encrypted serving in a real VS Code (docs/smpc.md) against three grid nodes in their own processes:
// "Serve Encrypted Model…" with the .onnx picked from the workspace as a person does (Enter on the first
// row) and the three nodes named in its options object; the trees then mark the model with its share
// holders and provider; Run Inference on it answers as the plain model does.
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as readline from 'node:readline';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import type { GridExtensionApi } from '../../../src/extension/main';
import type { GridTreeItem } from '../../../src/extension/views/items';

const EXTENSION_ID = 'grid-workbench.grid-workbench';
const WAIT_MS = 60_000;
const PASSWORD = 'smpc-e2e-password';

let api: GridExtensionApi;
let extensionPath: string;
let samples: string;
const scratch = mkdtempSync(join(tmpdir(), 'grid-smpc-e2e-'));
const children: ChildProcess[] = [];

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : item.label?.label ?? '';
}

function modelRows(): string[] {
  return api.modelsView.getChildren().map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

/** Resolves once `pred()` holds, checked now and on every change of the Models view. */
function untilModels(pred: (rows: string[]) => boolean, what: string): Promise<void> {
  if (pred(modelRows())) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.dispose(); reject(new Error(`${what}: not within ${WAIT_MS} ms; now: ${modelRows().join(' | ')}`)); }, WAIT_MS);
    const sub = api.modelsView.onDidChangeTreeData(() => {
      if (!pred(modelRows())) return;
      clearTimeout(timer);
      sub.dispose();
      resolve();
    });
  });
}

/** Resolves once the node's row in the Nodes view shows `state`. */
function untilNode(name: string, state: string): Promise<void> {
  const now = () => String((api.nodesView.getChildren() as GridTreeItem[]).find((i) => label(i) === name)?.description ?? '').split(' · ')[0];
  if (now() === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sub.dispose(); reject(new Error(`node ${name} not ${state} within ${WAIT_MS} ms; now ${now()}`)); }, WAIT_MS);
    const sub = api.ctx.onDidChangeNodes(() => {
      if (now() !== state) return;
      clearTimeout(timer);
      sub.dispose();
      resolve();
    });
  });
}

/** The rows under a node's Models group in the Nodes view. */
function nodeModels(node: string): string[] {
  const n = (api.nodesView.getChildren() as GridTreeItem[]).find((i) => label(i) === node);
  assert.ok(n, `no node "${node}" in the Nodes view`);
  const group = (api.nodesView.getChildren(n) as GridTreeItem[]).find((i) => label(i) === 'Models');
  assert.ok(group, `node "${node}" shows no Models group`);
  return (api.nodesView.getChildren(group) as GridTreeItem[]).map((i) => `${label(i)} — ${String(i.description ?? '')}`);
}

async function errorShownBy(action: () => Thenable<unknown>): Promise<string> {
  let shown: string | undefined;
  const sub = api.onDidShowError((e) => { shown ??= e.message; });
  try {
    assert.equal(await action(), undefined, 'a failed command resolves without a result');
  } finally {
    sub.dispose();
  }
  assert.ok(shown, 'no error message was shown');
  return shown;
}

/** A grid node in its own process; resolves with its URL once it listens. */
async function startNode(name: string): Promise<string> {
  const child = spawn(process.execPath, [join(extensionPath, 'dist', 'grid-node.js'), '--port', '0', '--data-dir', mkdtempSync(join(scratch, 'node-')), '--name', name, '--log-level', 'warn'], {
    env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', GRID_ADMIN_PASSWORD: PASSWORD },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = /^listening on (ws:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`grid-node ${name} exited (${code}) before listening`)));
  });
}

/** The JSON result document a Run Inference opened. */
function resultOf(result: { document: string } | undefined): { outputs: Record<string, { dtype: string; dims: number[]; data: number[] }> } {
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === result?.document);
  assert.ok(doc, 'the result document is not open');
  return JSON.parse(doc.getText()) as ReturnType<typeof resultOf>;
}

describe('Encrypted serving from VS Code', function () {
  this.timeout(180_000);
  const NODES = ['enc-a', 'enc-b', 'enc-c'];

  before(async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not installed`);
    api = await ext.activate();
    extensionPath = ext.extensionPath;
    samples = vscode.workspace.workspaceFolders![0]!.uri.fsPath;
    const urls = await Promise.all(NODES.map(startNode));
    for (const [i, name] of NODES.entries()) {
      await vscode.commands.executeCommand('grid.addNode', { name, url: urls[i] });
      await untilNode(name, 'unauthenticated');
      assert.equal(await vscode.commands.executeCommand<string>('grid.authenticate', { node: name, username: 'admin', password: PASSWORD }), 'admin');
    }
  });

  after(async () => {
    for (const name of NODES) await vscode.commands.executeCommand('grid.removeNode', { node: name });
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    rmSync(scratch, { recursive: true, force: true });
  });

  it('refuses the same node as two of the three roles, before anything is asked or shared', async () => {
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.serveEncrypted', { file: join(samples, 'digits', 'digits-mlp.onnx'), id: 'e2e-twice', holders: ['enc-a', 'enc-a'], provider: 'enc-c' }));
    assert.match(message, /enc-a cannot be both share holder 1 and share holder 2: encrypted serving needs three different nodes/);
    assert.ok(!modelRows().some((r) => r.startsWith('e2e-twice')), 'a refused model appeared in the Models view');
  });

  it('serves the .onnx picked from the workspace encrypted; the trees mark it with its share holders and provider', async () => {
    // Enter on the first row of the file pick, as a person would: the workspace's .onnx files, sorted by path.
    const picked = new Promise<string[]>((resolve) => {
      const sub = api.onDidPick((pick) => {
        sub.dispose();
        resolve(pick.items.filter((i) => i.kind !== vscode.QuickPickItemKind.Separator).map((i) => i.label));
        void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      });
    });
    const served = await vscode.commands.executeCommand<{ model_id: string; params: number } | undefined>('grid.serveEncrypted', { id: 'e2e-digits', holders: ['enc-a', 'enc-b'], provider: 'enc-c' });
    assert.deepEqual((await picked).slice(0, 2), ['digits-mlp.onnx', 'relu.onnx']);
    assert.deepEqual(served && [served.model_id, served.params], ['e2e-digits', 64 * 32 + 32 + 32 * 10 + 10]);
    // Once in the Models view (the holder leading its queries), on both holders' rows in the Nodes view, never on the provider's.
    const marker = 'encrypted · share holders enc-a, enc-b · provider enc-c';
    await untilModels((rows) => rows.includes(`e2e-digits — enc-a · ${marker}`), 'the encrypted model in the Models view');
    assert.equal(modelRows().filter((r) => r.startsWith('e2e-digits')).length, 1, `the Models view lists it more than once: ${modelRows().join(' | ')}`);
    assert.deepEqual(nodeModels('enc-a'), [`e2e-digits — ${marker}`]);
    assert.deepEqual(nodeModels('enc-b'), [`e2e-digits — ${marker}`]);
    assert.ok(!nodeModels('enc-c').some((r) => r.startsWith('e2e-digits')), 'the provider lists the encrypted model');
  });

  it('runs inference on the encrypted model like on the plain one: same outputs within 1e-2', async () => {
    await vscode.commands.executeCommand('grid.serveModel', { node: 'enc-c', file: join(samples, 'digits', 'digits-mlp.onnx'), id: 'e2e-plain', allowDownload: false, allowRemoteInference: true });
    const x = JSON.stringify({ input: [Array.from({ length: 64 }, (_, i) => (i % 17) / 16), Array.from({ length: 64 }, (_, i) => ((i * 7) % 16) / 16)] });
    // Named through party 1: the client finds the other holder among the connected nodes.
    const enc = resultOf(await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'enc-b', model: 'e2e-digits', json: x }));
    const plain = resultOf(await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'enc-c', model: 'e2e-plain', json: x }));
    const [name] = Object.keys(plain.outputs);
    const e = enc.outputs[name!]!, p = plain.outputs[name!]!;
    assert.deepEqual([e.dtype, e.dims], [p.dtype, p.dims]);
    const err = Math.max(...e.data.map((v, i) => Math.abs(v - p.data[i]!)));
    assert.ok(err < 1e-2, `max abs error ${err}`);
  });

  it('Run Inference from the palette offers the encrypted model and runs it on the JSON in the active editor', async () => {
    const x = [Array.from({ length: 64 }, (_, i) => ((i * 5) % 16) / 16)];
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument({ language: 'json', content: JSON.stringify({ input: x }) }));
    // The model pick, then the inputs pick: each answered as a person does, typing until the row wanted is the
    // active one, then Enter.
    const rows: string[][] = [];
    const typed = ['e2e-digits', 'active editor'];
    const sub = api.onDidPick((pick) => {
      const items = pick.items.filter((i) => i.kind !== vscode.QuickPickItemKind.Separator);
      rows.push(items.map((i) => `${i.label} — ${i.description ?? ''}`));
      const text = typed[rows.length - 1] ?? '';
      const wanted = items.find((i) => i.label.includes(text));
      const accept = () => void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      if (!wanted) { accept(); return; }
      const active = pick.onDidChangeActive((a) => { if (a[0] === wanted) { active.dispose(); accept(); } });
      pick.value = text;
    });
    try {
      const enc = resultOf(await vscode.commands.executeCommand<{ document: string }>('grid.runInference'));
      assert.ok(rows[0]?.includes('$(lock) e2e-digits — enc-a · encrypted'), `the model pick: ${rows[0]?.join(' | ')}`);
      assert.equal(rows[0]!.filter((r) => r.includes('e2e-digits')).length, 1, 'the encrypted model is offered more than once');
      const plain = resultOf(await vscode.commands.executeCommand<{ document: string }>('grid.runInference', { node: 'enc-c', model: 'e2e-plain', json: JSON.stringify({ input: x }) }));
      const [name] = Object.keys(plain.outputs);
      const err = Math.max(...enc.outputs[name!]!.data.map((v, i) => Math.abs(v - plain.outputs[name!]!.data[i]!)));
      assert.ok(err < 1e-2, `max abs error ${err}`);
    } finally {
      sub.dispose();
    }
  });

  it('Run Inference on the encrypted model\'s row in the Models view (its inline action) runs it', async () => {
    const item = api.modelsView.getChildren().find((i) => label(i) === 'e2e-digits');
    assert.ok(item, `no e2e-digits row: ${modelRows().join(' | ')}`);
    // Signed in as admin: it may delete the model too.
    assert.equal(item.contextValue, 'encrypted:infer:delete');
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument({ language: 'json', content: JSON.stringify({ input: [Array.from({ length: 64 }, () => 0.25)] }) }));
    const sub = api.onDidPick((pick) => {
      const row = pick.items.find((i) => i.label.startsWith('The active editor'));
      const accept = () => void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      if (!row) { accept(); return; }
      const active = pick.onDidChangeActive((a) => { if (a[0] === row) { active.dispose(); accept(); } });
      pick.value = 'active editor';
    });
    try {
      const out = resultOf(await vscode.commands.executeCommand<{ document: string }>('grid.runInference', item));
      assert.deepEqual(Object.values(out.outputs).map((t) => [t.dtype, t.dims]), [['float32', [1, 10]]]);
    } finally {
      sub.dispose();
    }
  });

  it('asks for the three nodes in turn, never offering a node already taken', async () => {
    const rows: string[][] = [];
    const wanted = ['enc-b', 'enc-c', 'enc-a'];
    const sub = api.onDidPick((pick) => {
      rows.push(pick.items.map((i) => i.label));
      const row = pick.items.find((i) => i.label === wanted[rows.length - 1]);
      const accept = () => void vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
      if (!row || pick.activeItems[0] === row) { accept(); return; }
      const active = pick.onDidChangeActive((a) => { if (a[0] === row) { active.dispose(); accept(); } });
      pick.value = row.label;
    });
    try {
      const served = await vscode.commands.executeCommand<{ model_id: string } | undefined>('grid.serveEncrypted', { file: join(samples, 'digits', 'digits-mlp.onnx'), id: 'e2e-picked' });
      assert.equal(served?.model_id, 'e2e-picked');
    } finally {
      sub.dispose();
    }
    assert.equal(rows.length, 3, `picks shown: ${JSON.stringify(rows)}`);
    assert.ok(['enc-a', 'enc-b', 'enc-c'].every((n) => rows[0]!.includes(n)), `share holder 1 pick: ${rows[0]!.join(', ')}`);
    assert.ok(!rows[1]!.includes('enc-b') && rows[1]!.includes('enc-c'), `share holder 2 pick: ${rows[1]!.join(', ')}`);
    assert.ok(!rows[2]!.includes('enc-b') && !rows[2]!.includes('enc-c') && rows[2]!.includes('enc-a'), `provider pick: ${rows[2]!.join(', ')}`);
    await untilModels((r) => r.includes('e2e-picked — enc-b · encrypted · share holders enc-b, enc-c · provider enc-a'), 'the picked model in the Models view');
  });

  it('Delete Model… on an encrypted model deletes it from both share holders; the Models view drops it as their events arrive', async () => {
    // No refresh follows a delete: only the holders' smpc-model-removed events update the view.
    const deleted = await vscode.commands.executeCommand<string | undefined>('grid.deleteModel', { node: 'enc-b', model: 'e2e-picked', skipConfirmation: true });
    assert.equal(deleted, 'e2e-picked');
    await untilModels((r) => !r.some((row) => row.startsWith('e2e-picked ')), 'e2e-picked gone from the Models view');
  });

  it('an encrypted model whose other share holder is disconnected says which VS Code action fixes it', async () => {
    await vscode.commands.executeCommand('grid.disconnect', { node: 'enc-a' });
    const x = JSON.stringify({ input: [Array.from({ length: 64 }, () => 0.5)] });
    const message = await errorShownBy(() => vscode.commands.executeCommand('grid.runInference', { node: 'enc-b', model: 'e2e-digits', json: x }));
    assert.match(message, /enc-a \(ws:\/\/127\.0\.0\.1:\d+\) is disconnected: connect to it first \(Grid: Connect\) to run the encrypted model "e2e-digits"/);
    assert.doesNotMatch(message, /--/, 'the message names a CLI flag');
  });
});
