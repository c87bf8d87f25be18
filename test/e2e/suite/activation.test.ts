// The extension as a person gets it: installed in a real VS Code, activated by its first command,
// its log reachable, and its native runtime loadable in the extension host's own Node.
import * as assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'mocha';
import * as vscode from 'vscode';
import { report } from './report';

const EXTENSION_ID = 'grid-workbench.grid-workbench';

function extension(): vscode.Extension<unknown> {
  const ext = vscode.extensions.getExtension(EXTENSION_ID);
  assert.ok(ext, `${EXTENSION_ID} is not installed in this VS Code`);
  return ext;
}

/**
 * Resolves with the first open document matching `pred`, now or when one opens or changes; rejects
 * after `ms` naming the documents that were open, so a failure says what the user had instead.
 */
function documentWhere(pred: (d: vscode.TextDocument) => boolean, ms = 20_000, nudge?: () => unknown): Promise<vscode.TextDocument> {
  const found = vscode.workspace.textDocuments.find(pred);
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const subs: vscode.Disposable[] = [];
    // VS Code may draw another panel (the chat view) over the Output panel as the window settles: ask again,
    // as a person would, until the document shows.
    const again = nudge ? setInterval(() => void nudge(), 5000) : undefined;
    const done = () => {
      clearTimeout(timer);
      if (again) clearInterval(again);
      subs.forEach((s) => s.dispose());
    };
    const check = (d: vscode.TextDocument) => {
      if (!pred(d)) return;
      done();
      resolve(d);
    };
    const timer = setTimeout(() => {
      done();
      const open = vscode.workspace.textDocuments.map((d) => `${d.uri.toString()} (${d.getText().length} chars)`);
      reject(new Error(`no matching document within ${ms} ms; open documents:\n${open.join('\n')}`));
    }, ms);
    subs.push(vscode.workspace.onDidOpenTextDocument(check));
    subs.push(vscode.workspace.onDidChangeTextDocument((e) => check(e.document)));
  });
}

describe('the extension in a real VS Code', () => {
  it('activates when "Grid: Show Logs" runs', async () => {
    const ext = extension();
    const wasActive = ext.isActive;
    const t0 = performance.now();
    await vscode.commands.executeCommand('grid.showLogs');
    const ms = performance.now() - t0;
    assert.equal(ext.isActive, true, 'the extension is not active after its command ran');
    report(wasActive
      ? '      (already active before the command ran)'
      : `      activation + first command: ${ms.toFixed(1)} ms in VS Code ${vscode.version}, Node ${process.versions.node}`);
  });

  it('shows its log with the activation line in the Grid output channel', async () => {
    await vscode.commands.executeCommand('grid.showLogs');
    const doc = await documentWhere((d) => d.uri.scheme === 'output' && /Grid Workbench activated/.test(d.getText()), 40_000,
      () => vscode.commands.executeCommand('grid.showLogs'));
    assert.match(doc.getText(), /Grid Workbench activated/);
  });

  it('ships onnxruntime-node that loads in the extension host\'s Node and runs the sample model', async () => {
    const ext = extension();
    // Resolved from the extension's own folder, exactly as the bundle resolves its external.
    const req = createRequire(join(ext.extensionPath, 'package.json'));
    const ort = req('onnxruntime-node') as typeof import('onnxruntime-node');
    const session = await ort.InferenceSession.create(join(ext.extensionPath, 'media', 'samples', 'relu', 'relu.onnx'));
    try {
      const x = new ort.Tensor('float32', Float32Array.from([-1.5, 2.25]), [1, 2]);
      const out = await session.run({ x });
      assert.deepEqual(Array.from(out.y!.data as Float32Array), [0, 2.25]);
    } finally {
      await session.release();
    }
  });
});
