// Runs a benchmark the way the product runs: bundled by esbuild (as dist/ is), not through tsx.
//   node scripts/bench.mjs bench/socket.ts
// Server scripts under bench/servers/ are bundled next to it, so the bench spawns them as plain .js.
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

const entry = process.argv[2];
if (!entry) {
  console.error('usage: node scripts/bench.mjs bench/<name>.ts');
  process.exit(2);
}
const out = '.bench-out';
const servers = readdirSync('bench/servers').filter((f) => f.endsWith('.ts')).map((f) => join('bench/servers', f));
await esbuild.build({
  entryPoints: [entry, ...servers],
  outdir: out,
  outbase: 'bench',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['onnxruntime-node', 'node-sqlite3-wasm', 'bufferutil', '@tensorflow/*'],
  logLevel: 'warning',
});
const r = spawnSync(process.execPath, [join(out, basename(entry).replace(/\.ts$/, '.js')), ...process.argv.slice(3)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
