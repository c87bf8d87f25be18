// Training throughput of a derived plan (one ORT run per optimisation step) against two baselines
// measured in the same run on the same shapes:
//   1. the GFLOP/s onnxruntime's own MatMul reaches on the step's matrix products (3·layers − 1: 8 for the default sizes) (target ≥ 0.5×);
//   2. the same step (forward, softmax cross-entropy, backward, SGD) in TensorFlow.js's CPU backend (target ≥ 5×);
//   3. the same step, SGD and Adam, in PyTorch CPU (Debian's python3-torch on OpenBLAS, `threads` threads;
//      target ≥ 3×): the peer users actually pick. Without OpenBLAS Debian's torch falls back to reference
//      BLAS and is ~9× slower, so both packages are installed here when missing (apt-get, as
//      scripts/setup.mjs does: only what is missing, as root or through passwordless sudo).
// Usage: npm run bench:train [-- --batch 128 --sizes 256,512,512,10 --seconds 3]
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/compute/backend';
import { encodeModel, makeNode, makeValueInfo } from '../src/compute/onnx';
import { buildPlan, mlp } from '../src/compute/plan';
import { PlanRunner } from '../src/compute/train';
import type { Tensor } from '../src/core/protocol/tensor';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const batch = Number(arg('batch', '128'));
const sizes = arg('sizes', '256,512,512,10').split(',').map(Number);
const seconds = Number(arg('seconds', '3'));
const threads = Number(arg('threads', '2'));

const rand = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

/** The matrix products of one training step of an MLP (no input gradient for the first layer). */
function stepMatmuls(): [number, number, number][] {
  const shapes: [number, number, number][] = [];
  for (let l = 0; l < sizes.length - 1; l++) {
    const fin = sizes[l]!, fout = sizes[l + 1]!;
    shapes.push([batch, fin, fout]); // forward  [B,in]·[in,out]
    shapes.push([fin, batch, fout]); // dW       [in,B]·[B,out]
    if (l > 0) shapes.push([batch, fout, fin]); // dX [B,out]·[out,in]
  }
  return shapes;
}
const flopsPerStep = stepMatmuls().reduce((s, [m, k, n]) => s + 2 * m * k * n, 0);

async function timeLoop(fn: () => Promise<unknown> | unknown, budget: number): Promise<number> {
  for (let i = 0; i < 3; i++) await fn(); // warm-up
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < budget * 1000 || n < 3) { await fn(); n++; }
  return (performance.now() - t0) / 1000 / n;
}

async function ortMatmul(): Promise<number> {
  const mats = stepMatmuls();
  const nodes = mats.map((_, i) => makeNode('MatMul', [`a${i}`, `b${i}`], [`c${i}`]));
  const model = encodeModel({
    irVersion: 8, opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'matmuls', node: nodes,
      input: mats.flatMap(([m, k, n], i) => [makeValueInfo(`a${i}`, 1, [m, k]), makeValueInfo(`b${i}`, 1, [k, n])]),
      output: mats.map(([m, , n], i) => makeValueInfo(`c${i}`, 1, [m, n])),
    },
  });
  const h = await loadModel(model, { intraOpNumThreads: threads });
  const feeds: Record<string, Tensor> = {};
  mats.forEach(([m, k, n], i) => { feeds[`a${i}`] = { dtype: 'float32', dims: [m, k], data: rand(m * k) }; feeds[`b${i}`] = { dtype: 'float32', dims: [k, n], data: rand(k * n) }; });
  const t = await timeLoop(() => h.run(feeds), seconds);
  await h.dispose();
  return t;
}

async function planStep(optimizer: 'sgd' | 'adam'): Promise<number> {
  const plan = buildPlan(mlp(sizes), { loss: 'cross_entropy', optimizer });
  const runner = await PlanRunner.create(plan, undefined, { intraOpNumThreads: threads });
  const x: Tensor = { dtype: 'float32', dims: [batch, sizes[0]!], data: rand(batch * sizes[0]!) };
  const classes = sizes.at(-1)!;
  const y: Tensor = { dtype: 'int64', dims: [batch], data: BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % classes)) };
  const t = await timeLoop(() => runner.step(x, y, { lr: 0.01 }), seconds);
  await runner.dispose();
  return t;
}

async function tfjsStep(): Promise<number> {
  await tf.setBackend('cpu');
  const vars: tf.Variable[] = [];
  for (let l = 0; l < sizes.length - 1; l++) {
    vars.push(tf.variable(tf.randomUniform([sizes[l]!, sizes[l + 1]!], -0.05, 0.05)), tf.variable(tf.zeros([sizes[l + 1]!])));
  }
  const x = tf.tensor2d(rand(batch * sizes[0]!), [batch, sizes[0]!]);
  const classes = sizes.at(-1)!;
  const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % classes), 'int32'), classes);
  const opt = tf.train.sgd(0.01);
  const step = () => {
    const cost = opt.minimize(() => {
      let h: tf.Tensor2D = x;
      for (let l = 0; l < vars.length; l += 2) {
        h = tf.add(tf.matMul(h, vars[l] as tf.Tensor2D), vars[l + 1]!);
        if (l + 2 < vars.length) h = tf.relu(h);
      }
      return tf.losses.softmaxCrossEntropy(y, h) as tf.Scalar;
    }, true);
    cost?.dataSync();
    cost?.dispose();
  };
  // tfjs is slow; a shorter budget still gives several steps.
  return timeLoop(step, Math.min(seconds, 4));
}

// Debian's own interpreter: python3-torch installs into its dist-packages, not into a pyenv or venv python.
const PYTHON = '/usr/bin/python3';
const TORCH_PACKAGES = ['python3-torch', 'libopenblas0-pthread'];

/** Installs the PyTorch peer's Debian packages when missing; returns why it cannot run, or undefined. */
function ensureTorch(): string | undefined {
  const installed = (pkg: string) => spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' }).stdout?.includes('install ok installed') === true;
  const missing = TORCH_PACKAGES.filter((p) => !installed(p));
  if (missing.length > 0) {
    if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) return `missing ${missing.join(', ')} and no apt-get here`;
    const asRoot = process.getuid?.() === 0 ? [] : spawnSync('sudo', ['-n', 'true']).status === 0 ? ['sudo', '-n'] : undefined;
    if (asRoot === undefined) return `missing ${missing.join(', ')}; run \`sudo apt-get install -y ${missing.join(' ')}\` (this user is not root, no passwordless sudo)`;
    const apt = (args: string[]) => {
      const [cmd, ...rest] = [...asRoot, 'apt-get', ...args];
      const r = spawnSync(cmd!, rest, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (${r.status ?? r.error?.message})`);
    };
    process.stdout.write(`installing the PyTorch peer: apt-get install ${missing.join(' ')}\n`);
    apt(['update', '-qq']);
    apt(['install', '-y', '-qq', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=600', ...missing]);
  }
  return spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0 ? undefined : `${PYTHON} cannot import torch`;
}

interface TorchStep { sgd: number; adam: number; torch: string; threads: number }

/**
 * PyTorch's step times, best of its default OpenMP wait policy and a passive one: on a busy machine the
 * default spin-waiting of idle OpenMP threads can cost it 10× (measured here: 358 vs 34 ms per SGD step),
 * and a peer slowed by the machine would flatter us.
 */
function torchSteps(): (TorchStep & { policy: string }) | string {
  const why = ensureTorch();
  if (why !== undefined) return why;
  let best: (TorchStep & { policy: string }) | undefined;
  for (const policy of ['default', 'PASSIVE']) {
    const env = { ...process.env, ...(policy === 'PASSIVE' && { OMP_WAIT_POLICY: 'PASSIVE' }) };
    const r = spawnSync(PYTHON, [join(__dirname, 'train_torch.py'), sizes.join(','), String(batch), String(seconds), String(threads)], { encoding: 'utf8', env });
    if (r.status !== 0) return `the PyTorch step failed: ${r.stderr.trim().split('\n').at(-1)}`;
    const t = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as TorchStep;
    if (best === undefined || t.sgd + t.adam < best.sgd + best.adam) best = { ...t, policy };
  }
  return best!;
}

async function main(): Promise<void> {
  const gflop = flopsPerStep / 1e9;
  process.stdout.write(`MLP ${sizes.join('-')}, batch ${batch}, ${threads} ORT threads: ${gflop.toFixed(3)} GFLOP of matrix products per step\n`);
  const tMat = await ortMatmul();
  const tSgd = await planStep('sgd');
  const tAdam = await planStep('adam');
  const tTf = await tfjsStep();
  const torch = torchSteps();
  const rate = (t: number) => `${(gflop / t).toFixed(1)} GFLOP/s, ${(t * 1000).toFixed(2)} ms/step, ${Math.round(batch / t)} samples/s`;
  process.stdout.write(`onnxruntime MatMul alone (same ${stepMatmuls().length} products): ${rate(tMat)}\n`);
  process.stdout.write(`plan step, SGD:                            ${rate(tSgd)}\n`);
  process.stdout.write(`plan step, Adam:                           ${rate(tAdam)}\n`);
  process.stdout.write(`TensorFlow.js CPU backend step, SGD:       ${rate(tTf)}\n`);
  process.stdout.write(`ratio plan(SGD) / ORT MatMul GFLOP/s: ${(tMat / tSgd).toFixed(2)}x (target >= 0.5x)\n`);
  process.stdout.write(`ratio plan(Adam) / ORT MatMul GFLOP/s: ${(tMat / tAdam).toFixed(2)}x\n`);
  process.stdout.write(`ratio plan(SGD) / TensorFlow.js CPU: ${(tTf / tSgd).toFixed(1)}x (target >= 5x)\n`);
  if (typeof torch === 'string') {
    process.stdout.write(`PyTorch CPU peer skipped: ${torch}\n`);
  } else {
    process.stdout.write(`PyTorch ${torch.torch} CPU (OpenBLAS), ${torch.threads} threads, OpenMP wait policy ${torch.policy}:\n`);
    process.stdout.write(`  step, SGD:                               ${rate(torch.sgd)}\n`);
    process.stdout.write(`  step, Adam:                              ${rate(torch.adam)}\n`);
    process.stdout.write(`ratio plan / PyTorch CPU: SGD ${(torch.sgd / tSgd).toFixed(2)}x, Adam ${(torch.adam / tAdam).toFixed(2)}x (target >= 3x)\n`);
  }
}

void main();
