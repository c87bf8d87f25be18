// Runs the in-host suites (test/e2e/suite) through runTests inside a real VS Code (desktop or code-server,
// see vscode.ts; GRID_E2E_VSCODE picks one) and exits with their exit code.
//   node --import tsx test/e2e/run.ts [--extension-path DIR] [--no-build] [--grep PATTERN]
// DIR defaults to this repo (the built dist/); the VSIX test points it at an installed VSIX.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { build, cleanWorkDir, newWorkDir, repoRoot, runHostSuites, sampleWorkspace } from './harness';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'extension-path': { type: 'string' },
      'no-build': { type: 'boolean', default: false },
      grep: { type: 'string' },
    },
  });
  if (!values['no-build']) build();
  if (values.grep) process.env.GRID_E2E_GREP = values.grep;
  const workDir = newWorkDir('host');
  const started = performance.now();
  const result = await runHostSuites({
    extensionPath: resolve(values['extension-path'] ?? repoRoot),
    workDir,
    folder: sampleWorkspace(workDir),
  });
  process.stdout.write(`in-host suites (${result.vscode}): exit ${result.exitCode} in ${((performance.now() - started) / 1000).toFixed(1)}s\n`);
  if (result.exitCode !== 0) process.stdout.write(`extension host logs: ${result.logsDir}\n`);
  cleanWorkDir(workDir, result.exitCode !== 0);
  return result.exitCode;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
