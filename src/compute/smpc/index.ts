// Secure multi-party computation for encrypted inference (docs/smpc.md): ring arithmetic, fixed point,
// additive sharing, Beaver products, local truncation, the comparison protocol, dealt randomness, plans.

export * from './ring';
export * from './fixed';
export * from './shares';
export * from './truncate';
export * from './prg';
export * from './compare';
export * from './correlations';
export * from './beaver';
export * from './plan';
export * from './conv';
export * from './masks';
export * from './party';
