// Runs first (file order): activation must not load onnxruntime-node or anything heavy into the
// extension host; the time activate() took is reported.
import * as assert from 'node:assert/strict';
import { describe, it } from 'mocha';
import * as vscode from 'vscode';
import type { GridExtensionApi } from '../../../src/extension/main';
import { report } from './report';

describe('activation cost', () => {
  it('activates within 50 ms without loading onnxruntime-node', async () => {
    const ext = vscode.extensions.getExtension<GridExtensionApi>('grid-workbench.grid-workbench');
    assert.ok(ext, 'the extension is not installed');
    const api = await ext.activate();
    report(`      activate(): ${api.activationMs.toFixed(1)} ms in VS Code ${vscode.version} (${process.versions.electron ? `Electron ${process.versions.electron}` : `Node ${process.versions.node}`})`);
    assert.ok(api.activationMs <= 50, `activate() took ${api.activationMs.toFixed(1)} ms`);
    const loaded = Object.keys(require.cache).filter((k) => /onnxruntime/.test(k));
    assert.deepEqual(loaded, [], 'activation loaded onnxruntime');
  });
});
