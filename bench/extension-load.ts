// What activation costs the extension host to load: the activation bundle (dist/extension.js) against
// the baseline of loading everything at activation (that bundle plus dist/extension-lazy.js, i.e. the
// extension without its split), each in a fresh Node process (no compile cache), medians of N runs.
// `vscode` is a stand-in object: only the bundles' top-level code runs, no VS Code API is called.
// activate() is NOT measured here: it registers commands, views, a notebook controller and a status bar
// through VS Code's API, which exists only inside an extension host (plain Node has no `vscode` module,
// and a stand-in would time the stand-in). The e2e test test/e2e/suite/activation-cost.test.ts times the
// real activate() in a real VS Code and prints it against the 50 ms target.
// Run: npm run bench:extension   (BENCH_QUICK=1: fewer runs)
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

const dist = join(__dirname, '..', 'dist');
const runs = process.env.BENCH_QUICK === '1' ? 5 : 15;

// Runs in the child: stubs `vscode`, then times require() of each file given, in order.
const loader = `
const Module = require('module');
const C = class {};
const fake = { ThemeIcon: C, ThemeColor: C, TreeItem: C, EventEmitter: C, Uri: C, TreeItemCollapsibleState: {}, ProgressLocation: {},
  StatusBarAlignment: {}, ConfigurationTarget: {}, ViewColumn: {}, NotebookCellOutputItem: C, NotebookCellOutput: C, NotebookData: C, NotebookCellData: C, NotebookCellKind: {} };
const load = Module._load;
Module._load = function (req, ...rest) { return req === 'vscode' ? fake : load.call(this, req, ...rest); };
const t = performance.now();
for (const f of process.argv.slice(1)) require(f);
process.stdout.write(String(performance.now() - t));
`;

function loadMs(files: string[]): number {
  return Number(execFileSync(process.execPath, ['-e', loader, ...files], { encoding: 'utf8' }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const activation = join(dist, 'extension.js');
const lazy = join(dist, 'extension-lazy.js');
if (!existsSync(activation) || !existsSync(lazy)) {
  process.stderr.write('build first: npm run build\n');
  process.exit(1);
}
const ours: number[] = [];
const whole: number[] = [];
for (let i = 0; i < runs; i++) {
  // Interleaved, so a busy machine slows both alike.
  ours.push(loadMs([activation]));
  whole.push(loadMs([activation, lazy]));
}
const kb = (f: string) => `${(statSync(f).size / 1024).toFixed(0)} KB`;
const a = median(ours);
const b = median(whole);
process.stdout.write(`activation bundle (${kb(activation)}): ${a.toFixed(1)} ms median of ${runs}\n`);
process.stdout.write(`baseline, everything at activation (+${kb(lazy)}): ${b.toFixed(1)} ms\n`);
process.stdout.write(`ratio ${(a / b).toFixed(2)}x of the baseline (lower is better); bundle load only: activate() is timed in real VS Code by test/e2e/suite/activation-cost.test.ts (target: bundle + activate() <= 50 ms)\n`);
