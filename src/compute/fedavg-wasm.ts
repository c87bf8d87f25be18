// float32 weighted sums with WebAssembly SIMD (f32x4), for FedAvg. JS loops over Float32Array are
// compute-bound at ~0.3-0.5x memcpy bandwidth in V8; streaming cache-sized chunks through this module
// reaches ~0.8x. The module is ./fedavg.wat assembled with the wabt package (wabt 1.0.39:
// parseWat(name, text, { simd: true }).toBinary({}).buffer) and embedded as base64 so bundles carry it;
// test/unit/compute-train.test.ts checks its results against the plain weighted sum.

import { wasm as runtimeWasm, type WasmApi, type WasmMemory } from '../core/wasm';

// Every runtime this node supports (Node 20+, Electron) has WebAssembly.
const wasm = runtimeWasm as WasmApi;

const MODULE_BASE64 = 'AGFzbQEAAAABDwFgC39/f39/f319fX1/AAMCAQAFAwEAAQcRAgZtZW1vcnkCAARhY2M0AAAKwAEBvQECAn8FeyAG/RMhDSAH/RMhDiAI/RMhDyAJ/RMhECAFQQJ0IQwCQANAIAsgDE8NASAKBHv9DAAAAAAAAAAAAAAAAAAAAAAFIAAgC2r9AAQACyERIBEgASALav0ABAAgDf3mAf3kASERIBEgAiALav0ABAAgDv3mAf3kASERIBEgAyALav0ABAAgD/3mAf3kASERIBEgBCALav0ABAAgEP3mAf3kASERIAAgC2ogEf0LBAAgC0EQaiELDAALCws=';

interface Acc4 {
  (out: number, a: number, b: number, c: number, d: number, n: number, wa: number, wb: number, wc: number, wd: number, first: number): void;
}

/** Floats per chunk: 6 chunks (out, 4 sources, zeros) of 64 KiB stay in L2. */
const CHUNK = 16384;

class SimdSummer {
  private readonly acc4: Acc4;
  private readonly f32: Float32Array;

  constructor() {
    const instance = new wasm.Instance(new wasm.Module(Buffer.from(MODULE_BASE64, 'base64')));
    const memory = instance.exports.memory as WasmMemory;
    memory.grow(Math.ceil((CHUNK * 4 * 6) / 65536));
    this.f32 = new Float32Array(memory.buffer);
    this.acc4 = instance.exports.acc4 as unknown as Acc4;
  }

  /** out = Σ_k w[k] · srcs[k], all of out's length. */
  sum(out: Float32Array, srcs: readonly Float32Array[], w: readonly number[]): void {
    const n = out.length;
    const f32 = this.f32;
    const src = CHUNK * 4; // byte offset of the first source chunk; the output chunk sits at 0
    // Unused source slots of a last, partial group read a chunk of zeros (never stale values: 0·Inf is NaN).
    const zeros = CHUNK * 4 * 5;
    for (let at = 0; at < n; at += CHUNK) {
      const len = Math.min(CHUNK, n - at);
      const len4 = (len + 3) & ~3;
      for (let k = 0; k < srcs.length; k += 4) {
        const take = Math.min(4, srcs.length - k);
        for (let j = 0; j < take; j++) f32.set(srcs[k + j]!.subarray(at, at + len), CHUNK * (1 + j));
        this.acc4(0, src, take > 1 ? src + CHUNK * 4 : zeros, take > 2 ? src + CHUNK * 8 : zeros, take > 3 ? src + CHUNK * 12 : zeros, len4,
          w[k]!, take > 1 ? w[k + 1]! : 0, take > 2 ? w[k + 2]! : 0, take > 3 ? w[k + 3]! : 0, k === 0 ? 1 : 0);
      }
      out.set(f32.subarray(0, len), at);
    }
  }
}

let summer: SimdSummer | null | undefined;

/** The SIMD summer, or null where WebAssembly SIMD is unavailable (callers fall back to JS loops). */
export function simdSummer(): SimdSummer | null {
  if (summer === undefined) {
    try {
      summer = new SimdSummer();
    } catch {
      summer = null;
    }
  }
  return summer;
}
