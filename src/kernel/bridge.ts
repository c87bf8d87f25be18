// The seam between cells and the grid. A cell's `grid.models()` travels over IPC to the host, which
// hands it to a GridBridge; the extension implements the bridge with its shared GridSocket
// connections, so the sidebar sees what a cell did and credentials never enter the kernel process.

import type { CellOutput } from './protocol';

/** The `grid.*` methods that go to the host. Local helpers (tensor, fromNpy, toArray, display) do not. */
export const GRID_BRIDGE_METHODS = [
  'connect', 'disconnect', 'nodes',
  'models', 'serve', 'download', 'deleteModel', 'infer',
  'datasets', 'train', 'fedavg', 'serveEncrypted',
  // Model-centric FL: grid.fl.host(…), grid.fl.join(…), grid.fl.simulate(…) (a dotted name is a method of a namespace object).
  'fl.host', 'fl.join', 'fl.simulate',
] as const;

export type GridBridgeMethod = (typeof GRID_BRIDGE_METHODS)[number];

export function isGridBridgeMethod(value: unknown): value is GridBridgeMethod {
  return typeof value === 'string' && (GRID_BRIDGE_METHODS as readonly string[]).includes(value);
}

export interface GridCallContext {
  /** Aborted when the cell is interrupted or the kernel restarts; pass it to the request/stream. */
  readonly signal: AbortSignal;
  /** The execution count of the calling cell. */
  readonly executionCount: number;
  /** Adds an output to the calling cell while the call runs (progress, live metrics). */
  output(output: CellOutput): void;
}

export interface GridBridge {
  /**
   * Performs one grid call. Arguments and the result cross the IPC channel with structured clone,
   * so tensors stay typed arrays; functions and class instances do not survive it. Reject with a
   * GridError so the cell sees its code.
   */
  call(method: GridBridgeMethod, args: unknown[], context: GridCallContext): Promise<unknown>;
}
