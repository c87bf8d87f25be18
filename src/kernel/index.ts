// What the notebook controller uses: the host side of the kernel, its bridge seam and the message
// shapes it renders. The worker side (worker.ts and what it imports) runs in the kernel process.
//
// One KernelHost per notebook, e.g. in the controller's executeHandler:
//   const kernel = new KernelHost({ cwd: notebookFolder, bridge, logger });
//   const result = await kernel.execute(cell.document.getText(), {
//     language, cellName: `Cell ${cell.index + 1}`, signal,          // signal ← the execution's token
//     onStart: ({ executionCount, startTime }) => { exec.executionOrder = executionCount; exec.start(startTime); },
//     onOutput: (o) => append(exec, o),                             // stream / display (displayId+update) / error
//   });
//   exec.end(result.status === 'ok', result.endTime);
// interruptHandler → kernel.interrupt(); "Restart Kernel" → kernel.restart(); dispose with the notebook.

export { KernelHost } from './host';
export type {
  Disposable, Event, ExecuteOptions, ExecutionResult, ExecutionStatus, KernelLogger, KernelOptions, KernelStatus, LateOutput,
} from './host';
export { GRID_BRIDGE_METHODS, isGridBridgeMethod } from './bridge';
export type { GridBridge, GridBridgeMethod, GridCallContext } from './bridge';
export type { CellError, CellLanguage, CellOutput, MimeBundle } from './protocol';
