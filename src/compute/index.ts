// compute/: everything that computes on tensors. Importing it does not load onnxruntime-node; the first
// loadModel does (src/compute/backend.ts).
export * from './backend';
export * from './signature';
export * from './session-cache';
export * from './onnx';
export * from './plan';
export * from './train';
export * from './data';
export * from './fedavg';
export * from './privacy';
