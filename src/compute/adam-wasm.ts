// Adam's update with WebAssembly SIMD, for PlanRunner's fused Adam (train.ts): the plan graph does the
// forward and backward passes and hands out the gradients; this kernel does the optimiser step in one pass
// over p, m, v and g, instead of the graph's twelve elementwise ONNX nodes per parameter (each a separate
// pass over memory) and the copy of m and v out of onnxruntime and back in every step.
// The kernel does exactly the float32 operations of the graph's Adam nodes, in the same order, so the
// trained values are the same bits (test/unit/compute-train.test.ts compares both paths).
// The module, adam(p, m, v, g, out, n, b1, c1, b2, c2, eps, lr), is assembled by scripts/adam-wasm.mjs
// (which shows its instructions).

import { WASM_PAGE as PAGE, wasm, type WasmMemory } from '../core/wasm';

const MODULE_BASE64 = 'AGFzbQEAAAABEAFgDH9/f39/f319fX19fQADAgEABQMBAAEHEQIGbWVtb3J5AgAEYWRhbQAACs0BAcoBAgJ/CXsgBv0TIQ4gB/0TIQ8gCP0TIRAgCf0TIREgCv0TIRIgC/0TIRMgBUECdCENAkADQCAMIA1PDQEgAyAMav0ABAAhFCAOIAEgDGr9AAQA/eYBIA8gFP3mAf3kASEVIAEgDGogFf0LBAAgECACIAxq/QAEAP3mASARIBQgFP3mAf3mAf3kASEWIAIgDGogFv0LBAAgBCAMaiAAIAxq/QAEACATIBUgFv3jASAS/eQB/ecB/eYB/eUB/QsEACAMQRBqIQwMAAsLCw==';

/**
 * Floats of gradient staged into the kernel's memory at a time (64 KiB): each chunk is still in the cache
 * when the kernel reads it back, where a whole 1 MB gradient would not be (~13% faster on the bench's MLP).
 */
const CHUNK = 16384;

/** Most bytes of parameters, moments and staging the kernel's memory may take; bigger models keep the graph's Adam. */
export const MAX_ADAM_BYTES = 1024 * 1024 * 1024;

let compiled: object | null | undefined;

function module(): object | null {
  if (compiled === undefined) {
    try {
      compiled = wasm ? new wasm.Module(Buffer.from(MODULE_BASE64, 'base64')) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

type Kernel = (p: number, m: number, v: number, g: number, out: number, n: number, b1: number, c1: number, b2: number, c2: number, eps: number, lr: number) => void;

/** One parameter's storage in the kernel's memory: its values and moments. */
interface Slot { size: number; values: Float32Array; m: Float32Array; v: Float32Array }

/**
 * The parameters and Adam moments of a plan in WebAssembly memory. ORT reads the current values and moments
 * straight from it (typed-array views, no copy); each step, run once ORT is done with them, updates them in
 * place (the kernel reads each value before it writes it: in place, a step writes one buffer per parameter
 * where a second buffer would also be read into the cache before it is written).
 */
export class AdamState {
  private readonly slots: Slot[];
  private readonly grad: Float32Array;
  private readonly kernel: Kernel;

  private constructor(mod: object, sizes: readonly number[]) {
    const instance = new wasm!.Instance(mod);
    const memory = instance.exports.memory as WasmMemory;
    // Each region padded to 4 floats (16 bytes); the kernel runs over the padding, whose zeros stay zeros.
    const padded = sizes.map((n) => (n + 3) & ~3);
    const staging = Math.min(CHUNK, Math.max(0, ...padded));
    const floats = padded.reduce((s, n) => s + 3 * n, 0) + staging;
    const pages = Math.ceil((floats * 4) / PAGE) - memory.buffer.byteLength / PAGE;
    if (pages > 0) memory.grow(pages);
    let at = 0;
    const take = (n: number) => { const a = new Float32Array(memory.buffer, at * 4, n); at += n; return a; };
    this.slots = sizes.map((size, i) => ({ size, values: take(padded[i]!), m: take(padded[i]!), v: take(padded[i]!) }));
    this.grad = take(staging);
    this.kernel = instance.exports.adam as Kernel;
  }

  /** Storage for parameters of these element counts, or null where WebAssembly SIMD is unavailable or they are too big. */
  static create(sizes: readonly number[]): AdamState | null {
    const bytes = sizes.reduce((s, n) => s + 4 * 4 * n, 0);
    if (bytes > MAX_ADAM_BYTES) return null;
    const mod = module();
    if (mod === null) return null;
    try {
      return new AdamState(mod, sizes);
    } catch {
      return null;
    }
  }

  /** Parameter i's current values (a view into the kernel's memory, updated in place by each step). */
  values(i: number): Float32Array {
    const s = this.slots[i]!;
    return s.values.subarray(0, s.size);
  }

  /** Parameter i's first and second moments (views, updated in place by each step). */
  moments(i: number): { m: Float32Array; v: Float32Array } {
    const s = this.slots[i]!;
    return { m: s.m.subarray(0, s.size), v: s.v.subarray(0, s.size) };
  }

  /** Sets parameter i's current values. */
  setValues(i: number, data: Float32Array): void {
    this.slots[i]!.values.set(data);
  }

  /**
   * One Adam step of every parameter from its gradient: m = b1·m + (1 − b1)·g, v = b2·v + (1 − b2)·g²,
   * values = values − lr·m / (√v + eps), in float32 as the plan graph does it; `stepSize` is the bias-corrected lr.
   */
  step(grads: readonly Float32Array[], hyper: { beta1: number; beta2: number; epsilon: number; stepSize: number }): void {
    const f = Math.fround;
    const b1 = f(hyper.beta1), b2 = f(hyper.beta2);
    const g = this.grad;
    const c1 = f(1 - b1), c2 = f(1 - b2);
    for (let i = 0; i < this.slots.length; i++) {
      const s = this.slots[i]!, grad = grads[i]!;
      // Chunks start at multiples of 4 floats; the last one runs on into the slot's padding.
      for (let at = 0; at < s.size; at += CHUNK) {
        const n = Math.min(CHUNK, s.size - at), off = at * 4;
        g.set(n === grad.length ? grad : grad.subarray(at, at + n));
        const p = s.values.byteOffset + off;
        this.kernel(p, s.m.byteOffset + off, s.v.byteOffset + off, g.byteOffset, p, (n + 3) & ~3, b1, c1, b2, c2, hyper.epsilon, hyper.stepSize);
      }
    }
  }
}
