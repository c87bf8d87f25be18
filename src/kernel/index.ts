// What the notebook controller uses: the host side of the kernel, its bridge seam and the message
// shapes it renders. The worker side (worker.ts and what it imports) runs in the kernel process.

export { KernelHost } from './host';
export type {
  Disposable, Event, ExecuteOptions, ExecutionResult, ExecutionStatus, KernelLogger, KernelOptions, KernelStatus, LateOutput,
} from './host';
export { GRID_BRIDGE_METHODS, isGridBridgeMethod } from './bridge';
export type { GridBridge, GridBridgeMethod, GridCallContext } from './bridge';
export type { CellError, CellLanguage, CellOutput, MimeBundle } from './protocol';
