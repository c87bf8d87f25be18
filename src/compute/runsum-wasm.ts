// A float64 running sum of weighted float32 vectors with WebAssembly SIMD, for FedAvg's RunningSum:
// sum[i] += w · x[i]. The JS loop is compute-bound at ~0.15-0.3× memcpy bandwidth in V8; this kernel
// runs at about memcpy speed, and with each 64 KiB chunk of x staged into its memory ~0.6× (bench:fl).
// The module, add(sum, x, n, w) over n floats (a multiple of 4), is assembled by scripts/runsum-wasm.mjs
// (which shows its instructions); test/unit/fl-state.test.ts checks RunningSum against the plain loop.

import { WASM_PAGE as PAGE, wasm as runtimeWasm, type WasmApi, type WasmMemory } from '../core/wasm';

// Every runtime this node supports (Node 20+, Electron) has WebAssembly.
const wasm = runtimeWasm as WasmApi;

const MODULE_BASE64 = 'AGFzbQEAAAABCAFgBH9/f3wAAwIBAAUDAQABBxACBm1lbW9yeQIAA2FkZAAACoEBAX8CAX8CeyAD/RQhBSABIAJBAnRqIQQCQANAIAEgBE8NASAB/QACACEGIAAgAP0AAwAgBv1fIAX98gH98AH9CwMAIAAgAP0AAxAgBiAG/Q0ICQoLDA0ODwABAgMEBQYH/V8gBf3yAf3wAf0LAxAgAEEgaiEAIAFBEGohAQwACwsL';

/** Floats of x staged per call: 64 KiB, in L2 with the sum it updates. */
const CHUNK = 16384;

let compiled: object | null | undefined;

function module(): object | null {
  if (compiled === undefined) {
    try {
      compiled = new wasm.Module(Buffer.from(MODULE_BASE64, 'base64'));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** A float64 sum of `length` values in WebAssembly memory, and the kernel that adds weighted float32 vectors to it. */
export class SimdRunningSum {
  /** The sum; padded past `length` to a multiple of 4 so a kernel call may spill zeros there. */
  readonly sum: Float64Array;
  private readonly stage: Float32Array;
  private readonly kernel: (sum: number, x: number, n: number, w: number) => void;

  private constructor(mod: object, length: number) {
    const instance = new wasm.Instance(mod);
    const memory = instance.exports.memory as WasmMemory;
    const sumBytes = ((length + 4) * 8 + 15) & ~15;
    const need = sumBytes + CHUNK * 4 + 16;
    const pages = Math.ceil(need / PAGE) - memory.buffer.byteLength / PAGE;
    if (pages > 0) memory.grow(pages);
    this.sum = new Float64Array(memory.buffer, 0, length + 4);
    this.stage = new Float32Array(memory.buffer, sumBytes, CHUNK + 4);
    this.kernel = instance.exports.add as (sum: number, x: number, n: number, w: number) => void;
  }

  /** A sum of `length` zeros, or null where WebAssembly SIMD is unavailable (callers fall back to a JS loop). */
  static create(length: number): SimdRunningSum | null {
    const mod = module();
    if (mod === null) return null;
    try {
      return new SimdRunningSum(mod, length);
    } catch {
      return null;
    }
  }

  /** sum[at + i] += w · x[i] for every i of x; at + x.length ≤ length. */
  add(at: number, x: Float32Array, w: number): void {
    const stage = this.stage;
    for (let off = 0; off < x.length; off += CHUNK) {
      const len = Math.min(CHUNK, x.length - off);
      const len4 = (len + 3) & ~3;
      stage.set(x.subarray(off, off + len));
      // Zeros after the chunk, never stale values: the kernel adds w·stage over len4 (w·0 = 0 changes no sum).
      if (len4 > len) stage.fill(0, len, len4);
      this.kernel(this.sum.byteOffset + (at + off) * 8, stage.byteOffset, len4, w);
    }
  }
}
