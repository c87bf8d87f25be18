// The in-host suite "with the Jupyter extension" (test/e2e/suite/jupyter.test.ts) in a real VS Code,
// started like host.test.ts through @vscode/test-electron's runTests, with a second development
// extension beside ours: the stand-in for ms-toolsai.jupyter (test/e2e/jupyter-standin), because the
// Marketplace extension cannot be downloaded here. It implements the typed API our code calls over a
// real ipykernel with Debian's torch (docs/jupyter.md, "The Jupyter extension").
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { build, cleanWorkDir, jupyterStandIn, newWorkDir, repoRoot, runHostSuites, sampleWorkspace } from './harness';

test('with the Jupyter extension: a torch model of a Python notebook is served to a node; a Grid notebook runs on our controller beside the Jupyter extension\'s "Grid (TypeScript)"', { timeout: 15 * 60_000 }, async () => {
  build();
  const workDir = newWorkDir('jupyter-ext');
  const standIn = await jupyterStandIn(workDir);
  process.env.GRID_E2E_GREP = 'with the Jupyter extension';
  try {
    const result = await runHostSuites({ extensionPath: repoRoot, workDir, folder: sampleWorkspace(workDir), alsoLoad: [standIn] });
    cleanWorkDir(workDir, result.exitCode !== 0);
    assert.equal(result.exitCode, 0, `in-host suite failed in ${result.vscode}; logs in ${result.logsDir}`);
  } finally {
    delete process.env.GRID_E2E_GREP;
  }
});
