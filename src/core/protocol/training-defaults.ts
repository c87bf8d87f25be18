// Training defaults, in a module of their own: the extension's activation bundle needs them, and importing
// them from training-messages.ts pulled every protocol schema and zod into it (60 KB → 950 KB).

/**
 * What a training request gets when its caller says nothing: one set for the CLI, the palette and the
 * notebook, so the same command trains the same way everywhere (adam at 0.01 brings the demo datasets
 * to useful accuracy within a few epochs; onnxruntime's adam default of 0.001 did not).
 */
export const TRAINING_DEFAULTS = { epochs: 5, lr: 0.01, batchSize: 32, optimizer: 'adam', testSplit: 0.2 } as const;
