// FedAvg of K updates of P float32 parameters against the machine's memcpy bandwidth for the same memory
// traffic, measured in the same run. FedAvg reads K·P·4 bytes and writes P·4, so (K+1)·P·4 bytes cross the
// memory bus; a memcpy of (K+1)·P·2 bytes (it reads and writes each byte) moves exactly as many. The call
// measured first is the one the product makes (src/federation/fedavg.ts: fresh outputs, no `into`).
// Target: FedAvg bandwidth ≥ 0.5× memcpy. Usage: npm run bench:fedavg [-- --k 8 --params 4000000]
import { fedAvg, type ClientUpdate } from '../src/compute/fedavg';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const K = Number(arg('k', '8'));
const P = Number(arg('params', '4000000'));
const reps = Number(arg('reps', '10'));

// Several tensors per update, as a model has (one large, a few small).
const layout: [string, number][] = [['w1', Math.floor(P * 0.8)], ['w2', P - Math.floor(P * 0.8) - 1000], ['b1', 1000]];
const updates: ClientUpdate[] = Array.from({ length: K }, (_, k) => {
  const params: ClientUpdate['params'] = {};
  for (const [name, n] of layout) params[name] = { dtype: 'float32', dims: [n], data: Float32Array.from({ length: n }, (_, i) => (i % 97) * 0.01 + k) };
  return { params, samples: 100 + k };
});
const bytes = K * P * 4;

// The machine is shared: interleave the contenders rep by rep and keep each one's best time.
function bestOf(fns: (() => void)[]): number[] {
  for (const fn of fns) fn();
  const min = fns.map(() => Infinity);
  for (let r = 0; r < reps; r++) {
    fns.forEach((fn, i) => {
      const t0 = performance.now();
      fn();
      min[i] = Math.min(min[i]!, performance.now() - t0);
    });
  }
  return min.map((m) => m / 1000);
}

// The baseline's copy: as many bytes of traffic as FedAvg's, read from the updates themselves.
const traffic = (K + 1) * P * 4;
const copyBytes = traffic / 2;
const copySrc = updates.flatMap((u) => layout.map(([name]) => { const d = u.params[name]!.data as Float32Array; return Buffer.from(d.buffer, d.byteOffset, d.byteLength); }));
const dstBuf = Buffer.allocUnsafe(copyBytes);
// Outputs reused across reps, as the memcpy destination is.
const into = fedAvg(updates);
let sink = 0;
const [tCopy, tAvgFresh, tAvg] = bestOf([
  () => {
    let off = 0;
    for (const b of copySrc) { if (off >= copyBytes) break; off += b.copy(dstBuf, off, 0, Math.min(b.length, copyBytes - off)); }
  },
  () => { const out = fedAvg(updates); sink += (out.w1!.data as Float32Array)[1]!; },
  () => { const out = fedAvg(updates, { into }); sink += (out.w1!.data as Float32Array)[1]!; },
]) as [number, number, number];
const gbs = (t: number) => `${(traffic / t / 1e9).toFixed(2)} GB/s of traffic (${(t * 1000).toFixed(1)} ms)`;
process.stdout.write(`FedAvg of K=${K} updates × P=${P} float32: reads ${(bytes / 1e6).toFixed(0)} MB, writes ${(P * 4 / 1e6).toFixed(0)} MB; best of ${reps}\n`);
process.stdout.write(`memcpy (Buffer.copy) of ${(copyBytes / 1e6).toFixed(0)} MB, the same traffic: ${gbs(tCopy)}\n`);
process.stdout.write(`FedAvg as the product calls it (fresh outputs): ${gbs(tAvgFresh)}\n`);
process.stdout.write(`FedAvg into reused outputs (opts.into):         ${gbs(tAvg)}\n`);
process.stdout.write(`ratio FedAvg / memcpy bandwidth: ${(tCopy / tAvgFresh).toFixed(2)}x (target >= 0.5x); into reused outputs ${(tCopy / tAvg).toFixed(2)}x${sink === -1 ? ' ' : ''}\n`);
