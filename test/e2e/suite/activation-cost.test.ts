// Runs first (file order): activation must not load onnxruntime-node or anything heavy into the
// extension host. Its time is reported, in parts, not asserted: timings on a shared CI machine are
// for bench/extension-load.ts (a ratio against a baseline), not for a pass/fail test.
import * as assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import * as vscode from 'vscode';
import type { GridExtensionApi } from '../../../src/extension/main';
import { report } from './report';

describe('activation cost', () => {
  it('activates without loading onnxruntime-node, and reports how long it took', async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>('grid-workbench.grid-workbench');
    assert.ok(ext, 'the extension is not installed');
    const wasActive = ext.isActive;
    const t0 = performance.now();
    const api = await ext.activate();
    const total = performance.now() - t0;
    const evaluation = api.loadEndedAt - api.loadStartedAt;
    report(`      activate(): ${api.activationMs.toFixed(1)} ms; evaluating the activation bundle: ${evaluation.toFixed(1)} ms; in VS Code ${vscode.version} (${process.versions.electron ? `Electron ${process.versions.electron}` : `Node ${process.versions.node}`})`);
    if (!wasActive) {
      report(`      ext.activate() end to end: ${total.toFixed(1)} ms: ${(api.loadStartedAt - t0).toFixed(1)} ms before the bundle's first line (VS Code, compiling it), ${(api.activateStartedAt - api.loadEndedAt).toFixed(1)} ms between its evaluation and activate() (VS Code preparing the ExtensionContext)`);
    }
    report(`      ours: ${(api.activationMs + evaluation).toFixed(1)} ms (target 50 ms)`);
    const loaded = Object.keys(require.cache).filter((k) => /onnxruntime/.test(k));
    assert.deepEqual(loaded, [], 'activation loaded onnxruntime');
  });
});
