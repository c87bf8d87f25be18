// The extension's heavy half: sockets, protocol schemas (zod), tensor readers (protobufjs), PNG and
// FedAvg. Bundled apart as dist/extension-lazy.js and required on first use (see heavy.ts), so
// activation parses ~50 KB instead of ~1.5 MB.
export { NodeConnection } from './connection';
export { LocalNode, localNodePaths } from './local-node';
export { confirmedLocalNode } from '../core/local-node-start';
export { inputsFromFiles, inputsFromJsonText, renderOutputs } from './inference';
export { runFedAvg } from '../federation/run';
// The notebook kernel host and its grid bridge (src/extension/notebook), loaded on a notebook's first run.
export { KernelHost } from '../kernel';
export { NotebookGridBridge } from './notebook/bridge';
// Model-centric FL over the shared connection (Host FL Process, Download Checkpoint, grid.fl.*).
export { checkpointBytes, downloadCheckpoint, flProcesses, hostFlProcess } from './fl';
// Encrypted serving (docs/smpc.md): share arithmetic and the ONNX reader, on the first encrypted use.
export { deleteEncrypted, encryptedModels, encryptedSignature, inferEncrypted, serveEncrypted } from '../federation/smpc';
