// Issue 14 benchmark: a trivial cell's execute round trip through the Jupyter kernel, driven by
// jupyter_client (bench/jupyter_roundtrip.py: execute_request sent -> execute_reply received over
// ZeroMQ), against the same cell through the KernelHost the VS Code controller drives (execute ->
// its result), measured in this run on the same build. Goal: Jupyter p50 <= 5 ms.
// Run: npm run bench:jupyter   (BENCH_QUICK=1: fewer rounds; needs Jupyter: npm run setup)

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KernelHost } from '../src/kernel';

const ROOT = path.join(__dirname, '..');
const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 200 : 1000;
const out = (line: string) => process.stdout.write(`${line}\n`);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const ms = (x: number) => `${x.toFixed(2)} ms`;

async function controllerPath(rounds: number): Promise<number[]> {
  const kernel = new KernelHost({ workerPath: path.join(ROOT, 'dist', 'kernel-worker.js') });
  try {
    const cell = async (i: number) => {
      const t0 = performance.now();
      const r = await kernel.execute(`${i} + 1`, {});
      if (r.status !== 'ok') throw new Error(r.error?.stack);
      return performance.now() - t0;
    };
    for (let i = 0; i < 50; i++) await cell(i);
    const times: number[] = [];
    for (let i = 0; i < rounds; i++) times.push(await cell(1000 + i));
    return times;
  } finally {
    await kernel.dispose();
  }
}

async function main() {
  const python = [process.env.GRID_JUPYTER_PYTHON, 'python3', '/usr/bin/python3'].find((p) => p && spawnSync(p, ['-c', 'import jupyter_client']).status === 0);
  if (!python) throw new Error('jupyter_client is missing: run `npm run setup`');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-bench-jupyter-'));
  try {
    const env = { ...process.env, JUPYTER_DATA_DIR: path.join(dir, 'data'), JUPYTER_RUNTIME_DIR: path.join(dir, 'runtime'), JUPYTER_PATH: '', PYDEVD_DISABLE_FILE_VALIDATION: '1' };
    const install = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'grid.js'), 'kernel', 'install'], { env, encoding: 'utf8' });
    if (install.status !== 0) throw new Error(install.stderr);
    const baseline = await controllerPath(ROUNDS);
    const r = spawnSync(python, [path.join(__dirname, 'jupyter_roundtrip.py'), String(ROUNDS)], { env, cwd: dir, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(r.stderr);
    const jupyter = JSON.parse(r.stdout) as number[];
    const p50 = pct(jupyter, 0.5);
    const base = pct(baseline, 0.5);
    out(`trivial cell round trip, ${ROUNDS} cells each:`);
    out(`  Jupyter (jupyter_client -> ZeroMQ -> grid-kernel -> worker): p50 ${ms(p50)}  p95 ${ms(pct(jupyter, 0.95))}   goal p50 <= 5 ms: ${p50 <= 5 ? 'met' : 'NOT met'}`);
    out(`  baseline, KernelHost as the VS Code controller drives it:   p50 ${ms(base)}  p95 ${ms(pct(baseline, 0.95))}`);
    out(`  ratio Jupyter / controller path (p50): ${(p50 / base).toFixed(2)}x`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
