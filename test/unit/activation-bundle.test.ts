// The extension's activation bundle (dist/extension.js) is what every VS Code window loads at start-up.
// Sockets, protocol schemas (zod), tensor readers and FedAvg belong to the lazy bundle: one value import of
// a schema module from the activation side once took it from ~150 KB to 950 KB. Bundled here as the build
// does, with esbuild's metafile saying which inputs landed in it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as esbuild from 'esbuild';

test('the activation bundle holds no protocol schemas, zod, ws or tensor code, and stays under 300 KB', async () => {
  const r = await esbuild.build({
    entryPoints: ['src/extension/main.ts'], bundle: true, platform: 'node', target: 'node20', format: 'cjs', write: false, metafile: true,
    external: ['vscode', 'onnxruntime-node', 'node-sqlite3-wasm', 'bufferutil'], outfile: 'activation.js', logLevel: 'silent',
  });
  const output = Object.values(r.metafile.outputs)[0]!;
  const inputs = Object.keys(output.inputs);
  const heavy = inputs.filter((i) => /node_modules\/(zod|ws|protobufjs)\/|src\/core\/protocol\/(messages|training-messages|catalogue|tensor)\.ts$|src\/core\/socket\//.test(i));
  const named = [...new Set(heavy.map((i) => i.replace(/^node_modules\/([^/]+)\/.*$/, '$1')))];
  assert.deepEqual(named, [], `the activation bundle pulls in ${named.join(', ')}: import these through src/extension/heavy.ts (the lazy bundle), or types only`);
  assert.ok(output.bytes < 300 * 1024, `the activation bundle is ${(output.bytes / 1024).toFixed(0)} KB`);
});
