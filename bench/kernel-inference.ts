// Issue "Notebook controller" benchmark, the extension half: `grid.infer` from a notebook cell against
// the same call from a plain Node script, both against one real grid node over one real GridSocket.
//   baseline: client.runInference(id, inputs) in this process (what a plain Node script does)
//   cell:     `await grid.infer(id, x)` in a kernel process (the bundled worker), through the
//             notebook's GridBridge (src/extension/notebook/bridge.ts) over that same GridClient
// Both loops run interleaved in rounds so they see the same machine load. Target: a cell's call adds
// <= 1 ms (p50) over the plain call.
// Run: node --import tsx bench/kernel-inference.ts   (BENCH_QUICK=1: fewer calls)

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { GridClient } from '../src/core/client';
import { tensorFromValues } from '../src/core/protocol/tensor';
import { NotebookGridBridge, type BridgeNode } from '../src/extension/notebook/bridge';
import { KernelHost } from '../src/kernel';
import { GridNode } from '../src/node/server';
import { workerBundle } from '../test/integration/kernel-harness';

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 5 : 10;
const CALLS = quick ? 100 : 300;
const out = (line: string) => process.stdout.write(`${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => `${x.toFixed(3)} ms`;

async function main() {
  const dataDir = await mkdtemp(join(tmpdir(), 'grid-bench-kernel-'));
  const node = await GridNode.start({ port: 0, dataDir, adminPassword: 'bench-admin' });
  const client = await GridClient.connect(node.url, { credentials: { username: 'admin', password: 'bench-admin' } });
  let kernel: KernelHost | undefined;
  try {
    // The digits classifier of the starter notebook: [1, 64] in, [1, 10] out.
    const model = await client.hostModel(await readFile(join(import.meta.dirname, '..', 'media', 'samples', 'digits', 'digits-mlp.onnx')), {
      id: 'digits-mlp', allowRemoteInference: true,
    });
    const inputName = model.signature.inputs[0]!.name;
    const pixels = Array.from({ length: 64 }, (_, i) => (i % 17) / 16);
    const input = tensorFromValues('float32', [1, 64], pixels);

    // The extension's view of the node, as NodeConnection gives it to the bridge.
    const bridgeNode: BridgeNode = {
      name: 'bench node', url: node.url, local: true, state: 'connected', isOpen: true, user: 'admin',
      client, datasets: [], models: [model],
    };
    const bridge = new NotebookGridBridge({
      cwd: dataDir,
      nodes: { list: () => [bridgeNode], connect: async () => bridgeNode, disconnect: () => undefined },
    });
    kernel = new KernelHost({ workerPath: await workerBundle(), bridge, cwd: dataDir });
    const setup = await kernel.execute(`const x = grid.tensor('float32', [1, 64], ${JSON.stringify(pixels)});`);
    if (setup.status !== 'ok') throw new Error(setup.error?.stack);

    const plain = async (n: number): Promise<number> => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await client.runInference('digits-mlp', { [inputName]: input });
      return performance.now() - t0;
    };
    const cell = async (n: number): Promise<number> => {
      const t0 = performance.now();
      const r = await kernel!.execute(`for (let i = 0; i < ${n}; i++) await grid.infer('digits-mlp', x);`);
      if (r.status !== 'ok') throw new Error(r.error?.stack);
      return performance.now() - t0;
    };
    // The result a cell gets is the node's answer: check it once against the plain call's.
    let shown = '';
    const check = await kernel.execute("const y = await grid.infer('digits-mlp', x);\nArray.from(y.data).map((v) => v.toFixed(4)).join(',')", {
      onOutput: (o) => { if (o.kind === 'display') shown = String(o.data['text/plain']); },
    });
    if (check.status !== 'ok') throw new Error(check.error?.stack);
    const expected = Array.from(Object.values(await client.runInference('digits-mlp', { [inputName]: input }))[0]!.data as Float32Array).map((v) => v.toFixed(4)).join(',');
    if (shown !== expected) throw new Error(`the cell got ${shown}, the plain call ${expected}`);

    await plain(50); await cell(50); // warm-up: JIT, onnxruntime session, esbuild service

    const plainPerCall: number[] = [];
    const cellPerCall: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      plainPerCall.push((await plain(CALLS)) / CALLS);
      const empty = await cell(0); // a cell's own fixed cost, not part of the call
      cellPerCall.push(((await cell(CALLS)) - empty) / CALLS);
    }
    const p = median(plainPerCall);
    const c = median(cellPerCall);
    out(`grid inference, digits-mlp [1,64] -> [1,10] on a real node (127.0.0.1), ${ROUNDS} rounds x ${CALLS} sequential calls`);
    out(`  machine: ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    out(`  baseline, plain Node script (client.runInference): ${ms(p)} per call (median of rounds)`);
    out(`  notebook cell (grid.infer via kernel IPC + bridge):  ${ms(c)} per call`);
    out(`  added by the cell: ${ms(c - p)}   ratio ${(c / p).toFixed(2)}x   target adds <= 1 ms: ${c - p <= 1 ? 'met' : 'NOT met'}`);
    out(`  the cell's result equals the plain call's: ${expected}`);
  } finally {
    await kernel?.dispose();
    client.dispose();
    await node.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
