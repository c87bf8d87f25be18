export * from './build';
export * from './models';
export * from './params';
export { SUPPORTED_GRADIENT_OPS } from './grad';
export type { Dim, FloatType } from './ir';
