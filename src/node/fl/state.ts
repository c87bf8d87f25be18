// The syft-proto State codec lives with the protocol (src/core/protocol/syft-state.ts): our own FL worker
// (src/core/fl-worker.ts) encodes its diffs with the same code the node decodes them with.
export * from '../../core/protocol/syft-state';
