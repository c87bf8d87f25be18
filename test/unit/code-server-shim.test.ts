// The runTests command line as scripts/code-server-shim.mjs reads it: what @vscode/test-electron 2.5
// passes a desktop VS Code (launch args first, then its fixed flags, the test paths and profile dirs).
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseShimArgs } from '../../scripts/code-server-shim.mjs';

test('reads the folder, test paths and profile dirs runTests passes, and skips its desktop-only flags', () => {
  const args = parseShimArgs([
    '/w/workspace', '--user-data-dir=/w/user-data', '--extensions-dir=/w/extensions', '--disable-extensions',
    '--no-sandbox', '--disable-gpu-sandbox', '--disable-updates', '--skip-welcome', '--skip-release-notes', '--disable-workspace-trust',
    '--extensionTestsPath=/w/suite-out/index.js', '--extensionDevelopmentPath=/repo',
  ]);
  assert.deepEqual(args, {
    extensionDevelopmentPaths: ['/repo'], extensionTestsPath: '/w/suite-out/index.js', userDataDir: '/w/user-data',
    extensionsDir: '/w/extensions', folders: ['/w/workspace'], disableExtensions: true, ignored: [],
  });
});

test('takes values after a space too, several development paths, and names the flags it cannot honour', () => {
  const args = parseShimArgs(['--extensionDevelopmentPath', '/a', '--extensionDevelopmentPath=/b', '--extensionTestsPath', '/t', '--locale=de']);
  assert.deepEqual(args.extensionDevelopmentPaths, ['/a', '/b']);
  assert.equal(args.extensionTestsPath, '/t');
  assert.deepEqual(args.ignored, ['--locale=de']);
});

test('a value flag without its value is refused, naming it', () => {
  assert.throws(() => parseShimArgs(['--extensionTestsPath']), /--extensionTestsPath needs a value/);
});
