// The in-host suites (test/e2e/suite) against this checkout's build, inside a real VS Code, started the
// standard way: @vscode/test-electron's runTests, with the desktop VS Code where it can be downloaded
// and code-server (scripts/code-server-shim.mjs) where not; see vscode.ts.
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { build, cleanWorkDir, newWorkDir, repoRoot, runHostSuites, sampleWorkspace } from './harness';

test('the in-host suites pass in a real VS Code with the extension loaded from this checkout', { timeout: 15 * 60_000 }, async () => {
  build();
  const workDir = newWorkDir('host');
  const result = await runHostSuites({ extensionPath: repoRoot, workDir, folder: sampleWorkspace(workDir) });
  cleanWorkDir(workDir, result.exitCode !== 0);
  assert.equal(result.exitCode, 0, `in-host suites failed in ${result.vscode}; logs in ${result.logsDir}`);
});
