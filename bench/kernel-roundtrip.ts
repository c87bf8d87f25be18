// Issue "Notebook controller" benchmark, the kernel runtime half. One kernel process (the bundled
// worker, as it ships); every baseline is measured in this same run against that same process.
//   1. trivial cell round trip: execute('<n> + 1') → its Out display reaches the host; p50 target ≤ 10 ms,
//      printed as a ratio to the raw IPC ping round trip (host → kernel → host, no cell machinery)
//   2. a grid call from a cell (bridge answering at once): cost per call vs the same ping
//      (issue target: a cell's grid call adds ≤ 1 ms over the call from a plain Node script)
// Run: npm run bench:kernel   (BENCH_QUICK=1: fewer rounds)

import { performance } from 'node:perf_hooks';
import { KernelHost, type GridBridge } from '../src/kernel';
import { workerBundle } from '../test/integration/kernel-harness';

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 200 : 1000;
const CALLS = quick ? 200 : 1000;
const out = (line: string) => process.stdout.write(`${line}\n`);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const ms = (x: number) => `${x.toFixed(3)} ms`;

async function main() {
  // The "same call from a plain Node script": answered in-process at once, so what a cell adds is all overhead.
  const bridge: GridBridge = { call: async (method, args) => ({ method, n: args.length }) };
  const kernel = new KernelHost({ workerPath: await workerBundle(), bridge });
  try {
    await kernel.start();

    const cell = async (i: number): Promise<number> => {
      const t0 = performance.now();
      let shown = -1;
      // Distinct source every time: nothing is cached between rounds.
      const result = await kernel.execute(`${i} + 1`, {
        onOutput: (o) => { if (shown < 0 && o.kind === 'display') shown = performance.now() - t0; },
      });
      if (result.status !== 'ok' || shown < 0) throw new Error(`cell ${i} failed: ${result.error?.stack ?? 'no output'}`);
      return shown;
    };

    for (let i = 0; i < 50; i++) { await cell(i); await kernel.ping(); } // warm-up: JIT, esbuild service

    const pings: number[] = [];
    const cells: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      // Interleaved, so both see the same machine load.
      pings.push(await kernel.ping());
      cells.push(await cell(1000 + i));
    }
    const pingP50 = pct(pings, 0.5);
    const cellP50 = pct(cells, 0.5);
    out(`kernel round trip, trivial cell (execute -> output), ${ROUNDS} cells:`);
    out(`  cell p50 ${ms(cellP50)}  p95 ${ms(pct(cells, 0.95))}   target p50 <= 10 ms: ${cellP50 <= 10 ? 'met' : 'NOT met'}`);
    out(`  baseline raw IPC ping to the same kernel process: p50 ${ms(pingP50)}  p95 ${ms(pct(pings, 0.95))}`);
    out(`  ratio cell / ping (p50): ${(cellP50 / pingP50).toFixed(1)}x`);

    // Grid calls: one cell makes CALLS sequential calls; per-call time vs a ping.
    const loop = async (n: number) => {
      const t0 = performance.now();
      const r = await kernel.execute(`for (let i = 0; i < ${n}; i++) await grid.models(i);`);
      if (r.status !== 'ok') throw new Error(r.error?.stack);
      return performance.now() - t0;
    };
    await loop(100);
    const samples: number[] = [];
    for (let k = 0; k < 5; k++) {
      const empty = await loop(0);
      samples.push(((await loop(CALLS)) - empty) / CALLS);
    }
    const perCall = pct(samples, 0.5);
    out(`grid call from a cell, bridge answering at once, ${CALLS} calls x 5:`);
    out(`  per call p50 ${ms(perCall)}   vs raw IPC ping p50 ${ms(pingP50)}: ${(perCall / pingP50).toFixed(2)}x   target adds <= 1 ms: ${perCall <= 1 ? 'met' : 'NOT met'}`);
  } finally {
    await kernel.dispose();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
