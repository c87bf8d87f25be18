// The `grid` object cells see. Tensor helpers run in the kernel process; everything that needs a
// node goes to the host (GridBridge), which owns the connections.

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { decodeTensorProto } from '../compute/onnx/tensor-proto';
import { gridError } from '../core/errors';
import { readNpy } from '../core/npy';
import { tensorFromValues, type DType, type Tensor } from '../core/protocol/tensor';
import { GRID_BRIDGE_METHODS, type GridBridgeMethod } from './bridge';
import { asTensor, elementAt } from './tensor-format';

export interface DisplayOptions {
  /** Show `value` as this mime type instead of letting the kernel choose. */
  mime?: string;
  /** Name the output so a later `display(v, { id, update: true })` replaces it. */
  id?: string;
  update?: boolean;
}

export type DisplayFn = (value: unknown, options?: string | DisplayOptions) => void;

export interface GridApiHost {
  call(method: GridBridgeMethod, args: unknown[]): Promise<unknown>;
  display: DisplayFn;
  /** The running cell's signal, aborted on interrupt. */
  signal(): AbortSignal;
}

type Nested = number | bigint | boolean | string | Nested[];

type GridCall = (...args: unknown[]) => Promise<unknown>;
type TopMethod = Exclude<GridBridgeMethod, `${string}.${string}`>;

export type GridApi = {
  readonly [M in TopMethod]: GridCall;
} & {
  /** Model-centric federated learning: host an FL process, join one as a worker, simulate one with N workers. */
  readonly fl: { readonly host: GridCall; readonly join: GridCall; readonly simulate: GridCall };
  tensor(dtype: DType, dims: readonly number[], values: ArrayLike<number | bigint | boolean | string>): Tensor;
  /** Reads a NumPy .npy file (relative paths from the notebook's folder). */
  fromNpy(path: string): Promise<Tensor>;
  /** Reads an ONNX TensorProto .pb file (as in the ONNX test data sets). */
  fromPb(path: string): Promise<Tensor>;
  toArray(tensor: Tensor): Nested;
  display: DisplayFn;
  /** Aborted when the cell is interrupted: pass it to your own waits (`setTimeout`, `fetch`, …). */
  readonly signal: AbortSignal;
};

export function createGridApi(host: GridApiHost): GridApi {
  const api: Record<string, unknown> = {
    tensor: (dtype: DType, dims: readonly number[], values: ArrayLike<number | bigint | boolean | string>) => tensorFromValues(dtype, dims, values),
    fromNpy: async (path: string) => readNpy(await readFile(resolve(path)), path),
    fromPb: async (path: string) => decodeTensorProto(await readFile(resolve(path))).tensor,
    toArray,
    display: host.display,
  };
  for (const method of GRID_BRIDGE_METHODS) {
    const call = (...args: unknown[]) => host.call(method, args);
    const dot = method.indexOf('.');
    if (dot < 0) { api[method] = call; continue; }
    // `fl.host` → grid.fl.host
    const space = (api[method.slice(0, dot)] ??= {}) as Record<string, unknown>;
    space[method.slice(dot + 1)] = call;
  }
  for (const v of Object.values(api)) if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) Object.freeze(v);
  Object.defineProperty(api, 'signal', { get: host.signal, enumerable: true });
  return Object.freeze(api) as GridApi;
}

/** The function a bridge method is reached by on `api` (`fl.host` → api.fl.host). */
export function methodOf(api: GridApi, method: GridBridgeMethod): GridCall {
  return method.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], api) as GridCall;
}

/** Nested arrays in the tensor's shape: numbers, bigints (int64/uint64), booleans or strings. */
export function toArray(tensor: Tensor): Nested {
  const t = asTensor(tensor);
  if (!t) throw gridError('INVALID_TENSOR', 'grid.toArray: expected a tensor ({ dtype, dims, data })');
  let offset = 0;
  const build = (axis: number): Nested => {
    if (axis === t.dims.length) return elementAt(t, offset++);
    return Array.from({ length: t.dims[axis]! }, () => build(axis + 1));
  };
  return build(0);
}
