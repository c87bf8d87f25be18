// What activation costs the extension host: loading the activation bundle (dist/extension.js) and
// running its activate(), against the baseline of loading everything at activation (that bundle plus
// dist/extension-lazy.js, i.e. the extension without its split) and running the same activate(), each in
// a fresh Node process (no compile cache), medians of N runs.
// `vscode` is a stand-in: EventEmitter and Disposable work as VS Code's do (activate() wires events
// through them), every other API is a no-op that returns another no-op (registerCommand, createTreeView,
// createOutputChannel, ...), and getConfiguration().get(key, default) gives the default. So activate()
// runs all of our code (context, commands table, views, status bar, notebook controller) while VS Code's
// side costs next to nothing: a lower bound of activate() in an extension host. The e2e test
// test/e2e/suite/activation-cost.test.ts times the real activate() in a real VS Code.
// Run: npm run bench:extension   (BENCH_QUICK=1: fewer runs)
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

const dist = join(__dirname, '..', 'dist');
const runs = process.env.BENCH_QUICK === '1' ? 5 : 15;

// Runs in the child: stubs `vscode`, then times require() of each file given, in order, and activate() of
// the first; prints both times as JSON. Exits at once, before activate()'s deferred connects would run.
const loader = `
const Module = require('module');
const noop = () => {};
// A no-op API: any property is another no-op (the same one each time), calling or constructing one gives one.
const stub = () => {
  const props = new Map();
  return new Proxy(function () {}, {
    get(_t, p) {
      if (p === 'then') return undefined; // not a thenable: awaiting a stub gives the stub
      if (p === Symbol.iterator) return function* () {};
      if (p === Symbol.toPrimitive) return () => 0;
      if (p === 'dispose') return noop;
      if (!props.has(p)) props.set(p, stub());
      return props.get(p);
    },
    apply: () => stub(),
    construct: () => stub(),
    set: () => true,
  });
};
class Disposable {
  constructor(fn) { this.fn = fn; }
  static from(...ds) { return new Disposable(() => ds.forEach((d) => d.dispose())); }
  dispose() { this.fn?.(); this.fn = undefined; }
}
class EventEmitter {
  constructor() { this.listeners = new Set(); this.event = (l, thisArg) => { const f = l.bind(thisArg); this.listeners.add(f); return new Disposable(() => this.listeners.delete(f)); }; }
  fire(e) { for (const l of [...this.listeners]) l(e); }
  dispose() { this.listeners.clear(); }
}
const config = { get: (_k, d) => d, has: () => false, inspect: () => undefined, update: async () => {} };
const overrides = {
  Disposable, EventEmitter,
  workspace: new Proxy(stub(), { get: (t, p) => (p === 'getConfiguration' ? () => config : p === 'workspaceFolders' ? undefined : t[p]) }),
};
// A plain object with every name the bundles use (esbuild's import copies the module's own keys).
const names = new Set(process.argv.slice(1).flatMap((f) => [...require('fs').readFileSync(f, 'utf8').matchAll(/\\bvscode\\d*\\.(\\w+)/g)].map((m) => m[1])));
const vscode = Object.fromEntries([...names].map((n) => [n, overrides[n] ?? stub()]));
const load = Module._load;
Module._load = function (req, ...rest) { return req === 'vscode' ? vscode : load.call(this, req, ...rest); };
const root = require('path').join(process.argv[1], '..', '..');
const memento = { get: (_k, d) => d, update: async () => {}, keys: () => [], setKeysForSync: noop };
const context = new Proxy(stub(), { get: (t, p) => ({
  subscriptions: [], globalState: memento, workspaceState: memento, extensionPath: root, asAbsolutePath: (f) => require('path').join(root, f), secrets: { get: async () => undefined, store: async () => {}, delete: async () => {}, onDidChange: stub() },
})[p] ?? t[p] });
let t = performance.now();
const files = process.argv.slice(1).map((f) => require(f));
const loadMs = performance.now() - t;
t = performance.now();
const api = files[0].activate(context);
const activateMs = performance.now() - t;
if (typeof api?.activationMs !== 'number') throw new Error('activate() did not return the extension API');
process.stdout.write(JSON.stringify({ loadMs, activateMs }));
process.exit(0);
`;

interface Timing { loadMs: number; activateMs: number }

function time(files: string[]): Timing {
  return JSON.parse(execFileSync(process.execPath, ['-e', loader, ...files], { encoding: 'utf8' })) as Timing;
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
const ours: Timing[] = [];
const whole: Timing[] = [];
for (let i = 0; i < runs; i++) {
  // Interleaved, so a busy machine slows both alike.
  ours.push(time([activation]));
  whole.push(time([activation, lazy]));
}
const kb = (f: string) => `${(statSync(f).size / 1024).toFixed(0)} KB`;
const summary = (ts: Timing[]) => {
  const load = median(ts.map((t) => t.loadMs));
  const activate = median(ts.map((t) => t.activateMs));
  return { load, activate, total: median(ts.map((t) => t.loadMs + t.activateMs)) };
};
const a = summary(ours);
const b = summary(whole);
process.stdout.write(`activation bundle (${kb(activation)}): load ${a.load.toFixed(1)} ms, activate() ${a.activate.toFixed(1)} ms, both ${a.total.toFixed(1)} ms (medians of ${runs} fresh processes)\n`);
process.stdout.write(`baseline, everything at activation (+${kb(lazy)}): load ${b.load.toFixed(1)} ms, activate() ${b.activate.toFixed(1)} ms, both ${b.total.toFixed(1)} ms\n`);
process.stdout.write(`ratio ${(a.total / b.total).toFixed(2)}x of the baseline (lower is better); bundle + activate() ${a.total.toFixed(1)} ms vs the 50 ms target, with VS Code's API a no-op stand-in (a lower bound; test/e2e/suite/activation-cost.test.ts times the real one)\n`);
