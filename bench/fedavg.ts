// FedAvg of K updates of P float32 parameters against the machine's memcpy bandwidth for the same
// bytes (TypedArray.set of the K updates into one buffer, and Buffer.copy), measured in the same run.
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

const dst = new Float32Array(K * P);
const dstBuf = Buffer.allocUnsafe(bytes);
// Outputs reused across reps, as the memcpy destinations are.
const into = fedAvg(updates);
let sink = 0;
const [tSet, tCopy, tAvg, tAvgFresh] = bestOf([
  () => {
    let off = 0;
    for (const u of updates) for (const [name] of layout) { const d = u.params[name]!.data as Float32Array; dst.set(d, off); off += d.length; }
  },
  () => {
    let off = 0;
    for (const u of updates) for (const [name] of layout) { const d = u.params[name]!.data as Float32Array; off += Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(dstBuf, off); }
  },
  () => { const out = fedAvg(updates, { into }); sink += (out.w1!.data as Float32Array)[1]!; },
  () => { const out = fedAvg(updates); sink += (out.w1!.data as Float32Array)[1]!; },
]) as [number, number, number, number];
const memcpy = Math.min(tSet, tCopy);
const gbs = (t: number) => `${(bytes / t / 1e9).toFixed(2)} GB/s (${(t * 1000).toFixed(1)} ms)`;
process.stdout.write(`FedAvg of K=${K} updates × P=${P} float32 (${(bytes / 1e6).toFixed(0)} MB read), best of ${reps}\n`);
process.stdout.write(`memcpy, TypedArray.set:        ${gbs(tSet)}\n`);
process.stdout.write(`memcpy, Buffer.copy:           ${gbs(tCopy)}\n`);
process.stdout.write(`FedAvg into reused outputs:    ${gbs(tAvg)}\n`);
process.stdout.write(`FedAvg into fresh outputs:     ${gbs(tAvgFresh)}\n`);
process.stdout.write(`ratio FedAvg / memcpy bandwidth: ${(memcpy / tAvg).toFixed(2)}x (target >= 0.5x); with fresh outputs ${(memcpy / tAvgFresh).toFixed(2)}x${sink === -1 ? ' ' : ''}\n`);
