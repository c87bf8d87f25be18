// In-host test entry: VS Code's extension host loads this file (extensionTestsPath) and calls run();
// a rejection makes the host exit non-zero, which the runner reports as the suite's exit code.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Mocha from 'mocha';
import { report } from './report';

export async function run(): Promise<void> {
  // Reporters print through Base.consoleLog, captured when mocha loaded; redirect that one.
  const base = Mocha.reporters.Base as unknown as { consoleLog: (...args: unknown[]) => void };
  const original = base.consoleLog;
  base.consoleLog = report;
  try {
    const mocha = new Mocha({ ui: 'bdd', color: false, timeout: 60_000, reporter: 'spec' });
    const grep = process.env.GRID_E2E_GREP;
    if (grep) mocha.grep(grep);
    for (const f of readdirSync(__dirname).filter((n) => n.endsWith('.test.js')).sort()) {
      mocha.addFile(join(__dirname, f));
    }
    await new Promise<void>((resolve, reject) => {
      const runner = mocha.run((failures) => {
        if (failures > 0) reject(new Error(`${failures} in-host test(s) failed`));
        else if (runner.stats?.passes === 0) reject(new Error('no in-host test ran'));
        else resolve();
      });
    });
  } finally {
    base.consoleLog = original;
  }
}
