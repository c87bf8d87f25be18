// The WebAssembly the SIMD kernels use (core/protocol/text-bytes.ts, compute/*-wasm.ts). The project's TS
// lib has no WebAssembly types; these are the few the kernels need.

export interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}

export interface WasmMemory { buffer: ArrayBuffer; grow(pages: number): number }

/** The runtime's WebAssembly; undefined where it has none (each kernel then takes its plain-JS path). */
export const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

/** A WebAssembly memory page, in bytes. */
export const WASM_PAGE = 65536;
