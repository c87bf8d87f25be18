// Bundles the extension, the node and the CLIs with esbuild. `vscode` is provided by the host;
// onnxruntime-node, the sqlite wasm module and bufferutil (ws's N-API masking addon) stay external
// because they load native/wasm files
// relative to their own package folders.
import * as esbuild from 'esbuild';

const watch = process.argv.includes('--watch');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  external: ['vscode', 'onnxruntime-node', 'node-sqlite3-wasm', 'bufferutil'],
  logLevel: 'warning',
};

const entries = [
  { entryPoints: ['src/extension/main.ts'], outfile: 'dist/extension.js' },
  // The extension's heavy half (sockets, schemas, tensor readers, FedAvg), required on first use.
  { entryPoints: ['src/extension/lazy.ts'], outfile: 'dist/extension-lazy.js' },
  // The CLIs (package.json `bin`): runnable scripts, hence the shebang.
  { entryPoints: ['src/node/main.ts'], outfile: 'dist/grid-node.js', banner: { js: '#!/usr/bin/env node' } },
  { entryPoints: ['src/cli/grid.ts'], outfile: 'dist/grid.js', banner: { js: '#!/usr/bin/env node' } },
  // The FL worker the editor runs in the background (Join as Worker, grid.fl.join): it trains with onnxruntime.
  { entryPoints: ['src/cli/fl-join-process.ts'], outfile: 'dist/fl-join-process.js' },
  // The thread a node checks, loads and runs big models on (src/compute/model-worker.ts).
  { entryPoints: ['src/compute/model-thread.ts'], outfile: 'dist/model-thread.js' },
  // The threads of an FL simulation's workers (src/federation/fl-simulation/simulate.ts).
  { entryPoints: ['src/federation/fl-simulation/thread.ts'], outfile: 'dist/fl-simulation-thread.js' },
  // The notebook kernel process; esbuild stays external: it transpiles cells at run time from its own package.
  { entryPoints: ['src/kernel/worker.ts'], outfile: 'dist/kernel-worker.js', external: [...common.external, 'esbuild'] },
  // The Jupyter kernel (`grid kernel install` points its kernelspec here); it forks kernel-worker.js
  // beside it. zeromq is a native addon, loaded from its own package like onnxruntime-node.
  { entryPoints: ['src/kernel/jupyter/main.ts'], outfile: 'dist/grid-kernel.js', external: [...common.external, 'esbuild', 'zeromq'] },
  // The notebook renderer for live training metrics: runs in the notebook webview, so ESM for the browser.
  { entryPoints: ['media/renderer/metrics.ts'], outfile: 'dist/metrics-renderer.js', platform: 'browser', format: 'esm', target: 'es2022', external: [] },
];

const contexts = await Promise.all(entries.map((e) => esbuild.context({ ...common, ...e })));
if (watch) {
  await Promise.all(contexts.map((c) => c.watch()));
} else {
  await Promise.all(contexts.map((c) => c.rebuild()));
  await Promise.all(contexts.map((c) => c.dispose()));
}
